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

/// The copy of hub object `object` that `distribution` puts on `member`: hub-only metadata and
/// status removed, the Distribution's label added, then the member's namespace mapping and JSON
/// Patches (in the order the overrides list them).
pub fn for_member(
    object: &Value,
    distribution: &str,
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
            labels.insert(keys::DISTRIBUTION.into(), distribution.into());
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

/// Decides from the labels of the member's object (`None` when it has none) and the policy.
pub fn decide(
    existing_labels: Option<&std::collections::BTreeMap<String, String>>,
    distribution: &str,
    policy: ConflictPolicy,
) -> Action {
    let Some(labels) = existing_labels else {
        return Action::Apply;
    };
    let owner = labels.get(keys::DISTRIBUTION);
    if owner.is_some_and(|o| o == distribution) {
        return Action::Apply;
    }
    match policy {
        ConflictPolicy::Adopt => Action::Apply,
        ConflictPolicy::Overwrite => Action::Overwrite,
        ConflictPolicy::Abort => Action::Conflict(match owner {
            Some(other) => format!(
                "exists on the member and belongs to Distribution {other}; set conflictPolicy Adopt or Overwrite to take it"
            ),
            None => "exists on the member and was not created by a Distribution; set conflictPolicy Adopt or Overwrite to take it".to_owned(),
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

    #[test]
    fn hub_only_fields_and_status_are_dropped_and_the_distribution_is_labelled() {
        let copy = for_member(&deployment(), "web", "m1", &[]).unwrap();
        assert_eq!(
            copy,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop",
                                "labels": {keys::DISTRIBUTION: "web"}},
                   "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn a_service_loses_the_hubs_cluster_ip() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                             "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]}});
        let copy = for_member(&service, "d", "m1", &[]).unwrap();
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
        let m1 = for_member(&deployment(), "d", "m1", &overrides).unwrap();
        assert_eq!(m1["spec"]["replicas"], 3);
        assert_eq!(m1["metadata"]["namespace"], "shop");
        let m2 = for_member(&deployment(), "d", "m2", &overrides).unwrap();
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
        let err = for_member(&deployment(), "d", "m1", &overrides).unwrap_err();
        let TransformError::Patch { member, object, .. } = err;
        assert_eq!((member.as_str(), object.as_str()), ("m1", "Deployment web"));
    }

    #[test]
    fn conflicts_follow_the_policy() {
        let ours = BTreeMap::from([(keys::DISTRIBUTION.to_owned(), "d".to_owned())]);
        let theirs = BTreeMap::from([(keys::DISTRIBUTION.to_owned(), "other".to_owned())]);
        let nobody = BTreeMap::new();
        use ConflictPolicy::*;
        assert_eq!(decide(None, "d", Abort), Action::Apply);
        assert_eq!(decide(Some(&ours), "d", Abort), Action::Apply);
        assert!(
            matches!(decide(Some(&theirs), "d", Abort), Action::Conflict(m) if m.contains("other"))
        );
        assert!(matches!(
            decide(Some(&nobody), "d", Abort),
            Action::Conflict(_)
        ));
        assert_eq!(decide(Some(&nobody), "d", Adopt), Action::Apply);
        assert_eq!(decide(Some(&theirs), "d", Overwrite), Action::Overwrite);
    }
}
