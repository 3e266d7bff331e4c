//! What every admission webhook of the hub server shares: parsing the AdmissionReview, a span and
//! metrics per review, and building patched or denied responses. Each capability's handler lives
//! in its own folder (`fencing::admission`, `vip::admission`, `snapshot::restore_admission`) and
//! hands the facts to the pure decision functions of `multicluster-core`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::Instrument;

use crate::metrics::Metrics;

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
    metrics: &Metrics,
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
            metrics.observe(webhook, "invalid", started.elapsed());
            metrics
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
    metrics.observe(webhook, verdict, started.elapsed());
    span.in_scope(|| tracing::debug!(verdict, "answered"));
    axum::Json(response.into_review()).into_response()
}

pub(crate) fn labels(object: Option<&DynamicObject>) -> Option<&BTreeMap<String, String>> {
    object.and_then(|o| o.metadata.labels.as_ref())
}

pub(crate) fn annotations(object: Option<&DynamicObject>) -> Option<&BTreeMap<String, String>> {
    object.and_then(|o| o.metadata.annotations.as_ref())
}

pub(crate) fn is_write(operation: &Operation) -> bool {
    matches!(operation, Operation::Create | Operation::Update)
}

/// The response with `ops` (RFC 6902 operations) as its patch; a patch that cannot be built is a
/// denial saying so, never a silent admit.
pub(crate) fn with_patch(
    response: AdmissionResponse,
    ops: Vec<serde_json::Value>,
) -> AdmissionResponse {
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
