//! Member health on a playground whose members run a real node and KWOK-simulated nodes
//! (`local up --nodes 1 --simulated-nodes 4`), where `members.rs` plays nodes by writing Node
//! objects. Nothing of a node's health is written by a test: the real node's is the one the
//! kube-controller-manager derives from the kubelet's leases, the simulated nodes' the one KWOK
//! sets when a node carries its not-ready label. Each test uses its own member.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use multicluster_core::api::MemberCluster;
use multicluster_tests::health::{member_healthy, wait_for_member};
use multicluster_tests::{SIMULATED_NODES, eventually, playground_with_nodes, run_ok};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every node of a member: its real one and the simulated ones.
const TOTAL: u32 = 1 + SIMULATED_NODES;

/// Resumes a stopped process when dropped, so that a failing test leaves no frozen kubelet.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGCONT);
    }
}

/// The Ready condition of a node: (status, reason).
async fn node_ready(nodes: &Api<Node>, name: &str) -> Option<(String, String)> {
    let node = nodes.get(name).await.ok()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason.unwrap_or_default()))
}

/// Joins `member` and has the hub probe it every second, flipping after 2 results either way,
/// against `ratio`.
async fn join_with_survival_ratio(hub: &Client, member: &str, ratio: f64) {
    run_ok(&mut playground_with_nodes().multicluster(&[
        "join",
        member,
        "--member-context",
        member,
    ]));
    let patch = serde_json::json!({"spec": {"health": {"intervalSeconds": 1, "timeoutSeconds": 2,
        "failureThreshold": 2, "successThreshold": 2, "minSurvivalRatio": ratio}}});
    Api::<MemberCluster>::all(hub.clone())
        .patch(member, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Waits until the hub reports `member` healthy or not with `ready` of all its nodes ready.
async fn wait_health(hub: &Client, member: &str, healthy: bool, ready: u32) {
    wait_for_member(
        hub,
        member,
        Duration::from_secs(60),
        &format!("healthy={healthy} with {ready}/{TOTAL} ready nodes"),
        |mc| {
            let status = mc.status.as_ref();
            member_healthy(mc) == Some(healthy)
                && status.and_then(|s| s.ready_nodes) == Some(ready)
                && status.and_then(|s| s.total_nodes) == Some(TOTAL)
        },
    )
    .await;
}

#[tokio::test]
async fn a_member_whose_kubelet_hangs_goes_unhealthy_by_its_controller_managers_node_status_and_recovers()
 {
    let pg = playground_with_nodes();
    let hub = pg.client("hub").await.unwrap();
    let nodes: Api<Node> = Api::all(pg.client("member-1").await.unwrap());
    // Every node must be ready.
    join_with_survival_ratio(&hub, "member-1", 1.0).await;
    wait_health(&hub, "member-1", true, TOTAL).await;

    // The kubelet hangs (SIGSTOP): it renews no lease and posts no status, as on a dead host.
    let node = &pg.state.clusters[1].nodes[0];
    assert_eq!(node.network.node, "member-1-node-1");
    let kubelet = node.kubelet.pid;
    kill(Pid::from_raw(kubelet as i32), Signal::SIGSTOP).unwrap();
    let resume = Resume(kubelet);
    // The controller-manager's node lifecycle controller, not the test, marks it: status Unknown
    // with its reason, after the playground's 16 s grace period.
    eventually(
        "the controller-manager marks member-1-node-1 NotReady",
        Duration::from_secs(60),
        async || match node_ready(&nodes, "member-1-node-1").await {
            Some((status, reason)) if status == "Unknown" && reason == "NodeStatusUnknown" => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    wait_health(&hub, "member-1", false, TOTAL - 1).await;

    // The kubelet resumes: its next status makes the node Ready, and the member healthy again.
    drop(resume);
    eventually(
        "member-1-node-1 is Ready again",
        Duration::from_secs(60),
        async || match node_ready(&nodes, "member-1-node-1").await {
            Some((status, _)) if status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    wait_health(&hub, "member-1", true, TOTAL).await;
}

#[tokio::test]
async fn the_survival_ratio_holds_over_simulated_nodes_that_kwok_takes_down_and_brings_back() {
    let pg = playground_with_nodes();
    let hub = pg.client("hub").await.unwrap();
    let nodes: Api<Node> = Api::all(pg.client("member-2").await.unwrap());
    // ⌈5 × 0.6⌉ = 3 nodes must be ready.
    join_with_survival_ratio(&hub, "member-2", 0.6).await;
    wait_health(&hub, "member-2", true, TOTAL).await;

    let label = |name: &str, value: Option<&str>| {
        let nodes = nodes.clone();
        let name = name.to_owned();
        let value = value.map(str::to_owned);
        async move {
            let patch = serde_json::json!({"metadata": {"labels": {
                kubectl_multicluster::local::simulated::NOT_READY_LABEL: value}}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    // Two of five down: 3 ready, still enough.
    label("member-2-sim-1", Some("true")).await;
    label("member-2-sim-2", Some("true")).await;
    wait_health(&hub, "member-2", true, TOTAL - 2).await;
    // A third: 2 ready, below the ratio.
    label("member-2-sim-3", Some("true")).await;
    wait_health(&hub, "member-2", false, TOTAL - 3).await;
    // KWOK brings them back when the label goes.
    for name in ["member-2-sim-1", "member-2-sim-2", "member-2-sim-3"] {
        label(name, None).await;
    }
    wait_health(&hub, "member-2", true, TOTAL).await;
}
