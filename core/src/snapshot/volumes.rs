//! The volume side of a snapshot as pure functions: which claims get a CSI `VolumeSnapshot` and
//! with which class, which workloads must stop for a `ScaleDown` quiesce, and the objects the hub
//! server writes (the `VolumeSnapshot`s of a snapshot; on restore, the pre-provisioned
//! `VolumeSnapshotContent` and its `VolumeSnapshot`, and the claim's data source).

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// The CSI snapshot API the hub server writes (`snapshot.storage.k8s.io/v1`).
pub const SNAPSHOT_API_VERSION: &str = "snapshot.storage.k8s.io/v1";
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// The CSI group snapshot API the hub server writes when a driver has a `VolumeGroupSnapshotClass`.
pub const GROUP_API_VERSION: &str = "groupsnapshot.storage.k8s.io/v1beta2";
const DEFAULT_GROUP_CLASS: &str = "groupsnapshot.storage.kubernetes.io/is-default-class";
/// Label a snapshot puts on the claims of one `VolumeGroupSnapshot` (its selector), while it is cut.
pub const GROUP_LABEL: &str = "multicluster.dev/snapshot-group";

/// What a snapshot does with one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    /// Take a `VolumeSnapshot` with this `VolumeSnapshotClass`.
    Snapshot { class: String },
    /// Snapshot together with the driver's other claims: one `VolumeGroupSnapshot` with this
    /// `VolumeGroupSnapshotClass` (the driver supports group snapshots).
    GroupSnapshot { class: String },
    /// Nothing to take, and nothing wrong: the claim is not bound, so it holds no data yet.
    Empty(String),
    /// The claim holds data that cannot be snapshotted; the snapshot fails or skips it by its
    /// `unsnapshottableVolumes` field.
    Unsnapshottable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    pub claim: String,
    pub storage_class: Option<String>,
    pub driver: Option<String>,
    /// The CSI volume handle (how a group snapshot names the volume).
    pub volume_handle: Option<String>,
    pub action: VolumeAction,
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Maps every claim to its volume, driver and snapshot class. `volumes` are the cluster's
/// PersistentVolumes (only those the claims name are looked at); `classes` its
/// VolumeSnapshotClasses and VolumeGroupSnapshotClasses (a driver's default class wins, else the
/// first by name). A driver with a group class gets its claims snapshotted as one group.
pub fn plan_volumes(
    claims: &[Value],
    volumes: &[Value],
    classes: &[Value],
    group_classes: &[Value],
) -> Vec<VolumePlan> {
    claims
        .iter()
        .map(|claim| {
            let name = s(&claim["metadata"]["name"]).unwrap_or_default();
            let storage_class = s(&claim["spec"]["storageClassName"]);
            let volume_name = s(&claim["spec"]["volumeName"]);
            let bound = claim["status"]["phase"] == "Bound";
            let volume = volume_name
                .as_deref()
                .and_then(|v| volumes.iter().find(|pv| pv["metadata"]["name"] == v));
            let driver = volume.and_then(|pv| s(&pv["spec"]["csi"]["driver"]));
            let action = match (bound, volume, &driver) {
                (false, _, _) | (_, None, _) => {
                    VolumeAction::Empty("not bound to a volume: it holds no data yet".to_owned())
                }
                (true, Some(pv), None) => VolumeAction::Unsnapshottable(format!(
                    "volume {} is not a CSI volume: no CSI snapshot can be taken of it",
                    pv["metadata"]["name"].as_str().unwrap_or("?")
                )),
                (true, Some(_), Some(driver)) => {
                    match (
                        class_for(driver, group_classes, DEFAULT_GROUP_CLASS),
                        class_for(driver, classes, DEFAULT_CLASS),
                    ) {
                        (Some(class), _) => VolumeAction::GroupSnapshot { class },
                        (None, Some(class)) => VolumeAction::Snapshot { class },
                        (None, None) => VolumeAction::Unsnapshottable(format!(
                            "no VolumeSnapshotClass for driver {driver}"
                        )),
                    }
                }
            };
            let volume_handle = volume.and_then(|pv| s(&pv["spec"]["csi"]["volumeHandle"]));
            VolumePlan {
                claim: name,
                storage_class,
                driver,
                volume_handle,
                action,
            }
        })
        .collect()
}

fn class_for(driver: &str, classes: &[Value], default_annotation: &str) -> Option<String> {
    let mut of_driver: Vec<&Value> = classes.iter().filter(|c| c["driver"] == driver).collect();
    of_driver.sort_by_key(|c| {
        let default = c["metadata"]["annotations"][default_annotation] == "true";
        (
            !default,
            c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    });
    of_driver.first().and_then(|c| s(&c["metadata"]["name"]))
}

/// A workload a `ScaleDown` quiesce scales to 0 and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub replicas: i64,
}

/// Workloads that mount any of `claims` (through their pod template, or a StatefulSet's claim
/// templates) and run pods now. A DaemonSet cannot be scaled down, so it is an error naming it.
pub fn workloads_mounting(
    objects: &[Value],
    claims: &BTreeSet<String>,
) -> Result<Vec<Workload>, String> {
    let mut out = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let spec = &o["spec"];
        let from_template = spec["template"]["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str());
        let mounts = from_template.into_iter().any(|c| claims.contains(c))
            || spec["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["metadata"]["name"].as_str())
                .any(|t| {
                    let prefix = format!("{t}-{name}-");
                    claims.iter().any(|c| {
                        c.strip_prefix(&prefix)
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    })
                });
        if !mounts {
            continue;
        }
        if kind == "DaemonSet" {
            return Err(format!(
                "DaemonSet {name} mounts a snapshotted claim and cannot be scaled down: \
                 use quiesce None (crash-consistent) or stop it yourself"
            ));
        }
        let replicas = spec["replicas"].as_i64().unwrap_or(1);
        if replicas > 0 {
            out.push(Workload {
                api_version: o["apiVersion"].as_str().unwrap_or("apps/v1").to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
                replicas,
            });
        }
    }
    Ok(out)
}

/// The `VolumeSnapshot` a snapshot takes of `claim` (named after both, in the claim's namespace,
/// labelled with the snapshot so that a failed one is cleaned up by label).
pub fn volume_snapshot(snapshot: &str, namespace: &str, claim: &str, class: &str) -> Value {
    json!({
        "apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot",
        "metadata": {
            "name": volume_snapshot_name(snapshot, claim),
            "namespace": namespace,
            "labels": {crate::keys::SNAPSHOT_LABEL: snapshot}
        },
        "spec": {
            "volumeSnapshotClassName": class,
            "source": {"persistentVolumeClaimName": claim}
        }
    })
}

/// `<snapshot>-<claim>`, cut to the 253 characters an object name may have.
pub fn volume_snapshot_name(snapshot: &str, claim: &str) -> String {
    let mut name = format!("{snapshot}-{claim}");
    name.truncate(253);
    name
}

/// The `VolumeGroupSnapshot` a snapshot takes of a driver's claims (labelled with [`GROUP_LABEL`]
/// = [`group_label_value`] of its name beforehand), and its name.
pub fn volume_group_snapshot(
    snapshot: &str,
    namespace: &str,
    driver: &str,
    class: &str,
) -> (String, Value) {
    let mut name = format!("{snapshot}-{}", driver.replace('.', "-"));
    name.truncate(253);
    let object = json!({
        "apiVersion": GROUP_API_VERSION, "kind": "VolumeGroupSnapshot",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {crate::keys::SNAPSHOT_LABEL: snapshot}},
        "spec": {
            "volumeGroupSnapshotClassName": class,
            "source": {"selector": {"matchLabels": {GROUP_LABEL: group_label_value(&name)}}}
        }
    });
    (name, object)
}

/// A label value (at most 63 characters) that stands for a group snapshot's name.
pub fn group_label_value(group: &str) -> String {
    crate::snapshot::archive::checksum(group.as_bytes())
        .trim_start_matches("sha256:")
        .chars()
        .take(32)
        .collect()
}

/// What a group snapshot's content says of each claim of the group: (claim, snapshot handle,
/// restore size), matched through the volumes' CSI handles. Claims it does not list are missing
/// from the result (the caller reports them).
pub fn group_members(
    content: &Value,
    plans: &[VolumePlan],
) -> Vec<(String, String, Option<String>)> {
    content["status"]["volumeSnapshotInfoList"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|info| {
            let volume = info["volumeHandle"].as_str()?;
            let plan = plans
                .iter()
                .find(|p| p.volume_handle.as_deref() == Some(volume))?;
            let size = match &info["restoreSize"] {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            Some((
                plan.claim.clone(),
                info["snapshotHandle"].as_str()?.to_owned(),
                size,
            ))
        })
        .collect()
}

/// On restore into another namespace or member: a pre-provisioned `VolumeSnapshotContent` for the
/// snapshot's handle (cluster-scoped), and the `VolumeSnapshot` in the target namespace bound to
/// it; a claim's `dataSource` then names that `VolumeSnapshot`.
pub fn restore_snapshot_objects(
    restore: &str,
    namespace: &str,
    claim: &str,
    driver: &str,
    handle: &str,
) -> (Value, Value) {
    let snapshot_name = volume_snapshot_name(restore, claim);
    let content_name = format!("{namespace}-{snapshot_name}");
    let content = json!({
        "apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name, "labels": {crate::keys::SNAPSHOT_LABEL: restore}},
        "spec": {
            // Retain: deleting the restore's objects must never delete the snapshot's data.
            "deletionPolicy": "Retain",
            "driver": driver,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"name": snapshot_name, "namespace": namespace}
        }
    });
    let snapshot = json!({
        "apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot",
        "metadata": {"name": snapshot_name, "namespace": namespace,
                     "labels": {crate::keys::SNAPSHOT_LABEL: restore}},
        "spec": {"source": {"volumeSnapshotContentName": content_name}}
    });
    (content, snapshot)
}

/// A captured claim made to restore from `volume_snapshot`: its `dataSource` (and
/// `dataSourceRef`) name the snapshot, its size is at least the snapshot's restore size.
pub fn claim_from_snapshot(claim: &mut Value, volume_snapshot: &str, restore_size: Option<&str>) {
    let source = json!({
        "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": volume_snapshot
    });
    let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("dataSource".into(), source.clone());
    spec.insert("dataSourceRef".into(), source);
    request_at_least(spec, restore_size);
}

/// A captured claim made to be filled by a mover pod: no data source, and at least the
/// snapshot's restore size.
pub fn claim_to_hydrate(claim: &mut Value, restore_size: Option<&str>) {
    let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.remove("dataSource");
    spec.remove("dataSourceRef");
    request_at_least(spec, restore_size);
}

/// A claim that requests no size gets the snapshot's restore size.
fn request_at_least(spec: &mut serde_json::Map<String, Value>, restore_size: Option<&str>) {
    if let Some(size) = restore_size
        && spec
            .get("resources")
            .and_then(|r| r["requests"]["storage"].as_str())
            .is_none()
    {
        spec.insert("resources".into(), json!({"requests": {"storage": size}}));
    }
}

/// Which claims a snapshot takes, and how: one by one, or together per driver and group class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Claims snapshotted one by one, with their `VolumeSnapshotClass`.
    pub single: Vec<(String, String)>,
    /// Claims snapshotted together: (driver, `VolumeGroupSnapshotClass`) → claims.
    pub grouped: std::collections::BTreeMap<(String, String), Vec<String>>,
}

impl Selection {
    /// Every claim to snapshot, alone or in a group, with its class: what the quiesce covers.
    pub fn all_claims(&self) -> Vec<(String, String)> {
        let grouped = self
            .grouped
            .iter()
            .flat_map(|((_, class), claims)| claims.iter().map(|c| (c.clone(), class.clone())));
        self.single.iter().cloned().chain(grouped).collect()
    }
}

/// The snapshot's volume selection from the claims' plans. Claims that cannot be snapshotted fail
/// the snapshot (naming each and why) unless the policy skips them; empty claims are not taken.
pub fn select(
    plans: &[VolumePlan],
    unsnapshottable: crate::api::UnsnapshottablePolicy,
) -> Result<Selection, String> {
    let refused: Vec<String> = plans
        .iter()
        .filter_map(|p| match &p.action {
            VolumeAction::Unsnapshottable(why) => Some(format!("{}: {why}", p.claim)),
            _ => None,
        })
        .collect();
    if !refused.is_empty() && unsnapshottable == crate::api::UnsnapshottablePolicy::Fail {
        return Err(format!(
            "claims that cannot be snapshotted (set unsnapshottableVolumes: Skip to skip them): {}",
            refused.join("; ")
        ));
    }
    let mut selection = Selection::default();
    for p in plans {
        match &p.action {
            VolumeAction::Snapshot { class } => {
                selection.single.push((p.claim.clone(), class.clone()))
            }
            VolumeAction::GroupSnapshot { class } => selection
                .grouped
                .entry((p.driver.clone().unwrap_or_default(), class.clone()))
                .or_default()
                .push(p.claim.clone()),
            VolumeAction::Empty(_) | VolumeAction::Unsnapshottable(_) => {}
        }
    }
    Ok(selection)
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use crate::api::UnsnapshottablePolicy;

    fn plan(claim: &str, driver: &str, action: VolumeAction) -> VolumePlan {
        VolumePlan {
            claim: claim.into(),
            storage_class: None,
            driver: Some(driver.into()),
            volume_handle: None,
            action,
        }
    }

    fn plans() -> Vec<VolumePlan> {
        vec![
            plan(
                "data-0",
                "a.csi",
                VolumeAction::GroupSnapshot {
                    class: "group-a".into(),
                },
            ),
            plan(
                "logs",
                "b.csi",
                VolumeAction::Snapshot {
                    class: "snap-b".into(),
                },
            ),
            plan(
                "data-1",
                "a.csi",
                VolumeAction::GroupSnapshot {
                    class: "group-a".into(),
                },
            ),
            plan("pending", "b.csi", VolumeAction::Empty("not bound".into())),
            plan(
                "scratch",
                "nfs",
                VolumeAction::Unsnapshottable("no snapshot class for nfs".into()),
            ),
        ]
    }

    #[test]
    fn claims_are_taken_alone_or_grouped_per_driver_and_class_and_empty_ones_not_at_all() {
        let selection = select(&plans(), UnsnapshottablePolicy::Skip).expect("skipped");
        assert_eq!(selection.single, [("logs".to_owned(), "snap-b".to_owned())]);
        assert_eq!(
            selection.grouped[&("a.csi".to_owned(), "group-a".to_owned())],
            ["data-0", "data-1"]
        );
        let all: Vec<String> = selection.all_claims().into_iter().map(|(c, _)| c).collect();
        assert_eq!(all, ["logs", "data-0", "data-1"]);
    }

    #[test]
    fn an_unsnapshottable_claim_fails_the_snapshot_unless_skipped_and_says_how_to_skip() {
        let error = select(&plans(), UnsnapshottablePolicy::Fail).unwrap_err();
        assert_eq!(
            error,
            "claims that cannot be snapshotted (set unsnapshottableVolumes: Skip to skip them): scratch: no snapshot class for nfs"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, volume: Option<&str>) -> Value {
        json!({"kind": "PersistentVolumeClaim", "metadata": {"name": name},
               "spec": {"storageClassName": "fast", "volumeName": volume},
               "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }}})
    }

    #[test]
    fn claims_map_to_their_driver_and_its_default_class_or_say_why_not() {
        let volumes = [
            json!({"metadata": {"name": "pv-a"}, "spec": {"csi": {"driver": "ebs.csi.aws.com"}}}),
            json!({"metadata": {"name": "pv-b"}, "spec": {"hostPath": {"path": "/x"}}}),
            json!({"metadata": {"name": "pv-c"}, "spec": {"csi": {"driver": "nfs.csi.k8s.io"}}}),
        ];
        let classes = [
            json!({"metadata": {"name": "a-plain"}, "driver": "ebs.csi.aws.com"}),
            json!({"metadata": {"name": "b-default", "annotations": {DEFAULT_CLASS: "true"}},
                   "driver": "ebs.csi.aws.com"}),
        ];
        let claims = [
            claim("data", Some("pv-a")),
            claim("host", Some("pv-b")),
            claim("nfs", Some("pv-c")),
            claim("new", None),
        ];
        let plans = plan_volumes(&claims, &volumes, &classes, &[]);
        assert_eq!(
            plans[0].action,
            VolumeAction::Snapshot {
                class: "b-default".into()
            }
        );
        assert_eq!(plans[0].driver.as_deref(), Some("ebs.csi.aws.com"));
        assert_eq!(plans[0].storage_class.as_deref(), Some("fast"));
        assert!(
            matches!(&plans[1].action, VolumeAction::Unsnapshottable(r) if r.contains("pv-b is not a CSI volume"))
        );
        assert_eq!(
            plans[2].action,
            VolumeAction::Unsnapshottable(
                "no VolumeSnapshotClass for driver nfs.csi.k8s.io".into()
            )
        );
        assert!(matches!(&plans[3].action, VolumeAction::Empty(r) if r.contains("not bound")));
    }

    #[test]
    fn a_driver_with_a_group_class_snapshots_its_claims_as_one_group_found_by_volume_handle() {
        let volumes = [
            json!({"metadata": {"name": "pv-a"}, "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-a"}}}),
            json!({"metadata": {"name": "pv-c"}, "spec": {"csi": {"driver": "nfs.csi.k8s.io", "volumeHandle": "vol-c"}}}),
        ];
        let classes = [json!({"metadata": {"name": "single"}, "driver": "nfs.csi.k8s.io"})];
        let groups = [json!({"metadata": {"name": "group"}, "driver": "ebs.csi.aws.com"})];
        let plans = plan_volumes(
            &[claim("data", Some("pv-a")), claim("nfs", Some("pv-c"))],
            &volumes,
            &classes,
            &groups,
        );
        assert_eq!(
            plans[0].action,
            VolumeAction::GroupSnapshot {
                class: "group".into()
            }
        );
        assert_eq!(
            plans[1].action,
            VolumeAction::Snapshot {
                class: "single".into()
            }
        );
        let (name, vgs) = volume_group_snapshot("s1", "shop", "ebs.csi.aws.com", "group");
        assert_eq!(name, "s1-ebs-csi-aws-com");
        assert_eq!(
            vgs["spec"]["source"]["selector"]["matchLabels"][GROUP_LABEL],
            json!(group_label_value(&name))
        );
        assert!(group_label_value(&"x".repeat(300)).len() <= 63);
        let content = json!({"status": {"volumeSnapshotInfoList": [
            {"volumeHandle": "vol-a", "snapshotHandle": "snap-a", "restoreSize": 1073741824},
            {"volumeHandle": "vol-unknown", "snapshotHandle": "snap-x"}]}});
        assert_eq!(
            group_members(&content, &plans),
            [(
                "data".to_owned(),
                "snap-a".to_owned(),
                Some("1073741824".to_owned())
            )]
        );
    }

    #[test]
    fn scale_down_finds_the_running_workloads_that_mount_the_claims() {
        let deployment = |name: &str, claim: &str, replicas: i64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                   "spec": {"replicas": replicas, "template": {"spec": {"volumes": [
                       {"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}}})
        };
        let objects = [
            deployment("web", "data", 3),
            deployment("stopped", "data", 0),
            deployment("other", "elsewhere", 2),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                   "spec": {"replicas": 2, "volumeClaimTemplates": [{"metadata": {"name": "pgdata"}}]}}),
        ];
        let claims: BTreeSet<String> = ["data", "pgdata-db-0"].map(String::from).into();
        let found = workloads_mounting(&objects, &claims).unwrap_or_default();
        let names: Vec<(&str, i64)> = found
            .iter()
            .map(|w| (w.name.as_str(), w.replicas))
            .collect();
        assert_eq!(names, [("web", 3), ("db", 2)]);
        // A claim template of another StatefulSet with the same prefix does not count.
        let claims: BTreeSet<String> = ["pgdata-db-replica-0".to_owned()].into();
        assert!(
            workloads_mounting(&objects[3..], &claims)
                .unwrap_or_default()
                .is_empty()
        );
        let daemon = json!({"kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"template": {"spec": {"volumes": [{"persistentVolumeClaim": {"claimName": "data"}}]}}}});
        let err = workloads_mounting(&[daemon], &["data".to_owned()].into()).unwrap_err();
        assert!(err.contains("DaemonSet agent"), "{err}");
    }

    #[test]
    fn a_restored_claim_names_a_snapshot_bound_to_a_retained_pre_provisioned_content() {
        let (content, snapshot) =
            restore_snapshot_objects("r1", "shop-2", "data", "ebs.csi.aws.com", "snap-0abc");
        assert_eq!(content["spec"]["source"]["snapshotHandle"], "snap-0abc");
        assert_eq!(content["spec"]["deletionPolicy"], "Retain");
        assert_eq!(content["spec"]["volumeSnapshotRef"]["namespace"], "shop-2");
        assert_eq!(
            snapshot["spec"]["source"]["volumeSnapshotContentName"],
            content["metadata"]["name"]
        );
        let mut claim = json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                               "spec": {"accessModes": ["ReadWriteOnce"]}});
        claim_from_snapshot(&mut claim, "r1-data", Some("5Gi"));
        assert_eq!(claim["spec"]["dataSource"]["name"], "r1-data");
        assert_eq!(claim["spec"]["dataSource"]["kind"], "VolumeSnapshot");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    }
}
