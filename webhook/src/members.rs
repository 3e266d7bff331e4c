//! Clients for members, from the credentials the hub keeps for each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::MemberCluster;

/// One kube client per member, rebuilt when the member's credentials Secret changes, so that
/// every runner shares the member's connection pool.
#[derive(Clone)]
pub struct MemberClients {
    clients: Arc<Mutex<HashMap<String, (String, Client)>>>,
    /// `None` for long-lived streams (watches through the proxy).
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for MemberClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberClients")
            .field("members", &self.lock().len())
            .finish()
    }
}

impl MemberClients {
    pub fn new(read_timeout: Option<Duration>) -> Self {
        MemberClients {
            clients: Default::default(),
            read_timeout,
        }
    }

    pub async fn get(&self, hub: &Client, member: &MemberCluster) -> anyhow::Result<Client> {
        use k8s_openapi::api::core::v1::Secret;
        let secret = Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
            .get(&member.spec.credentials_secret.name)
            .await?;
        let version = secret.resource_version().unwrap_or_default();
        let name = member.name_any();
        if let Some((v, c)) = self.lock().get(&name)
            && *v == version
        {
            return Ok(c.clone());
        }
        let mut config =
            crate::loops::member_config(&member.spec.endpoint, &secret, Duration::from_secs(15))?;
        config.read_timeout = self.read_timeout;
        let client = Client::try_from(config)?;
        self.lock().insert(name, (version, client.clone()));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Client)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}
