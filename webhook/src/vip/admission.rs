//! `POST /mutate/vip`: the webhook that gives a Service labelled with a pool its address and name.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use kube::core::admission::AdmissionResponse;

use super::allocator::Vips;
use crate::admission::{AdmissionError, annotations, is_write, labels, review, with_patch};
use crate::metrics::Metrics;
use multicluster_core::keys::annotation_path;

/// `POST /mutate/vip`: a Service labelled `multicluster.dev/vip-pool: POOL` gets an address from the
/// pool and its domain name, as annotations (see `multicluster_core::vip`).
pub async fn mutate_vip(
    State(metrics): State<Arc<Metrics>>,
    State(vips): State<Option<Vips>>,
    body: Bytes,
) -> Response {
    review(&metrics, "mutate-vip", &body, async |req| {
        let response = AdmissionResponse::from(req);
        let (Some(service), true) = (req.object.as_ref(), is_write(&req.operation)) else {
            return response;
        };
        let Some(pool) =
            labels(Some(service)).and_then(|l| l.get(multicluster_core::keys::VIP_POOL))
        else {
            return leave_pool(response, annotations(Some(service)));
        };
        let owner = multicluster_core::vip::OwnerKind {
            api_version: if req.kind.group.is_empty() {
                req.kind.version.clone()
            } else {
                format!("{}/{}", req.kind.group, req.kind.version)
            },
            kind: req.kind.kind.clone(),
        };
        if let Some(refusal) = multicluster_core::vip::refusal(&owner, req.namespace.as_deref()) {
            tracing::warn!(kind = %owner.kind, %refusal, "a VIP request the API server would not send");
            return response.deny(refusal);
        }
        let Some(vips) = vips.as_ref() else {
            return response.deny(AdmissionError::NotConnected("hand out VIPs").to_string());
        };
        let namespace = req.namespace.clone().unwrap_or_default();
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

/// An object without the pool label: one that just left its pool (an update that removed the
/// label; the webhook sees it because the old object matched) loses the VIP annotations, so the
/// claim collector releases the address. Nothing to do for one that never had them.
fn leave_pool(
    response: AdmissionResponse,
    current: Option<&BTreeMap<String, String>>,
) -> AdmissionResponse {
    let removed = current
        .map(multicluster_core::vip::released_annotations)
        .unwrap_or_default();
    if removed.is_empty() {
        return response;
    }
    let ops = removed
        .into_iter()
        .map(|k| serde_json::json!({"op": "remove", "path": annotation_path(&k)}))
        .collect();
    with_patch(response, ops)
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
            .map(|(k, v)| serde_json::json!({"op": "add", "path": annotation_path(&k), "value": v}))
            .collect(),
    }
}
