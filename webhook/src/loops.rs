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
pub async fn vip_claims(client: Client, interval: std::time::Duration, grace: std::time::Duration) {
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
                    let alive = match owner_api(&client, ns, &owner.api_version, &owner.kind)
                        .get_opt(&owner.name)
                        .await
                    {
                        Ok(Some(holder)) => {
                            holder.annotations().get(multicluster_core::keys::VIP)
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

/// Probes every member on its own schedule: one task per member, so a member that hangs until its
/// timeout never delays the probes of the others. Records health in the member's status and
/// publishes an Event at every transition; transitions need the member's thresholds of
/// consecutive results (`multicluster_core::health::next`).
pub async fn member_health(
    client: Client,
    clients: crate::members::MemberClients,
    identity: String,
) {
    use std::collections::HashMap;
    use std::time::Duration;

    use kube::runtime::events::{Recorder, Reporter};
    use multicluster_core::api::MemberCluster;

    let members: Api<MemberCluster> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "multicluster-hub".into(),
            instance: Some(identity),
        },
    );
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        match members.list(&Default::default()).await {
            Ok(list) => {
                let names: Vec<String> = list.items.iter().map(|m| m.name_any()).collect();
                tasks.retain(|name, task| {
                    let keep = names.contains(name) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for name in names {
                    tasks.entry(name.clone()).or_insert_with(|| {
                        tokio::spawn(probe_forever(
                            client.clone(),
                            clients.clone(),
                            recorder.clone(),
                            name,
                        ))
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing members"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One member's probe loop: probe, record, wait its interval, until the member is gone.
async fn probe_forever(
    client: Client,
    clients: crate::members::MemberClients,
    recorder: kube::runtime::events::Recorder,
    name: String,
) {
    use multicluster_core::api::MemberCluster;
    use multicluster_core::health::Streak;

    let members: Api<MemberCluster> = Api::all(client.clone());
    let mut streak: Option<Streak> = None;
    loop {
        let member = match members.get_opt(&name).await {
            Ok(Some(member)) => member,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(member = %name, error = %e, "reading member");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
        };
        let interval =
            std::time::Duration::from_secs(u64::from(member.spec.health.interval_seconds.max(1)));
        let next_probe = tokio::time::Instant::now() + interval;
        // Believe what the status said before this process started, so a restart emits no Event.
        let current = *streak.get_or_insert_with(|| Streak {
            healthy: member
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Healthy"))
                .filter(|c| c.status != "Unknown")
                .map(|c| c.status == "True"),
            disagreeing: 0,
        });
        let (probe, latency) = probe_member(&client, &clients, &member).await;
        let (healthy_now, why) = multicluster_core::health::judge(&member.spec.health, &probe);
        let (next, changed) =
            multicluster_core::health::next(&member.spec.health, current, healthy_now);
        streak = Some(next);
        let status = health_status(&member, &probe, healthy_now, next, &why, latency);
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = members
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(member = %name, error = %e, "recording member health");
        }
        if changed {
            let healthy = next.healthy == Some(true);
            tracing::info!(member = %name, healthy, %why, "member health changed");
            let event = kube::runtime::events::Event {
                type_: if healthy {
                    kube::runtime::events::EventType::Normal
                } else {
                    kube::runtime::events::EventType::Warning
                },
                reason: if healthy {
                    "Healthy".into()
                } else {
                    "Unhealthy".into()
                },
                note: Some(why.clone()),
                action: "Probe".into(),
                secondary: None,
            };
            if let Err(e) = recorder
                .publish(&event, &kube::Resource::object_ref(&member, &()))
                .await
            {
                tracing::warn!(member = %name, error = %e, "publishing a health Event");
            }
        }
        if let Err(e) = renew_token_if_due(&client, &clients, &member).await {
            tracing::warn!(member = %name, error = %e, "renewing the hub's token");
        }
        tokio::time::sleep_until(next_probe).await;
    }
}

/// One probe: the member's version and nodes, within the member's timeout.
async fn probe_member(
    client: &Client,
    clients: &crate::members::MemberClients,
    member: &multicluster_core::api::MemberCluster,
) -> (multicluster_core::health::ProbeResult, std::time::Duration) {
    use k8s_openapi::api::core::v1::Node;
    use multicluster_core::health::ProbeResult;
    let started = std::time::Instant::now();
    let timeout =
        std::time::Duration::from_secs(u64::from(member.spec.health.timeout_seconds.max(1)));
    let attempt = async {
        // The member's one shared connection (the probe's own timeout bounds the wait).
        let member_client = clients.get(client, member, None).await?;
        let version = member_client.apiserver_version().await?.git_version;
        let nodes = Api::<Node>::all(member_client)
            .list(&Default::default())
            .await?;
        let ready = nodes
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        anyhow::Ok(ProbeResult::Answered {
            version,
            ready_nodes: u32::try_from(ready).unwrap_or(u32::MAX),
            total_nodes: u32::try_from(nodes.items.len()).unwrap_or(u32::MAX),
        })
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(probe)) => probe,
        Ok(Err(e)) => ProbeResult::Unreachable {
            reason: format!("{e:#}"),
        },
        Err(_) => ProbeResult::Unreachable {
            reason: format!("no answer within {}s", timeout.as_secs()),
        },
    };
    (result, started.elapsed())
}

/// The status a probe leads to: conditions with reasons a person understands, nodes, version,
/// latency, time.
fn health_status(
    member: &multicluster_core::api::MemberCluster,
    probe: &multicluster_core::health::ProbeResult,
    healthy_now: bool,
    streak: multicluster_core::health::Streak,
    why: &str,
    latency: std::time::Duration,
) -> serde_json::Value {
    use multicluster_core::health::ProbeResult;
    let now = Timestamp::now();
    let previous = member.status.clone().unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        // Keep the transition time while the status stays the same.
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or(now, |c| c.last_transition_time.0);
        serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message,
                           "lastTransitionTime": Time(since), "observedGeneration": member.metadata.generation})
    };
    let believed = streak.healthy.unwrap_or(healthy_now);
    let pending = if believed != healthy_now {
        let needed = if believed {
            member.spec.health.failure_threshold
        } else {
            member.spec.health.success_threshold
        };
        format!(
            " (latest probe disagrees: {why}; {} of {needed} probes needed to change)",
            streak.disagreeing
        )
    } else {
        String::new()
    };
    let (reachable, healthy_reason) = match probe {
        ProbeResult::Answered { .. } => (
            condition(
                "Reachable",
                "True",
                "APIAnswered",
                "the API server answered".into(),
            ),
            if believed {
                "EnoughReadyNodes"
            } else {
                "TooFewReadyNodes"
            },
        ),
        ProbeResult::Unreachable { reason } => (
            condition(
                "Reachable",
                "False",
                "Unreachable",
                format!("the API server did not answer: {reason}"),
            ),
            if believed {
                "EnoughReadyNodes"
            } else {
                "Unreachable"
            },
        ),
    };
    let message = if believed == healthy_now {
        why.to_owned()
    } else {
        format!("still as before{pending}")
    };
    let healthy = condition(
        "Healthy",
        if believed { "True" } else { "False" },
        healthy_reason,
        message,
    );
    let mut status = serde_json::json!({
        "conditions": [reachable, healthy],
        "probeLatencyMillis": u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        "lastProbeTime": Time(now),
    });
    if let ProbeResult::Answered {
        version,
        ready_nodes,
        total_nodes,
    } = probe
    {
        status["version"] = serde_json::json!(version);
        status["readyNodes"] = serde_json::json!(ready_nodes);
        status["totalNodes"] = serde_json::json!(total_nodes);
    }
    status
}

/// Renews the hub's token on a member at half its lifetime, with the token itself (its account
/// may request tokens for itself, nothing else), and stores the new one.
async fn renew_token_if_due(
    client: &Client,
    clients: &crate::members::MemberClients,
    member: &multicluster_core::api::MemberCluster,
) -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use multicluster_core::member::{HUB_ACCOUNT, TOKEN_LIFETIME_SECONDS, secret_keys};
    let secrets: Api<Secret> = Api::namespaced(client.clone(), multicluster_core::SYSTEM_NAMESPACE);
    let name = &member.spec.credentials_secret.name;
    let secret = secrets.get(name).await?;
    let expires = secret
        .data
        .as_ref()
        .and_then(|d| d.get(secret_keys::EXPIRES))
        .and_then(|v| String::from_utf8_lossy(&v.0).parse::<Timestamp>().ok());
    let Some(expires) = expires else {
        return Ok(());
    };
    let left = expires.duration_since(Timestamp::now()).as_secs();
    if left > TOKEN_LIFETIME_SECONDS / 2 {
        return Ok(());
    }
    // Over the member's shared connection; the stored token is the one about to be replaced.
    let member_client = clients
        .get(client, member, Some(std::time::Duration::from_secs(10)))
        .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token =
        Api::<ServiceAccount>::namespaced(member_client, multicluster_core::SYSTEM_NAMESPACE)
            .create_token_request(HUB_ACCOUNT, &Default::default(), &request)
            .await?;
    let status = token
        .status
        .ok_or_else(|| anyhow::anyhow!("no token returned"))?;
    let patch = serde_json::json!({"stringData": {
        secret_keys::TOKEN: status.token,
        secret_keys::EXPIRES: status.expiration_timestamp.map(|t| t.0.to_string()),
    }});
    secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(member = %member.name_any(), "renewed the hub's token");
    Ok(())
}
