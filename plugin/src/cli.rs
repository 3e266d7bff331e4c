//! The command line: parsing with clap, then one small function per command that calls into the
//! library and prints the result (stdout) or the error (stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;

use crate::local;
use crate::output::{self, OutputFormat, Tabular};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl multicluster",
    bin_name = "kubectl multicluster",
    version = multicluster_core::versions::RELEASE,
    about = "Manage a fleet of Kubernetes clusters from one hub cluster",
    long_about = "Manage a fleet of Kubernetes clusters from one hub cluster.\n\n\
        Start with a local playground (a hub and two members, real API servers on this machine):\n  \
        kubectl multicluster local up",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl does not pass its global flags to plugins, so the plugin takes them itself.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context of the hub cluster
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace for namespaced objects
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a local playground: a hub and member clusters as real API servers on this machine
    #[command(subcommand)]
    Local(LocalCommand),
    /// Register a member cluster on the hub (creates the hub's own account on the member)
    Join(crate::members::JoinArgs),
    /// Remove a member from the hub (and the hub's account from the member)
    Unjoin(crate::members::UnjoinArgs),
    /// Every member with its health, ready/total nodes, version, role, weight and priority
    #[command(visible_alias = "ls")]
    List,
    /// One member in detail (conditions, why it is unhealthy, recent Events); without NAME, as list
    Status { name: Option<String> },
    /// Install the hub server into the hub cluster and register its webhooks (--dry-run prints the YAML)
    Init(crate::init::InitArgs),
    /// Distribute manifests from the hub to members, in dependency order, secrets first
    Distribute(crate::distribution::DistributeArgs),
    /// Show what syncing a Distribution would change on each member now (a dry run on each member)
    Diff { name: String },
    /// Reach a member through the hub with your hub credentials (run kubectl there, or print a kubeconfig)
    Proxy(crate::members::proxy::ProxyArgs),
    /// Register, rotate and show intents (intent-ID fencing of managed objects)
    #[command(subcommand)]
    Intent(crate::fencing::IntentCommand),
    /// Apply manifests carrying an Intent's ID; with --interval, keep applying until fenced off (exit 3)
    Apply(crate::fencing::ApplyArgs),
    /// Load sharing and backup across members: create, show, set, drain and undrain TrafficPolicies
    #[command(subcommand)]
    Traffic(crate::traffic::TrafficCommand),
    /// Multi-cluster services (ServiceExport → ServiceImport): type, IPs, exporters, conflicts
    #[command(subcommand)]
    Services(crate::services::ServicesCommand),
    /// List and show the virtual IPs handed out to Services
    #[command(subcommand)]
    Vip(crate::vip::VipCommand),
    /// Namespace snapshots and where they are saved
    #[command(subcommand)]
    Snapshot(crate::snapshot::SnapshotCommand),
    /// Restore a snapshot into a namespace of a member (refused when it holds a conflicting application)
    #[command(subcommand)]
    Restore(crate::snapshot::restore::RestoreCommand),
    /// Print the plugin's version and the Kubernetes version its playground runs
    Version,
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Start a hub and N members (kube-apiserver + etcd each), install the CRDs, write a kubeconfig
    #[command(
        after_help = "The contexts hub, member-1, … are written to DIR/kubeconfig and merged into \
        your kubeconfig (--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config), \
        with hub as the current context; `local down` removes them again."
    )]
    Up {
        /// Number of member clusters besides the hub
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=20))]
        members: u32,
        /// Real nodes per member (kubelet, containerd and kube-proxy in a network namespace each),
        /// with a controller-manager and scheduler per cluster; 0: API servers only
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=crate::local::node::MAX_NODES_PER_MEMBER as i64))]
        nodes: u32,
        /// Simulated nodes per member (KWOK: Node objects kept Ready, no kubelet), for health and
        /// scale work; label one node-not-ready.stage.kwok.x-k8s.io=true to make it NotReady
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        simulated_nodes: u32,
        #[command(flatten)]
        dir: DirArg,
        /// Do not merge the contexts into your kubeconfig; use DIR/kubeconfig only
        #[arg(long)]
        no_merge_kubeconfig: bool,
    },
    /// Stop every process the playground started (API servers before etcd) and remove its state
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show what runs: each cluster's processes and whether its API server is ready
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Import an image archive (OCI or docker, e.g. from `docker save`) into the playground's nodes
    #[command(name = "load-image")]
    LoadImage {
        /// The image archive
        archive: PathBuf,
        /// Only the nodes of this cluster (member-1, …); default: every node
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DirArg {
    /// Playground directory (default: ~/.local/state/kubectl-multicluster/local)
    #[arg(long, value_name = "DIR", env = "MULTICLUSTER_LOCAL_DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    fn resolve(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(local::default_dir)
    }
}

/// Parses the command line, runs the command, and maps an error to exit code 1 with the whole
/// chain of causes on stderr.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(crate::complete::COMMAND) {
        return crate::complete::main(args[2..].to_vec());
    }
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<crate::members::proxy::KubectlFailed>()
                .is_some() =>
        {
            let code = e
                .downcast_ref::<crate::members::proxy::KubectlFailed>()
                .map_or(1, |k| k.0);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) if e.downcast_ref::<crate::fencing::Fenced>().is_some() => {
            eprintln!("{e:#}");
            ExitCode::from(crate::fencing::FENCED_EXIT_CODE)
        }
        Err(e) => {
            eprintln!("error: {}", multicluster_core::errors::describe(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,kube_client::client::builder=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.global.output;
    match cli.command {
        Command::Local(cmd) => run_local(cmd, &cli.global).await,
        Command::Join(args) => {
            let hub = hub_client(&cli.global).await?;
            crate::members::join(args, hub, cli.global.kubeconfig.as_ref(), format).await
        }
        Command::Unjoin(args) => {
            let hub = hub_client(&cli.global).await?;
            crate::members::unjoin(args, hub, cli.global.kubeconfig.as_ref()).await
        }
        Command::List => crate::members::list(hub_client(&cli.global).await?, format).await,
        Command::Status { name: Some(name) } => {
            crate::members::status(hub_client(&cli.global).await?, &name, format).await
        }
        Command::Status { name: None } => {
            crate::members::list(hub_client(&cli.global).await?, format).await
        }
        Command::Init(args) => {
            let client = if args.dry_run {
                None
            } else {
                Some(hub_client(&cli.global).await?)
            };
            crate::init::run(args, client, format).await
        }
        Command::Distribute(args) => {
            let client = hub_client(&cli.global).await?;
            let ns = namespace(&cli.global, &client);
            crate::distribution::run(args, client, &ns, format).await
        }
        Command::Proxy(args) => {
            crate::members::proxy::run(
                args,
                cli.global.kubeconfig.as_ref(),
                cli.global.context.as_deref(),
            )
            .await
        }
        Command::Diff { name } => {
            crate::distribution::diff(hub_client(&cli.global).await?, &name, format).await
        }
        Command::Intent(cmd) => {
            let client = hub_client(&cli.global).await?;
            let ns = namespace(&cli.global, &client);
            crate::fencing::run(cmd, client, &ns, format).await
        }
        Command::Apply(args) => {
            let client = hub_client(&cli.global).await?;
            let ns = namespace(&cli.global, &client);
            crate::fencing::apply(args, client, &ns).await
        }
        Command::Traffic(cmd) => {
            let client = hub_client(&cli.global).await?;
            let ns = namespace(&cli.global, &client);
            crate::traffic::run(cmd, client, &ns, format).await
        }
        Command::Services(cmd) => {
            let namespace = cli.global.namespace.clone();
            crate::services::run(cmd, hub_client(&cli.global).await?, namespace, format).await
        }
        Command::Vip(cmd) => crate::vip::run(cmd, hub_client(&cli.global).await?, format).await,
        Command::Snapshot(cmd) => {
            crate::snapshot::run(cmd, hub_client(&cli.global).await?, format).await
        }
        Command::Restore(cmd) => {
            crate::snapshot::restore::run(cmd, hub_client(&cli.global).await?, format).await
        }
        Command::Version => {
            let info = VersionInfo::read(&cli.global).await;
            if let Some(warning) =
                multicluster_core::versions::mismatch(&info.plugin, info.hub_server.as_deref())
            {
                eprintln!("warning: {warning}");
            }
            output::print(format, &info)
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "kubectl-multicluster",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

async fn hub_client(global: &GlobalArgs) -> anyhow::Result<kube::Client> {
    crate::hub::client(global.kubeconfig.as_deref(), global.context.as_deref()).await
}

/// `-n`, else the kubeconfig context's namespace, else `default`, as kubectl does.
fn namespace(global: &GlobalArgs, client: &kube::Client) -> String {
    global
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

async fn run_local(cmd: LocalCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let progress = |msg: &str| eprintln!("{msg}");
    match cmd {
        LocalCommand::Up {
            members,
            nodes,
            simulated_nodes,
            dir,
            no_merge_kubeconfig,
        } => {
            let merge_into = (!no_merge_kubeconfig).then(|| {
                global
                    .kubeconfig
                    .clone()
                    .unwrap_or_else(local::kubeconfig::default_path)
            });
            let opts = local::UpOptions {
                dir: dir.resolve(),
                members,
                nodes,
                simulated_nodes,
                merge_into,
            };
            let state = local::up(&opts, &progress).await?;
            output::print(global.output, &state)?;
            print_next_steps(&state);
            Ok(())
        }
        LocalCommand::Down { dir } => {
            let dir = dir.resolve();
            match local::down(&dir)? {
                Some(report) => {
                    if let Some(k) = &report.kubeconfig_cleaned {
                        progress(&format!(
                            "Removed the playground's contexts from {}",
                            k.display()
                        ));
                    }
                    output::print(global.output, &report)
                }
                None => {
                    progress(&format!(
                        "No playground in {}: nothing to stop",
                        dir.display()
                    ));
                    Ok(())
                }
            }
        }
        LocalCommand::LoadImage {
            archive,
            cluster,
            dir,
        } => {
            let report =
                local::load_image(&dir.resolve(), &archive, cluster.as_deref(), &progress)?;
            output::print(global.output, &report)
        }
        LocalCommand::Status { dir } => {
            let dir = dir.resolve();
            match local::status(&dir).await? {
                Some(report) => output::print(global.output, &report),
                None => anyhow::bail!(
                    "no playground in {}; start one with `kubectl multicluster local up`",
                    dir.display()
                ),
            }
        }
    }
}

fn print_next_steps(state: &local::PlaygroundState) {
    let contexts: Vec<&str> = state.clusters.iter().map(|c| c.name.as_str()).collect();
    let member = contexts.get(1).copied().unwrap_or("hub");
    match &state.merged_into {
        Some(file) => eprintln!(
            "\nContexts {} are in {} (current: hub) and in {}.",
            contexts.join(", "),
            file.display(),
            state.kubeconfig.display()
        ),
        None => eprintln!(
            "\nContexts {} are in {}. Use it with:\n  export KUBECONFIG={}",
            contexts.join(", "),
            state.kubeconfig.display(),
            state.kubeconfig.display()
        ),
    }
    eprintln!(
        "Next:\n  kubectl --context {member} get namespaces\n  kubectl --context hub get crds\n  \
         kubectl multicluster local status\n  kubectl multicluster local down"
    );
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// This plugin's build: version and git commit.
    pub plugin: String,
    /// The build of the hub server that holds the hub's Lease, when one could be read.
    pub hub_server: Option<String>,
    /// Why the hub server's build is not known (no hub reachable, no hub server running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_server_note: Option<String>,
    /// The Kubernetes release the playground's API servers are built from.
    pub playground_kubernetes: String,
}

impl VersionInfo {
    /// The plugin's build, and the hub server's as its Lease on the hub says (within 5 s).
    async fn read(global: &GlobalArgs) -> Self {
        let hub = async {
            let client = hub_client(global).await?;
            let lease = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
                client,
                multicluster_core::SYSTEM_NAMESPACE,
            )
            .get_opt(multicluster_core::lease::LEASE_NAME)
            .await?;
            let Some(lease) = lease else {
                anyhow::bail!(
                    "no hub server has run on this hub (no Lease {} in {}): `kubectl multicluster init`",
                    multicluster_core::lease::LEASE_NAME,
                    multicluster_core::SYSTEM_NAMESPACE
                );
            };
            lease
                .metadata
                .annotations
                .unwrap_or_default()
                .remove(multicluster_core::keys::SERVER_VERSION)
                .ok_or_else(|| anyhow::anyhow!("the hub server predates version reporting"))
        };
        let (hub_server, hub_server_note) =
            match tokio::time::timeout(std::time::Duration::from_secs(5), hub).await {
                Ok(Ok(version)) => (Some(version), None),
                Ok(Err(e)) => (None, Some(multicluster_core::errors::describe(e.as_ref()))),
                Err(_) => (None, Some("the hub did not answer within 5 s".to_owned())),
            };
        Self {
            plugin: multicluster_core::versions::release(),
            hub_server,
            hub_server_note,
            playground_kubernetes: multicluster_core::versions::kubernetes().to_owned(),
        }
    }
}

impl Tabular for VersionInfo {
    fn headers(&self) -> Vec<&'static str> {
        vec!["component", "version"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![
            vec!["kubectl-multicluster".into(), self.plugin.clone()],
            vec![
                "multicluster-webhook (hub)".into(),
                self.hub_server.clone().unwrap_or_else(|| {
                    format!(
                        "unknown: {}",
                        self.hub_server_note.clone().unwrap_or_default()
                    )
                }),
            ],
            vec![
                "playground kube-apiserver".into(),
                self.playground_kubernetes.clone(),
            ],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_says_kubectl_multicluster() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("kubectl multicluster"), "{help}");
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-multicluster",
            "local",
            "status",
            "--context",
            "hub",
            "-o",
            "json",
            "-n",
            "ns1",
            "--kubeconfig",
            "/tmp/kc",
        ])
        .unwrap();
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.context.as_deref(), Some("hub"));
        assert_eq!(cli.global.namespace.as_deref(), Some("ns1"));
    }
}
