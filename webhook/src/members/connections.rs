//! Connections to members, from the credentials the hub keeps for each. Each capability has its
//! own identity on the member (see `multicluster_core::members::join`), carried per request as its
//! bearer token; the requests of the hub's own work share one multiplexed HTTP/2 connection per
//! member, and proxied users' requests have a connection of their own, so their watches cannot
//! starve the health probe. A connection is rebuilt when the member's endpoint or CA changes, a
//! capability's client when its credentials Secret does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::MemberCluster;
use multicluster_core::members::join::{Capability, secret_keys};
use multicluster_core::members::proxy::ProxyAccess;

type Transport = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    kube::client::Body,
>;

/// One capability's way to a member, and the settings (endpoint, credentials) it was made with.
#[derive(Clone)]
struct Connection {
    secret_version: String,
    endpoint: String,
    config: kube::Config,
    transport: Transport,
    /// Whom the proxy account may act as (the proxy Secret's lists; empty for the others).
    proxy_access: ProxyAccess,
}

/// Which of a member's connections a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pool {
    /// The hub's own work: health, distribution, services, snapshots.
    Hub,
    /// Users' requests through the proxy.
    Proxy,
}

/// A connection to a member, and what it was made to reach and trust.
#[derive(Clone)]
struct SharedTransport {
    url: String,
    root_cert: Option<Vec<Vec<u8>>>,
    transport: Transport,
}

#[derive(Clone, Default)]
pub struct MemberClients {
    connections: Arc<Mutex<HashMap<(String, Capability), Connection>>>,
    /// The transports those share, by member and [`Pool`].
    transports: Arc<Mutex<HashMap<(String, Pool), SharedTransport>>>,
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
    /// A client for `member` with `capability`'s identity over its shared connection.
    /// `response_timeout` bounds the wait for
    /// each response's headers (not its body, so a quiet watch lives on while a hung member is
    /// noticed); `None` for the proxy, where a user's request may legitimately take long.
    pub async fn get(
        &self,
        hub: &Client,
        member: &MemberCluster,
        capability: Capability,
        response_timeout: Option<Duration>,
    ) -> anyhow::Result<Client> {
        #[cfg(test)]
        if let Some(given) = self.given_client(&member.name_any()) {
            return Ok(given);
        }
        client(
            &self.connection(hub, member, capability).await?,
            response_timeout,
        )
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

    /// A client for `member` with the proxy identity, and whom the member lets it act as.
    pub async fn proxy(
        &self,
        hub: &Client,
        member: &MemberCluster,
    ) -> anyhow::Result<(Client, ProxyAccess)> {
        let connection = self.connection(hub, member, Capability::Proxy).await?;
        Ok((client(&connection, None)?, connection.proxy_access))
    }

    /// A client for `member` that can upgrade a request to a WebSocket (`pods/exec`): the shared
    /// connection is HTTP/2, where the API server offers no upgrade, so this one speaks HTTP/1.1
    /// on a connection of its own. For the rare exec, not for everyday requests.
    pub async fn upgrading(
        &self,
        hub: &Client,
        member: &MemberCluster,
        capability: Capability,
    ) -> anyhow::Result<Client> {
        Ok(Client::try_from(
            self.connection(hub, member, capability).await?.config,
        )?)
    }

    /// The member's connection for `capability`, made anew when its credentials Secret or
    /// endpoint changed.
    async fn connection(
        &self,
        hub: &Client,
        member: &MemberCluster,
        capability: Capability,
    ) -> anyhow::Result<Connection> {
        let secret = credentials(hub, member, capability).await?;
        let version = secret.resource_version().unwrap_or_default();
        let key = (member.name_any(), capability);
        let cached = self
            .lock()
            .get(&key)
            .filter(|c| c.secret_version == version && c.endpoint == member.spec.endpoint)
            .cloned();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let config = member_config(&member.spec.endpoint, &secret, Duration::from_secs(15))?;
        let text = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .unwrap_or_default()
        };
        let pool = match capability {
            Capability::Proxy => Pool::Proxy,
            _ => Pool::Hub,
        };
        let connection = Connection {
            transport: self.transport(&key.0, pool, &config)?,
            proxy_access: ProxyAccess::parse(
                &text(secret_keys::PROXY_USERS),
                &text(secret_keys::PROXY_GROUPS),
            ),
            secret_version: version,
            endpoint: member.spec.endpoint.clone(),
            config,
        };
        self.lock().insert(key, connection.clone());
        Ok(connection)
    }

    /// `member`'s transport of `pool`, made anew when the endpoint or the CA it trusts changed.
    fn transport(
        &self,
        member: &str,
        pool: Pool,
        config: &kube::Config,
    ) -> anyhow::Result<Transport> {
        let mut transports = self.transports.lock().unwrap_or_else(|e| e.into_inner());
        let key = (member.to_owned(), pool);
        let url = config.cluster_url.to_string();
        if let Some(shared) = transports
            .get(&key)
            .filter(|t| t.url == url && t.root_cert == config.root_cert)
        {
            return Ok(shared.transport.clone());
        }
        let shared = SharedTransport {
            url,
            root_cert: config.root_cert.clone(),
            transport: transport(config)?,
        };
        transports.insert(key, shared.clone());
        Ok(shared.transport)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Capability), Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The hub-side Secret with `capability`'s token for `member`, or an error that says how to get
/// one: a member joined before per-capability identities, or without the grant, has none.
pub async fn credentials(
    hub: &Client,
    member: &MemberCluster,
    capability: Capability,
) -> anyhow::Result<k8s_openapi::api::core::v1::Secret> {
    use k8s_openapi::api::core::v1::Secret;
    let name = capability.secret_name(&member.spec.credentials_secret.name);
    let found = Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(&name)
        .await?;
    found.ok_or_else(|| {
        MissingCredentials {
            member: member.name_any(),
            capability,
            secret: name,
        }
        .into()
    })
}

/// The hub holds no credentials of one capability for a member: it was joined without that
/// grant (snapshots, proxy) or before capabilities had accounts of their own.
#[derive(Debug, thiserror::Error)]
#[error(
    "the hub holds no {capability} credentials for member {member} (no Secret \
     {SYSTEM_NAMESPACE}/{secret}): join it again with \
     `kubectl multicluster join {member} --member-context CONTEXT{grant}`",
    grant = grant_flag(*capability)
)]
pub struct MissingCredentials {
    pub member: String,
    pub capability: Capability,
    pub secret: String,
}

/// The `join` flag that grants `capability`, if it needs one.
fn grant_flag(capability: Capability) -> &'static str {
    match capability {
        Capability::Snapshots => " --allow-snapshots",
        Capability::Proxy => " --proxy-user USER",
        _ => "",
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
        // As kube's own client does: a 429 (an API server's watch cache still initialising after a
        // CRD appeared, or priority and fairness shedding load), 503 or 504 is retried, waiting
        // as long as the server's Retry-After says.
        .layer(tower::retry::RetryLayer::new(
            kube::client::retry::RetryPolicy::server_retry(),
        ))
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
