//! The Intent epoch loop (Lease holder only): every rotation of an Intent's ID is recorded in its
//! status, so the fence and `intent show` know the previous ID and holder.

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::Intent;
use multicluster_core::fencing;

/// Records every Intent's rotations in its status: a new intent ID bumps the epoch and keeps the
/// previous ID and holder (`multicluster_core::fencing::next_status`).
pub async fn run(client: Client, run: crate::loops::Loop) {
    let api: Api<Intent> = Api::all(client.clone());
    let mut intents = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = intents.next().await {
        let intent = match event {
            Ok(intent) => intent,
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "watching Intents");
                continue;
            }
        };
        let now = Time(Timestamp::now());
        let Some(status) = fencing::next_status(&intent.spec, intent.status.as_ref(), now) else {
            continue;
        };
        let Some(namespace) = intent.namespace() else {
            continue;
        };
        let api: Api<Intent> = Api::namespaced(client.clone(), &namespace);
        // The resourceVersion makes this a compare-and-swap: if the Intent changed since this event,
        // the write is refused and the next event decides again.
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": intent.metadata.resource_version},
            "status": status
        });
        match api
            .patch_status(
                &intent.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!(
                intent = %format!("{namespace}/{}", intent.name_any()),
                epoch = status.epoch,
                holder = %intent.spec.holder,
                "intent epoch recorded"
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("Intent changed while recording its epoch; the next event decides")
            }
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "recording an Intent's epoch")
            }
        }
    }
}
