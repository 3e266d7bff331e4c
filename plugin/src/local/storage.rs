//! Storage on the playground's members, through the real CSI machinery: the project's playground
//! CSI driver (`multicluster-webhook csi-driver`: volumes as directories on the node, snapshots as
//! copies) on every node, registered with its kubelet; beside it the Kubernetes CSI sidecars
//! external-provisioner and csi-snapshotter, both with `--node-deployment` (each node provisions and
//! snapshots its own volumes, which is why the StorageClass binds on first consumer); and per
//! cluster the snapshot-controller. Each member gets the snapshot CRDs, a CSIDriver, and a default
//! StorageClass, VolumeSnapshotClass and VolumeGroupSnapshotClass named `playground`.
//!
//! The sidecars and the snapshot-controller authenticate as `multicluster-playground-csi`, bound
//! to a ClusterRole with what they use and nothing else.

use std::path::Path;

use anyhow::Context;
use kube::Client;
use serde_json::{Value, json};

use multicluster_core::playground::CSI_DRIVER as DRIVER;
/// The user the sidecars and the snapshot-controller are.
pub const CSI_USER: &str = "multicluster-playground-csi";
/// The default StorageClass, VolumeSnapshotClass and VolumeGroupSnapshotClass.
pub const CLASS: &str = "playground";

/// The CSI snapshot CRDs (snapshot.storage.k8s.io and groupsnapshot.storage.k8s.io), vendored.
pub fn snapshot_crds() -> anyhow::Result<Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>>{
    macro_rules! vendored {
        ($($file:literal),*) => {
            [$(include_str!(concat!("../../../manifests/third-party/csi-snapshot/", $file))),*]
        };
    }
    vendored!(
        "snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
        "snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
        "snapshot.storage.k8s.io_volumesnapshots.yaml",
        "groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses.yaml",
        "groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents.yaml",
        "groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml"
    )
    .iter()
    .map(|yaml| serde_saphyr::from_str(yaml).context("parsing a vendored CSI snapshot CRD"))
    .collect()
}

/// What the member's data mover admission policy admits on the playground
/// (`multicluster_core::members::join::mover_policy`): the busybox image running `hub_server`, the
/// binary the playground's hub server is, from the host with the host's C library, as the hub
/// server's `--mover-host-binary` has it. Written at `up`, before any join, which keeps it.
pub fn mover_policy_params(hub_server: &Path) -> Value {
    let mut paths = vec![hub_server.display().to_string()];
    paths.extend(multicluster_core::playground::host_library_dirs());
    multicluster_core::members::join::mover_policy_params(super::image::IMAGE, &paths)
}

/// The RBAC of [`CSI_USER`], the CSIDriver and the default classes.
pub fn member_objects() -> Vec<Value> {
    let rw = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let ro = ["get", "list", "watch"];
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": CSI_USER},
            "rules": [
                {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": rw},
                {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "watch", "update", "patch"]},
                {"apiGroups": [""], "resources": ["persistentvolumeclaims/status"], "verbs": ["update", "patch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch", "create", "update", "patch"]},
                {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ro},
                {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csinodes", "volumeattachments", "csistoragecapacities", "volumeattributesclasses"], "verbs": ro},
                {"apiGroups": ["snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io"], "resources": ["*"], "verbs": rw},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": rw}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": CSI_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CSI_USER},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CSI_USER}]
        }),
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
            "metadata": {"name": DRIVER},
            "spec": {"attachRequired": false, "podInfoOnMount": false,
                     "volumeLifecycleModes": ["Persistent"], "fsGroupPolicy": "File"}
        }),
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": DRIVER,
            "reclaimPolicy": "Delete",
            // A volume lives on one node: the claim binds where its first pod is scheduled.
            "volumeBindingMode": "WaitForFirstConsumer"
        }),
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": CLASS, "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER,
            "deletionPolicy": "Delete"
        }),
        json!({
            "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshotClass",
            "metadata": {"name": CLASS, "annotations": {"groupsnapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": DRIVER,
            "deletionPolicy": "Delete"
        }),
    ]
}

/// Installs the snapshot CRDs, then the objects of [`member_objects`].
pub async fn install(client: &Client) -> anyhow::Result<()> {
    crate::apply::install_these_crds(client, &snapshot_crds()?)
        .await
        .context("installing the CSI snapshot CRDs")?;
    crate::apply::apply_objects(client, &member_objects())
        .await
        .context("installing the playground's CSIDriver, storage and snapshot classes")?;
    Ok(())
}

/// Where the kubelet finds the driver: the longest Unix socket path of a node.
pub fn registration_socket(kubelet_root: &Path) -> std::path::PathBuf {
    kubelet_root.join("plugins_registry").join("csi-reg.sock")
}

/// The playground CSI driver of one node.
pub fn driver_args(node: &str, node_dir: &Path, kubelet_root: &Path) -> Vec<String> {
    vec![
        "csi-driver".into(),
        format!("--endpoint={}", csi_socket(node_dir).display()),
        format!(
            "--registration-socket={}",
            registration_socket(kubelet_root).display()
        ),
        format!("--node-id={node}"),
        format!(
            "--state-dir={}",
            node_dir.join("csi").join("state").display()
        ),
    ]
}

pub fn csi_socket(node_dir: &Path) -> std::path::PathBuf {
    node_dir.join("csi").join("csi.sock")
}

/// external-provisioner for one node's driver (the node is in `NODE_NAME`).
pub fn provisioner_args(node_dir: &Path, kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--csi-address={}", csi_socket(node_dir).display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--node-deployment=true".into(),
        "--feature-gates=Topology=true".into(),
        "--leader-election=false".into(),
        "--extra-create-metadata=true".into(),
        "--timeout=60s".into(),
        "--worker-threads=10".into(),
    ]
}

/// Whether a member's snapshots are cut per node (`--node-deployment` on each node's csi-snapshotter,
/// `--enable-distributed-snapshotting` on the snapshot-controller): needed when it has more than one
/// node. With one node its csi-snapshotter handles every content, group snapshots included;
/// distributed snapshotting does not handle group snapshots (external-snapshotter v8.7.0 labels
/// only VolumeSnapshotContents with the node that manages them, so a node's snapshotter never sees
/// a VolumeGroupSnapshotContent).
pub fn distributed_snapshots(nodes_in_cluster: usize) -> bool {
    nodes_in_cluster > 1
}

/// csi-snapshotter for one node's driver (the node is in `NODE_NAME`).
pub fn snapshotter_args(node_dir: &Path, kubeconfig: &Path, distributed: bool) -> Vec<String> {
    vec![
        format!("--csi-address={}", csi_socket(node_dir).display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--node-deployment={distributed}"),
        "--leader-election=false".into(),
        "--extra-create-metadata=true".into(),
        "--timeout=60s".into(),
        "--feature-gates=CSIVolumeGroupSnapshot=true".into(),
    ]
}

/// The cluster's snapshot-controller.
pub fn snapshot_controller_args(kubeconfig: &Path, distributed: bool) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-election=false".into(),
        format!("--enable-distributed-snapshotting={distributed}"),
        "--feature-gates=CSIVolumeGroupSnapshot=true".into(),
    ]
}
