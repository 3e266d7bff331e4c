//! Simulated nodes (`local up --simulated-nodes N`): N Node objects per member kept alive by one
//! KWOK process per member (`sigs.k8s.io/kwok`), for health and scale work that needs many nodes
//! and cannot afford a kubelet each. KWOK renews their leases (so a real controller-manager keeps
//! them Ready), runs the pods scheduled on them through its pod stages, and flips one NotReady when
//! it is labelled `node-not-ready.stage.kwok.x-k8s.io=true` (Ready again when the label goes).
//!
//! They are tainted `kwok.x-k8s.io/node=fake:NoSchedule`: only pods that tolerate it land there,
//! never a real workload that expects a real container. KWOK authenticates as
//! `multicluster-playground-kwok`, bound to a ClusterRole with what it writes.

use std::path::Path;

use serde_json::{Value, json};

/// The label KWOK manages nodes by.
pub const NODE_LABEL: (&str, &str) = ("type", "kwok");
/// The user KWOK is.
pub const KWOK_USER: &str = "multicluster-playground-kwok";
/// Label a simulated node with this (`=true`) to make it NotReady; remove it to make it Ready.
pub const NOT_READY_LABEL: &str = "node-not-ready.stage.kwok.x-k8s.io";

/// KWOK's configuration: parallelism for many nodes, and the stages it plays (vendored from KWOK).
pub fn config() -> String {
    let configuration = "apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 16
  nodePlayStageParallelism: 16
  podPlayStageParallelism: 16
  podsOnNodeSyncParallelism: 16
";
    let stages = [
        include_str!("../../../manifests/third-party/kwok-stages/node-initialize.yaml"),
        include_str!("../../../manifests/third-party/kwok-stages/node-heartbeat-with-lease.yaml"),
        include_str!("../../../manifests/third-party/kwok-stages/node-not-ready.yaml"),
        include_str!("../../../manifests/third-party/kwok-stages/pod-ready.yaml"),
        include_str!("../../../manifests/third-party/kwok-stages/pod-complete.yaml"),
        include_str!("../../../manifests/third-party/kwok-stages/pod-delete.yaml"),
    ];
    std::iter::once(configuration)
        .chain(stages)
        .map(|doc| doc.trim_start_matches("---\n").trim_end())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// The name of a member's `i`-th simulated node (1-based).
pub fn node_name(cluster: &str, i: u32) -> String {
    format!("{cluster}-sim-{i}")
}

/// A simulated Node object, as a kubelet would register it but for KWOK.
pub fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                NODE_LABEL.0: NODE_LABEL.1,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "simulated",
                // No kube-proxy runs for it: its address serves no node port, so it is no
                // backend of a multi-cluster service.
                multicluster_core::services::NO_NODE_PORTS_LABEL: "true"
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}
    })
}

/// KWOK's ClusterRole and its binding.
pub fn rbac() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": KWOK_USER},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "update", "patch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["update", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "update", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update", "patch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "update", "patch"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": KWOK_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": KWOK_USER},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KWOK_USER}]
        }),
    ]
}

/// KWOK for one cluster.
pub fn kwok_args(kubeconfig: &Path, config: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!(
            "--manage-nodes-with-label-selector={}={}",
            NODE_LABEL.0, NODE_LABEL.1
        ),
        // Pod addresses of simulated pods: a range no playground network uses.
        "--cidr=10.199.0.0/16".into(),
        "--node-ip=10.199.0.1".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_the_configuration_then_every_stage_as_yaml_documents() {
        let config = config();
        let docs: Vec<&str> = config.split("\n---\n").collect();
        assert_eq!(docs.len(), 7);
        assert!(docs[0].contains("kind: KwokConfiguration"));
        assert!(docs[1..].iter().all(|d| d.contains("kind: Stage")));
        assert!(config.contains(NOT_READY_LABEL));
    }
}
