//! Multi-Cluster Services API helpers for the end-to-end tests: the API resources (no Rust types
//! ship for them), exporting a Service, and playing the nodes whose addresses are a member's
//! backends.

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::json;

/// `ServiceExport` or `ServiceImport` (`multicluster.x-k8s.io/v1beta1`).
pub fn resource(kind: &str) -> ApiResource {
    multicluster_core::services::mcs_api_resource(kind)
}

/// `ServiceExport`s or `ServiceImport`s in `ns` on `cluster`.
pub fn api(cluster: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(cluster.clone(), ns, &resource(kind))
}

/// Plays a kubelet's node: a Node object with `address` as its InternalIP and a Ready condition
/// the test sets (no kubelet runs on the playground).
pub async fn play_node(member: &Client, name: &str, address: &str, ready: bool) {
    let nodes: Api<Node> = Api::all(member.clone());
    if nodes.get_opt(name).await.expect("playing a node").is_none() {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("playing a node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("playing a node");
    }
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": address}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "reason": "PlayedByTheTest", "message": "no kubelet here"}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("playing a node");
}

/// Creates namespace `name` on `cluster` (the MCS API's namespace sameness: the same name on
/// every member).
pub async fn create_namespace(cluster: &Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
    Api::<Namespace>::all(cluster.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

/// A NodePort Service `name` (port `port` named http; `node_port` fixed when given) and its
/// `ServiceExport`, asking VipPool `pool` for the multi-cluster VIP.
pub async fn export_service(
    member: &Client,
    ns: &str,
    name: &str,
    port: i32,
    node_port: Option<i32>,
    pool: &str,
) {
    let mut port_spec = json!({"name": "http", "port": port});
    if let Some(node_port) = node_port {
        port_spec["nodePort"] = node_port.into();
    }
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port_spec]}
    }))
    .expect("a Service");
    Api::<Service>::namespaced(member.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("creating Service {ns}/{name}: {e}"));
    let export: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns, "labels": {"multicluster.dev/vip-pool": pool}}
    }))
    .expect("a ServiceExport");
    api(member, ns, "ServiceExport")
        .create(&PostParams::default(), &export)
        .await
        .unwrap_or_else(|e| panic!("exporting {ns}/{name}: {e}"));
}

/// A headless Service `db` over a StatefulSet of `replicas` pods answering HTTP on 8080 with
/// `member`, and its ServiceExport.
pub fn headless_app(ns: &str, member: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  replicas: {replicas}
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo {member} > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: db, namespace: {ns}}}
"#,
        image = kubectl_multicluster::local::image::IMAGE
    )
}

/// The cluster ID (`id.k8s.io` ClusterProperty) of a member.
pub async fn cluster_id(member: &Client) -> String {
    let properties = Api::<DynamicObject>::all_with(
        member.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("about.k8s.io", "v1alpha1", "ClusterProperty"),
            "clusterproperties",
        ),
    );
    let id = properties
        .get("id.k8s.io")
        .await
        .expect("the member's id.k8s.io ClusterProperty (written by join)");
    id.data["spec"]["value"]
        .as_str()
        .expect("a cluster ID")
        .to_owned()
}

/// member-1 and member-2 joined (once per playground), their clients, and a fresh namespace
/// named from `prefix` on both (namespace sameness: an export is imported where the namespace is).
pub async fn joined_with_namespace(
    pg: &crate::Playground,
    prefix: &str,
) -> (Client, Client, String) {
    pg.join_members();
    let m1 = pg.client("member-1").await.expect("a client of member-1");
    let m2 = pg.client("member-2").await.expect("a client of member-2");
    let ns = crate::fresh_namespace(&m1, prefix)
        .await
        .expect("a fresh namespace on member-1");
    create_namespace(&m2, &ns).await;
    (m1, m2, ns)
}
