//! What a hub object becomes on one member, and what to do when the member already has it.

use serde_json::{Value, json};

use crate::api::{ConflictPolicy, MemberOverride};
use crate::keys;

/// Metadata an API server filled in for its own copy; meaningless (or harmful) in another cluster
/// (a member's copy, a restored object). Owner references name source UIDs: the target's garbage
/// collector would delete a copy whose owner UID it does not know.
pub(crate) const CLUSTER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
    "finalizers",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TransformError {
    #[error("override for member {member}: JSON Patch on {object}: {message}")]
    Patch {
        member: String,
        object: String,
        message: String,
    },
}

/// Who a copy belongs to: a Distribution of one hub. Both go on every copy as labels, and only a
/// copy carrying both is ever removed.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub distribution: &'a str,
    /// The hub's cluster ID (`cluster::cluster_id`).
    pub hub: &'a str,
}

impl Owner<'_> {
    /// The label selector that finds this owner's copies.
    pub fn selector(&self) -> String {
        format!(
            "{}={},{}={}",
            keys::DISTRIBUTION,
            self.distribution,
            keys::HUB,
            self.hub
        )
    }

    /// Whether an object with `labels` is one of this owner's copies.
    pub fn owns(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        labels.get(keys::DISTRIBUTION).map(String::as_str) == Some(self.distribution)
            && labels.get(keys::HUB).map(String::as_str) == Some(self.hub)
    }
}

/// The copy of hub object `object` that `owner` puts on `member`: hub-only metadata and status
/// removed, the owner's labels added, then the member's namespace mapping and JSON Patches (in
/// the order the overrides list them).
pub fn for_member(
    object: &Value,
    owner: Owner<'_>,
    member: &str,
    overrides: &[MemberOverride],
) -> Result<Value, TransformError> {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = copy["metadata"].as_object_mut() {
        for field in CLUSTER_METADATA {
            metadata.remove(*field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            annotations.remove("deployment.kubernetes.io/revision");
            annotations.remove(keys::SOURCE_HASH);
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.remove(keys::SOURCE_OF);
            labels.insert(keys::DISTRIBUTION.into(), owner.distribution.into());
            labels.insert(keys::HUB.into(), owner.hub.into());
        }
    }
    if copy["kind"] == "Service" && copy["apiVersion"] == "v1" {
        // The hub's API server allocated these from the hub's service range.
        if let Some(spec) = copy["spec"].as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
    }
    let kind = copy["kind"].as_str().unwrap_or_default().to_owned();
    let name = copy["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for o in overrides.iter().filter(|o| o.member == member) {
        map_namespaces(&mut copy, o);
        let applies = o
            .target
            .as_ref()
            .is_none_or(|t| t.kind == kind && t.name.as_ref().is_none_or(|n| *n == name));
        if applies && !o.json_patch.is_empty() {
            let patch: json_patch::Patch = serde_json::to_value(&o.json_patch)
                .and_then(serde_json::from_value)
                .map_err(|e| TransformError::Patch {
                    member: member.to_owned(),
                    object: format!("{kind} {name}"),
                    message: e.to_string(),
                })?;
            json_patch::patch(&mut copy, &patch).map_err(|e| TransformError::Patch {
                member: member.to_owned(),
                object: format!("{kind} {name}"),
                message: e.to_string(),
            })?;
        }
    }
    Ok(copy)
}

fn map_namespaces(copy: &mut Value, o: &MemberOverride) {
    if o.namespace_map.is_empty() {
        return;
    }
    let mapped = |ns: &Value| ns.as_str().and_then(|ns| o.namespace_map.get(ns)).cloned();
    if let Some(to) = mapped(&copy["metadata"]["namespace"]) {
        copy["metadata"]["namespace"] = to.into();
    }
    if copy["kind"] == "Namespace"
        && let Some(to) = mapped(&copy["metadata"]["name"])
    {
        copy["metadata"]["name"] = to.into();
    }
    if let Some(subjects) = copy["subjects"].as_array_mut() {
        for subject in subjects {
            if let Some(to) = mapped(&subject["namespace"]) {
                subject["namespace"] = to.into();
            }
        }
    }
}

/// What to do with one object on one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply, taking over fields another manager set (ours, or adopted).
    Apply,
    /// Replace the object with ours, dropping what other managers set.
    Overwrite,
    /// Leave the member's object alone and report why.
    Conflict(String),
}

/// Decides from the labels of the member's object (`None` when it has none) and the policy. A
/// copy labelled with this Distribution but no hub was written before copies carried the hub's ID:
/// it is ours. One labelled by another hub is not.
pub fn decide(
    existing_labels: Option<&std::collections::BTreeMap<String, String>>,
    owner: Owner<'_>,
    policy: ConflictPolicy,
) -> Action {
    let Some(labels) = existing_labels else {
        return Action::Apply;
    };
    let distribution = labels.get(keys::DISTRIBUTION);
    let hub = labels.get(keys::HUB);
    if distribution.is_some_and(|d| d == owner.distribution) && hub.is_none_or(|h| h == owner.hub) {
        return Action::Apply;
    }
    match policy {
        ConflictPolicy::Adopt => Action::Apply,
        ConflictPolicy::Overwrite => Action::Overwrite,
        ConflictPolicy::Abort => Action::Conflict(match (distribution, hub) {
            (Some(other), Some(h)) if h != owner.hub => format!(
                "exists on the member and belongs to Distribution {other} of another hub ({h}); set conflictPolicy Adopt or Overwrite to take it"
            ),
            (Some(other), _) => format!(
                "exists on the member and belongs to Distribution {other}; set conflictPolicy Adopt or Overwrite to take it"
            ),
            (None, _) => "exists on the member and was not created by a Distribution; set conflictPolicy Adopt or Overwrite to take it".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JsonPatchOp, JsonPatchOperation, OverrideTarget};
    use std::collections::BTreeMap;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                            "managedFields": [{}], "ownerReferences": [{"uid": "hub-uid"}],
                            "labels": {keys::SOURCE_OF: "web"},
                            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                            keys::SOURCE_HASH: "0123"}},
               "spec": {"replicas": 3}, "status": {"readyReplicas": 3}})
    }

    const OWNER: Owner<'static> = Owner {
        distribution: "d",
        hub: "hub-1",
    };

    #[test]
    fn only_a_copy_labelled_with_both_the_distribution_and_the_hub_is_owned() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(OWNER.owns(&labels(&[(keys::DISTRIBUTION, "d"), (keys::HUB, "hub-1")])));
        assert!(!OWNER.owns(&labels(&[(keys::DISTRIBUTION, "d")])));
        assert!(!OWNER.owns(&labels(&[(keys::DISTRIBUTION, "d"), (keys::HUB, "hub-2")])));
        assert!(!OWNER.owns(&labels(&[(keys::DISTRIBUTION, "e"), (keys::HUB, "hub-1")])));
        assert_eq!(
            OWNER.selector(),
            "multicluster.dev/distribution=d,multicluster.dev/hub=hub-1"
        );
    }

    #[test]
    fn hub_only_fields_and_status_are_dropped_and_the_distribution_is_labelled() {
        let copy = for_member(
            &deployment(),
            Owner {
                distribution: "web",
                hub: "hub-1",
            },
            "m1",
            &[],
        )
        .unwrap();
        assert_eq!(
            copy,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop",
                                "labels": {keys::DISTRIBUTION: "web", keys::HUB: "hub-1"}},
                   "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn a_service_loses_the_hubs_cluster_ip() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                             "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}});
        let copy = for_member(&service, OWNER, "m1", &[]).unwrap();
        assert_eq!(copy["spec"], json!({"ports": [{"port": 80}]}));
    }

    #[test]
    fn overrides_apply_only_to_their_member_and_target() {
        let overrides = vec![
            MemberOverride {
                member: "m2".into(),
                namespace_map: BTreeMap::from([("shop".into(), "shop-eu".into())]),
                json_patch: vec![JsonPatchOperation {
                    op: JsonPatchOp::Replace,
                    path: "/spec/replicas".into(),
                    from: None,
                    value: Some(json!(1)),
                }],
                target: Some(OverrideTarget {
                    kind: "Deployment".into(),
                    name: Some("web".into()),
                }),
            },
            MemberOverride {
                member: "m2".into(),
                json_patch: vec![JsonPatchOperation {
                    op: JsonPatchOp::Replace,
                    path: "/spec/replicas".into(),
                    from: None,
                    value: Some(json!(9)),
                }],
                target: Some(OverrideTarget {
                    kind: "StatefulSet".into(),
                    name: None,
                }),
                ..Default::default()
            },
        ];
        let m1 = for_member(&deployment(), OWNER, "m1", &overrides).unwrap();
        assert_eq!(m1["spec"]["replicas"], 3);
        assert_eq!(m1["metadata"]["namespace"], "shop");
        let m2 = for_member(&deployment(), OWNER, "m2", &overrides).unwrap();
        assert_eq!(m2["spec"]["replicas"], 1);
        assert_eq!(m2["metadata"]["namespace"], "shop-eu");
    }

    #[test]
    fn a_patch_that_does_not_fit_names_member_and_object() {
        let overrides = vec![MemberOverride {
            member: "m1".into(),
            json_patch: vec![JsonPatchOperation {
                op: JsonPatchOp::Remove,
                path: "/spec/nothing".into(),
                from: None,
                value: None,
            }],
            ..Default::default()
        }];
        let err = for_member(&deployment(), OWNER, "m1", &overrides).unwrap_err();
        let TransformError::Patch { member, object, .. } = err;
        assert_eq!((member.as_str(), object.as_str()), ("m1", "Deployment web"));
    }

    #[test]
    fn conflicts_follow_the_policy() {
        let ours = BTreeMap::from([(keys::DISTRIBUTION.to_owned(), "d".to_owned())]);
        let theirs = BTreeMap::from([(keys::DISTRIBUTION.to_owned(), "other".to_owned())]);
        let nobody = BTreeMap::new();
        let ours_here = BTreeMap::from([
            (keys::DISTRIBUTION.to_owned(), "d".to_owned()),
            (keys::HUB.to_owned(), "hub-1".to_owned()),
        ]);
        let another_hubs = BTreeMap::from([
            (keys::DISTRIBUTION.to_owned(), "d".to_owned()),
            (keys::HUB.to_owned(), "hub-2".to_owned()),
        ]);
        use ConflictPolicy::*;
        assert_eq!(decide(Some(&ours_here), OWNER, Abort), Action::Apply);
        assert!(
            matches!(decide(Some(&another_hubs), OWNER, Abort), Action::Conflict(m) if m.contains("another hub (hub-2)"))
        );
        assert_eq!(decide(None, OWNER, Abort), Action::Apply);
        assert_eq!(decide(Some(&ours), OWNER, Abort), Action::Apply);
        assert!(
            matches!(decide(Some(&theirs), OWNER, Abort), Action::Conflict(m) if m.contains("other"))
        );
        assert!(matches!(
            decide(Some(&nobody), OWNER, Abort),
            Action::Conflict(_)
        ));
        assert_eq!(decide(Some(&nobody), OWNER, Adopt), Action::Apply);
        assert_eq!(decide(Some(&theirs), OWNER, Overwrite), Action::Overwrite);
    }
}
