//! Distribution decisions: which hub objects leave the hub, for which members, in what order, and
//! what each becomes on a member. The hub server and the plugin carry objects to these functions.

pub mod order;
pub mod transform;

use std::collections::BTreeMap;

use kube::core::labels::{Selector, SelectorExt};

use crate::api::{DistributionSpec, DistributionTargets};

pub use order::{ObjectKey, OrderError, Plan, Step, plan};
pub use transform::{Action, TransformError, decide, for_member};

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
