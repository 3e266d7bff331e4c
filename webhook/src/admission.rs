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

/// Why an admission webhook could not answer a request normally. The messages are what the API
/// server shows the user (`kubectl apply` prints them after "admission webhook … denied the
/// request:"), so they say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the body is not a valid AdmissionReview: {0}")]
    NotAReview(serde_json::Error),
    #[error(
        "only admission.k8s.io/v1 AdmissionReview is served, got {api_version:?} {kind:?}; set admissionReviewVersions: [v1]"
    )]
    WrongVersion { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("internal error building the patch: {0}")]
    Patch(String),
    /// A hub server started without a hub (in-process tests) cannot make this decision.
    #[error("this hub server is not connected to a hub; it cannot {0}")]
    NotConnected(&'static str),
    /// The Intent a write or delete is fenced by could not be read; the request is refused.
    #[error(
        "cannot read Intent {intent} to check this write ({error}); the write is refused because fencing must not lapse. Retry when the hub API answers"
    )]
    IntentUnreadableForWrite { intent: String, error: String },
    #[error(
        "cannot read Intent {intent} to check this delete ({error}); refused because fencing must not lapse"
    )]
    IntentUnreadableForDelete { intent: String, error: String },
    #[error(
        "cannot read {object} to learn whether an Intent fences it ({error}); the scale is refused because fencing must not lapse. Retry when the hub API answers, or grant the hub server get on that kind"
    )]
    ScaledObjectUnreadable { object: String, error: String },
}

/// Parses a body into an AdmissionRequest, or says what is wrong with it.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, AdmissionError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(AdmissionError::NotAReview)?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(AdmissionError::WrongVersion {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    review.try_into().map_err(|_| AdmissionError::NoRequest)
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
        Err(error) => {
            let reason = error.to_string();
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
        Err(e) => response.deny(AdmissionError::Patch(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_a_v1_review_is_refused_with_what_to_set() {
        let error =
            parse(br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#)
                .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"only admission.k8s.io/v1 AdmissionReview is served, got "admission.k8s.io/v1beta1" "AdmissionReview"; set admissionReviewVersions: [v1]"#
        );
        let error = parse(b"not json").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the body is not a valid AdmissionReview: ")
        );
        let error = parse(br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#)
            .unwrap_err();
        assert_eq!(error.to_string(), "the AdmissionReview has no request");
    }
}
