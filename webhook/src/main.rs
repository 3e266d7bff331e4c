//! `multicluster-webhook`: the hub server (admission webhooks and the hub's background loops).
//!
//! This release only identifies itself; the admission endpoints and loops are built on top of this
//! entry point (see the project's issues), so the command line is already the final one's shape.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "multicluster-webhook",
    version,
    about = "Hub server of kubectl-multicluster: mutating and validating admission webhooks \
             and the hub's background loops",
    long_about = None
)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "multicluster-webhook {}: the admission server is not part of this release yet; \
         see `multicluster-webhook --help`",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
