use schemars::JsonSchema;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{JsonPatchOperation, ObjectReference};

/// Objects kept on the hub, distributed to members in dependency order (secret-bearing first).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "Distribution",
    namespaced,
    shortname = "dist",
    category = "multicluster",
    status = "DistributionStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Conflicts","type":"string","jsonPath":".spec.conflictPolicy"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DistributionSpec {
    /// What to distribute: objects by reference, or by label selector.
    #[schemars(length(min = 1))]
    pub sources: Vec<DistributionSource>,
    /// Which members receive the objects.
    pub targets: DistributionTargets,
    /// Transforms applied per member on the way out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MemberOverride>,
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,
    #[serde(default)]
    pub mode: DistributionMode,
    /// What continuous mode does with a copy someone edited on a member.
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    /// A Secret leaves the hub only when it is named in `sources` or this is true.
    #[serde(default)]
    pub include_selected_secrets: bool,
    /// Extra dependency edges inside custom resources (e.g. a profile's credentials Secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_rules: Vec<DependencyRule>,
    /// What deleting the Distribution (or a member leaving its targets) does to the copies.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What happens to a Distribution's copies when it is deleted or a member stops being a target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the copies (only those labelled with this Distribution and this hub), then the
    /// sources `distribute` stored on the hub. A member that does not answer is waited for.
    #[default]
    Delete,
    /// Keep copies and sources; remove the labels that tie them to the Distribution.
    Orphan,
}

/// Exactly one of `object` or `selector`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.object) != has(self.selector)").message("set exactly one of object or selector"))]
pub struct DistributionSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<KindSelector>,
}

/// All hub objects of one kind (in one namespace, or all) matching a label selector.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindSelector {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub label_selector: LabelSelector,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.members) > 0 || has(self.selector)").message("name members or give a selector"))]
pub struct DistributionTargets {
    /// `MemberCluster` names.
    #[serde(default)]
    pub members: Vec<String>,
    /// Matches `MemberCluster` labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// A `TrafficPolicy` (same namespace) whose active weights place Deployments' replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberOverride {
    pub member: String,
    /// Source namespace → namespace on this member.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_map: BTreeMap<String, String>,
    /// Applied to every object matching `target` (or all when it is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_patch: Vec<JsonPatchOperation>,
    /// Restricts `jsonPatch` to objects of this kind (and name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<OverrideTarget>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideTarget {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What to do with an object that already exists on a member and was not put there by us.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConflictPolicy {
    /// Leave it and report a conflict.
    #[default]
    Abort,
    /// Take ownership of the fields we set, keeping the others' fields.
    Adopt,
    /// Force our version.
    Overwrite,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DistributionMode {
    /// Apply once and report.
    #[default]
    Once,
    /// Keep members in sync with the hub: re-apply on change, correct or report drift.
    Continuous,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DriftPolicy {
    /// Put the hub's version back and record that it did.
    #[default]
    Correct,
    /// Leave the member's edit and mark the object Drifted.
    Report,
}

/// A reference inside a custom resource: objects of `kind` depend on what `path` names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyRule {
    pub api_version: String,
    pub kind: String,
    /// JSON path to the referenced name, e.g. `.spec.credentials.secretName`.
    pub path: String,
    /// Kind of the referenced object.
    pub references_kind: String,
    /// Objects of `kind` carry secrets themselves and go in the first tier.
    #[serde(default)]
    pub secret_bearing: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `multicluster.dev/sync-requested` annotation the last finished sync saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_sync_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberDistributionStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberDistributionStatus {
    pub member: String,
    /// Objects the member should hold.
    #[serde(default)]
    pub total: u32,
    /// Objects applied and matching the hub.
    #[serde(default)]
    pub applied: u32,
    /// Why the member as a whole could not be synced (unreachable, bad override, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Every object that is not Applied, and the Applied ones too while the bundle is small
    /// (up to 200 objects), so that status stays far below the API server's object size limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectDistributionStatus>,
    /// Kinds and namespaces this Distribution has written to on the member: where to look for
    /// copies that left the Distribution and must be removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<WrittenKind>,
    /// Secrets this Distribution has written to on the member, by name: the hub's distribution
    /// account there may get Secrets but not list them, so leftovers are found from this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written_secrets: Vec<WrittenSecret>,
}

/// One Secret a Distribution wrote on a member.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
pub struct WrittenSecret {
    pub namespace: String,
    pub name: String,
}

/// One API kind (in one namespace, or cluster-wide) a Distribution wrote to on a member.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct WrittenKind {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDistributionStatus {
    pub object: ObjectReference,
    pub state: ObjectSyncState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ObjectSyncState {
    Pending,
    Applied,
    Drifted,
    Conflict,
    Error,
}
