//! A namespace's volume data leaves its member and comes back on another one (issue 20), on the
//! playground with real nodes: nothing here is played. A StatefulSet's real pod writes files on a
//! claim the real external-provisioner made through the playground CSI driver; the snapshot's
//! volume snapshots are cut by the real csi-snapshotter; the hub server's mover pods run on
//! member-1's node, read a claim made from the volume snapshot and upload to a real MinIO (listening
//! on the playground's bridge, which the pods reach); the restore into member-2 fills a new claim on
//! member-2's node (another node's storage) with a mover pod there before the StatefulSet exists,
//! and the restored pod reads every file back against the checksums written at the source.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};
use multicluster_core::api::{NamespaceSnapshot, SnapshotPhase};
use multicluster_tests::minio::Minio;
use multicluster_tests::{
    Playground, eventually, playground_with_nodes, run, run_ok, snapshot_status, unique_name,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

const IMAGE: &str = kubectl_multicluster::local::image::IMAGE;

/// A StatefulSet whose pod, on its first start, writes about 200 MB to its claim: 2,000 small
/// files, four large random ones, a sparse file of 1 GiB with two MiB of data, a symlink, a hard
/// link, a file with another owner and mode, and `SUMS`, the SHA-256 of every file. Later starts
/// (the restored pod) write nothing; the pod is ready once `SUMS` is there.
fn writer(ns: &str) -> String {
    let script = r#"set -e
cd /data
if [ ! -f SUMS ]; then
  mkdir -p small big
  i=0
  while [ $i -lt 2000 ]; do
    head -c $((i * 37 % 20000 + 100)) /dev/urandom > small/$i; i=$((i + 1))
  done
  for n in 1 2 3 4; do head -c 45000000 /dev/urandom > big/$n.bin; done
  dd if=/dev/urandom of=sparse bs=1048576 count=1 seek=100 2>/dev/null
  dd if=/dev/urandom of=sparse bs=1048576 count=1 seek=1023 conv=notrunc 2>/dev/null
  ln -s big/1.bin current
  ln big/2.bin big/2.link
  echo secret > owned; chown 1234:5678 owned; chmod 640 owned
  find . -type f ! -name 'SUMS*' | sort | xargs sha256sum > SUMS.tmp && mv SUMS.tmp SUMS
fi
exec sleep 3600"#;
    stateful_set(ns, script, Some("/data/SUMS"), "2Gi")
}

fn in_pod(pg: &Playground, context: &str, ns: &str, script: &str) -> String {
    run_ok(&mut pg.exec_in(context, ns, "writer-0", &["sh", "-c", script]))
}

fn rollout(pg: &Playground, context: &str, ns: &str) {
    run_ok(pg.kubectl().args([
        "--context",
        context,
        "-n",
        ns,
        "rollout",
        "status",
        "statefulset/writer",
        "--timeout=300s",
    ]));
}

/// The `writer` StatefulSet of namespace `ns`: one pod running `script` (a shell script) with a
/// claim at `/data`; ready once `ready_file` exists (at once without one).
fn stateful_set(ns: &str, script: &str, ready_file: Option<&str>, storage: &str) -> String {
    let script = script.replace('\n', "\n          ");
    let probe = ready_file
        .map(|f| {
            format!("readinessProbe: {{exec: {{command: [test, -f, {f}]}}, periodSeconds: 1}}")
        })
        .unwrap_or_default();
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: writer, namespace: {ns}}}
spec:
  replicas: 1
  serviceName: writer
  selector: {{matchLabels: {{app: writer}}}}
  template:
    metadata: {{labels: {{app: writer}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: writer
        image: {IMAGE}
        imagePullPolicy: Never
        command:
        - sh
        - -c
        - |
          {script}
        {probe}
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: {storage}}}}}}}
"#
    )
}

/// Nothing of the data mover stays in `ns`: no pod, no Secret, no claim but `data-writer-0`.
async fn no_mover_objects_left(member: &Client, ns: &str) {
    eventually(
        "the mover's pods, Secrets and temporary claims are removed",
        Duration::from_secs(60),
        async || {
            let params = ListParams::default().labels("app.kubernetes.io/component=data-mover");
            let pods = Api::<Pod>::namespaced(member.clone(), ns)
                .list_metadata(&params)
                .await
                .unwrap()
                .items
                .len();
            let secrets = Api::<Secret>::namespaced(member.clone(), ns)
                .list_metadata(&params)
                .await
                .unwrap()
                .items
                .len();
            let claims: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(member.clone(), ns)
                .list_metadata(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .filter(|c| c != "data-writer-0")
                .collect();
            if pods + secrets == 0 && claims.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{pods} pod(s), {secrets} Secret(s), claims {claims:?}"
                ))
            }
        },
    )
    .await;
}

fn snapshot(pg: &Playground, ns: &str, location: &str) -> NamespaceSnapshot {
    let name = unique_name("data-snap");
    let out = run(&mut pg.snapshot_of_member_1(
        ns,
        location,
        &name,
        &["--quiesce", "scale-down", "-o", "json"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Exporting:"),
        "the export was followed:\n{stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volumes_files_go_to_minio_and_fill_a_claim_on_another_members_node_where_the_restored_pod_reads_every_checksum_and_a_corrupt_chunk_fails_the_restore_naming_the_file()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let gateway = pg
        .state
        .network
        .as_ref()
        .expect("a playground with nodes has a network")
        .gateway;
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start_on(&dir.path().join("minio"), "volumes", gateway.into());
    let location = minio.add_location(pg, &hub, dir.path()).await;

    let ns = multicluster_tests::fresh_namespace(&m1, "data")
        .await
        .unwrap();
    let applied = pg.apply("member-1", &writer(&ns), &[]);
    assert!(applied.status.success(), "{applied:?}");
    rollout(pg, "member-1", &ns);
    let sums = in_pod(pg, "member-1", &ns, "cat /data/SUMS");
    // The small files, the large ones, the hard link, the sparse file and the owned one.
    assert_eq!(sums.lines().count(), 2000 + 4 + 1 + 1 + 1, "{sums}");

    // Snapshot: the files leave member-1 for MinIO.
    let first = snapshot(pg, &ns, &location);
    let status = first.status.clone().unwrap();
    assert_eq!(status.phase, SnapshotPhase::Completed);
    let volume = &status.volumes[0];
    let data = volume.data.clone().expect("the volume's data was exported");
    assert!(data.done, "{data:?}");
    let index = data.index.clone().expect("an index digest");
    assert!(
        data.bytes_total > 190_000_000,
        "about 200 MB of file data: {data:?}"
    );
    assert!(
        data.bytes_transferred > data.bytes_total / 2,
        "a first export sends the chunks: {data:?}"
    );
    assert!(
        minio
            .object_keys()
            .contains(&format!("data/indexes/{index}")),
        "the index is in the bucket"
    );
    println!(
        "first snapshot: {} bytes in {} files, {} sent",
        data.bytes_total, data.files, data.bytes_transferred
    );
    no_mover_objects_left(&m1, &ns).await;
    rollout(pg, "member-1", &ns);

    // Restore into member-2, whose node has storage of its own: the claim is filled from MinIO
    // before the StatefulSet is written.
    let target = unique_name("data-restored");
    let restore = unique_name("r");
    let done = pg.restore_followed(
        &first.metadata.name.clone().unwrap(),
        "member-2",
        &target,
        &restore,
    );
    let restored = done.status.unwrap();
    assert!(restored.failures.is_empty(), "{:?}", restored.failures);
    let filled = &restored.volumes;
    assert_eq!(filled.len(), 1, "{filled:?}");
    assert_eq!(filled[0].claim, "data-writer-0");
    assert!(filled[0].data.done, "{filled:?}");
    assert_eq!(filled[0].data.bytes_done, data.bytes_total);
    rollout(pg, "member-2", &target);
    let check = in_pod(
        pg,
        "member-2",
        &target,
        "cd /data && sha256sum -c SUMS | grep -vc ': OK$' || true; \
         stat -c '%u:%g %a' owned; readlink current; \
         stat -c '%i' big/2.bin big/2.link | uniq | wc -l; du -k sparse | cut -f1",
    );
    let lines: Vec<&str> = check.lines().collect();
    assert_eq!(lines[0], "0", "every file matches its checksum: {check}");
    assert_eq!(lines[1], "1234:5678 640", "owner and mode kept: {check}");
    assert_eq!(lines[2], "big/1.bin", "the symlink kept: {check}");
    assert_eq!(lines[3], "1", "the hard link is one file: {check}");
    let sparse_kib: u64 = lines[4].trim().parse().unwrap();
    assert!(
        sparse_kib < 64 * 1024,
        "1 GiB with 2 MiB of data stays sparse: {sparse_kib} KiB allocated"
    );
    no_mover_objects_left(&m2, &target).await;

    // One file changed: the second snapshot sends about that file's changed chunks.
    in_pod(
        pg,
        "member-1",
        &ns,
        "dd if=/dev/urandom of=/data/big/3.bin bs=1048576 count=1 seek=20 conv=notrunc 2>/dev/null",
    );
    let second = snapshot(pg, &ns, &location);
    let again = second.status.unwrap().volumes[0].data.clone().unwrap();
    println!(
        "second snapshot after a 1 MiB change: {} of {} bytes sent",
        again.bytes_transferred, again.bytes_total
    );
    assert!(
        again.bytes_transferred < data.bytes_transferred / 10,
        "only the chunks around the change move: {again:?}"
    );

    // A byte flipped in one chunk of big/4.bin: a restore of the first snapshot fails naming the
    // volume and the file, and no workload is written.
    let store = minio.store();
    let volume_index = multicluster_webhook::snapshot::mover::read_index(store.as_ref(), &index)
        .await
        .unwrap();
    let chunk = volume_index
        .entries
        .iter()
        .find(|e| e.path == "big/4.bin")
        .and_then(|e| match &e.kind {
            multicluster_core::snapshot::data::EntryKind::File { chunks, .. } => {
                chunks.first().cloned()
            }
            _ => None,
        })
        .expect("big/4.bin has chunks");
    let key = StorePath::from(multicluster_core::snapshot::data::chunk_key(&chunk.digest));
    let mut bytes = store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    store.put(&key, PutPayload::from(bytes)).await.unwrap();
    let broken = unique_name("data-broken");
    let out = run(&mut pg.multicluster(&[
        "restore",
        "create",
        &first.metadata.name.clone().unwrap(),
        "--to-cluster",
        "member-2",
        "--to-namespace",
        &broken,
        "--name",
        &unique_name("r"),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a corrupt chunk must fail the restore"
    );
    assert!(
        stderr.contains("volume data-writer-0") && stderr.contains("file big/4.bin"),
        "the volume and the file are named:\n{stderr}"
    );
    assert!(
        Api::<StatefulSet>::namespaced(m2.clone(), &broken)
            .get_opt("writer")
            .await
            .unwrap()
            .is_none(),
        "no workload was written"
    );
    no_mover_objects_left(&m2, &broken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minio_stopped_in_the_middle_of_an_export_fails_the_snapshot_leaves_nothing_behind_and_the_next_snapshot_sends_only_what_is_missing()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let gateway = pg.state.network.as_ref().unwrap().gateway;
    let dir = tempfile::tempdir().unwrap();
    let minio_dir = dir.path().join("minio");
    let minio = Minio::start_on(&minio_dir, "volumes", gateway.into());
    let location = minio.add_location(pg, &hub, dir.path()).await;
    let ns = multicluster_tests::fresh_namespace(&m1, "outage")
        .await
        .unwrap();
    let applied = pg.apply("member-1", &writer(&ns), &[]);
    assert!(applied.status.success(), "{applied:?}");
    rollout(pg, "member-1", &ns);

    // Stop MinIO once the export has sent some of the chunks.
    let name = unique_name("outage-snap");
    run_ok(&mut pg.snapshot_of_member_1(&ns, &location, &name, &["--no-wait"]));
    eventually(
        "the export has sent some chunks",
        Duration::from_secs(300),
        async || {
            let chunks = minio
                .object_keys()
                .iter()
                .filter(|k| k.starts_with("data/chunks/"))
                .count();
            if chunks >= 20 {
                Ok(chunks)
            } else {
                Err(chunks)
            }
        },
    )
    .await;
    drop(minio);
    let failed = eventually("the snapshot fails", Duration::from_secs(300), async || {
        let status = snapshot_status(&hub, &name).await;
        match status.phase {
            SnapshotPhase::Failed => Ok(status),
            SnapshotPhase::Completed => panic!("completed without its location: {status:?}"),
            phase => Err(format!("{phase:?}: {:?}", status.message)),
        }
    })
    .await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains("volume data-writer-0"),
        "the volume is named: {message}"
    );
    assert!(failed.archive.is_none(), "no archive was written");
    no_mover_objects_left(&m1, &ns).await;
    rollout(pg, "member-1", &ns);

    // MinIO back on the same drive (at another port, with a new certificate: the location is
    // changed to it): the next snapshot sends only the chunks that were not in yet.
    let minio = Minio::start_on(&minio_dir, "volumes", gateway.into());
    let patch =
        serde_json::json!({"spec": {"s3": {"endpoint": minio.endpoint, "caBundle": minio.ca_pem}}});
    Api::<multicluster_core::api::StorageLocation>::namespaced(hub.clone(), "multicluster-system")
        .patch(
            &location,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let again = snapshot(pg, &ns, &location);
    let data = again.status.unwrap().volumes[0].data.clone().unwrap();
    println!(
        "after MinIO came back: {} of {} bytes sent",
        data.bytes_transferred, data.bytes_total
    );
    assert!(
        data.bytes_transferred < data.bytes_total,
        "the chunks sent before the outage stay: {data:?}"
    );
    no_mover_objects_left(&m1, &ns).await;
}

/// A StatefulSet whose pod writes a new 3 MB random file every 2 s in place of the last: every
/// snapshot of its claim holds chunks no other snapshot has.
fn ticker(ns: &str) -> String {
    let script = "while true; do head -c 3000000 /dev/urandom > /data/now.tmp && mv /data/now.tmp /data/now; sleep 2; done";
    stateful_set(ns, script, None, "1Gi")
}

/// The schedule's snapshots on the hub: name → phase.
async fn scheduled(
    hub: &Client,
    schedule: &str,
) -> std::collections::BTreeMap<String, SnapshotPhase> {
    Api::<NamespaceSnapshot>::namespaced(hub.clone(), "multicluster-system")
        .list(&ListParams::default().labels(&format!("multicluster.dev/schedule={schedule}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| {
            let phase = s.status.map(|st| st.phase).unwrap_or_default();
            (s.metadata.name.unwrap(), phase)
        })
        .collect()
}

/// `snapshot location collect LOCATION -o json`, which must succeed: what the sweep did.
fn collect(pg: &Playground, location: &str) -> serde_json::Value {
    let out =
        run_ok(&mut pg.multicluster(&["snapshot", "location", "collect", location, "-o", "json"]));
    serde_json::from_str(&out).unwrap()
}

/// The chunk and pack objects in the bucket, by key, and its indexes, by digest.
fn stored_data(
    minio: &Minio,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let keys = minio.object_keys();
    let objects = keys
        .iter()
        .filter(|k| k.starts_with("data/chunks/") || k.starts_with("data/packs/"))
        .cloned()
        .collect();
    let indexes = keys
        .iter()
        .filter_map(|k| k.strip_prefix("data/indexes/"))
        .map(str::to_owned)
        .collect();
    (objects, indexes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_exactly_its_newest_snapshots_and_the_sweep_leaves_no_chunk_that_no_snapshot_references()
 {
    let pg = playground_with_nodes();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let gateway = pg.state.network.as_ref().unwrap().gateway;
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start_on(&dir.path().join("minio"), "volumes", gateway.into());
    let location = minio.add_location(pg, &hub, dir.path()).await;
    let ns = multicluster_tests::fresh_namespace(&m1, "ticks")
        .await
        .unwrap();
    let applied = pg.apply("member-1", &ticker(&ns), &[]);
    assert!(applied.status.success(), "{applied:?}");
    rollout(pg, "member-1", &ns);

    // Every 15 s, keeping the last 2.
    let schedule = unique_name("ticks");
    let created = run(&mut pg.multicluster(&[
        "snapshot",
        "schedule",
        "create",
        &ns,
        "--name",
        &schedule,
        "--schedule",
        "*/15 * * * * *",
        "--cluster",
        "member-1",
        "--location",
        &location,
        "--keep-last",
        "2",
    ]));
    assert!(created.status.success(), "{created:?}");
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("first snapshot at"),
        "{created:?}"
    );
    // A bad expression is refused before anything is written.
    let refused = run(&mut pg.multicluster(&[
        "snapshot",
        "schedule",
        "create",
        &ns,
        "--name",
        &unique_name("bad"),
        "--schedule",
        "every night",
        "--cluster",
        "member-1",
        "--location",
        &location,
    ]));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not a cron expression"),
        "{refused:?}"
    );

    // Four snapshots taken: from then on exactly the newest two stay.
    let mut seen = std::collections::BTreeSet::new();
    eventually(
        "the schedule took 4 snapshots and kept the last 2",
        Duration::from_secs(420),
        async || {
            let now = scheduled(&hub, &schedule).await;
            seen.extend(now.keys().cloned());
            let completed = now
                .values()
                .filter(|p| **p == SnapshotPhase::Completed)
                .count();
            if let Some((name, _)) = now.iter().find(|(_, p)| **p == SnapshotPhase::Failed) {
                panic!(
                    "scheduled snapshot {name} failed: {:?}",
                    snapshot_status(&hub, name).await
                );
            }
            if seen.len() >= 4 && completed == 2 && now.len() == 2 {
                Ok(())
            } else {
                Err(format!("seen {}: {now:?}", seen.len()))
            }
        },
    )
    .await;
    let patch = serde_json::json!({"spec": {"suspend": true}});
    Api::<multicluster_core::api::SnapshotSchedule>::namespaced(hub.clone(), "multicluster-system")
        .patch(
            &schedule,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let kept = eventually(
        "suspended, the schedule keeps its last 2 completed snapshots",
        Duration::from_secs(180),
        async || {
            let now = scheduled(&hub, &schedule).await;
            if now.len() == 2 && now.values().all(|p| *p == SnapshotPhase::Completed) {
                Ok(now)
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;
    println!("{} snapshots taken, {:?} kept", seen.len(), kept.keys());
    let listed = run_ok(&mut pg.multicluster(&["snapshot", "schedule", "list"]));
    assert!(
        listed.contains(&schedule) && listed.contains("last 2"),
        "{listed}"
    );
    let shown = run_ok(&mut pg.multicluster(&["snapshot", "schedule", "show", &schedule]));
    for name in kept.keys() {
        assert!(shown.contains(name.as_str()), "{shown}");
    }
    let archives: Vec<String> = minio
        .object_keys()
        .into_iter()
        .filter(|k| k.ends_with(".tar.gz") && k.contains(&schedule))
        .collect();
    assert_eq!(
        archives.len(),
        2,
        "the expired snapshots' archives are gone: {archives:?}"
    );

    // Past the playground's 10 s grace, a sweep leaves exactly what the two snapshots reference.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let swept = collect(pg, &location);
    assert_eq!(swept["swept"], true, "{swept}");
    assert_eq!(swept["waiting"], 0, "{swept}");
    let store = minio.store();
    let mut indexes = std::collections::BTreeSet::new();
    let mut chunks = std::collections::BTreeSet::new();
    for name in kept.keys() {
        let status = snapshot_status(&hub, name).await;
        let index = status.volumes[0].data.clone().unwrap().index.unwrap();
        let read = multicluster_webhook::snapshot::mover::read_index(store.as_ref(), &index)
            .await
            .unwrap();
        chunks.extend(read.object_keys());
        indexes.insert(index);
    }
    let (stored_chunks, stored_indexes) = stored_data(&minio);
    assert_eq!(
        stored_indexes, indexes,
        "only the kept snapshots' indexes stay"
    );
    assert_eq!(
        stored_chunks, chunks,
        "only the kept snapshots' chunks and packs stay"
    );
    println!(
        "{} chunk and pack objects kept for 2 snapshots; sweep: {swept}",
        chunks.len()
    );

    // The schedule deleted with its snapshots: nothing of them stays in the bucket.
    run_ok(&mut pg.multicluster(&[
        "snapshot",
        "schedule",
        "delete",
        &schedule,
        "--with-snapshots",
    ]));
    assert!(scheduled(&hub, &schedule).await.is_empty());
    tokio::time::sleep(Duration::from_secs(11)).await;
    let swept = collect(pg, &location);
    assert_eq!(swept["indexesReferenced"], 0, "{swept}");
    let (stored_chunks, stored_indexes) = stored_data(&minio);
    assert!(
        stored_chunks.is_empty() && stored_indexes.is_empty(),
        "{} chunks and {} indexes left",
        stored_chunks.len(),
        stored_indexes.len()
    );
    assert!(
        !minio.object_keys().iter().any(|k| k.ends_with(".tar.gz")),
        "{:?}",
        minio.object_keys()
    );
}
