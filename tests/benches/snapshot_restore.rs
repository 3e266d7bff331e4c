//! Snapshot and restore of a namespace of 2,000 objects with 20 claims, against what a person does
//! by hand, in the same run on the same playground (a hub and two members):
//!
//! * `kubectl multicluster snapshot create` of member-1/bench to a directory location (quiesce
//!   none), wall time and objects/s;
//! * `kubectl multicluster restore create` of it into member-2, wall time and objects/s (claims
//!   hydrated first, workloads last);
//! * by hand: `kubectl get` of every namespaced kind the member lists with `-o yaml` to a file,
//!   `sed` to move it to another namespace and drop what the API server refuses on create
//!   (resourceVersion, uid, cluster IPs, claim bindings), `kubectl apply --server-side` of it into
//!   member-2;
//! * the validating webhook's conflict check: ROUNDS server-side dry-run creates of a
//!   `NamespaceRestore` (dry run still calls the webhook, which is `sideEffects: None`), timed at
//!   the client, so each figure is the whole admission round trip through the hub API server;
//!   against the 2,000-object namespace and, side by side, against an empty one;
//! * the part of the check that dominates it, the target's ConfigMaps read as the check reads
//!   them, as JSON and as protobuf, rounds interleaved (one client, one connection).
//!
//! Played here: the CSI snapshotter on member-1 and the provisioner on member-2 (no CSI driver
//! runs on the playground), as in the end-to-end tests.
//!
//! Rerun: tests/bench/snapshot.sh [ROUNDS] (builds the release binaries first).

// A benchmark: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use multicluster_core::api::{NamespaceRestore, NamespaceRestoreSpec, NamespaceSnapshot};
use multicluster_tests::csi::{self, PlayedProvisioner, PlayedSnapshotter};
use multicluster_tests::{run_ok, start_playground};
use serde_json::{Value, json};

const NS: &str = "bench";
const CLAIMS: usize = 20;
const DEPLOYMENTS: usize = 100;
const SERVICES: usize = 260;
const SECRETS: usize = 400;
const CONFIG_MAPS: usize = 2_000 - CLAIMS - DEPLOYMENTS - SERVICES - SECRETS;

fn objects() -> Vec<Value> {
    let mut out = Vec::new();
    let text = "x".repeat(1024);
    for i in 0..CONFIG_MAPS {
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("config-{i}")},
                        "data": {"settings": text}}));
    }
    for i in 0..SECRETS {
        out.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("secret-{i}")},
                        "stringData": {"password": format!("password-{i}")}}));
    }
    for i in 0..SERVICES {
        out.push(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                        "spec": {"selector": {"app": format!("app-{}", i % DEPLOYMENTS)},
                                 "ports": [{"port": 80, "targetPort": 8080}]}}),
        );
    }
    for i in 0..DEPLOYMENTS {
        let mut volumes =
            vec![json!({"name": "config", "configMap": {"name": format!("config-{i}")}})];
        if i < CLAIMS {
            volumes.push(json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{i}")}}));
        }
        out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("app-{i}"), "labels": {"app.kubernetes.io/name": format!("app-{i}")}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                                  "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                                                           "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": format!("secret-{i}"), "key": "password"}}}]}],
                                           "volumes": volumes}}}}));
    }
    out
}

async fn create_all(client: &kube::Client, ns: &str, objects: Vec<Value>) {
    let discovery = kube::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let writes = objects.into_iter().map(|o| {
        let (group, version) = o["apiVersion"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap_or(("", "v1"));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, o["kind"].as_str().unwrap());
        let (resource, _) = discovery.resolve_gvk(&gvk).unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        async move {
            let object: DynamicObject = serde_json::from_value(o).unwrap();
            api.create(&PostParams::default(), &object).await.unwrap();
        }
    });
    futures::stream::iter(writes)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn admission_round_trips(
    hub: &kube::Client,
    snapshot: &str,
    cluster: &str,
    ns: &str,
    rounds: usize,
) -> (Duration, Duration) {
    let api: Api<NamespaceRestore> = Api::namespaced(hub.clone(), "multicluster-system");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let restore = NamespaceRestore::new(
            &format!("dry-{i}"),
            NamespaceRestoreSpec {
                snapshot: snapshot.to_owned(),
                target_cluster: cluster.to_owned(),
                target_namespace: ns.to_owned(),
                transforms: Vec::new(),
            },
        );
        let started = Instant::now();
        api.create(&params, &restore).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// When each phase of restore `name` was first seen (a watch, as the CLI follows it).
fn watch_phases(
    hub: &kube::Client,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>> {
    use kube::runtime::{WatchStreamExt, watcher};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>> = Default::default();
    let out = seen.clone();
    let api: Api<NamespaceRestore> = Api::namespaced(hub.clone(), "multicluster-system");
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).applied_objects().boxed();
        while let Some(Ok(restore)) = events.next().await {
            let phase = format!("{:?}", restore.status.unwrap_or_default().phase);
            let mut seen = seen.lock().unwrap();
            if !seen.iter().any(|(p, _)| *p == phase) {
                seen.push((phase, Instant::now()));
            }
        }
    });
    out
}

/// The webhook's conflict check itself, called in this process as the hub server calls it (the
/// snapshot from the hub, the target read live on the member, the comparison), without the API
/// server's admission plumbing around it.
async fn check_itself(
    hub: &kube::Client,
    cluster: &str,
    ns: &str,
    rounds: usize,
) -> (Duration, Duration) {
    let members = multicluster_webhook::members::MemberClients::default();
    let restore = NamespaceRestore::new(
        "check",
        NamespaceRestoreSpec {
            snapshot: "bench".to_owned(),
            target_cluster: cluster.to_owned(),
            target_namespace: ns.to_owned(),
            transforms: Vec::new(),
        },
    );
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let verdict = multicluster_webhook::snapshot::restore_admission::check_restore(
            hub,
            &members,
            "multicluster-system",
            &restore,
            multicluster_webhook::snapshot::restore_admission::Detail::Full,
        )
        .await;
        times.push(started.elapsed());
        assert!(verdict.is_ok(), "{verdict:?}");
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// The target's ConfigMaps read as JSON and as protobuf (and turned into the inventory, as the
/// check does), alternately, so that both see the same machine.
async fn config_map_reads(
    member: &kube::Client,
    ns: &str,
    rounds: usize,
) -> [(Duration, Duration); 2] {
    use multicluster_webhook::snapshot::target::{ListEncoding, read_config_maps};
    let mut times = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
    let mut inventories = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, encoding) in [ListEncoding::Json, ListEncoding::Protobuf]
            .into_iter()
            .enumerate()
        {
            let started = Instant::now();
            let objects = read_config_maps(member, ns, encoding).await.unwrap();
            inventories[i] = multicluster_core::snapshot::inventory(&objects);
            times[i].push(started.elapsed());
        }
    }
    assert_eq!(inventories[0], inventories[1], "the encodings disagree");
    assert_eq!(inventories[0].len(), CONFIG_MAPS);
    times.map(|mut t| {
        t.sort();
        (percentile(&t, 0.5), percentile(&t, 0.99))
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    // Not a TempDir: a panic would remove it before the playground's watchdog stops what runs
    // there (it finds the processes through the state file in it).
    let dir = std::env::temp_dir().join(format!(
        "multicluster-bench-snapshot-{}",
        std::process::id()
    ));
    eprintln!("starting a hub and 2 members in {}", dir.display());
    let state = start_playground(&dir, 2, &[]);
    let pg = multicluster_tests::Playground { state };
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    csi::install_crds(&pg, "member-1");
    csi::install_crds(&pg, "member-2");
    csi::snapshot_class(&m1, "played-hostpath").await;
    multicluster_tests::mcs::create_namespace(&m1, NS).await;
    for i in 0..CLAIMS {
        csi::play_bound_claim(&m1, NS, &format!("data-{i}"), "fast").await;
    }
    create_all(&m1, NS, objects()).await;
    let _snapshotter = PlayedSnapshotter::start(m1.clone(), NS, CLAIMS);
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    run_ok(&mut pg.multicluster(&[
        "snapshot",
        "location",
        "add",
        "bench",
        "--path",
        &archives.display().to_string(),
    ]));

    // Snapshot.
    let started = Instant::now();
    run_ok(&mut pg.snapshot_of_member_1(NS, "bench", "bench", &[]));
    let snapshot_time = started.elapsed();
    let snapshot: NamespaceSnapshot = Api::namespaced(hub.clone(), "multicluster-system")
        .get("bench")
        .await
        .unwrap();
    let status = snapshot.status.unwrap();
    let captured = status.resource_count.unwrap_or_default();
    let size = status.archive.map(|a| a.size_bytes).unwrap_or_default();

    // Restore into member-2.
    let _provisioner = PlayedProvisioner::start(m2.clone(), "bench-restored");
    let phases = watch_phases(&hub, "bench");
    let started = Instant::now();
    run_ok(&mut pg.multicluster(&[
        "restore",
        "create",
        "bench",
        "--to-cluster",
        "member-2",
        "--to-namespace",
        "bench-restored",
        "--name",
        "bench",
    ]));
    let restore_time = started.elapsed();
    let restore: NamespaceRestore = Api::namespaced(hub.clone(), "multicluster-system")
        .get("bench")
        .await
        .unwrap();
    let written = restore.status.unwrap().objects_written;
    let phases = phases.lock().unwrap().clone();
    let at = |phase: &str| phases.iter().find(|(p, _)| p == phase).map(|(_, t)| *t);
    let hydrated_to_done = match (at("Restoring"), at("Completed")) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };

    // By hand: kubectl get -o yaml of every namespaced kind, sed, kubectl apply --server-side.
    let kinds = run_ok(pg.kubectl().args([
        "--context",
        "member-1",
        "api-resources",
        "--namespaced",
        "--verbs=list",
        "-o",
        "name",
    ]));
    let kinds: Vec<&str> = kinds.lines().filter(|k| !k.is_empty()).collect();
    let dump = dir.join("by-hand.yaml");
    let started = Instant::now();
    let yaml = pg
        .kubectl()
        .args([
            "--context",
            "member-1",
            "get",
            &kinds.join(","),
            "-n",
            NS,
            "-o",
            "yaml",
        ])
        .output()
        .unwrap();
    assert!(
        yaml.status.success(),
        "{}",
        String::from_utf8_lossy(&yaml.stderr)
    );
    let get_time = started.elapsed();
    std::fs::write(&dump, &yaml.stdout).unwrap();
    let started = Instant::now();
    run_ok(
        Command::new("sed")
            .arg("-i")
            .args([
                "-e",
                "s/^    namespace: bench$/    namespace: by-hand/",
                "-e",
                "/^    resourceVersion:/d",
                "-e",
                "/^    uid:/d",
                "-e",
                "/^    clusterIP:/d",
                "-e",
                "/^    clusterIPs:/,+1d",
                "-e",
                "/^    volumeName:/d",
            ])
            .arg(&dump),
    );
    multicluster_tests::mcs::create_namespace(&m2, "by-hand").await;
    let apply = pg
        .kubectl()
        .args([
            "--context",
            "member-2",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
        ])
        .arg(&dump)
        .output()
        .unwrap();
    let apply_time = started.elapsed();
    let applied = String::from_utf8_lossy(&apply.stdout).lines().count();
    let refused = String::from_utf8_lossy(&apply.stderr)
        .lines()
        .filter(|l| l.contains("Error"))
        .count();
    let by_hand = get_time + apply_time;

    // The conflict check, against the 2,000-object namespace and an empty one.
    let (full_p50, full_p99) = admission_round_trips(&hub, "bench", "member-1", NS, rounds).await;
    let (itself_p50, itself_p99) = check_itself(&hub, "member-1", NS, rounds).await;
    let (empty_p50, empty_p99) =
        admission_round_trips(&hub, "bench", "member-2", "empty-target", rounds).await;
    let [(json_p50, json_p99), (protobuf_p50, protobuf_p99)] =
        config_map_reads(&m1, NS, rounds).await;

    let per_s = |n: f64, d: Duration| n / d.as_secs_f64();
    println!(
        "namespace: {CONFIG_MAPS} ConfigMaps, {SECRETS} Secrets, {SERVICES} Services, {DEPLOYMENTS} Deployments, {CLAIMS} claims"
    );
    println!(
        "snapshot  (to a directory, quiesce none): {:>7.2} s  {captured} objects  {:>6.0} objects/s  archive {size} bytes",
        snapshot_time.as_secs_f64(),
        per_s(f64::from(captured), snapshot_time)
    );
    println!(
        "restore   (member-1 → member-2):          {:>7.2} s  {written} objects  {:>6.0} objects/s",
        restore_time.as_secs_f64(),
        per_s(f64::from(written), restore_time)
    );
    // The namespace, 20 VolumeSnapshotContents, 20 VolumeSnapshots and 20 claims come first.
    let after_claims = f64::from(written) - (1 + 3 * CLAIMS) as f64;
    println!(
        "  of which claims bound (played provisioner, one claim at a time) → Completed: {:.2} s for the other {after_claims:.0} objects, {:.0} objects/s",
        hydrated_to_done.as_secs_f64(),
        per_s(after_claims, hydrated_to_done)
    );
    println!(
        "by hand   (get -o yaml {:.2} s + sed + apply --server-side {:.2} s): {:>7.2} s  {applied} applied, {refused} refused  {:>6.0} objects/s",
        get_time.as_secs_f64(),
        apply_time.as_secs_f64(),
        by_hand.as_secs_f64(),
        per_s(applied as f64, by_hand)
    );
    println!(
        "ratio     by hand / (snapshot + restore): {:.2}",
        by_hand.as_secs_f64() / (snapshot_time + restore_time).as_secs_f64()
    );
    println!(
        "conflict check itself (in process, {rounds} rounds): 2,000-object target p50 {} p99 {}",
        ms(itself_p50),
        ms(itself_p99)
    );
    println!(
        "conflict check, admission round trip over {rounds} dry-run creates: 2,000-object target p50 {} p99 {}; empty target p50 {} p99 {}",
        ms(full_p50),
        ms(full_p99),
        ms(empty_p50),
        ms(empty_p99)
    );
    println!(
        "its {CONFIG_MAPS} ConfigMaps read + inventory ({rounds} rounds each, interleaved): JSON p50 {} p99 {}; protobuf (what the check reads) p50 {} p99 {}; ratio of p50s {:.2}",
        ms(json_p50),
        ms(json_p99),
        ms(protobuf_p50),
        ms(protobuf_p99),
        json_p50.as_secs_f64() / protobuf_p50.as_secs_f64()
    );
}
