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

/// A request the proxy does not forward, answered as the Kubernetes `Status` kubectl prints.
#[derive(Debug)]
struct Refusal {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code.as_u16()});
        (self.code, axum::Json(body)).into_response()
    }
}

/// Every request under `/apis` on the admission port: the proxy API's discovery documents, or a
/// request for a member, forwarded once the caller is authenticated and authorised on the hub.
pub async fn handle(
    State(state): State<Option<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(document) = discovery(&path) {
        return axum::Json(document).into_response();
    }
    let Some((member, rest)) = proxy::parse_path(&path) else {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no such path {path}"),
        )
        .into_response();
    };
    let (member, rest) = (member.to_owned(), rest.to_owned());
    match forward(state.as_ref(), &peer, request, &member, rest).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// The discovery documents kubectl reads before it sends a request to the proxy API.
fn discovery(path: &str) -> Option<serde_json::Value> {
    if path == "/apis" {
        Some(
            serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [proxy::api_group()]}),
        )
    } else if path == format!("/apis/{}", proxy::GROUP) {
        Some(proxy::api_group())
    } else if path == format!("/apis/{}/{}", proxy::GROUP, proxy::VERSION) {
        Some(proxy::api_resource_list())
    } else {
        None
    }
}

/// Authenticates the caller, authorises it on the hub, and sends the request to `member` as that
/// caller (impersonated), returning the member's answer as it is.
async fn forward(
    state: Option<&ProxyState>,
    peer: &Peer,
    request: Request,
    member: &str,
    rest: String,
) -> Result<Response, Refusal> {
    let state = state.ok_or_else(|| {
        Refusal::unavailable("the proxy is off: this hub server has no hub connection")
    })?;
    let caller = authenticate(state, peer, &request)?;
    let verb = proxy::verb_of(request.method().as_str());
    tracing::info!(user = %caller.user, %member, verb, path = %rest, "proxy request");
    authorize(&state.hub, &caller, verb, member).await?;
    let (client, access) = member_client(state, member).await?;
    let forward = member_request(request, rest, &caller, member, &access).await?;
    let response = client.send(forward).await.map_err(|e| {
        Refusal::new(
            StatusCode::BAD_GATEWAY,
            "ServiceUnavailable",
            format!("member {member} did not answer: {e}"),
        )
    })?;
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Who the hub's API server says the caller is, believed only from the hub's front proxy.
fn authenticate(
    state: &ProxyState,
    peer: &Peer,
    request: &Request,
) -> Result<proxy::Caller, Refusal> {
    let front = state.front_proxy.as_ref().ok_or_else(|| {
        Refusal::unavailable(
            "the proxy is off: the hub's API server publishes no front-proxy (requestheader) \
             configuration in kube-system/extension-apiserver-authentication",
        )
    })?;
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
    proxy::caller(
        &headers,
        peer.client_common_name.as_deref(),
        &front.allowed_names,
    )
    .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized", e.to_string()))
}

/// Authorised on the hub, again, whoever forwarded it: a SubjectAccessReview for the caller.
async fn authorize(
    hub: &Client,
    caller: &proxy::Caller,
    verb: &str,
    member: &str,
) -> Result<(), Refusal> {
    let review: SubjectAccessReview =
        serde_json::from_value(proxy::access_review(caller, verb, member)).map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })?;
    let answer = Api::<SubjectAccessReview>::all(hub.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            Refusal::unavailable(format!("cannot check the permission on the hub: {e}"))
        })?;
    if answer.status.as_ref().is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            proxy::denied(caller, verb, member),
        ))
    }
}

/// A client for `member` with the hub's proxy credentials for it, and whom they may act as.
async fn member_client(
    state: &ProxyState,
    member: &str,
) -> Result<(Client, proxy::ProxyAccess), Refusal> {
    let cluster = Api::<MemberCluster>::all(state.hub.clone())
        .get_opt(member)
        .await
        .map_err(|e| Refusal::unavailable(e.to_string()))?
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no member cluster named {member}"),
            )
        })?;
    state
        .members
        .proxy(&state.hub, &cluster)
        .await
        .map_err(
            |e| match e.downcast_ref::<super::connections::MissingCredentials>() {
                // The member's admin gave the hub no proxy access: theirs to grant, not an outage.
                Some(missing) => {
                    Refusal::new(StatusCode::FORBIDDEN, "Forbidden", missing.to_string())
                }
                None => Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "ServiceUnavailable",
                    format!("no credentials for member {member}: {e:#}"),
                ),
            },
        )
}

/// The request as the member receives it: the same method, path, query, headers and body, but no
/// identity of its own besides the hub's credentials and the caller's impersonation.
async fn member_request(
    request: Request,
    rest: String,
    caller: &proxy::Caller,
    member: &str,
    access: &proxy::ProxyAccess,
) -> Result<http::Request<kube::client::Body>, Refusal> {
    let uri = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let mut forward = http::Request::builder()
        .method(request.method().clone())
        .uri(uri);
    for (name, value) in request.headers() {
        let n = name.as_str();
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
    let impersonation = proxy::impersonation_headers(caller, member, access)
        .map_err(|e| Refusal::new(StatusCode::FORBIDDEN, "Forbidden", e.to_string()))?;
    for (name, value) in impersonation {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            forward = forward.header(n, v);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_REQUEST_BYTES)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                e.to_string(),
            )
        })?;
    forward
        .body(kube::client::Body::from(body))
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()))
}
