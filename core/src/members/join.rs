//! What joining a member creates, on the member and on the hub, named in one place.
//!
//! On the member: a ServiceAccount for the hub, a ClusterRole with what health needs (read nodes and
//! namespaces), an aggregated ClusterRole with what distribution needs (write the distributable
//! kinds, and any kind an operator adds with the aggregation label), and a Role that lets that
//! ServiceAccount renew its own token. On the hub: a Secret holding the member's endpoint, CA and that token (never the
//! joining user's credentials) and the `MemberCluster`.

use serde_json::{Value, json};

use crate::SYSTEM_NAMESPACE;

/// The hub's ServiceAccount (and ClusterRole, bindings) on every member.
pub const HUB_ACCOUNT: &str = "multicluster-hub";
/// Lifetime of the token the hub holds; the hub renews it at half-life.
pub const TOKEN_LIFETIME_SECONDS: i64 = 24 * 3600;

/// Keys of the hub-side credentials Secret.
pub mod secret_keys {
    pub const SERVER: &str = "server";
    pub const CA: &str = "ca.crt";
    pub const TOKEN: &str = "token";
    /// RFC 3339 time the token expires.
    pub const EXPIRES: &str = "expires";
}

/// The hub-side Secret of member `name`.
pub fn secret_name(member: &str) -> String {
    format!("member-{member}")
}

fn labels() -> Value {
    json!({"app.kubernetes.io/part-of": "kubectl-multicluster", "app.kubernetes.io/component": "hub-access"})
}

/// The objects `join` applies on the member, in order.
pub fn member_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE, "labels": labels()}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": HUB_ACCOUNT, "labels": labels()},
        "rules": [
            // Health: ready nodes against the survival ratio.
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": HUB_ACCOUNT, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": HUB_ACCOUNT},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
        // Distribution: the distributable kinds. Distributing Roles needs `bind` and `escalate`
        // (the hub grants what the Role grants, not what it holds). Operators who distribute
        // other kinds (their custom resources) bind a ClusterRole of their own to this account.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": DISTRIBUTE_ROLE, "labels": labels()},
               "rules": distribute_rules()}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": DISTRIBUTE_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": DISTRIBUTE_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
        // Proxy access: the hub forwards a hub user's request as that user. It has authorised the
        // user on the hub first; the member's own RBAC then decides what they may do here.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": PROXY_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": [""], "resources": ["users", "groups", "serviceaccounts"], "verbs": ["impersonate"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["uids", "userextras/*"], "verbs": ["impersonate"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": PROXY_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PROXY_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
        // Multi-cluster services: read exports, the exported Services and nodes (their addresses
        // are the backends), and write the import side (ServiceImport, a selector-less Service with
        // the VIP, EndpointSlices managed by multicluster.dev) plus the export's VIP and status.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": SERVICES_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports/status"], "verbs": ["patch"]},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            // Where a TrafficPolicy names a Gateway: the HTTPRoute with the exact weights.
            {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
             "verbs": ["get", "list", "watch", "create", "patch", "delete"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": SERVICES_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SERVICES_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
        // Snapshot and restore: a snapshot captures every kind of a namespace (custom resources
        // and Secrets included), so the hub reads every kind; a restore writes them back, scales
        // workloads down and up (ScaleDown quiesce), runs hook commands (`create` on
        // `pods/exec`, which `*` covers: Hooks quiesce), and takes and removes CSI snapshots. Leave
        // this binding out on a member whose namespaces the hub must not read: snapshots of it
        // then fail naming the kind it may not list.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": SNAPSHOT_ROLE, "labels": labels()},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "create", "patch"]},
            {"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["delete", "deletecollection"]},
            {"apiGroups": ["groupsnapshot.storage.k8s.io"], "resources": ["volumegroupsnapshots"], "verbs": ["delete", "deletecollection"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": SNAPSHOT_ROLE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SNAPSHOT_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
        // Renewing its own token, and nothing else in the namespace.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                          "resourceNames": [HUB_ACCOUNT], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE, "labels": labels()},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": HUB_ACCOUNT},
               "subjects": [{"kind": "ServiceAccount", "name": HUB_ACCOUNT, "namespace": SYSTEM_NAMESPACE}]}),
    ]
}

/// The member-side ClusterRole (and binding) that lets the hub act as a hub user (proxy access).
pub const PROXY_ROLE: &str = "multicluster-hub-proxy";

/// The member-side ClusterRole (and binding) for multi-cluster services.
pub const SERVICES_ROLE: &str = "multicluster-hub-services";

/// The member-side ClusterRole (and binding) for namespace snapshots and restores.
pub const SNAPSHOT_ROLE: &str = "multicluster-hub-snapshot";

/// The member-side ClusterRole (and binding) that lets the hub write distributed objects.
pub const DISTRIBUTE_ROLE: &str = "multicluster-hub-distribute";

fn distribute_rules() -> Vec<Value> {
    let mut rules = crate::distribution::distributable_rules(&[
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]);
    rules.push(
        json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"],
                      "verbs": ["bind", "escalate"]}),
    );
    // Namespaces the bundle needs: created when missing, never deleted.
    rules.push(json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}));
    rules
}

/// How to reach a member with the hub's stored credentials: its endpoint, CA (PEM) and the hub's
/// bearer token, with `timeout` on connecting and on each read.
pub fn client_config(
    server: &str,
    ca_pem: &str,
    token: &str,
    timeout: std::time::Duration,
) -> Result<kube::Config, MemberAccessError> {
    let url = server
        .parse()
        .map_err(|_| MemberAccessError::Endpoint(server.to_owned()))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(der_of(ca_pem)?);
    config.auth_info.token = Some(token.to_owned().into());
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    Ok(config)
}

/// The connection settings for the member at `endpoint` from its credentials Secret (the CA and
/// the hub's token, as `join` stored them).
pub fn client_config_from_secret(
    endpoint: &str,
    secret: &k8s_openapi::api::core::v1::Secret,
    timeout: std::time::Duration,
) -> Result<kube::Config, MemberAccessError> {
    let data = secret.data.as_ref();
    let field = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| MemberAccessError::MissingKey {
                secret: secret.metadata.name.clone().unwrap_or_default(),
                key,
            })
    };
    client_config(
        endpoint,
        &field(secret_keys::CA)?,
        &field(secret_keys::TOKEN)?,
        timeout,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum MemberAccessError {
    #[error("the member endpoint {0:?} is not a URL")]
    Endpoint(String),
    #[error("Secret {secret} has no {key}")]
    MissingKey { secret: String, key: &'static str },
    #[error("the member's CA certificate is not valid PEM: {0}")]
    Ca(#[from] base64::DecodeError),
}

/// DER certificates of PEM text.
pub fn der_of(pem: &str) -> Result<Vec<Vec<u8>>, base64::DecodeError> {
    use base64::Engine;
    let mut certs = Vec::new();
    let mut current = String::new();
    let mut inside = false;
    for line in pem.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                current.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                certs.push(base64::engine::general_purpose::STANDARD.decode(&current)?);
            }
            l if inside => current.push_str(l),
            _ => {}
        }
    }
    Ok(certs)
}

/// PEM text of DER certificates (a kubeconfig's CA as kube reads it).
pub fn pem_of(der_certs: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in der_certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_only_reads_nodes_and_namespaces_and_the_token_role_renews_only_its_own_token() {
        let objects = member_objects();
        let cluster_role = objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == HUB_ACCOUNT)
            .unwrap();
        for rule in cluster_role["rules"].as_array().unwrap() {
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
        }
        let role = objects.iter().find(|o| o["kind"] == "Role").unwrap();
        assert_eq!(role["rules"][0]["resourceNames"], json!([HUB_ACCOUNT]));
    }

    #[test]
    fn distribution_rights_name_their_kinds() {
        let objects = member_objects();
        let role = objects
            .iter()
            .find(|o| o["metadata"]["name"] == DISTRIBUTE_ROLE && o["kind"] == "ClusterRole")
            .unwrap();
        let rules = role["rules"].as_array().unwrap();
        assert!(
            rules.iter().all(|r| r["resources"] != json!(["*"])),
            "no wildcard"
        );
        assert!(rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .contains(&json!("secrets"))
        }));
    }

    #[test]
    fn pem_round_trips() {
        let der = vec![vec![1u8; 100], vec![2u8; 3]];
        assert_eq!(der_of(&pem_of(&der)).unwrap(), der);
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let pem = pem_of(&[b"foobar".to_vec()]);
        assert_eq!(
            pem,
            "-----BEGIN CERTIFICATE-----\nZm9vYmFy\n-----END CERTIFICATE-----\n"
        );
    }
}
