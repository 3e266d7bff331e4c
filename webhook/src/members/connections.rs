//! Connections to members, from the credentials the hub keeps for each: one multiplexed HTTP/2
//! connection per member, shared by everything in the hub server that talks to that member
//! (health probes, distributions, the proxy), rebuilt when the member's credentials change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::MemberCluster;

type Transport = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    kube::client::Body,
>;

/// A member's connection and the settings (endpoint, credentials) it was made with.
#[derive(Clone)]
struct Connection {
    secret_version: String,
    endpoint: String,
    config: kube::Config,
    transport: Transport,
}

#[derive(Clone, Default)]
pub struct MemberClients {
    connections: Arc<Mutex<HashMap<String, Connection>>>,
    /// Members reached through a client made elsewhere: in unit tests, a fake API server.
    #[cfg(test)]
    given: Arc<Mutex<HashMap<String, Client>>>,
}

impl std::fmt::Debug for MemberClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberClients")
            .field("members", &self.lock().len())
            .finish()
    }
}

impl MemberClients {
    /// A client for `member` over its shared connection. `response_timeout` bounds the wait for
    /// each response's headers (not its body, so a quiet watch lives on while a hung member is
    /// noticed); `None` for the proxy, where a user's request may legitimately take long.
    pub async fn get(
        &self,
        hub: &Client,
        member: &MemberCluster,
        response_timeout: Option<Duration>,
    ) -> anyhow::Result<Client> {
        #[cfg(test)]
        if let Some(given) = self.given_client(&member.name_any()) {
            return Ok(given);
        }
        client(&self.connection(hub, member).await?, response_timeout)
    }

    /// Reaches `member` through `client` instead of dialling it (a fake API server in a test).
    #[cfg(test)]
    pub fn give(&self, member: &str, client: Client) {
        self.given
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(member.to_owned(), client);
    }

    #[cfg(test)]
    fn given_client(&self, member: &str) -> Option<Client> {
        self.given
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(member)
            .cloned()
    }

    /// A client for `member` that can upgrade a request to a WebSocket (`pods/exec`): the shared
    /// connection is HTTP/2, where the API server offers no upgrade, so this one speaks HTTP/1.1
    /// on a connection of its own. For the rare exec, not for everyday requests.
    pub async fn upgrading(&self, hub: &Client, member: &MemberCluster) -> anyhow::Result<Client> {
        Ok(Client::try_from(
            self.connection(hub, member).await?.config,
        )?)
    }

    /// The member's connection, made anew when its credentials Secret or endpoint changed.
    async fn connection(&self, hub: &Client, member: &MemberCluster) -> anyhow::Result<Connection> {
        use k8s_openapi::api::core::v1::Secret;
        let secret = Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
            .get(&member.spec.credentials_secret.name)
            .await?;
        let version = secret.resource_version().unwrap_or_default();
        let name = member.name_any();
        let cached = self
            .lock()
            .get(&name)
            .filter(|c| c.secret_version == version && c.endpoint == member.spec.endpoint)
            .cloned();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let config = member_config(&member.spec.endpoint, &secret, Duration::from_secs(15))?;
        let connection = Connection {
            secret_version: version,
            endpoint: member.spec.endpoint.clone(),
            transport: transport(&config)?,
            config,
        };
        self.lock().insert(name, connection.clone());
        Ok(connection)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// HTTP/2 only: every kube-apiserver speaks it over TLS, and saying so up front makes requests
/// that start together wait for the one connection instead of each opening their own.
fn transport(config: &kube::Config) -> anyhow::Result<Transport> {
    use kube::client::ConfigExt;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            // Keeps the connection alive between requests, and notices a dead one.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(https),
    )
}

/// A kube client over `connection`'s shared transport (a clone shares the connection pool).
fn client(connection: &Connection, response_timeout: Option<Duration>) -> anyhow::Result<Client> {
    use kube::client::ConfigExt;
    let config = &connection.config;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .option_layer(response_timeout.map(tower::timeout::TimeoutLayer::new))
        .map_err(tower::BoxError::from)
        .service(connection.transport.clone());
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// The connection settings for the member at `endpoint` with the CA and token in its credentials
/// `secret`.
fn member_config(
    endpoint: &str,
    secret: &k8s_openapi::api::core::v1::Secret,
    timeout: std::time::Duration,
) -> anyhow::Result<kube::Config> {
    Ok(multicluster_core::members::join::client_config_from_secret(
        endpoint, secret, timeout,
    )?)
}
