//! A member down in the middle of a continuous Distribution, on real API servers: member-2's API
//! server process is stopped (SIGSTOP: it hangs, as a dead host does) to play the outage. Its own
//! test binary, so the outage cannot disturb other tests' playground.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::MemberCluster;
use multicluster_tests::{
    eventually, fresh_namespace, playground, run, run_ok, stderr, unique_name,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn bundle(ns: &str, greeting: &str, late: bool) -> String {
    let mut text = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{password: one}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{greeting: {greeting}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers:
      - name: app
        image: registry.k8s.io/pause:3.10
        envFrom: [{{secretRef: {{name: creds}}}}, {{configMapRef: {{name: settings}}}}]
"#
    );
    if late {
        text.push_str(&format!(
            r#"---
apiVersion: v1
kind: Secret
metadata: {{name: late, namespace: {ns}}}
stringData: {{token: abc}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: late, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: late}}}}
  template:
    metadata: {{labels: {{app: late}}}}
    spec:
      containers:
      - name: late
        image: registry.k8s.io/pause:3.10
        env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: late, key: token}}}}}}]
"#
        ));
    }
    text
}

async fn reachable(hub: &Client, member: &str) -> Option<bool> {
    let mc = Api::<MemberCluster>::all(hub.clone())
        .get(member)
        .await
        .unwrap();
    mc.status?
        .conditions
        .iter()
        .find(|c| c.type_ == "Reachable")
        .map(|c| c.status == "True")
}

async fn greeting(client: &Client, ns: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("settings")
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data)
        .and_then(|d| d.get("greeting").cloned())
}

#[tokio::test]
async fn a_stopped_member_converges_when_it_returns_and_the_others_do_not_wait_for_it() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    for member in ["member-1", "member-2"] {
        // Probe every second so the outage is noticed quickly.
        let patch = serde_json::json!({"spec": {"health": {"intervalSeconds": 1, "timeoutSeconds": 2,
            "failureThreshold": 2, "successThreshold": 1}}});
        Api::<MemberCluster>::all(hub.clone())
            .patch(member, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let ns = fresh_namespace(&hub, "outage").await.unwrap();
    let name = unique_name("outage");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.yaml");
    std::fs::write(&file, bundle(&ns, "v1", false)).unwrap();
    let distribute = || {
        pg.multicluster(&[
            "distribute",
            "-f",
            file.to_str().unwrap(),
            "--to",
            "member-1,member-2",
            "--name",
            &name,
            "--mode",
            "continuous",
            "--timeout",
            "60s",
            "-o",
            "json",
        ])
    };
    run_ok(&mut distribute());
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    assert_eq!(greeting(&m2, &ns).await.as_deref(), Some("v1"));

    // Outage.
    let pid = pg.apiserver_pid("member-2");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let during = async {
        eventually(
            "the probe sees member-2 unreachable",
            Duration::from_secs(30),
            async || reachable(&hub, "member-2").await == Some(false),
        )
        .await;
        // The source changes and grows while member-2 is down: member-1 gets it all; the command
        // says member-2 did not answer.
        std::fs::write(&file, bundle(&ns, "v2", true)).unwrap();
        let started = Instant::now();
        let out = run(&mut distribute());
        let took = started.elapsed();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let stderr = stderr(&out);
        let m1_greeting = greeting(&m1, &ns).await;
        let m1_late = Api::<Deployment>::namespaced(m1.clone(), &ns)
            .get_opt("late")
            .await
            .unwrap();
        (
            out.status.success(),
            report,
            stderr,
            took,
            m1_greeting,
            m1_late.is_some(),
        )
    }
    .await;
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    let (ok, report, stderr, took, m1_greeting, m1_late) = during;
    assert!(!ok, "a member that did not answer is not in sync: {report}");
    assert!(stderr.contains("member-2"), "{stderr}");
    assert_eq!(
        m1_greeting.as_deref(),
        Some("v2"),
        "member-1 must not wait for member-2"
    );
    assert!(m1_late, "member-1 got the new objects");
    eprintln!("distribute with member-2 down returned in {took:?}");
    let m2_status = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == "member-2")
        .unwrap();
    assert!(
        m2_status["message"]
            .as_str()
            .unwrap()
            .contains("nothing on it is deleted"),
        "{m2_status}"
    );

    // Back: member-2 converges without anyone asking again, and nothing of it was lost.
    let back = Instant::now();
    eventually(
        "member-2 has the new greeting",
        Duration::from_secs(60),
        async || greeting(&m2, &ns).await.as_deref() == Some("v2"),
    )
    .await;
    eventually(
        "member-2 has the new Deployment",
        Duration::from_secs(30),
        async || {
            Api::<Deployment>::namespaced(m2.clone(), &ns)
                .get_opt("late")
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
    eprintln!("member-2 converged {:?} after it came back", back.elapsed());
    assert!(
        Api::<Deployment>::namespaced(m2.clone(), &ns)
            .get_opt("app")
            .await
            .unwrap()
            .is_some()
    );
    // Order held on the member that was down: the Secret was created before the Deployment using it.
    let secret = Api::<Secret>::namespaced(m2.clone(), &ns)
        .get("late")
        .await
        .unwrap();
    let deployment = Api::<Deployment>::namespaced(m2.clone(), &ns)
        .get("late")
        .await
        .unwrap();
    let rv = |s: Option<String>| s.unwrap().parse::<u64>().unwrap();
    assert!(
        rv(secret.resource_version()) < rv(deployment.resource_version()),
        "on member-2, Deployment late was created before the Secret it uses"
    );
    eventually(
        "the Distribution reports Synced",
        Duration::from_secs(30),
        async || {
            let out = run(&mut pg.multicluster(&["distribute", "status", &name, "-o", "json"]));
            let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            status["synced"] == "True"
        },
    )
    .await;
}
