//! Distribution decisions: which hub objects leave the hub, for which members, in what order, and
//! what each becomes on a member. The hub server and the plugin carry objects to these functions.

pub mod order;
pub mod transform;

use std::collections::BTreeMap;

use kube::core::labels::{Selector, SelectorExt};

use crate::api::{DistributionSpec, DistributionTargets};

pub use order::{ObjectKey, OrderError, Plan, Step, plan};
pub use transform::{Action, Owner, TransformError, decide, for_member};

/// Field manager of every write a Distribution makes on a member.
pub const FIELD_MANAGER: &str = "multicluster";

/// The kinds distributable out of the box, as RBAC rules with `verbs`.
pub fn distributable_rules(verbs: &[&str]) -> Vec<serde_json::Value> {
    use serde_json::json;
    [
        (
            "",
            &[
                "configmaps",
                "secrets",
                "serviceaccounts",
                "services",
                "persistentvolumeclaims",
                "limitranges",
                "resourcequotas",
            ][..],
        ),
        ("apps", &["deployments", "statefulsets", "daemonsets"][..]),
        ("batch", &["jobs", "cronjobs"][..]),
        ("networking.k8s.io", &["ingresses", "networkpolicies"][..]),
        ("policy", &["poddisruptionbudgets"][..]),
        ("autoscaling", &["horizontalpodautoscalers"][..]),
        (
            "rbac.authorization.k8s.io",
            &[
                "roles",
                "rolebindings",
                "clusterroles",
                "clusterrolebindings",
            ][..],
        ),
        ("apiextensions.k8s.io", &["customresourcedefinitions"][..]),
    ]
    .iter()
    .map(|(group, resources)| json!({"apiGroups": [group], "resources": resources, "verbs": verbs}))
    .collect()
}

/// What the hub server may do on the hub cluster-wide with sources: read the distributable kinds
/// except Secrets (see [`secret_reader_objects`]), and delete or unlabel the ones `distribute`
/// stored when their Distribution is deleted ([`source_guard_policy`] confines those two verbs).
pub fn source_reader_rules() -> Vec<serde_json::Value> {
    let mut rules = distributable_rules(&SOURCE_VERBS);
    for rule in &mut rules {
        if let Some(resources) = rule["resources"].as_array_mut() {
            resources.retain(|r| r != "secrets");
        }
    }
    rules
}

/// What the hub server does to sources: reads them, and removes the stored ones (delete, or patch
/// away the `source-of` label) with their Distribution.
const SOURCE_VERBS: [&str; 5] = ["get", "list", "watch", "delete", "patch"];

/// Name of the policy (and its binding) confining the hub server's writes to sources.
pub const SOURCE_GUARD: &str = "multicluster-webhook-stored-sources-only";

/// A ValidatingAdmissionPolicy over the distributable kinds: a delete or update by `user` (the hub
/// server) is admitted only for an object labelled `multicluster.dev/source-of` (a source
/// `distribute` stored), and an update only when it takes that label off. So the verbs
/// [`source_reader_rules`] grants cannot touch anything else on the hub.
pub fn source_guard_policy(user: &str) -> serde_json::Value {
    use serde_json::json;
    let rules: Vec<serde_json::Value> = distributable_rules(&[])
        .into_iter()
        .map(|r| {
            json!({"apiGroups": r["apiGroups"], "apiVersions": ["*"], "resources": r["resources"],
                        "operations": ["DELETE", "UPDATE"]})
        })
        .collect();
    let label = crate::keys::SOURCE_OF;
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": SOURCE_GUARD, "labels": {"app.kubernetes.io/part-of": "kubectl-multicluster"}},
    "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": rules},
        "matchConditions": [{"name": "hub-server", "expression": format!("request.userInfo.username == '{user}'")}],
        "validations": [
            {"expression": format!("has(oldObject.metadata.labels) && '{label}' in oldObject.metadata.labels"),
             "message": format!("the hub server may delete or change only sources `distribute` stored (labelled {label})")},
            {"expression": format!("request.operation != 'UPDATE' || !has(object.metadata.labels) || !('{label}' in object.metadata.labels)"),
             "message": format!("the hub server may change a stored source only by taking its {label} label off")}
        ]}})
}

/// Binds [`source_guard_policy`] everywhere, denying what it rejects.
pub fn source_guard_binding() -> serde_json::Value {
    serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
           "metadata": {"name": SOURCE_GUARD, "labels": {"app.kubernetes.io/part-of": "kubectl-multicluster"}},
           "spec": {"policyName": SOURCE_GUARD, "validationActions": ["Deny"]}})
}

/// A Role and RoleBinding letting the hub server read Secrets in `namespace` only: what
/// `distribute` creates where it stores Secrets as sources.
pub fn secret_reader_objects(namespace: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    let name = "multicluster-webhook-distribution-secrets";
    let labels = json!({"app.kubernetes.io/part-of": "kubectl-multicluster"});
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": SOURCE_VERBS}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": crate::install::NAME,
                             "namespace": crate::SYSTEM_NAMESPACE}]}),
    ]
}

/// A Deployment's `replicas` per member under a TrafficPolicy's active weights (what
/// `targets.trafficPolicy` asks for); `None` while no member serves, so nothing is moved.
pub fn place_replicas(
    replicas: u32,
    policy: &crate::api::TrafficPolicySpec,
    active_weights: &BTreeMap<String, u32>,
) -> Option<BTreeMap<String, u32>> {
    let weights = crate::traffic::ActiveWeights {
        weights: active_weights.clone(),
        ..Default::default()
    };
    let placed = crate::traffic::divide_replicas(replicas, policy, &weights);
    (!placed.is_empty()).then_some(placed)
}

/// Whether an object a source matched may leave the hub. A Secret goes only when the source
/// names it, or when the Distribution opts in to Secrets its selectors match.
pub fn may_leave_hub(
    spec: &DistributionSpec,
    api_version: &str,
    kind: &str,
    named_directly: bool,
) -> bool {
    let is_secret = api_version == "v1" && kind == "Secret";
    !is_secret || named_directly || spec.include_selected_secrets
}

#[derive(Debug, thiserror::Error)]
#[error("the target selector is invalid: {0}")]
pub struct TargetError(String);

/// Members (name → labels) a Distribution targets, by name or label selector, sorted by name.
/// Names that are not registered members are returned separately so status can say so.
pub fn targets(
    targets: &DistributionTargets,
    members: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(Vec<String>, Vec<String>), TargetError> {
    let selector: Option<Selector> = targets
        .selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(|e| TargetError(e.to_string()))?;
    let mut chosen: Vec<String> = members
        .iter()
        .filter(|(name, labels)| {
            targets.members.contains(name) || selector.as_ref().is_some_and(|s| s.matches(labels))
        })
        .map(|(name, _)| name.clone())
        .collect();
    chosen.sort();
    let unknown = targets
        .members
        .iter()
        .filter(|m| !members.contains_key(*m))
        .cloned()
        .collect();
    Ok((chosen, unknown))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod placement_tests {
    use crate::api::{Role, TrafficMember, TrafficMode, TrafficPolicySpec};
    use std::collections::BTreeMap;

    #[test]
    fn replicas_follow_the_policys_active_weights() {
        let policy = TrafficPolicySpec {
            mode: TrafficMode::ActiveStandby,
            members: vec![
                TrafficMember::new("m1", 100, 0, Role::Active),
                TrafficMember::new("m2", 100, 1, Role::Standby),
            ],
            failback_after_healthy_probes: 3,
            services: vec![],
            gateway: None,
        };
        let weights = |a, b| BTreeMap::from([("m1".to_owned(), a), ("m2".to_owned(), b)]);
        assert_eq!(
            super::place_replicas(4, &policy, &weights(100, 0)),
            Some(weights(4, 0))
        );
        assert_eq!(
            super::place_replicas(4, &policy, &weights(0, 100)),
            Some(weights(0, 4))
        );
        assert_eq!(super::place_replicas(4, &policy, &weights(0, 0)), None);
    }
}

/// A Deployment's replicas as written in its source: Kubernetes' default of 1 when unset.
pub fn replicas_of(object: &serde_json::Value) -> u32 {
    object["spec"]["replicas"]
        .as_u64()
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(1)
}

/// What one sync of a Distribution found, summed over its target members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncTally {
    /// Objects in the plan (each one applied to every target member).
    pub objects: usize,
    /// Target members, and how many of them have everything applied.
    pub members: usize,
    pub complete: usize,
    /// Targets that did not answer, and targets that are not registered members.
    pub unreachable: Vec<String>,
    pub unknown: Vec<String>,
    /// Objects in conflict (on a member and not ours), in error, and copies edited on members.
    pub conflicts: usize,
    pub errors: usize,
    pub drifted: usize,
}

/// The Distribution's `Synced` condition after a sync: its status, reason and message. The first
/// problem in this order names it: unreachable members, unknown members, conflicts, drift, errors.
pub fn synced_condition(
    tally: &SyncTally,
    conflict_policy: crate::api::ConflictPolicy,
) -> (bool, &'static str, String) {
    let (complete, all) = (tally.complete, tally.members);
    if complete == all && tally.unknown.is_empty() && tally.drifted == 0 {
        (
            true,
            "Applied",
            format!("{} objects applied on {all} member(s)", tally.objects),
        )
    } else if !tally.unreachable.is_empty() {
        (
            false,
            "MembersUnreachable",
            format!(
                "{} did not answer; retrying with backoff; {complete} of {all} member(s) in sync",
                tally.unreachable.join(", ")
            ),
        )
    } else if !tally.unknown.is_empty() {
        (
            false,
            "UnknownMembers",
            format!("no MemberCluster named {}", tally.unknown.join(", ")),
        )
    } else if tally.conflicts > 0 {
        (
            false,
            "Conflicts",
            format!(
                "{} object(s) exist on members and are not ours (conflictPolicy {conflict_policy:?})",
                tally.conflicts
            ),
        )
    } else if tally.drifted > 0 {
        (
            false,
            "Drifted",
            format!(
                "{} copies edited on members (driftPolicy Report)",
                tally.drifted
            ),
        )
    } else {
        (
            false,
            "Errors",
            format!(
                "{} object(s) could not be applied; see status.members",
                tally.errors
            ),
        )
    }
}

#[cfg(test)]
mod sync_tests {
    use super::*;
    use crate::api::ConflictPolicy;

    fn tally() -> SyncTally {
        SyncTally {
            objects: 3,
            members: 2,
            complete: 2,
            ..Default::default()
        }
    }

    #[test]
    fn everything_applied_everywhere_is_synced() {
        assert_eq!(
            synced_condition(&tally(), ConflictPolicy::Abort),
            (
                true,
                "Applied",
                "3 objects applied on 2 member(s)".to_owned()
            )
        );
    }

    #[test]
    fn the_first_problem_names_the_condition() {
        let mut t = SyncTally {
            complete: 1,
            unreachable: vec!["member-2".into()],
            unknown: vec!["member-9".into()],
            conflicts: 1,
            errors: 1,
            ..tally()
        };
        let reason = |t: &SyncTally| synced_condition(t, ConflictPolicy::Abort).1;
        assert_eq!(reason(&t), "MembersUnreachable");
        assert_eq!(
            synced_condition(&t, ConflictPolicy::Abort).2,
            "member-2 did not answer; retrying with backoff; 1 of 2 member(s) in sync"
        );
        t.unreachable.clear();
        assert_eq!(reason(&t), "UnknownMembers");
        t.unknown.clear();
        assert_eq!(
            synced_condition(&t, ConflictPolicy::Abort).2,
            "1 object(s) exist on members and are not ours (conflictPolicy Abort)"
        );
        t.conflicts = 0;
        assert_eq!(reason(&t), "Errors");
        // Drift keeps a Distribution from being synced even when every member is complete.
        let drifted = SyncTally {
            drifted: 2,
            ..tally()
        };
        assert_eq!(
            synced_condition(&drifted, ConflictPolicy::Abort),
            (
                false,
                "Drifted",
                "2 copies edited on members (driftPolicy Report)".to_owned()
            )
        );
    }

    #[test]
    fn replicas_default_to_one_as_in_kubernetes() {
        assert_eq!(
            replicas_of(&serde_json::json!({"spec": {"replicas": 4}})),
            4
        );
        assert_eq!(replicas_of(&serde_json::json!({"spec": {}})), 1);
        assert_eq!(
            replicas_of(&serde_json::json!({"spec": {"replicas": -1}})),
            1
        );
    }
}

#[cfg(test)]
mod rbac_tests {
    #[test]
    fn the_hub_server_reads_no_secret_cluster_wide() {
        let rules = super::source_reader_rules();
        assert!(rules.iter().all(|r| {
            !r["resources"]
                .as_array()
                .unwrap()
                .contains(&"secrets".into())
        }));
        assert!(rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .contains(&"configmaps".into())
        }));
        let objects = super::secret_reader_objects("shop");
        assert_eq!(objects[0]["metadata"]["namespace"], "shop");
        assert_eq!(
            objects[0]["kind"], "Role",
            "namespaced, never a ClusterRole"
        );
    }
}

#[cfg(test)]
mod source_guard_tests {
    use serde_json::Value;

    /// (group, resource) pairs of rules.
    fn pairs(rules: &[Value]) -> Vec<(String, String)> {
        rules
            .iter()
            .flat_map(|r| {
                let group = r["apiGroups"][0].as_str().unwrap_or_default().to_owned();
                r["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |res| (group.clone(), res.as_str().unwrap_or_default().to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_kind_the_hub_server_may_delete_on_the_hub_is_confined_to_stored_sources() {
        let user = "system:serviceaccount:multicluster-system:multicluster-webhook";
        let policy = super::source_guard_policy(user);
        let rules = policy["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for rule in &rules {
            assert_eq!(rule["operations"], serde_json::json!(["DELETE", "UPDATE"]));
        }
        let guarded = pairs(&rules);
        let writable: Vec<Value> = super::source_reader_rules()
            .into_iter()
            .filter(|r| {
                r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.contains(&"delete".into()) || v.contains(&"patch".into()))
            })
            .collect();
        for pair in pairs(&writable) {
            assert!(
                guarded.contains(&pair),
                "{pair:?} is writable but not guarded"
            );
        }
        assert!(guarded.contains(&(String::new(), "secrets".to_owned())));
        let condition = policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap_or_default();
        assert!(condition.contains(user), "{condition}");
        let binding = super::source_guard_binding();
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    }
}
