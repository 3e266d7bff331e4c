//! The VIP claim collector (Lease holder only): releases the address of a Service that is gone
//! and keeps each pool's counts in its status.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{VipClaim, VipPool};

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
    let claims: Api<VipClaim> = Api::all(client.clone());
    loop {
        match claims.list(&ListParams::default()).await {
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "listing VIP claims")
            }
            Ok(list) => {
                let now = Timestamp::now();
                let mut held: BTreeMap<String, u64> = BTreeMap::new();
                for claim in list.items {
                    if keep(&client, &claim, now, grace, &run).await {
                        *held.entry(claim.spec.pool.clone()).or_default() += 1;
                    } else {
                        release(&claims, &claim, &run).await;
                    }
                }
                record_pool_counts(&client, &held).await;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Whether `claim` still holds its address: its owner exists and carries the address, or it is
/// younger than `grace`. A claim of a kind the webhook does not serve, or of no namespace, was made
/// by a forged request: released without reading its "owner" (which the hub server may not be
/// allowed to read, and must not keep it alive). An owner that cannot be read keeps its claim.
async fn keep(
    client: &Client,
    claim: &VipClaim,
    now: Timestamp,
    grace: std::time::Duration,
    run: &crate::loops::Loop,
) -> bool {
    let owner = &claim.spec.owner;
    let ns = owner.namespace.as_deref().unwrap_or_default();
    let kind = multicluster_core::vip::OwnerKind {
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
    };
    if multicluster_core::vip::refusal(&kind, Some(ns)).is_some() {
        tracing::warn!(claim = %claim.name_any(), kind = %owner.kind, "releasing a VIP claim of a kind the webhook does not serve");
        return false;
    }
    let age = claim
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0.0, |t| now.duration_since(t.0).as_secs_f64());
    if age < grace.as_secs_f64() {
        return true;
    }
    match owner_api(client, ns, &owner.api_version, &owner.kind)
        .get_opt(&owner.name)
        .await
    {
        Ok(Some(holder)) => {
            holder.annotations().get(multicluster_core::keys::VIP) == Some(&claim.spec.address)
        }
        Ok(None) => false,
        Err(e) => {
            run.failed();
            tracing::warn!(error = %e, "reading a VIP claim's Service; keeping the claim");
            true
        }
    }
}

/// Deletes `claim`, only as read: not one re-created for a new owner since.
async fn release(claims: &Api<VipClaim>, claim: &VipClaim, run: &crate::loops::Loop) {
    let params = DeleteParams {
        preconditions: claim.metadata.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let owner = &claim.spec.owner;
    match claims.delete(&claim.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(address = %claim.spec.address,
                service = %format!("{}/{}", owner.namespace.as_deref().unwrap_or_default(), owner.name),
                "VIP released")
        }
        Err(e) => {
            run.failed();
            tracing::warn!(error = %e, "releasing a VIP claim")
        }
    }
}

/// Writes each pool's allocated and free counts from the claims that hold an address.
async fn record_pool_counts(client: &Client, held: &BTreeMap<String, u64>) {
    let pools: Api<VipPool> = Api::all(client.clone());
    let Ok(pool_list) = pools.list(&ListParams::default()).await else {
        return;
    };
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
