//! Proxy access to members through the hub (`kubectl multicluster proxy`).
//!
//! The hub server serves an aggregated API, `proxy.multicluster.dev/v1alpha1`, registered on the
//! hub with an `APIService`. A user talks to the hub's own API server at
//! `/apis/proxy.multicluster.dev/v1alpha1/memberclusters/NAME/proxy/<member path>`; the hub's API
//! server authenticates them and authorises `get|create|… memberclusters/proxy NAME`, then
//! forwards to the hub server with the user in `X-Remote-*` headers over a connection that presents
//! its front-proxy client certificate. The hub server trusts those headers only on such a
//! connection, checks the permission again with a SubjectAccessReview, and forwards to the member
//! with the hub's own credentials and impersonation headers for that user: the member's RBAC
//! decides what they may do there.

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub const GROUP: &str = "proxy.multicluster.dev";
pub const VERSION: &str = "v1alpha1";
pub const RESOURCE: &str = "memberclusters";
pub const SUBRESOURCE: &str = "proxy";

/// Path prefix of one member's proxy on the hub.
pub fn path_prefix(member: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/{RESOURCE}/{member}/{SUBRESOURCE}")
}

/// `(member, path on the member)` of a proxy request path, `None` for any other path.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(&format!("/apis/{GROUP}/{VERSION}/{RESOURCE}/"))?;
    let (member, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix(SUBRESOURCE)?;
    if member.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some((member, if rest.is_empty() { "/" } else { rest }))
}

/// The Kubernetes verb of an HTTP method, as the API server maps it for a named resource.
pub fn verb_of(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    }
}

/// The user the hub's API server authenticated, from the front proxy's headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallerError {
    #[error(
        "the request did not come through the hub's API server (no front-proxy client certificate)"
    )]
    NotFromFrontProxy,
    #[error("front-proxy client certificate {0:?} is not one of the allowed names")]
    NameNotAllowed(String),
    #[error("the hub's API server sent no user")]
    NoUser,
}

/// Reads the caller from `headers` (lower-case names), trusting them only when the connection's
/// client certificate (verified against the front-proxy CA) has a common name in `allowed_names`
/// (any name when the list is empty, as the API server's own flag means).
pub fn caller(
    headers: &[(String, String)],
    client_common_name: Option<&str>,
    allowed_names: &[String],
) -> Result<Caller, CallerError> {
    let cn = client_common_name.ok_or(CallerError::NotFromFrontProxy)?;
    if !allowed_names.is_empty() && !allowed_names.iter().any(|n| n == cn) {
        return Err(CallerError::NameNotAllowed(cn.to_owned()));
    }
    let mut caller = Caller::default();
    for (name, value) in headers {
        match name.as_str() {
            "x-remote-user" => value.clone_into(&mut caller.user),
            "x-remote-uid" => caller.uid = Some(value.clone()),
            "x-remote-group" => caller.groups.push(value.clone()),
            n => {
                if let Some(key) = n.strip_prefix("x-remote-extra-") {
                    caller
                        .extra
                        .entry(unescape(key))
                        .or_default()
                        .push(value.clone());
                }
            }
        }
    }
    if caller.user.is_empty() {
        return Err(CallerError::NoUser);
    }
    Ok(caller)
}

/// Extra keys travel percent-encoded in header names.
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = key.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user name a hub service account `system:serviceaccount:NS:NAME` has on members:
/// `multicluster:hub:serviceaccount:NS:NAME`. Passing it as it is would make it the member's own
/// service account of that name (and need `impersonate serviceaccounts`, which would let the hub
/// become any of the member's controllers).
pub const HUB_SERVICE_ACCOUNT_PREFIX: &str = "multicluster:hub:serviceaccount:";

/// Why the hub does not forward a caller's request, or `join` does not let it act for a name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImpersonationError {
    #[error(
        "the hub does not forward requests of the system user {0:?} to members: system users (nodes, \
         controllers, the API server's own) are each cluster's own"
    )]
    SystemUser(String),
    #[error(
        "the hub does not act for the system group {0:?} on members (system:masters above all: a \
         member's admins are the member's to name)"
    )]
    SystemGroup(String),
    #[error(
        "member {member} does not let the hub act for user {user:?}; its admin names the users the \
         hub may act for with `kubectl multicluster join {member} --proxy-user {user}`"
    )]
    UserNotAllowed { member: String, user: String },
}

/// Who the hub's proxy account may impersonate on one member: the users and groups its admin
/// named at `join` (`--proxy-user`, `--proxy-group`), as the member knows them. The account's
/// ClusterRole lists exactly these (`resourceNames`), so the member enforces the list even if the
/// hub is compromised; the hub server reads the same list to forward only groups the member takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyAccess {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl ProxyAccess {
    /// The access for hub users and groups as written on the command line: hub service accounts
    /// become their member names; `system:` users and groups are refused.
    pub fn from_hub_names(users: &[String], groups: &[String]) -> Result<Self, ImpersonationError> {
        let mut access = ProxyAccess {
            users: users
                .iter()
                .map(|u| member_user(u))
                .collect::<Result<_, _>>()?,
            groups: Vec::new(),
        };
        for group in groups {
            if group.starts_with("system:") {
                return Err(ImpersonationError::SystemGroup(group.clone()));
            }
            access.groups.push(group.clone());
        }
        access.users.sort();
        access.users.dedup();
        access.groups.sort();
        access.groups.dedup();
        Ok(access)
    }

    /// The access as the hub stores it in the proxy credentials Secret: one name per line.
    pub fn parse(users: &str, groups: &str) -> Self {
        let lines = |s: &str| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        };
        ProxyAccess {
            users: lines(users),
            groups: lines(groups),
        }
    }
}

/// The name a hub user has on members: hub service accounts become [`HUB_SERVICE_ACCOUNT_PREFIX`]
/// users, other `system:` users are refused, everyone else keeps their name.
pub fn member_user(hub_user: &str) -> Result<String, ImpersonationError> {
    match hub_user.strip_prefix("system:serviceaccount:") {
        Some(account) => Ok(format!("{HUB_SERVICE_ACCOUNT_PREFIX}{account}")),
        None if hub_user.starts_with("system:") => {
            Err(ImpersonationError::SystemUser(hub_user.to_owned()))
        }
        None => Ok(hub_user.to_owned()),
    }
}

/// Headers that make `member` treat the hub's request as `caller`'s: user and groups, nothing
/// else. The user is [`member_user`] and must be one `access` names; of the caller's groups only
/// those `access` names go (never a `system:` one: the member adds `system:authenticated`
/// itself). UIDs and extra fields are not forwarded: the API server's own extras
/// (`authentication.kubernetes.io/…`, e.g. the credential ID) describe the caller's hub
/// credential, meaningless on a member, and the hub's proxy account may impersonate users and
/// groups only.
pub fn impersonation_headers(
    caller: &Caller,
    member: &str,
    access: &ProxyAccess,
) -> Result<Vec<(String, String)>, ImpersonationError> {
    let user = member_user(&caller.user)?;
    if !access.users.contains(&user) {
        return Err(ImpersonationError::UserNotAllowed {
            member: member.to_owned(),
            user: caller.user.clone(),
        });
    }
    let mut headers = vec![("impersonate-user".to_owned(), user)];
    for group in caller
        .groups
        .iter()
        .filter(|g| !g.starts_with("system:") && access.groups.contains(g))
    {
        headers.push(("impersonate-group".to_owned(), group.clone()));
    }
    Ok(headers)
}

/// The SubjectAccessReview that asks whether `caller` may `verb` member `name`'s proxy.
pub fn access_review(caller: &Caller, verb: &str, member: &str) -> Value {
    json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": caller.user, "uid": caller.uid, "groups": caller.groups, "extra": caller.extra,
            "resourceAttributes": {"group": GROUP, "version": VERSION, "resource": RESOURCE,
                                   "subresource": SUBRESOURCE, "name": member, "verb": verb}
        }
    })
}

/// What a denied user reads: the permission they lack, and where.
pub fn denied(caller: &Caller, verb: &str, member: &str) -> String {
    format!(
        "user {:?} may not reach member {member}: on the hub they need `{verb}` on \
         {RESOURCE}/{SUBRESOURCE} named {member:?} in API group {GROUP} \
         (e.g. kubectl create clusterrole ... --verb={verb} --resource={RESOURCE}.{GROUP}/{SUBRESOURCE} --resource-name={member})",
        caller.user
    )
}

/// Discovery of the proxy API (what the aggregator and kubectl ask for).
pub fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": format!("{RESOURCE}/{SUBRESOURCE}"), "singularName": "", "namespaced": false,
             "kind": "MemberClusterProxy", "verbs": ["get", "create", "update", "patch", "delete"]}
        ]
    })
}

pub fn api_group() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version.clone()],
           "preferredVersion": version})
}

/// The APIService registering the hub server's proxy API with the hub's API server, served by
/// Service `service` in `namespace` on `port`, whose certificate `ca_bundle_pem` signed.
pub fn api_service(namespace: &str, service: &str, port: u16, ca_bundle_pem: &str) -> Value {
    use base64::Engine;
    json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{VERSION}.{GROUP}"),
                     "labels": {"app.kubernetes.io/part-of": "kubectl-multicluster"}},
        "spec": {
            "group": GROUP, "version": VERSION,
            "service": {"namespace": namespace, "name": service, "port": port},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_bundle_pem),
            "groupPriorityMinimum": 1000, "versionPriority": 15
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_name_the_member_and_the_rest() {
        assert_eq!(
            parse_path(
                "/apis/proxy.multicluster.dev/v1alpha1/memberclusters/m1/proxy/api/v1/namespaces"
            ),
            Some(("m1", "/api/v1/namespaces"))
        );
        assert_eq!(
            parse_path("/apis/proxy.multicluster.dev/v1alpha1/memberclusters/m1/proxy"),
            Some(("m1", "/"))
        );
        assert_eq!(
            parse_path("/apis/proxy.multicluster.dev/v1alpha1/memberclusters/m1/proxyx"),
            None
        );
        assert_eq!(
            parse_path("/apis/proxy.multicluster.dev/v1alpha1/memberclusters/m1"),
            None
        );
        assert_eq!(parse_path("/api/v1/namespaces"), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_caller_is_believed_only_from_the_front_proxy() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-group", "dev"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes%2Fa", "x"),
        ]);
        let allowed = vec!["front-proxy-client".to_owned()];
        assert_eq!(
            caller(&h, None, &allowed),
            Err(CallerError::NotFromFrontProxy)
        );
        assert_eq!(
            caller(&h, Some("mallory"), &allowed),
            Err(CallerError::NameNotAllowed("mallory".into()))
        );
        let c = caller(&h, Some("front-proxy-client"), &allowed).unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.groups, ["dev", "system:authenticated"]);
        assert_eq!(c.extra["scopes/a"], ["x"]);
        assert!(
            caller(&h, Some("anyone"), &[]).is_ok(),
            "no allowed names: any signed cert"
        );
        assert_eq!(
            caller(
                &headers(&[("x-remote-group", "g")]),
                Some("front-proxy-client"),
                &allowed
            ),
            Err(CallerError::NoUser)
        );
    }

    /// What a member's admin named at join: alice, the ci/deployer hub account, groups dev and ops.
    fn access() -> ProxyAccess {
        ProxyAccess::from_hub_names(
            &[
                "alice".into(),
                "kubernetes-admin".into(),
                "system:serviceaccount:ci:deployer".into(),
            ],
            &["dev".into(), "ops".into()],
        )
        .unwrap()
    }

    #[test]
    fn impersonation_carries_user_and_groups_but_not_the_hub_credentials_extras() {
        let c = Caller {
            user: "alice".into(),
            uid: Some("1234".into()),
            groups: vec!["dev".into(), "system:authenticated".into()],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/credential-id".to_owned(),
                vec!["X509SHA256=ab".to_owned()],
            )]),
        };
        assert_eq!(
            impersonation_headers(&c, "m1", &access()),
            Ok(headers(&[
                ("impersonate-user", "alice"),
                ("impersonate-group", "dev")
            ]))
        );
    }

    #[test]
    fn only_users_and_groups_the_member_named_are_impersonated() {
        let c = Caller {
            user: "mallory".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        let refused = impersonation_headers(&c, "m1", &access()).unwrap_err();
        assert_eq!(
            refused,
            ImpersonationError::UserNotAllowed {
                member: "m1".into(),
                user: "mallory".into()
            }
        );
        assert!(refused.to_string().contains("--proxy-user mallory"));
        let c = Caller {
            user: "alice".into(),
            groups: vec!["dev".into(), "finance".into()],
            ..Default::default()
        };
        assert_eq!(
            impersonation_headers(&c, "m1", &access()),
            Ok(headers(&[
                ("impersonate-user", "alice"),
                ("impersonate-group", "dev")
            ])),
            "a group the member did not name is not asserted (the member would refuse the request)"
        );
    }

    #[test]
    fn join_refuses_to_let_the_hub_act_for_system_users_or_groups() {
        assert_eq!(
            ProxyAccess::from_hub_names(&["system:admin".into()], &[]),
            Err(ImpersonationError::SystemUser("system:admin".into()))
        );
        assert_eq!(
            ProxyAccess::from_hub_names(&["alice".into()], &["system:masters".into()]),
            Err(ImpersonationError::SystemGroup("system:masters".into()))
        );
        let stored = ProxyAccess::parse(&access().users.join("\n"), "ops\n\ndev\n");
        assert_eq!(stored.users, access().users);
        assert_eq!(stored.groups, ["ops", "dev"]);
    }

    #[test]
    fn system_groups_are_dropped_system_users_refused_and_hub_service_accounts_mapped() {
        let admin = Caller {
            user: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "ops".into(), "system:nodes".into()],
            ..Default::default()
        };
        assert_eq!(
            impersonation_headers(&admin, "m1", &access()),
            Ok(headers(&[
                ("impersonate-user", "kubernetes-admin"),
                ("impersonate-group", "ops")
            ]))
        );
        for user in [
            "system:admin",
            "system:node:n1",
            "system:kube-controller-manager",
        ] {
            let c = Caller {
                user: user.into(),
                ..Default::default()
            };
            assert_eq!(
                impersonation_headers(&c, "m1", &access()),
                Err(ImpersonationError::SystemUser(user.into()))
            );
        }
        let account = Caller {
            user: "system:serviceaccount:ci:deployer".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:ci".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            impersonation_headers(&account, "m1", &access()),
            Ok(headers(&[(
                "impersonate-user",
                "multicluster:hub:serviceaccount:ci:deployer"
            )]))
        );
    }

    #[test]
    fn a_denial_names_the_missing_permission() {
        let c = Caller {
            user: "bob".into(),
            ..Default::default()
        };
        let text = denied(&c, "get", "member-1");
        assert!(
            text.contains("bob") && text.contains("memberclusters/proxy") && text.contains(GROUP),
            "{text}"
        );
        let review = access_review(&c, "get", "member-1");
        assert_eq!(review["spec"]["resourceAttributes"]["subresource"], "proxy");
    }

    #[test]
    fn methods_map_to_verbs() {
        assert_eq!(verb_of("GET"), "get");
        assert_eq!(verb_of("POST"), "create");
        assert_eq!(verb_of("DELETE"), "delete");
    }
}
