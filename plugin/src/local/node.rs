//! A playground node: a real kubelet with its own containerd (and runc) and a kube-proxy, all in
//! the node's network namespace ([`super::network`]), so that pods get addresses from the node's
//! CNI bridge, reach each other and Services, and NodePorts answer on the node's address.
//!
//! What is set up, and why:
//! * containerd with its root, state, socket and `opt` directory under `DIR/<node>/`, the `native`
//!   snapshotter (no overlay filesystem needed), `restrict_oom_score_adj` (these machines do not
//!   let a process lower its OOM score, which the pod sandbox asks for), the pods' network
//!   namespaces mounted under its state directory (not `/run/netns`, where a sandbox created while
//!   `down` stops the node would outlive the playground), and the CNI bridge plugin
//!   from the node's own configuration (its pod range, IPAM state under the node's directory);
//! * the playground's image ([`super::image`]) imported into it: no registry is reachable;
//! * the kubelet with cgroup v1 allowed (`failCgroupV1: false`: these machines have no cgroup v2
//!   controllers), no QoS cgroups, its node address as node IP, a client certificate for
//!   `system:node:<name>` (the Node authorizer confines it to its own node's objects), and
//!   webhook authentication and authorisation of its own API (the API server calls it with a
//!   client certificate of the cluster's CA); node leases renewed every 2 s, so that the
//!   controller-manager notices a stopped node within the playground's grace period;
//! * kube-proxy in nftables mode, told which traffic is local by the CNI bridge's name, and
//!   changing no conntrack sysctl (those are the machine's).
//!
//! Processes enter the node's network namespace with `nsenter --net`, and only that: they share
//! the machine's mount namespace, so the kubelet's volume mounts are visible to containerd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::network::NodeNetwork;
use super::{ProcessState, process};

/// The most nodes `local up --nodes` starts per member.
pub const MAX_NODES_PER_MEMBER: u32 = 8;

/// The node's processes, for `down` and `status`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    #[serde(flatten)]
    pub network: NodeNetwork,
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub containerd: ProcessState,
    pub kubelet: ProcessState,
    pub kube_proxy: ProcessState,
    /// The playground CSI driver and its sidecars ([`super::storage`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_driver: Option<ProcessState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_provisioner: Option<ProcessState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi_snapshotter: Option<ProcessState>,
}

impl NodeState {
    /// Pids of what talks to the API server and the runtime: kube-proxy, the kubelet, the CSI
    /// sidecars and driver. They stop before containerd.
    pub fn agent_pids(&self) -> Vec<u32> {
        [&self.kube_proxy, &self.kubelet]
            .into_iter()
            .chain(&self.csi_provisioner)
            .chain(&self.csi_snapshotter)
            .chain(&self.csi_driver)
            .map(|p| p.pid)
            .collect()
    }

    /// Every process of the node.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.agent_pids();
        pids.push(self.containerd.pid);
        pids
    }

    /// Each process with its name, for checks and error messages.
    pub fn processes(&self) -> Vec<(&'static str, &ProcessState)> {
        [
            ("containerd", Some(&self.containerd)),
            ("kubelet", Some(&self.kubelet)),
            ("kube-proxy", Some(&self.kube_proxy)),
            ("csi driver", self.csi_driver.as_ref()),
            ("csi-provisioner", self.csi_provisioner.as_ref()),
            ("csi-snapshotter", self.csi_snapshotter.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, p)| p.map(|p| (name, p)))
        .collect()
    }
}

/// What a node needs from its cluster.
#[derive(Debug)]
pub struct NodeInputs<'a> {
    pub kubelet: &'a Path,
    pub kube_proxy: &'a Path,
    /// kubeconfig of `system:node:<name>` for this cluster.
    pub kubelet_kubeconfig: PathBuf,
    /// kubeconfig of `system:kube-proxy` for this cluster.
    pub kube_proxy_kubeconfig: PathBuf,
    /// The cluster CA (the kubelet trusts it for the API server's client certificate).
    pub ca_file: PathBuf,
    /// The playground's image archives (busybox, CoreDNS), imported into the node's containerd.
    pub image_archives: &'a [PathBuf],
    /// `multicluster-webhook`, whose `csi-driver` subcommand is the node's CSI driver.
    pub hub_server: &'a Path,
}

/// Starts the node's external-provisioner and csi-snapshotter, next to its CSI driver.
pub fn start_csi_sidecars(
    node: &NodeState,
    provisioner: &Path,
    snapshotter: &Path,
    kubeconfig: &Path,
    distributed_snapshots: bool,
) -> anyhow::Result<(ProcessState, ProcessState)> {
    let env = [("NODE_NAME", node.network.node.as_str())];
    let spawn = |what: &str, bin: &Path, args: Vec<String>| {
        let log = node.dir.join(format!("{what}.log"));
        process::spawn_with_env(bin, &args, &env, &log)
            .with_context(|| format!("starting {}", bin.display()))
            .map(|child| ProcessState {
                pid: child.id(),
                log,
            })
    };
    Ok((
        spawn(
            "csi-provisioner",
            provisioner,
            super::storage::provisioner_args(&node.dir, kubeconfig),
        )?,
        spawn(
            "csi-snapshotter",
            snapshotter,
            super::storage::snapshotter_args(&node.dir, kubeconfig, distributed_snapshots),
        )?,
    ))
}

/// Starts containerd (and waits for its socket), imports the image, then starts the kubelet and
/// kube-proxy. Returns as soon as they run: the caller waits for the Node to be Ready.
pub async fn start(
    dir: &Path,
    net: &NodeNetwork,
    inputs: &NodeInputs<'_>,
) -> anyhow::Result<(NodeState, Vec<Child>)> {
    let node_dir = dir.join(&net.node);
    super::kubeconfig::create_private_dir(&node_dir)?;
    let cni_dir = node_dir.join("cni");
    std::fs::create_dir_all(&cni_dir)?;
    std::fs::write(
        cni_dir.join("10-playground.conflist"),
        cni_config(net, &node_dir),
    )?;
    let socket = node_dir.join("containerd.sock");
    let config = node_dir.join("containerd.toml");
    std::fs::write(&config, containerd_config(&node_dir, &socket, &cni_dir))?;
    let containerd_log = node_dir.join("containerd.log");
    let mut containerd = spawn_in(
        &net.netns,
        Path::new("containerd"),
        &["--config".into(), config.display().to_string()],
        &containerd_log,
    )
    .context("starting containerd (Debian: containerd)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Some(status) = containerd.try_wait()? {
            bail!(
                "containerd of {} exited ({status}); last lines of {}:\n{}",
                net.node,
                containerd_log.display(),
                process::log_tail(&containerd_log, 10)
            );
        }
        if Instant::now() > deadline {
            bail!("containerd of {} did not open its socket in 30s", net.node);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // On threads of their own: `ctr` takes a second or two for CoreDNS's image, and every node's
    // imports run at once.
    let imports = inputs.image_archives.iter().map(|archive| {
        let (socket, archive) = (socket.clone(), archive.clone());
        tokio::task::spawn_blocking(move || {
            import_image(&socket, &archive)
                .with_context(|| format!("importing {}", archive.display()))
        })
    });
    for imported in futures::future::join_all(imports).await {
        imported
            .context("importing an image")?
            .with_context(|| format!("into node {}", net.node))?;
    }

    // The CSI driver first, so that its registration socket is there when the kubelet looks.
    let kubelet_root = node_dir.join("kubelet");
    let driver_log = node_dir.join("csi-driver.log");
    let csi_driver = process::spawn(
        inputs.hub_server,
        &super::storage::driver_args(&net.node, &node_dir, &kubelet_root),
        &driver_log,
    )
    .with_context(|| format!("starting {} csi-driver", inputs.hub_server.display()))
    .map(|child| ProcessState {
        pid: child.id(),
        log: driver_log,
    })?;
    let kubelet_kubeconfig = &inputs.kubelet_kubeconfig;
    let kubelet_config = node_dir.join("kubelet.yaml");
    std::fs::write(
        &kubelet_config,
        kubelet_config_yaml(net, &node_dir, &socket, &inputs.ca_file),
    )?;
    let kubelet_log = node_dir.join("kubelet.log");
    let kubelet = spawn_in(
        &net.netns,
        inputs.kubelet,
        &[
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", kubelet_kubeconfig.display()),
            format!("--root-dir={}", kubelet_root.display()),
            format!("--hostname-override={}", net.node),
            format!("--node-ip={}", net.address),
        ],
        &kubelet_log,
    )
    .context("starting the kubelet")?;

    let proxy_kubeconfig = &inputs.kube_proxy_kubeconfig;
    let proxy_log = node_dir.join("kube-proxy.log");
    let kube_proxy = spawn_in(
        &net.netns,
        inputs.kube_proxy,
        &[
            format!("--kubeconfig={}", proxy_kubeconfig.display()),
            format!("--hostname-override={}", net.node),
            "--proxy-mode=nftables".into(),
            "--detect-local-mode=BridgeInterface".into(),
            "--pod-bridge-interface=cni0".into(),
            // Conntrack limits and timeouts are sysctls of the machine: leave them as they are.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            // Inside the node's namespace: nobody else listens there.
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
        ],
        &proxy_log,
    )
    .context("starting kube-proxy")?;

    let state = NodeState {
        network: net.clone(),
        dir: node_dir,
        containerd_socket: socket,
        containerd: ProcessState {
            pid: containerd.id(),
            log: containerd_log,
        },
        kubelet: ProcessState {
            pid: kubelet.id(),
            log: kubelet_log,
        },
        kube_proxy: ProcessState {
            pid: kube_proxy.id(),
            log: proxy_log,
        },
        csi_driver: Some(csi_driver),
        // Started once the cluster has the snapshot CRDs and the sidecars' RBAC
        // ([`start_csi_sidecars`]): csi-snapshotter looks for the group snapshot CRDs only once, at
        // start.
        csi_provisioner: None,
        csi_snapshotter: None,
    };
    Ok((state, vec![containerd, kubelet, kube_proxy]))
}

/// Starts `program` inside the network namespace `netns` (and no other namespace).
fn spawn_in(netns: &str, program: &Path, args: &[String], log: &Path) -> std::io::Result<Child> {
    let mut all = vec![
        format!("--net=/run/netns/{netns}"),
        "--".into(),
        program.display().to_string(),
    ];
    all.extend_from_slice(args);
    process::spawn(Path::new("nsenter"), &all, log)
}

/// Imports an OCI or docker image archive into a node's containerd, in the namespace the
/// kubelet's runtime uses.
pub fn import_image(socket: &Path, archive: &Path) -> anyhow::Result<()> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args([
            "-n",
            "k8s.io",
            "images",
            "import",
            "--snapshotter",
            "native",
        ])
        .arg(archive)
        .output()
        .context("running ctr (Debian: containerd)")?;
    if !out.status.success() {
        bail!(
            "ctr images import {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn containerd_config(node_dir: &Path, socket: &Path, cni_dir: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        root = node_dir.join("containerd-root").display(),
        state = node_dir.join("containerd-state").display(),
        opt = node_dir.join("containerd-opt").display(),
        runc = node_dir.join("runc").display(),
        socket = socket.display(),
        cni = cni_dir.display(),
        image = super::image::IMAGE,
    )
}

/// The CNI bridge `cni0` with the node's pod range; no masquerading (every address of the
/// playground is routed), IPAM state in the node's directory rather than `/var/lib/cni`.
fn cni_config(net: &NodeNetwork, node_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        // Also the prefix of the CNI result cache files (`/var/lib/cni/results/<name>-…`), which
        // `down` removes by it.
        "name": net.netns,
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": node_dir.join("cni-ipam").display().to_string(),
                "ranges": [[{"subnet": net.pod_cidr, "gateway": net.pod_gateway().to_string()}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        }, {"type": "loopback"}]
    })
    .to_string()
}

fn kubelet_config_yaml(net: &NodeNetwork, node_dir: &Path, socket: &Path, ca: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
address: {address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
resolvConf: ""
clusterDNS: [{dns}]
clusterDomain: {domain}
podLogsDir: {logs}
podCIDR: {pod_cidr}
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
nodeStatusUpdateFrequency: 4s
nodeStatusReportFrequency: 10s
nodeLeaseDurationSeconds: 8
"#,
        socket = socket.display(),
        address = net.address,
        ca = ca.display(),
        logs = node_dir.join("pod-logs").display(),
        pod_cidr = net.pod_cidr,
        dns = super::dns::SERVICE_IP,
        domain = super::dns::CLUSTER_DOMAIN,
    )
}

/// Unmounts everything mounted under `dir` (the kubelet's volumes, each sandbox's shm, each
/// container's root filesystem), deepest first, so that the directory can be removed.
pub fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        // /proc/mounts escapes spaces and other bytes as octal; the playground's paths have none.
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    mounts.dedup();
    #[cfg(target_os = "linux")]
    for point in &mounts {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
    mounts
}

/// The containerd shims of a node, found by its socket on their command line: they are
/// re-parented when containerd stops and outlive it.
pub fn shim_pids(socket: &Path) -> Vec<u32> {
    let socket = socket.display().to_string();
    super::process::all_pids()
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = words
                .first()
                .is_some_and(|w| w.ends_with(b"containerd-shim-runc-v2"));
            is_shim && words.contains(&socket.as_bytes())
        })
        .collect()
}

/// The processes the shims `shims` started: each container's first process, whose parent the shim
/// is (it is their subreaper). Killing a shim leaves them running, with init as their parent; in
/// its own PID namespace, a container ends with its first process.
pub fn container_pids(shims: &[u32]) -> Vec<u32> {
    super::process::all_pids()
        .filter(|pid| {
            super::process::state_and_parent(*pid).is_some_and(|(_, ppid)| shims.contains(&ppid))
        })
        .collect()
}

/// What containerd and the kubelet write outside the playground's directory, at paths they do not
/// let one configure: the shims' sockets (`/run/containerd/s/…`), the CNI result cache
/// (`/var/lib/cni/results/…`) and the container log links (`/var/log/containers/…`). They go when
/// pods stop cleanly; `down` kills the pods, so it removes them itself, and only those of this
/// playground's nodes.
/// The Unix sockets the shims of a node listen on, read from their open files before they are
/// killed (the path is not on their command line).
pub fn shim_sockets(shims: &[u32]) -> Vec<PathBuf> {
    let mut sockets = Vec::new();
    for pid in shims {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let inodes: Vec<String> = std::fs::read_dir(proc_dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let t = target.display().to_string();
                t.strip_prefix("socket:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .map(str::to_owned)
            })
            .collect();
        // Unix sockets are listed per network namespace: read the shim's own view.
        let table = std::fs::read_to_string(proc_dir.join("net/unix")).unwrap_or_default();
        sockets.extend(
            table
                .lines()
                .filter_map(|line| {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    // Num RefCount Protocol Flags Type St Inode Path
                    let (inode, path) = (words.get(6)?, words.get(7)?);
                    inodes
                        .iter()
                        .any(|i| i == inode)
                        .then(|| PathBuf::from(path))
                })
                .filter(|p| p.starts_with("/run/containerd/s/")),
        );
    }
    sockets.sort();
    sockets.dedup();
    sockets
}

const CNI_RESULTS: &str = "/var/lib/cni/results";
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";

/// Removes the CNI result cache entries of the node namespaces `netns_names` (and the loopback
/// entries of the same sandboxes), and the container log links that point into `dir`.
pub fn remove_host_files(dir: &Path, netns_names: &[String], shim_sockets: &[PathBuf]) {
    for socket in shim_sockets {
        let _ = std::fs::remove_file(socket);
    }
    let results: Vec<String> = std::fs::read_dir(CNI_RESULTS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    for (network, sandbox) in sandboxes_of(&results, netns_names) {
        for name in [
            format!("cni-loopback-{sandbox}-lo"),
            format!("{network}-{sandbox}-eth0"),
        ] {
            let _ = std::fs::remove_file(Path::new(CNI_RESULTS).join(name));
        }
    }
    for link in std::fs::read_dir(CONTAINER_LOG_LINKS)
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_link(link.path()).is_ok_and(|target| target.starts_with(dir)) {
            let _ = std::fs::remove_file(link.path());
        }
    }
}

/// `(network, sandbox id)` of the CNI result file names `<network>-<sandbox>-eth0` whose network
/// is one of `networks`.
fn sandboxes_of<'a>(results: &[String], networks: &'a [String]) -> Vec<(&'a str, String)> {
    results
        .iter()
        .filter_map(|name| {
            networks.iter().find_map(|net| {
                let sandbox = name
                    .strip_prefix(net.as_str())?
                    .strip_prefix('-')?
                    .strip_suffix("-eth0")?;
                Some((net.as_str(), sandbox.to_owned()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_playgrounds_cni_results_are_matched() {
        let results: Vec<String> = [
            "mcpg0-n1-aaa-eth0",
            "mcpg0-n12-bbb-eth0",
            "mcpg1-n1-ccc-eth0",
            "cni-loopback-aaa-lo",
            "other-ddd-eth0",
        ]
        .map(String::from)
        .to_vec();
        let ours = ["mcpg0-n1".to_owned(), "mcpg0-n12".to_owned()];
        let mut found = sandboxes_of(&results, &ours);
        found.sort();
        assert_eq!(
            found,
            [
                ("mcpg0-n1", "aaa".to_owned()),
                ("mcpg0-n12", "bbb".to_owned())
            ]
        );
    }
}
