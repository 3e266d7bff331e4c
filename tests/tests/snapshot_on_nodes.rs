//! Namespace snapshots and restores on a playground whose members run real nodes (`local up
//! --nodes 1 --simulated-nodes 4`), where `snapshot.rs`, `restore.rs` and `snapshot_hooks.rs` play
//! the CSI snapshotter, the provisioner and the kubelet. Nothing of storage or pods is played here:
//! the pods run in the node's containerd, the claims are provisioned by the real
//! external-provisioner through the playground CSI driver, the volume snapshots are cut by the real
//! csi-snapshotter and snapshot-controller, and restored claims are provisioned from them (the
//! driver copies the snapshot back). What the tests check is what a user would: the bytes the pods
//! wrote, which pods existed when the first volume snapshot was created, and when the hooks ran
//! against the driver's own record of the cut (`VolumeSnapshotContent.status.creationTime`).
//!
//! The restores go into another namespace of the same member: a volume snapshot's data stays in the
//! storage of the member it was cut on until the data mover (issue 20) exports it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount};
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use multicluster_core::api::{HookStatus, NamespaceSnapshot, SnapshotPhase};
use multicluster_core::playground::CSI_DRIVER;
use multicluster_tests::csi::resource;
use multicluster_tests::{
    eventually, playground_with_nodes, run, run_ok, snapshot_status, unique_name,
};
use serde_json::{Value, json};

const IMAGE: &str = kubectl_multicluster::local::image::IMAGE;

fn kubectl_member_1(args: &[&str]) -> String {
    run_ok(
        playground_with_nodes()
            .kubectl()
            .args(["--context", "member-1"])
            .args(args),
    )
}

/// A StatefulSet of `replicas` pods, each appending its name and a random line to its own claim
/// when it starts. `sleep` ignores SIGTERM, so a one-second grace period keeps stops short.
fn ledger(ns: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: ledger, namespace: {ns}}}
spec:
  replicas: {replicas}
  serviceName: ledger
  selector: {{matchLabels: {{app: ledger}}}}
  template:
    metadata: {{labels: {{app: ledger}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: ledger
        image: {IMAGE}
        imagePullPolicy: Never
        command: ["sh", "-c", "echo \"$(hostname) $(cat /proc/sys/kernel/random/uuid)\" >> /data/ledger && exec sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}
"#
    )
}

fn rollout(ns: &str) {
    kubectl_member_1(&[
        "rollout",
        "status",
        "statefulset/ledger",
        "-n",
        ns,
        "--timeout=120s",
    ]);
}

fn ledger_of(ns: &str, pod: &str) -> String {
    kubectl_member_1(&["exec", "-n", ns, pod, "--", "cat", "/data/ledger"])
}

/// Polls until the first VolumeSnapshot exists in `ns`; returns the names of the pods that existed
/// then (in any phase, terminating ones included).
async fn pods_when_first_cut(member: Client, ns: String) -> Vec<String> {
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), &ns, &resource("VolumeSnapshot"));
    let pods: Api<Pod> = Api::namespaced(member, &ns);
    loop {
        if !snapshots
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
        {
            return pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bound_volume(member: &Client, ns: &str, claim: &str) -> PersistentVolume {
    let claim = Api::<PersistentVolumeClaim>::namespaced(member.clone(), ns)
        .get(claim)
        .await
        .unwrap();
    let volume = claim.spec.and_then(|s| s.volume_name).unwrap();
    Api::<PersistentVolume>::all(member.clone())
        .get(&volume)
        .await
        .unwrap()
}

fn volume_handle(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .unwrap()
}

// Multi-threaded: the observer of the first cut runs while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_whose_pods_wrote_data_is_cut_by_the_csi_driver_once_its_pods_stopped_and_restored_with_that_data()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let ns = multicluster_tests::fresh_namespace(&m1, "ledger")
        .await
        .unwrap();
    let applied = pg.apply("member-1", &ledger(&ns, 2), &[]);
    assert!(applied.status.success(), "{applied:?}");
    rollout(&ns);
    let written: Vec<String> = ["ledger-0", "ledger-1"]
        .iter()
        .map(|pod| ledger_of(&ns, pod))
        .collect();
    for (pod, text) in ["ledger-0", "ledger-1"].iter().zip(&written) {
        assert!(text.starts_with(pod), "{pod} wrote {text:?}");
    }

    // Snapshot with scale-down: the hub server scales the StatefulSet to 0 and waits for its real
    // pods to be gone before it creates any VolumeSnapshot.
    let dir = tempfile::tempdir().unwrap();
    let (location, _) = multicluster_tests::minio::add_directory_location(pg, dir.path());
    let observer = tokio::spawn(pods_when_first_cut(m1.clone(), ns.clone()));
    let name = unique_name("ledger-snap");
    let out = run(&mut pg.snapshot_of_member_1(
        &ns,
        &location,
        &name,
        &["--quiesce", "scale-down", "-o", "json"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pods_at_cut = tokio::time::timeout(Duration::from_secs(10), observer)
        .await
        .expect("a VolumeSnapshot was created")
        .unwrap();
    assert!(
        pods_at_cut.is_empty(),
        "pods still existed when the first volume snapshot was created: {pods_at_cut:?}"
    );
    let snapshot: NamespaceSnapshot = serde_json::from_slice(&out.stdout).unwrap();
    let status = snapshot.status.unwrap();
    assert_eq!(status.phase, SnapshotPhase::Completed);
    assert_eq!(status.volumes.len(), 2, "{:?}", status.volumes);
    for v in &status.volumes {
        assert!(v.ready, "{v:?}");
        assert_eq!(v.driver.as_deref(), Some(CSI_DRIVER), "{v:?}");
        assert!(v.snapshot_handle.is_some(), "{v:?}");
    }
    // The workload is back at its scale, its pods running again on the same claims.
    rollout(&ns);

    // Restore into a new namespace of member-1: the claims are provisioned from the volume
    // snapshots (new volumes, the snapshot's data copied in) before the StatefulSet exists.
    let target = unique_name("ledger-restored");
    let restore = unique_name("r");
    let done = pg.restore_followed(&name, "member-1", &target, &restore);
    let restored = done.status.unwrap();
    assert!(restored.failures.is_empty(), "{:?}", restored.failures);
    rollout(&target);
    for (i, before) in written.iter().enumerate() {
        let pod = format!("ledger-{i}");
        let claim = format!("data-ledger-{i}");
        let source = bound_volume(&m1, &ns, &claim).await;
        let copy = bound_volume(&m1, &target, &claim).await;
        assert_ne!(
            volume_handle(&source),
            volume_handle(&copy),
            "the restored claim has a volume of its own"
        );
        let pvc = Api::<PersistentVolumeClaim>::namespaced(m1.clone(), &target)
            .get(&claim)
            .await
            .unwrap();
        let source_ref = pvc.spec.and_then(|s| s.data_source).unwrap();
        assert_eq!(source_ref.kind, "VolumeSnapshot", "{claim}");
        // What the pod wrote before the snapshot, then its own start in the restored namespace.
        let after = ledger_of(&target, &pod);
        assert!(
            after.starts_with(before.as_str())
                && after.lines().count() == before.lines().count() + 1,
            "{pod}: before the snapshot {before:?}, restored {after:?}"
        );
    }
}

fn written_at(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()))
}

/// When the CSI driver cut the volume snapshots in `ns` (`creationTime` of their contents). The
/// playground's driver has group snapshots, so they come from one VolumeGroupSnapshot and carry
/// its name, not the snapshot's label.
async fn cut_times(member: &Client, ns: &str) -> Vec<SystemTime> {
    let contents: Api<DynamicObject> =
        Api::all_with(member.clone(), &resource("VolumeSnapshotContent"));
    let bound: Vec<String> =
        Api::<DynamicObject>::namespaced_with(member.clone(), ns, &resource("VolumeSnapshot"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| {
                s.data["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
    let mut times = Vec::new();
    for content in bound {
        let c = contents.get(&content).await.unwrap();
        let nanos = c.data["status"]["creationTime"].as_u64().unwrap();
        times.push(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos));
    }
    times
}

/// A pod of the playground image, which the scheduler puts on member-1's real node (the simulated
/// ones are tainted): `/evidence` a directory of this test, and the claim `data` mounted when
/// `with_claim` (it binds on first consumer).
async fn pod_on_node(
    member: &Client,
    ns: &str,
    name: &str,
    evidence: &Path,
    with_claim: bool,
    annotations: Value,
) {
    let mut mounts = vec![json!({"name": "evidence", "mountPath": "/evidence"})];
    let mut volumes =
        vec![json!({"name": "evidence", "hostPath": {"path": evidence.display().to_string()}})];
    if with_claim {
        mounts.push(json!({"name": "data", "mountPath": "/data"}));
        volumes.push(json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}));
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "db", "image": IMAGE, "imagePullPolicy": "Never",
                                 "volumeMounts": mounts}],
                 "volumes": volumes}
    }))
    .unwrap();
    Api::<Pod>::namespaced(member.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

fn hook<'a>(statuses: &'a [HookStatus], when: &str, pod: &str) -> &'a HookStatus {
    statuses
        .iter()
        .find(|h| h.when == when && h.pod == pod)
        .unwrap_or_else(|| panic!("no {when} hook of {pod} in {statuses:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_playgrounds_node_the_pre_hooks_run_before_the_csi_drivers_cut_the_post_hooks_after_and_exit_codes_output_and_timeouts_are_reported()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let hub = pg.client("hub").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ns = multicluster_tests::fresh_namespace(&m1, "db")
        .await
        .unwrap();
    // The controller-manager gives a new namespace its `default` ServiceAccount, without which
    // the API server admits no pod there.
    let accounts: Api<ServiceAccount> = Api::namespaced(m1.clone(), &ns);
    eventually(
        "the namespace's default ServiceAccount",
        Duration::from_secs(30),
        async || accounts.get_opt("default").await.unwrap().ok_or("not yet"),
    )
    .await;
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\n\
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}\n"
    );
    let applied = pg.apply("member-1", &claim, &[]);
    assert!(applied.status.success(), "{applied:?}");
    let (location, _) = multicluster_tests::minio::add_directory_location(pg, dir.path());
    let evidence = dir.path().join("evidence");
    std::fs::create_dir_all(&evidence).unwrap();

    // db-0 "freezes" and "thaws" (writes a file each time, says so on stdout); db-1's pre hook
    // fails with exit code 3 and a message on stderr, and its post hook hangs past its timeout.
    pod_on_node(
        &m1,
        &ns,
        "db-0",
        &evidence,
        true,
        json!({"multicluster.dev/pre-hook-command": r#"["/bin/sh", "-c", "touch /evidence/pre && echo frozen"]"#,
               "multicluster.dev/post-hook-command": r#"["/bin/sh", "-c", "touch /evidence/post && echo thawed"]"#}),
    )
    .await;
    pod_on_node(
        &m1,
        &ns,
        "db-1",
        &evidence,
        false,
        json!({"pre.hook.backup.velero.io/command": r#"["/bin/sh", "-c", "echo disk is read-only >&2; exit 3"]"#,
               "post.hook.backup.velero.io/command": r#"["/bin/sleep", "30"]"#,
               "post.hook.backup.velero.io/timeout": "1s",
               "post.hook.backup.velero.io/on-error": "Continue"}),
    )
    .await;
    kubectl_member_1(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "pod/db-0",
        "pod/db-1",
        "--timeout=90s",
    ]);
    let snapshot = |name: &str| {
        run(&mut pg.snapshot_of_member_1(
            &ns,
            &location,
            name,
            &["--quiesce", "hooks", "-o", "json"],
        ))
    };
    let volume_snapshots = async || {
        Api::<DynamicObject>::namespaced_with(m1.clone(), &ns, &resource("VolumeSnapshot"))
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
    };

    // 1. db-1's pre hook fails (on-error Fail): no volume snapshot; db-0's post hook still ran.
    let failing = unique_name("db-fail");
    let out = snapshot(&failing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "pre hook in pod db-1 (container db) failed: command terminated with non-zero exit code"
        ) && stderr.contains("exit code 3")
            && stderr.contains("output: disk is read-only"),
        "{stderr}"
    );
    let status = snapshot_status(&hub, &failing).await;
    assert_eq!(status.phase, SnapshotPhase::Failed);
    assert!(
        hook(&status.hooks, "pre", "db-0").succeeded,
        "{:?}",
        status.hooks
    );
    assert!(
        hook(&status.hooks, "post", "db-0").succeeded,
        "{:?}",
        status.hooks
    );
    assert_eq!(volume_snapshots().await, 0);
    assert!(written_at(&evidence.join("post")) >= written_at(&evidence.join("pre")));

    // 2. db-1's pre hook may fail (on-error Continue): the snapshot completes; db-0 froze before
    // the CSI driver cut the volume and thawed after; every outcome is in the status.
    kubectl_member_1(&[
        "annotate",
        "-n",
        &ns,
        "pod/db-1",
        "--overwrite",
        "pre.hook.backup.velero.io/on-error=Continue",
    ]);
    let continuing = unique_name("db-continue");
    let out = snapshot(&continuing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let status = snapshot_status(&hub, &continuing).await;
    assert_eq!(status.phase, SnapshotPhase::Completed);
    let cuts = cut_times(&m1, &ns).await;
    assert_eq!(cuts.len(), 1, "one claim, one volume snapshot");
    let (pre, post) = (
        written_at(&evidence.join("pre")),
        written_at(&evidence.join("post")),
    );
    assert!(
        pre <= cuts[0] && cuts[0] <= post,
        "pre {pre:?}, cut {:?}, post {post:?}",
        cuts[0]
    );
    let db0_pre = hook(&status.hooks, "pre", "db-0");
    assert!(
        db0_pre.succeeded && db0_pre.message.as_deref() == Some("frozen"),
        "{db0_pre:?}"
    );
    let db0_post = hook(&status.hooks, "post", "db-0");
    assert!(
        db0_post.succeeded && db0_post.message.as_deref() == Some("thawed"),
        "{db0_post:?}"
    );
    let db1_pre = hook(&status.hooks, "pre", "db-1");
    assert!(
        !db1_pre.succeeded
            && db1_pre
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("exit code 3"),
        "{db1_pre:?}"
    );
    let db1_post = hook(&status.hooks, "post", "db-1");
    assert_eq!(
        (db1_post.succeeded, db1_post.message.as_deref()),
        (false, Some("did not finish within its timeout of 1s")),
        "{db1_post:?}"
    );
    // The pods were never stopped: the hooks quiesce, not a scale-down.
    let pods: Api<Pod> = Api::namespaced(m1.clone(), &ns);
    eventually("db-0 still Running", Duration::from_secs(5), async || {
        let phase = pods.get("db-0").await.unwrap().status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Running") {
            Ok(())
        } else {
            Err(format!("{phase:?}"))
        }
    })
    .await;
}
