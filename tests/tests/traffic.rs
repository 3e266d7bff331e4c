//! Traffic policies end to end on a playground whose members run a real node and KWOK-simulated
//! nodes (`local up --nodes 1 --simulated-nodes 4`): the hub server turns real member health probes
//! into active weights, records them and their transitions, and publishes Events; `kubectl
//! multicluster traffic` creates, shows, drains and undrains; a Deployment the policy places runs
//! real pods (kubelet, containerd, runc) on the real node of the member the traffic goes to, and
//! failover moves them. Nothing of a node's health is written by the test: a member fails when KWOK
//! marks enough of its simulated nodes NotReady (the test labels them with KWOK's not-ready label,
//! as an operator would take a machine out) and recovers when the label goes. Nothing is played.
//! The data plane (EndpointSlices on members, kube-proxy) is `data_plane.rs`'s.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use kubectl_multicluster::local::image::IMAGE;
use kubectl_multicluster::local::simulated::NOT_READY_LABEL;
use multicluster_tests::{
    eventually, fresh_namespace, playground_with_nodes, probe_every_second, run_ok, unique_name,
};
use serde_json::Value;

/// Replicas of the placed Deployment.
const REPLICAS: i32 = 2;
/// Simulated nodes a member loses to go unhealthy: with its real node and 4 simulated ones,
/// `probe_every_second`'s survival ratio 0.5 wants ⌈5 × 0.5⌉ = 3 ready; 3 down leaves 2.
const TAKEN_DOWN: [&str; 3] = ["sim-1", "sim-2", "sim-3"];

fn show(name: &str, ns: &str) -> Value {
    let out = run_ok(
        &mut playground_with_nodes()
            .multicluster(&["traffic", "show", name, "-n", ns, "-o", "json"]),
    );
    serde_json::from_str(&out).unwrap()
}

fn active(report: &Value, member: &str) -> Option<u64> {
    report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == member)
        .and_then(|m| m["activeWeight"].as_u64())
}

/// Shows the policy until its report satisfies `check`; returns that report.
async fn show_until(what: &str, name: &str, ns: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(60), async || {
        let report = show(name, ns);
        if check(&report) {
            Ok(report)
        } else {
            Err(format!("{report:#}"))
        }
    })
    .await
}

/// Has KWOK take `member`'s simulated nodes [`TAKEN_DOWN`] NotReady (`down`) or bring them back,
/// by their not-ready label.
async fn take_down(member: &Client, member_name: &str, down: bool) {
    let nodes: Api<Node> = Api::all(member.clone());
    let value = down.then_some("true");
    let patch = serde_json::json!({"metadata": {"labels": {NOT_READY_LABEL: value}}});
    for sim in TAKEN_DOWN {
        nodes
            .patch(
                &format!("{member_name}-{sim}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
}

/// The placed Deployment's replicas on a member and its pods there: (spec.replicas, every pod as
/// "phase on node", terminating ones included).
async fn placed(member: &Client, ns: &str) -> (Option<i32>, Vec<String>) {
    let replicas = Api::<Deployment>::namespaced(member.clone(), ns)
        .get_opt("app")
        .await
        .unwrap()
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas);
    let pods = Api::<Pod>::namespaced(member.clone(), ns)
        .list(&ListParams::default().labels("app=app"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let terminating = if p.metadata.deletion_timestamp.is_some() {
                " (terminating)"
            } else {
                ""
            };
            let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            format!("{phase} on {node}{terminating}")
        })
        .collect();
    (replicas, pods)
}

/// Waits until the placed Deployment runs on `serving` only: there [`REPLICAS`] replicas whose
/// pods all Run on its real node, on the other member 0 replicas and no pod left.
async fn wait_pods_on(m1: &Client, m2: &Client, ns: &str, serving: &str) {
    let (on, off) = if serving == "member-1" {
        (m1, m2)
    } else {
        (m2, m1)
    };
    let running = vec![format!("Running on {serving}-node-1"); REPLICAS as usize];
    eventually(
        &format!("the placed Deployment's pods run on {serving} only"),
        Duration::from_secs(120),
        async || {
            let (serving_now, other) = (placed(on, ns).await, placed(off, ns).await);
            if serving_now == (Some(REPLICAS), running.clone()) && other == (Some(0), vec![]) {
                Ok(())
            } else {
                Err(format!(
                    "on {serving}: {serving_now:?}; on the other: {other:?}"
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn traffic_and_the_placed_deployments_pods_move_to_the_standby_when_kwok_takes_the_actives_nodes_down_and_back_after_fail_back()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    for member in ["member-1", "member-2"] {
        // What the test watches is the policy, not the probe's hysteresis.
        probe_every_second(&hub, member).await;
    }
    // In multicluster-system, beside the Distribution it places.
    let ns = "multicluster-system".to_owned();
    let name = unique_name("web");
    run_ok(&mut pg.multicluster(&[
        "traffic",
        "create",
        &name,
        "-n",
        &ns,
        "--mode",
        "active-standby",
        "--member",
        "member-1=100",
        "--member",
        "member-2=100:1:standby",
        "--failback",
        "2",
    ]));
    show_until("member-1 active, member-2 standing by", &name, &ns, |r| {
        active(r, "member-1") == Some(100) && active(r, "member-2") == Some(0)
    })
    .await;

    // A Deployment placed by the policy: its replicas run where the traffic goes, as pods of the
    // playground image on that member's real node (the simulated ones are tainted).
    let app_ns = fresh_namespace(&hub, "placed").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: {app_ns}}}\n\
             spec:\n  replicas: {REPLICAS}\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    \
             metadata: {{labels: {{app: app}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      \
             containers: [{{name: app, image: \"{IMAGE}\", command: [sleep, \"3600\"]}}]\n"
        ),
    )
    .unwrap();
    run_ok(&mut pg.multicluster(&[
        "distribute",
        "-f",
        dir.path().to_str().unwrap(),
        "--to",
        "member-1,member-2",
        "--name",
        &unique_name("placed"),
        "--traffic-policy",
        &name,
    ]));
    wait_pods_on(&m1, &m2, &app_ns, "member-1").await;

    // KWOK takes 3 of member-1's 4 simulated nodes down (2 of 5 ready < ⌈5 × 0.5⌉): the standby
    // takes over, and with it the pods.
    let failed = Instant::now();
    take_down(&m1, "member-1", true).await;
    let report = show_until("member-2 takes member-1's share", &name, &ns, |r| {
        active(r, "member-1") == Some(0) && active(r, "member-2") == Some(100)
    })
    .await;
    eprintln!(
        "standby took over {:?} after the nodes were taken down",
        failed.elapsed()
    );
    assert!(
        report["transitions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("member-1 100→0 (unhealthy)"),
        "{report:#}"
    );
    // An Event says so (published right after the status).
    eventually(
        "an Event for the shift",
        Duration::from_secs(10),
        async || {
            let events = run_ok(pg.kubectl().args([
                "--context",
                "hub",
                "get",
                "events",
                "-n",
                &ns,
                "-o",
                "jsonpath={range .items[*]}{.reason}: {.note}{.message}{\"\\n\"}{end}",
            ]));
            if events.contains("TrafficShifted: member-1 100→0") {
                Ok(())
            } else {
                Err(events)
            }
        },
    )
    .await;
    // Failover moves the placed Deployment's pods.
    wait_pods_on(&m1, &m2, &app_ns, "member-2").await;
    eprintln!(
        "the pods ran on member-2 only {:?} after the nodes were taken down",
        failed.elapsed()
    );

    // KWOK brings the nodes back: member-1 gets its share back only after 2 healthy probes, and
    // its pods with it.
    take_down(&m1, "member-1", false).await;
    let report = show_until("member-1 back after fail-back", &name, &ns, |r| {
        active(r, "member-1") == Some(100) && active(r, "member-2") == Some(0)
    })
    .await;
    assert!(
        report["transitions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("back after fail-back"),
        "{report:#}"
    );
    wait_pods_on(&m1, &m2, &app_ns, "member-1").await;

    // Drain member-1 for maintenance, then undrain.
    run_ok(&mut pg.multicluster(&["traffic", "drain", &name, "member-1", "-n", &ns]));
    let report = show_until("drained member-1 gets nothing", &name, &ns, |r| {
        active(r, "member-1") == Some(0) && active(r, "member-2") == Some(100)
    })
    .await;
    assert_eq!(report["members"][0]["state"], "drained");
    run_ok(&mut pg.multicluster(&["traffic", "undrain", &name, "member-1", "-n", &ns]));
    show_until("undrained member-1 serves again", &name, &ns, |r| {
        active(r, "member-1") == Some(100)
    })
    .await;

    // Both down: no member serves, said as a condition; nothing divided by zero.
    take_down(&m1, "member-1", true).await;
    take_down(&m2, "member-2", true).await;
    let report = show_until("nobody serves", &name, &ns, |r| r["serving"] == "False").await;
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("no member is healthy"),
        "{report:#}"
    );
    take_down(&m1, "member-1", false).await;
    take_down(&m2, "member-2", false).await;
}
