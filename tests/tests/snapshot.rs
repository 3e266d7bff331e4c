//! Namespace snapshots end to end: storage locations checked by the real hub server against a real
//! S3 server (MinIO over TLS, started by the test support) and a directory; snapshots of an
//! application built from the Kubernetes project's examples (guestbook, cassandra) taken by the real
//! hub server from a real member and saved to both.
//!
//! Played here (the playground runs no controllers and no CSI driver): the provisioner (claims
//! bound to CSI volumes), the CSI snapshotter (`multicluster_tests::csi::PlayedSnapshotter`
//! answers each VolumeSnapshot with a content and handle), and the objects controllers would make
//! (a Pod owned by a ReplicaSet, an Event).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use kube::Api;
use kube::api::DynamicObject;
use multicluster_core::api::{NamespaceSnapshot, StorageLocation};
use multicluster_core::snapshot::archive;
use multicluster_tests::minio::Minio;
use multicluster_tests::{playground, run, run_ok, unique_name};
use serde_json::json;

#[tokio::test]
async fn storage_locations_are_checked_by_the_hub_server_on_minio_and_a_directory_and_failures_say_what_failed()
 {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(&dir.path().join("minio"), "snapshots");
    let ca = dir.path().join("minio-ca.pem");
    std::fs::write(&ca, &minio.ca_pem).unwrap();
    let good = unique_name("minio");
    multicluster_tests::minio::credentials_secret(
        &hub,
        &good,
        &minio.access_key,
        &minio.secret_key,
    )
    .await;
    let s3_args = |name: &str, secret: &str, with_ca: bool| {
        let mut args = vec![
            "snapshot".to_owned(),
            "location".to_owned(),
            "add".to_owned(),
            name.to_owned(),
            "--bucket".to_owned(),
            minio.bucket.clone(),
            "--endpoint".to_owned(),
            minio.endpoint.clone(),
            "--force-path-style".to_owned(),
            "--prefix".to_owned(),
            "fleet".to_owned(),
            "--secret".to_owned(),
            secret.to_owned(),
        ];
        if with_ca {
            args.extend(["--ca-file".to_owned(), ca.display().to_string()]);
        }
        args
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");

    // Good credentials and the CA: available, and the probe object is gone again.
    let name = unique_name("s3");
    let args = s3_args(&name, &good, true);
    let out = run_ok(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(out.contains("True"), "{}: {out}", strs(&args));
    assert!(
        out.contains(&format!("s3://{}/fleet/", minio.bucket)),
        "{out}"
    );
    assert!(
        minio.object_keys().is_empty(),
        "probe left behind: {:?}",
        minio.object_keys()
    );

    // Wrong secret key: not available, exit 1, the store's refusal named.
    let wrong = unique_name("wrong");
    multicluster_tests::minio::credentials_secret(&hub, &wrong, &minio.access_key, "not-the-key")
        .await;
    let args = s3_args(&unique_name("s3-wrong"), &wrong, true);
    let out = run(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("writing the probe object"), "{stderr}");
    assert!(
        stderr.contains("SignatureDoesNotMatch") || stderr.contains("403"),
        "{stderr}"
    );

    // Without the CA the TLS handshake fails: the endpoint's certificate is really checked.
    let args = s3_args(&unique_name("s3-no-ca"), &good, false);
    let out = run(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // A directory: available; a missing one: not, saying so.
    let snapshots_dir = dir.path().join("snapshots");
    std::fs::create_dir(&snapshots_dir).unwrap();
    let fs_name = unique_name("fs");
    let path = snapshots_dir.display().to_string();
    run_ok(&mut pg.multicluster(&["snapshot", "location", "add", &fs_name, "--path", &path]));
    let missing = dir.path().join("missing").display().to_string();
    let out = run(&mut pg.multicluster(&[
        "snapshot",
        "location",
        "add",
        &unique_name("fs-missing"),
        "--path",
        &missing,
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("directory {missing} does not exist")),
        "{stderr}"
    );

    // `check` asks again and answers; `list -o json` shows the verdicts.
    let out = run_ok(&mut pg.multicluster(&["snapshot", "location", "check", &name]));
    assert!(out.contains("True"), "{out}");
    let list: serde_json::Value = serde_json::from_str(&run_ok(
        &mut pg.multicluster(&["snapshot", "location", "list", "-o", "json"]),
    ))
    .unwrap();
    let available = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .map(|r| r["available"].clone())
    };
    assert_eq!(available(&name), Some(json!("True")));
    assert_eq!(available(&fs_name), Some(json!("True")));
    let out = run(&mut pg.multicluster(&["snapshot", "location", "check", "no-such-location"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no StorageLocation no-such-location"));
}

async fn replicas(member: &kube::Client, ns: &str, kind: &str, name: &str) -> (i64, bool) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        member.clone(),
        ns,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("apps", "v1", kind)),
    );
    let w = api.get(name).await.unwrap();
    let annotated = w
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(multicluster_core::keys::QUIESCED_BY));
    (w.data["spec"]["replicas"].as_i64().unwrap(), annotated)
}

// Multi-threaded: the played snapshotter runs while the test blocks on `kubectl multicluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_snapshot_with_a_played_csi_snapshotter_quiesces_all_volumes_at_once_saves_every_captured_kind_to_minio_and_a_directory_and_always_resumes()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    multicluster_tests::csi::install_crds(pg, "member-1");
    multicluster_tests::csi::snapshot_class(&m1, "played-hostpath").await;
    let ns = multicluster_tests::fresh_namespace(&m1, "shop")
        .await
        .unwrap();
    multicluster_tests::examples::build_application(pg, "member-1", &ns);
    let claims: Vec<String> = (0..3)
        .map(|i| format!("cassandra-data-cassandra-{i}"))
        .collect();
    for claim in &claims {
        multicluster_tests::csi::play_bound_claim(&m1, &ns, claim, "fast").await;
    }
    let snapshotter =
        multicluster_tests::csi::PlayedSnapshotter::start(m1.clone(), &ns, claims.len());

    // Locations: MinIO over TLS and a directory.
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(&dir.path().join("minio"), "snapshots");
    let s3 = minio.add_location(pg, &hub, dir.path()).await;
    let (fs, fs_dir) = multicluster_tests::minio::add_directory_location(pg, dir.path());

    // ScaleDown to MinIO. Snapshots only: this playground has no node to run the data mover's
    // pods (`volume_data.rs` exports on real nodes).
    let name = unique_name("shop-snap");
    let out = run(&mut pg.snapshot_of_member_1(
        &ns,
        &s3,
        &name,
        &[
            "--quiesce",
            "scale-down",
            "--volume-data",
            "snapshots-only",
            "-o",
            "json",
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Progress was followed phase by phase.
    for phase in [
        "Discovering",
        "Quiescing",
        "Snapshotting",
        "Resuming",
        "Saving",
        "Completed",
    ] {
        assert!(
            stderr.contains(&format!("{phase}:")),
            "no {phase} in:\n{stderr}"
        );
    }
    let snapshot: NamespaceSnapshot = serde_json::from_slice(&out.stdout).unwrap();
    let status = snapshot.status.clone().unwrap();

    // One barrier: all three volume snapshots existed before any was cut, and at that moment
    // cassandra (the only workload mounting the claims) was at 0 and the rest untouched.
    let cut = snapshotter
        .cut(&name)
        .expect("the played snapshotter saw the snapshot");
    assert_eq!(cut.snapshots, 3);
    assert_eq!(
        cut.replicas.get("StatefulSet/cassandra"),
        Some(&0),
        "{:?}",
        cut.replicas
    );
    assert_eq!(
        cut.replicas.get("Deployment/frontend"),
        Some(&3),
        "{:?}",
        cut.replicas
    );
    // And put back afterwards, with no trace of the quiesce; the Deployment at 0 stays at 0.
    assert_eq!(
        replicas(&m1, &ns, "StatefulSet", "cassandra").await,
        (3, false)
    );
    assert_eq!(
        replicas(&m1, &ns, "Deployment", "maintenance").await,
        (0, false)
    );

    // The status: every claim's snapshot ready with its handle, the inventory, the archive.
    assert_eq!(status.volumes.len(), 3);
    for v in &status.volumes {
        assert!(v.ready, "{v:?}");
        assert!(
            v.snapshot_handle
                .as_deref()
                .unwrap_or_default()
                .starts_with("snap-"),
            "{v:?}"
        );
        assert_eq!(v.driver.as_deref(), Some(multicluster_tests::csi::DRIVER));
    }
    let apps: Vec<String> = status
        .inventory
        .iter()
        .map(|a| format!("{}/{}", a.kind, a.name))
        .collect();
    for app in [
        "Deployment/frontend",
        "Deployment/redis-master",
        "StatefulSet/cassandra",
        "CronJob/nightly-report",
        "Deployment/maintenance",
    ] {
        assert!(apps.contains(&app.to_owned()), "{app} not in {apps:?}");
    }
    let archive_ref = status.archive.clone().unwrap();
    assert!(
        archive_ref
            .url
            .starts_with(&format!("s3://{}/", minio.bucket)),
        "{}",
        archive_ref.url
    );

    // The archive in MinIO, read back through the hub server's storage code: its checksum is the
    // recorded one; every captured kind is in it, stripped; derived and ephemeral ones are not.
    let location: StorageLocation = Api::namespaced(hub.clone(), "multicluster-system")
        .get(&s3)
        .await
        .unwrap();
    let store = multicluster_webhook::snapshot::storage::open(&hub, &location)
        .await
        .unwrap();
    let key = multicluster_core::snapshot::location::archive_key("multicluster-system", &name);
    let bytes = object_store::ObjectStoreExt::get(
        store.as_ref(),
        &object_store::path::Path::from(key.as_str()),
    )
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let read = archive::read(&bytes, Some(&archive_ref.checksum)).unwrap();
    let kinds: std::collections::BTreeSet<String> = read
        .manifest
        .resources
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    for expected in [
        "Deployment/frontend",
        "Deployment/redis-master",
        "Deployment/redis-replica",
        "Deployment/maintenance",
        "Service/frontend",
        "Service/redis-master",
        "Service/redis-replica",
        "Service/cassandra",
        "StatefulSet/cassandra",
        "CronJob/nightly-report",
        "Secret/redis-password",
        "ConfigMap/frontend-config",
        "PersistentVolumeClaim/cassandra-data-cassandra-0",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} not captured: {kinds:?}"
        );
    }
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("Pod/") || k.starts_with("Event/")),
        "{kinds:?}"
    );
    let left_out: Vec<String> = read
        .manifest
        .left_out
        .iter()
        .map(|l| format!("{} {:?}: {}", l.kind, l.name, l.reason))
        .collect();
    assert!(
        left_out
            .iter()
            .any(|l| l.starts_with("Pod Some(\"frontend-played-pod\")")
                && l.contains("owned by ReplicaSet")),
        "{left_out:?}"
    );
    assert!(
        left_out.iter().any(|l| l.starts_with("Event None")),
        "{left_out:?}"
    );
    assert_eq!(read.manifest.volume_snapshots.len(), 3);
    assert_eq!(read.manifest.source_namespace, ns);
    for r in &read.resources {
        assert!(
            r["metadata"]["uid"].is_null() && r["metadata"]["resourceVersion"].is_null(),
            "{r}"
        );
        assert!(r["status"].is_null(), "{r}");
    }
    let claim = read
        .resources
        .iter()
        .find(|r| r["kind"] == "PersistentVolumeClaim")
        .unwrap();
    assert!(claim["spec"]["volumeName"].is_null(), "{claim}");
    let sts = read
        .resources
        .iter()
        .find(|r| r["kind"] == "StatefulSet")
        .unwrap();
    assert_eq!(
        sts["spec"]["replicas"], 3,
        "captured at its scale, not the quiesced 0"
    );

    // Crash-consistent to the directory: the archive file is there with the recorded checksum.
    let name2 = unique_name("shop-fs");
    run_ok(&mut pg.snapshot_of_member_1(&ns, &fs, &name2, &[]));
    let snapshot2: NamespaceSnapshot = Api::namespaced(hub.clone(), "multicluster-system")
        .get(&name2)
        .await
        .unwrap();
    let file = fs_dir.join(multicluster_core::snapshot::location::archive_key(
        "multicluster-system",
        &name2,
    ));
    let read2 = archive::read(
        &std::fs::read(&file).unwrap(),
        Some(&snapshot2.status.unwrap().archive.unwrap().checksum),
    )
    .unwrap();
    assert_eq!(
        read2.manifest.resources.len(),
        read.manifest.resources.len()
    );

    // The CSI driver fails a snapshot mid-way: Failed, never Completed; cassandra put back; the
    // failed snapshot's VolumeSnapshots removed.
    let broken = unique_name("shop-broken");
    let out = run(&mut pg.snapshot_of_member_1(
        &ns,
        &s3,
        &broken,
        &["--quiesce", "scale-down", "--volume-data", "snapshots-only"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the CSI driver failed the VolumeSnapshot")
            && stderr.contains("storage system refused"),
        "{stderr}"
    );
    assert_eq!(
        snapshotter
            .cut(&broken)
            .unwrap()
            .replicas
            .get("StatefulSet/cassandra"),
        Some(&0)
    );
    assert_eq!(
        replicas(&m1, &ns, "StatefulSet", "cassandra").await,
        (3, false)
    );
    let left: Api<DynamicObject> = Api::namespaced_with(
        m1.clone(),
        &ns,
        &multicluster_tests::csi::resource("VolumeSnapshot"),
    );
    let remaining = left
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("multicluster.dev/snapshot={broken}")),
        )
        .await
        .unwrap();
    assert!(
        remaining.items.is_empty(),
        "{} volume snapshots of the failed snapshot remain",
        remaining.items.len()
    );

    // show, list, delete (which removes the archive from MinIO).
    let shown = run_ok(&mut pg.multicluster(&["snapshot", "show", &name]));
    assert!(
        shown.contains("Phase:      Completed") && shown.contains("StatefulSet cassandra"),
        "{shown}"
    );
    let list = run_ok(&mut pg.multicluster(&["snapshot", "list"]));
    assert!(list.contains(&broken) && list.contains("Failed"), "{list}");
    run_ok(&mut pg.multicluster(&["snapshot", "delete", &name]));
    assert!(
        !minio
            .object_keys()
            .iter()
            .any(|k| k.ends_with(&format!("{name}.tar.gz"))),
        "{:?}",
        minio.object_keys()
    );
}
