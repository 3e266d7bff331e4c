//! End-to-end test support: one real playground (a hub and two members, each a kube-apiserver
//! with its own etcd, started by `kubectl multicluster local up`, the same code users run) per test
//! binary, and a fresh namespace per test.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let pg = multicluster_tests::playground();
//! let hub = pg.client("hub").await?;
//! let ns = multicluster_tests::fresh_namespace(&hub, "my-test").await?;
//! # Ok(()) }
//! ```
//!
//! The playground outlives no test run: a watchdog process runs `local down` as soon as the test
//! binary that started it exits, whether it passed, failed or panicked.

pub mod csi;
pub mod examples;
pub mod health;
pub mod mcs;
pub mod minio;
pub mod wait;

pub use wait::{eventually, eventually_blocking};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubectl_multicluster::local::PlaygroundState;

/// Members of the shared playground besides the hub.
pub const MEMBERS: u32 = 2;

#[derive(Debug)]
pub struct Playground {
    pub state: PlaygroundState,
}

static PLAYGROUND: OnceLock<Playground> = OnceLock::new();

/// The playground of this test binary, started on first use.
pub fn playground() -> &'static Playground {
    PLAYGROUND.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("multicluster-e2e-{}", std::process::id()));
        let state = start_playground(&dir, MEMBERS, &[]);
        Playground { state }
    })
}

static PLAYGROUND_WITH_NODES: OnceLock<Playground> = OnceLock::new();

/// Simulated (KWOK) nodes per member of [`playground_with_nodes`].
pub const SIMULATED_NODES: u32 = 4;

/// A playground of this test binary whose members have a real node each (`local up --nodes 1`:
/// controllers, kubelet, containerd, CNI, kube-proxy, CSI) and [`SIMULATED_NODES`] KWOK nodes,
/// started on first use. For the tests that stop playing what nodes do; a test binary uses this
/// one or [`playground`], not both.
pub fn playground_with_nodes() -> &'static Playground {
    PLAYGROUND_WITH_NODES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mc-e2e-nodes-{}", std::process::id()));
        let simulated = SIMULATED_NODES.to_string();
        let state = start_playground(
            &dir,
            MEMBERS,
            &["--nodes", "1", "--simulated-nodes", &simulated],
        );
        Playground { state }
    })
}

/// Starts a playground in `dir` through the plugin binary and arranges for `local down` to run
/// when this test process exits. Panics with the plugin's stderr when it fails.
pub fn start_playground(dir: &Path, members: u32, extra_args: &[&str]) -> PlaygroundState {
    let mut args = vec![
        "local".to_owned(),
        "up".to_owned(),
        "--dir".to_owned(),
        dir.display().to_string(),
        "--members".to_owned(),
        members.to_string(),
        "-o".to_owned(),
        "json".to_owned(),
    ];
    if !extra_args.contains(&"--kubeconfig") {
        args.push("--no-merge-kubeconfig".to_owned());
    }
    // API servers only, unless the test asks for nodes: most tests play what controllers and nodes
    // would do, and say so in their names.
    if !extra_args.contains(&"--nodes") {
        args.extend(["--nodes".to_owned(), "0".to_owned()]);
    }
    args.extend(extra_args.iter().map(|s| (*s).to_owned()));
    let out = Command::new(plugin_bin())
        .args(&args)
        .output()
        .expect("run kubectl-multicluster");
    assert!(
        out.status.success(),
        "`kubectl multicluster {}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    start_watchdog(dir);
    serde_json::from_slice(&out.stdout).expect("local up -o json prints the playground state")
}

/// A detached shell that waits for this process to exit, then stops the playground in `dir`.
// The watchdog must outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn start_watchdog(dir: &Path) {
    use std::os::unix::process::CommandExt;
    let script =
        r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; exec "$2" local down --dir "$3""#;
    let _ = Command::new("/bin/sh")
        .args(["-c", script, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(plugin_bin())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the playground watchdog");
}

impl Playground {
    /// A kube-rs client for `hub`, `member-1`, … (make one per test: a client is tied to the
    /// runtime of the test that made it).
    pub async fn client(&self, context: &str) -> anyhow::Result<Client> {
        self.state.client(context).await
    }

    /// `kubectl` with this playground's kubeconfig, and the plugin under test first on PATH so that
    /// `kubectl multicluster …` runs it.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.state.kubeconfig)
            .env("PATH", path_with_target_dir());
        cmd
    }

    /// `kubectl --context CONTEXT exec -n NS POD -- COMMAND…`: a command in a real pod.
    pub fn exec_in(&self, context: &str, ns: &str, pod: &str, command: &[&str]) -> Command {
        let mut cmd = self.kubectl();
        cmd.args(["--context", context, "exec", "-n", ns, pod, "--"])
            .args(command);
        cmd
    }

    /// `kubectl --context CONTEXT apply -f - EXTRA…` with `manifest` on stdin; the caller asserts on
    /// the output (a rejected apply is often the point).
    pub fn apply(&self, context: &str, manifest: &str, extra: &[&str]) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(["--context", context, "apply", "-f", "-"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(manifest.as_bytes())
                .expect("write the manifest to kubectl");
        }
        child.wait_with_output().expect("wait for kubectl")
    }

    /// `kubectl multicluster ARGS --context hub`.
    pub fn multicluster(&self, args: &[&str]) -> Command {
        let mut cmd = self.kubectl();
        cmd.arg("multicluster")
            .args(args)
            .args(["--context", "hub"]);
        cmd
    }

    /// `kubectl multicluster snapshot create NAMESPACE --cluster member-1 --location LOCATION
    /// --name NAME EXTRA… --context hub`: the snapshots the tests take are of member-1.
    pub fn snapshot_of_member_1(
        &self,
        namespace: &str,
        location: &str,
        name: &str,
        extra: &[&str],
    ) -> Command {
        let mut cmd = self.multicluster(&[
            "snapshot",
            "create",
            namespace,
            "--cluster",
            "member-1",
            "--location",
            location,
            "--name",
            name,
        ]);
        cmd.args(extra);
        cmd
    }

    /// `kubectl multicluster restore create SNAPSHOT --to-cluster CLUSTER --to-namespace NAMESPACE
    /// --name NAME -o json`, which must succeed with its progress followed through the Hydrating,
    /// Restoring and Completed phases; the restore as it ended.
    pub fn restore_followed(
        &self,
        snapshot: &str,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> multicluster_core::api::NamespaceRestore {
        let out = run(&mut self.multicluster(&[
            "restore",
            "create",
            snapshot,
            "--to-cluster",
            cluster,
            "--to-namespace",
            namespace,
            "--name",
            name,
            "-o",
            "json",
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        for phase in ["Hydrating:", "Restoring:", "Completed:"] {
            assert!(stderr.contains(phase), "no {phase} in:\n{stderr}");
        }
        serde_json::from_slice(&out.stdout).expect("restore create -o json prints the restore")
    }

    /// The process id of `cluster`'s API server (to stop it with SIGSTOP, as a hung host).
    pub fn apiserver_pid(&self, cluster: &str) -> i32 {
        let pid = self
            .state
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .unwrap_or_else(|| panic!("no cluster {cluster} in the playground"))
            .apiserver
            .pid;
        i32::try_from(pid).expect("a pid fits in i32")
    }

    /// What an operator does for every CRD they distribute (the built-in kinds come with `init`
    /// and `join`): lets the hub server read (and remove, as stored sources) the custom resources
    /// of `group` on the hub, and the hub's distribution account on each member write them.
    pub fn grant_custom_resources(&self, group: &str) {
        let role = |name: &str, verbs: &str, account: &str| {
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {name}}}\n\
                 rules: [{{apiGroups: [\"{group}\"], resources: [\"*\"], verbs: [{verbs}]}}]\n---\n\
                 apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {name}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\n\
                 subjects: [{{kind: ServiceAccount, name: {account}, namespace: multicluster-system}}]\n"
            )
        };
        let hub = role(
            &format!("hub-server-reads-{group}"),
            "get, list, watch, patch, delete",
            multicluster_core::install::NAME,
        );
        let member = role(
            &format!("hub-distributes-{group}"),
            "get, list, watch, create, update, patch, delete",
            "multicluster-hub-distribution",
        );
        let mut targets = vec![("hub".to_owned(), hub)];
        targets.extend((1..=MEMBERS).map(|i| (format!("member-{i}"), member.clone())));
        for (context, manifest) in targets {
            let out = self.apply(&context, &manifest, &[]);
            assert!(
                out.status.success(),
                "granting {group} on {context}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Joins every member to the hub once per test binary (`kubectl multicluster join`), with
    /// every opt-in grant: the tests of distribution, snapshots and hooks need them all.
    pub fn join_members(&self) {
        static JOINED: std::sync::Once = std::sync::Once::new();
        JOINED.call_once(|| {
            for i in 1..=MEMBERS {
                self.join_member(&format!("member-{i}"), &[]);
            }
        });
    }

    /// Joins (or joins again) `member` with the grants of [`Self::join_members`] and `extra`
    /// flags (`--proxy-user …`).
    pub fn join_member(&self, member: &str, extra: &[&str]) {
        let mut args = vec![
            "join",
            member,
            "--member-context",
            member,
            "--allow-rbac",
            "--allow-hooks",
        ];
        args.extend_from_slice(extra);
        run_ok(&mut self.multicluster(&args));
    }

    /// POSTs `body` to the hub server's admission port with curl, trusting the playground's CA for
    /// it and presenting no client certificate (as anyone who reaches the port could), and
    /// returns (HTTP status, response body).
    pub fn post_to_hub_server(&self, path: &str, body: &[u8]) -> (u16, String) {
        self.post_to_hub_server_with(path, body, &[])
    }

    /// [`Self::post_to_hub_server`] with the hub API server's admission client certificate, as
    /// the API server calls a webhook.
    pub fn post_to_hub_server_as_api_server(&self, path: &str, body: &[u8]) -> (u16, String) {
        let pki = self.dir().join("hub/pki");
        let (cert, key) = (
            pki.join("admission-client.crt"),
            pki.join("admission-client.key"),
        );
        self.post_to_hub_server_with(
            path,
            body,
            &[
                "--cert",
                cert.to_str().expect("a UTF-8 path"),
                "--key",
                key.to_str().expect("a UTF-8 path"),
            ],
        )
    }

    fn post_to_hub_server_with(&self, path: &str, body: &[u8], extra: &[&str]) -> (u16, String) {
        use std::io::Write;
        let hub_server = self
            .state
            .hub_server
            .as_ref()
            .expect("local up starts the hub server");
        let ca = self.dir().join("hub-server/ca.crt");
        let mut child = Command::new("curl")
            // HTTP/1.1 with `Expect: 100-continue` (curl sends it for large bodies) lets the server
            // refuse an oversized body before it is sent.
            .args([
                "-sS",
                "--http1.1",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .args(extra)
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ])
            .arg(format!("{}{path}", hub_server.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        child
            .stdin
            .take()
            .expect("curl's stdin")
            .write_all(body)
            .expect("writing to curl");
        let out = child.wait_with_output().expect("curl ends");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("curl prints the status last");
        (
            code.trim().parse().expect("an HTTP status"),
            body.to_owned(),
        )
    }

    pub fn dir(&self) -> &Path {
        &self.state.dir
    }
}

/// The directory cargo put this workspace's binaries in (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/debug/deps/<test binary> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// The `kubectl-multicluster` binary built from this workspace.
pub fn plugin_bin() -> PathBuf {
    let bin = target_dir().join("kubectl-multicluster");
    assert!(
        bin.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace`; tests/run does it)",
        bin.display()
    );
    bin
}

fn path_with_target_dir() -> std::ffi::OsString {
    // The plugin under test, and beside it (as an install puts it) `kubectl_complete-multicluster`.
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugin");
    let mut paths = vec![target_dir(), scripts];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(paths).expect("PATH")
}

/// Runs a command and returns its output; the caller asserts on it.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Independent of the code under test: a pid runs when /proc has it and it is not a zombie.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `run` that also requires success, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of a finished command, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Requires that a finished command succeeded (failing with its stderr) and returns its stdout.
pub fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// The condition of type `type_` in an object's `status.conditions`, as JSON.
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A new namespace with a unique name starting with `prefix`. The playground has no namespace
/// controller (a deleted namespace stays Terminating), so tests never reuse or delete one.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"multicluster.dev/e2e": "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

/// A temporary directory holding `text` as `bundle.yaml`, for `distribute -f`.
pub fn write_bundle(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("bundle.yaml"), text).expect("writing the bundle");
    dir
}

/// `kubectl multicluster distribute -f PATH --name NAME ARGS…` on this binary's playground; the
/// caller asserts on the output.
pub fn distribute(path: impl AsRef<Path>, name: &str, args: &[&str]) -> Output {
    let path = path.as_ref().display().to_string();
    let mut all = vec!["distribute", "-f", &path, "--name", name];
    all.extend_from_slice(args);
    run(&mut playground().multicluster(&all))
}

/// A second hub server process beside the playground's (stopped when dropped).
#[derive(Debug)]
pub struct SecondHubServer {
    pub process: KillOnDrop,
    /// Its admission port on 127.0.0.1.
    pub admission_port: u16,
    /// `host:port` of its health listener.
    pub health: String,
}

impl Playground {
    /// Starts another `multicluster-webhook serve` with the playground's serving certificate, on
    /// ports of its own, reaching the hub through `kubeconfig` (the hub server's own, or a copy
    /// pointed elsewhere), with `extra` flags and `env`.
    pub fn second_hub_server(
        &self,
        kubeconfig: &Path,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> SecondHubServer {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (admission_port, health_port) = (port(), port());
        let tls = self.dir().join("hub-server");
        let child = Command::new(target_dir().join("multicluster-webhook"))
            .arg("serve")
            .arg(format!("--listen=127.0.0.1:{admission_port}"))
            .arg(format!("--health-listen=127.0.0.1:{health_port}"))
            .arg(format!("--tls-cert-file={}", tls.join("tls.crt").display()))
            .arg(format!("--tls-key-file={}", tls.join("tls.key").display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--context=hub")
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a second hub server");
        SecondHubServer {
            process: KillOnDrop(child),
            admission_port,
            health: format!("127.0.0.1:{health_port}"),
        }
    }
}

/// A child process that is killed (and reaped) when this goes out of scope, so a test that panics
/// half-way leaves no process behind.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A unique name for a cluster-scoped object made by a test.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// How many established TCP connections process `pid` holds to `127.0.0.1:port`, read from
/// `/proc` (its socket inodes matched against `/proc/net/tcp`).
pub fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy().into_owned();
                    t.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // rem_address, st (01 = ESTABLISHED), inode
            cols.len() > 9 && cols[2] == remote && cols[3] == "01" && inodes.contains(cols[9])
        })
        .count()
}

/// Makes the hub probe `member` every second and believe one probe (timeout 2 s, survival ratio
/// 0.5): for tests that watch what a health transition leads to, not the probe's hysteresis.
pub async fn probe_every_second(hub: &Client, member: &str) {
    let patch = serde_json::json!({"spec": {"health": {"intervalSeconds": 1, "timeoutSeconds": 2,
        "failureThreshold": 1, "successThreshold": 1, "minSurvivalRatio": 0.5}}});
    Api::<multicluster_core::api::MemberCluster>::all(hub.clone())
        .patch(member, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("making the hub probe {member} every second: {e}"));
}

/// Plays `count` kubelets on a member: Node objects whose Ready condition says `ready` (the first
/// `ready` of them True, the rest False).
pub async fn set_nodes(member: &Client, count: usize, ready: usize) {
    let nodes: Api<Node> = Api::all(member.clone());
    for i in 0..count {
        let name = format!("node-{i}");
        if nodes
            .get_opt(&name)
            .await
            .expect("playing a node")
            .is_none()
        {
            let node: Node =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                    .expect("playing a node");
            nodes
                .create(&PostParams::default(), &node)
                .await
                .expect("playing a node");
        }
        let status = if i < ready { "True" } else { "False" };
        let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": status,
            "reason": "PlayedByTheTest", "message": "no kubelet here", "lastHeartbeatTime": "2026-11-22T12:00:00Z",
            "lastTransitionTime": "2026-11-22T12:00:00Z"}]}});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("playing a node");
    }
}

/// csi-sanity, the CSI conformance suite `tests/install-deps.sh` builds (`$CSI_SANITY` overrides).
pub fn csi_sanity_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CSI_SANITY") {
        return PathBuf::from(path);
    }
    kubectl_multicluster::local::binaries::cache_dir()
        .join("csi/csi-test")
        .join(multicluster_core::versions::csi_test())
        .join("csi-sanity")
}

/// The status of the `NamespaceSnapshot` `name` on the hub (the default before the hub server
/// wrote one).
pub async fn snapshot_status(
    hub: &Client,
    name: &str,
) -> multicluster_core::api::NamespaceSnapshotStatus {
    Api::<multicluster_core::api::NamespaceSnapshot>::namespaced(
        hub.clone(),
        multicluster_core::SYSTEM_NAMESPACE,
    )
    .get(name)
    .await
    .expect("read the NamespaceSnapshot")
    .status
    .unwrap_or_default()
}
