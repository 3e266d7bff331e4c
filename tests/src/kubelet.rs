//! A real node for end-to-end tests: a real `kubelet` (built by `tests/install-deps.sh` from the
//! `k8s.io/kubernetes` module, like kube-apiserver) registered with one playground cluster, running
//! pods through a real containerd and runc (Debian packages), so that `pods/exec` through that
//! cluster's API server reaches a real process in a real container.
//!
//! What is set up, and what is left out:
//! * containerd with its own root, state and socket under the test's directory, the `native`
//!   snapshotter (no overlay needed) and `restrict_oom_score_adj` (this machine does not let a
//!   process lower its OOM score, which the pod sandbox asks for);
//! * one image, the playground's (`multicluster.dev/busybox:playground`, Debian's static busybox),
//!   imported from an OCI archive (no registry is reachable); it is also the sandbox image;
//! * the kubelet with cgroup v1 allowed (`failCgroupV1: false`: these machines have no cgroup v2
//!   controllers), anonymous access to its API (the API server calls it without a client
//!   certificate), and the machine's first non-loopback address as its node IP (the API server dials
//!   it; a kubelet refuses a loopback node IP);
//! * no CNI: the node stays `NotReady` (network plugin not initialised) and only `hostNetwork` pods
//!   run on it, which is what a test that execs into a pod needs. No scheduler either: a pod names
//!   the node in `spec.nodeName`.
//!
//! Cleanup: [`Drop`] stops the kubelet, containerd and every containerd shim of this node (found by
//! this node's socket on their command line), unmounts what they mounted under the node's
//! directory, and deletes the Node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;

use crate::Playground;

/// The image every pod on this node runs (and its sandbox image): the playground's own.
pub const IMAGE: &str = kubectl_multicluster::local::image::IMAGE;

/// A kubelet and its container runtime, registered as node `name` with one cluster.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    dir: PathBuf,
    socket: PathBuf,
    kubeconfig: PathBuf,
    containerd: Child,
    kubelet: Child,
}

impl Node {
    /// Starts containerd and a kubelet in `dir` for the playground cluster `context`, registered
    /// as `name`, and waits until the Node exists. Panics saying what is missing or what failed.
    pub async fn start(pg: &Playground, context: &str, name: &str, dir: &Path) -> Self {
        let kubelet = crate::kubernetes_binary("kubelet", "KUBELET");
        assert!(
            kubelet.is_file(),
            "no kubelet at {}: run tests/install-deps.sh",
            kubelet.display()
        );
        for tool in ["containerd", "ctr", "runc", "busybox"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "{tool} is not installed: run tests/install-deps.sh"
            );
        }
        std::fs::create_dir_all(dir).expect("create the node's directory");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#,
                root = dir.join("containerd-root").display(),
                state = dir.join("containerd-state").display(),
                socket = socket.display(),
            ),
        )
        .expect("write containerd.toml");
        let containerd = spawn_logged(
            Command::new("containerd").arg("--config").arg(&config),
            &dir.join("containerd.log"),
        );
        wait_for(
            || socket.exists(),
            Duration::from_secs(30),
            "containerd's socket",
            &dir.join("containerd.log"),
        );

        // The image, imported into the namespace the CRI plugin uses.
        let image = dir.join("busybox.oci.tar");
        std::fs::write(
            &image,
            kubectl_multicluster::local::image::busybox_archive().expect("build the image"),
        )
        .expect("write the image archive");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(&image)
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The kubelet, with the cluster's admin credentials (a test node; RBAC-only clusters have
        // no Node authorizer to narrow them).
        let kubeconfig = dir.join("kubeconfig");
        let flat = crate::run_ok(pg.kubectl().args([
            "config",
            "view",
            "--minify",
            "--flatten",
            "--context",
            context,
        ]));
        std::fs::write(&kubeconfig, flat).expect("write the kubelet's kubeconfig");
        let address = node_address();
        let config = dir.join("kubelet.yaml");
        std::fs::write(
            &config,
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
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
resolvConf: ""
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
"#,
                socket = socket.display(),
                port = free_port(&address),
            ),
        )
        .expect("write kubelet.yaml");
        let kubelet = spawn_logged(
            Command::new(&kubelet)
                .arg("--config")
                .arg(&config)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--root-dir")
                .arg(dir.join("kubelet-root"))
                .args(["--hostname-override", name, "--node-ip", &address]),
            &dir.join("kubelet.log"),
        );
        let node = Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            socket,
            kubeconfig,
            containerd,
            kubelet,
        };
        let nodes: Api<NodeObject> = Api::all(pg.client(context).await.expect("client"));
        crate::eventually(
            &format!(
                "node {name} registers (see {})",
                dir.join("kubelet.log").display()
            ),
            Duration::from_secs(60),
            async || nodes.get_opt(name).await.ok().flatten().is_some(),
        )
        .await;
        node
    }

    /// Where the kubelet and containerd write their logs (for a failing test's message).
    pub fn logs(&self) -> String {
        format!(
            "{} and {}",
            self.dir.join("kubelet.log").display(),
            self.dir.join("containerd.log").display()
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kubelet.kill();
        let _ = self.kubelet.wait();
        // The shims outlive containerd (they are re-parented): the playground's own node finds
        // them the same way, by the socket on their command line.
        for pid in kubectl_multicluster::local::node::shim_pids(&self.socket) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // What they mounted under the node's directory (the kubelet's root, each sandbox's shm,
        // each container's rootfs) outlives them.
        kubectl_multicluster::local::node::unmount_under(&self.dir);
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "node", &self.name, "--wait=false"])
            .output();
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("create a log file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn wait_for(ready: impl Fn() -> bool, timeout: Duration, what: &str, log: &Path) {
    crate::eventually_blocking(&format!("{what} (see {})", log.display()), timeout, ready);
}

/// The machine's first global IPv4 address: the kubelet's node IP and listening address.
fn node_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .expect("a kubelet needs a non-loopback IPv4 address and this machine has none")
}

fn free_port(address: &str) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
