//! How fast a member's health transition reaches every member's data-plane objects: a playground
//! with 10 members, 50 multi-cluster services each exported by all 10 (every member imports every
//! service: 50 × 10 EndpointSlices per member, 5,000 in all). One member's played node is flipped
//! NotReady and Ready again, ROUNDS times; for each transition the benchmark records when the hub
//! saw it (the member's `Healthy` condition flips, read from a watch on the hub) and when the last
//! of the 500 EndpointSlices of that member's backends, on all 10 members, was updated (watches on
//! every member), and prints p50/p99.
//!
//! Played here: each member's one node (a Node object with an InternalIP and a Ready condition the
//! benchmark sets; no kubelet). No data plane reads the slices in this benchmark.
//!
//! Rerun: tests/bench/services.sh [ROUNDS] (builds the release binaries first).

// A benchmark: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use kube::{Api, Client};
use multicluster_core::api::MemberCluster;
use multicluster_tests::{run_ok, start_playground};

const MEMBERS: u32 = 10;
const SERVICES: usize = 50;
const NS: &str = "bench";
const FLIPPED: &str = "member-10";

async fn set_node(member: &Client, ip: &str, ready: bool) {
    let nodes: Api<Node> = Api::all(member.clone());
    if nodes.get_opt("node-0").await.unwrap().is_none() {
        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "node-0"}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "reason": "PlayedByTheBenchmark", "message": "no kubelet here"}]}});
    nodes
        .patch_status("node-0", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn export_services(member: &Client) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(member.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(member.clone(), NS);
    let exports = Api::<DynamicObject>::namespaced_with(
        member.clone(),
        NS,
        &multicluster_tests::mcs::resource("ServiceExport"),
    );
    futures::stream::iter(0..SERVICES)
        .for_each_concurrent(8, |i| {
            let (services, exports) = (services.clone(), exports.clone());
            async move {
                let name = format!("svc-{i}");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}
                }))
                .unwrap();
                services.create(&PostParams::default(), &svc).await.unwrap();
                let export: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
                    "metadata": {"name": name, "namespace": NS}
                }))
                .unwrap();
                exports.create(&PostParams::default(), &export).await.unwrap();
            }
        })
        .await;
}

/// The slices of `FLIPPED`'s backends on `member` holding `endpoints` addresses (named
/// `<service>-multicluster-<member>`; their source-cluster label carries its cluster ID).
async fn slices_with(member: &Client, endpoints: usize) -> usize {
    let lp = ListParams::default().labels("multicluster.kubernetes.io/service-name");
    let suffix = format!("-multicluster-{FLIPPED}");
    Api::<EndpointSlice>::namespaced(member.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| {
            s.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .filter(|s| s.endpoints.as_ref().map_or(0, Vec::len) == endpoints)
        .count()
}

/// Polls every member (every 100 ms, all members at once) until each has its 50 slices of
/// `FLIPPED`'s backends holding `endpoints` addresses; returns when a poll first saw that. Polling,
/// not watches: a watch that breaks under this load and relists would report its relist time.
async fn last_slice_update(members: &[Client], endpoints: usize) -> Instant {
    loop {
        let counts =
            futures::future::join_all(members.iter().map(|m| slices_with(m, endpoints))).await;
        if counts.iter().all(|c| *c == SERVICES) {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same writes a transition causes, made directly: every member's 50 slices of `FLIPPED`'s
/// backends server-side applied (a label of the benchmark's own field manager), 64 in flight as
/// the hub server does. The floor the hub's update time is compared with.
async fn raw_writes(members: &[Client], round: usize) -> Duration {
    let started = Instant::now();
    let writes = members.iter().flat_map(|m| {
        (0..SERVICES).map(move |i| {
            let api: Api<EndpointSlice> = Api::namespaced(m.clone(), NS);
            async move {
                let name = format!("svc-{i}-multicluster-{FLIPPED}");
                let patch = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "labels": {"bench.multicluster.dev/round": round.to_string()}},
                    "addressType": "IPv4"});
                // Retried like the hub server's writes are: a timeout under this load is not
                // the measurement.
                for attempt in 1.. {
                    match api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&patch)).await {
                        Ok(_) => break,
                        Err(e) if attempt < 5 => eprintln!("raw write {name}: {e}; retrying"),
                        Err(e) => panic!("raw write {name}: {e}"),
                    }
                }
            }
        })
    });
    futures::stream::iter(writes)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

/// When the hub's view of `FLIPPED` turns `healthy`.
async fn hub_sees(hub: &Client, healthy: bool) -> Instant {
    let api: Api<MemberCluster> = Api::all(hub.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={FLIPPED}"));
    let mut stream = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let want = if healthy { "True" } else { "False" };
    loop {
        let member = match stream.next().await {
            Some(Ok(member)) => member,
            Some(Err(e)) => {
                eprintln!("watch: {e}; resuming");
                continue;
            }
            None => panic!("the watch ended"),
        };
        let now = member.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Healthy" && c.status == want)
        });
        if now {
            return Instant::now();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    // Not a TempDir: a panic would remove it before the playground's watchdog stops what runs
    // there (it finds the processes through the state file in it).
    let dir = std::env::temp_dir().join(format!(
        "multicluster-bench-services-{}",
        std::process::id()
    ));
    eprintln!("starting a hub and {MEMBERS} members in {}", dir.display());
    let state = start_playground(&dir, MEMBERS, &[]);
    let pg = multicluster_tests::Playground { state };
    let hub = pg.client("hub").await.unwrap();
    let mut members = Vec::new();
    for i in 1..=MEMBERS {
        let name = format!("member-{i}");
        run_ok(&mut pg.multicluster(&["join", &name, "--member-context", &name]));
        let patch = serde_json::json!({"spec": {"health": {"intervalSeconds": 1, "timeoutSeconds": 2,
            "failureThreshold": 1, "successThreshold": 1}}});
        Api::<MemberCluster>::all(hub.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let client = pg.client(&name).await.unwrap();
        set_node(&client, &format!("10.252.{i}.2"), true).await;
        members.push(client);
    }
    pg.apply(
        "hub",
        "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {name: bench}\n\
         spec: {ranges: [\"10.252.200.0/24\"], domainSuffix: clusterset.example}\n",
        &[],
    );
    let started = Instant::now();
    futures::future::join_all(members.iter().map(export_services)).await;
    eprintln!(
        "exporting {SERVICES} services on each of {MEMBERS} members; waiting until every member imports all"
    );
    loop {
        let counts = futures::future::join_all(members.iter().map(|m| slices_with(m, 1))).await;
        if counts.iter().all(|c| *c == SERVICES) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "never converged: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "converged in {:.1}s: {} EndpointSlices per member",
        started.elapsed().as_secs_f64(),
        SERVICES * MEMBERS as usize
    );
    let flipped = members.last().unwrap().clone();
    let mut fail = Vec::new();
    let mut recover = Vec::new();
    let mut fail_total = Vec::new();
    for round in 0..rounds * 2 {
        let healthy = round % 2 == 1;
        let slices = last_slice_update(&members, usize::from(healthy));
        let seen = hub_sees(&hub, healthy);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let flipped_at = Instant::now();
        set_node(&flipped, &format!("10.252.{MEMBERS}.2"), healthy).await;
        let (seen, last) = tokio::join!(seen, slices);
        let after_transition = last.saturating_duration_since(seen).as_secs_f64();
        if healthy {
            recover.push(after_transition);
        } else {
            fail.push(after_transition);
            fail_total.push(last.duration_since(flipped_at).as_secs_f64());
        }
        eprintln!(
            "round {}: {FLIPPED} {}: hub saw it {:.2}s after the node flip; last of {} slices updated {:.3}s after that",
            round / 2 + 1,
            if healthy { "recovers" } else { "fails" },
            seen.duration_since(flipped_at).as_secs_f64(),
            SERVICES * MEMBERS as usize,
            after_transition
        );
        // Give the probe cycle a moment before the next flip.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut raw: Vec<f64> = Vec::new();
    for round in 0..rounds {
        raw.push(raw_writes(&members, round).await.as_secs_f64());
    }
    raw.sort_by(f64::total_cmp);
    fail.sort_by(f64::total_cmp);
    println!(
        "the same {} slice writes made directly (SSA, 64 in flight): p50 {:.3}s; a failure's transition → last slice p50 is {:.1}× that",
        SERVICES * MEMBERS as usize,
        percentile(&raw, 0.5),
        percentile(&fail, 0.5) / percentile(&raw, 0.5)
    );
    for (what, v) in [
        ("failure: transition → last slice", &mut fail),
        ("recovery: transition → last slice", &mut recover),
        ("failure: node flip → last slice", &mut fail_total),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "{what:40} p50 {:.3}s  p99 {:.3}s  (n={}, {} slices on {MEMBERS} members)",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.len(),
            SERVICES * MEMBERS as usize
        );
    }
}
