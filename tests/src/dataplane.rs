//! A real data plane for end-to-end tests: a real `kube-proxy` (nftables mode) programming a network
//! namespace the test creates, against one member's real kube-apiserver, and HTTP backends in further
//! namespaces that the test sends requests to through kube-proxy's rules.
//!
//! Two things here are PLAYED by the test, as the playground has no kubelets and runs no Pods:
//!
//! * the kube-proxy's `Node` object (named by `--hostname-override`, with an `InternalIP` status
//!   address and no conditions), which kube-proxy refuses to work without, and
//! * the backends: each is a network namespace holding addresses the test chose, with one HTTP server
//!   (a thread of the test process) that answers every request with a fixed body (a member's name),
//!   standing in for that member's Pods.
//!
//! ```text
//!  root namespace (API server on 127.0.0.1:P)
//!    ▲ forwarded by a thread of the test process
//!  ┌─┴──────────────────────────────────────────┐    veth     ┌────────────────────────────┐
//!  │ kube-proxy namespace                        │────────────│ backend namespace "a"       │
//!  │  lo 127.0.0.1:P (the API server, bridged)   │  b0 ⇄ eth0 │  eth0 10.250.1.2, 10.250.1.3│
//!  │  node0 10.250.0.1 (NODE_IP), default route  │            │  HTTP :8080 answers "a"     │
//!  │  kube-proxy --proxy-mode nftables           │────────────┴────────────────────────────┘
//!  │  spread(): the test's client, from here     │  b1 ⇄ eth0   backend namespace "b" …
//!  └─────────────────────────────────────────────┘
//! ```
//!
//! The API server only listens on the root namespace's loopback, which the kube-proxy namespace
//! cannot see: a listener created inside that namespace on `127.0.0.1:P` (the same port) forwards
//! every connection to the real `127.0.0.1:P`, so the kubeconfig and the server certificate's
//! `127.0.0.1` SAN stay valid unchanged. The HTTP servers, the client of [`DataPlane::spread`] and
//! that forwarder are threads of the test process holding sockets created inside the namespaces
//! (`setns` on a short-lived thread), so they die with it; kube-proxy is the only process started.
//!
//! Cleanup: [`Drop`] stops kube-proxy, deletes the namespaces and the Node, also when the test
//! panics. If the test process is killed outright, a watchdog shell deletes the namespaces (and so
//! kube-proxy, killed first) once it has gone; namespaces of dead test processes left by a crashed
//! watchdog are deleted by the next [`DataPlane::start`].
//!
//! Requires root, iproute2 (`ip`), nftables and the kube-proxy binary that `tests/install-deps.sh`
//! builds. Addresses: the harness uses [`NODE_IP`] (10.250.0.1) itself; tests pick backend addresses
//! and VIPs elsewhere in 10.250.0.0/16.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use nix::sched::CloneFlags;

use crate::{Playground, run, run_ok};

/// The kube-proxy namespace's own address: the played Node's `InternalIP`, the source of the
/// requests [`DataPlane::spread`] sends, and where kube-proxy serves healthz (10256) and metrics
/// (10249). Backends and VIPs must use other addresses.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The key under which [`DataPlane::spread`] counts requests that got no HTTP 200 answer.
pub const NO_ANSWER: &str = "<no answer>";

/// Every network namespace of this harness is named `mc-dataplane-<pid>-<instance>-<role>`.
const NETNS_PREFIX: &str = "mc-dataplane-";
const HEALTHZ_PORT: u16 = 10256;
const METRICS_PORT: u16 = 10249;
/// kube-proxy is usually programming rules 1–2 s after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Per request of `spread`: connecting (a dropped SYN waits this long) …
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// … and each read or write after that.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A real kube-proxy in a network namespace of its own, talking to one member's API server, and the
/// backends the test plays. See the module documentation; everything is removed on drop.
#[derive(Debug)]
pub struct DataPlane {
    /// `mc-dataplane-<pid>-<instance>-`: every namespace of this instance starts with it.
    prefix: String,
    node_name: String,
    node_created: bool,
    /// The playground's kubeconfig and the member's context (to delete the Node on drop).
    kubeconfig: PathBuf,
    context: String,
    /// kube-proxy's log.
    log: PathBuf,
    proxy_ns: Netns,
    api_bridge: Option<Listener>,
    kube_proxy: Option<Child>,
    backends: Vec<Backend>,
    watchdog: Option<Child>,
}

/// A backend the test plays: a namespace with its addresses and an HTTP server.
#[derive(Debug)]
struct Backend {
    answer: String,
    addresses: Vec<Ipv4Addr>,
    ns: Netns,
    server: Listener,
}

impl DataPlane {
    /// Starts a data plane for the member behind playground context `context` (e.g. `member-1`):
    /// creates the kube-proxy namespace, plays a Node named [`Self::node_name`] with
    /// [`NODE_IP`] as its `InternalIP` on that member, bridges the member's API server into the
    /// namespace and starts kube-proxy. Returns once kube-proxy's healthz answers 200 and its
    /// nftables table exists (it has synced its rules once); panics with the tail of its log when it
    /// does not within a minute.
    pub async fn start(pg: &Playground, context: &str) -> DataPlane {
        static INSTANCES: AtomicU32 = AtomicU32::new(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{NETNS_PREFIX}{pid}-{instance}-");
        let node_name = format!("dataplane-{pid}-{instance}");
        let dir = pg.dir().join(format!("dataplane-{instance}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the data plane dir {}: {e}", dir.display()));

        let kube_proxy_bin = crate::kubernetes_binary("kube-proxy", "KUBE_PROXY");
        assert!(
            kube_proxy_bin.is_file(),
            "kube-proxy {} is missing (looked for {}): run tests/install-deps.sh, which builds it",
            multicluster_core::versions::kubernetes(),
            kube_proxy_bin.display()
        );
        let api_port = api_port(pg, context);
        let kubeconfig = dir.join("kubeconfig");
        let flat = run_ok(pg.kubectl().args([
            "config",
            "view",
            "--minify",
            "--flatten",
            "--context",
            context,
        ]));
        std::fs::write(&kubeconfig, flat)
            .unwrap_or_else(|e| panic!("writing {}: {e}", kubeconfig.display()));

        remove_stale_namespaces(&prefix);
        let watchdog = start_watchdog(&prefix);
        let proxy_ns = Netns::create(&format!("{prefix}kp"));
        // From here on, a panic drops `dp`, which removes whatever was made so far.
        let mut dp = DataPlane {
            prefix,
            node_name,
            node_created: false,
            kubeconfig: pg.state.kubeconfig.clone(),
            context: context.to_owned(),
            log: dir.join("kube-proxy.log"),
            proxy_ns,
            api_bridge: None,
            kube_proxy: None,
            backends: Vec::new(),
            watchdog: Some(watchdog),
        };

        // The node's "NIC": one end of a veth pair whose other end is unused, so that the namespace
        // has a default route (a connect() to a VIP fails with "Network is unreachable" before
        // kube-proxy's DNAT rule is ever consulted otherwise). No dummy devices: this kernel may
        // not have the module.
        let ns = &dp.proxy_ns;
        ns.ip(&[
            "link", "add", "node0", "type", "veth", "peer", "name", "uplink",
        ]);
        ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "node0"]);
        ns.ip(&["link", "set", "uplink", "up"]);
        ns.ip(&["link", "set", "node0", "up"]);
        ns.ip(&["route", "add", "default", "dev", "node0"]);

        dp.api_bridge = Some(Listener::spawn(
            &dp.proxy_ns,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, api_port),
            "api-bridge",
            move |inside: TcpStream| forward_to_api_server(inside, api_port),
        ));

        dp.play_node(pg).await;

        let log = File::create(&dp.log)
            .unwrap_or_else(|e| panic!("creating the kube-proxy log {}: {e}", dp.log.display()));
        let log_err = log
            .try_clone()
            .expect("duplicating the kube-proxy log handle");
        let child = Command::new("ip")
            .args(["netns", "exec", &dp.proxy_ns.name])
            .arg(&kube_proxy_bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={}", dp.node_name))
            .args([
                "--proxy-mode=nftables",
                // Leave every conntrack sysctl as it is.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--v=2",
            ])
            .arg(format!("--healthz-bind-address={NODE_IP}:{HEALTHZ_PORT}"))
            .arg(format!("--metrics-bind-address={NODE_IP}:{METRICS_PORT}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", kube_proxy_bin.display()));
        dp.kube_proxy = Some(child);
        dp.wait_programming().await;
        dp
    }

    /// The name of the Node object played for kube-proxy on the member (`dataplane-<pid>-<n>`,
    /// labelled `multicluster.dev/played-by=dataplane`). It has addresses but no conditions, so
    /// whatever counts the member's nodes (the hub's health probes do) sees one more node, not
    /// ready, for as long as the data plane lives: tests leave it out of their expectations and
    /// of backends.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The kube-proxy network namespace, for `ip netns exec NAME nft list ruleset` when debugging.
    pub fn netns(&self) -> &str {
        &self.proxy_ns.name
    }

    /// kube-proxy's log file (in the playground directory).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of kube-proxy's log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Plays a backend that answers with `answer` (a member name): a new namespace holding
    /// `addresses` (each a /32 the test owns, not [`NODE_IP`]), routed from the kube-proxy namespace
    /// over a veth pair, with one HTTP server on `0.0.0.0:port` answering every request with status
    /// 200 and body `answer`. List the addresses in an EndpointSlice to make them a Service's
    /// endpoints.
    pub fn add_backend(&mut self, answer: &str, addresses: &[Ipv4Addr], port: u16) {
        assert!(
            !addresses.is_empty(),
            "backend {answer:?} needs at least one address"
        );
        assert!(
            !addresses.contains(&NODE_IP),
            "{NODE_IP} is the kube-proxy namespace's own address; pick backend addresses elsewhere"
        );
        for other in &self.backends {
            if let Some(taken) = addresses.iter().find(|a| other.addresses.contains(a)) {
                panic!("{taken} already belongs to backend {:?}", other.answer);
            }
        }
        let index = self.backends.len();
        let ns = Netns::create(&format!("{}b{index}", self.prefix));
        // Both ends are created directly inside their namespaces: the names never meet in the root
        // namespace, so they need no uniqueness there (and stay within 15 characters).
        let inside = format!("b{index}");
        run_ok(Command::new("ip").args([
            "link",
            "add",
            "name",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "netns",
            &self.proxy_ns.name,
        ]));
        ns.ip(&["link", "set", "eth0", "up"]);
        for address in addresses {
            ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "eth0"]);
        }
        // Everything goes back over the veth; requests come from NODE_IP (or kube-proxy's
        // masquerade of it), which answers ARP there as a local address of its namespace.
        ns.ip(&["route", "add", "default", "dev", "eth0"]);
        self.proxy_ns.ip(&["link", "set", &inside, "up"]);
        for address in addresses {
            self.proxy_ns
                .ip(&["route", "add", &format!("{address}/32"), "dev", &inside]);
        }
        let body = answer.to_owned();
        let server = Listener::spawn(
            &ns,
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port),
            &format!("backend-{answer}"),
            move |conn: TcpStream| {
                // A client that gave up is not the server's problem.
                let _ = answer_http(conn, &body);
            },
        );
        self.backends.push(Backend {
            answer: answer.to_owned(),
            addresses: addresses.to_vec(),
            ns,
            server,
        });
    }

    /// Sends `n` HTTP GET requests, one new TCP connection each, from inside the kube-proxy
    /// namespace (source [`NODE_IP`]) to `vip:port`, one after the other, and counts the answers by
    /// body; a request that fails (refused, no answer within 0.5 s to connect and 2 s to answer,
    /// status other than 200) counts under [`NO_ANSWER`]. Through kube-proxy's rules when `vip` is a
    /// Service address; it also reaches backend addresses directly.
    ///
    /// kube-proxy applies a Service or EndpointSlice change within about a second (its default
    /// minimum sync period, 1 s): poll with small samples until the spread is the expected one.
    /// Blocking: 300 requests take 0.15–0.35 s here, during which a current-thread test runtime
    /// runs nothing else.
    pub fn spread(&self, vip: Ipv4Addr, port: u16, n: usize) -> BTreeMap<String, usize> {
        let target = SocketAddr::V4(SocketAddrV4::new(vip, port));
        in_netns(&self.proxy_ns, || {
            let mut counts = BTreeMap::new();
            for _ in 0..n {
                let key = match http_get(target, "/") {
                    Ok((200, body)) => body,
                    _ => NO_ANSWER.to_owned(),
                };
                *counts.entry(key).or_insert(0) += 1;
            }
            counts
        })
        .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", self.proxy_ns.name))
    }

    /// Plays the kube-proxy's Node on the member: kube-proxy reads its addresses at start.
    async fn play_node(&mut self, pg: &Playground) {
        let what = || format!("playing Node {} on {}", self.node_name, self.context);
        let client = pg
            .client(&self.context)
            .await
            .unwrap_or_else(|e| panic!("{}: client: {e:#}", what()));
        let nodes: Api<Node> = Api::all(client);
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {
            "name": self.node_name,
            "labels": {"multicluster.dev/e2e": "true", "multicluster.dev/played-by": "dataplane"},
        }}))
        .expect("a Node object");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("{}: create: {e}", what()));
        self.node_created = true;
        let status = serde_json::json!({"status": {"addresses": [
            {"type": "InternalIP", "address": NODE_IP.to_string()},
            {"type": "Hostname", "address": self.node_name},
        ]}});
        nodes
            .patch_status(
                &self.node_name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: status: {e}", what()));
    }

    /// Waits until kube-proxy has synced its rules once: healthz answers 200 and `table ip
    /// kube-proxy` exists in its namespace.
    async fn wait_programming(&mut self) {
        let healthz = SocketAddr::V4(SocketAddrV4::new(NODE_IP, HEALTHZ_PORT));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.kube_proxy.as_mut().map(Child::try_wait) {
                panic!(
                    "kube-proxy exited ({status}) during start; last lines of {}:\n{}",
                    self.log.display(),
                    self.log_tail(40)
                );
            }
            let healthy = in_netns(&self.proxy_ns, || http_get(healthz, "/healthz"))
                .is_ok_and(|r| r.is_ok_and(|(status, _)| status == 200));
            if healthy
                && run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &self.proxy_ns.name,
                    "nft",
                    "list",
                    "table",
                    "ip",
                    "kube-proxy",
                ]))
                .status
                .success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-proxy was not programming rules {START_TIMEOUT:?} after its start \
                 (healthz {healthz} in {}); last lines of {}:\n{}",
                self.proxy_ns.name,
                self.log.display(),
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for DataPlane {
    /// Best effort and never panicking (it also runs while a failed test unwinds): kube-proxy, the
    /// test's threads, the namespaces, the Node, the watchdog.
    fn drop(&mut self) {
        if let Some(mut child) = self.kube_proxy.take() {
            stop_child(&mut child, Duration::from_secs(3));
        }
        if let Some(mut bridge) = self.api_bridge.take() {
            bridge.stop(&self.proxy_ns);
        }
        for backend in &mut self.backends {
            backend.server.stop(&backend.ns);
        }
        for backend in self.backends.drain(..) {
            delete_netns(&backend.ns.name);
        }
        delete_netns(&self.proxy_ns.name);
        if self.node_created {
            let out = Command::new("kubectl")
                .env("KUBECONFIG", &self.kubeconfig)
                .args(["--context", &self.context, "--request-timeout=5s"])
                .args([
                    "delete",
                    "node",
                    &self.node_name,
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "data plane cleanup: deleting Node {} on {}: {}",
                    self.node_name,
                    self.context,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("data plane cleanup: running kubectl: {e}"),
            }
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// A named network namespace (`ip netns add`), held open for `setns`.
#[derive(Debug)]
struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Creates the namespace with its loopback up.
    fn create(name: &str) -> Netns {
        run_ok(Command::new("ip").args(["netns", "add", name]));
        let path = Path::new("/run/netns").join(name);
        let file = File::open(&path)
            .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", path.display()));
        let ns = Netns {
            name: name.to_owned(),
            file,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS…`, which must succeed.
    fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
    }
}

/// Runs `f` on a fresh thread inside `ns` (only that thread enters it) and returns its result.
/// Sockets created there stay in `ns` whichever thread uses them later.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> nix::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&ns.file, CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A TCP listener created inside a namespace and served by threads of the test process: one
/// accepting, one per connection running the handler.
#[derive(Debug)]
struct Listener {
    stop: Arc<AtomicBool>,
    /// Where a connection from inside the namespace wakes the accepting thread.
    wake: SocketAddrV4,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn spawn<H>(ns: &Netns, bind: SocketAddrV4, name: &str, handler: H) -> Listener
    where
        H: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = in_netns(ns, || TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("entering network namespace {}: {e}", ns.name))
            .unwrap_or_else(|e| panic!("listening on {bind} in {}: {e}", ns.name));
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let thread = std::thread::Builder::new()
            .name(format!("dataplane-{name}"))
            .spawn({
                let stop = Arc::clone(&stop);
                let name = name.to_owned();
                move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        match conn {
                            Ok(conn) => {
                                let handler = Arc::clone(&handler);
                                let spawned = std::thread::Builder::new()
                                    .name(format!("dataplane-{name}-conn"))
                                    .spawn(move || handler(conn));
                                if let Err(e) = spawned {
                                    eprintln!("data plane {name}: cannot start a thread: {e}");
                                }
                            }
                            Err(e) => {
                                eprintln!("data plane {name}: accept: {e}");
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                }
            })
            .unwrap_or_else(|e| panic!("starting the {name} thread: {e}"));
        let wake = SocketAddrV4::new(
            if bind.ip().is_unspecified() {
                Ipv4Addr::LOCALHOST
            } else {
                *bind.ip()
            },
            bind.port(),
        );
        Listener {
            stop,
            wake,
            thread: Some(thread),
        }
    }

    /// Stops accepting (connections being served finish on their own).
    fn stop(&mut self, ns: &Netns) {
        self.stop.store(true, Ordering::SeqCst);
        let woke = in_netns(ns, || {
            TcpStream::connect_timeout(&SocketAddr::V4(self.wake), Duration::from_secs(1))
        });
        if let Some(thread) = self.thread.take() {
            if matches!(woke, Ok(Ok(_))) {
                let _ = thread.join();
            } else {
                // Not joined: the thread then only ends with the process.
                eprintln!(
                    "data plane cleanup: could not wake the listener on {}",
                    self.wake
                );
            }
        }
    }
}

/// Copies a connection made inside the kube-proxy namespace to the API server on the root
/// namespace's `127.0.0.1:port`, both ways, until either side closes.
fn forward_to_api_server(inside: TcpStream, port: u16) {
    let outside = match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("data plane api bridge: connecting to 127.0.0.1:{port}: {e}");
            return;
        }
    };
    let (Ok(mut inside_w), Ok(mut outside_r)) = (inside.try_clone(), outside.try_clone()) else {
        eprintln!("data plane api bridge: cannot duplicate a socket");
        return;
    };
    let upstream = std::thread::Builder::new()
        .name("dataplane-api-bridge-up".to_owned())
        .spawn(move || {
            let mut inside_r = inside;
            let mut outside_w = outside;
            let _ = std::io::copy(&mut inside_r, &mut outside_w);
            let _ = outside_w.shutdown(Shutdown::Write);
        });
    if upstream.is_err() {
        eprintln!("data plane api bridge: cannot start a thread");
        return;
    }
    let _ = std::io::copy(&mut outside_r, &mut inside_w);
    let _ = inside_w.shutdown(Shutdown::Write);
}

/// Serves one HTTP/1 request on `conn`: reads the request head, answers 200 with `body`, closes.
fn answer_http(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0_u8; 1024];
    // Read the whole head before answering: closing with unread data would reset the connection.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.shutdown(Shutdown::Write)
}

/// One HTTP/1.1 GET on a new connection: the status code and the body.
fn http_get(target: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response head: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status line: {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// The port of `context`'s API server on 127.0.0.1.
fn api_port(pg: &Playground, context: &str) -> u16 {
    let cluster = pg
        .state
        .clusters
        .iter()
        .find(|c| c.name == context)
        .unwrap_or_else(|| panic!("no cluster {context} in the playground"));
    let server = cluster.server.trim_end_matches('/');
    assert!(
        server.starts_with("https://127.0.0.1:"),
        "the data plane bridges API servers on 127.0.0.1 only; {context} is at {server}"
    );
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {context}'s server address {server}"))
}

/// Network namespaces of this harness that nobody will clean up: those of this instance's name (a
/// previous test process with the same pid crashed) and those of test processes that are gone.
fn remove_stale_namespaces(own_prefix: &str) {
    let me = std::process::id();
    let list = run_ok(Command::new("ip").args(["netns", "list"]));
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let owner: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let owner_gone =
            owner.is_some_and(|p| p != me && !Path::new(&format!("/proc/{p}")).exists());
        if name.starts_with(own_prefix) || owner_gone {
            delete_netns(name);
        }
    }
}

/// Kills whatever still runs in namespace `name` and deletes it; best effort, never panics.
fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    match Command::new("ip").args(["netns", "delete", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "data plane cleanup: ip netns delete {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("data plane cleanup: running ip: {e}"),
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A detached shell that waits for this process to exit, then kills what runs in this instance's
/// namespaces and deletes them. Dropping the data plane kills it first (it has nothing left to do).
fn start_watchdog(prefix: &str) -> Child {
    use std::os::unix::process::CommandExt;
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
for ns in $(ip netns list | cut -d' ' -f1); do
  case "$ns" in "$2"*)
    for p in $(ip netns pids "$ns"); do kill -9 "$p"; done
    ip netns delete "$ns";;
  esac
done"#;
    Command::new("/bin/sh")
        .args(["-c", script, "dataplane-watchdog"])
        .arg(std::process::id().to_string())
        .arg(prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the data plane watchdog")
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
