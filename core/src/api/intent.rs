use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The current intent ID for the resources labelled `multicluster.dev/managed-by-intent: <name>`.
///
/// The validating webhook admits a write of such a resource only when it carries this ID in the
/// `multicluster.dev/intent-id` annotation; registering a new ID fences off the previous holder.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "Intent",
    namespaced,
    category = "multicluster",
    status = "IntentStatus",
    printcolumn = r#"{"name":"Intent ID","type":"string","jsonPath":".spec.intentId"}"#,
    printcolumn = r#"{"name":"Holder","type":"string","jsonPath":".spec.holder"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IntentSpec {
    #[schemars(length(min = 1, max = 253))]
    pub intent_id: String,
    /// Who holds the intent (a person, a pipeline, a manager process), for error messages.
    #[schemars(length(min = 1))]
    pub holder: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentStatus {
    /// 1 when first registered, bumped every time the intent ID changes (set by the hub server).
    #[serde(default)]
    pub epoch: u64,
    /// The intent ID this status describes; differs from `spec.intentId` until the hub server
    /// has recorded a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_intent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_intent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
}
