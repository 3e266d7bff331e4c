//! Cluster DNS of a member with nodes: CoreDNS in `kube-system`, as kubeadm runs it (a Deployment
//! of the `coredns` ServiceAccount behind the `kube-dns` Service at the tenth address of the
//! Service range, which every kubelet hands its pods as their nameserver).
//!
//! The playground reaches no registry, and CoreDNS is one static binary that
//! `tests/install-deps.sh` builds from the Go module proxy: the pod runs it from the playground's
//! busybox image ([`super::image`]) with the binary's cache directory mounted read-only. An image
//! of its own would be imported into every node on every `local up`, which measured 5 s of the
//! 14 s an `up` took, for 80 MB that are already on the machine. CoreDNS answers `cluster.local`
//! (Services, and pods by address) and the reverse zones; it forwards nothing, because the
//! playground has no upstream resolver to offer: a name outside the cluster fails at once instead
//! of timing out.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use kube::Client;
use serde_json::{Value, json};

/// The `kube-dns` Service's cluster IP: the tenth address of the Service range
/// (`--service-cluster-ip-range=10.96.0.0/16`), as kubeadm picks it.
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The clusterset DNS server's Service address (the next one), fixed so that CoreDNS's
/// configuration can name it before the Service exists.
pub const CLUSTERSET_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

const NAMESPACE: &str = "kube-system";
const NAME: &str = "coredns";

/// What CoreDNS serves. `ready` backs the pod's readiness probe: it answers only once the
/// `kubernetes` plugin has synced its caches, so a Ready pod resolves every existing Service.
pub fn corefile() -> String {
    format!(
        ".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
{clusterset}",
        clusterset =
            multicluster_core::services::dns::corefile_block(&CLUSTERSET_SERVICE_IP.to_string())
    )
}

/// The clusterset DNS server as every member runs it ([`multicluster_core::services::dns::server_objects`]),
/// but running `hub_server`, the binary this playground's hub server is, from the busybox image:
/// the binary and the host's C library mounted read-only. The release image would have to be
/// built (musl, another full build of the hub server) and imported into every node on every
/// `up`; this runs the very binary under test.
pub fn clusterset_objects(hub_server: &Path) -> anyhow::Result<Vec<Value>> {
    let libraries = multicluster_core::playground::host_library_dirs();
    for dir in &libraries {
        anyhow::ensure!(
            Path::new(dir).is_dir(),
            "the playground's clusterset DNS server runs the hub server binary with this machine's C \
             library from {dir}, which does not exist here (a Debian or Ubuntu layout is expected)"
        );
    }
    let mut objects = multicluster_core::services::dns::server_objects(
        super::image::IMAGE,
        Some(&CLUSTERSET_SERVICE_IP.to_string()),
    );
    let deployment = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .context("the clusterset DNS server has a Deployment")?;
    multicluster_core::playground::run_from_host(
        &mut deployment["spec"]["template"]["spec"],
        &hub_server.display().to_string(),
        &libraries,
    );
    Ok(objects)
}

/// Everything CoreDNS needs in a member: its account (read-only on what it serves), its
/// configuration, the Deployment (running `binary`) and the `kube-dns` Service.
pub fn objects(binary: &Path) -> Vec<Value> {
    let (dir, file) = (
        binary.parent().unwrap_or(Path::new("/")),
        binary
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("coredns"),
    );
    let labels = json!({"k8s-app": "kube-dns"});
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": NAMESPACE}
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {"Corefile": corefile()}
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "priorityClassName": "system-cluster-critical",
                        // CoreDNS resolves for the pods; it cannot resolve through itself.
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns",
                            "image": super::image::IMAGE,
                            "imagePullPolicy": "Never",
                            "command": [format!("/opt/coredns/{file}"), "-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}
                            ],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10, "failureThreshold": 5},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/coredns", "readOnly": true},
                                {"name": "binary", "mountPath": "/opt/coredns", "readOnly": true}
                            ]
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "binary", "hostPath": {"path": dir.display().to_string(), "type": "Directory"}}
                        ]
                    }
                }
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": SERVICE_IP.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}
                ]
            }
        }),
    ]
}

/// Creates CoreDNS's objects in a member (running `coredns`), and the clusterset DNS server it
/// forwards `clusterset.local` to (running `hub_server`).
pub async fn install(client: &Client, coredns: &Path, hub_server: &Path) -> anyhow::Result<()> {
    crate::apply::apply_objects(client, &objects(coredns))
        .await
        .context("installing CoreDNS (the cluster DNS)")?;
    crate::apply::apply_objects(client, &clusterset_objects(hub_server)?)
        .await
        .context("installing the clusterset DNS server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_ip_is_in_the_service_range_and_the_pods_use_the_cluster_domain() {
        let objects = objects(Path::new("/cache/coredns/v1.15.0/coredns"));
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("a Service");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.10");
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("a Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["command"][0], "/opt/coredns/coredns");
        assert_eq!(
            pod["volumes"][1]["hostPath"]["path"],
            "/cache/coredns/v1.15.0"
        );
        let corefile = corefile();
        let (main, clusterset) = corefile
            .split_once("clusterset.local:53")
            .expect("a server block for the clusterset zone");
        assert!(main.contains("kubernetes cluster.local in-addr.arpa ip6.arpa"));
        assert!(
            !main.contains("forward"),
            "the playground has no upstream resolver"
        );
        assert!(
            clusterset.contains("forward . 10.96.0.11:53"),
            "{clusterset}"
        );
    }

    #[test]
    fn the_clusterset_dns_server_runs_the_hub_server_binary_as_non_root_and_answers_on_the_fixed_address()
     {
        let objects =
            clusterset_objects(Path::new("/build/multicluster-webhook")).expect("objects");
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("a Service");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.11");
        assert_eq!(service["spec"]["ports"][0]["port"], 53);
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("a Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["containers"][0]["args"][0], "clusterset-dns");
        assert_eq!(
            pod["volumes"][0]["hostPath"]["path"],
            "/build/multicluster-webhook"
        );
        let role = objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole")
            .expect("a ClusterRole");
        let verbs: Vec<&Value> = role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .flat_map(|r| r["verbs"].as_array().expect("verbs"))
            .collect();
        assert!(
            verbs.iter().all(|v| *v == "list" || *v == "watch"),
            "read-only: {verbs:?}"
        );
    }
}
