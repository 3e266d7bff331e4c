use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Role, SecretRef};

/// A member cluster registered on the hub (`kubectl multicluster join`).
///
/// Its labels (`metadata.labels`) are what `Distribution` and `TrafficPolicy` selectors match.
/// The credentials the hub uses to reach it live in a Secret, never in this object.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "MemberCluster",
    shortname = "mc",
    category = "multicluster",
    status = "MemberClusterStatus",
    printcolumn = r#"{"name":"Healthy","type":"string","jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.totalNodes"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterSpec {
    /// The member's API server URL, e.g. `https://10.0.0.1:6443`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("the endpoint must be an https:// URL"))]
    pub endpoint: String,
    /// Secret in `multicluster-system` holding the member's CA and the hub's token for it.
    pub credentials_secret: SecretRef,
    /// Share of traffic and workloads relative to the other members.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: u32,
    /// Lower numbers are preferred when traffic moves away from a failed member.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: u32,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub health: HealthCheck,
    /// The member's cluster ID (its About API `ClusterProperty` `id.k8s.io`), recorded by `join`:
    /// what Multi-Cluster Services objects name it by (`multicluster.kubernetes.io/source-cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

fn default_weight() -> u32 {
    100
}

/// How the hub probes a member and when it counts as healthy.
///
/// Healthy while the API answers and ready nodes ≥ ⌈total × `minSurvivalRatio`⌉, or ≥
/// `minReadyNodes` when that is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "default_survival_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_survival_ratio: f64,
    /// A fixed minimum of ready nodes; takes precedence over the ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_nodes: Option<u32>,
    #[serde(default = "default_probe_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Consecutive failed probes before a healthy member is marked unhealthy.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// Consecutive good probes before an unhealthy member is marked healthy.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            min_survival_ratio: default_survival_ratio(),
            min_ready_nodes: None,
            interval_seconds: default_probe_interval(),
            timeout_seconds: default_probe_timeout(),
            failure_threshold: default_threshold(),
            success_threshold: default_threshold(),
        }
    }
}

fn default_survival_ratio() -> f64 {
    0.5
}
fn default_probe_interval() -> u32 {
    10
}
fn default_probe_timeout() -> u32 {
    5
}
fn default_threshold() -> u32 {
    3
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    /// `Reachable` and `Healthy`, with reasons a person understands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_nodes: Option<u32>,
    /// The member's Kubernetes version (`gitVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
}
