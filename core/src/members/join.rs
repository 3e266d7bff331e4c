//! What joining a member creates, on the member and on the hub, named in one place.
//!
//! The hub holds one identity per capability on each member, never one for everything: a
//! compromised hub (or a leaked Secret) then grants only what that one capability needs there.
//! For each [`Capability`] the member gets a ServiceAccount, a ClusterRole with that capability's
//! rules and its binding, and a Role that lets the account renew its own token and nothing else;
//! the hub gets a Secret per capability holding the member's endpoint, CA and that account's token
//! (never the joining user's credentials). Grants a member's admin must opt into (`join
//! --allow-rbac`, `--allow-snapshots`, `--allow-hooks`, `--proxy-user`) are [`Grants`].

use serde_json::{Value, json};

use crate::SYSTEM_NAMESPACE;

/// Lifetime of the tokens the hub holds; the hub renews each at half-life.
pub const TOKEN_LIFETIME_SECONDS: i64 = 24 * 3600;

/// Keys of a hub-side credentials Secret.
pub mod secret_keys {
    pub const SERVER: &str = "server";
    pub const CA: &str = "ca.crt";
    pub const TOKEN: &str = "token";
    /// RFC 3339 time the token expires.
    pub const EXPIRES: &str = "expires";
    /// Proxy Secret only: the member-side users the proxy account may impersonate, one per line.
    pub const PROXY_USERS: &str = "impersonate-users";
    /// Proxy Secret only: the groups it may impersonate, one per line.
    pub const PROXY_GROUPS: &str = "impersonate-groups";
}

/// Label of every hub-side credentials Secret: the member it is for.
pub const MEMBER_LABEL: &str = "multicluster.dev/member";
/// Label of every hub-side credentials Secret: the capability its token serves.
pub const CAPABILITY_LABEL: &str = "multicluster.dev/capability";

/// What the hub does on a member, each with an identity of its own there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Reads nodes and namespaces (ready nodes against the survival ratio).
    Health,
    /// Writes the distributable kinds.
    Distribution,
    /// Multi-cluster services: reads exports and writes the import side.
    Services,
    /// Namespace snapshots and restores (only with `--allow-snapshots`).
    Snapshots,
    /// Forwards hub users' requests, impersonating the users and groups the member's admin named
    /// (only with `--proxy-user`).
    Proxy,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Health,
        Capability::Distribution,
        Capability::Services,
        Capability::Snapshots,
        Capability::Proxy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Health => "health",
            Capability::Distribution => "distribution",
            Capability::Services => "services",
            Capability::Snapshots => "snapshots",
            Capability::Proxy => "proxy",
        }
    }

    /// Its ServiceAccount on every member, and the name of its ClusterRole, Role and bindings.
    pub fn account(self) -> String {
        format!("multicluster-hub-{}", self.name())
    }

    /// The hub-side Secret with its token for the member whose credentials base name is `base`
    /// (`MemberCluster.spec.credentialsSecret.name`).
    pub fn secret_name(self, base: &str) -> String {
        format!("{base}-{}", self.name())
    }

    /// The capabilities a member joined with `grants` gives the hub.
    pub fn granted(grants: &Grants) -> Vec<Capability> {
        Self::ALL
            .into_iter()
            .filter(|c| match c {
                Capability::Snapshots => grants.snapshots,
                Capability::Proxy => !grants.proxy.users.is_empty(),
                _ => true,
            })
            .collect()
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a member's admin lets the hub do beyond the defaults, at `join`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Distribute Roles, ClusterRoles and their bindings (`bind` and `escalate`: the hub then
    /// grants what a distributed Role grants, so this is as strong as the roles it carries).
    pub rbac: bool,
    /// Snapshot and restore namespaces: read and write the namespaced kinds, Secrets included.
    pub snapshots: bool,
    /// Run quiesce hook commands in pods (`create pods/exec`); implies `snapshots`.
    pub hooks: bool,
    /// Whom proxied requests may act as (`--proxy-user`, `--proxy-group`); no proxy account when
    /// it names no user.
    pub proxy: crate::members::proxy::ProxyAccess,
}

/// Base name of the hub-side credentials Secrets of member `name`.
pub fn secret_name(member: &str) -> String {
    format!("member-{member}")
}

fn labels(capability: Option<Capability>) -> Value {
    let mut labels = json!({"app.kubernetes.io/part-of": "kubectl-multicluster",
                            "app.kubernetes.io/component": "hub-access"});
    if let Some(c) = capability {
        labels[CAPABILITY_LABEL] = c.name().into();
    }
    labels
}

/// RBAC rules of one capability's account.
pub fn rules(capability: Capability, grants: &Grants) -> Vec<Value> {
    match capability {
        Capability::Health => vec![
            json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}),
            json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}),
        ],
        Capability::Distribution => distribution_rules(grants),
        // Read exports, the exported Services and nodes (their addresses are the backends), and
        // write the import side (ServiceImport, a selector-less Service with the VIP,
        // EndpointSlices managed by multicluster.dev) plus the export's VIP and status; the
        // HTTPRoute with the exact weights where a TrafficPolicy names a Gateway.
        Capability::Services => vec![
            json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": ["get", "list", "watch", "patch"]}),
            json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports/status"], "verbs": ["patch"]}),
            json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"],
                   "verbs": ["get", "list", "watch", "create", "patch", "delete"]}),
            json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports/status"], "verbs": ["patch"]}),
            json!({"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]}),
            json!({"apiGroups": [""], "resources": ["nodes", "namespaces"], "verbs": ["get", "list", "watch"]}),
            json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                   "verbs": ["get", "list", "watch", "create", "patch", "delete"]}),
            json!({"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
                   "verbs": ["get", "list", "watch", "create", "patch", "delete"]}),
        ],
        Capability::Snapshots => snapshot_rules(grants),
        // The users and groups the member's admin named, by name: no service accounts, UIDs,
        // extras or `system:` names, so the hub can become neither a member's controllers or
        // nodes nor its admins (`system:masters`). The hub server maps hub service accounts to
        // plain user names (see `proxy::impersonation_headers`).
        Capability::Proxy => {
            let mut rules = vec![json!({"apiGroups": [""], "resources": ["users"],
                                        "resourceNames": grants.proxy.users, "verbs": ["impersonate"]})];
            if !grants.proxy.groups.is_empty() {
                rules.push(json!({"apiGroups": [""], "resources": ["groups"],
                                  "resourceNames": grants.proxy.groups, "verbs": ["impersonate"]}));
            }
            rules
        }
    }
}

/// The distributable kinds, with `get` but no `list`/`watch` on Secrets (a copy is found by its
/// name, so the hub cannot list a member's Secrets); RBAC kinds with `bind`/`escalate` only
/// with [`Grants::rbac`].
fn distribution_rules(grants: &Grants) -> Vec<Value> {
    let write = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let mut rules = crate::distribution::distributable_rules(&write);
    for rule in &mut rules {
        if let Some(resources) = rule["resources"].as_array_mut() {
            resources.retain(|r| r != "secrets");
        }
    }
    rules.retain(|r| r["apiGroups"][0] != "rbac.authorization.k8s.io");
    rules.push(json!({"apiGroups": [""], "resources": ["secrets"],
                      "verbs": ["get", "create", "update", "patch", "delete"]}));
    if grants.rbac {
        rules.push(json!({"apiGroups": ["rbac.authorization.k8s.io"],
                          "resources": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
                          "verbs": write}));
        rules.push(json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"],
                          "verbs": ["bind", "escalate"]}));
    }
    // Namespaces the bundle needs: created when missing, never deleted.
    rules.push(json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]}));
    rules
}

/// A namespace snapshot reads the namespaced kinds it knows (a kind it may not list is left out
/// and named in the snapshot's status); a restore writes them back (and deletes them again on
/// `restore delete --with-objects`), creates the target namespace,
/// scales workloads (ScaleDown quiesce), takes and removes CSI snapshots, and runs the data
/// mover's pods (with a Secret and a claim per volume, deleted after). No RBAC,
/// admissionregistration, apiregistration or token minting; `pods/exec` only with hooks.
fn snapshot_rules(grants: &Grants) -> Vec<Value> {
    let rw = ["get", "list", "create", "patch", "delete"];
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["configmaps", "secrets", "services", "serviceaccounts",
                                                "persistentvolumeclaims", "limitranges", "resourcequotas"],
               "verbs": rw}),
        // Pods are read to quiesce, and the data mover's pods are run (and their progress read):
        // see `snapshot::mover` for what those pods are.
        json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create", "delete"]}),
        json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}),
        // The volume each claim is bound to: its CSI driver picks the snapshot class.
        json!({"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["get"]}),
        json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "create"]}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": rw}),
        json!({"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": rw}),
        json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": rw}),
        json!({"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": rw}),
        json!({"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": rw}),
        json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": rw}),
        json!({"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotclasses"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots", "volumesnapshotcontents"],
               "verbs": ["get", "list", "create", "patch", "delete", "deletecollection"]}),
        json!({"apiGroups": ["groupsnapshot.storage.k8s.io"], "resources": ["volumegroupsnapshotclasses"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["groupsnapshot.storage.k8s.io"],
               "resources": ["volumegroupsnapshots", "volumegroupsnapshotcontents"],
               "verbs": ["get", "list", "create", "patch", "delete", "deletecollection"]}),
    ];
    if grants.hooks {
        // `get` for exec over WebSocket (an upgraded GET), `create` for SPDY and for API
        // servers that check create on the upgrade too.
        rules.push(
            json!({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}),
        );
    }
    rules
}

/// The objects `join` applies on the member, in order: the namespace, then per granted capability
/// its ServiceAccount, ClusterRole, ClusterRoleBinding and the Role (and binding) that renews its
/// own token.
pub fn member_objects(grants: &Grants) -> Vec<Value> {
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels(None)}})];
    for capability in Capability::granted(grants) {
        objects.extend(capability_objects(capability, grants));
    }
    objects
}

/// Every object any capability's account consists of on a member, whatever was granted (what
/// `unjoin` and a failed `join` remove; only kinds and names matter here).
pub fn every_capability_object() -> Vec<Value> {
    Capability::ALL
        .into_iter()
        .flat_map(|c| capability_objects(c, &Grants::default()))
        .collect()
}

fn capability_objects(capability: Capability, grants: &Grants) -> Vec<Value> {
    let name = capability.account();
    let labels = labels(Some(capability));
    let subjects = json!([{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NAMESPACE}]);
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": labels}, "rules": rules(capability, grants)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": subjects}),
        // Renewing its own token, and nothing else in the namespace.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": labels},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                          "resourceNames": [name], "verbs": ["create"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": subjects}),
    ];
    if capability == Capability::Snapshots {
        objects.extend([mover_policy(), mover_policy_binding()]);
    }
    objects
}

/// Name of the admission policy (and its binding) that confines the pods the snapshots account
/// creates to data mover pods, and of the ConfigMap in `multicluster-system` holding its
/// parameters (the mover image; on the playground the host paths its pods may mount).
pub const MOVER_POLICY: &str = "multicluster-hub-snapshots-data-movers-only";
/// The ConfigMap of the policy's parameters: `image`, and `hostPaths` (one per line).
pub const MOVER_POLICY_PARAMS: &str = "multicluster-data-mover";

/// A ValidatingAdmissionPolicy on the member: a pod the snapshots account creates is admitted only
/// if it is a data mover pod as `snapshot::mover::pod` makes them (one container of the
/// parameters' image running `mover`, no Kubernetes credential, no host namespaces, no privilege
/// beyond the four file capabilities, the keys only from the Secret named like the pod, volumes
/// only claims, that Secret and the parameters' host paths read-only, no hooks, probes or
/// sub-paths). The account needs to create pods to move volume data; this keeps the pods it creates
/// itself to that shape. It does not confine the workloads a restore writes (Deployments,
/// DaemonSets…, whose pods their controllers create): writing any workload is what restoring a
/// namespace is, and why the account is opt-in.
pub fn mover_policy() -> Value {
    let user = format!(
        "system:serviceaccount:{SYSTEM_NAMESPACE}:{}",
        Capability::Snapshots.account()
    );
    let caps = "['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID']";
    let check =
        |expression: String, message: &str| json!({"expression": expression, "message": message});
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": MOVER_POLICY, "labels": labels(Some(Capability::Snapshots))},
    "spec": {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
        "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                "resources": ["pods"], "operations": ["CREATE"]}]},
        "matchConditions": [{"name": "snapshots-account", "expression": format!("request.userInfo.username == '{user}'")}],
        "variables": [
            {"name": "image", "expression": "has(params.data) && 'image' in params.data ? params.data.image : ''"},
            {"name": "hostPaths", "expression": "has(params.data) && 'hostPaths' in params.data && params.data.hostPaths != '' ? params.data.hostPaths.split('\\n') : []"},
            {"name": "volumes", "expression": "has(object.spec.volumes) ? object.spec.volumes : []"}
        ],
        "validations": [
            check("has(object.metadata.labels) && 'app.kubernetes.io/component' in object.metadata.labels && object.metadata.labels['app.kubernetes.io/component'] == 'data-mover'".to_owned(),
                  "the hub's snapshots account creates data mover pods only (label app.kubernetes.io/component=data-mover)"),
            check("has(object.spec.automountServiceAccountToken) && object.spec.automountServiceAccountToken == false".to_owned(),
                  "a data mover pod has no Kubernetes credential (automountServiceAccountToken: false)"),
            check("!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && !(has(object.spec.hostPID) && object.spec.hostPID) && !(has(object.spec.hostIPC) && object.spec.hostIPC)".to_owned(),
                  "a data mover pod shares none of the node's namespaces"),
            check("!has(object.spec.initContainers) && !has(object.spec.ephemeralContainers) && size(object.spec.containers) == 1".to_owned(),
                  "a data mover pod has one container"),
            check(format!("object.spec.containers.all(c, c.image == variables.image && has(c.args) && size(c.args) > 0 && c.args[0] == 'mover' && (!has(c.command) || (size(variables.hostPaths) > 0 && c.command == ['{host_binary}'])))",
                          host_binary = crate::playground::HOST_BINARY_MOUNT),
                  &format!("a data mover pod runs `mover` of the image in {SYSTEM_NAMESPACE}/{MOVER_POLICY_PARAMS} (join --mover-image)")),
            check(format!("object.spec.containers.all(c, has(c.securityContext) && has(c.securityContext.allowPrivilegeEscalation) && c.securityContext.allowPrivilegeEscalation == false && !(has(c.securityContext.privileged) && c.securityContext.privileged) && (!has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(a, a in {caps})))"),
                  "a data mover pod is not privileged and adds no capability but CHOWN, DAC_OVERRIDE, FOWNER and FSETID"),
            check(format!("object.spec.containers.all(c, !has(c.envFrom) && (!has(c.env) || c.env.all(e, e.name in ['{}', '{}'] && has(e.valueFrom) && has(e.valueFrom.secretKeyRef) && e.valueFrom.secretKeyRef.name == object.metadata.name)))",
                          crate::snapshot::mover::ACCESS_KEY_ENV, crate::snapshot::mover::SECRET_KEY_ENV),
                  "a data mover pod's environment is the location's keys from its own job's Secret"),
            check("object.spec.containers.all(c, !has(c.lifecycle) && !has(c.livenessProbe) && !has(c.readinessProbe) && !has(c.startupProbe) && has(c.securityContext) && has(c.securityContext.capabilities) && has(c.securityContext.capabilities.drop) && 'ALL' in c.securityContext.capabilities.drop)".to_owned(),
                  "a data mover pod has no hooks or probes and drops every capability it does not add"),
            check("!has(object.spec.nodeName) && object.spec.containers.all(c, !has(c.volumeMounts) || c.volumeMounts.all(m, !has(m.subPath) && !has(m.subPathExpr)))".to_owned(),
                  "a data mover pod names no node and mounts no sub-path"),
            check("variables.volumes.all(v, has(v.persistentVolumeClaim) || (has(v.secret) && v.secret.secretName == object.metadata.name) || (has(v.hostPath) && v.hostPath.path in variables.hostPaths))".to_owned(),
                  &format!("a data mover pod mounts claims, its job's Secret and only the host paths in {SYSTEM_NAMESPACE}/{MOVER_POLICY_PARAMS}")),
            check("object.spec.containers.all(c, !has(c.volumeMounts) || c.volumeMounts.all(m, (has(m.readOnly) && m.readOnly) || !variables.volumes.exists(v, v.name == m.name && has(v.hostPath))))".to_owned(),
                  "a data mover pod mounts host paths read-only")
        ]}})
}

/// Binds [`mover_policy`] to its parameters, denying what it rejects (a missing parameters
/// ConfigMap denies every pod of the account).
pub fn mover_policy_binding() -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
           "metadata": {"name": MOVER_POLICY, "labels": labels(Some(Capability::Snapshots))},
           "spec": {"policyName": MOVER_POLICY, "validationActions": ["Deny"],
                    "paramRef": {"name": MOVER_POLICY_PARAMS, "namespace": SYSTEM_NAMESPACE,
                                 "parameterNotFoundAction": "Deny"}}})
}

/// The policy's parameters: the image data mover pods run, and host paths they may mount
/// read-only (none but on the playground, whose pods run the hub server binary from the host).
pub fn mover_policy_params(image: &str, host_paths: &[String]) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": MOVER_POLICY_PARAMS, "namespace": SYSTEM_NAMESPACE,
                        "labels": labels(Some(Capability::Snapshots))},
           "data": {"image": image, "hostPaths": host_paths.join("\n")}})
}

/// What a join before per-capability identities created on a member (one account for all of the
/// hub's work): removed by `join` and `unjoin`.
pub fn legacy_member_objects() -> Vec<Value> {
    let rbac = "rbac.authorization.k8s.io/v1";
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "multicluster-hub", "namespace": SYSTEM_NAMESPACE}}),
        json!({"apiVersion": rbac, "kind": "Role",
               "metadata": {"name": "multicluster-hub", "namespace": SYSTEM_NAMESPACE}}),
        json!({"apiVersion": rbac, "kind": "RoleBinding",
               "metadata": {"name": "multicluster-hub", "namespace": SYSTEM_NAMESPACE}}),
    ];
    for name in [
        "multicluster-hub",
        "multicluster-hub-snapshot",
        "multicluster-hub-distribute",
    ] {
        for kind in ["ClusterRoleBinding", "ClusterRole"] {
            objects.push(json!({"apiVersion": rbac, "kind": kind, "metadata": {"name": name}}));
        }
    }
    objects
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

    fn all_grants() -> Grants {
        Grants {
            rbac: true,
            snapshots: true,
            hooks: true,
            proxy: crate::members::proxy::ProxyAccess::from_hub_names(
                &["alice".into()],
                &["dev".into()],
            )
            .unwrap(),
        }
    }

    /// Every rule of every object `join` creates with `grants`, with the capability it is for.
    fn every_rule(grants: &Grants) -> Vec<(String, Value)> {
        member_objects(grants)
            .into_iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
            .flat_map(|o| {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                o["rules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |r| (name.clone(), r))
            })
            .collect()
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn no_join_object_grants_a_wildcard_unscoped_impersonation_or_control_plane_writes() {
        for grants in [Grants::default(), all_grants()] {
            for (role, rule) in every_rule(&grants) {
                let groups = strings(&rule["apiGroups"]);
                let resources = strings(&rule["resources"]);
                let verbs = strings(&rule["verbs"]);
                assert!(!groups.contains(&"*"), "{role}: apiGroups *");
                assert!(!resources.contains(&"*"), "{role}: resources *");
                assert!(!verbs.contains(&"*"), "{role}: verbs *");
                for group in ["admissionregistration.k8s.io", "apiregistration.k8s.io"] {
                    assert!(!groups.contains(&group), "{role}: {group}");
                }
                if verbs.contains(&"impersonate") {
                    assert_eq!(role, Capability::Proxy.account());
                    assert!(
                        resources == ["users"] || resources == ["groups"],
                        "{role}: impersonates {resources:?}"
                    );
                    let names = strings(&rule["resourceNames"]);
                    assert!(!names.is_empty(), "{role}: impersonates anyone");
                    assert!(
                        names.iter().all(|n| !n.starts_with("system:")),
                        "{role}: impersonates {names:?}"
                    );
                }
                if verbs.contains(&"bind") || verbs.contains(&"escalate") {
                    assert!(grants.rbac, "{role}: bind/escalate without --allow-rbac");
                }
                if groups.contains(&"rbac.authorization.k8s.io") {
                    assert!(grants.rbac, "{role}: RBAC without --allow-rbac");
                    assert_eq!(role, Capability::Distribution.account());
                }
                if resources.contains(&"serviceaccounts/token") {
                    assert_eq!(strings(&rule["resourceNames"]), [role.as_str()]);
                }
                if resources.contains(&"pods/exec") {
                    assert!(grants.hooks, "{role}: pods/exec without --allow-hooks");
                }
                if resources.contains(&"secrets") && role != Capability::Snapshots.account() {
                    assert!(
                        !verbs.contains(&"list") && !verbs.contains(&"watch"),
                        "{role} lists Secrets"
                    );
                }
            }
        }
    }

    #[test]
    fn each_capability_has_its_own_account_and_snapshots_come_only_with_their_grant() {
        let accounts = |grants: &Grants| -> Vec<String> {
            member_objects(grants)
                .iter()
                .filter(|o| o["kind"] == "ServiceAccount")
                .map(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            accounts(&Grants::default()),
            [
                "multicluster-hub-health",
                "multicluster-hub-distribution",
                "multicluster-hub-services",
            ],
            "snapshots and proxy are opt-in"
        );
        assert_eq!(
            accounts(&all_grants()),
            [
                "multicluster-hub-health",
                "multicluster-hub-distribution",
                "multicluster-hub-services",
                "multicluster-hub-snapshots",
                "multicluster-hub-proxy"
            ]
        );
        let removed: Vec<Value> = every_capability_object()
            .into_iter()
            .map(|o| json!([o["kind"], o["metadata"]["name"]]))
            .collect();
        for o in member_objects(&all_grants()) {
            if o["kind"] != "Namespace" {
                assert!(removed.contains(&json!([o["kind"], o["metadata"]["name"]])));
            }
        }
        for o in member_objects(&all_grants()) {
            if let Some(subjects) = o["subjects"].as_array() {
                assert_eq!(subjects.len(), 1);
                assert_eq!(
                    subjects[0]["name"], o["metadata"]["name"],
                    "bound to its own account"
                );
            }
        }
    }

    #[test]
    fn health_only_reads_nodes_and_namespaces() {
        for rule in rules(Capability::Health, &all_grants()) {
            assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
        }
    }

    #[test]
    fn distribution_rights_name_their_kinds_and_get_secrets_by_name_only() {
        let rules = rules(Capability::Distribution, &Grants::default());
        let secrets: Vec<&Value> = rules
            .iter()
            .filter(|r| strings(&r["resources"]).contains(&"secrets"))
            .collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            secrets[0]["verbs"],
            json!(["get", "create", "update", "patch", "delete"])
        );
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
