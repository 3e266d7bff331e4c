//! `multicluster-webhook`, the hub server, as a library: the admission handlers (`admission`), the
//! Intent cache (`intents`), TLS with certificate reload (`tls`), metrics, and the two listeners
//! (`server`). The router is public so tests can call it in-process.

pub mod admission;
pub mod cache;
pub mod distribute;
pub mod intents;
pub mod leader;
pub mod loops;
pub mod members;
pub mod metrics;
pub mod progress;
pub mod proxy;
pub mod restore_admission;
pub mod restores;
pub mod server;
pub mod services;
pub mod snapshot_hooks;
pub mod snapshots;
pub mod storage;
pub mod tls;
pub mod traffic;
pub mod vips;

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
