//! Multi-cluster services on a real data plane: kube-proxy (nftables mode, built from the same
//! Kubernetes release as the API servers) runs in a network namespace the test creates, connected
//! to member-1's real API server, and routes the multi-cluster VIP by the EndpointSlices the hub
//! server writes there. Requests to the VIP come from inside that namespace.
//!
//! Played here: each member's backends (HTTP servers in further network namespaces, one per member,
//! holding that member's node addresses and answering with the member's name: what a NodePort
//! Service on those nodes would answer), the members' nodes (Node objects whose Ready condition the
//! test sets; no kubelets), and the Node object kube-proxy runs as. Everything else is real: API
//! servers, hub server, health probes, TrafficPolicy, kube-proxy's rules.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kube::Api;
use multicluster_core::api::TrafficPolicy;
use multicluster_tests::dataplane::{DataPlane, NO_ANSWER};
use multicluster_tests::mcs::{api, create_namespace, export_service, play_node};
use multicluster_tests::{
    eventually, fresh_namespace, playground, probe_every_second, run_ok, unique_name,
};

const M1_NODES: [&str; 3] = ["10.250.1.2", "10.250.1.3", "10.250.1.4"];
const M2_NODES: [&str; 3] = ["10.250.2.2", "10.250.2.3", "10.250.2.4"];

fn addresses(list: &[&str]) -> Vec<Ipv4Addr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn share(counts: &BTreeMap<String, usize>, member: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(member).copied().unwrap_or(0) as f64 / total as f64
}

/// Samples the VIP until `check` holds for a sample of 30 requests (kube-proxy applies a change
/// within about a second); returns how long that took.
async fn until(
    dp: &DataPlane,
    vip: Ipv4Addr,
    what: &str,
    check: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let sample = dp.spread(vip, 80, 30);
        if check(&sample) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "never: {what}; last sample {sample:?}\nkube-proxy log:\n{}",
            dp.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 300 requests: none fails, and member-1 gets `want` of them (± 10 percentage points: the
/// kube-proxy picks an endpoint at random per connection; over 300 requests the standard deviation
/// of a 2/3 share is 2.7 points).
/// Waits 1.5 s first: the hub writes each member's EndpointSlice separately and kube-proxy may
/// program one before the other (its minimum sync period is 1 s), so the first sample that shows
/// a change may still be a moment between two states.
async fn assert_spread(dp: &DataPlane, vip: Ipv4Addr, want: f64, what: &str) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut counts = dp.spread(vip, 80, 300);
    // A request lost while kube-proxy rewrites its rules for a second slice (each member's slice
    // is written separately, and kube-proxy may sync between them) is kube-proxy settling, not the
    // spread: sample once more, a sync period later, and the spread must then lose none.
    if counts.contains_key(NO_ANSWER) {
        eprintln!("{what}: settling (kube-proxy was resyncing): {counts:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        counts = dp.spread(vip, 80, 300);
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

/// Applies a TrafficPolicy on the hub with `kubectl apply`, as a user would.
fn apply_policy(pg: &multicluster_tests::Playground, yaml: &str) {
    let out = pg.apply("hub", yaml, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn policy(name: &str, ns: &str, mode: &str, m1: &str, m2: &str, kube_proxy_node: &str) -> String {
    [
        "apiVersion: multicluster.dev/v1alpha1".to_owned(),
        "kind: TrafficPolicy".to_owned(),
        format!("metadata: {{name: {name}, namespace: {ns}}}"),
        "spec:".to_owned(),
        format!("  mode: {mode}"),
        "  failbackAfterHealthyProbes: 2".to_owned(),
        "  services: [web]".to_owned(),
        "  members:".to_owned(),
        // kube-proxy's own (played) node is no backend: weight 0.
        format!("  - {{name: member-1, {m1}, minReadyNodes: 3, nodes: [{{name: {kube_proxy_node}, weight: 0}}]}}"),
        format!("  - {{name: member-2, {m2}, minReadyNodes: 3}}"),
    ]
    .join("\n")
}

#[tokio::test]
async fn kube_proxy_spreads_the_vip_over_played_backends_by_active_weight_and_follows_failure_fail_back_and_drain()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    for member in ["member-1", "member-2"] {
        // What the test watches is the policy, not the probe's hysteresis.
        probe_every_second(&hub, member).await;
    }
    for (i, address) in M1_NODES.iter().enumerate() {
        play_node(&m1, &format!("m1-{i}"), address, true).await;
    }
    for (i, address) in M2_NODES.iter().enumerate() {
        play_node(&m2, &format!("m2-{i}"), address, true).await;
    }

    // kube-proxy as member-1's node; each member's backends on its node addresses and node port.
    let mut dp = DataPlane::start(pg, "member-1").await;
    dp.add_backend("member-1", &addresses(&M1_NODES), 30080);
    dp.add_backend("member-2", &addresses(&M2_NODES), 30081);

    let pool = unique_name("dp");
    pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.250.210.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
        &[],
    );
    // The policy lives beside the service: the same namespace on the hub as on the members.
    let ns = fresh_namespace(&hub, "dp").await.unwrap();
    create_namespace(&m1, &ns).await;
    create_namespace(&m2, &ns).await;
    let name = unique_name("web");
    apply_policy(
        pg,
        &policy(
            &name,
            &ns,
            "MultiActive",
            "weight: 200",
            "weight: 100",
            dp.node_name(),
        ),
    );
    export_service(&m1, &ns, "web", 80, Some(30080), &pool).await;
    export_service(&m2, &ns, "web", 80, Some(30081), &pool).await;

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

    // Weights 200:100 over 3 node addresses each: kube-proxy lists 2 of member-1's and 1 of
    // member-2's, so member-1 gets 2/3 of the requests.
    until(&dp, vip, "both members answer on the VIP", |s| {
        s.contains_key("member-1") && s.contains_key("member-2")
    })
    .await;
    assert_spread(&dp, vip, 2.0 / 3.0, "MultiActive 200:100").await;

    // member-2 drops below its 3 ready nodes (one NotReady; the one it lists stays Ready, so only
    // the health probe → TrafficPolicy → EndpointSlice path can take it out).
    let failed = Instant::now();
    play_node(&m2, "m2-2", M2_NODES[2], false).await;
    // Timed between two moments: when the hub's TrafficPolicy shows member-2 at weight 0 (the
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
        let sample = dp.spread(vip, 80, 20);
        if shifted.is_some() && !sample.contains_key("member-2") && !sample.contains_key(NO_ANSWER)
        {
            break Instant::now();
        }
        assert!(
            failed.elapsed() < Duration::from_secs(40),
            "member-2 still answers: {sample:?}\nkube-proxy log:\n{}",
            dp.log_tail(20)
        );
    };
    let shifted = shifted.unwrap();
    eprintln!(
        "member-2 failed: the hub shifted its weight {:.2}s after its node went NotReady (probe interval 1s); \
         no request reached it {:.2}s after the shift (kube-proxy's minimum sync period is 1s)",
        shifted.duration_since(failed).as_secs_f64(),
        stopped.duration_since(shifted).as_secs_f64()
    );
    assert_spread(&dp, vip, 1.0, "member-2 unhealthy").await;

    // Healthy again: back to 200:100 after two healthy probes (fail-back).
    let recovered = Instant::now();
    play_node(&m2, "m2-2", M2_NODES[2], true).await;
    until(&dp, vip, "member-2 answers again", |s| {
        s.contains_key("member-2")
    })
    .await;
    eprintln!(
        "member-2 recovered: answering again {:.2}s after its node became Ready (fail-back after 2 probes)",
        recovered.elapsed().as_secs_f64()
    );
    assert_spread(&dp, vip, 2.0 / 3.0, "after fail-back").await;

    // Maintenance: drain member-1, then undrain.
    run_ok(&mut pg.multicluster(&["traffic", "drain", &name, "member-1", "-n", &ns]));
    until(&dp, vip, "drained member-1 gets nothing", |s| {
        !s.contains_key("member-1") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(&dp, vip, 0.0, "member-1 drained").await;
    run_ok(&mut pg.multicluster(&["traffic", "undrain", &name, "member-1", "-n", &ns]));
    until(&dp, vip, "undrained member-1 answers again", |s| {
        s.contains_key("member-1")
    })
    .await;
    assert_spread(&dp, vip, 2.0 / 3.0, "member-1 undrained").await;

    // ActiveStandby: member-1 active, member-2 standing by; the standby gets the traffic when the
    // active fails, and gives it back after fail-back.
    apply_policy(
        pg,
        &policy(
            &name,
            &ns,
            "ActiveStandby",
            "weight: 100",
            "weight: 100, priority: 1, role: Standby",
            dp.node_name(),
        ),
    );
    until(&dp, vip, "only the active member-1 answers", |s| {
        !s.contains_key("member-2") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(&dp, vip, 1.0, "ActiveStandby, both healthy").await;
    let failed = Instant::now();
    play_node(&m1, "m1-2", M1_NODES[2], false).await;
    until(&dp, vip, "the standby member-2 takes over", |s| {
        !s.contains_key("member-1") && !s.contains_key(NO_ANSWER)
    })
    .await;
    eprintln!(
        "member-1 (active) failed: the standby had all requests {:.2}s after the node went NotReady",
        failed.elapsed().as_secs_f64()
    );
    assert_spread(&dp, vip, 0.0, "ActiveStandby, active failed").await;
    play_node(&m1, "m1-2", M1_NODES[2], true).await;
    until(&dp, vip, "member-1 back after fail-back", |s| {
        !s.contains_key("member-2") && !s.contains_key(NO_ANSWER)
    })
    .await;
    assert_spread(&dp, vip, 1.0, "ActiveStandby, after fail-back").await;
}
