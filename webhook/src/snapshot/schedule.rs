//! The schedule loop (Lease holder): each `SnapshotSchedule` creates a `NamespaceSnapshot` when its
//! cron expression comes due (labelled with the schedule; the snapshot loop takes it like any
//! other), and deletes the snapshots its retention no longer keeps (the snapshot's finalizer removes
//! their archives and volume snapshots and asks for a sweep of the location's data).
//!
//! When to run, what to call the snapshot and what expires are
//! `multicluster_core::snapshot::schedule`'s decisions. Deleting a schedule keeps its snapshots, as
//! deleting a Velero schedule keeps its backups: they carry no owner reference.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    NamespaceRestore, NamespaceSnapshot, RestorePhase, SnapshotSchedule, SnapshotScheduleStatus,
};
use multicluster_core::snapshot::schedule::{
    self, Decision, Taken, decide, expired, finished, next_run, snapshot_name,
};
use multicluster_core::{SYSTEM_NAMESPACE, keys};

/// While one of its snapshots is at work, how often a schedule looks again (to apply retention as
/// soon as it ends).
const WHILE_RUNNING: Duration = Duration::from_secs(5);
/// The longest wait between two looks at a schedule (a clock step, a change missed).
const AT_MOST: Duration = Duration::from_secs(300);

/// Runs every `SnapshotSchedule` of the hub's namespace.
pub async fn run(hub: Client, run: crate::loops::Loop) {
    let api: Api<SnapshotSchedule> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    crate::loops::run_controller(api, reconcile, Arc::new(hub), run).await;
}

async fn reconcile(
    schedule: Arc<SnapshotSchedule>,
    hub: Arc<Client>,
) -> Result<Action, kube::Error> {
    let name = schedule.name_any();
    let now = Timestamp::now();
    let snapshots_api: Api<NamespaceSnapshot> = Api::namespaced((*hub).clone(), SYSTEM_NAMESPACE);
    let listed = snapshots_api
        .list(&ListParams::default().labels(&format!("{}={name}", keys::SCHEDULE_LABEL)))
        .await?
        .items;
    // Its snapshots by name, those being deleted left out: creation time and phase.
    let mut snapshots: BTreeMap<String, (Timestamp, multicluster_core::api::SnapshotPhase)> =
        listed
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .map(|s| {
                let time = s.creation_timestamp().map_or(now, |t| t.0);
                let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
                (s.name_any(), (time, phase))
            })
            .collect();
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = SnapshotScheduleStatus {
        observed_generation: schedule.metadata.generation,
        ..previous.clone()
    };
    let mut notes: Vec<String> = Vec::new();

    // Retention first: a run due now must not count a snapshot that has just expired.
    if let Some(retention) = &schedule.spec.retention {
        let taken: Vec<Taken> = snapshots
            .iter()
            .map(|(name, (time, phase))| Taken {
                name,
                time: *time,
                phase: *phase,
            })
            .collect();
        // A snapshot an unfinished restore reads stays until that restore is done with it.
        let restoring: BTreeSet<String> =
            Api::<NamespaceRestore>::namespaced((*hub).clone(), SYSTEM_NAMESPACE)
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|r| {
                    !matches!(
                        r.status.as_ref().map(|s| s.phase).unwrap_or_default(),
                        RestorePhase::Completed | RestorePhase::Failed
                    )
                })
                .map(|r| r.spec.snapshot)
                .collect();
        let gone: Vec<String> = expired(&taken, retention)
            .into_iter()
            .filter(|name| !restoring.contains(*name))
            .map(str::to_owned)
            .collect();
        for snapshot in &gone {
            match snapshots_api
                .delete(snapshot, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
            snapshots.remove(snapshot);
            tracing::info!(schedule = %name, %snapshot, "retention deleted a snapshot");
        }
        if !gone.is_empty() {
            notes.push(format!("retention deleted {}", gone.join(", ")));
        }
    }

    let running = snapshots
        .iter()
        .filter(|(_, (_, phase))| !finished(*phase))
        .max_by_key(|(_, (time, _))| *time)
        .map(|(name, _)| name.clone());
    let mut requeue = AT_MOST;
    match schedule::parse(&schedule.spec.schedule) {
        Err(e) => {
            notes.push(e);
            status.next_schedule_time = None;
        }
        Ok(_) if schedule.spec.suspend => {
            notes.push("suspended: no new snapshot until spec.suspend is false".to_owned());
            status.next_schedule_time = None;
        }
        Ok(cron) => {
            let created = schedule.creation_timestamp().map_or(now, |t| t.0);
            let since = previous
                .last_schedule_time
                .as_ref()
                .map_or(created, |t| t.0);
            match decide(&cron, since, now, running.as_deref()) {
                Decision::Take { run } => {
                    let snapshot = snapshot_name(&name, run);
                    take(&snapshots_api, &schedule, &snapshot).await?;
                    tracing::info!(schedule = %name, %snapshot, "scheduled snapshot created");
                    notes.push(format!("created {snapshot} for the run at {run}"));
                    snapshots.insert(snapshot.clone(), (now, Default::default()));
                    status.last_schedule_time = Some(Time(run));
                    status.last_snapshot = Some(snapshot);
                }
                Decision::Skip { run, running } => {
                    tracing::warn!(schedule = %name, %running, %run, "scheduled run skipped");
                    notes.push(format!(
                        "skipped the run at {run}: snapshot {running} is still at work"
                    ));
                    status.last_schedule_time = Some(Time(run));
                }
                Decision::Wait { .. } => {}
                Decision::Never => notes.push(format!(
                    "{:?} names no time to come: no snapshot will be taken",
                    schedule.spec.schedule
                )),
            }
            let from = status.last_schedule_time.as_ref().map_or(since, |t| t.0);
            status.next_schedule_time = next_run(&cron, from).map(Time);
            if let Some(next) = &status.next_schedule_time {
                let wait = now.duration_until(next.0).unsigned_abs();
                requeue = requeue.min(wait.max(Duration::from_millis(200)));
            }
        }
    }
    if snapshots.values().any(|(_, phase)| !finished(*phase)) {
        requeue = requeue.min(WHILE_RUNNING);
    }
    let mut newest_first: Vec<(&String, &Timestamp)> =
        snapshots.iter().map(|(n, (t, _))| (n, t)).collect();
    newest_first.sort_by(|a, b| b.1.cmp(a.1).then(b.0.cmp(a.0)));
    status.snapshots = newest_first.into_iter().map(|(n, _)| n.clone()).collect();
    // What this pass did or found; a pass that did nothing clears an earlier error or suspension.
    status.message = (!notes.is_empty()).then(|| notes.join("; "));
    if status != previous {
        Api::<SnapshotSchedule>::namespaced((*hub).clone(), SYSTEM_NAMESPACE)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": super::replacing(
                    &status,
                    &["nextScheduleTime", "snapshots", "message"]
                ) })),
            )
            .await?;
    }
    Ok(Action::requeue(requeue))
}

/// Creates the schedule's snapshot `name`; one that exists already (created by a replica that
/// stopped before recording it) is the run's.
async fn take(
    api: &Api<NamespaceSnapshot>,
    schedule: &SnapshotSchedule,
    name: &str,
) -> Result<(), kube::Error> {
    let mut snapshot = NamespaceSnapshot::new(name, schedule.spec.snapshot.clone());
    snapshot.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
    snapshot.metadata.labels = Some(
        [(keys::SCHEDULE_LABEL.to_owned(), schedule.name_any())]
            .into_iter()
            .collect(),
    );
    match api.create(&PostParams::default(), &snapshot).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
