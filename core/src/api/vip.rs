use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Address ranges that virtual IPs are handed out from, and the domain their names live under.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "VipPool",
    category = "multicluster",
    status = "VipPoolStatus",
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.domainSuffix"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Free","type":"integer","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VipPoolSpec {
    /// IPv4 CIDRs (`10.96.100.0/24`) or inclusive ranges (`10.96.100.10-10.96.100.50`).
    #[schemars(length(min = 1))]
    pub ranges: Vec<String>,
    /// Hostnames are `<service>.<namespace>.<domainSuffix>`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("domainSuffix must be a DNS name such as mc.example.com"))]
    pub domain_suffix: String,
    /// Also write the annotations MetalLB and ExternalDNS read.
    #[serde(default)]
    pub ecosystem_annotations: EcosystemAnnotations,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcosystemAnnotations {
    /// `metallb.universe.tf/loadBalancerIPs`
    #[serde(default)]
    pub metallb: bool,
    /// `external-dns.alpha.kubernetes.io/hostname`
    #[serde(default)]
    pub external_dns: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VipPoolStatus {
    #[serde(default)]
    pub allocated: u32,
    #[serde(default)]
    pub free: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One allocated address. The object's name is the address itself, so the API server rejects a
/// second claim on it: that is what keeps two webhook replicas from handing out the same VIP.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "VipClaim",
    category = "multicluster",
    status = "VipClaimStatus",
    validation = Rule::new("self.metadata.name == self.spec.address").message("a VipClaim must be named after its address"),
    printcolumn = r#"{"name":"Pool","type":"string","jsonPath":".spec.pool"}"#,
    printcolumn = r#"{"name":"Hostname","type":"string","jsonPath":".spec.hostname"}"#,
    printcolumn = r#"{"name":"Owner Kind","type":"string","jsonPath":".spec.owner.kind"}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner.name"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.owner.namespace"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VipClaimSpec {
    pub pool: String,
    pub address: String,
    pub hostname: String,
    /// The object the address belongs to; when it is gone the claim is released.
    pub owner: ClaimOwner,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimOwner {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// Empty while the owner is being created (the webhook runs before the API server assigns one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VipClaimStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
