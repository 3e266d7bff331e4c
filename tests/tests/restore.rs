//! Namespace restores end to end: a snapshot of an application built from the Kubernetes
//! project's examples (guestbook, cassandra) on member-1, taken by the real hub server, restored
//! by it into member-2; restores onto conflicting namespaces refused by the real hub API server,
//! which calls the real hub server's validating webhook over TLS on `kubectl apply`, which reads
//! the target namespace live on the real member; a corrupted archive refused before any write; a
//! driver with group snapshots cut in one `VolumeGroupSnapshot` and restored from its handles;
//! ConfigMaps, which the admission check reads as protobuf and the snapshot as JSON, compared
//! alike.
//!
//! Played here (the playground runs no controllers and no CSI driver): the CSI snapshotter on
//! member-1 (`multicluster_tests::csi::PlayedSnapshotter`, and `PlayedGroupSnapshotter` for the
//! group snapshot controller), the provisioner on member-2
//! (`multicluster_tests::csi::PlayedProvisioner` binds each restored claim, as if hydrated from
//! its data source, and records which workloads existed at that moment), and the objects
//! controllers would make on member-1 (a Pod owned by a ReplicaSet, an Event).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use multicluster_core::api::{NamespaceRestore, NamespaceSnapshot};
use multicluster_tests::csi::{self, PlayedProvisioner, PlayedSnapshotter};
use multicluster_tests::minio::Minio;
use multicluster_tests::{Playground, playground, run, run_ok, stderr, succeeded, unique_name};
use serde_json::json;

const CLAIMS: [&str; 3] = [
    "cassandra-data-cassandra-0",
    "cassandra-data-cassandra-1",
    "cassandra-data-cassandra-2",
];

/// The example application in a fresh namespace of member-1, its claims bound to played CSI
/// volumes, and a played snapshotter answering there.
async fn source_application(pg: &Playground) -> (String, PlayedSnapshotter) {
    let m1 = pg.client("member-1").await.unwrap();
    csi::install_crds(pg, "member-1");
    csi::install_crds(pg, "member-2");
    csi::snapshot_class(&m1, "played-hostpath").await;
    let ns = multicluster_tests::fresh_namespace(&m1, "shop")
        .await
        .unwrap();
    multicluster_tests::examples::build_application(pg, "member-1", &ns);
    for claim in CLAIMS {
        csi::play_bound_claim(&m1, &ns, claim, "fast").await;
    }
    let snapshotter = PlayedSnapshotter::start(m1, &ns, CLAIMS.len());
    (ns, snapshotter)
}

fn restore_manifest(name: &str, snapshot: &str, target_namespace: &str) -> String {
    format!(
        "apiVersion: multicluster.dev/v1alpha1\nkind: NamespaceRestore\n\
         metadata: {{name: {name}, namespace: multicluster-system}}\n\
         spec: {{snapshot: {snapshot}, targetCluster: member-2, targetNamespace: {target_namespace}}}\n"
    )
}

async fn namespace_exists(member: &kube::Client, ns: &str) -> bool {
    Api::<Namespace>::all(member.clone())
        .get_opt(ns)
        .await
        .unwrap()
        .is_some()
}

// Multi-threaded: the played controllers run while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_an_empty_namespace_of_another_member_with_a_played_provisioner_hydrates_the_claims_before_any_workload_and_brings_the_workloads_back_at_their_scales()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let (ns, _snapshotter) = source_application(pg).await;

    // Snapshot (scale-down) to MinIO over TLS.
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(&dir.path().join("minio"), "snapshots");
    let location = minio.add_location(pg, &hub, dir.path()).await;
    let snapshot = unique_name("shop-snap");
    // Snapshots only: no node runs the data mover's pods on this playground; the played
    // provisioner restores from the snapshot handles (`volume_data.rs` moves the data for real).
    run_ok(&mut pg.snapshot_of_member_1(
        &ns,
        &location,
        &snapshot,
        &["--quiesce", "scale-down", "--volume-data", "snapshots-only"],
    ));
    let taken: NamespaceSnapshot = Api::namespaced(hub.clone(), "multicluster-system")
        .get(&snapshot)
        .await
        .unwrap();
    let taken = taken.status.unwrap();

    // Restore into an absent namespace of member-2: admitted, and followed phase by phase.
    let target = unique_name("shop-restored");
    let provisioner = PlayedProvisioner::start(m2.clone(), &target);
    let restore = unique_name("r");
    let done = pg.restore_followed(&snapshot, "member-2", &target, &restore);
    let status = done.status.unwrap();
    assert_eq!(status.objects_written, status.objects_total, "{status:?}");
    assert!(status.failures.is_empty(), "{:?}", status.failures);

    // The claims carried their volume snapshot as data source and were bound (played) before
    // any workload existed.
    let bindings = provisioner.bindings();
    for claim in CLAIMS {
        let binding = bindings
            .get(claim)
            .unwrap_or_else(|| panic!("{claim} never bound: {bindings:?}"));
        assert_eq!(
            binding.data_source.as_deref(),
            Some(format!("VolumeSnapshot/{restore}-{claim}").as_str()),
            "{claim}"
        );
        assert_eq!(
            binding.workloads, 0,
            "{claim} was bound after workloads existed"
        );
    }
    // Each data source is a VolumeSnapshot bound to a pre-provisioned, retained content carrying
    // the snapshot's handle for that claim.
    let contents: Api<DynamicObject> =
        Api::all_with(m2.clone(), &csi::resource("VolumeSnapshotContent"));
    for v in &taken.volumes {
        let content = contents
            .get(&format!("{target}-{restore}-{}", v.claim))
            .await
            .unwrap();
        assert_eq!(
            content.data["spec"]["source"]["snapshotHandle"],
            json!(v.snapshot_handle),
            "{}",
            v.claim
        );
        assert_eq!(content.data["spec"]["deletionPolicy"], "Retain");
    }
    let claim = Api::<PersistentVolumeClaim>::namespaced(m2.clone(), &target)
        .get(CLAIMS[0])
        .await
        .unwrap();
    assert_eq!(
        claim.spec.unwrap().data_source.unwrap().kind,
        "VolumeSnapshot"
    );

    // The workloads came back at their recorded scales (cassandra was at 0 only while quiesced).
    let sts = Api::<StatefulSet>::namespaced(m2.clone(), &target)
        .get("cassandra")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(3));
    let deployments: Api<Deployment> = Api::namespaced(m2.clone(), &target);
    for (name, replicas) in [
        ("frontend", 3),
        ("redis-master", 1),
        ("redis-replica", 2),
        ("maintenance", 0),
    ] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(
            d.spec.unwrap().replicas,
            Some(replicas),
            "Deployment {name}"
        );
    }
    let cron = Api::<CronJob>::namespaced(m2.clone(), &target)
        .get("nightly-report")
        .await
        .unwrap();
    assert_eq!(cron.spec.suspend, Some(true));
    let secret = Api::<Secret>::namespaced(m2.clone(), &target)
        .get("redis-password")
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"correct horse battery staple".to_vec()
    );
    let config = Api::<ConfigMap>::namespaced(m2.clone(), &target)
        .get("frontend-config")
        .await
        .unwrap();
    assert_eq!(
        config.data.unwrap()["greeting"],
        "hello from the snapshot test"
    );
    // What the snapshot left out is not restored.
    assert!(
        Api::<Pod>::namespaced(m2.clone(), &target)
            .get_opt("frontend-played-pod")
            .await
            .unwrap()
            .is_none()
    );

    // `kubectl multicluster <TAB>` completes through kubectl itself (its plugin completion runs
    // kubectl_complete-multicluster), with names read from the hub.
    let complete = |words: &[&str]| {
        let mut cmd = pg.kubectl();
        cmd.args(["__complete", "multicluster"]).args(words);
        run_ok(&mut cmd)
    };
    let offered = complete(&["snapshot", "show", ""]);
    assert!(
        offered.lines().any(|l| l == snapshot) && offered.ends_with(":4\n"),
        "{offered}"
    );
    let offered = complete(&["restore", "create", &snapshot, "--to-cluster", "mem"]);
    assert!(offered.lines().any(|l| l == "member-2"), "{offered}");
    let offered = complete(&["rest"]);
    assert!(offered.lines().any(|l| l == "restore"), "{offered}");

    // `restore list` and `show` report it.
    let list = run_ok(&mut pg.multicluster(&["restore", "list"]));
    assert!(
        list.contains(&restore) && list.contains("Completed"),
        "{list}"
    );
    let shown = run_ok(&mut pg.multicluster(&["restore", "show", &restore]));
    assert!(
        shown.contains(&format!("Target:     member-2/{target}")),
        "{shown}"
    );

    // `restore delete --with-objects` removes what it wrote, except what someone changed since
    // (listed), and never what it did not write.
    let configs: Api<ConfigMap> = Api::namespaced(m2.clone(), &target);
    configs
        .patch(
            "frontend-config",
            &kube::api::PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &kube::api::Patch::Merge(json!({"data": {"greeting": "edited on member-2"}})),
        )
        .await
        .unwrap();
    let theirs: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "not-restored", "namespace": target}, "data": {"a": "b"}}),
    )
    .unwrap();
    configs
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let out = run(&mut pg.multicluster(&[
        "restore",
        "delete",
        &restore,
        "--with-objects",
        "-o",
        "json",
    ]));
    assert!(out.status.success(), "{}", multicluster_tests::stderr(&out));
    let removal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(removal["removed"].as_u64().unwrap() > 10, "{removal}");
    let kept: Vec<String> = removal["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("{} {}: {}", k["kind"], k["name"], k["message"]))
        .collect();
    assert!(
        kept.iter()
            .any(|k| k.contains("frontend-config") && k.contains("changed since by kubectl-edit")),
        "{kept:?}"
    );
    assert!(!kept.iter().any(|k| k.contains("not-restored")), "{kept:?}");
    assert_eq!(
        configs.get("frontend-config").await.unwrap().data.unwrap()["greeting"],
        "edited on member-2"
    );
    assert!(configs.get_opt("not-restored").await.unwrap().is_some());
    assert!(deployments.get_opt("frontend").await.unwrap().is_none());
    assert!(
        Api::<Secret>::namespaced(m2.clone(), &target)
            .get_opt("redis-password")
            .await
            .unwrap()
            .is_none()
    );
    // Claims carry the protection finalizer, which no controller here lifts: they are deleted
    // (Terminating), not gone.
    let claim = Api::<PersistentVolumeClaim>::namespaced(m2.clone(), &target)
        .get_opt(CLAIMS[0])
        .await
        .unwrap();
    assert!(claim.is_none_or(|c| c.metadata.deletion_timestamp.is_some()));
    assert!(
        Api::<NamespaceRestore>::namespaced(hub.clone(), "multicluster-system")
            .get_opt(&restore)
            .await
            .unwrap()
            .is_none()
    );
}

/// A snapshot of member-1's example application on a directory location, and what it needs to
/// stay alive while the test runs.
struct TakenSnapshot {
    name: String,
    /// Where the location keeps its archives.
    archives: std::path::PathBuf,
    _directory: tempfile::TempDir,
    _snapshotter: PlayedSnapshotter,
}

async fn snapshot_of_the_application(pg: &Playground) -> TakenSnapshot {
    let (ns, snapshotter) = source_application(pg).await;
    let directory = tempfile::tempdir().unwrap();
    let (location, archives) =
        multicluster_tests::minio::add_directory_location(pg, directory.path());
    let name = unique_name("shop-snap");
    run_ok(&mut pg.snapshot_of_member_1(&ns, &location, &name, &[]));
    TakenSnapshot {
        name,
        archives,
        _directory: directory,
        _snapshotter: snapshotter,
    }
}

/// Requires that the command failed and that its stderr says each of `says`; returns stderr.
fn refused(out: &std::process::Output, says: &[&str]) -> String {
    let stderr = stderr(out);
    assert!(!out.status.success(), "admitted: {stderr}");
    for said in says {
        assert!(
            stderr.contains(said),
            "stderr does not say {said:?}:\n{stderr}"
        );
    }
    stderr
}

/// `kubectl multicluster restore create SNAPSHOT --to-cluster member-2 --to-namespace TARGET`.
fn restore_to_member_2(pg: &Playground, snapshot: &str, target: &str) -> std::process::Output {
    run(&mut pg.multicluster(&[
        "restore",
        "create",
        snapshot,
        "--to-cluster",
        "member-2",
        "--to-namespace",
        target,
    ]))
}

// Multi-threaded: the played snapshotter runs while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_of_a_played_csi_snapshot_onto_conflicting_namespaces_are_refused_on_kubectl_apply_naming_each_conflict_and_nothing_is_written()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let taken = snapshot_of_the_application(pg).await;
    let snapshot = &taken.name;

    // member-2's shop-v13 runs cassandra at another version; shop-api runs an unrelated app.
    let examples = multicluster_tests::examples::dir().join("cassandra");
    let cassandra = std::fs::read_to_string(examples.join("cassandra-statefulset.yaml")).unwrap();
    let older = multicluster_tests::fresh_namespace(&m2, "shop-v13")
        .await
        .unwrap();
    succeeded(pg.apply(
        "member-2",
        &cassandra.replace("cassandra:v14", "cassandra:v13"),
        &["-n", &older],
    ));
    let unrelated = multicluster_tests::fresh_namespace(&m2, "shop-api")
        .await
        .unwrap();
    let api: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"app.kubernetes.io/name": "api"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "api", "image": "example.com/api:2"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(m2.clone(), &unrelated)
        .create(&PostParams::default(), &api)
        .await
        .unwrap();

    let apply_restore = |target: &str| {
        pg.apply(
            "hub",
            &restore_manifest(&unique_name("r"), snapshot, target),
            &[],
        )
    };
    refused(
        &apply_restore(&older),
        &[&format!(
            "StatefulSet cassandra: container cassandra: image gcr.io/google-samples/cassandra:v13 in {older}, gcr.io/google-samples/cassandra:v14 in the snapshot"
        )],
    );
    refused(
        &apply_restore(&unrelated),
        &[&format!(
            "Deployment api: in {unrelated} and not in the snapshot"
        )],
    );
    // The CLI says the same, and that nothing was written.
    refused(
        &restore_to_member_2(pg, snapshot, &unrelated),
        &["restore refused, nothing was written", "Deployment api"],
    );
    // Nothing was written: no NamespaceRestore exists, the targets hold what they held.
    let restores = Api::<NamespaceRestore>::namespaced(hub.clone(), "multicluster-system")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        !restores
            .items
            .iter()
            .any(|r| r.spec.target_namespace == older || r.spec.target_namespace == unrelated),
        "a refused restore was stored"
    );
    for target in [&older, &unrelated] {
        let claims = Api::<PersistentVolumeClaim>::namespaced(m2.clone(), target)
            .list(&Default::default())
            .await
            .unwrap();
        assert!(claims.items.is_empty(), "claims written to {target}");
        let services = Api::<k8s_openapi::api::core::v1::Service>::namespaced(m2.clone(), target)
            .list(&Default::default())
            .await
            .unwrap();
        assert!(services.items.is_empty(), "services written to {target}");
    }
}

#[tokio::test]
async fn a_restore_of_a_snapshot_that_does_not_exist_is_refused_on_kubectl_apply_saying_so() {
    let pg = playground();
    pg.join_members();
    refused(
        &pg.apply(
            "hub",
            &restore_manifest(&unique_name("r"), "no-such-snapshot", &unique_name("x")),
            &[],
        ),
        &["NamespaceSnapshot no-such-snapshot does not exist"],
    );
}

/// The archive altered on the storage (one byte): admitted (the target is empty), then refused by
/// the hub server with a checksum error before it writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_archive_altered_on_the_storage_is_refused_by_its_checksum_before_any_write()
 {
    let pg = playground();
    pg.join_members();
    let m2 = pg.client("member-2").await.unwrap();
    let snapshot = snapshot_of_the_application(pg).await;
    let file = snapshot
        .archives
        .join(multicluster_core::snapshot::location::archive_key(
            "multicluster-system",
            &snapshot.name,
        ));
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let fresh = unique_name("shop-fresh");
    refused(
        &restore_to_member_2(pg, &snapshot.name, &fresh),
        &["checksum", "nothing was written"],
    );
    assert!(
        !namespace_exists(&m2, &fresh).await,
        "namespace {fresh} was created"
    );
}

/// The admission check reads the target's ConfigMaps as protobuf; the snapshot recorded their
/// digests from JSON. Restoring a namespace onto itself (a server-side dry run, which calls the
/// webhook and writes nothing) is admitted only if both reads agree on every ConfigMap, text and
/// binary; after two of them change, exactly those two are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_read_as_protobuf_at_admission_digest_as_the_snapshot_read_them_and_each_changed_one_is_named()
 {
    let pg = playground();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let ns = multicluster_tests::fresh_namespace(&m1, "settings")
        .await
        .unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(m1.clone(), &ns);
    for object in [
        json!({"metadata": {"name": "text"}, "data": {"b": "2", "a": "line\n\"quoted\" é"}}),
        json!({"metadata": {"name": "binary"}, "binaryData": {"blob": "AJ+Slv8="}}),
        json!({"metadata": {"name": "both"}, "data": {"a": "1"}, "binaryData": {"blob": "eA=="}}),
        json!({"metadata": {"name": "empty"}}),
    ] {
        config_maps
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (location, _) = multicluster_tests::minio::add_directory_location(pg, dir.path());
    let snapshot = unique_name("settings-snap");
    run_ok(&mut pg.snapshot_of_member_1(&ns, &location, &snapshot, &[]));
    let onto_itself = format!(
        "apiVersion: multicluster.dev/v1alpha1\nkind: NamespaceRestore\n\
         metadata: {{name: {name}, namespace: multicluster-system}}\n\
         spec: {{snapshot: {snapshot}, targetCluster: member-1, targetNamespace: {ns}}}\n",
        name = unique_name("r")
    );
    let out = pg.apply("hub", &onto_itself, &["--dry-run=server"]);
    assert!(
        out.status.success(),
        "the unchanged namespace was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (name, patch) in [
        ("binary", json!({"binaryData": {"blob": "AJ+Slv4="}})),
        ("text", json!({"data": {"b": "3"}})),
    ] {
        config_maps
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .unwrap();
    }
    let out = pg.apply("hub", &onto_itself, &["--dry-run=server"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted: {stderr}");
    for changed in [
        "ConfigMap binary: data sha256:",
        "ConfigMap text: data sha256:",
    ] {
        assert!(stderr.contains(changed), "{changed} not named: {stderr}");
    }
    for unchanged in ["ConfigMap both", "ConfigMap empty"] {
        assert!(!stderr.contains(unchanged), "{unchanged} named: {stderr}");
    }
}

// Multi-threaded: the played controllers run while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_with_group_snapshots_played_by_a_stand_in_controller_is_cut_in_one_volume_group_snapshot_and_restored_from_its_handles_with_a_transform()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    csi::install_crds(pg, "member-1");
    csi::install_crds(pg, "member-2");
    csi::group_snapshot_class(&m1, "played-group").await;
    let ns = multicluster_tests::fresh_namespace(&m1, "grouped")
        .await
        .unwrap();
    multicluster_tests::examples::build_application(pg, "member-1", &ns);
    for claim in CLAIMS {
        csi::play_bound_claim_of(&m1, &ns, claim, "fast", csi::GROUP_DRIVER).await;
    }
    let group_snapshotter = csi::PlayedGroupSnapshotter::start(m1.clone(), &ns);
    let dir = tempfile::tempdir().unwrap();
    let (location, _) = multicluster_tests::minio::add_directory_location(pg, dir.path());
    let snapshot = unique_name("grouped-snap");
    let out =
        run(&mut pg.snapshot_of_member_1(&ns, &location, &snapshot, &["--quiesce", "scale-down"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("in 1 volume group snapshot(s)"), "{stderr}");

    // One VolumeGroupSnapshot selecting exactly the three claims, cut while cassandra was at 0;
    // no single VolumeSnapshot; the claims' selector labels removed and cassandra back at 3.
    let cuts = group_snapshotter.cuts();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    let mut matched = cuts[0].claims.clone();
    matched.sort();
    assert_eq!(matched, CLAIMS);
    assert_eq!(
        cuts[0].replicas.get("StatefulSet/cassandra"),
        Some(&0),
        "{:?}",
        cuts[0].replicas
    );
    let singles: Api<DynamicObject> =
        Api::namespaced_with(m1.clone(), &ns, &csi::resource("VolumeSnapshot"));
    let ours = singles
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("multicluster.dev/snapshot={snapshot}")),
        )
        .await
        .unwrap();
    assert!(ours.items.is_empty(), "single VolumeSnapshots were taken");
    for claim in CLAIMS {
        let c = Api::<PersistentVolumeClaim>::namespaced(m1.clone(), &ns)
            .get(claim)
            .await
            .unwrap();
        assert!(
            !c.metadata
                .labels
                .unwrap_or_default()
                .contains_key("multicluster.dev/snapshot-group"),
            "{claim} keeps the group label"
        );
    }
    let sts = Api::<StatefulSet>::namespaced(m1.clone(), &ns)
        .get("cassandra")
        .await
        .unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(3));
    let taken: NamespaceSnapshot = Api::namespaced(hub.clone(), "multicluster-system")
        .get(&snapshot)
        .await
        .unwrap();
    for v in taken.status.unwrap().volumes {
        assert_eq!(
            v.snapshot_handle,
            Some(format!("group-snap-{}", v.claim)),
            "{v:?}"
        );
        assert_eq!(
            v.volume_snapshot.as_deref(),
            Some(cuts[0].group.as_str()),
            "{v:?}"
        );
    }

    // Restored into member-2 from the group's handles, with a transform: cassandra at 1 replica.
    let target = unique_name("grouped-restored");
    let provisioner = PlayedProvisioner::start(m2.clone(), &target);
    let restore = unique_name("r");
    let transforms = dir.path().join("transforms.yaml");
    std::fs::write(
        &transforms,
        "- target: {kind: StatefulSet, name: cassandra}\n  jsonPatch: [{op: replace, path: /spec/replicas, value: 1}]\n",
    )
    .unwrap();
    run_ok(&mut pg.multicluster(&[
        "restore",
        "create",
        &snapshot,
        "--to-cluster",
        "member-2",
        "--to-namespace",
        &target,
        "--name",
        &restore,
        "--transforms",
        &transforms.display().to_string(),
    ]));
    let restored = Api::<StatefulSet>::namespaced(m2.clone(), &target)
        .get("cassandra")
        .await
        .unwrap();
    assert_eq!(
        restored.spec.unwrap().replicas,
        Some(1),
        "the transform applied"
    );
    let frontend = Api::<Deployment>::namespaced(m2.clone(), &target)
        .get("frontend")
        .await
        .unwrap();
    assert_eq!(
        frontend.spec.unwrap().replicas,
        Some(3),
        "and only to its target"
    );
    let contents: Api<DynamicObject> =
        Api::all_with(m2.clone(), &csi::resource("VolumeSnapshotContent"));
    for claim in CLAIMS {
        let content = contents
            .get(&format!("{target}-{restore}-{claim}"))
            .await
            .unwrap();
        assert_eq!(
            content.data["spec"]["source"]["snapshotHandle"],
            json!(format!("group-snap-{claim}"))
        );
        assert_eq!(content.data["spec"]["driver"], csi::GROUP_DRIVER);
        let binding = provisioner.bindings().get(claim).cloned().unwrap();
        assert_eq!(
            binding.data_source,
            Some(format!("VolumeSnapshot/{restore}-{claim}"))
        );
        assert_eq!(binding.workloads, 0);
    }
}
