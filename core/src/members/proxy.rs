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

/// Headers that make the member treat the hub's request as `caller`'s: user, UID and groups.
/// Extra fields are not forwarded: the API server's own (`authentication.kubernetes.io/…`, e.g.
/// the credential ID) describe the caller's hub credential, meaningless on a member, and RBAC
/// cannot grant impersonation of arbitrary extra keys without naming each.
pub fn impersonation_headers(caller: &Caller) -> Vec<(String, String)> {
    let mut headers = vec![("impersonate-user".to_owned(), caller.user.clone())];
    if let Some(uid) = caller.uid.as_ref().filter(|u| !u.is_empty()) {
        headers.push(("impersonate-uid".to_owned(), uid.clone()));
    }
    for group in &caller.groups {
        // The member adds system:authenticated itself; naming it is harmless but noisy.
        if group != "system:authenticated" {
            headers.push(("impersonate-group".to_owned(), group.clone()));
        }
    }
    headers
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

    #[test]
    fn impersonation_carries_user_and_groups_but_not_the_hub_credentials_extras() {
        let c = Caller {
            user: "alice".into(),
            uid: None,
            groups: vec!["dev".into(), "system:authenticated".into()],
            extra: BTreeMap::from([(
                "authentication.kubernetes.io/credential-id".to_owned(),
                vec!["X509SHA256=ab".to_owned()],
            )]),
        };
        assert_eq!(
            impersonation_headers(&c),
            headers(&[("impersonate-user", "alice"), ("impersonate-group", "dev")])
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
