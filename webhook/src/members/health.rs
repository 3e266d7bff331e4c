//! The health loop (Lease holder only): probes each member on its own schedule, records what it
//! found in the member's status, publishes an Event at each transition, and renews the hub's token
//! on the member before it expires. The judgement is `multicluster_core::members::health`.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use tokio_util::task::AbortOnDropHandle;

use super::MemberClients;
use multicluster_core::members::join::Capability;

/// Probes every member on its own schedule: one task per member, so a member that hangs until its
/// timeout never delays the probes of the others. Records health in the member's status and
/// publishes an Event at every transition; transitions need the member's thresholds of
/// consecutive results (`multicluster_core::members::health::next`).
pub async fn run(
    client: Client,
    clients: MemberClients,
    identity: String,
    run: crate::loops::Loop,
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
    // Aborted with this loop (dropped with it): a replica that loses the Lease stops probing.
    let mut tasks: HashMap<String, AbortOnDropHandle<()>> = HashMap::new();
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
                        AbortOnDropHandle::new(tokio::spawn(probe_forever(
                            client.clone(),
                            clients.clone(),
                            recorder.clone(),
                            name,
                            run.clone(),
                        )))
                    });
                }
            }
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "listing members")
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One member's probe loop: probe, record, wait its interval, until the member is gone.
async fn probe_forever(
    client: Client,
    clients: MemberClients,
    recorder: kube::runtime::events::Recorder,
    name: String,
    run: crate::loops::Loop,
) {
    use multicluster_core::api::MemberCluster;
    use multicluster_core::members::health::Streak;

    let members: Api<MemberCluster> = Api::all(client.clone());
    let mut streak: Option<Streak> = None;
    loop {
        let member = match members.get_opt(&name).await {
            Ok(Some(member)) => member,
            Ok(None) => return,
            Err(e) => {
                run.failed();
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
        let (healthy_now, why) =
            multicluster_core::members::health::judge(&member.spec.health, &probe);
        let (next, changed) =
            multicluster_core::members::health::next(&member.spec.health, current, healthy_now);
        streak = Some(next);
        let probed = multicluster_core::members::health::Probed {
            probe: &probe,
            healthy_now,
            why: &why,
            streak: next,
            latency,
        };
        let status = multicluster_core::members::health::status(&member, &probed, Timestamp::now());
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = members
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            run.failed();
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
        for capability in Capability::ALL {
            if let Err(e) = renew_token_if_due(&client, &clients, &member, capability).await {
                run.failed();
                tracing::warn!(member = %name, %capability, error = %e, "renewing the hub's token");
            }
        }
        tokio::time::sleep_until(next_probe).await;
    }
}

/// One probe: the member's version and nodes, within the member's timeout.
async fn probe_member(
    client: &Client,
    clients: &MemberClients,
    member: &multicluster_core::api::MemberCluster,
) -> (
    multicluster_core::members::health::ProbeResult,
    std::time::Duration,
) {
    use k8s_openapi::api::core::v1::Node;
    use multicluster_core::members::health::ProbeResult;
    let started = std::time::Instant::now();
    let timeout =
        std::time::Duration::from_secs(u64::from(member.spec.health.timeout_seconds.max(1)));
    let attempt = async {
        // The member's one shared connection (the probe's own timeout bounds the wait).
        let member_client = clients
            .get(client, member, Capability::Health, None)
            .await?;
        let version = member_client.apiserver_version().await?.git_version;
        let nodes = Api::<Node>::all(member_client)
            .list(&Default::default())
            .await?;
        let ready = nodes
            .items
            .iter()
            .filter(|n| multicluster_core::members::health::node_is_ready(n))
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

/// Renews `capability`'s token on a member at half its lifetime, with the token itself (its
/// account may request tokens for itself, nothing else), and stores the new one. Nothing to do
/// for a capability the member did not grant (no Secret).
async fn renew_token_if_due(
    client: &Client,
    clients: &MemberClients,
    member: &multicluster_core::api::MemberCluster,
    capability: Capability,
) -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use multicluster_core::members::join::{TOKEN_LIFETIME_SECONDS, secret_keys};
    let secrets: Api<Secret> = Api::namespaced(client.clone(), multicluster_core::SYSTEM_NAMESPACE);
    let name = &capability.secret_name(&member.spec.credentials_secret.name);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(());
    };
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
        .get(
            client,
            member,
            capability,
            Some(std::time::Duration::from_secs(10)),
        )
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
            .create_token_request(&capability.account(), &Default::default(), &request)
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
    tracing::info!(member = %member.name_any(), %capability, "renewed the hub's token");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeApi, Served};

    /// The health loop is aborted (its replica lost the Lease): the probe task it started per
    /// member stops with it, so nothing probes for a replica that no longer leads, and one that
    /// leads again does not probe every member twice. On paused time.
    #[tokio::test(start_paused = true)]
    async fn aborting_the_health_loop_stops_the_probes_it_started() {
        let hub = FakeApi::new();
        hub.serve(Served::new(
            "multicluster.dev/v1alpha1",
            "MemberCluster",
            "memberclusters",
            false,
        ));
        hub.insert(serde_json::json!({
            "apiVersion": "multicluster.dev/v1alpha1", "kind": "MemberCluster",
            "metadata": {"name": "member-1"},
            "spec": {"endpoint": "https://member-1.example:6443",
                     "credentialsSecret": {"name": "member-member-1"},
                     "health": {"intervalSeconds": 1, "timeoutSeconds": 1}}}));
        let member = FakeApi::new();
        let clients = MemberClients::default();
        clients.give("member-1", member.client());
        let metrics = crate::metrics::Metrics::default();
        let health = tokio::spawn(run(
            hub.client(),
            clients,
            "replica-a".into(),
            crate::loops::Loop::new("member-health", &metrics),
        ));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!member.requests().is_empty(), "member-1 was never probed");
        health.abort();
        let _ = health.await;
        let probed = member.requests().len();
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        assert_eq!(
            member.requests().len(),
            probed,
            "member-1 is still probed after the loop was aborted"
        );
    }
}
