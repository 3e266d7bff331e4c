//! The `Hooks` quiesce end to end: the real hub server reads the hook annotations of the member's
//! pods, runs each pre hook through the member's real API server (`pods/exec` over a WebSocket)
//! before any volume snapshot is created, and the post hooks after, whatever happened.
//!
//! The test plays the kubelet's status report (it marks pods Running that are on no node), so the
//! API server refuses every exec: that checks what the hub server does when hooks fail (which hooks
//! it runs and when, `on-error` Fail and Continue, what the user reads). The CSI snapshotter and the
//! provisioner are played as in `snapshot.rs`. The hooks' commands running for real in the
//! playground node's containers, around the real CSI driver's cut, are in `snapshot_on_nodes.rs`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use multicluster_core::api::{HookStatus, SnapshotPhase};
use multicluster_tests::{playground, run, unique_name};
use serde_json::{Value, json};

/// A Pod with `annotations`, marked Running as a kubelet would report it (played).
async fn running_pod(member: &kube::Client, ns: &str, name: &str, annotations: Value) {
    let pods: Api<Pod> = Api::namespaced(member.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "db", "image": "postgres:17",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
}

fn annotate(member_context: &str, ns: &str, pod: &str, pairs: &[&str]) {
    let pg = playground();
    let mut args = vec![
        "--context",
        member_context,
        "-n",
        ns,
        "annotate",
        "--overwrite",
        "pod",
        pod,
    ];
    args.extend_from_slice(pairs);
    multicluster_tests::run_ok(pg.kubectl().args(&args));
}

/// `kubectl multicluster snapshot create NS --quiesce hooks -o json` of member-1, run.
fn snapshot_with_hooks(ns: &str, location: &str, name: &str) -> std::process::Output {
    run(&mut playground().snapshot_of_member_1(
        ns,
        location,
        name,
        &["--quiesce", "hooks", "-o", "json"],
    ))
}

/// The status of the NamespaceSnapshot `name` on the hub.
async fn snapshot_status(name: &str) -> multicluster_core::api::NamespaceSnapshotStatus {
    let hub = playground().client("hub").await.unwrap();
    multicluster_tests::snapshot_status(&hub, name).await
}

fn hook<'a>(statuses: &'a [HookStatus], when: &str, pod: &str) -> &'a HookStatus {
    statuses
        .iter()
        .find(|h| h.when == when && h.pod == pod)
        .unwrap_or_else(|| panic!("no {when} hook of {pod} in {statuses:?}"))
}

async fn volume_snapshots(member: &kube::Client, ns: &str) -> usize {
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        member.clone(),
        ns,
        &multicluster_tests::csi::resource("VolumeSnapshot"),
    );
    api.list(&ListParams::default()).await.unwrap().items.len()
}

// Multi-threaded: the played snapshotter runs while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_annotations_are_checked_first_pre_hooks_run_before_any_volume_snapshot_and_a_failed_hook_fails_the_snapshot_unless_it_may_continue()
 {
    let pg = playground();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    multicluster_tests::csi::install_crds(pg, "member-1");
    multicluster_tests::csi::snapshot_class(&m1, "played-hostpath").await;
    let ns = multicluster_tests::fresh_namespace(&m1, "db")
        .await
        .unwrap();
    multicluster_tests::csi::play_bound_claim(&m1, &ns, "data", "fast").await;
    let snapshotter = multicluster_tests::csi::PlayedSnapshotter::start(m1.clone(), &ns, 1);
    let dir = tempfile::tempdir().unwrap();
    let (location, _) = multicluster_tests::minio::add_directory_location(pg, dir.path());

    // db-0 freezes and thaws its volume (ours); db-1 is annotated for Velero; db-2 is not running.
    running_pod(
        &m1,
        &ns,
        "db-0",
        json!({"multicluster.dev/pre-hook-command": r#"["/sbin/fsfreeze", "--freeze", "/data"]"#,
               "multicluster.dev/post-hook-command": r#"["/sbin/fsfreeze", "--unfreeze", "/data"]"#}),
    )
    .await;
    running_pod(
        &m1,
        &ns,
        "db-1",
        json!({"pre.hook.backup.velero.io/command": r#"["/bin/sh", "-c", "sync"]"#,
               "pre.hook.backup.velero.io/timeout": "20s"}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(m1.clone(), &ns);
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-2", "annotations": {"multicluster.dev/pre-hook-command": "sync"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:17"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();

    let snapshot = |name: &str| snapshot_with_hooks(&ns, &location, name);

    // 1. A wrong annotation: refused before anything is quiesced or snapshotted, naming it.
    annotate(
        "member-1",
        &ns,
        "db-1",
        &["multicluster.dev/pre-hook-container=postgres"],
    );
    let wrong = unique_name("db-wrong");
    let out = snapshot(&wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "quiesce hooks: pod db-1: multicluster.dev/pre-hook-container: no container \"postgres\" in the pod (it has db)"
        ),
        "{stderr}"
    );
    let status = snapshot_status(&wrong).await;
    assert_eq!(status.phase, SnapshotPhase::Failed);
    assert!(status.hooks.is_empty(), "{:?}", status.hooks);
    assert_eq!(volume_snapshots(&m1, &ns).await, 0);
    assert!(snapshotter.cut(&wrong).is_none());
    annotate(
        "member-1",
        &ns,
        "db-1",
        &["multicluster.dev/pre-hook-container-"],
    );

    // 2. on-error Fail (the default): every pre hook was tried, and failed because no kubelet
    // runs here; no volume snapshot was created; the post hook still ran; the snapshot Failed,
    // saying which hook and why.
    let failing = unique_name("db-fail");
    let out = snapshot(&failing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for expected in [
        "pre hook in pod db-0 (container db) failed: the API server did not start the command: pod db-0 does not have a host assigned",
        "pre hook in pod db-1 (container db) failed: the API server did not start the command: pod db-1 does not have a host assigned",
        "and resuming failed too: post hook in pod db-0 (container db) failed",
        "the pods may still be quiesced: check them",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    let status = snapshot_status(&failing).await;
    assert_eq!(status.phase, SnapshotPhase::Failed);
    assert!(!hook(&status.hooks, "pre", "db-0").succeeded);
    assert!(!hook(&status.hooks, "pre", "db-1").succeeded);
    assert!(
        !hook(&status.hooks, "post", "db-0").succeeded,
        "post hook tried"
    );
    assert_eq!(
        hook(&status.hooks, "", "db-2").message.as_deref(),
        Some("skipped: the pod is not running")
    );
    assert!(
        snapshotter.cut(&failing).is_none(),
        "cut after a failed pre hook"
    );
    assert_eq!(volume_snapshots(&m1, &ns).await, 0);

    // 3. on-error Continue on every hook: the failures are recorded, the volume snapshot is cut
    // and the snapshot completes; `snapshot show` lists each hook with its outcome.
    for (pod, keys) in [
        (
            "db-0",
            &[
                "multicluster.dev/pre-hook-on-error=Continue",
                "multicluster.dev/post-hook-on-error=Continue",
            ][..],
        ),
        ("db-1", &["pre.hook.backup.velero.io/on-error=Continue"][..]),
    ] {
        annotate("member-1", &ns, pod, keys);
    }
    let continuing = unique_name("db-continue");
    let out = snapshot(&continuing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let status = snapshot_status(&continuing).await;
    assert_eq!(status.phase, SnapshotPhase::Completed);
    assert_eq!(snapshotter.cut(&continuing).unwrap().snapshots, 1);
    assert!(status.volumes[0].ready, "{:?}", status.volumes);
    assert_eq!(
        status.hooks.iter().filter(|h| h.when == "pre").count(),
        2,
        "{:?}",
        status.hooks
    );
    assert!(!hook(&status.hooks, "post", "db-0").succeeded);
    let shown =
        multicluster_tests::run_ok(&mut pg.multicluster(&["snapshot", "show", &continuing]));
    assert!(shown.contains("Hooks:"), "{shown}");
    assert!(
        shown.lines().any(|l| l.starts_with("pre")
            && l.contains("db-0")
            && l.contains("false")
            && l.contains("does not have a host assigned")),
        "{shown}"
    );
}
