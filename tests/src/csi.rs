//! The storage side of a member for snapshot and restore tests. The playground has no CSI driver,
//! no snapshot controller and no volume controller, so these helpers **play** them, and say so:
//!
//! * the CSI snapshot API's CRDs, which real clusters get from their CSI driver installation, are
//!   installed from `manifests/third-party/csi-snapshot` (vendored, with its licence and source);
//! * [`play_bound_claim`] plays the provisioner: a CSI `PersistentVolume` bound to a claim;
//! * [`PlayedSnapshotter`] plays the CSI snapshotter: it answers each `VolumeSnapshot` with a
//!   `VolumeSnapshotContent` holding a snapshot handle and marks the snapshot cut and ready, and
//!   records what the namespace looked like when it did;
//! * [`PlayedGroupSnapshotter`] plays the snapshot controller of a driver with group snapshots: it
//!   answers each `VolumeGroupSnapshot` with a content listing a handle per matched claim;
//! * [`PlayedProvisioner`] plays the provisioner of a restore's target: it binds each new claim to
//!   a CSI volume (as if hydrated from its data source) and records what existed when it did.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// The CSI driver the played volumes and snapshots belong to.
pub const DRIVER: &str = "hostpath.csi.k8s.io";

/// `manifests/third-party/csi-snapshot`: the CSI snapshot CRDs vendored from external-snapshotter.
pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/third-party/csi-snapshot")
}

/// Installs the CSI snapshot CRDs on `context` (server-side apply, waits until established).
pub fn install_crds(pg: &crate::Playground, context: &str) {
    let dir = crds_dir();
    assert!(dir.is_dir(), "no CSI snapshot CRDs at {}", dir.display());
    crate::run_ok(
        pg.kubectl()
            .args(["--context", context, "apply", "--server-side", "-f"])
            .arg(&dir),
    );
    crate::run_ok(pg.kubectl().args([
        "--context",
        context,
        "wait",
        "--for=condition=Established",
        "crd/volumesnapshots.snapshot.storage.k8s.io",
        "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
        "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
        "crd/volumegroupsnapshots.groupsnapshot.storage.k8s.io",
        "crd/volumegroupsnapshotcontents.groupsnapshot.storage.k8s.io",
        "crd/volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io",
    ]));
}

pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        kind,
    ))
}

/// A `VolumeSnapshotClass` for [`DRIVER`], marked default.
pub async fn snapshot_class(member: &Client, name: &str) {
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": name,
                     "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": DRIVER, "deletionPolicy": "Delete"
    }))
    .expect("class");
    let api: Api<DynamicObject> = Api::all_with(member.clone(), &resource("VolumeSnapshotClass"));
    api.patch(
        name,
        &PatchParams::apply("multicluster-e2e").force(),
        &Patch::Apply(&class),
    )
    .await
    .expect("create a VolumeSnapshotClass");
}

/// Plays the provisioner: creates claim `name` in `ns` (unless it exists) and a CSI volume of
/// [`DRIVER`] bound to it, and marks the claim Bound.
pub async fn play_bound_claim(member: &Client, ns: &str, name: &str, class: &str) {
    play_bound_claim_of(member, ns, name, class, DRIVER).await;
}

/// [`play_bound_claim`] with a volume of `driver`.
pub async fn play_bound_claim_of(member: &Client, ns: &str, name: &str, class: &str, driver: &str) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), ns);
    if claims.get_opt(name).await.expect("read claim").is_none() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .expect("claim");
        claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
    }
    bind_claim_of(member, ns, name, class, driver).await;
}

/// Plays the provisioner for an existing claim: a CSI volume of [`DRIVER`] bound to it, and the
/// claim marked Bound.
pub async fn bind_claim(member: &Client, ns: &str, name: &str, class: &str) {
    bind_claim_of(member, ns, name, class, DRIVER).await;
}

async fn bind_claim_of(member: &Client, ns: &str, name: &str, class: &str, driver: &str) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), ns);
    let volume = format!("pv-{ns}-{name}");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Delete",
                 "claimRef": {"namespace": ns, "name": name},
                 "csi": {"driver": driver, "volumeHandle": format!("vol-{ns}-{name}")}}
    }))
    .expect("pv");
    Api::<PersistentVolume>::all(member.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    // Under the name of the controller this plays (the PV binder in kube-controller-manager), so
    // that what reads the claim's managed fields sees the binding as the control plane's.
    claims
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kube-controller-manager".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"volumeName": volume}})),
        )
        .await
        .expect("bind claim");
    claims
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await
        .expect("claim Bound");
}

/// What the played snapshotter saw when it cut a snapshot's volume snapshots.
#[derive(Debug, Clone, Default)]
pub struct Cut {
    /// How many `VolumeSnapshot`s of that snapshot existed when it cut them (it waits for
    /// `expected` of them before cutting any).
    pub snapshots: usize,
    /// Replicas of every Deployment and StatefulSet of the namespace at that moment.
    pub replicas: BTreeMap<String, i64>,
    /// When it cut them (the wall clock, to compare with files written by processes on this
    /// machine).
    pub at: Option<std::time::SystemTime>,
}

/// Plays the CSI snapshotter for one namespace of one member.
#[derive(Debug)]
pub struct PlayedSnapshotter {
    pub cuts: Arc<Mutex<BTreeMap<String, Cut>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlayedSnapshotter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlayedSnapshotter {
    /// Watches `ns` on `member`. For each snapshot (by the `multicluster.dev/snapshot` label) it
    /// waits until `expected` `VolumeSnapshot`s of it exist, records the namespace's workload
    /// replicas, then answers them all: a `VolumeSnapshotContent` with handle `snap-<uid>` and the
    /// snapshot cut and ready, or, for a snapshot whose name contains `broken`, a snapshot error.
    pub fn start(member: Client, ns: &str, expected: usize) -> Self {
        let cuts: Arc<Mutex<BTreeMap<String, Cut>>> = Arc::default();
        let ns = ns.to_owned();
        let seen = cuts.clone();
        let task = tokio::spawn(async move {
            let snapshots: Api<DynamicObject> =
                Api::namespaced_with(member.clone(), &ns, &resource("VolumeSnapshot"));
            let contents: Api<DynamicObject> =
                Api::all_with(member.clone(), &resource("VolumeSnapshotContent"));
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(list) = snapshots.list(&ListParams::default()).await else {
                    continue;
                };
                let mut by_snapshot: BTreeMap<String, Vec<DynamicObject>> = BTreeMap::new();
                for vs in list.items {
                    if vs.data["status"]["readyToUse"] == true
                        || vs.data["status"]["error"].is_object()
                    {
                        continue;
                    }
                    if let Some(owner) = vs.labels().get(multicluster_core::keys::SNAPSHOT_LABEL) {
                        by_snapshot.entry(owner.clone()).or_default().push(vs);
                    }
                }
                for (owner, pending) in by_snapshot {
                    let already = seen
                        .lock()
                        .expect("lock")
                        .get(&owner)
                        .map_or(0, |c| c.snapshots);
                    if already == 0 && pending.len() < expected {
                        continue;
                    }
                    if already == 0 {
                        let replicas = workload_replicas(&member, &ns).await;
                        seen.lock().expect("lock").insert(
                            owner.clone(),
                            Cut {
                                snapshots: pending.len(),
                                replicas,
                                at: Some(std::time::SystemTime::now()),
                            },
                        );
                    }
                    for vs in pending {
                        answer(&snapshots, &contents, &vs, owner.contains("broken")).await;
                    }
                }
            }
        });
        Self { cuts, task }
    }

    pub fn cut(&self, snapshot: &str) -> Option<Cut> {
        self.cuts.lock().expect("lock").get(snapshot).cloned()
    }
}

async fn workload_replicas(member: &Client, ns: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for kind in ["Deployment", "StatefulSet"] {
        let api: Api<DynamicObject> = Api::namespaced_with(
            member.clone(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind)),
        );
        for w in api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            out.insert(
                format!("{kind}/{}", w.name_any()),
                w.data["spec"]["replicas"].as_i64().unwrap_or(1),
            );
        }
    }
    out
}

async fn answer(
    snapshots: &Api<DynamicObject>,
    contents: &Api<DynamicObject>,
    vs: &DynamicObject,
    fail: bool,
) {
    let name = vs.name_any();
    let status: Value = if fail {
        json!({"status": {"readyToUse": false,
                          "error": {"message": "played snapshotter: the storage system refused", "time": now()}}})
    } else {
        let uid = vs.uid().unwrap_or_default();
        let content_name = format!("snapcontent-{uid}");
        let content: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name},
            "spec": {"deletionPolicy": "Delete", "driver": DRIVER,
                     "source": {"volumeHandle": format!("vol-{name}")},
                     "volumeSnapshotClassName": vs.data["spec"]["volumeSnapshotClassName"],
                     "volumeSnapshotRef": {"name": name, "namespace": vs.namespace(), "uid": uid}}
        }))
        .expect("content");
        let _ = contents.create(&PostParams::default(), &content).await;
        let _ = contents
            .patch_status(
                &content_name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"snapshotHandle": format!("snap-{uid}"), "readyToUse": true,
                                                "restoreSize": 1_073_741_824_u64}}),
                ),
            )
            .await;
        json!({"status": {"boundVolumeSnapshotContentName": content_name, "creationTime": now(),
                          "readyToUse": true, "restoreSize": "1Gi"}})
    };
    let _ = snapshots
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await;
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// What the played provisioner saw when it bound a claim.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    /// The claim's `dataSource` (kind/name), if any.
    pub data_source: Option<String>,
    /// Deployments, StatefulSets and CronJobs in the namespace at that moment.
    pub workloads: usize,
}

/// Plays the provisioner for one namespace of one member: binds every claim that appears.
#[derive(Debug)]
pub struct PlayedProvisioner {
    pub bindings: Arc<Mutex<BTreeMap<String, Binding>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlayedProvisioner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlayedProvisioner {
    pub fn start(member: Client, ns: &str) -> Self {
        let bindings: Arc<Mutex<BTreeMap<String, Binding>>> = Arc::default();
        let ns = ns.to_owned();
        let seen = bindings.clone();
        let task = tokio::spawn(async move {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), &ns);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Ok(list) = claims.list(&ListParams::default()).await else {
                    continue;
                };
                for claim in list.items {
                    let name = claim.name_any();
                    let spec = claim.spec.clone().unwrap_or_default();
                    if spec.volume_name.is_some() || seen.lock().expect("lock").contains_key(&name)
                    {
                        continue;
                    }
                    let workloads = workload_count(&member, &ns).await;
                    let data_source = spec.data_source.map(|d| format!("{}/{}", d.kind, d.name));
                    seen.lock().expect("lock").insert(
                        name.clone(),
                        Binding {
                            data_source,
                            workloads,
                        },
                    );
                    let class = spec.storage_class_name.unwrap_or_default();
                    bind_claim(&member, &ns, &name, &class).await;
                }
            }
        });
        Self { bindings, task }
    }

    pub fn bindings(&self) -> BTreeMap<String, Binding> {
        self.bindings.lock().expect("lock").clone()
    }
}

async fn workload_count(member: &Client, ns: &str) -> usize {
    let mut n = 0;
    for (group, kind) in [
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("batch", "CronJob"),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(
            member.clone(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind)),
        );
        n += api
            .list(&ListParams::default())
            .await
            .map_or(0, |l| l.items.len());
    }
    n
}

/// A CSI driver that snapshots volumes in groups (it has a `VolumeGroupSnapshotClass`), distinct
/// from [`DRIVER`] so that tests of single snapshots running beside are not affected.
pub const GROUP_DRIVER: &str = "group.hostpath.csi.k8s.io";

pub fn group_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        kind,
    ))
}

/// A `VolumeGroupSnapshotClass` for [`GROUP_DRIVER`].
pub async fn group_snapshot_class(member: &Client, name: &str) {
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshotClass",
        "metadata": {"name": name}, "driver": GROUP_DRIVER, "deletionPolicy": "Delete"
    }))
    .expect("group class");
    let api: Api<DynamicObject> =
        Api::all_with(member.clone(), &group_resource("VolumeGroupSnapshotClass"));
    api.patch(
        name,
        &PatchParams::apply("multicluster-e2e").force(),
        &Patch::Apply(&class),
    )
    .await
    .expect("create a VolumeGroupSnapshotClass");
}

/// What the played group snapshotter saw when it cut a group.
#[derive(Debug, Clone, Default)]
pub struct GroupCut {
    /// The group snapshot's name.
    pub group: String,
    /// The claims its selector matched.
    pub claims: Vec<String>,
    /// Replicas of every Deployment and StatefulSet of the namespace at that moment.
    pub replicas: BTreeMap<String, i64>,
    /// When it cut them (the wall clock, to compare with files written by processes on this
    /// machine).
    pub at: Option<std::time::SystemTime>,
}

/// Plays the CSI snapshot controller with group snapshots for one namespace: answers each
/// `VolumeGroupSnapshot` with a `VolumeGroupSnapshotContent` listing a snapshot handle
/// (`group-snap-<claim>`) for each claim its selector matches, and marks the group cut and ready.
#[derive(Debug)]
pub struct PlayedGroupSnapshotter {
    pub cuts: Arc<Mutex<Vec<GroupCut>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlayedGroupSnapshotter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlayedGroupSnapshotter {
    pub fn start(member: Client, ns: &str) -> Self {
        let cuts: Arc<Mutex<Vec<GroupCut>>> = Arc::default();
        let ns = ns.to_owned();
        let seen = cuts.clone();
        let task = tokio::spawn(async move {
            let groups: Api<DynamicObject> =
                Api::namespaced_with(member.clone(), &ns, &group_resource("VolumeGroupSnapshot"));
            let contents: Api<DynamicObject> = Api::all_with(
                member.clone(),
                &group_resource("VolumeGroupSnapshotContent"),
            );
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), &ns);
            let volumes: Api<PersistentVolume> = Api::all(member.clone());
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(list) = groups.list(&ListParams::default()).await else {
                    continue;
                };
                for vgs in list.items {
                    if vgs.data["status"]["readyToUse"] == true {
                        continue;
                    }
                    let name = vgs.name_any();
                    let uid = vgs.uid().unwrap_or_default();
                    let selector: Vec<String> =
                        vgs.data["spec"]["source"]["selector"]["matchLabels"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect();
                    let matched = claims
                        .list(&ListParams::default().labels(&selector.join(",")))
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default();
                    let mut info = Vec::new();
                    let mut handles = Vec::new();
                    for claim in &matched {
                        let Some(pv) = claim.spec.as_ref().and_then(|s| s.volume_name.clone())
                        else {
                            continue;
                        };
                        let Ok(pv) = volumes.get(&pv).await else {
                            continue;
                        };
                        let handle = pv
                            .spec
                            .and_then(|s| s.csi)
                            .map(|c| c.volume_handle)
                            .unwrap_or_default();
                        info.push(json!({"volumeHandle": handle, "snapshotHandle": format!("group-snap-{}", claim.name_any()),
                                         "readyToUse": true, "restoreSize": 1_073_741_824_u64}));
                        handles.push(handle);
                    }
                    let replicas = workload_replicas(&member, &ns).await;
                    seen.lock().expect("lock").push(GroupCut {
                        group: name.clone(),
                        claims: matched.iter().map(ResourceExt::name_any).collect(),
                        replicas,
                        at: Some(std::time::SystemTime::now()),
                    });
                    let content_name = format!("groupcontent-{uid}");
                    let content: DynamicObject = serde_json::from_value(json!({
                        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshotContent",
                        "metadata": {"name": content_name},
                        "spec": {"deletionPolicy": "Delete", "driver": GROUP_DRIVER,
                                 "source": {"volumeHandles": handles},
                                 "volumeGroupSnapshotClassName": vgs.data["spec"]["volumeGroupSnapshotClassName"],
                                 "volumeGroupSnapshotRef": {"name": name, "namespace": ns, "uid": uid}}
                    }))
                    .expect("group content");
                    contents
                        .create(&PostParams::default(), &content)
                        .await
                        .expect("create group content");
                    contents
                        .patch_status(&content_name, &PatchParams::default(), &Patch::Merge(
                            json!({"status": {"readyToUse": true, "volumeSnapshotInfoList": info}})))
                        .await
                        .expect("group content status");
                    groups
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {
                            "boundVolumeGroupSnapshotContentName": content_name,
                            "creationTime": now(), "readyToUse": true}})),
                        )
                        .await
                        .expect("group snapshot status");
                }
            }
        });
        Self { cuts, task }
    }

    pub fn cuts(&self) -> Vec<GroupCut> {
        self.cuts.lock().expect("lock").clone()
    }
}
