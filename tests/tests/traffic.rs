//! Traffic policies end to end: the hub server turns real member health probes into active
//! weights, records them and their transitions, and publishes Events; `kubectl multicluster
//! traffic` creates, shows, drains and undrains. The playground has no kubelets: the test plays
//! each member's nodes with Node objects whose Ready condition it sets. The data plane (Services,
//! EndpointSlices on members, kube-proxy) is not part of this test yet.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kube::Api;
use multicluster_tests::{
    eventually, fresh_namespace, playground, probe_every_second, run_ok, set_nodes, unique_name,
};
use serde_json::Value;

fn show(name: &str, ns: &str) -> Value {
    let out =
        run_ok(&mut playground().multicluster(&["traffic", "show", name, "-n", ns, "-o", "json"]));
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
    eventually(what, Duration::from_secs(30), async || {
        let report = show(name, ns);
        if check(&report) {
            Ok(report)
        } else {
            Err(format!("{report:#}"))
        }
    })
    .await
}

/// Waits until Deployment `app` has `want` replicas on (member-1, member-2).
async fn wait_replicas(m1: &kube::Client, m2: &kube::Client, ns: &str, want: (i32, i32)) {
    use k8s_openapi::api::apps::v1::Deployment;
    let replicas = |c: &kube::Client| {
        let api: Api<Deployment> = Api::namespaced(c.clone(), ns);
        async move {
            api.get_opt("app")
                .await
                .unwrap()
                .and_then(|d| d.spec)
                .and_then(|s| s.replicas)
        }
    };
    eventually(
        &format!("replicas on (member-1, member-2) are {want:?}"),
        Duration::from_secs(30),
        async || {
            let got = (replicas(m1).await, replicas(m2).await);
            if got == (Some(want.0), Some(want.1)) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn traffic_moves_to_the_standby_when_the_actives_played_nodes_fail_and_back_after_fail_back()
{
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    set_nodes(&m1, 4, 4).await;
    set_nodes(&m2, 4, 4).await;
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

    // A Deployment placed by the policy: its 4 replicas run where the traffic goes.
    let app_ns = fresh_namespace(&hub, "placed").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: {app_ns}}}\n\
             spec:\n  replicas: 4\n  selector: {{matchLabels: {{app: app}}}}\n  template:\n    \
             metadata: {{labels: {{app: app}}}}\n    spec: {{containers: [{{name: app, image: registry.k8s.io/pause:3.10}}]}}\n"
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
    wait_replicas(&m1, &m2, &app_ns, (4, 0)).await;

    // member-1 loses 3 of its 4 nodes (1 ready < ⌈4 × 0.5⌉): the standby takes over.
    let failed = Instant::now();
    set_nodes(&m1, 4, 1).await;
    let report = show_until("member-2 takes member-1's share", &name, &ns, |r| {
        active(r, "member-1") == Some(0) && active(r, "member-2") == Some(100)
    })
    .await;
    eprintln!(
        "standby took over {:?} after the nodes failed",
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

    // Healthy again: member-1 gets its share back only after 2 healthy probes.
    set_nodes(&m1, 4, 4).await;
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
    set_nodes(&m1, 4, 0).await;
    set_nodes(&m2, 4, 0).await;
    let report = show_until("nobody serves", &name, &ns, |r| r["serving"] == "False").await;
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("no member is healthy"),
        "{report:#}"
    );
    set_nodes(&m1, 4, 4).await;
    set_nodes(&m2, 4, 4).await;
}
