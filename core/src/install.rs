//! What `kubectl multicluster init` installs into a hub, and what `manifests/` holds: the hub
//! server's namespace, ServiceAccount, least-privilege RBAC, Deployment, Service and
//! PodDisruptionBudget, and its webhook configurations. Objects are JSON values so that `init`,
//! `init --dry-run` and the checked-in YAML are the same bytes.

use serde_json::{Value, json};

use crate::SYSTEM_NAMESPACE;
use crate::lease::LEASE_NAME;
use crate::webhooks::{self, Endpoint};

/// Name of the ServiceAccount, Deployment, Service, PDB and RBAC objects.
pub const NAME: &str = "multicluster-webhook";
/// The Secret holding the serving certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_SECRET: &str = "multicluster-webhook-tls";
/// Where the hub server's image is published (`cargo xtask release` builds it).
pub const IMAGE_REPOSITORY: &str = "ghcr.io/multicluster-dev/multicluster-webhook";

/// The image, tagged with this release's version (`v` + the workspace version), the tag the
/// release's image layout carries.
pub fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:v{}", env!("CARGO_PKG_VERSION"))
}

/// The DNS name the API server uses for the Service: what the serving certificate must name.
pub fn service_dns_name() -> String {
    format!("{NAME}.{SYSTEM_NAMESPACE}.svc")
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "kubectl-multicluster"})
}

/// The hub-side ClusterRole (and binding) that lets the hub server read distribution sources.
pub const SOURCES_ROLE: &str = "multicluster-webhook-distribution-sources";

/// The user name the hub server's ServiceAccount authenticates as.
pub fn service_account_user() -> String {
    format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{NAME}")
}

/// Who the hub server is on the hub, and what it may do there: its ServiceAccount, RBAC and the
/// admission policy that confines its writes to sources (what `init` installs, without the
/// Namespace, Deployment, Service and PDB). The playground runs its hub server as this identity.
pub fn hub_server_identity_objects() -> Vec<Value> {
    const IDENTITY: &[&str] = &[
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    hub_server_objects(&default_image(), 1)
        .into_iter()
        .filter(|o| IDENTITY.contains(&o["kind"].as_str().unwrap_or_default()))
        .collect()
}

/// Namespace, ServiceAccount, RBAC, Deployment, Service and PDB, in the order they are applied.
pub fn hub_server_objects(image: &str, replicas: u32) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()}}),
        // Cluster-wide: what the admission decisions and background loops read and record.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": labels()},
        "rules": [
            {"apiGroups": ["multicluster.dev"], "resources": ["intents"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["intents/status"], "verbs": ["patch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["vippools"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["vippools/status"], "verbs": ["patch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["vipclaims"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["memberclusters"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["memberclusters/status"], "verbs": ["patch"]},
            // Patch: the finalizer that removes a Distribution's copies and stored sources with it.
            {"apiGroups": ["multicluster.dev"], "resources": ["distributions"], "verbs": ["get", "list", "watch", "patch"]},
            // Proxy: check the forwarded user's permission on the hub.
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["distributions/status"], "verbs": ["patch"]},
            {"apiGroups": ["multicluster.dev"], "resources": ["trafficpolicies"], "verbs": ["get", "list", "watch"]},
            // Restore admission: the snapshot's inventory.
            {"apiGroups": ["multicluster.dev"], "resources": ["namespacesnapshots"], "verbs": ["get"]},
            // Update: the traffic status is replaced with the resourceVersion read (a compare-and-swap).
            {"apiGroups": ["multicluster.dev"], "resources": ["trafficpolicies/status"], "verbs": ["patch", "update"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            // Whether a claim's Service still exists and holds its address.
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
            // The intent fence on `scale` writes reads the scaled object's labels (the built-in
            // scalable kinds; add your custom resources with a scale subresource).
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "replicasets"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["replicationcontrollers"], "verbs": ["get"]},
            // Multi-cluster services: the hub's one ServiceImport per exported name (its VIP), in
            // the exporters' namespace, created on the hub when missing (namespace sameness).
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": NAME, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": SYSTEM_NAMESPACE}]}),
        // Reading distribution sources: the distributable kinds but Secrets, which the hub server
        // reads only in namespaces `distribute` stored Secrets in (a Role there, see
        // `distribution::secret_reader_objects`). Operators who distribute their own kinds bind a
        // ClusterRole of their own.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": SOURCES_ROLE, "labels": labels()},
               "rules": crate::distribution::source_reader_rules()}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": SOURCES_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SOURCES_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": SYSTEM_NAMESPACE}]}),
        // RBAC cannot scope a verb by label: this policy confines the deletes and patches the
        // source roles grant to the stored sources of a Distribution being deleted.
        crate::distribution::source_guard_policy(&service_account_user()),
        crate::distribution::source_guard_binding(),
        // Only its own namespace, and only its own Lease once it exists.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            // The members' credentials: read to probe, written when the hub renews a token.
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]},
            // Snapshots: locations checked and swept, snapshots taken (on demand or on a
            // schedule) and restores made by the hub server; all four kinds live in this
            // namespace only.
            {"apiGroups": ["multicluster.dev"],
             "resources": ["storagelocations", "namespacesnapshots", "namespacerestores", "snapshotschedules"],
             "verbs": ["get", "list", "watch"]},
            // The finalizers that remove a snapshot's archive and volume snapshots with it; the
            // sweep a deleted snapshot asks for on its location.
            {"apiGroups": ["multicluster.dev"],
             "resources": ["storagelocations", "namespacesnapshots", "namespacerestores"],
             "verbs": ["patch"]},
            // A schedule's snapshots, and the expired ones its retention deletes.
            {"apiGroups": ["multicluster.dev"], "resources": ["namespacesnapshots"],
             "verbs": ["create", "delete"]},
            {"apiGroups": ["multicluster.dev"],
             "resources": ["storagelocations/status", "namespacesnapshots/status",
                           "namespacerestores/status", "snapshotschedules/status"],
             "verbs": ["patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [LEASE_NAME], "verbs": ["get", "update"]}
        ]}),
        // Proxy: who the hub's API server vouches for (the front-proxy CA), as every aggregated API
        // server reads it.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("{NAME}-auth-reader"), "namespace": "kube-system", "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "extension-apiserver-authentication-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": SYSTEM_NAMESPACE}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
               "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": SYSTEM_NAMESPACE}]}),
        deployment(image, replicas),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"selector": {"app.kubernetes.io/name": NAME},
                        "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}}}}),
    ]
}

/// Name of the NetworkPolicy that lets only the control plane reach the admission port.
pub const ADMISSION_POLICY_NAME: &str = "multicluster-webhook-admission-from-control-plane";

/// A NetworkPolicy for installs whose API server cannot present an admission client certificate
/// (`serve --admission-client-ca-file` unset): the hub server's pods accept connections on the
/// admission port only from `control_plane` (CIDRs of the API servers' addresses, as pods see
/// them), and on the health port (probes, metrics) from anywhere. Where the API server can present
/// the certificate, that is the stronger check: it names the caller, not an address.
pub fn admission_network_policy(control_plane: &[String]) -> Value {
    let from: Vec<Value> = control_plane
        .iter()
        .map(|cidr| json!({"ipBlock": {"cidr": cidr}}))
        .collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": ADMISSION_POLICY_NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
    "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": from, "ports": [{"protocol": "TCP", "port": "https"}]},
            {"ports": [{"protocol": "TCP", "port": "http-health"}]}
        ]}})
}

fn deployment(image: &str, replicas: u32) -> Value {
    let selector = json!({"matchLabels": {"app.kubernetes.io/name": NAME}});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
        "spec": {
            "replicas": replicas,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    // One replica per node, and across zones where there are zones.
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector},
                        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}
                    ],
                    "containers": [{
                        "name": "webhook",
                        "image": image,
                        // The data mover pods it runs on members are this very image.
                        "args": ["serve", "--listen=0.0.0.0:8443", "--health-listen=0.0.0.0:8080",
                                 "--tls-cert-file=/tls/tls.crt", "--tls-key-file=/tls/tls.key",
                                 format!("--mover-image={image}")],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "RUST_LOG", "value": "info"}],
                        "ports": [{"name": "https", "containerPort": 8443}, {"name": "http-health", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http-health"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http-health"},
                                          "periodSeconds": 10, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "256Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}},
                        // A Secret volume, so a rotated certificate reaches the server without a restart.
                        "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}]
                    }],
                    "volumes": [{"name": "tls", "secret": {"secretName": TLS_SECRET}}]
                }
            }
        }
    })
}

/// The webhook configurations for the in-cluster Service, trusting `ca_bundle_pem`.
/// What `init --uninstall` deletes, in order: the webhook configurations first (so that the
/// cluster is never left with webhooks that point at nothing, which would block the writes they
/// match), then the hub server and its RBAC, certificate and cert-manager objects. The CRDs and
/// the namespace stay: they hold the members' credentials, snapshots and everything users made.
pub fn uninstall_objects() -> Vec<Value> {
    let mut out = webhook_objects("");
    out.extend(proxy_api_objects(""));
    out.extend(
        hub_server_objects(&default_image(), 1)
            .into_iter()
            .rev()
            .filter(|o| o["kind"] != "Namespace"),
    );
    out.push(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": TLS_SECRET, "namespace": SYSTEM_NAMESPACE}}));
    out.extend(cert_manager_objects(false).into_iter().filter(|o| {
        !o["kind"]
            .as_str()
            .unwrap_or_default()
            .ends_with("WebhookConfiguration")
    }));
    out
}

pub fn webhook_objects(ca_bundle_pem: &str) -> Vec<Value> {
    let endpoint = Endpoint::Service {
        name: NAME.to_owned(),
    };
    let to_value = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    vec![
        to_value(serde_json::to_value(webhooks::mutating(
            &endpoint,
            ca_bundle_pem,
        ))),
        to_value(serde_json::to_value(webhooks::validating(
            &endpoint,
            ca_bundle_pem,
        ))),
    ]
}

/// The proxy API (`kubectl multicluster proxy`), served on the admission port with the same
/// certificate: an APIService, registered only where proxy access is wanted (`init --proxy-api`).
/// While the hub server is down, an unavailable APIService makes the hub's API server fail
/// discovery, which blocks namespace deletion there.
pub fn proxy_api_objects(ca_bundle_pem: &str) -> Vec<Value> {
    vec![crate::members::proxy::api_service(
        SYSTEM_NAMESPACE,
        NAME,
        443,
        ca_bundle_pem,
    )]
}

/// cert-manager variant: a self-signed Issuer and a Certificate writing the serving Secret, and the
/// webhook configurations with `cert-manager.io/inject-ca-from` instead of a caBundle.
pub fn cert_manager_objects(proxy_api: bool) -> Vec<Value> {
    let ca = format!("{NAME}-ca");
    let mut objects = vec![
        // A self-signed issuer only to make the CA; the CA issues the serving certificate. The
        // webhooks trust the CA, so a serving certificate rotated (every time cert-manager renews
        // it, with a new key) is trusted at once, with no window in which the API server still
        // holds the old bundle; the CA itself lasts ten years.
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
               "metadata": {"name": format!("{NAME}-selfsigned"), "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"selfSigned": {}}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
               "metadata": {"name": ca, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"isCA": true, "commonName": ca, "secretName": ca, "duration": "87600h",
                        "issuerRef": {"kind": "Issuer", "name": format!("{NAME}-selfsigned")},
                        "privateKey": {"algorithm": "ECDSA", "size": 256}}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
               "metadata": {"name": ca, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"ca": {"secretName": ca}}}),
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
               "metadata": {"name": NAME, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "spec": {"secretName": TLS_SECRET,
                        "dnsNames": [service_dns_name(), format!("{NAME}.{SYSTEM_NAMESPACE}.svc.cluster.local")],
                        "issuerRef": {"kind": "Issuer", "name": ca},
                        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}}}),
    ];
    let mut trusting = webhook_objects("");
    if proxy_api {
        trusting.extend(proxy_api_objects(""));
    }
    for mut object in trusting {
        object["metadata"]["annotations"] =
            json!({"cert-manager.io/inject-ca-from": format!("{SYSTEM_NAMESPACE}/{ca}")});
        for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
            if let Some(config) = hook["clientConfig"].as_object_mut() {
                config.remove("caBundle");
            }
        }
        if let Some(spec) = object["spec"].as_object_mut() {
            spec.remove("caBundle");
        }
        objects.push(object);
    }
    objects
}

/// Several objects as one multi-document YAML text.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

/// The comment at the top of every generated file under `manifests/`.
pub fn header() -> String {
    "# Generated from core/src/install.rs by `cargo xtask gen-crds`. Do not edit.\n\
     # install.yaml: the hub server (apply it, then either `kubectl multicluster init` for self-signed\n\
     # certificates, or webhooks-cert-manager.yaml where cert-manager runs).\n\
     # clusterset-dns.yaml: on every member, the clusterset.local DNS server (then forward the zone\n\
     # to its Service from the member's CoreDNS: docs/services.md, Clusterset DNS).\n"
        .to_owned()
}

/// The checked-in files under `manifests/` besides the CRDs.
pub fn manifest_files() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("install.yaml", hub_server_objects(&default_image(), 2)),
        ("webhooks-cert-manager.yaml", cert_manager_objects(false)),
        (
            "clusterset-dns.yaml",
            crate::services::dns::server_objects(&default_image(), None),
        ),
    ]
}

#[cfg(test)]
mod uninstall_tests {
    use super::*;

    #[test]
    fn uninstall_removes_the_webhooks_first_and_keeps_the_namespace() {
        let objects = uninstall_objects();
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert!(
            kinds[0].ends_with("WebhookConfiguration")
                && kinds[1].ends_with("WebhookConfiguration"),
            "{kinds:?}"
        );
        assert!(
            !kinds[2..]
                .iter()
                .any(|k| k.ends_with("WebhookConfiguration")),
            "{kinds:?}"
        );
        assert!(!kinds.contains(&"Namespace") && !kinds.contains(&"CustomResourceDefinition"));
        assert!(
            kinds.contains(&"Deployment")
                && kinds.contains(&"Secret")
                && kinds.contains(&"Certificate")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_admission_policy_admits_the_control_plane_only_on_the_admission_port() {
        let policy =
            admission_network_policy(&["10.0.0.0/24".to_owned(), "10.0.1.5/32".to_owned()]);
        let ingress = policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress[0]["from"].as_array().unwrap().len(), 2);
        assert_eq!(ingress[0]["from"][1]["ipBlock"]["cidr"], "10.0.1.5/32");
        assert_eq!(ingress[0]["ports"][0]["port"], "https");
        // The health port is open to probes; nothing else is.
        assert!(ingress[1]["from"].is_null());
        assert_eq!(ingress[1]["ports"][0]["port"], "http-health");
        assert_eq!(ingress.len(), 2);
        assert_eq!(
            policy["spec"]["policyTypes"],
            serde_json::json!(["Ingress"])
        );
        let pods = &policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"];
        let deployment = deployment("img", 1);
        assert_eq!(
            *pods,
            deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        );
    }

    #[test]
    fn checked_in_manifests_match_the_code() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        for (file, objects) in manifest_files() {
            let path = dir.join(file);
            let checked_in = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask gen-crds`", path.display()));
            assert!(
                checked_in == header() + &to_yaml(&objects).unwrap(),
                "{file} differs from what core/src/install.rs generates; run `cargo xtask gen-crds` and commit"
            );
        }
    }

    #[test]
    fn the_hub_server_runs_as_non_root_with_a_read_only_root_filesystem() {
        let objects = hub_server_objects("img", 2);
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert_eq!(deployment["spec"]["replicas"], 2);
    }

    #[test]
    fn cert_manager_webhooks_trust_a_ca_that_outlives_the_serving_certificate() {
        let objects = cert_manager_objects(true);
        let named = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
        };
        let ca = named("Certificate", "multicluster-webhook-ca");
        assert_eq!(ca["spec"]["isCA"], true);
        assert_eq!(
            named("Issuer", "multicluster-webhook-ca")["spec"]["ca"]["secretName"],
            "multicluster-webhook-ca"
        );
        assert_eq!(
            named("Certificate", NAME)["spec"]["issuerRef"]["name"],
            "multicluster-webhook-ca",
            "the serving certificate comes from the CA, not from the self-signed issuer"
        );
        let api_service = named("APIService", "v1alpha1.proxy.multicluster.dev");
        assert_eq!(
            api_service["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "multicluster-system/multicluster-webhook-ca"
        );
        assert!(
            !cert_manager_objects(false)
                .iter()
                .any(|o| o["kind"] == "APIService"),
            "the proxy API only when asked for"
        );
        let webhooks: Vec<_> = objects
            .iter()
            .filter(|o| {
                o["kind"]
                    .as_str()
                    .unwrap()
                    .ends_with("WebhookConfiguration")
            })
            .collect();
        assert_eq!(webhooks.len(), 2);
        for w in webhooks {
            assert_eq!(
                w["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "multicluster-system/multicluster-webhook-ca"
            );
            assert!(w["webhooks"][0]["clientConfig"].get("caBundle").is_none());
            assert_eq!(w["webhooks"][0]["clientConfig"]["service"]["name"], NAME);
        }
    }
}
