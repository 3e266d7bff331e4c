//! The local playground: a hub and N members, each a real kube-apiserver with its own etcd on
//! 127.0.0.1, started side by side and waited for once.
//!
//! `kubectl multicluster local up|down|status` and the end-to-end tests use this same code. The
//! playground directory holds everything it starts and writes:
//!
//! ```text
//! DIR/.kubectl-multicluster-playground   marker: only a directory holding it is ever deleted
//! DIR/state.json                         pids, ports and paths, for `down` and `status`
//! DIR/kubeconfig                         contexts hub, member-1, … (admin client certificates)
//! DIR/<cluster>/pki/                     CA, serving certificate, service-account key
//! DIR/<cluster>/etcd/                    etcd data
//! DIR/<cluster>/{etcd,kube-apiserver}.log
//! ```

pub mod binaries;
pub mod certs;
pub mod dns;
pub mod image;
pub mod kubeconfig;
pub mod network;
pub mod node;
pub mod process;
pub mod simulated;
pub mod storage;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::future::try_join_all;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::{Deserialize, Serialize};

use crate::output::Tabular;
use binaries::Binaries;
use multicluster_core::members::health::node_is_ready;

const MARKER_FILE: &str = ".kubectl-multicluster-playground";
const STATE_FILE: &str = "state.json";
const STATE_FORMAT: u32 = 1;
use crate::apply::FIELD_MANAGER;
/// Generous: a cold disk on a loaded 2-core machine can take tens of seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `${XDG_STATE_HOME:-~/.local/state}/kubectl-multicluster/local`
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| binaries::home_dir().join(".local").join("state"))
        .join("kubectl-multicluster")
        .join("local")
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub members: u32,
    /// Real nodes per member. With 0 the playground is API servers only (no controllers, no
    /// scheduler, no nodes, everything on 127.0.0.1), as the end-to-end tests that play the rest
    /// use it.
    pub nodes: u32,
    /// KWOK-simulated nodes per member.
    pub simulated_nodes: u32,
    /// Also merge the contexts into this kubeconfig (and make `hub` current).
    pub merge_into: Option<PathBuf>,
}

/// What `local up` recorded; `down` and `status` work from this alone.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PlaygroundState {
    pub format: u32,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The user's kubeconfig the contexts were merged into, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<PathBuf>,
    pub clusters: Vec<ClusterState>,
    /// The hub server (`multicluster-webhook serve`) running as a local process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_server: Option<HubServerState>,
    /// The bridge and node namespaces, when the playground has nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<network::NetworkPlan>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HubServerState {
    pub process: ProcessState,
    /// Base URL of the admission listener the webhook configurations point at.
    pub url: String,
    /// `host:port` of the plain-HTTP health listener.
    pub health: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// Also the kubeconfig context name.
    pub name: String,
    pub server: String,
    pub apiserver: ProcessState,
    pub etcd: ProcessState,
    pub etcd_endpoint: String,
    /// kube-controller-manager and kube-scheduler, when the playground has nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ProcessState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ProcessState>,
    /// The CSI snapshot-controller, on members with nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_controller: Option<ProcessState>,
    /// KWOK and how many simulated nodes it keeps, on members with simulated nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwok: Option<ProcessState>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub simulated_nodes: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<node::NodeState>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ProcessState {
    pub pid: u32,
    pub log: PathBuf,
}

impl PlaygroundState {
    pub fn marker(&self) -> String {
        self.dir.display().to_string()
    }

    /// The playground recorded in `dir`, if there is one.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a playground state file this version understands",
                path.display()
            )
        })?;
        if state.format != STATE_FORMAT {
            bail!(
                "{} has format {}, this kubectl-multicluster writes format {STATE_FORMAT}",
                path.display(),
                state.format
            );
        }
        Ok(Some(state))
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Pids of the API servers, then of the etcds: the order they must be stopped in (an API
    /// server whose etcd is already gone takes from 20 s to minutes to shut down).
    fn pids_in_stop_order(&self) -> (Vec<u32>, Vec<u32>) {
        (
            self.clusters.iter().map(|c| c.apiserver.pid).collect(),
            self.clusters.iter().map(|c| c.etcd.pid).collect(),
        )
    }

    fn any_running(&self) -> bool {
        let marker = self.marker();
        let (apiservers, etcds) = self.pids_in_stop_order();
        apiservers
            .iter()
            .chain(&etcds)
            .chain(&self.node_and_controller_pids())
            .chain(self.hub_server.as_ref().map(|h| &h.process.pid))
            .any(|&pid| process::is_ours(pid, &marker))
    }

    /// Every node's processes, then every controller: what stops after the hub server and before
    /// the API servers.
    fn node_and_controller_pids(&self) -> Vec<u32> {
        let nodes = self.clusters.iter().flat_map(|c| &c.nodes);
        nodes
            .flat_map(|n| n.pids())
            .chain(self.controller_pids())
            .collect()
    }

    /// Every cluster's kube-controller-manager, kube-scheduler and snapshot-controller.
    fn controller_pids(&self) -> Vec<u32> {
        self.clusters
            .iter()
            .flat_map(|c| {
                c.controller_manager
                    .iter()
                    .chain(&c.scheduler)
                    .chain(&c.snapshot_controller)
                    .chain(&c.kwok)
                    .map(|p| p.pid)
            })
            .collect()
    }

    /// A client for one of the playground's clusters, from its own kubeconfig.
    pub async fn client(&self, context: &str) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        client_for(&kubeconfig, context).await
    }
}

impl Tabular for PlaygroundState {
    fn headers(&self) -> Vec<&'static str> {
        vec!["context", "server", "apiserver pid", "etcd"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = self
            .clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.server.clone(),
                    c.apiserver.pid.to_string(),
                    c.etcd_endpoint.clone(),
                ]
            })
            .collect();
        if let Some(h) = &self.hub_server {
            rows.push(vec![
                "(hub server)".into(),
                h.url.clone(),
                h.process.pid.to_string(),
                "-".into(),
            ]);
        }
        rows
    }
}

async fn client_for(kubeconfig: &Kubeconfig, context: &str) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig.clone(), &options).await?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(Client::try_from(config)?)
}

/// Names of the clusters of a playground with `members` members.
pub fn cluster_names(members: u32) -> Vec<String> {
    std::iter::once("hub".to_owned())
        .chain((1..=members).map(|i| format!("member-{i}")))
        .collect()
}

struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

/// Free loopback ports, all held until every one is chosen so that none is handed out twice.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn etcd_args(cluster_dir: &Path, ports: &Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        // A playground: a crash of the machine may lose the last writes, in exchange for not
        // waiting on the disk for every one of them.
        "--unsafe-no-fsync=true".into(),
        "--name=default".into(),
        format!("--data-dir={}", cluster_dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        "--log-level=warn".into(),
    ]
}

/// The API server's flags. Without `network` (`--nodes 0`) an envtest-style API server: loopback
/// only, no kubelet, no controllers, RBAC on, admission webhooks on. With it, it listens on the
/// playground bridge's address (which nodes and pods reach), publishes that address as the
/// `kubernetes` Service's endpoint, and authorises kubelets with the Node authorizer.
fn apiserver_args(cluster_dir: &Path, ports: &Ports, network: Option<Ipv4Addr>) -> Vec<String> {
    let pki = cluster_dir.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let listen = network.unwrap_or(Ipv4Addr::LOCALHOST);
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
        format!("--secure-port={}", ports.apiserver),
        format!("--bind-address={listen}"),
        // Needed on machines without a default route.
        format!("--advertise-address={listen}"),
        format!("--cert-dir={}", pki.display()),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--allow-privileged=true".into(),
        // Reach a kubelet (exec, logs) by its node's address, as kubeadm sets it: a playground
        // node's host name resolves nowhere.
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
        "--profiling=false".into(),
        // The aggregation layer, for the hub server's proxy API: who vouches for forwarded users.
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
        format!(
            "--requestheader-allowed-names={}",
            certs::FRONT_PROXY_CLIENT
        ),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-uid-headers=X-Remote-Uid".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
        format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
        // Webhooks: the API server presents its admission client certificate to every webhook,
        // so the hub server can answer it alone.
        format!(
            "--admission-control-config-file={}",
            p("admission-config.yaml")
        ),
    ];
    if network.is_some() {
        args.extend([
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            // The API server's identity towards kubelets (exec, logs, port-forward).
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        ]);
    } else {
        args.extend([
            "--authorization-mode=RBAC".into(),
            // No controller-manager creates the default ServiceAccount a pod would need.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--endpoint-reconciler-type=none".into(),
        ]);
    }
    args
}

/// Controllers that make pods: off on the hub, where Deployments and the like are stored as
/// distribution sources and must not run.
const WORKLOAD_CONTROLLERS: [&str; 7] = [
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "replicationcontroller-controller",
];

fn controller_manager_args(cluster_dir: &Path, hub: bool) -> Vec<String> {
    let pki = cluster_dir.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let mut controllers = vec!["*".to_owned()];
    if hub {
        controllers.extend(WORKLOAD_CONTROLLERS.iter().map(|c| format!("-{c}")));
    }
    vec![
        format!("--kubeconfig={}", p("controller-manager.kubeconfig")),
        format!("--controllers={}", controllers.join(",")),
        // One per cluster: nothing to elect, and no lease writes every two seconds.
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        // Each controller with its own ServiceAccount, as kubeadm runs it.
        "--use-service-account-credentials=true".into(),
        // A playground notices a stopped node in seconds, not the default 50 s (the kubelets renew
        // their leases every 2 s, see `node`).
        "--node-monitor-period=2s".into(),
        "--node-monitor-grace-period=16s".into(),
    ]
}

fn scheduler_args(cluster_dir: &Path) -> Vec<String> {
    let kubeconfig = cluster_dir.join("pki").join("scheduler.kubeconfig");
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
    ]
}

/// The API server's admission configuration in `pki`: both webhook admission plugins read one
/// kubeconfig whose `*` user (every webhook host) is the admission client certificate.
fn write_admission_config(pki: &Path) -> anyhow::Result<()> {
    let p = |f: &str| pki.join(f).display().to_string();
    let client_kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    \
         client-certificate: {}\n    client-key: {}\n",
        p("admission-client.crt"),
        p("admission-client.key")
    );
    kubeconfig::write_private(&pki.join("admission-kubeconfig.yaml"), client_kubeconfig)?;
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    \
             kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            p("admission-kubeconfig.yaml")
        )
    };
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
        plugin("ValidatingAdmissionWebhook"),
        plugin("MutatingAdmissionWebhook")
    );
    kubeconfig::write_private(&pki.join("admission-config.yaml"), config)?;
    Ok(())
}

/// Makes `dir` ready for a new playground: refuses when one still runs there or when the
/// directory is not ours; clears what a stopped or failed playground left.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    let old = PlaygroundState::load(dir)?;
    if let Some(old) = &old
        && old.any_running()
    {
        bail!(
            "a playground is already running in {} ({}).\n\
             Stop it with `kubectl multicluster local down --dir {0}`, or start another one with a different --dir.",
            dir.display(),
            old.clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // A playground that died without `down` (killed, or the machine lost power) may have left its
    // mounts and network: they go with it.
    if let Some(old) = &old
        && old.network.is_some()
    {
        stop_processes(old);
    }
    remove_playground_dir(dir)?;
    // Its files include every cluster's CA and admin keys: nobody else on the machine may read them.
    kubeconfig::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER_FILE),
        "kubectl multicluster local playground\n",
    )?;
    Ok(())
}

/// Deletes a playground directory, and only that: a directory without our marker is left alone.
fn remove_playground_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join(MARKER_FILE).exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if empty {
            return Ok(());
        }
        bail!(
            "{} exists and is not a playground directory; choose another --dir (nothing was changed)",
            dir.display()
        );
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Starts a hub and `members` members, installs the CRDs into the hub and waits until every API
/// server is ready and every CRD is Established. On failure or Ctrl-C it stops what it started and
/// keeps the logs in the directory.
pub async fn up(
    opts: &UpOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<PlaygroundState> {
    if !cfg!(target_os = "linux") {
        anyhow::bail!(
            "the local playground runs kube-apiserver and etcd, which are Linux programs: run \
             `kubectl multicluster local up` on Linux (WSL 2 works on Windows)"
        );
    }
    let bins = Binaries::locate(
        &binaries::cache_dir(),
        opts.nodes > 0,
        opts.simulated_nodes > 0,
    )?;
    let hub_server_bin = binaries::hub_server()?;
    let dir = std::path::absolute(&opts.dir)?;
    prepare_dir(&dir)?;
    let started = Instant::now();
    let names = cluster_names(opts.members);
    progress(&format!(
        "Starting {} (kube-apiserver {}, etcd {}) in {}",
        names.join(", "),
        multicluster_core::versions::kubernetes(),
        multicluster_core::versions::etcd(),
        dir.display()
    ));

    let result = tokio::select! {
        r = start_and_wait(&dir, &names, &bins, &hub_server_bin, opts, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    match result {
        Ok(state) => {
            progress(&format!(
                "Ready in {:.1}s: {} clusters, {} CRDs Established",
                started.elapsed().as_secs_f64(),
                state.clusters.len(),
                multicluster_core::crds::all().len()
            ));
            Ok(state)
        }
        Err(e) => {
            if let Some(state) = PlaygroundState::load(&dir).ok().flatten() {
                stop_processes(&state);
                let _ = std::fs::remove_file(dir.join(STATE_FILE));
            }
            Err(e.context(format!(
                "the playground did not come up; everything it started was stopped, logs are kept in {}/<cluster>/*.log",
                dir.display()
            )))
        }
    }
}

async fn start_and_wait(
    dir: &Path,
    names: &[String],
    bins: &Binaries,
    hub_server_bin: &Path,
    opts: &UpOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<PlaygroundState> {
    // Three ports per cluster, two for the hub server.
    let ports = free_ports(names.len() * 3 + 2)?;
    let mut state = PlaygroundState {
        format: STATE_FORMAT,
        dir: dir.to_owned(),
        kubeconfig: dir.join("kubeconfig"),
        merged_into: None,
        clusters: Vec::new(),
        hub_server: None,
        network: None,
    };
    // The network first: with nodes, the API servers listen on its bridge.
    if opts.nodes > 0 {
        check_socket_paths(dir, names)?;
        let counts: Vec<(String, u32)> = names
            .iter()
            .map(|n| (n.clone(), if n == "hub" { 0 } else { opts.nodes }))
            .collect();
        state.network = Some(network::create(&counts)?);
        state.save()?;
    }
    let listen = state.network.as_ref().map(|n| n.gateway);
    let host = listen.unwrap_or(Ipv4Addr::LOCALHOST);
    let mut access = Vec::new();
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let ports = Ports {
            etcd_client: ports[3 * i],
            etcd_peer: ports[3 * i + 1],
            apiserver: ports[3 * i + 2],
        };
        let cluster_dir = dir.join(name);
        let pki = cluster_dir.join("pki");
        kubeconfig::create_private_dir(&pki)?;
        let components = cluster_components(state.network.as_ref(), name, opts.simulated_nodes > 0);
        let certs = certs::generate(name, host, &components)?;
        for (file, pem) in [
            ("ca.crt", &certs.ca_cert),
            ("apiserver.crt", &certs.serving_cert),
            ("apiserver.key", &certs.serving_key),
            ("sa.key", &certs.service_account_key),
            ("sa.pub", &certs.service_account_pub),
            ("front-proxy-ca.crt", &certs.front_proxy_ca_cert),
            ("front-proxy-client.crt", &certs.front_proxy_client_cert),
            ("front-proxy-client.key", &certs.front_proxy_client_key),
            ("admission-ca.crt", &certs.admission_ca_cert),
            ("admission-client.crt", &certs.admission_client_cert),
            ("admission-client.key", &certs.admission_client_key),
        ] {
            kubeconfig::write_private(&pki.join(file), pem)?;
        }
        for (stem, cert, key) in &certs.components {
            kubeconfig::write_private(&pki.join(format!("{stem}.crt")), cert)?;
            kubeconfig::write_private(&pki.join(format!("{stem}.key")), key)?;
        }
        write_admission_config(&pki)?;
        let etcd_log = cluster_dir.join("etcd.log");
        let apiserver_log = cluster_dir.join("kube-apiserver.log");
        // etcd and the API server start together: the API server retries until etcd answers,
        // which is faster than waiting for etcd first.
        let etcd = process::spawn(&bins.etcd, &etcd_args(&cluster_dir, &ports), &etcd_log)
            .with_context(|| format!("starting {}", bins.etcd.display()))?;
        let apiserver = process::spawn(
            &bins.kube_apiserver,
            &apiserver_args(&cluster_dir, &ports, listen),
            &apiserver_log,
        )
        .with_context(|| format!("starting {}", bins.kube_apiserver.display()))?;
        state.clusters.push(ClusterState {
            name: name.clone(),
            server: format!("https://{host}:{}", ports.apiserver),
            apiserver: ProcessState {
                pid: apiserver.id(),
                log: apiserver_log,
            },
            etcd: ProcessState {
                pid: etcd.id(),
                log: etcd_log,
            },
            etcd_endpoint: format!("http://127.0.0.1:{}", ports.etcd_client),
            controller_manager: None,
            scheduler: None,
            snapshot_controller: None,
            kwok: None,
            simulated_nodes: 0,
            nodes: Vec::new(),
        });
        // Recorded at once, so that `local down` can stop them even if this command dies now.
        state.save()?;
        children.push((etcd, apiserver));
        access.push(certs);
    }

    let cluster_access: Vec<_> = state
        .clusters
        .iter()
        .zip(&access)
        .map(|(c, certs)| kubeconfig::ClusterAccess {
            context: &c.name,
            server: &c.server,
            ca_pem: &certs.ca_cert,
            client_cert_pem: &certs.admin_cert,
            client_key_pem: &certs.admin_key,
        })
        .collect();
    let kubeconfig = kubeconfig::build(&cluster_access)?;
    kubeconfig::write(&state.kubeconfig, &kubeconfig)?;
    write_component_kubeconfigs(&state, &access)?;
    if state.network.is_some() {
        start_controllers_and_nodes(&mut state, bins, hub_server_bin, progress).await?;
    }

    // The hub's CRDs and the hub server go in as soon as the hub is ready, while the members may
    // still be starting: on two cores that takes them off the critical path.
    let hub_cluster = state.clusters[0].clone();
    let member_clusters = state.clusters[1..].to_vec();
    let (hub_children, member_children) = children
        .split_first_mut()
        .ok_or_else(|| anyhow!("a playground has at least a hub"))?;
    let kubeconfig_ref = &kubeconfig;
    let marker = &state.marker();
    let hub_server_ports = (ports[names.len() * 3], ports[names.len() * 3 + 1]);
    // The hub's and the members' work record what they start in the one state, each as soon as
    // it runs, so that a failure anywhere stops everything.
    let shared = std::sync::Mutex::new(state);
    let state_ref = &shared;
    let hub = async move {
        let client = wait_ready(
            kubeconfig_ref,
            &hub_cluster,
            &mut hub_children.0,
            &mut hub_children.1,
        )
        .await?;
        install_hub_objects(&client).await?;
        progress(
            "Hub ready, CRDs (multicluster.dev and the Multi-Cluster Services API) Established; starting the hub server",
        );
        let identity = hub_server_kubeconfig(&client, kubeconfig_ref).await?;
        start_hub_server(
            state_ref,
            &client,
            hub_server_bin,
            hub_server_ports,
            &identity,
        )
        .await?;
        progress("Hub server ready, webhooks registered");
        anyhow::Ok(())
    };
    let members = try_join_all(member_clusters.iter().zip(member_children.iter_mut()).map(
        |(cluster, (etcd, apiserver))| async move {
            let client = wait_ready(kubeconfig_ref, cluster, etcd, apiserver).await?;
            // What a real member gets from its multi-cluster services implementation.
            crate::apply::install_these_crds(&client, &crate::apply::mcs_api_crds()?)
                .await
                .with_context(|| {
                    format!(
                        "installing the Multi-Cluster Services API CRDs on {}",
                        cluster.name
                    )
                })?;
            if !cluster.nodes.is_empty() {
                // DNS first: its pod starts while the storage CRDs become Established.
                dns::install(&client, &bins.coredns, hub_server_bin)
                    .await
                    .with_context(|| format!("setting up cluster DNS on {}", cluster.name))?;
                // In the namespace the clusterset DNS server's objects created.
                crate::apply::apply_objects(
                    &client,
                    &[storage::mover_policy_params(hub_server_bin)],
                )
                .await
                .with_context(|| format!("recording the data mover's image on {}", cluster.name))?;
                storage::install(&client)
                    .await
                    .with_context(|| format!("setting up storage on {}", cluster.name))?;
                start_storage_controllers(state_ref, cluster, bins)?;
            }
            if opts.simulated_nodes > 0 {
                start_simulated_nodes(&client, state_ref, cluster, bins, opts.simulated_nodes)
                    .await
                    .with_context(|| format!("starting simulated nodes on {}", cluster.name))?;
            }
            wait_nodes_ready(&client, cluster, marker, progress).await?;
            // Not waited for (as kind does not): its pod needs the node Ready, untainted by the
            // controller-manager and a scheduling pass, which would add 5 s to every `up`; a pod
            // started now finds it answering by the time it runs.
            if !cluster.nodes.is_empty() {
                progress(&format!(
                    "{}: cluster DNS (CoreDNS) starting, on {}",
                    cluster.name,
                    dns::SERVICE_IP
                ));
            }
            if opts.simulated_nodes > 0 {
                wait_simulated_nodes_ready(&client, cluster, opts.simulated_nodes).await?;
                progress(&format!(
                    "{}: {} simulated node(s) Ready",
                    cluster.name, opts.simulated_nodes
                ));
            }
            anyhow::Ok(())
        },
    ));
    tokio::try_join!(hub, members)?;
    let mut state = shared.into_inner().unwrap_or_else(|e| e.into_inner());

    if let Some(target) = &opts.merge_into {
        let mut user = kubeconfig::read_or_empty(target)?;
        kubeconfig::merge(&mut user, &kubeconfig);
        kubeconfig::write(target, &user)?;
        state.merged_into = Some(target.clone());
        state.save()?;
    }
    Ok(state)
}

/// Registers a member's simulated Node objects (and KWOK's RBAC), then starts KWOK for them and
/// records it.
async fn start_simulated_nodes(
    client: &Client,
    shared: &std::sync::Mutex<PlaygroundState>,
    cluster: &ClusterState,
    bins: &Binaries,
    count: u32,
) -> anyhow::Result<()> {
    let mut objects = simulated::rbac();
    objects.extend((1..=count).map(|i| simulated::node(&simulated::node_name(&cluster.name, i))));
    crate::apply::apply_objects(client, &objects)
        .await
        .context("registering the simulated nodes")?;
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    let cluster_dir = state.dir.join(&cluster.name);
    let config = cluster_dir.join("kwok.yaml");
    std::fs::write(&config, simulated::config())?;
    let log = cluster_dir.join("kwok.log");
    let kwok = process::spawn(
        &bins.kwok,
        &simulated::kwok_args(&cluster_dir.join("pki").join("kwok.kubeconfig"), &config),
        &log,
    )
    .with_context(|| format!("starting {}", bins.kwok.display()))?;
    let record = state
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster.name)
        .ok_or_else(|| anyhow!("{} is not in the playground's state", cluster.name))?;
    record.kwok = Some(ProcessState {
        pid: kwok.id(),
        log,
    });
    record.simulated_nodes = count;
    state.save()
}

/// Waits until every simulated node of `cluster` is Ready.
async fn wait_simulated_nodes_ready(
    client: &Client,
    cluster: &ClusterState,
    count: u32,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(client.clone());
    let selector = format!("{}={}", simulated::NODE_LABEL.0, simulated::NODE_LABEL.1);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let ready = nodes
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map(|l| l.items.iter().filter(|n| node_is_ready(n)).count())
            .unwrap_or(0);
        if ready >= count as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{ready} of {count} simulated nodes of {} were Ready after {}s; see {}",
                cluster.name,
                READY_TIMEOUT.as_secs(),
                kwok_log(cluster)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where a member's KWOK logs (beside its API server's log), for an error message.
fn kwok_log(cluster: &ClusterState) -> String {
    cluster
        .apiserver
        .log
        .with_file_name("kwok.log")
        .display()
        .to_string()
}

/// Starts a member's snapshot-controller and its nodes' CSI sidecars (once the snapshot CRDs and
/// the sidecars' RBAC are there) and records them.
fn start_storage_controllers(
    shared: &std::sync::Mutex<PlaygroundState>,
    cluster: &ClusterState,
    bins: &Binaries,
) -> anyhow::Result<()> {
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    let cluster_dir = state.dir.join(&cluster.name);
    let kubeconfig = cluster_dir.join("pki").join("csi.kubeconfig");
    let record = state
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster.name)
        .ok_or_else(|| anyhow!("{} is not in the playground's state", cluster.name))?;
    let distributed = storage::distributed_snapshots(record.nodes.len());
    let log = cluster_dir.join("snapshot-controller.log");
    let controller = process::spawn(
        &bins.snapshot_controller,
        &storage::snapshot_controller_args(&kubeconfig, distributed),
        &log,
    )
    .with_context(|| format!("starting {}", bins.snapshot_controller.display()))?;
    record.snapshot_controller = Some(ProcessState {
        pid: controller.id(),
        log,
    });
    for node in &mut record.nodes {
        let (provisioner, snapshotter) = node::start_csi_sidecars(
            node,
            &bins.csi_provisioner,
            &bins.csi_snapshotter,
            &kubeconfig,
            distributed,
        )?;
        node.csi_provisioner = Some(provisioner);
        node.csi_snapshotter = Some(snapshotter);
    }
    state.save()
}

/// Linux limits a Unix socket's path to 107 bytes, and a node's deepest socket (the kubelet's
/// plugin registration socket) sits a few directories below the playground directory: refuse a
/// directory too deep for it before anything starts.
fn check_socket_paths(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    const MAX_SOCKET_PATH: usize = 107;
    let longest = names
        .iter()
        .map(|cluster| {
            let node = dir.join(format!("{cluster}-node-{}", node::MAX_NODES_PER_MEMBER));
            storage::registration_socket(&node.join("kubelet"))
        })
        .max_by_key(|p| p.as_os_str().len())
        .unwrap_or_default();
    let len = longest.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        bail!(
            "{} is too deep for the Unix sockets a playground node needs ({} is {len} bytes, Linux \
             allows {MAX_SOCKET_PATH}): choose a shorter --dir, for example /tmp/playground",
            dir.display(),
            longest.display()
        );
    }
    Ok(())
}

/// The client certificates a cluster with nodes hands out: its controller-manager, scheduler and
/// kube-proxy, the API server's identity towards kubelets, and each node's kubelet.
fn cluster_components(
    plan: Option<&network::NetworkPlan>,
    cluster: &str,
    simulated_nodes: bool,
) -> Vec<certs::Component> {
    use certs::Component;
    let mut components = Vec::new();
    if simulated_nodes && cluster != "hub" {
        components.push(Component::new("kwok", simulated::KWOK_USER, None));
    }
    let Some(plan) = plan else {
        return components;
    };
    components.extend([
        Component::new("controller-manager", "system:kube-controller-manager", None),
        Component::new("scheduler", "system:kube-scheduler", None),
        Component::new("kube-proxy", "system:kube-proxy", None),
        Component::new(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        ),
    ]);
    if plan.nodes_of(cluster).next().is_some() {
        components.push(Component::new("csi", storage::CSI_USER, None));
    }
    components.extend(plan.nodes_of(cluster).map(|n| Component::kubelet(&n.node)));
    components
}

/// Writes `DIR/<cluster>/pki/<component>.kubeconfig` for each component certificate of every
/// cluster.
fn write_component_kubeconfigs(
    state: &PlaygroundState,
    access: &[certs::ClusterCerts],
) -> anyhow::Result<()> {
    for (cluster, certs) in state.clusters.iter().zip(access) {
        let pki = state.dir.join(&cluster.name).join("pki");
        for (stem, cert, key) in &certs.components {
            let one = kubeconfig::build(&[kubeconfig::ClusterAccess {
                context: &cluster.name,
                server: &cluster.server,
                ca_pem: &certs.ca_cert,
                client_cert_pem: cert,
                client_key_pem: key,
            }])?;
            kubeconfig::write(&pki.join(format!("{stem}.kubeconfig")), &one)?;
        }
    }
    Ok(())
}

/// Starts every cluster's
/// kube-controller-manager and kube-scheduler, and every node (containerd, kubelet, kube-proxy).
/// Each process is recorded as soon as it runs.
async fn start_controllers_and_nodes(
    state: &mut PlaygroundState,
    bins: &Binaries,
    hub_server_bin: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let plan = state
        .network
        .clone()
        .ok_or_else(|| anyhow!("a playground with nodes has a network"))?;
    let images = state.dir.join("images");
    std::fs::create_dir_all(&images)?;
    let busybox = images.join("busybox-playground.oci.tar");
    std::fs::write(&busybox, image::busybox_archive()?)?;
    let image_archives = [busybox];
    let mut starts = Vec::new();
    for i in 0..state.clusters.len() {
        let cluster = &mut state.clusters[i];
        let cluster_dir = state.dir.join(&cluster.name);
        let pki = cluster_dir.join("pki");
        let hub = i == 0;
        let spawn = |bin: &Path, args: Vec<String>, log: &str| {
            let log = cluster_dir.join(log);
            process::spawn(bin, &args, &log)
                .with_context(|| format!("starting {}", bin.display()))
                .map(|child| ProcessState {
                    pid: child.id(),
                    log,
                })
        };
        cluster.controller_manager = Some(spawn(
            &bins.kube_controller_manager,
            controller_manager_args(&cluster_dir, hub),
            "kube-controller-manager.log",
        )?);
        cluster.scheduler = Some(spawn(
            &bins.kube_scheduler,
            scheduler_args(&cluster_dir),
            "kube-scheduler.log",
        )?);
        for net in plan.nodes_of(&cluster.name) {
            let inputs = node::NodeInputs {
                kubelet: &bins.kubelet,
                kube_proxy: &bins.kube_proxy,
                kubelet_kubeconfig: pki.join(format!("kubelet-{}.kubeconfig", net.node)),
                kube_proxy_kubeconfig: pki.join("kube-proxy.kubeconfig"),
                ca_file: pki.join("ca.crt"),
                image_archives: &image_archives,
                hub_server: hub_server_bin,
            };
            let dir = state.dir.clone();
            let net = net.clone();
            starts
                .push(async move { (net.cluster.clone(), node::start(&dir, &net, &inputs).await) });
        }
    }
    state.save()?;
    progress(&format!(
        "Starting {} node(s): containerd, kubelet and kube-proxy each, in network namespaces on bridge {} ({})",
        plan.nodes.len(),
        plan.bridge,
        plan.block()
    ));
    // Every node that started is recorded before the first failure is reported, so that `down`
    // (or the failure path of `up`) stops it.
    let mut first_error = None;
    for (cluster, started) in futures::future::join_all(starts).await {
        match started {
            Ok((node, _children)) => {
                if let Some(c) = state.clusters.iter_mut().find(|c| c.name == cluster) {
                    c.nodes.push(node);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    state.save()?;
    first_error.map_or(Ok(()), Err)
}

/// Waits until every node of `cluster` is Ready, failing early (with the log's tail) when one of
/// its processes exits.
async fn wait_nodes_ready(
    client: &Client,
    cluster: &ClusterState,
    marker: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    if cluster.nodes.is_empty() {
        return Ok(());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let csi_nodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(client.clone());
    let deadline = Instant::now() + READY_TIMEOUT;
    for node in &cluster.nodes {
        let name = &node.network.node;
        loop {
            for (what, p) in node.processes() {
                if !process::is_ours(p.pid, marker) {
                    bail!(
                        "{what} of node {name} exited; last lines of {}:\n{}",
                        p.log.display(),
                        process::log_tail(&p.log, 15)
                    );
                }
            }
            let ready = nodes
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| node_is_ready(&n));
            // Storage works once the kubelet has registered the node's CSI driver.
            let csi_registered = node.csi_driver.is_none()
                || csi_nodes
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| {
                        n.spec
                            .drivers
                            .iter()
                            .any(|d| d.name == multicluster_core::playground::CSI_DRIVER)
                    });
            if ready && csi_registered {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {name} of {} was not Ready after {}s; see {}",
                    cluster.name,
                    READY_TIMEOUT.as_secs(),
                    node.kubelet.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    progress(&format!(
        "{}: {} node(s) Ready, CSI driver registered",
        cluster.name,
        cluster.nodes.len()
    ));
    Ok(())
}

/// Polls `/readyz` until it answers ok; fails at once, with the log's tail, if a process exits.
async fn wait_ready(
    kubeconfig: &Kubeconfig,
    cluster: &ClusterState,
    etcd: &mut std::process::Child,
    apiserver: &mut std::process::Child,
) -> anyhow::Result<Client> {
    let client = client_for(kubeconfig, &cluster.name).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for (what, child, log) in [
            ("etcd", &mut *etcd, &cluster.etcd.log),
            ("kube-apiserver", &mut *apiserver, &cluster.apiserver.log),
        ] {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{what} of {} exited ({status}); last lines of {}:\n{}",
                    cluster.name,
                    log.display(),
                    process::log_tail(log, 15)
                );
            }
        }
        let request = http::Request::get("/readyz").body(Vec::new())?;
        if let Ok(body) = client.request_text(request).await
            && body.trim() == "ok"
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!(
                "the API server of {} was not ready after {}s; last lines of {}:\n{}",
                cluster.name,
                READY_TIMEOUT.as_secs(),
                cluster.apiserver.log.display(),
                process::log_tail(&cluster.apiserver.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `multicluster-webhook serve` for the hub with a fresh loopback certificate, waits for its
/// readiness (it has listed the Intents), then registers the webhook configurations pointing at it.
async fn start_hub_server(
    shared: &std::sync::Mutex<PlaygroundState>,
    hub: &Client,
    bin: &Path,
    (admission_port, health_port): (u16, u16),
    identity: &Kubeconfig,
) -> anyhow::Result<()> {
    let playground_dir = shared.lock().unwrap_or_else(|e| e.into_inner()).dir.clone();
    let dir = playground_dir.join("hub-server");
    kubeconfig::create_private_dir(&dir)?;
    let own_kubeconfig = dir.join("kubeconfig");
    kubeconfig::write(&own_kubeconfig, identity)?;
    // The API server calls the webhooks at 127.0.0.1 and the proxy API by the Service's name.
    let certs = certs::generate_loopback_serving(
        multicluster_core::install::NAME,
        &[multicluster_core::install::service_dns_name()],
    )?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    kubeconfig::write_private(&cert, &certs.cert)?;
    kubeconfig::write_private(&key, &certs.key)?;
    kubeconfig::write_private(&dir.join("ca.crt"), &certs.ca_cert)?;
    let health = format!("127.0.0.1:{health_port}");
    let args: Vec<String> = vec![
        "serve".into(),
        format!("--listen=127.0.0.1:{admission_port}"),
        format!("--health-listen={health}"),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
        // As shipped: its own ServiceAccount with the RBAC `init` installs, not the admin.
        format!("--kubeconfig={}", own_kubeconfig.display()),
        "--context=hub".into(),
        // The data mover pods run this very binary from the nodes (which share this machine's
        // files), not a release image the nodes do not have.
        format!("--mover-host-binary={}", bin.display()),
        format!("--mover-image={}", image::IMAGE),
        // The playground releases VIPs of deleted Services within seconds, not the default minute.
        "--vip-gc-interval-seconds=2".into(),
        "--vip-claim-grace-seconds=5".into(),
        // ... and sweeps a location's unreferenced volume data 10 s after its snapshot went.
        "--data-collection-grace-seconds=10".into(),
        // The admission routes answer the hub's API server only (its admission client
        // certificate, see `write_admission_config`).
        format!(
            "--admission-client-ca-file={}",
            playground_dir.join("hub/pki/admission-ca.crt").display()
        ),
    ];
    let log = dir.join("multicluster-webhook.log");
    let mut child =
        process::spawn(bin, &args, &log).with_context(|| format!("starting {}", bin.display()))?;
    let url = format!("https://127.0.0.1:{admission_port}");
    {
        let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
        state.hub_server = Some(HubServerState {
            process: ProcessState {
                pid: child.id(),
                log: log.clone(),
            },
            url: url.clone(),
            health: health.clone(),
        });
        state.save()?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_ok(&health, "/readyz").await {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the hub server exited ({status}); last lines of {}:\n{}",
                log.display(),
                process::log_tail(&log, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the hub server was not ready after 30s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = multicluster_core::webhooks::Endpoint::Url(url);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mutating = multicluster_core::webhooks::mutating(&endpoint, &certs.ca_cert);
    let validating = multicluster_core::webhooks::validating(&endpoint, &certs.ca_cert);
    let name = multicluster_core::webhooks::CONFIGURATION_NAME;
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        hub.clone(),
    )
    .patch(name, &params, &Patch::Apply(&mutating))
    .await
    .context("registering the mutating webhook configuration")?;
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        hub.clone(),
    )
    .patch(name, &params, &Patch::Apply(&validating))
    .await
    .context("registering the validating webhook configuration")?;
    register_proxy_api(hub, admission_port, &certs.ca_cert).await
}

/// How long the hub server's token lasts: a playground lives for a working session, not a year.
const HUB_SERVER_TOKEN_SECONDS: i64 = 365 * 24 * 3600;

/// Installs the hub server's identity on the hub as `init` does (its ServiceAccount, RBAC and
/// admission policy) and returns a kubeconfig for it alone: the hub's context, authenticated with a
/// token of that ServiceAccount. So the playground's hub server, and every e2e test, runs with the
/// least privilege a real install gives it.
async fn hub_server_kubeconfig(hub: &Client, all: &Kubeconfig) -> anyhow::Result<Kubeconfig> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    crate::apply::apply_objects(
        hub,
        &multicluster_core::install::hub_server_identity_objects(),
    )
    .await
    .context("installing the hub server's ServiceAccount and RBAC")?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(HUB_SERVER_TOKEN_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(hub.clone(), multicluster_core::SYSTEM_NAMESPACE)
        .create_token_request(
            multicluster_core::install::NAME,
            &PostParams::default(),
            &request,
        )
        .await
        .context("minting a token for the hub server's ServiceAccount")?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow!("the hub answered a token request without a token"))?;
    kubeconfig::for_token(all, "hub", &token)
}

/// Registers the hub server's proxy API with the hub's API server: an APIService whose Service is
/// an ExternalName for localhost (the aggregator dials `localhost:PORT`, checking the certificate
/// for the Service's DNS name), as no kube-proxy routes a ClusterIP here.
async fn register_proxy_api(hub: &Client, port: u16, ca_pem: &str) -> anyhow::Result<()> {
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": multicluster_core::install::NAME, "namespace": multicluster_core::SYSTEM_NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": port}]}
    });
    let api_service = multicluster_core::members::proxy::api_service(
        multicluster_core::SYSTEM_NAMESPACE,
        multicluster_core::install::NAME,
        port,
        ca_pem,
    );
    crate::apply::apply_objects(hub, &[service, api_service])
        .await
        .context("registering the proxy API")?;
    Ok(())
}

/// A plain-HTTP GET that answers whether the status is 200 (the hub server's health port).
pub async fn http_ok(host_port: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host_port).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The hub's namespace and every `multicluster.dev` CRD, applied together and waited for once.
async fn install_hub_objects(hub: &Client) -> anyhow::Result<()> {
    let namespace = [serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": multicluster_core::SYSTEM_NAMESPACE}
    })];
    let mcs = crate::apply::mcs_api_crds()?;
    let (ns, crds, mcs) = tokio::join!(
        crate::apply::apply_objects(hub, &namespace),
        crate::apply::install_crds(hub),
        crate::apply::install_these_crds(hub, &mcs)
    );
    ns.context("creating the multicluster-system namespace")?;
    crds?;
    mcs.context("installing the Multi-Cluster Services API CRDs")
}

fn stop_processes(state: &PlaygroundState) -> Vec<u32> {
    let marker = state.marker();
    let (apiservers, etcds) = state.pids_in_stop_order();
    // The hub server first: it talks to the hub's API server.
    let hub_server: Vec<u32> = state.hub_server.iter().map(|h| h.process.pid).collect();
    let mut killed = process::terminate_all(&hub_server, &marker, Duration::from_secs(10));
    // Then the nodes: kube-proxy and kubelets, the containers (their shims, killed: the
    // playground's pods have nothing to save that a graceful stop would), containerd; and the
    // controllers.
    let nodes: Vec<&node::NodeState> = state.clusters.iter().flat_map(|c| &c.nodes).collect();
    let agents: Vec<u32> = nodes.iter().flat_map(|n| n.agent_pids()).collect();
    killed.extend(process::terminate_all(
        &agents,
        &marker,
        Duration::from_secs(10),
    ));
    let shims: Vec<u32> = nodes
        .iter()
        .flat_map(|n| node::shim_pids(&n.containerd_socket))
        .collect();
    let shim_sockets = node::shim_sockets(&shims);
    // The containers first: killing a shim leaves its containers running, orphaned.
    process::kill(&node::container_pids(&shims));
    process::terminate_all(&shims, &marker, Duration::ZERO);
    let containerds: Vec<u32> = nodes.iter().map(|n| n.containerd.pid).collect();
    killed.extend(process::terminate_all(
        &containerds,
        &marker,
        Duration::from_secs(10),
    ));
    let controllers = state.controller_pids();
    killed.extend(process::terminate_all(
        &controllers,
        &marker,
        Duration::from_secs(10),
    ));
    killed.extend(process::terminate_all(
        &apiservers,
        &marker,
        Duration::from_secs(20),
    ));
    killed.extend(process::terminate_all(
        &etcds,
        &marker,
        Duration::from_secs(10),
    ));
    // What the nodes mounted (volumes, sandboxes' shm, containers' root filesystems), then their
    // network namespaces and the bridge.
    node::unmount_under(&state.dir);
    if let Some(plan) = &state.network {
        let netns: Vec<String> = plan.nodes.iter().map(|n| n.netns.clone()).collect();
        node::remove_host_files(&state.dir, &netns, &shim_sockets);
        network::remove(plan);
    }
    killed
}

/// What `local down` did.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DownReport {
    pub dir: PathBuf,
    pub stopped: Vec<String>,
    /// Processes that ignored SIGTERM and were killed.
    pub killed: Vec<u32>,
    pub kubeconfig_cleaned: Option<PathBuf>,
}

impl Tabular for DownReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["stopped", "dir"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.stopped
            .iter()
            .map(|c| vec![c.clone(), self.dir.display().to_string()])
            .collect()
    }
}

/// Stops the processes recorded in `dir` (API servers before their etcds), removes the contexts it
/// merged into the user's kubeconfig, and deletes the directory. `None` when no playground is there.
pub fn down(dir: &Path) -> anyhow::Result<Option<DownReport>> {
    let dir = std::path::absolute(dir)?;
    let Some(state) = PlaygroundState::load(&dir)? else {
        return Ok(None);
    };
    let killed = stop_processes(&state);
    let mut cleaned = None;
    if let Some(target) = &state.merged_into
        && target.exists()
    {
        let ours = Kubeconfig::read_from(&state.kubeconfig)?;
        let mut user = kubeconfig::read_or_empty(target)?;
        kubeconfig::unmerge(&mut user, &ours);
        kubeconfig::write(target, &user)?;
        cleaned = Some(target.clone());
    }
    remove_playground_dir(&dir)?;
    Ok(Some(DownReport {
        dir,
        stopped: state.clusters.iter().map(|c| c.name.clone()).collect(),
        killed,
        kubeconfig_cleaned: cleaned,
    }))
}

/// What `local load-image` did on one node.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ImageLoad {
    pub cluster: String,
    pub node: String,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LoadImageReport {
    pub archive: PathBuf,
    pub loaded: Vec<ImageLoad>,
}

impl Tabular for LoadImageReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["cluster", "node", "archive"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.loaded
            .iter()
            .map(|l| {
                vec![
                    l.cluster.clone(),
                    l.node.clone(),
                    self.archive.display().to_string(),
                ]
            })
            .collect()
    }
}

/// Imports an OCI or docker image archive into every node of the playground in `dir` (of
/// `cluster` only, when given), as `kind load image-archive` does: the nodes reach no registry.
pub fn load_image(
    dir: &Path,
    archive: &Path,
    cluster: Option<&str>,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<LoadImageReport> {
    let dir = std::path::absolute(dir)?;
    let state = PlaygroundState::load(&dir)?.ok_or_else(|| {
        anyhow!(
            "no playground in {}; start one with `kubectl multicluster local up`",
            dir.display()
        )
    })?;
    let archive = std::path::absolute(archive)?;
    if !archive.is_file() {
        bail!(
            "{} is not a file (an OCI or docker image archive, as `docker save` or `crane pull --format=oci` write)",
            archive.display()
        );
    }
    if let Some(wanted) = cluster
        && !state.clusters.iter().any(|c| c.name == wanted)
    {
        bail!(
            "the playground has no cluster {wanted}; it has {}",
            state
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let nodes: Vec<&node::NodeState> = state
        .clusters
        .iter()
        .filter(|c| cluster.is_none_or(|wanted| c.name == wanted))
        .flat_map(|c| &c.nodes)
        .collect();
    if nodes.is_empty() {
        bail!(
            "the playground in {} has no nodes{}: start it with `local up --nodes 1` (or more)",
            dir.display(),
            cluster.map(|c| format!(" in {c}")).unwrap_or_default()
        );
    }
    let marker = state.marker();
    let mut loaded = Vec::new();
    for n in nodes {
        if !process::is_ours(n.containerd.pid, &marker) {
            bail!(
                "containerd of node {} is not running (see {}); restart the playground",
                n.network.node,
                n.containerd.log.display()
            );
        }
        progress(&format!(
            "Loading {} into {}",
            archive.display(),
            n.network.node
        ));
        node::import_image(&n.containerd_socket, &archive)
            .with_context(|| format!("loading the image into {}", n.network.node))?;
        loaded.push(ImageLoad {
            cluster: n.network.cluster.clone(),
            node: n.network.node.clone(),
        });
    }
    Ok(LoadImageReport { archive, loaded })
}

/// One row of `local status`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: String,
    pub server: String,
    pub apiserver_running: bool,
    pub etcd_running: bool,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its controller-manager, scheduler and snapshot-controller all run (None: it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controllers_running: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
}

/// A node of `local status`: its processes, and its Ready condition as its cluster reports it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub address: Ipv4Addr,
    /// The processes of the node that do not run (containerd, kubelet, …); empty when all do.
    pub stopped: Vec<String>,
    pub ready: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub clusters: Vec<ClusterStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_server: Option<HubServerStatus>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct HubServerStatus {
    pub url: String,
    pub running: bool,
    pub ready: bool,
}

impl Tabular for StatusReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["context", "server", "apiserver", "etcd", "ready", "version"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let running = |b: bool| if b { "running" } else { "stopped" }.to_owned();
        let hub_server = self.hub_server.iter().map(|h| {
            vec![
                "(hub server)".to_owned(),
                h.url.clone(),
                running(h.running),
                "-".to_owned(),
                h.ready.to_string(),
                "-".to_owned(),
            ]
        });
        let nodes = self.clusters.iter().flat_map(|c| &c.nodes).map(|n| {
            vec![
                format!("(node) {}", n.name),
                n.address.to_string(),
                if n.stopped.is_empty() {
                    "running".to_owned()
                } else {
                    format!("stopped: {}", n.stopped.join(", "))
                },
                "-".to_owned(),
                n.ready.to_string(),
                "-".to_owned(),
            ]
        });
        self.clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.server.clone(),
                    match c.controllers_running {
                        Some(false) => {
                            format!("{} (controllers stopped)", running(c.apiserver_running))
                        }
                        _ => running(c.apiserver_running),
                    },
                    running(c.etcd_running),
                    c.ready.to_string(),
                    c.version.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .chain(nodes)
            .chain(hub_server)
            .collect()
    }
}

/// What runs in `dir`: each process checked by pid, each API server asked for `/readyz`.
pub async fn status(dir: &Path) -> anyhow::Result<Option<StatusReport>> {
    let dir = std::path::absolute(dir)?;
    let Some(state) = PlaygroundState::load(&dir)? else {
        return Ok(None);
    };
    let marker = state.marker();
    let kubeconfig = Kubeconfig::read_from(&state.kubeconfig)?;
    let probes = state.clusters.iter().map(|c| {
        let kubeconfig = &kubeconfig;
        let marker = &marker;
        async move {
            let apiserver_running = process::is_ours(c.apiserver.pid, marker);
            let (ready, version) = if apiserver_running {
                probe(kubeconfig, &c.name).await
            } else {
                (false, None)
            };
            let controllers: Vec<&ProcessState> = c
                .controller_manager
                .iter()
                .chain(&c.scheduler)
                .chain(&c.snapshot_controller)
                .collect();
            let ready_nodes = if ready && !c.nodes.is_empty() {
                ready_node_names(kubeconfig, &c.name).await
            } else {
                Vec::new()
            };
            ClusterStatus {
                name: c.name.clone(),
                server: c.server.clone(),
                apiserver_running,
                etcd_running: process::is_ours(c.etcd.pid, marker),
                ready,
                version,
                controllers_running: (!controllers.is_empty())
                    .then(|| controllers.iter().all(|p| process::is_ours(p.pid, marker))),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| NodeStatus {
                        name: n.network.node.clone(),
                        address: n.network.address,
                        stopped: n
                            .processes()
                            .into_iter()
                            .filter(|(_, p)| !process::is_ours(p.pid, marker))
                            .map(|(what, _)| what.to_owned())
                            .collect(),
                        ready: ready_nodes.contains(&n.network.node),
                    })
                    .collect(),
            }
        }
    });
    let clusters = futures::future::join_all(probes).await;
    let hub_server = match &state.hub_server {
        Some(h) => {
            let running = process::is_ours(h.process.pid, &marker);
            Some(HubServerStatus {
                url: h.url.clone(),
                running,
                ready: running && http_ok(&h.health, "/readyz").await,
            })
        }
        None => None,
    };
    Ok(Some(StatusReport {
        dir,
        kubeconfig: state.kubeconfig,
        clusters,
        hub_server,
    }))
}

/// The nodes of a cluster whose Ready condition is True.
async fn ready_node_names(kubeconfig: &Kubeconfig, context: &str) -> Vec<String> {
    let Ok(client) = client_for(kubeconfig, context).await else {
        return Vec::new();
    };
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let Ok(list) = nodes.list(&Default::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(node_is_ready)
        .filter_map(|n| n.metadata.name)
        .collect()
}

async fn probe(kubeconfig: &Kubeconfig, context: &str) -> (bool, Option<String>) {
    let Ok(client) = client_for(kubeconfig, context).await else {
        return (false, None);
    };
    let ready = match http::Request::get("/readyz").body(Vec::new()) {
        Ok(req) => client
            .request_text(req)
            .await
            .is_ok_and(|b| b.trim() == "ok"),
        Err(_) => false,
    };
    let version = client.apiserver_version().await.ok().map(|v| v.git_version);
    (ready, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_hub_then_numbered_members() {
        assert_eq!(cluster_names(2), ["hub", "member-1", "member-2"]);
        assert_eq!(cluster_names(0), ["hub"]);
    }

    #[test]
    fn a_foreign_directory_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
        let err = prepare_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a playground directory"), "{err}");
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn a_directory_too_deep_for_node_sockets_is_refused_before_anything_starts() {
        let names = cluster_names(2);
        assert!(check_socket_paths(Path::new("/tmp/playground"), &names).is_ok());
        let deep = Path::new("/home").join("a".repeat(60));
        let err = check_socket_paths(&deep, &names).unwrap_err().to_string();
        assert!(err.contains("shorter --dir"), "{err}");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(9).unwrap();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
    }
}
