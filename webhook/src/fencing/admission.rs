//! The fence's two webhooks: `POST /mutate/intent` stamps a write to a managed object with the
//! intent ID it carries, and `POST /validate/intent` refuses one whose ID is not the Intent's
//! current one (`multicluster_core::fencing`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use multicluster_core::fencing::{self, FenceVerdict};
use multicluster_core::keys::{INTENT_ID, WRITTEN_WITH_INTENT_ID};

use super::IntentLookup;
use crate::admission::{AdmissionError, annotations, is_write, labels, review, with_patch};
use crate::metrics::Metrics;

/// `POST /mutate/intent`: step 1 of the fence (see `multicluster_core::fencing`).
pub async fn mutate_intent(State(metrics): State<Arc<Metrics>>, body: Bytes) -> Response {
    review(&metrics, "mutate-intent", &body, async |req| {
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

/// `POST /validate/intent`: step 2 of the fence.
pub async fn validate_intent(
    State(metrics): State<Arc<Metrics>>,
    State(intents): State<Arc<dyn IntentLookup>>,
    body: Bytes,
) -> Response {
    review(&metrics, "validate-intent", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if matches!(req.operation, Operation::Delete) {
            return validate_delete(intents.as_ref(), req, response).await;
        }
        if !is_write(&req.operation) {
            return response;
        }
        let object = req.object.as_ref();
        let name = object
            .and_then(|o| {
                o.metadata
                    .name
                    .clone()
                    .or_else(|| o.metadata.generate_name.clone())
            })
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
        match decide_write(intents.as_ref(), &write).await {
            Some(reason) => {
                tracing::info!(%reason, "write denied by intent fence");
                response.deny(reason)
            }
            None => response,
        }
    })
    .await
}

/// Step 2 on one write: `None` admits it, `Some(reason)` denies it. Decided on the watch-fed
/// cache while every Intent involved is fresh there (`IntentLookup::is_fresh`), and on live reads
/// otherwise and before any denial: the watch may lag a just-created or just-rotated Intent, or
/// have stalled.
async fn decide_write(intents: &dyn IntentLookup, write: &fencing::Write<'_>) -> Option<String> {
    let fences: Vec<(&str, &str)> = [write.labels, write.old_labels]
        .into_iter()
        .filter_map(|labels| fencing::fencing_intent(write.namespace, labels))
        .collect();
    let all_fresh = fences.iter().all(|(ns, n)| intents.is_fresh(ns, n));
    if all_fresh {
        match fencing::check_write(write, |ns, n| intents.cached(ns, n)) {
            FenceVerdict::NotManaged | FenceVerdict::Allowed => return None,
            FenceVerdict::Denied(_) => {}
        }
    }
    let mut live = HashMap::new();
    for (ns, n) in fences {
        match intents.live(ns, n).await {
            Ok(Some(view)) => {
                live.insert((ns.to_owned(), n.to_owned()), view);
            }
            Ok(None) => {}
            Err(e) => {
                let error = AdmissionError::IntentUnreadableForWrite {
                    intent: format!("{ns}/{n}"),
                    error: e,
                };
                return Some(error.to_string());
            }
        }
    }
    match fencing::check_write(write, |ns, n| {
        live.get(&(ns.to_owned(), n.to_owned())).cloned()
    }) {
        FenceVerdict::Denied(reason) => Some(reason),
        _ => None,
    }
}

/// `POST /validate/intent-scale`: a write to an object's `scale` subresource (`kubectl scale`, an
/// autoscaler). The API server sends every one (in namespaces the fence may act in): the Scale
/// object it sends carries no labels, so the webhook's object selector cannot pick the managed
/// ones (kubernetes/kubernetes#113594). The fence reads the scaled object's labels itself; a
/// managed one is scaled only by a request that carries the Intent's current ID on the Scale
/// (`multicluster.dev/intent-id`), which `kubectl scale` cannot: its manager scales it with an
/// update of the object instead, like every other write.
pub async fn validate_intent_scale(
    State(metrics): State<Arc<Metrics>>,
    State(intents): State<Arc<dyn IntentLookup>>,
    body: Bytes,
) -> Response {
    review(&metrics, "validate-intent-scale", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if !is_write(&req.operation) || req.sub_resource.as_deref() != Some("scale") {
            return response;
        }
        let resource = &req.resource;
        let labels = match intents
            .labels_of(
                &resource.group,
                &resource.version,
                &resource.resource,
                req.namespace.as_deref(),
                &req.name,
            )
            .await
        {
            Ok(Some(labels)) => labels,
            // Gone: nothing to scale, and the API server answers that itself.
            Ok(None) => return response,
            Err(error) => {
                let error = AdmissionError::ScaledObjectUnreadable {
                    object: format!("{} {}", resource.resource, req.name),
                    error,
                };
                return response.deny(error.to_string());
            }
        };
        let kind = format!("{}/scale", resource.resource);
        let write = fencing::Write {
            kind: &kind,
            namespace: req.namespace.as_deref(),
            name: &req.name,
            labels: Some(&labels),
            old_labels: None,
            carried_intent_id: annotations(req.object.as_ref())
                .and_then(|a| a.get(INTENT_ID))
                .map(String::as_str),
        };
        match decide_write(intents.as_ref(), &write).await {
            Some(reason) => {
                tracing::info!(%reason, "scale denied by intent fence");
                response.deny(reason)
            }
            None => response,
        }
    })
    .await
}

/// `POST /validate/intent-status`: a write to a managed object's `status` subresource, refused
/// when it changes the object's labels or annotations (`fencing::status_write_refusal`).
pub async fn validate_intent_status(State(metrics): State<Arc<Metrics>>, body: Bytes) -> Response {
    review(&metrics, "validate-intent-status", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if !is_write(&req.operation) || req.sub_resource.as_deref() != Some("status") {
            return response;
        }
        let (old, new) = (req.old_object.as_ref(), req.object.as_ref());
        match fencing::status_write_refusal(
            req.namespace.as_deref(),
            &req.name,
            (labels(old), annotations(old)),
            (labels(new), annotations(new)),
        ) {
            Some(reason) => {
                tracing::info!(%reason, "status write denied by intent fence");
                response.deny(reason)
            }
            None => response,
        }
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
        Err(e) => {
            let error = AdmissionError::IntentUnreadableForDelete {
                intent: format!("{ns}/{n}"),
                error: e,
            };
            response.deny(error.to_string())
        }
    }
}
