//! The admission handlers: parse the AdmissionReview, hand the facts to the pure decision functions
//! of `multicluster-core`, and carry the verdict back. No decision is made here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use multicluster_core::fencing::{self, FenceVerdict, IntentView};
use multicluster_core::keys::WRITTEN_WITH_INTENT_ID;
use tracing::Instrument;

use crate::metrics::Metrics;

/// Where the fence looks up Intents: a watch-fed cache, and a live read before any denial.
pub trait IntentLookup: Send + Sync + std::fmt::Debug {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView>;
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>>;
}

impl IntentLookup for crate::intents::Intents {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView> {
        crate::intents::Intents::cached(self, namespace, name)
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>> {
        Box::pin(async move {
            crate::intents::Intents::live(self, namespace, name)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[derive(Debug)]
pub struct AppState {
    pub intents: Arc<dyn IntentLookup>,
    /// `None` where no hub is connected (in-process tests of the fence).
    pub vips: Option<crate::vips::Vips>,
    pub metrics: Metrics,
    /// The proxy API; `None` in in-process tests.
    pub proxy: Option<crate::proxy::ProxyState>,
}

/// The verdict as the metrics name it.
fn verdict_label(response: &AdmissionResponse) -> &'static str {
    if !response.allowed {
        "denied"
    } else if response.patch.is_some() {
        "patched"
    } else {
        "allowed"
    }
}

/// Parses a body into an AdmissionRequest, or says what is wrong with it.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "only admission.k8s.io/v1 AdmissionReview is served, got {:?} {:?}; set admissionReviewVersions: [v1]",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())
}

/// Runs `decide` on a parsed request inside a span with the request's identity, records metrics,
/// and answers. A body that cannot be parsed gets 400 and an AdmissionReview saying why.
pub(crate) async fn review<F>(
    state: &AppState,
    webhook: &'static str,
    body: &[u8],
    decide: F,
) -> Response
where
    F: AsyncFnOnce(&AdmissionRequest<DynamicObject>) -> AdmissionResponse,
{
    let started = Instant::now();
    let request = match parse(body) {
        Ok(request) => request,
        Err(reason) => {
            state.metrics.observe(webhook, "invalid", started.elapsed());
            state
                .metrics
                .errors
                .get_or_create(&crate::metrics::WebhookLabels { webhook })
                .inc();
            tracing::info!(webhook, %reason, "malformed admission request");
            let review = AdmissionResponse::invalid(reason).into_review();
            return (StatusCode::BAD_REQUEST, axum::Json(review)).into_response();
        }
    };
    let span = tracing::info_span!(
        "admission",
        webhook,
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = %request.name,
        operation = ?request.operation,
        dry_run = request.dry_run,
    );
    let response = decide(&request).instrument(span.clone()).await;
    let verdict = verdict_label(&response);
    state.metrics.observe(webhook, verdict, started.elapsed());
    span.in_scope(|| tracing::debug!(verdict, "answered"));
    axum::Json(response.into_review()).into_response()
}

fn labels(object: Option<&DynamicObject>) -> Option<&BTreeMap<String, String>> {
    object.and_then(|o| o.metadata.labels.as_ref())
}

fn annotations(object: Option<&DynamicObject>) -> Option<&BTreeMap<String, String>> {
    object.and_then(|o| o.metadata.annotations.as_ref())
}

fn is_write(operation: &Operation) -> bool {
    matches!(operation, Operation::Create | Operation::Update)
}

/// The response with `ops` (RFC 6902 operations) as its patch; a patch that cannot be built is a
/// denial saying so, never a silent admit.
fn with_patch(response: AdmissionResponse, ops: Vec<serde_json::Value>) -> AdmissionResponse {
    match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops))
        .map_err(|e| e.to_string())
        .and_then(|patch| {
            response
                .clone()
                .with_patch(patch)
                .map_err(|e| e.to_string())
        }) {
        Ok(patched) => patched,
        Err(e) => response.deny(format!("internal error building the patch: {e}")),
    }
}

/// `POST /mutate/intent`: step 1 of the fence (see `multicluster_core::fencing`).
pub async fn mutate_intent(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    review(&state, "mutate-intent", &body, async |req| {
        let response = AdmissionResponse::from(req);
        let object = req.object.as_ref();
        let managed = fencing::fencing_intent(req.namespace.as_deref(), labels(object)).is_some()
            || fencing::fencing_intent(req.namespace.as_deref(), labels(req.old_object.as_ref()))
                .is_some();
        if !is_write(&req.operation) || !managed {
            return response;
        }
        let ops = fencing::carry_intent_id(annotations(object));
        if ops.is_empty() {
            return response;
        }
        with_patch(response, ops)
    })
    .await
}

/// A DELETE of a managed object (see `multicluster_core::fencing::check_delete`), always decided on
/// a live read of its Intent. The watch-fed cache is not enough here: an Intent it has not seen yet
/// reads as "gone", which admits the delete, and a rotation it has not seen yet leaves an approval
/// with the old ID looking current. Deletes are rare; a fence that lapses for a watch's lag is not.
async fn validate_delete(
    intents: &dyn IntentLookup,
    req: &AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
) -> AdmissionResponse {
    let old = req.old_object.as_ref();
    let Some((ns, n)) = fencing::fencing_intent(req.namespace.as_deref(), labels(old)) else {
        return response;
    };
    match intents.live(ns, n).await {
        Ok(live) => match fencing::check_delete(
            &req.kind.kind,
            req.namespace.as_deref(),
            &req.name,
            labels(old),
            annotations(old),
            |_, _| live.clone(),
        ) {
            FenceVerdict::Denied(reason) => response.deny(reason),
            _ => response,
        },
        Err(e) => response.deny(format!(
            "cannot read Intent {ns}/{n} to check this delete ({e}); refused because fencing must not lapse"
        )),
    }
}

/// JSON Patch operations that set `annotations` on an object whose annotations are `current`.
fn annotation_patch(
    current: Option<&BTreeMap<String, String>>,
    annotations: BTreeMap<String, String>,
) -> Vec<serde_json::Value> {
    match current {
        None => vec![
            serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": annotations}),
        ],
        Some(_) => annotations
            .into_iter()
            .map(|(k, v)| {
                let path = format!(
                    "/metadata/annotations/{}",
                    k.replace('~', "~0").replace('/', "~1")
                );
                serde_json::json!({"op": "add", "path": path, "value": v})
            })
            .collect(),
    }
}

/// `POST /mutate/vip`: a Service labelled `multicluster.dev/vip-pool: POOL` gets an address from the
/// pool and its domain name, as annotations (see `multicluster_core::addresses`).
pub async fn mutate_vip(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let vips = state.vips.clone();
    review(&state, "mutate-vip", &body, async |req| {
        let response = AdmissionResponse::from(req);
        let (Some(service), true) = (req.object.as_ref(), is_write(&req.operation)) else {
            return response;
        };
        let Some(pool) =
            labels(Some(service)).and_then(|l| l.get(multicluster_core::keys::VIP_POOL))
        else {
            return response;
        };
        let Some(vips) = vips.as_ref() else {
            return response
                .deny("this hub server is not connected to a hub; it cannot hand out VIPs");
        };
        let namespace = req.namespace.clone().unwrap_or_default();
        let owner = multicluster_core::addresses::OwnerKind {
            api_version: if req.kind.group.is_empty() {
                req.kind.version.clone()
            } else {
                format!("{}/{}", req.kind.group, req.kind.version)
            },
            kind: req.kind.kind.clone(),
        };
        match vips
            .assign(
                &owner,
                pool,
                &namespace,
                service,
                req.old_object.as_ref(),
                req.dry_run,
            )
            .await
        {
            Ok(vip_annotations) => {
                let ops = annotation_patch(annotations(Some(service)), vip_annotations);
                with_patch(response, ops)
            }
            Err(reason) => {
                tracing::info!(%reason, "no VIP");
                response.deny(reason)
            }
        }
    })
    .await
}

/// `POST /validate/intent`: step 2 of the fence.
pub async fn validate_intent(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let intents = state.intents.clone();
    review(&state, "validate-intent", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if matches!(req.operation, Operation::Delete) {
            return validate_delete(intents.as_ref(), req, response).await;
        }
        if !is_write(&req.operation) {
            return response;
        }
        let object = req.object.as_ref();
        let name = object
            .and_then(|o| o.metadata.name.clone().or_else(|| o.metadata.generate_name.clone()))
            .unwrap_or_else(|| req.name.clone());
        let write = fencing::Write {
            kind: &req.kind.kind,
            namespace: req.namespace.as_deref(),
            name: &name,
            labels: labels(object),
            old_labels: labels(req.old_object.as_ref()),
            carried_intent_id: annotations(object)
                .and_then(|a| a.get(WRITTEN_WITH_INTENT_ID))
                .map(String::as_str),
        };
        match fencing::check_write(&write, |ns, n| intents.cached(ns, n)) {
            FenceVerdict::NotManaged | FenceVerdict::Allowed => response,
            FenceVerdict::Denied(_) => {
                // The watch may lag a just-created or just-rotated Intent: decide again on live data.
                let mut live = HashMap::new();
                for labels in [write.labels, write.old_labels] {
                    if let Some((ns, n)) = fencing::fencing_intent(write.namespace, labels) {
                        match intents.live(ns, n).await {
                            Ok(Some(view)) => {
                                live.insert((ns.to_owned(), n.to_owned()), view);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                return response.deny(format!(
                                    "cannot read Intent {ns}/{n} to check this write ({e}); the write is refused \
                                     because fencing must not lapse. Retry when the hub API answers"
                                ));
                            }
                        }
                    }
                }
                match fencing::check_write(&write, |ns, n| live.get(&(ns.to_owned(), n.to_owned())).cloned()) {
                    FenceVerdict::Denied(reason) => {
                        tracing::info!(%reason, "write denied by intent fence");
                        response.deny(reason)
                    }
                    _ => response,
                }
            }
        }
    })
    .await
}
