//! Multi-cluster services on a real data plane, with nothing played: a playground of its own whose
//! members run two real nodes each (`local up --nodes 2`: kubelet, containerd, CNI bridge and
//! kube-proxy in a network namespace per node, controller-manager, scheduler). Each member runs a
//! Deployment of the playground image whose pods answer HTTP with the member's name, behind a
//! NodePort Service it exports; the hub server lists the members' node addresses in the
//! EndpointSlices it writes on member-1, by the TrafficPolicy's active weights, and member-1's own
//! kube-proxy routes the multi-cluster VIP by them. Requests to the VIP leave from inside member-1's
//! first node (its network namespace), one TCP connection each, and the test counts who answers.
//!
//! That node is a backend too: on member-1 the hub server lists member-1's own backends as its
//! ready pods, not as its node addresses with the node port, which kube-proxy would refuse from the
//! node itself (it translates a connection once: VIP → own address and node port, and never again
//! to a pod). Weights 100:200 over two nodes per member list one address of member-1 and two of
//! member-2, so one request in three is member-1's.
//!
//! Failures are real: a member's kubelet hangs (SIGSTOP), the controller-manager marks its node
//! NotReady after the playground's 16 s grace period, and with a survival ratio of 1 the member is
//! unhealthy; SIGCONT brings it back. Everything is real: API servers, nodes, pods, kube-proxies,
//! hub server, health probes, TrafficPolicy.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use multicluster_core::api::{MemberCluster, TrafficPolicy};
use multicluster_tests::mcs::{api, create_namespace, export_service};
use multicluster_tests::{
    Playground, eventually, fresh_namespace, probe_every_second, run_ok, start_playground,
    unique_name,
};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const IMAGE: &str = kubectl_multicluster::local::image::IMAGE;
/// The port the pods serve on, and the Service's (and so the VIP's).
const PORT: u16 = 8080;
/// The key under which [`spread`] counts requests that got no HTTP 200 answer.
const NO_ANSWER: &str = "<no answer>";
/// Per request: connecting (a dropped SYN waits this long) …
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// … and each read or write after that.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Resumes a stopped process when dropped, so that a failing test leaves no frozen kubelet.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

/// One HTTP/1.0 GET of `/` on a new connection: the status code and the body, trimmed.
fn http_get(target: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(conn, "GET / HTTP/1.0\r\nHost: {target}\r\n\r\n")?;
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
    Ok((status, body.trim().to_owned()))
}

/// Sends `n` HTTP GETs to `vip:PORT`, one after the other, each on a new TCP connection, from inside
/// network namespace `netns` (a thread of this process enters it, so the connections are that
/// node's and kube-proxy's rules there route them), and counts the answers by body; a request that
/// fails (refused, no answer in time, status other than 200) counts under [`NO_ANSWER`].
/// Blocking: the test's runtime runs nothing else meanwhile.
fn spread(netns: &str, vip: Ipv4Addr, n: usize) -> BTreeMap<String, usize> {
    let file = std::fs::File::open(format!("/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("opening network namespace {netns}: {e}"));
    let target = SocketAddr::V4(SocketAddrV4::new(vip, PORT));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering network namespace {netns}: {e}"));
                let mut counts = BTreeMap::new();
                for _ in 0..n {
                    let key = match http_get(target) {
                        Ok((200, body)) => body,
                        _ => NO_ANSWER.to_owned(),
                    };
                    *counts.entry(key).or_insert(0) += 1;
                }
                counts
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn share(counts: &BTreeMap<String, usize>, member: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(member).copied().unwrap_or(0) as f64 / total as f64
}

/// Samples the VIP until `check` holds for a sample of 30 requests (kube-proxy applies a change
/// within about a second); returns how long that took.
async fn until(
    netns: &str,
    vip: Ipv4Addr,
    what: &str,
    check: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let sample = spread(netns, vip, 30);
        if check(&sample) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never: {what}; last sample {sample:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 300 requests: none fails, and member-1 gets `want` of them (± 10 percentage points: the
/// kube-proxy picks an endpoint at random per connection; over 300 requests the standard deviation
/// of a 1/3 share is 2.7 points).
/// Waits 1.5 s first: the hub writes each member's EndpointSlice separately and kube-proxy may
/// program one before the other (its minimum sync period is 1 s), so the first sample that shows
/// a change may still be a moment between two states.
async fn assert_spread(netns: &str, vip: Ipv4Addr, want: f64, what: &str) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut counts = spread(netns, vip, 300);
    // A request lost while kube-proxy rewrites its rules for a second slice (each member's slice
    // is written separately, and kube-proxy may sync between them) is kube-proxy settling, not the
    // spread: sample once more, a sync period later, and the spread must then lose none.
    if counts.contains_key(NO_ANSWER) {
        eprintln!("{what}: settling (kube-proxy was resyncing): {counts:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        counts = spread(netns, vip, 300);
    }
    assert_eq!(
        counts.get(NO_ANSWER),
        None,
        "{what}: failed requests: {counts:?}"
    );
    let got = share(&counts, "member-1");
    assert!(
        (got - want).abs() <= 0.10,
        "{what}: member-1 got {got:.2} of the requests, expected {want:.2} ± 0.10: {counts:?}"
    );
    eprintln!("{what}: {counts:?}");
}

/// Applies `yaml` on `context` with `kubectl apply`, as a user would.
fn apply(pg: &Playground, context: &str, yaml: &str) {
    let out = pg.apply(context, yaml, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn policy(name: &str, ns: &str, mode: &str, m1: &str, m2: &str) -> String {
    [
        "apiVersion: multicluster.dev/v1alpha1".to_owned(),
        "kind: TrafficPolicy".to_owned(),
        format!("metadata: {{name: {name}, namespace: {ns}}}"),
        "spec:".to_owned(),
        format!("  mode: {mode}"),
        "  failbackAfterHealthyProbes: 2".to_owned(),
        "  services: [web]".to_owned(),
        "  members:".to_owned(),
        format!("  - {{name: member-1, {m1}}}"),
        format!("  - {{name: member-2, {m2}}}"),
    ]
    .join("\n")
}

/// A Deployment `web` of two pods, one per node, answering HTTP on [`PORT`] with `member`.
fn web(ns: &str, member: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: web}}}}}}
      containers:
      - name: web
        image: "{IMAGE}"
        command: [sh, -c, "mkdir -p /www; echo {member} > /www/index.html; exec httpd -f -p {PORT} -h /www"]
        readinessProbe: {{tcpSocket: {{port: {PORT}}}, periodSeconds: 1}}
"#
    )
}

/// The Ready condition's status of a node.
async fn node_ready(nodes: &Api<Node>, name: &str) -> Option<String> {
    let node = nodes.get(name).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
}

/// Stops the kubelet of `node` (SIGSTOP: it renews no lease and posts no status, as on a hung host)
/// and waits until the controller-manager marks the node not Ready; the guard resumes it.
async fn hang_kubelet(pg: &Playground, member: &Client, node: &str) -> Resume {
    let kubelet = pg
        .state
        .clusters
        .iter()
        .flat_map(|c| &c.nodes)
        .find(|n| n.network.node == node)
        .unwrap_or_else(|| panic!("no node {node} in the playground"))
        .kubelet
        .pid;
    kill(Pid::from_raw(kubelet as i32), Signal::SIGSTOP).unwrap();
    let resume = Resume(kubelet);
    let nodes: Api<Node> = Api::all(member.clone());
    eventually(
        &format!("the controller-manager marks {node} not Ready"),
        Duration::from_secs(90),
        async || match node_ready(&nodes, node).await {
            Some(status) if status != "True" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    resume
}

/// Resumes the kubelet and waits until its node is Ready again.
async fn resume_kubelet(resume: Resume, member: &Client, node: &str) {
    drop(resume);
    let nodes: Api<Node> = Api::all(member.clone());
    eventually(
        &format!("{node} is Ready again"),
        Duration::from_secs(90),
        async || match node_ready(&nodes, node).await {
            Some(status) if status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

#[tokio::test]
async fn member_1s_kube_proxy_spreads_the_vip_over_real_pods_of_both_members_by_active_weight_and_follows_a_hung_kubelet_fail_back_and_drain()
 {
    // A playground of its own: two real nodes per member, no simulated ones (their addresses
    // answer nothing, and the hub lists every ready node's address as a backend).
    let dir = std::env::temp_dir().join(format!("mc-e2e-dp-{}", std::process::id()));
    let pg = Playground {
        state: start_playground(&dir, 2, &["--nodes", "2"]),
    };
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let members = Api::<MemberCluster>::all(hub.clone());
    for member in ["member-1", "member-2"] {
        // What the test watches is the policy, not the probe's hysteresis; every node must be
        // ready, so that one hung kubelet of two makes its member unhealthy.
        probe_every_second(&hub, member).await;
        let patch = serde_json::json!({"spec": {"health": {"minSurvivalRatio": 1.0}}});
        members
            .patch(member, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let client = pg
        .state
        .clusters
        .iter()
        .find(|c| c.name == "member-1")
        .unwrap()
        .nodes[0]
        .network
        .clone();
    assert_eq!(client.node, "member-1-node-1");
    let netns = client.netns.as_str();

    // The policy lives beside the service: the same namespace on the hub as on the members, where
    // each member runs its web pods.
    let ns = fresh_namespace(&hub, "dp").await.unwrap();
    for (cluster, member) in [(&m1, "member-1"), (&m2, "member-2")] {
        create_namespace(cluster, &ns).await;
        apply(&pg, member, &web(&ns, member));
    }
    for (cluster, member) in [(&m1, "member-1"), (&m2, "member-2")] {
        let deployments: Api<Deployment> = Api::namespaced(cluster.clone(), &ns);
        eventually(
            &format!("{member}'s web pods are ready"),
            Duration::from_secs(120),
            async || {
                let status = deployments.get("web").await.unwrap().status;
                let ready = status.and_then(|s| s.ready_replicas);
                if ready == Some(2) {
                    Ok(())
                } else {
                    Err(format!("{ready:?} ready"))
                }
            },
        )
        .await;
    }

    let pool = unique_name("dp");
    apply(
        &pg,
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.250.210.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
    );
    let name = unique_name("web");
    apply(
        &pg,
        "hub",
        &policy(&name, &ns, "MultiActive", "weight: 100", "weight: 200"),
    );
    export_service(&m1, &ns, "web", PORT.into(), Some(30080), &pool).await;
    export_service(&m2, &ns, "web", PORT.into(), Some(30081), &pool).await;

    let imports = api(&m1, &ns, "ServiceImport");
    let vip: Ipv4Addr = eventually(
        "member-1 imports web",
        Duration::from_secs(30),
        async || {
            let import = imports.get_opt("web").await.unwrap()?;
            import.data["spec"]["ips"][0].as_str()?.parse().ok()
        },
    )
    .await;

    // Weights 100:200: member-1's one backend address and member-2's two, so member-1 gets 1/3
    // of the requests.
    until(netns, vip, "both members answer on the VIP", |s| {
        s.contains_key("member-1") && s.contains_key("member-2")
    })
    .await;
    assert_spread(netns, vip, 1.0 / 3.0, "MultiActive 100:200").await;
    // On member-1, member-1's own backend is one of its pods; member-2's are its node addresses.
    let pod_ips: Vec<String> = Api::<Pod>::namespaced(m1.clone(), &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.status?.pod_ip)
        .collect();
    let listed: Vec<String> = Api::<EndpointSlice>::namespaced(m1.clone(), &ns)
        .list(
            &ListParams::default()
                .labels("endpointslice.kubernetes.io/managed-by=multicluster.dev"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.unwrap_or_default())
        .flat_map(|e| e.addresses)
        .collect();
    assert_eq!(
        listed.iter().filter(|a| pod_ips.contains(a)).count(),
        1,
        "member-1's pods {pod_ips:?}, listed on member-1: {listed:?}"
    );
    assert_eq!(listed.len(), 3, "{listed:?}");

    // member-2's second kubelet hangs. Its node leaving the backends alone would make the split
    // 1:1; only the member's health (one of two nodes not ready, below its ratio of 1) →
    // TrafficPolicy → EndpointSlice path takes all of member-2 out.
    let failed = Instant::now();
    let hung = hang_kubelet(&pg, &m2, "member-2-node-2").await;
    let not_ready = failed.elapsed();
    // Timed between moments: when the hub's TrafficPolicy shows member-2 at weight 0 (the
    // transition), and when a 20-request sample first has no answer from member-2.
    let policies: Api<TrafficPolicy> = Api::namespaced(hub.clone(), &ns);
    let mut shifted: Option<Instant> = None;
    let stopped = loop {
        if shifted.is_none()
            && policies
                .get(&name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.active_weights.get("member-2").copied())
                == Some(0)
        {
            shifted = Some(Instant::now());
        }
        let sample = spread(netns, vip, 20);
        if shifted.is_some() && !sample.contains_key("member-2") && !sample.contains_key(NO_ANSWER)
        {
            break Instant::now();
        }
        assert!(
            failed.elapsed() < Duration::from_secs(120),
            "member-2 still answers: {sample:?}"
        );
    };
    let shifted = shifted.unwrap();
    eprintln!(
        "member-2 failed: its node was marked not Ready {:.2}s after its kubelet hung (grace \
         period 16s); the hub shifted its weight {:.2}s after that (probe interval 1s); no request \
         reached it {:.2}s after the shift (kube-proxy's minimum sync period is 1s)",
        not_ready.as_secs_f64(),
        shifted.duration_since(failed + not_ready).as_secs_f64(),
        stopped.duration_since(shifted).as_secs_f64()
    );
    assert_spread(netns, vip, 1.0, "member-2 unhealthy").await;

    // The kubelet resumes: back to 100:200 after two healthy probes (fail-back).
    let recovered = Instant::now();
    resume_kubelet(hung, &m2, "member-2-node-2").await;
    until(netns, vip, "member-2 answers again", |s| {
        s.contains_key("member-2")
    })
    .await;
    eprintln!(
        "member-2 recovered: answering again {:.2}s after its kubelet resumed (node Ready, then \
         fail-back after 2 probes)",
        recovered.elapsed().as_secs_f64()
    );
    assert_spread(netns, vip, 1.0 / 3.0, "after fail-back").await;

    // Maintenance: drain member-1, then undrain.
    run_ok(&mut pg.multicluster(&["traffic", "drain", &name, "member-1", "-n", &ns]));
    until(netns, vip, "drained member-1 gets nothing", |s| {
        !s.contains_key("member-1") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(netns, vip, 0.0, "member-1 drained").await;
    run_ok(&mut pg.multicluster(&["traffic", "undrain", &name, "member-1", "-n", &ns]));
    until(netns, vip, "undrained member-1 answers again", |s| {
        s.contains_key("member-1")
    })
    .await;
    assert_spread(netns, vip, 1.0 / 3.0, "member-1 undrained").await;

    // ActiveStandby: member-1 active, member-2 standing by; the standby gets the traffic when the
    // active fails, and gives it back after fail-back.
    apply(
        &pg,
        "hub",
        &policy(
            &name,
            &ns,
            "ActiveStandby",
            "weight: 100",
            "weight: 100, priority: 1, role: Standby",
        ),
    );
    until(netns, vip, "only the active member-1 answers", |s| {
        !s.contains_key("member-2") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(netns, vip, 1.0, "ActiveStandby, both healthy").await;
    // The kubelet of member-1's first node hangs: its second node and the pod there stay ready, so
    // only the member's health (survival ratio 1) can move all the traffic. The first node's
    // kube-proxy, which routes the requests, keeps running.
    let failed = Instant::now();
    let hung = hang_kubelet(&pg, &m1, "member-1-node-1").await;
    until(netns, vip, "the standby member-2 takes over", |s| {
        !s.contains_key("member-1") && !s.contains_key(NO_ANSWER)
    })
    .await;
    eprintln!(
        "member-1 (active) failed: the standby had all requests {:.2}s after its kubelet hung",
        failed.elapsed().as_secs_f64()
    );
    assert_spread(netns, vip, 0.0, "ActiveStandby, active failed").await;
    resume_kubelet(hung, &m1, "member-1-node-1").await;
    until(netns, vip, "member-1 back after fail-back", |s| {
        !s.contains_key("member-2") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(netns, vip, 1.0, "ActiveStandby, after fail-back").await;
}
