//! The two listeners: admission over HTTPS (one route per webhook, bounded bodies) and health,
//! readiness and metrics over plain HTTP on its own port, both with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::fencing::IntentLookup;
use crate::fencing::intents::Intents;
use crate::loops::while_leading;
use crate::members::proxy::ProxyState;
use crate::metrics::Metrics;
use crate::snapshot::restore_admission::RestoreCheck;
use crate::tls;
use crate::vip::Vips;

/// Largest AdmissionReview body accepted. An object is at most ~1.5 MiB (etcd's limit) and a review
/// holds the old and the new one; anything far beyond that is not from an API server.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTPS admission listener
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// PEM certificate (chain) served on the admission port; re-read when the file changes
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of that certificate; re-read when the file changes
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: PathBuf,
    /// Kubeconfig of the hub (default: in-cluster service account, else $KUBECONFIG)
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Context in --kubeconfig
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// How often the Lease holder releases VIP claims whose Service is gone
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub vip_gc_interval_seconds: u64,
    /// A claim younger than this is never released (its Service may still be being created)
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub vip_claim_grace_seconds: u64,
    /// A restore refuses a snapshot archive stored larger than this (it is held in memory:
    /// raise the hub server's memory limit with it)
    #[arg(long, default_value_t = multicluster_core::snapshot::archive::Limits::default().archive_bytes, value_name = "BYTES")]
    pub restore_max_archive_bytes: u64,
    /// ... or holding one entry (one object) larger than this, uncompressed
    #[arg(long, default_value_t = multicluster_core::snapshot::archive::Limits::default().entry_bytes, value_name = "BYTES")]
    pub restore_max_archive_entry_bytes: u64,
    /// ... or holding more than this in all, uncompressed
    #[arg(long, default_value_t = multicluster_core::snapshot::archive::Limits::default().total_bytes, value_name = "BYTES")]
    pub restore_max_archive_total_bytes: u64,
    /// ... or holding more entries (objects) than this
    #[arg(long, default_value_t = multicluster_core::snapshot::archive::Limits::default().entries, value_name = "N")]
    pub restore_max_archive_entries: usize,
    /// Starts of one restore (after restarts or leader changes half-way) before it fails
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub restore_max_attempts: u32,
    /// The image of the data mover pods that export volumes to S3 locations and fill restored
    /// claims (this server's own image: they run its `mover` subcommand)
    #[arg(long, default_value_t = multicluster_core::install::default_image(), value_name = "IMAGE")]
    pub mover_image: String,
    /// Run the mover pods from this hub server binary on the node (mounted read-only with the
    /// host's C library) instead of the image's: the local playground, whose nodes share this
    /// machine's files
    #[arg(long, value_name = "FILE")]
    pub mover_host_binary: Option<PathBuf>,
    /// Volumes one snapshot or restore moves at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub mover_parallel_volumes: usize,
    /// A mover pod that does not start, or moves nothing, for this long fails its snapshot or
    /// restore
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub mover_stall_timeout_seconds: u64,
    /// How often each storage location's volume data is swept of the chunks and indexes no
    /// snapshot references (a deleted snapshot, retention included, asks for a sweep at once)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub data_collection_interval_seconds: u64,
    /// Unreferenced volume data younger than this stays (an export in progress uploads chunks
    /// before the index and the snapshot that reference them)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub data_collection_grace_seconds: u64,
    /// Answer the admission routes only for a client certificate this CA signed (the one the
    /// API server presents through its admission configuration's kubeConfigFile); without it
    /// they answer anyone who reaches the port
    #[arg(long, value_name = "FILE")]
    pub admission_client_ca_file: Option<PathBuf>,
    /// The common name that client certificate must carry (repeat for several)
    #[arg(long, value_name = "NAME", default_values_t = [ADMISSION_CLIENT.to_owned()])]
    pub admission_client_name: Vec<String>,
    /// Connections the admission port holds open at most; further ones wait to be accepted
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// How long a client may take to send a request's headers on the admission port
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub header_read_timeout_seconds: u64,
}

/// How long an admission request may take, body read included.
const ADMISSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The common name the API server's admission client certificate carries by default.
pub const ADMISSION_CLIENT: &str = "kube-apiserver-admission";

impl ServeArgs {
    fn restore_settings(&self) -> crate::snapshot::restore::Settings {
        crate::snapshot::restore::Settings {
            limits: multicluster_core::snapshot::archive::Limits {
                archive_bytes: self.restore_max_archive_bytes,
                entry_bytes: self.restore_max_archive_entry_bytes,
                total_bytes: self.restore_max_archive_total_bytes,
                entries: self.restore_max_archive_entries,
            },
            max_attempts: self.restore_max_attempts.max(1),
            mover: self.mover_settings(),
        }
    }

    fn collection_settings(&self) -> crate::snapshot::collect::Settings {
        crate::snapshot::collect::Settings {
            interval: std::time::Duration::from_secs(self.data_collection_interval_seconds.max(1)),
            grace: std::time::Duration::from_secs(self.data_collection_grace_seconds),
        }
    }

    fn mover_settings(&self) -> crate::snapshot::transfers::Settings {
        crate::snapshot::transfers::Settings {
            image: multicluster_core::snapshot::mover::MoverImage {
                image: self.mover_image.clone(),
                host_binary: self
                    .mover_host_binary
                    .as_ref()
                    .map(|p| p.display().to_string()),
            },
            parallel: self.mover_parallel_volumes.max(1),
            stall_timeout: std::time::Duration::from_secs(self.mover_stall_timeout_seconds.max(1)),
        }
    }
}

/// What the handlers on the admission port share. Each handler extracts only the parts it uses
/// (axum's `FromRef`), so no capability's handler depends on another's state.
#[derive(Clone, Debug)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub intents: Arc<dyn IntentLookup>,
    /// `None` where no hub is connected (in-process tests of the fence).
    pub vips: Option<Vips>,
    /// `None` where no hub is connected.
    pub restores: Option<RestoreCheck>,
    /// The proxy API; `None` in in-process tests.
    pub proxy: Option<ProxyState>,
    /// Who may call the admission routes; `None` answers anyone (no CA configured).
    pub admission_callers: Option<AdmissionCallers>,
}

/// The client certificates the admission routes answer: the common names allowed, among
/// certificates the TLS layer verified against `--admission-client-ca-file`.
#[derive(Clone, Debug)]
pub struct AdmissionCallers {
    pub names: Arc<Vec<String>>,
}

/// Lets a request through to an admission route only from a caller with an allowed verified client
/// certificate, when callers are configured: a review is the API server's to send, and anyone
/// else who reaches the port (another pod, a compromised node) could otherwise make the hub server
/// claim addresses or read what the restore check says about a namespace.
async fn admission_caller(
    State(callers): State<Option<AdmissionCallers>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(callers) = callers else {
        return next.run(request).await;
    };
    let name = request
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::Peer>>()
        .and_then(|peer| peer.0.client_common_name.clone());
    match name {
        Some(name) if callers.names.contains(&name) => next.run(request).await,
        other => {
            tracing::warn!(client = ?other, path = %request.uri().path(), "admission request refused: not the API server");
            (
                http::StatusCode::UNAUTHORIZED,
                "the admission routes answer the API server only: present the client certificate \
                 its admission configuration names (signed by the hub server's \
                 --admission-client-ca-file, with an allowed common name)",
            )
                .into_response()
        }
    }
}

macro_rules! state_parts {
    ($($field:ident: $part:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $part {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })*
    };
}
state_parts!(
    metrics: Arc<Metrics>,
    intents: Arc<dyn IntentLookup>,
    vips: Option<Vips>,
    restores: Option<RestoreCheck>,
    proxy: Option<ProxyState>,
    admission_callers: Option<AdmissionCallers>,
);

pub fn admission_router(state: AppState) -> Router {
    use crate::fencing::admission::{
        mutate_intent, validate_intent, validate_intent_scale, validate_intent_status,
    };
    let admission = Router::new()
        .route("/mutate/intent", post(mutate_intent))
        .route("/validate/intent", post(validate_intent))
        .route("/validate/intent-scale", post(validate_intent_scale))
        .route("/validate/intent-status", post(validate_intent_status))
        .route("/mutate/vip", post(crate::vip::admission::mutate_vip))
        .route(
            "/validate/restore",
            post(crate::snapshot::restore_admission::validate_restore),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.admission_callers.clone(),
            admission_caller,
        ))
        // The API server waits 30 s at most for a webhook (`timeoutSeconds`): a review whose body
        // arrives slower than that, or that takes longer to answer, is answered by nobody.
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            ADMISSION_TIMEOUT,
        ))
        .route_layer(RequestBodyTimeoutLayer::new(ADMISSION_TIMEOUT));
    Router::new()
        .merge(admission)
        // The proxy API (aggregated into the hub's API server).
        .route("/apis", any(crate::members::proxy::handle))
        .route("/apis/{*rest}", any(crate::members::proxy::handle))
        // The limit is checked against Content-Length before any byte is read, so a client that
        // asks `Expect: 100-continue` gets 413 at once instead of a 100 and a reset mid-upload;
        // bodies without a length are cut off at the same size while read.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Debug)]
struct HealthState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

pub fn health_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Arc<HealthState>>| async move {
                if s.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the first list of Intents",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<HealthState>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(Arc::new(HealthState { metrics, ready }))
}

async fn hub_client(args: &ServeArgs) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            let options = KubeConfigOptions {
                context: args.context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let resolver = Arc::new(
        tls::ReloadingCert::load(&args.tls_cert_file, &args.tls_key_file, tls::provider())
            .context("loading the serving certificate")?,
    );
    let client = hub_client(&args).await.context("connecting to the hub")?;
    let front_proxy = match crate::members::proxy::front_proxy(&client).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the hub's front-proxy configuration: the proxy API is off");
            None
        }
    };
    if front_proxy.is_none() {
        tracing::info!("the hub's API server has no front proxy: the proxy API is off");
    }
    // Client certificates are asked for, never required (an in-cluster API server may present
    // none), and verified against every CA that vouches for a caller: the front proxy's (the
    // proxy API) and the admission clients' (the webhooks); each route then checks the name.
    let admission_ca =
        match &args.admission_client_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("reading --admission-client-ca-file {}", path.display())
            })?),
            None => None,
        };
    let client_roots: Vec<&str> = front_proxy
        .as_ref()
        .map(|f| f.ca_pem.as_str())
        .into_iter()
        .chain(admission_ca.as_deref())
        .collect();
    let client_roots = (!client_roots.is_empty()).then(|| client_roots.join("\n"));
    let tls_config = tls::server_config_with_clients(resolver, client_roots.as_deref())?;
    let intents = Intents::watch(client.clone());
    let vips = Vips::watch(client.clone());
    let metrics = Arc::new(Metrics::default());
    // One connection per member, shared by probes, distributions and the proxy.
    let members = crate::members::MemberClients::default();
    start_loops(&client, &members, &metrics, &args);
    let state = AppState {
        metrics: metrics.clone(),
        intents: Arc::new(intents.clone()),
        vips: Some(vips.clone()),
        restores: Some(RestoreCheck {
            hub: client.clone(),
            members: members.clone(),
        }),
        proxy: Some(ProxyState {
            hub: client.clone(),
            members,
            front_proxy,
        }),
        admission_callers: admission_ca.as_ref().map(|_| AdmissionCallers {
            names: Arc::new(args.admission_client_name.clone()),
        }),
    };
    if admission_ca.is_none() {
        tracing::warn!(
            "no --admission-client-ca-file: the admission routes answer any client that reaches the port; install with `kubectl multicluster init --admission-from CIDR` (a NetworkPolicy) or configure the API server's admission client certificate"
        );
    }
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        tokio::spawn(async move {
            if !(intents.ready().await && vips.ready().await) {
                return;
            }
            tracing::info!("Intents listed: ready");
            // Ready while the Intent watch is synced: an unsynced one sends every fenced write to
            // a live read, which a replica whose watch keeps failing should not be trusted with.
            loop {
                let synced = intents.synced();
                if ready.swap(synced, Ordering::AcqRel) != synced {
                    tracing::info!(
                        ready = synced,
                        "the Intent watch is {}",
                        if synced { "synced" } else { "not synced" }
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    let admission_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let health_listener = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("binding {}", args.health_listen))?;
    tracing::info!(admission = %args.listen, health = %args.health_listen, "serving");
    let admission = crate::serving::serve(
        tls::TlsListener::new(admission_listener, tls_config, args.max_connections)?,
        admission_router(state),
        crate::serving::Limits {
            header_read_timeout: std::time::Duration::from_secs(
                args.header_read_timeout_seconds.max(1),
            ),
            ..Default::default()
        },
        shutdown_signal(),
    );
    let health = axum::serve(health_listener, health_router(metrics, ready))
        .with_graceful_shutdown(shutdown_signal());
    let ((), h) = tokio::join!(admission, health.into_future());
    h.context("health server")?;
    Ok(())
}

/// Starts every background loop; each runs while this replica holds the Lease.
fn start_loops(
    hub: &Client,
    members: &crate::members::MemberClients,
    metrics: &Metrics,
    args: &ServeArgs,
) {
    use crate::{distribution, fencing, services, snapshot, traffic, vip};
    let leading = crate::leader::elect(hub.clone(), crate::leader::identity());
    {
        let mut leading = leading.clone();
        let gauge = metrics.leading.clone();
        tokio::spawn(async move {
            loop {
                gauge.set(i64::from(*leading.borrow_and_update()));
                if leading.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let identity = crate::leader::identity();
    let vip_gc_interval = std::time::Duration::from_secs(args.vip_gc_interval_seconds.max(1));
    let vip_claim_grace = std::time::Duration::from_secs(args.vip_claim_grace_seconds);
    // Each loop's task is made anew whenever this replica becomes the leader again.
    let hub_only = || hub.clone();
    let both = || (hub.clone(), members.clone());

    let h = hub_only();
    while_leading(&leading, metrics, "intent-epochs", move |run| {
        fencing::epochs::run(h.clone(), run)
    });
    let h = hub_only();
    while_leading(&leading, metrics, "vip-claims", move |run| {
        vip::claims::run(h.clone(), vip_gc_interval, vip_claim_grace, run)
    });
    let (h, m) = both();
    while_leading(&leading, metrics, "distributions", move |run| {
        distribution::run(h.clone(), m.clone(), run)
    });
    let (h, m) = both();
    while_leading(&leading, metrics, "multi-cluster-services", move |run| {
        services::run(h.clone(), m.clone(), run)
    });
    let h = hub_only();
    while_leading(&leading, metrics, "storage-locations", move |run| {
        snapshot::storage::check_locations(h.clone(), run)
    });
    // Exports to a location and its sweep never overlap.
    let data_locks = snapshot::collect::DataLocks::default();
    let (h, m, mover, locks) = (
        hub_only(),
        members.clone(),
        args.mover_settings(),
        data_locks.clone(),
    );
    while_leading(&leading, metrics, "namespace-snapshots", move |run| {
        snapshot::take::run(h.clone(), m.clone(), mover.clone(), locks.clone(), run)
    });
    let h = hub_only();
    while_leading(&leading, metrics, "snapshot-schedules", move |run| {
        snapshot::schedule::run(h.clone(), run)
    });
    let (h, settings) = (hub_only(), args.collection_settings());
    while_leading(&leading, metrics, "volume-data-sweeps", move |run| {
        snapshot::collect::run(h.clone(), settings.clone(), data_locks.clone(), run)
    });
    let (h, m, settings) = (hub_only(), members.clone(), args.restore_settings());
    while_leading(&leading, metrics, "namespace-restores", move |run| {
        snapshot::restore::run(h.clone(), m.clone(), settings.clone(), run)
    });
    let (h, id) = (hub_only(), identity.clone());
    while_leading(&leading, metrics, "traffic", move |run| {
        traffic::run(h.clone(), id.clone(), run)
    });
    let (h, m, id) = (hub_only(), members.clone(), identity);
    while_leading(&leading, metrics, "member-health", move |run| {
        crate::members::health::run(h.clone(), m.clone(), id.clone(), run)
    });
}
