//! `multicluster-webhook`, the hub server, as a library: one module per capability (its webhooks
//! and its background loops), and the plumbing they share. The routers are public so tests can
//! call them in-process.

// One module per capability (the same names as in `multicluster-core` and the plugin).
pub mod distribution;
pub mod fencing;
pub mod members;
pub mod services;
pub mod snapshot;
pub mod traffic;
pub mod vip;

// What the capabilities share: admission plumbing, watch-fed caches, the Lease, the loop runner,
// metrics, TLS and the two listeners.
pub mod admission;
pub mod cache;
// The local playground's CSI driver (`multicluster-webhook csi-driver`), not part of the hub server.
pub mod csi;
pub mod leader;
pub mod loops;
pub mod metrics;
pub mod server;
pub mod serving;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "multicluster-webhook",
    version = multicluster_core::versions::RELEASE,
    about = "Hub server of kubectl-multicluster: mutating and validating admission webhooks \
             and the hub's background loops"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admission webhooks (HTTPS) and health, readiness and metrics (HTTP)
    Serve(server::ServeArgs),
    /// The local playground's CSI driver on one node (volumes as directories, snapshots as copies)
    #[command(name = "csi-driver")]
    CsiDriver(csi::CsiDriverArgs),
    /// Answer `clusterset.local` on a member (its CoreDNS forwards the zone here), from the
    /// member's ServiceImports and multi-cluster EndpointSlices
    #[command(name = "clusterset-dns")]
    ClustersetDns(services::dns::ClustersetDnsArgs),
    /// Move one volume's files to a storage location (export) or back (import), in
    /// content-defined, deduplicated, compressed chunks: the work of a snapshot's mover pod
    Mover(snapshot::mover::MoverArgs),
}

/// Parses the command line and runs; errors go to stderr with their causes and exit code 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => server::serve(args).await,
            Command::CsiDriver(args) => csi::run(args).await,
            Command::ClustersetDns(args) => services::dns::run(args).await,
            Command::Mover(args) => snapshot::mover::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", multicluster_core::errors::describe(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
