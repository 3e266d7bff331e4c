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

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
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

fn mcs(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "multicluster.x-k8s.io",
        "v1beta1",
        kind,
    ))
}

async fn export_services(member: &Client) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(member.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(member.clone(), NS);
    let exports = Api::<DynamicObject>::namespaced_with(member.clone(), NS, &mcs("ServiceExport"));
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

/// The slices of `FLIPPED`'s backends on `member` holding `endpoints` addresses.
async fn slices_with(member: &Client, endpoints: usize) -> usize {
    let lp = ListParams::default().labels(&format!(
        "multicluster.kubernetes.io/source-cluster={FLIPPED}"
    ));
    Api::<EndpointSlice>::namespaced(member.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.endpoints.as_ref().map_or(0, Vec::len) == endpoints)
        .count()
}

/// Waits until every member's 50 slices of `FLIPPED`'s backends hold `endpoints` addresses;
/// returns when the last one got there (as its watch event arrived).
async fn last_slice_update(members: &[Client], endpoints: usize) -> Instant {
    let waits = members.iter().map(|member| async move {
        let api = Api::<EndpointSlice>::namespaced(member.clone(), NS);
        let config = watcher::Config::default().labels(&format!(
            "multicluster.kubernetes.io/source-cluster={FLIPPED}"
        ));
        let mut done: HashSet<String> = HashSet::new();
        let mut stream = watcher(api, config)
            .default_backoff()
            .touched_objects()
            .boxed();
        let mut last = Instant::now();
        while done.len() < SERVICES {
            // A watch that breaks (a timeout under load) is resumed by the watcher's backoff.
            let slice = match stream.next().await {
                Some(Ok(slice)) => slice,
                Some(Err(e)) => {
                    eprintln!("watch: {e}; resuming");
                    continue;
                }
                None => panic!("the watch ended"),
            };
            let name = slice.metadata.name.clone().unwrap_or_default();
            if slice.endpoints.as_ref().map_or(0, Vec::len) == endpoints {
                if done.insert(name) {
                    last = Instant::now();
                }
            } else {
                done.remove(&name);
            }
        }
        last
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .max()
        .unwrap()
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
    let dir = tempfile::tempdir().unwrap();
    eprintln!("starting a hub and {MEMBERS} members");
    let state = start_playground(&dir.path().join("pg"), MEMBERS, &[]);
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
