//! The VIP claim collector (Lease holder only): releases the address of a Service that is gone
//! and keeps each pool's counts in its status.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

/// The API of a claim's owner: a Service, or a hub `ServiceImport` (the kinds the VIP webhook
/// serves; its plural follows the usual rule).
fn owner_api(
    client: &Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
) -> Api<kube::api::DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        group, version, kind,
    ));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Releases VIP claims whose Service is gone (or no longer carries the claimed address), and
/// keeps each pool's status counts. A claim younger than `grace` is left alone: the webhook claims
/// the address before the API server stores the Service.
pub async fn run(
    client: Client,
    interval: std::time::Duration,
    grace: std::time::Duration,
    run: crate::loops::Loop,
) {
    use kube::api::{DeleteParams, ListParams, Preconditions};
    use multicluster_core::api::{VipClaim, VipPool};
    let claims: Api<VipClaim> = Api::all(client.clone());
    let pools: Api<VipPool> = Api::all(client.clone());
    loop {
        let now = Timestamp::now();
        match claims.list(&ListParams::default()).await {
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "listing VIP claims")
            }
            Ok(list) => {
                let mut held: std::collections::BTreeMap<String, u64> = Default::default();
                for claim in list.items {
                    let age = claim
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(0.0, |t| now.duration_since(t.0).as_secs_f64());
                    let owner = &claim.spec.owner;
                    let ns = owner.namespace.as_deref().unwrap_or_default();
                    let kind = multicluster_core::vip::OwnerKind {
                        api_version: owner.api_version.clone(),
                        kind: owner.kind.clone(),
                    };
                    // A claim of a kind the webhook does not serve, or of no namespace, was made
                    // by a forged request: released, without reading its "owner" (which the hub
                    // server may not be allowed to read, and must not keep it alive).
                    let served = multicluster_core::vip::refusal(&kind, Some(ns)).is_none();
                    let alive = if !served {
                        tracing::warn!(claim = %claim.name_any(), kind = %owner.kind, "releasing a VIP claim of a kind the webhook does not serve");
                        false
                    } else {
                        match owner_api(&client, ns, &owner.api_version, &owner.kind)
                            .get_opt(&owner.name)
                            .await
                        {
                            Ok(Some(holder)) => {
                                holder.annotations().get(multicluster_core::keys::VIP)
                                    == Some(&claim.spec.address)
                            }
                            Ok(None) => false,
                            Err(e) => {
                                run.failed();
                                tracing::warn!(error = %e, "reading a VIP claim's Service; keeping the claim");
                                true
                            }
                        }
                    };
                    if alive || (served && age < grace.as_secs_f64()) {
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
                        Err(e) => {
                            run.failed();
                            tracing::warn!(error = %e, "releasing a VIP claim")
                        }
                    }
                }
                if let Ok(pool_list) = pools.list(&ListParams::default()).await {
                    for pool in pool_list.items {
                        let size = multicluster_core::vip::parse_ranges(&pool.spec.ranges)
                            .map(|r| multicluster_core::vip::pool_size(&r))
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
