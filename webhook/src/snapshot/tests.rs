//! The snapshot taker and the restore, in process: a namespace of one fake member
//! (`crate::testing::FakeApi`) snapshotted to a directory, then restored into another fake member,
//! each reconciler called as its controller calls it. The end-to-end tests (`tests/tests/
//! snapshot.rs`, `restore.rs`) do the same on real API servers; these show a reconciler bug in
//! a second, without a playground.
//!
//! Played here, besides the API servers: the CSI snapshot controller on the source (a
//! VolumeSnapshot is cut and ready at once, with a VolumeSnapshotContent holding its handle) and
//! the CSI provisioner on the target (a claim made from a snapshot is Bound at once, as if
//! hydrated).

use std::sync::Arc;

use kube::Client;
use kube::api::{Api, PostParams};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{NamespaceRestore, NamespaceSnapshot, RestorePhase, SnapshotPhase};
use serde_json::{Value, json};

use crate::members::MemberClients;
use crate::testing::{FakeApi, Served};

const DRIVER: &str = "hostpath.csi.k8s.io";

/// A fake API server that also serves the CSI snapshot API.
fn member_with_csi() -> FakeApi {
    let fake = FakeApi::new();
    for (kind, plural, namespaced) in [
        ("VolumeSnapshot", "volumesnapshots", true),
        ("VolumeSnapshotContent", "volumesnapshotcontents", false),
        ("VolumeSnapshotClass", "volumesnapshotclasses", false),
    ] {
        fake.serve(Served::new(
            "snapshot.storage.k8s.io/v1",
            kind,
            plural,
            namespaced,
        ));
    }
    fake
}

/// The hub: the project's kinds, its namespace, and two members reached through fakes.
fn hub(source: &FakeApi, target: &FakeApi) -> (FakeApi, MemberClients) {
    let hub = FakeApi::new();
    for (kind, plural, namespaced) in [
        ("NamespaceSnapshot", "namespacesnapshots", true),
        ("NamespaceRestore", "namespacerestores", true),
        ("StorageLocation", "storagelocations", true),
        ("MemberCluster", "memberclusters", false),
    ] {
        hub.serve(Served::new(
            "multicluster.dev/v1alpha1",
            kind,
            plural,
            namespaced,
        ));
    }
    hub.insert(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}),
    );
    let members = MemberClients::default();
    for (name, fake) in [("member-1", source), ("member-2", target)] {
        hub.insert(
            json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "MemberCluster",
            "metadata": {"name": name},
            "spec": {"endpoint": format!("https://{name}.example:6443"),
                     "credentialsSecret": {"name": format!("member-{name}")}}}),
        );
        members.give(name, fake.client());
    }
    (hub, members)
}

/// member-1's namespace `shop`: a Deployment of 2 mounting claim `data`, bound to a CSI volume
/// of a driver with a VolumeSnapshotClass, and a ConfigMap.
fn source_namespace(m1: &FakeApi) {
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "fast"}, "provisioner": DRIVER, "volumeBindingMode": "Immediate"}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "csi-snapclass"}, "driver": DRIVER, "deletionPolicy": "Retain"}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-data"},
               "spec": {"storageClassName": "fast", "capacity": {"storage": "1Gi"},
                        "csi": {"driver": DRIVER, "volumeHandle": "vol-1"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": "shop"},
               "spec": {"storageClassName": "fast", "volumeName": "pv-data",
                        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
               "status": {"phase": "Bound"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "settings", "namespace": "shop"}, "data": {"greeting": "hello"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                            "containers": [{"name": "web", "image": "web:1"}]}}}}),
    ] {
        m1.insert(object);
    }
    // Played: the CSI snapshot controller, which cuts a snapshot and binds it to its content.
    m1.react("VolumeSnapshot", |vs| {
        if vs["status"]["readyToUse"] == true {
            return Vec::new();
        }
        let name = vs.name_any_json();
        let content = format!("snapcontent-{name}");
        vs["status"] = json!({"readyToUse": true, "creationTime": "2026-01-01T00:00:00Z",
                              "restoreSize": "1Gi", "boundVolumeSnapshotContentName": content});
        vec![
            json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                    "metadata": {"name": content},
                    "spec": {"driver": DRIVER, "deletionPolicy": "Retain",
                             "source": {"volumeHandle": "vol-1"}},
                    "status": {"readyToUse": true, "snapshotHandle": format!("snap-of-{name}")}}),
        ]
    });
}

trait NameOf {
    fn name_any_json(&self) -> String;
}

impl NameOf for Value {
    fn name_any_json(&self) -> String {
        self["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn created<K>(client: &Client, object: Value) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .create(&PostParams::default(), &object)
        .await
        .unwrap()
}

fn position(requests: &[String], what: &str) -> usize {
    requests
        .iter()
        .position(|r| r == what)
        .unwrap_or_else(|| panic!("no request {what:?} in {requests:#?}"))
}

/// Two fake members and a hub; member-1's `shop` snapshotted as `shop-1` by the taker, run as
/// its controller runs it.
struct Taken {
    m1: FakeApi,
    m2: FakeApi,
    hub: Client,
    members: MemberClients,
    _archives: tempfile::TempDir,
}

async fn take_shop() -> Taken {
    let (m1, m2) = (member_with_csi(), member_with_csi());
    source_namespace(&m1);
    m2.insert(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                     "metadata": {"name": "fast"}, "provisioner": DRIVER, "volumeBindingMode": "Immediate"}));
    // Played: the CSI provisioner on the target, which hydrates a claim from its snapshot.
    m2.react("PersistentVolumeClaim", |claim| {
        if claim["spec"]["dataSource"]["kind"] == "VolumeSnapshot" {
            claim["status"] = json!({"phase": "Bound"});
        }
        Vec::new()
    });
    let (hub, members) = hub(&m1, &m2);
    let hub_client = hub.client();
    let archives = tempfile::tempdir().unwrap();
    hub.insert(
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "StorageLocation",
        "metadata": {"name": "local", "namespace": SYSTEM_NAMESPACE},
        "spec": {"filesystem": {"path": archives.path().display().to_string()}}}),
    );

    // The snapshot, taken as the taker's controller takes it.
    let snapshot: NamespaceSnapshot = created(&hub_client, json!({
        "apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceSnapshot",
        "metadata": {"name": "shop-1", "namespace": SYSTEM_NAMESPACE},
        "spec": {"cluster": "member-1", "namespace": "shop", "location": "local", "quiesce": "ScaleDown"}
    }))
    .await;
    let ctx = super::take::Context {
        hub: hub_client.clone(),
        members: members.clone(),
        mover: super::transfers::Settings::default(),
        locks: Default::default(),
    };
    super::take::take_once(Arc::new(snapshot), &ctx)
        .await
        .unwrap();
    Taken {
        m1,
        m2,
        hub: hub_client,
        members: ctx.members,
        _archives: archives,
    }
}

/// A restore of `shop-1` into member-2's `target`, run as the restore controller runs it;
/// returns its status.
async fn restore_shop(
    taken: &Taken,
    target: &str,
) -> multicluster_core::api::NamespaceRestoreStatus {
    restore_shop_with(
        taken,
        target,
        json!({}),
        super::restore::Settings::default(),
    )
    .await
}

/// [`restore_shop`] of a restore whose status is `status` when the controller finds it (a hub
/// server that stopped half-way left it so), under `settings`.
async fn restore_shop_with(
    taken: &Taken,
    target: &str,
    status: Value,
    settings: super::restore::Settings,
) -> multicluster_core::api::NamespaceRestoreStatus {
    let name = format!("restore-to-{target}");
    let restore: NamespaceRestore = created(
        &taken.hub,
        json!({
            "apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceRestore",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE},
            "spec": {"snapshot": "shop-1", "targetCluster": "member-2", "targetNamespace": target},
            "status": status
        }),
    )
    .await;
    let ctx = super::restore::Context {
        hub: taken.hub.clone(),
        members: taken.members.clone(),
        settings,
    };
    super::restore::reconcile(Arc::new(restore), Arc::new(ctx))
        .await
        .unwrap();
    Api::<NamespaceRestore>::namespaced(taken.hub.clone(), SYSTEM_NAMESPACE)
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap()
}

#[tokio::test]
async fn a_namespace_snapshotted_with_its_workloads_scaled_down_is_restored_claims_first_into_another_member()
 {
    let taken = take_shop().await;
    let (m1, m2, hub_client) = (&taken.m1, &taken.m2, taken.hub.clone());
    let snapshot = Api::<NamespaceSnapshot>::namespaced(hub_client.clone(), SYSTEM_NAMESPACE)
        .get("shop-1")
        .await
        .unwrap();
    let status = snapshot.status.clone().unwrap();
    assert_eq!(status.phase, SnapshotPhase::Completed, "{status:#?}");
    assert!(status.archive.is_some(), "{status:#?}");
    // Quiesced: scaled to 0 before the cut, back to 2 after it, and the annotations gone.
    let source_writes = m1.writes();
    let cut = position(
        &source_writes,
        "POST /apis/snapshot.storage.k8s.io/v1/namespaces/shop/volumesnapshots",
    );
    let scaled: Vec<usize> = source_writes
        .iter()
        .enumerate()
        .filter(|(_, w)| *w == "PATCH /apis/apps/v1/namespaces/shop/deployments/web")
        .map(|(i, _)| i)
        .collect();
    assert!(
        scaled.len() == 2 && scaled[0] < cut && cut < scaled[1],
        "{source_writes:#?}"
    );
    let web = m1
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 2, "{web}");
    assert!(
        web["metadata"]["annotations"][multicluster_core::keys::QUIESCED_BY].is_null(),
        "{web}"
    );

    // The restore into member-2.
    let restored = restore_shop(&taken, "shop-copy").await;
    assert_eq!(restored.phase, RestorePhase::Completed, "{restored:#?}");

    // The claim comes from the snapshot's handle, bound before any workload is written.
    let claim = m2
        .get("v1", "PersistentVolumeClaim", Some("shop-copy"), "data")
        .unwrap();
    assert_eq!(
        claim["spec"]["dataSource"]["kind"], "VolumeSnapshot",
        "{claim}"
    );
    let contents = m2.requests();
    let content_name = m2
        .requests()
        .into_iter()
        .find(|r| r.contains("/volumesnapshotcontents/"))
        .unwrap_or_else(|| panic!("no VolumeSnapshotContent written: {contents:#?}"));
    let content = m2
        .get(
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshotContent",
            None,
            content_name.rsplit('/').next().unwrap(),
        )
        .unwrap();
    assert_eq!(
        content["spec"]["source"]["snapshotHandle"],
        format!(
            "snap-of-{}",
            multicluster_core::snapshot::volumes::volume_snapshot_name("shop-1", "data")
        )
    );
    let requests = m2.requests();
    let claim_written = position(
        &requests,
        "PATCH /api/v1/namespaces/shop-copy/persistentvolumeclaims/data",
    );
    let bound_seen = requests
        .iter()
        .rposition(|r| r == "GET /api/v1/namespaces/shop-copy/persistentvolumeclaims")
        .unwrap();
    let workload = position(
        &requests,
        "PATCH /apis/apps/v1/namespaces/shop-copy/deployments/web",
    );
    assert!(
        claim_written < bound_seen && bound_seen < workload,
        "{requests:#?}"
    );
    // The workload comes back at the scale it had before it was quiesced.
    let web = m2
        .get("apps/v1", "Deployment", Some("shop-copy"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 2, "{web}");
    let ns = m2.get("v1", "Namespace", None, "shop-copy").unwrap();
    assert_eq!(
        ns["metadata"]["annotations"][multicluster_core::keys::RESTORED_BY],
        "restore-to-shop-copy"
    );
}

#[tokio::test]
async fn a_restore_into_a_namespace_that_now_holds_another_version_of_the_app_fails_before_any_write()
 {
    let taken = take_shop().await;
    // Since the restore was admitted, someone deployed another version of web into the target.
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-old"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop-old"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                            "containers": [{"name": "web", "image": "web:0"}]}}}}),
    ] {
        taken.m2.insert(object);
    }
    let status = restore_shop(&taken, "shop-old").await;
    assert_eq!(status.phase, RestorePhase::Failed, "{status:#?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("nothing was written") && message.contains("Deployment web"),
        "{message}"
    );
    assert!(!status.conflicts.is_empty());
    assert_eq!(taken.m2.writes(), Vec::<String>::new());
}

/// Two Deployments quiesced by snapshot `s1`; the scale-back of the first gets no answer, ever:
/// the second is still scaled back, and the error names the first (which keeps its annotation).
#[tokio::test]
async fn resume_scales_back_every_workload_even_when_one_fails() {
    let member = FakeApi::new();
    for (name, replicas) in [("api", "3"), ("web", "2")] {
        member.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop",
                         "annotations": {"multicluster.dev/quiesced-by": "s1",
                                         "multicluster.dev/quiesced-replicas": replicas}},
            "spec": {"replicas": 0}}));
    }
    member.leave_unanswered(|method, path| method == http::Method::PATCH && path.ends_with("/api"));
    let err = super::take::resume(&member.client(), "shop", "s1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Deployment api (to 3 replicas)"), "{err}");
    assert!(err.contains("resumed 1 other"), "{err}");
    let web = member
        .get("apps/v1", "Deployment", Some("shop"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 2, "{web}");
    let api = member
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert_eq!(
        api["metadata"]["annotations"]["multicluster.dev/quiesced-by"],
        "s1"
    );
    let patches = member
        .writes()
        .iter()
        .filter(|w| w.starts_with("PATCH") && w.ends_with("/api"))
        .count();
    assert_eq!(patches, 3, "each workload is tried three times");
}

/// A restore that a hub server started three times and never finished (each start stopped it:
/// out of memory, say) fails on the fourth start instead of being started again, and writes
/// nothing to the target.
#[tokio::test]
async fn a_restore_started_three_times_fails_on_the_fourth_and_writes_nothing() {
    let taken = take_shop().await;
    let before = taken.m2.writes().len();
    let status = restore_shop_with(
        &taken,
        "shop-again",
        json!({"phase": "Hydrating", "attempts": 3}),
        super::restore::Settings::default(),
    )
    .await;
    assert_eq!(status.phase, RestorePhase::Failed, "{status:?}");
    assert_eq!(status.attempts, 4);
    let message = status.message.unwrap_or_default();
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert_eq!(taken.m2.writes().len(), before, "{:?}", taken.m2.writes());
}

/// An archive over the hub server's limits is refused before anything is written, saying which
/// limit and which flag raises it.
#[tokio::test]
async fn an_archive_over_the_limits_is_refused_and_nothing_is_written() {
    let taken = take_shop().await;
    let before = taken.m2.writes().len();
    let mut settings = super::restore::Settings::default();
    settings.limits.entry_bytes = 64;
    let status = restore_shop_with(&taken, "shop-small", json!({}), settings).await;
    assert_eq!(status.phase, RestorePhase::Failed, "{status:?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("nothing was written")
            && message.contains("--restore-max-archive-entry-bytes"),
        "{message}"
    );
    assert_eq!(taken.m2.writes().len(), before, "{:?}", taken.m2.writes());
}

/// A snapshot deleted while its workloads are quiesced (its hub server stopped half-way, say):
/// the clean-up puts them back at their scale before removing its data.
#[tokio::test]
async fn deleting_a_snapshot_found_mid_quiesce_puts_its_workloads_back() {
    let (m1, m2) = (member_with_csi(), member_with_csi());
    m1.insert(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop",
                     "annotations": {"multicluster.dev/quiesced-by": "s1",
                                     "multicluster.dev/quiesced-replicas": "2"}},
        "spec": {"replicas": 0}}));
    let (hub, members) = hub(&m1, &m2);
    let snapshot: NamespaceSnapshot = serde_json::from_value(json!({
        "apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceSnapshot",
        "metadata": {"name": "s1", "namespace": SYSTEM_NAMESPACE},
        "spec": {"cluster": "member-1", "namespace": "shop", "location": "local"},
        "status": {"phase": "Quiescing"}
    }))
    .unwrap();
    let ctx = super::take::Context {
        hub: hub.client(),
        members,
        mover: super::transfers::Settings::default(),
        locks: Default::default(),
    };
    super::take::remove_data(&ctx, &snapshot).await;
    let api = m1
        .get("apps/v1", "Deployment", Some("shop"), "api")
        .unwrap();
    assert_eq!(api["spec"]["replicas"], 2, "{api}");
    assert!(
        api["metadata"]["annotations"]["multicluster.dev/quiesced-by"].is_null(),
        "{api}"
    );
}
