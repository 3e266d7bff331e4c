use schemars::JsonSchema;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Role;

/// How traffic and workloads are shared between members, and how they move when one fails.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    namespaced,
    shortname = "tp",
    category = "multicluster",
    status = "TrafficPolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.healthy"}"#,
    printcolumn = r#"{"name":"Unhealthy","type":"string","jsonPath":".status.unhealthy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    #[serde(default)]
    pub mode: TrafficMode,
    #[schemars(length(min = 1))]
    pub members: Vec<TrafficMember>,
    /// Consecutive healthy probes before a recovered member gets its share back.
    #[serde(default = "default_failback")]
    #[schemars(range(min = 1, max = 100))]
    pub failback_after_healthy_probes: u32,
    /// Services (by name, in this namespace on the members) whose traffic the policy steers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// A Gateway API `Gateway` on the members: every importing member that serves the Gateway API
    /// gets an `HTTPRoute` attached to it that sends the policy's services to the serving members
    /// with the active weights as `backendRefs` weights (exact, unlike kube-proxy's even spread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayParent>,
}

/// A `Gateway` an `HTTPRoute` attaches to (its `parentRefs` entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParent {
    pub name: String,
    /// Defaults to the service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

fn default_failback() -> u32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrafficMode {
    /// Every member is active.
    #[default]
    MultiActive,
    /// Actives serve; several standbys take over in priority order.
    ActiveStandby,
    /// Actives serve; one standby takes over.
    ActiveWithOneStandby,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMember {
    /// A `MemberCluster` name.
    pub name: String,
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
    /// Lower is preferred.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    #[serde(default)]
    pub role: Role,
    /// Overrides the member's own survival ratio for this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_survival_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_nodes: Option<u32>,
    /// Per-node weights and priorities; a backend carries its node's weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeWeight>,
    /// Taken out on purpose (maintenance): its share moves to the others until undrained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
}

fn default_weight() -> u32 {
    100
}

impl TrafficMember {
    /// A member with only the essentials set (no overrides, no node weights, not drained).
    pub fn new(name: &str, weight: u32, priority: u32, role: Role) -> Self {
        TrafficMember {
            name: name.to_owned(),
            weight,
            priority,
            role,
            min_survival_ratio: None,
            min_ready_nodes: None,
            nodes: Vec::new(),
            drained: false,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeWeight {
    pub name: String,
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicyStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub healthy: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<String>,
    /// Member → weight in effect now (0 for a member that gets no traffic).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub active_weights: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the hub last concluded per member (kept here so fail-back counting survives a restart
    /// of the hub server).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_states: BTreeMap<String, TrafficMemberState>,
    /// The latest changes of the active weights, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<TrafficTransition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficMemberState {
    pub healthy: bool,
    /// Healthy probes since the member last failed, while it waits to get its share back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovering: Option<u32>,
    /// The member's last probe this state counts (each probe counts once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTransition {
    pub time: Time,
    pub reason: String,
    /// Member → weight after the change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub active_weights: BTreeMap<String, u32>,
}
