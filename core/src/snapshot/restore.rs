//! What a restore writes, and in which order, as a pure function of the checked archive and the
//! `NamespaceRestore`: every resource moved to the target namespace and transformed; the claims
//! made to restore from their volume snapshots (with, on another namespace or member, the
//! pre-provisioned `VolumeSnapshotContent` and `VolumeSnapshot` they need); then the rest in the
//! distribution's dependency order, tier by tier, and the workloads last, at their recorded scale
//! (the archive holds them as they were before any quiesce).

use serde_json::Value;

use crate::api::RestoreTransform;
use crate::distribution::order::{self, OrderError};
use crate::keys;
use crate::snapshot::archive::Archive;
use crate::snapshot::volumes;

/// Kinds that run something: created last, once everything they mount and reference exists.
const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Pod",
];

/// Field managers of Kubernetes' own controllers: their writes to a restored object (a
/// Deployment's revision annotation, a claim's binding) are the cluster running it, not a user
/// changing it.
pub const CONTROL_PLANE_MANAGERS: &[&str] = &[
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "snapshot-controller",
    "csi-provisioner",
    "csi-snapshotter",
    "csi-attacher",
];

/// Why an object `restore_manager` wrote for restore `restore` must stay when that restore's
/// objects are removed, if it must: it no longer says this restore wrote it, or someone (but the
/// control plane) has changed it since, through the object itself rather than its status.
pub fn kept_because(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    restore: &str,
    restore_manager: &str,
) -> Option<String> {
    let by = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::RESTORED_BY));
    if by.map(String::as_str) != Some(restore) {
        return Some(match by {
            Some(other) => format!("written by restore {other}, not this one"),
            None => format!("no longer annotated {}={restore}", keys::RESTORED_BY),
        });
    }
    let changed_by: Vec<&str> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|f| f.manager.as_deref())
        .filter(|m| *m != restore_manager && !CONTROL_PLANE_MANAGERS.contains(m))
        .collect();
    (!changed_by.is_empty()).then(|| format!("changed since by {}", changed_by.join(", ")))
}

/// Every object `plan` writes, in the order to remove them: workloads first, the volume
/// snapshots the claims restored from last.
pub fn removal_order(plan: &RestorePlan) -> Vec<&Value> {
    plan.snapshot_objects
        .iter()
        .chain(&plan.claims)
        .chain(plan.tiers.iter().flatten())
        .rev()
        .collect()
}

/// Where the restore goes, and where the snapshot came from.
#[derive(Debug, Clone, Copy)]
pub struct RestoreTarget<'a> {
    /// The `NamespaceRestore`'s name (labels the CSI objects it makes, annotates every object).
    pub restore: &'a str,
    /// The `NamespaceSnapshot`'s name (its `VolumeSnapshot`s are `<snapshot>-<claim>`).
    pub snapshot: &'a str,
    pub cluster: &'a str,
    pub namespace: &'a str,
}

/// The writes of one restore, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestorePlan {
    /// Pre-provisioned `VolumeSnapshotContent`s and their `VolumeSnapshot`s (restores into
    /// another namespace or member), written first.
    pub snapshot_objects: Vec<Value>,
    /// Every claim, those with data naming their volume snapshot as `dataSource`. The restore
    /// waits until they are bound before it writes anything else.
    pub claims: Vec<Value>,
    /// The rest, tier by tier: each tier only references earlier ones and is written at once.
    /// The last tier holds the workloads.
    pub tiers: Vec<Vec<Value>>,
    /// Claims written empty and filled from the location's copy of their data by a mover pod
    /// before any tier is written: restores into another member of exported volumes.
    pub hydrations: Vec<Hydration>,
}

/// A claim a mover pod fills from the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hydration {
    pub claim: String,
    pub data: crate::snapshot::archive::VolumeData,
}

impl RestorePlan {
    pub fn total(&self) -> usize {
        self.snapshot_objects.len()
            + self.claims.len()
            + self.tiers.iter().map(Vec::len).sum::<usize>()
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RestoreError {
    #[error("transform of {object}: {message}")]
    Transform { object: String, message: String },
    #[error("{0}")]
    Order(#[from] OrderError),
}

/// Plans the restore of `archive` to `target`.
pub fn plan(
    archive: &Archive,
    target: RestoreTarget<'_>,
    transforms: &[RestoreTransform],
) -> Result<RestorePlan, RestoreError> {
    let source_ns = archive.manifest.source_namespace.as_str();
    // The snapshot's own VolumeSnapshots can be named directly only from where they live.
    let in_place =
        archive.manifest.source_cluster == target.cluster && source_ns == target.namespace;
    let mut out = RestorePlan::default();
    let mut rest = Vec::new();
    for resource in &archive.resources {
        let mut object = relocate(resource, source_ns, target);
        transform(&mut object, transforms)?;
        if object["kind"] != "PersistentVolumeClaim" {
            rest.push(object);
            continue;
        }
        let claim = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let entry = archive
            .manifest
            .volume_snapshots
            .iter()
            .find(|v| v.claim == claim);
        // Another member's storage cannot hold the snapshot's volumes: its claims are filled
        // from the exported data. The source member restores through CSI, which is faster and
        // holds the snapshots as long as the NamespaceSnapshot exists.
        let exported = entry.and_then(|e| e.data.as_ref().map(|d| (e, d)));
        if let Some((entry, data)) = exported
            && archive.manifest.source_cluster != target.cluster
        {
            volumes::claim_to_hydrate(&mut object, entry.restore_size.as_deref());
            out.hydrations.push(Hydration {
                claim: claim.clone(),
                data: data.clone(),
            });
        } else if let Some(entry) = entry {
            // A group's VolumeSnapshots are named by the group snapshot controller, not by us:
            // restore those through pre-provisioned objects even in place.
            let source = if in_place && entry.group.is_none() {
                volumes::volume_snapshot_name(target.snapshot, &claim)
            } else {
                let (content, snapshot) = volumes::restore_snapshot_objects(
                    target.restore,
                    target.namespace,
                    &claim,
                    &entry.driver,
                    &entry.snapshot_handle,
                );
                let name = snapshot["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                out.snapshot_objects.extend([content, snapshot]);
                name
            };
            volumes::claim_from_snapshot(&mut object, &source, entry.restore_size.as_deref());
        }
        out.claims.push(object);
    }
    let (workloads, others): (Vec<Value>, Vec<Value>) = rest
        .into_iter()
        .partition(|o| WORKLOADS.contains(&o["kind"].as_str().unwrap_or_default()));
    let plan = order::plan(&others, &[])?;
    let mut tiers: Vec<Vec<Value>> = plan
        .tiers()
        .iter()
        .map(|tier| {
            tier.iter()
                .filter_map(|s| s.index)
                .filter_map(|i| others.get(i).cloned())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    if !workloads.is_empty() {
        tiers.push(workloads);
    }
    out.tiers = tiers;
    Ok(out)
}

const DEFAULT_STORAGE_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Whether `claim` is bound by its provisioner as soon as it exists (so a restore waits for it
/// before creating the workloads), or only once a pod uses it: its class (named, or the cluster's
/// default among `classes`) has `volumeBindingMode: WaitForFirstConsumer`.
pub fn binds_immediately(claim: &Value, classes: &[Value]) -> bool {
    let class = match claim["spec"]["storageClassName"].as_str() {
        // Explicitly no class: bound to a pre-provisioned volume, by the control plane.
        Some("") => return true,
        Some(name) => classes.iter().find(|c| c["metadata"]["name"] == name),
        None => classes
            .iter()
            .find(|c| c["metadata"]["annotations"][DEFAULT_STORAGE_CLASS] == "true"),
    };
    class.is_none_or(|c| c["volumeBindingMode"] != "WaitForFirstConsumer")
}

/// A captured object as it goes to the target namespace: its namespace (and the namespace of
/// RoleBinding subjects that named the source) is the target's, and it says which restore wrote it.
fn relocate(resource: &Value, source_ns: &str, target: RestoreTarget<'_>) -> Value {
    let mut object = resource.clone();
    // `get_mut`, not `object[…]`: indexing a map mutably adds the key (as null) when absent.
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), target.namespace.into());
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(keys::RESTORED_BY.into(), target.restore.into());
        }
    }
    if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects {
            if subject["namespace"] == source_ns {
                subject["namespace"] = target.namespace.into();
            }
        }
    }
    object
}

fn transform(object: &mut Value, transforms: &[RestoreTransform]) -> Result<(), RestoreError> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let error = |message: String| RestoreError::Transform {
        object: format!("{kind} {name}"),
        message,
    };
    for t in transforms {
        let applies = t
            .target
            .as_ref()
            .is_none_or(|t| t.kind == kind && t.name.as_ref().is_none_or(|n| *n == name));
        if !applies || t.json_patch.is_empty() {
            continue;
        }
        let patch: json_patch::Patch = serde_json::to_value(&t.json_patch)
            .and_then(serde_json::from_value)
            .map_err(|e| error(e.to_string()))?;
        let before = identity(object);
        json_patch::patch(object, &patch).map_err(|e| error(e.to_string()))?;
        // Where the object goes is the restore's, not a transform's: the conflict checks (at
        // admission and before writing) look at the target namespace only, so a transform that
        // moved an object elsewhere, or made it another (perhaps cluster-wide) kind, would write
        // past both.
        if identity(object) != before {
            return Err(error(
                "a transform may not change an object's namespace, kind or apiVersion (restores \
                 write into the target namespace only)"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

/// What a transform must leave as it is: (apiVersion, kind, namespace).
fn identity(object: &Value) -> (Value, Value, Value) {
    (
        object["apiVersion"].clone(),
        object["kind"].clone(),
        object["metadata"]["namespace"].clone(),
    )
}

#[cfg(test)]
mod removal_tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    fn meta(by: Option<&str>, managers: &[(&str, Option<&str>)]) -> ObjectMeta {
        ObjectMeta {
            annotations: by.map(|b| [(keys::RESTORED_BY.to_owned(), b.to_owned())].into()),
            managed_fields: Some(
                managers
                    .iter()
                    .map(|(m, sub)| ManagedFieldsEntry {
                        manager: Some((*m).to_owned()),
                        subresource: sub.map(str::to_owned),
                        operation: Some("Update".to_owned()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_what_this_restore_wrote_and_nobody_changed_since_is_removed() {
        let ours = "multicluster-restore";
        assert_eq!(
            kept_because(&meta(Some("r1"), &[(ours, None)]), "r1", ours),
            None
        );
        // The control plane running it, and status writes, are not changes.
        let running = meta(
            Some("r1"),
            &[
                (ours, None),
                ("kube-controller-manager", None),
                ("someone", Some("status")),
            ],
        );
        assert_eq!(kept_because(&running, "r1", ours), None);
        let edited = meta(Some("r1"), &[(ours, None), ("kubectl-edit", None)]);
        assert_eq!(
            kept_because(&edited, "r1", ours).as_deref(),
            Some("changed since by kubectl-edit")
        );
        assert!(
            kept_because(&meta(Some("r2"), &[(ours, None)]), "r1", ours)
                .is_some_and(|w| w.contains("restore r2"))
        );
        assert!(kept_because(&meta(None, &[(ours, None)]), "r1", ours).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JsonPatchOperation, OverrideTarget};
    use crate::snapshot::archive::{Manifest, VolumeEntry};
    use serde_json::json;

    fn archive() -> Archive {
        let resources = vec![
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                   "spec": {"replicas": 3, "template": {"spec": {
                       "containers": [{"name": "db", "image": "cassandra:5"}],
                       "volumes": [{"name": "conf", "configMap": {"name": "db-conf"}}]}}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-conf"},
                   "data": {"a": "b"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "data-db-0"}, "spec": {"storageClassName": "fast"}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "scratch"}, "spec": {}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "ops"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "shop"},
                                {"kind": "ServiceAccount", "name": "x", "namespace": "other"}],
                   "roleRef": {"kind": "Role", "name": "ops", "apiGroup": "rbac.authorization.k8s.io"}}),
        ];
        Archive {
            manifest: Manifest {
                format_version: 1,
                tool: "t".into(),
                source_cluster: "member-1".into(),
                source_namespace: "shop".into(),
                time: "2026-12-01T00:00:00Z".into(),
                inventory: Vec::new(),
                left_out: Vec::new(),
                resources: Vec::new(),
                volume_snapshots: vec![VolumeEntry {
                    claim: "data-db-0".into(),
                    driver: "ebs.csi.aws.com".into(),
                    snapshot_handle: "snap-1".into(),
                    restore_size: Some("10Gi".into()),
                    storage_class: Some("fast".into()),
                    group: None,
                    data: None,
                }],
            },
            resources,
        }
    }

    fn target<'a>(cluster: &'a str, namespace: &'a str) -> RestoreTarget<'a> {
        RestoreTarget {
            restore: "r1",
            snapshot: "s1",
            cluster,
            namespace,
        }
    }

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn another_member_gets_pre_provisioned_snapshots_claims_first_and_workloads_last() {
        let plan = plan(&archive(), target("member-2", "shop-2"), &[]).unwrap_or_default();
        assert_eq!(
            names(&plan.snapshot_objects),
            [
                "VolumeSnapshotContent/shop-2-r1-data-db-0",
                "VolumeSnapshot/r1-data-db-0"
            ]
        );
        assert_eq!(
            plan.snapshot_objects[0]["spec"]["source"]["snapshotHandle"],
            "snap-1"
        );
        assert_eq!(
            names(&plan.claims),
            [
                "PersistentVolumeClaim/data-db-0",
                "PersistentVolumeClaim/scratch"
            ]
        );
        assert_eq!(plan.claims[0]["spec"]["dataSource"]["name"], "r1-data-db-0");
        assert_eq!(
            plan.claims[0]["spec"]["resources"]["requests"]["storage"],
            "10Gi"
        );
        assert!(
            plan.claims[1]["spec"]["dataSource"].is_null(),
            "no snapshot, no data source"
        );
        // Secrets first, the workloads in the last tier at their recorded scale.
        assert_eq!(names(&plan.tiers[0]), ["Secret/pw"]);
        let last = plan.tiers.last().cloned().unwrap_or_default();
        assert_eq!(names(&last), ["StatefulSet/db"]);
        assert_eq!(last[0]["spec"]["replicas"], 3);
        assert_eq!(plan.total(), 2 + 2 + 4);
        for o in plan.tiers.iter().flatten().chain(&plan.claims) {
            assert_eq!(o["metadata"]["namespace"], "shop-2", "{o}");
            assert!(
                o["kind"] == "RoleBinding" || o.get("subjects").is_none(),
                "{o}"
            );
            assert_eq!(o["metadata"]["annotations"][keys::RESTORED_BY], "r1", "{o}");
        }
        let binding = plan
            .tiers
            .iter()
            .flatten()
            .find(|o| o["kind"] == "RoleBinding")
            .cloned()
            .unwrap_or_default();
        assert_eq!(binding["subjects"][0]["namespace"], "shop-2");
        assert_eq!(
            binding["subjects"][1]["namespace"], "other",
            "other namespaces are left alone"
        );
    }

    #[test]
    fn claims_of_wait_for_first_consumer_classes_are_not_waited_for() {
        let classes = [
            json!({"metadata": {"name": "fast"}, "volumeBindingMode": "Immediate"}),
            json!({"metadata": {"name": "local", "annotations": {DEFAULT_STORAGE_CLASS: "true"}},
                   "volumeBindingMode": "WaitForFirstConsumer"}),
        ];
        let claim = |class: Value| json!({"spec": {"storageClassName": class}});
        assert!(binds_immediately(&claim(json!("fast")), &classes));
        assert!(!binds_immediately(&claim(json!("local")), &classes));
        assert!(
            !binds_immediately(&claim(Value::Null), &classes),
            "the default class decides"
        );
        assert!(binds_immediately(&claim(json!("")), &classes));
        assert!(binds_immediately(&claim(json!("unknown")), &[]));
    }

    #[test]
    fn exported_volumes_are_hydrated_from_the_location_on_another_member_and_restored_by_csi_on_their_own()
     {
        let mut exported = archive();
        exported.manifest.volume_snapshots[0].data = Some(crate::snapshot::archive::VolumeData {
            index: "abc".into(),
            bytes: 7,
            files: 1,
        });
        let elsewhere = plan(&exported, target("member-2", "shop-2"), &[]).unwrap_or_default();
        assert!(
            elsewhere.snapshot_objects.is_empty(),
            "no CSI snapshot is named"
        );
        assert_eq!(elsewhere.hydrations.len(), 1);
        assert_eq!(elsewhere.hydrations[0].claim, "data-db-0");
        assert_eq!(elsewhere.hydrations[0].data.index, "abc");
        let claim = &elsewhere.claims[0];
        assert!(claim["spec"]["dataSource"].is_null(), "{claim}");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast");

        let home = plan(&exported, target("member-1", "shop-copy"), &[]).unwrap_or_default();
        assert!(home.hydrations.is_empty());
        assert_eq!(home.claims[0]["spec"]["dataSource"]["name"], "r1-data-db-0");
    }

    #[test]
    fn in_place_claims_name_the_snapshots_own_volume_snapshot() {
        let plan = plan(&archive(), target("member-1", "shop"), &[]).unwrap_or_default();
        assert!(plan.snapshot_objects.is_empty());
        assert_eq!(plan.claims[0]["spec"]["dataSource"]["name"], "s1-data-db-0");
    }

    #[test]
    fn transforms_apply_to_their_target_and_a_failing_one_names_the_object() {
        let image = RestoreTransform {
            target: Some(OverrideTarget {
                kind: "StatefulSet".into(),
                name: Some("db".into()),
            }),
            json_patch: vec![JsonPatchOperation {
                op: crate::api::JsonPatchOp::Replace,
                path: "/spec/template/spec/containers/0/image".into(),
                value: Some(json!("cassandra:5.0.1")),
                from: None,
            }],
        };
        let plan = plan(
            &archive(),
            target("member-2", "shop-2"),
            std::slice::from_ref(&image),
        )
        .unwrap_or_default();
        let sts = plan
            .tiers
            .last()
            .and_then(|t| t.first())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["image"],
            "cassandra:5.0.1"
        );
        let everywhere = RestoreTransform {
            target: None,
            ..image
        };
        let err = super::plan(&archive(), target("member-2", "shop-2"), &[everywhere]).unwrap_err();
        assert!(
            matches!(&err, RestoreError::Transform { object, .. } if object == "ConfigMap db-conf"),
            "{err}"
        );
    }

    #[test]
    fn a_transform_may_not_move_an_object_out_of_the_target_namespace_or_change_its_kind() {
        for (path, value) in [
            ("/metadata/namespace", json!("kube-system")),
            ("/kind", json!("ClusterRole")),
            ("/apiVersion", json!("v2")),
        ] {
            let escape = RestoreTransform {
                target: Some(OverrideTarget {
                    kind: "ConfigMap".into(),
                    name: None,
                }),
                json_patch: vec![JsonPatchOperation {
                    op: crate::api::JsonPatchOp::Replace,
                    path: path.into(),
                    value: Some(value),
                    from: None,
                }],
            };
            let err = plan(&archive(), target("member-2", "shop-2"), &[escape]).unwrap_err();
            assert!(
                err.to_string()
                    .contains("may not change an object's namespace"),
                "{path}: {err}"
            );
        }
    }
}
