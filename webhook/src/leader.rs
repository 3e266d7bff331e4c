//! Holds the hub's Lease and tells the background loops whether they may run on this replica.
//! The decision is `multicluster_core::lease::decide`; this module only reads and writes the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::lease::{self, LeaseStep, Observation};
use multicluster_core::{keys, versions};
use tokio::sync::watch;
use tokio::time::Instant;

/// This replica's identity: the pod name in a cluster, else host and pid.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Starts the election; the receiver says whether this replica leads now.
pub fn elect(client: Client, me: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, SYSTEM_NAMESPACE);
        // When this replica last wrote the Lease as its holder.
        let mut renewed_at: Option<Instant> = None;
        let mut observed = Observation::default();
        let origin = Instant::now();
        loop {
            // A call that hangs must not keep a replica leading past its deadline: the step gets
            // what is left of it (a follower, one interval).
            let budget = match renewed_at {
                Some(t) => lease::RENEW_DEADLINE.saturating_sub(t.elapsed()),
                None => lease::RENEW_INTERVAL,
            };
            let result =
                match tokio::time::timeout(budget, step(&api, &me, &mut observed, origin)).await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {budget:?}")),
                };
            let leading = match result {
                Ok(true) => {
                    renewed_at = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    renewed_at = None;
                    false
                }
                // One failed renewal (a slow or busy API server) does not stop the loops while
                // the Lease this replica last wrote still holds: stopping would cut off work
                // half-way (a snapshot with its workloads stopped) for nothing.
                Err(e) => {
                    let holds = renewed_at.is_some_and(|t| t.elapsed() < lease::RENEW_DEADLINE);
                    tracing::warn!(error = %e, still_leading = holds, "lease: cannot read or write");
                    if !holds {
                        renewed_at = None;
                    }
                    holds
                }
            };
            if *tx.borrow() != leading {
                tracing::info!(leading, identity = %me, "lease {}", lease::LEASE_NAME);
            }
            if tx.send(leading).is_err() {
                return;
            }
            tokio::time::sleep(lease::RENEW_INTERVAL).await;
        }
    });
    rx
}

async fn step(
    api: &Api<Lease>,
    me: &str,
    observed: &mut Observation,
    origin: Instant,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut current) = api.get_opt(lease::LEASE_NAME).await? else {
        let new = Lease {
            metadata: ObjectMeta {
                name: Some(lease::LEASE_NAME.to_owned()),
                annotations: Some([(keys::SERVER_VERSION.to_owned(), versions::release())].into()),
                ..Default::default()
            },
            spec: Some(holding(me, now, 0)),
        };
        // Another replica may create it first: then we follow this round.
        return api.create(&PostParams::default(), &new).await.map(|_| true);
    };
    let spec = current.spec.clone().unwrap_or_default();
    let unchanged_for = observed.saw(
        current
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default(),
        origin.elapsed(),
    );
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .unwrap_or(lease::LEASE_DURATION);
    match lease::decide(spec.holder_identity.as_deref(), unchanged_for, duration, me) {
        LeaseStep::Follow { .. } => Ok(false),
        step => {
            let mut next = spec.clone();
            if step == LeaseStep::Acquire {
                let transitions = spec.lease_transitions.unwrap_or(0) + 1;
                next = holding(me, now, transitions);
            } else {
                next.renew_time = Some(MicroTime(now));
            }
            current.spec = Some(next);
            // The holder says which build it is (`kubectl multicluster version` reads it).
            current
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(keys::SERVER_VERSION.to_owned(), versions::release());
            // `replace` carries the resourceVersion we read: if another replica wrote in between,
            // the API server refuses ours and we follow this round.
            api.replace(lease::LEASE_NAME, &PostParams::default(), &current)
                .await
                .map(|_| true)
        }
    }
}

fn holding(me: &str, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(lease::LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Runs `task` while this replica leads; stops it when the lead is lost and restarts it when it
/// comes back.
pub fn while_leading<F, Fut>(mut leading: watch::Receiver<bool>, name: &'static str, task: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            tracing::info!(task = name, "leading: starting");
            let handle = tokio::spawn(task());
            let lost = leading.wait_for(|l| !*l).await;
            handle.abort();
            tracing::info!(task = name, "not leading: stopped");
            if lost.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeApi, Served};

    fn hub() -> FakeApi {
        let fake = FakeApi::new();
        fake.serve(Served::new(
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            true,
        ));
        fake.insert(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": SYSTEM_NAMESPACE}}));
        fake
    }

    /// The hub API server stops answering the leader (a stalled connection: requests hang,
    /// nothing fails). The leader must stop leading before the Lease it last wrote expires, or
    /// another replica could take it over while this one still writes: two writers. On paused
    /// time, so the timers run without waiting.
    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_api_hangs_steps_down_before_its_lease_expires() {
        let fake = hub();
        let mut leading = elect(fake.client(), "replica-a".into());
        tokio::time::timeout(lease::RENEW_INTERVAL, leading.wait_for(|l| *l))
            .await
            .expect("leads once the Lease is created")
            .unwrap();
        fake.stall(true);
        let stalled = Instant::now();
        tokio::time::timeout(lease::LEASE_DURATION, leading.wait_for(|l| !*l))
            .await
            .expect("still leading when another replica may take the Lease")
            .unwrap();
        assert!(stalled.elapsed() <= lease::RENEW_DEADLINE + lease::RENEW_INTERVAL);
    }

    /// A Lease held by another replica whose renewTime is far in the past (its clock runs behind)
    /// is not taken while that replica keeps renewing: each renewal changes the record, and expiry
    /// counts from when this replica saw it change.
    #[tokio::test(start_paused = true)]
    async fn a_lease_renewed_by_a_replica_with_a_slow_clock_is_not_taken() {
        let fake = hub();
        let renewed_by_b = |fake: &FakeApi| {
            fake.insert(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": lease::LEASE_NAME, "namespace": SYSTEM_NAMESPACE},
                "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15,
                         "renewTime": "2020-01-01T00:00:00.000000Z"}}));
        };
        renewed_by_b(&fake);
        let leading = elect(fake.client(), "replica-a".into());
        for _ in 0..10 {
            tokio::time::sleep(lease::RENEW_INTERVAL).await;
            renewed_by_b(&fake);
            assert!(!*leading.borrow(), "took a Lease its holder keeps renewing");
        }
        // replica-b stops renewing: taken once a whole duration passed unchanged.
        tokio::time::timeout(lease::LEASE_DURATION * 2, {
            let mut leading = leading.clone();
            async move { leading.wait_for(|l| *l).await.map(|_| ()) }
        })
        .await
        .expect("an expired Lease is taken")
        .unwrap();
    }
}
