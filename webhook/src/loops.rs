//! The hub's background loops (run on the Lease holder only).

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
pub async fn intent_epochs(client: Client) {
    let api: Api<Intent> = Api::all(client.clone());
    let mut intents = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = intents.next().await {
        let intent = match event {
            Ok(intent) => intent,
            Err(e) => {
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
            Err(e) => tracing::warn!(error = %e, "recording an Intent's epoch"),
        }
    }
}

/// Releases VIP claims whose Service is gone (or no longer carries the claimed address), and
/// keeps each pool's status counts. A claim younger than `grace` is left alone: the webhook claims
/// the address before the API server stores the Service.
pub async fn vip_claims(client: Client, interval: std::time::Duration, grace: std::time::Duration) {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{DeleteParams, ListParams, Preconditions};
    use multicluster_core::api::{VipClaim, VipPool};
    let claims: Api<VipClaim> = Api::all(client.clone());
    let pools: Api<VipPool> = Api::all(client.clone());
    loop {
        let now = Timestamp::now();
        match claims.list(&ListParams::default()).await {
            Err(e) => tracing::warn!(error = %e, "listing VIP claims"),
            Ok(list) => {
                let mut held: std::collections::BTreeMap<String, u64> = Default::default();
                for claim in list.items {
                    let age = claim
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(0.0, |t| now.duration_since(t.0).as_secs_f64());
                    let owner = &claim.spec.owner;
                    let Some(ns) = owner.namespace.as_deref() else {
                        continue;
                    };
                    let alive = match Api::<Service>::namespaced(client.clone(), ns)
                        .get_opt(&owner.name)
                        .await
                    {
                        Ok(Some(svc)) => {
                            svc.annotations().get(multicluster_core::keys::VIP)
                                == Some(&claim.spec.address)
                        }
                        Ok(None) => false,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading a VIP claim's Service; keeping the claim");
                            true
                        }
                    };
                    if alive || age < grace.as_secs_f64() {
                        *held.entry(claim.spec.pool.clone()).or_default() += 1;
                        continue;
                    }
                    // Only this claim, as read: not one re-created for a new owner since.
                    let params = DeleteParams {
                        preconditions: claim.metadata.uid.clone().map(|uid| Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match claims.delete(&claim.name_any(), &params).await {
                        Ok(_) => {
                            tracing::info!(address = %claim.spec.address, service = %format!("{ns}/{}", owner.name), "VIP released")
                        }
                        Err(e) => tracing::warn!(error = %e, "releasing a VIP claim"),
                    }
                }
                if let Ok(pool_list) = pools.list(&ListParams::default()).await {
                    for pool in pool_list.items {
                        let size = multicluster_core::addresses::parse_ranges(&pool.spec.ranges)
                            .map(|r| multicluster_core::addresses::pool_size(&r))
                            .unwrap_or(0);
                        let allocated = held.get(&pool.name_any()).copied().unwrap_or(0);
                        let status = serde_json::json!({"status": {
                            "allocated": allocated, "free": size.saturating_sub(allocated)}});
                        let _ = pools
                            .patch_status(
                                &pool.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&status),
                            )
                            .await;
                    }
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
