//! The playground's CSI driver, `multicluster-webhook csi-driver`: volumes as directories on the
//! node, snapshots and group snapshots as copies, a restore copying a snapshot back. One process per
//! playground node serves the CSI Identity, Controller, GroupController and Node services on one
//! Unix socket (the node's external-provisioner and csi-snapshotter run with `--node-deployment`,
//! so each node provisions and snapshots its own volumes), and the kubelet's plugin registration
//! service on another, in the kubelet's `plugins_registry` directory, which is how the kubelet finds
//! it. It exists because the upstream host-path driver cannot be built here (the Go module proxy
//! refuses it); it passes csi-sanity, which the tests run against it.
//!
//! Not for production: nothing enforces a volume's capacity, and a volume lives on one node only
//! (its topology says which).

mod authority;
pub mod generated;
mod registration;
mod service;
pub mod store;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tokio::io::DuplexStream;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Args, Debug, Clone)]
pub struct CsiDriverArgs {
    /// The CSI socket the sidecars and the kubelet call (a path, or unix://PATH)
    #[arg(long)]
    pub endpoint: String,
    /// The kubelet's registration socket to serve, in its `plugins_registry` directory
    #[arg(long)]
    pub registration_socket: Option<PathBuf>,
    /// This node's name: the CSI node id and the volumes' topology
    #[arg(long)]
    pub node_id: String,
    /// Where volumes and snapshots are kept
    #[arg(long)]
    pub state_dir: PathBuf,
}

fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// Binds a Unix socket, replacing a stale one a previous run left.
fn bind(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the stale socket {}", path.display()));
        }
        _ => {}
    }
    UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(args: CsiDriverArgs) -> anyhow::Result<()> {
    let store = store::Store::open(&args.state_dir)
        .with_context(|| format!("opening the volume store {}", args.state_dir.display()))?;
    let endpoint = socket_path(&args.endpoint);
    let driver = service::Driver::new(store, args.node_id.clone());
    let csi = tonic::service::Routes::new(generated::csi::identity_server::IdentityServer::new(
        driver.clone(),
    ))
    .add_service(generated::csi::controller_server::ControllerServer::new(
        driver.clone(),
    ))
    .add_service(
        generated::csi::group_controller_server::GroupControllerServer::new(driver.clone()),
    )
    .add_service(generated::csi::node_server::NodeServer::new(driver));
    let listener = bind(&endpoint)?;
    tracing::info!(endpoint = %endpoint.display(), node = %args.node_id, "serving CSI");
    let shutdown = crate::server::shutdown_signal();
    let csi_server = tonic::transport::Server::builder()
        .add_routes(csi)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    match &args.registration_socket {
        Some(path) => {
            let listener = bind(path)?;
            let registration = registration::Registration::new(endpoint.clone());
            // Each kubelet connection goes through the authority shim into an in-process pipe
            // the gRPC server reads (see `authority`).
            let (pipes, incoming) = tokio::sync::mpsc::channel::<std::io::Result<DuplexStream>>(4);
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (ours, theirs) = tokio::io::duplex(64 * 1024);
                    if pipes.send(Ok(theirs)).await.is_err() {
                        break;
                    }
                    tokio::spawn(async move {
                        let (conn_read, mut conn_write) = conn.into_split();
                        let (pipe_read, pipe_write) = tokio::io::split(ours);
                        let mut pipe_read = pipe_read;
                        let forward = authority::client_to_server(conn_read, pipe_write);
                        let back = tokio::io::copy(&mut pipe_read, &mut conn_write);
                        if let (Err(e), _) | (_, Err(e)) = tokio::join!(forward, back) {
                            tracing::debug!(error = %e, "registration connection ended");
                        }
                    });
                }
            });
            let registrar = tonic::transport::Server::builder()
                .add_service(
                    generated::pluginregistration::registration_server::RegistrationServer::new(
                        registration,
                    ),
                )
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(incoming),
                    crate::server::shutdown_signal(),
                );
            tracing::info!(socket = %path.display(), "serving kubelet plugin registration");
            let (a, b) = tokio::join!(csi_server, registrar);
            a?;
            b?;
        }
        None => csi_server.await?,
    }
    Ok(())
}
