//! The proxy API: a hub user reaches a member through the hub (`multicluster_core::members::proxy` has the
//! protocol and the decisions; this is the I/O).

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use multicluster_core::api::MemberCluster;
use multicluster_core::members::proxy;

use super::MemberClients;
use crate::tls::Peer;

/// Largest request body forwarded to a member (an object is at most ~1.5 MiB).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// How the hub's API server vouches for its users: the front-proxy CA and the names its client
/// certificate may carry, as the hub publishes them for aggregated API servers.
#[derive(Clone, Debug)]
pub struct FrontProxy {
    pub ca_pem: String,
    pub allowed_names: Vec<String>,
}

/// Reads `kube-system/extension-apiserver-authentication`; `None` when the hub's API server has no
/// front proxy configured (then the proxy API is off).
pub async fn front_proxy(hub: &Client) -> anyhow::Result<Option<FrontProxy>> {
    let Some(cm) = Api::<ConfigMap>::namespaced(hub.clone(), "kube-system")
        .get_opt("extension-apiserver-authentication")
        .await?
    else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    let Some(ca_pem) = data.get("requestheader-client-ca-file").cloned() else {
        return Ok(None);
    };
    let allowed_names = match data.get("requestheader-allowed-names") {
        Some(text) if !text.trim().is_empty() => serde_json::from_str(text)?,
        _ => Vec::new(),
    };
    Ok(Some(FrontProxy {
        ca_pem,
        allowed_names,
    }))
}

#[derive(Clone)]
pub struct ProxyState {
    pub hub: Client,
    pub members: MemberClients,
    pub front_proxy: Option<FrontProxy>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("front_proxy", &self.front_proxy)
            .finish_non_exhaustive()
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

/// Every request under `/apis` on the admission port.
pub async fn handle(
    State(state): State<Option<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let discovery = |v: serde_json::Value| axum::Json(v).into_response();
    if path == "/apis" {
        return discovery(
            serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [proxy::api_group()]}),
        );
    }
    if path == format!("/apis/{}", proxy::GROUP) {
        return discovery(proxy::api_group());
    }
    if path == format!("/apis/{}/{}", proxy::GROUP, proxy::VERSION) {
        return discovery(proxy::api_resource_list());
    }
    let Some((member, rest)) = proxy::parse_path(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no such path {path}"),
        );
    };
    let Some(state) = &state else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the proxy is off: this hub server has no hub connection".into(),
        );
    };
    let Some(front) = &state.front_proxy else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the proxy is off: the hub's API server publishes no front-proxy (requestheader) \
             configuration in kube-system/extension-apiserver-authentication"
                .into(),
        );
    };
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let caller = match proxy::caller(
        &headers,
        peer.client_common_name.as_deref(),
        &front.allowed_names,
    ) {
        Ok(c) => c,
        Err(e) => return status(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()),
    };
    let verb = proxy::verb_of(request.method().as_str());
    let member = member.to_owned();
    let rest = rest.to_owned();
    tracing::info!(user = %caller.user, %member, verb, path = %rest, "proxy request");

    // Authorised on the hub, again, whoever forwarded it.
    let review: SubjectAccessReview =
        match serde_json::from_value(proxy::access_review(&caller, verb, &member)) {
            Ok(r) => r,
            Err(e) => {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    e.to_string(),
                );
            }
        };
    match Api::<SubjectAccessReview>::all(state.hub.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
        Ok(_) => {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                proxy::denied(&caller, verb, &member),
            );
        }
        Err(e) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("cannot check the permission on the hub: {e}"),
            );
        }
    }

    let cluster = match Api::<MemberCluster>::all(state.hub.clone())
        .get_opt(&member)
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no member cluster named {member}"),
            );
        }
        Err(e) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            );
        }
    };
    let client = match state.members.get(&state.hub, &cluster, None).await {
        Ok(c) => c,
        Err(e) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("no credentials for member {member}: {e:#}"),
            );
        }
    };
    let uri = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let mut forward = http::Request::builder()
        .method(request.method().clone())
        .uri(uri);
    for (name, value) in request.headers() {
        let n = name.as_str();
        // The hub's own credentials and the impersonation below are the only identity sent.
        let identity = n == "authorization"
            || n.starts_with("impersonate-")
            || n.starts_with("x-remote-")
            || n == "host"
            || n == "connection"
            || n == "content-length";
        if !identity {
            forward = forward.header(name, value);
        }
    }
    for (name, value) in proxy::impersonation_headers(&caller) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            forward = forward.header(n, v);
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                e.to_string(),
            );
        }
    };
    let forward = match forward.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    match client.send(forward).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => status(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            format!("member {member} did not answer: {e}"),
        ),
    }
}
