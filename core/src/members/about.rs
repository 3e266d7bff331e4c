//! A member's identity in the clusterset, as the About API (KEP-2149) writes it: a cluster-scoped
//! `ClusterProperty` named `id.k8s.io` holding the cluster's ID, and one named `clusterset.k8s.io`
//! naming the clusterset it belongs to. `join` writes both on the member (keeping an ID the member
//! already has) and records the ID in the `MemberCluster`; the Multi-Cluster Services objects name
//! their source cluster by it.

use serde_json::{Value, json};

pub const GROUP: &str = "about.k8s.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "ClusterProperty";
pub const PLURAL: &str = "clusterproperties";
/// The property holding the cluster's ID.
pub const CLUSTER_ID: &str = "id.k8s.io";
/// The property naming the cluster's clusterset.
pub const CLUSTERSET: &str = "clusterset.k8s.io";

/// The vendored CRD (written from KEP-2149, see `manifests/third-party/about-api/SOURCE.md`).
pub const CRD_YAML: &str =
    include_str!("../../../manifests/third-party/about-api/about.k8s.io_clusterproperties.yaml");

pub fn api_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(GROUP, VERSION, KIND),
        PLURAL,
    )
}

/// The `ClusterProperty` `name` with `value`.
pub fn property(name: &str, value: &str) -> Value {
    json!({"apiVersion": format!("{GROUP}/{VERSION}"), "kind": KIND,
           "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kubectl-multicluster"}},
           "spec": {"value": value}})
}

/// The clusterset a hub's members join: named after the hub's cluster ID, so two hubs' fleets are
/// two clustersets.
pub fn clusterset_of(hub_id: &str) -> String {
    format!("hub-{hub_id}")
}

/// Why `member` cannot join `ours`, if it cannot: a cluster belongs to one clusterset at a time,
/// and the member already says it is in `existing`.
pub fn clusterset_refusal(member: &str, existing: Option<&str>, ours: &str) -> Option<String> {
    let existing = existing.filter(|e| *e != ours)?;
    Some(format!(
        "{member} already belongs to clusterset {existing} (its ClusterProperty {CLUSTERSET}); a \
         cluster is in one clusterset at a time: unjoin it from that clusterset's hub first"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_of_another_clusterset_is_refused_and_ours_or_none_is_not() {
        let ours = clusterset_of("abc");
        assert_eq!(clusterset_refusal("m1", None, &ours), None);
        assert_eq!(clusterset_refusal("m1", Some(&ours), &ours), None);
        let why = clusterset_refusal("m1", Some("hub-other"), &ours).unwrap();
        assert!(
            why.contains("hub-other") && why.contains(CLUSTERSET),
            "{why}"
        );
    }

    #[test]
    fn the_vendored_crd_is_the_cluster_scoped_about_api() {
        let crd: Value = serde_saphyr::from_str(CRD_YAML).unwrap();
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["plural"], PLURAL);
        assert_eq!(crd["spec"]["versions"][0]["name"], VERSION);
    }
}
