//! Holds the hub's Lease and tells the background loops whether they may run on this replica.
//! The decision is `multicluster_core::lease::decide`; this module only reads and writes the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::lease::{self, LeaseStep};
use multicluster_core::{keys, versions};
use tokio::sync::watch;

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
        let mut renewed_at: Option<tokio::time::Instant> = None;
        loop {
            let leading = match step(&api, &me).await {
                Ok(true) => {
                    renewed_at = Some(tokio::time::Instant::now());
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

async fn step(api: &Api<Lease>, me: &str) -> Result<bool, kube::Error> {
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
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .unwrap_or(lease::LEASE_DURATION);
    match lease::decide(spec.holder_identity.as_deref(), renewed, duration, me, now) {
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
