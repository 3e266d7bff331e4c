//! Carries out `NamespaceRestore`s (Lease holder). The validating webhook admitted the restore;
//! just before writing, this checks again that the target namespace holds no conflicting
//! application (it may have changed since), reads and checks the archive (its recorded checksum,
//! format version and every entry), and refuses before any write when either fails. Then it writes
//! `multicluster_core::snapshot::restore::plan`'s objects: the namespace, the volume snapshots and
//! claims (waiting until they are bound, i.e. hydrated from the snapshot), the rest tier by tier in
//! the distribution's dependency order, and the workloads last, at their recorded scale.
//!
//! Every write is a server-side apply, so a restore found half-way (the hub server restarted)
//! simply starts over: what was written is written again, unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    MemberCluster, NamespaceRestore, NamespaceRestoreStatus, NamespaceSnapshot,
    RestoreObjectFailure, RestorePhase, SnapshotPhase, StorageLocation, VolumeDataStatus,
    VolumeHydrationStatus,
};
use multicluster_core::cluster::{KindError, Kinds};
use multicluster_core::keys;
use multicluster_core::members::join::Capability;
use multicluster_core::snapshot::archive::{self, Archive};
use multicluster_core::snapshot::location::archive_key;
use multicluster_core::snapshot::mover::Job;
use multicluster_core::snapshot::restore::{self, Hydration, RestorePlan, RestoreTarget};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::{Value, json};

use crate::members::MemberClients;
use crate::snapshot::transfers;

mod removal;

/// The field manager of every object a restore writes.
pub(super) const FIELD_MANAGER: &str = "multicluster-restore";
/// How long claims may take to be bound (volumes hydrated from their snapshots).
const HYDRATE_TIMEOUT: Duration = Duration::from_secs(1800);
/// Writes in flight at once within a tier.
const CONCURRENT_WRITES: usize = 32;
/// The status is written at most this often while objects are being written.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(super) struct Context {
    pub(super) hub: Client,
    pub(super) members: MemberClients,
    pub(super) settings: Settings,
}

/// How much a restore may take of the hub server, and how it hydrates volumes, from its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// What of an archive is held in memory at most.
    pub limits: archive::Limits,
    /// Starts of one restore before it fails: one that stops the hub server every time (out of
    /// memory) would otherwise stop every replica in turn.
    pub max_attempts: u32,
    /// How claims are filled from the location's copy of their data.
    pub mover: transfers::Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: archive::Limits::default(),
            max_attempts: 3,
            mover: transfers::Settings::default(),
        }
    }
}

/// Reconciles the hub's `NamespaceRestore`s, one at a time.
pub async fn run(hub: Client, members: MemberClients, settings: Settings, run: crate::loops::Loop) {
    let api: Api<NamespaceRestore> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    let ctx = Arc::new(Context {
        hub,
        members,
        settings,
    });
    crate::loops::run_controller(api, reconcile, ctx, run).await;
}

pub(super) async fn reconcile(
    restore: Arc<NamespaceRestore>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    let phase = restore.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if matches!(phase, RestorePhase::Completed | RestorePhase::Failed) {
        // Removing what it wrote waits until it has stopped writing.
        if let Some(request) = removal::requested(&restore) {
            removal::run(&ctx, &restore, request).await?;
        }
        return Ok(Action::await_change());
    }
    let name = restore.name_any();
    let mut progress = Progress::new(
        &ctx.hub,
        &restore.name_any(),
        restore.status.clone().unwrap_or_default(),
    );
    if phase != RestorePhase::Pending {
        tracing::info!(restore = %name, ?phase, "restore found half-way; starting over");
    }
    let attempts = restore.status.as_ref().map_or(0, |s| s.attempts) + 1;
    progress.status = NamespaceRestoreStatus {
        start_time: Some(Time(Timestamp::now())),
        attempts,
        ..Default::default()
    };
    if attempts > ctx.settings.max_attempts {
        let message = format!(
            "gave up after {} attempts: a hub server started this restore {0} times and stopped \
             before it finished each time (a restart, or running out of memory on a large archive: \
             see the hub server's --restore-max-archive-* flags and its memory limit); what was \
             written to {}/{} stays. Delete the restore and create it again to retry",
            ctx.settings.max_attempts, restore.spec.target_cluster, restore.spec.target_namespace
        );
        tracing::warn!(restore = %name, %message, "namespace restore failed");
        // The mover pods and Secrets an interrupted attempt left on the target go with it.
        remove_imports(&ctx, &restore).await;
        progress.status.completion_time = Some(Time(Timestamp::now()));
        progress
            .claim(restore.resource_version(), RestorePhase::Failed, message)
            .await?;
        return Ok(Action::await_change());
    }
    let message = format!(
        "reading snapshot {} and checking {}/{}",
        restore.spec.snapshot, restore.spec.target_cluster, restore.spec.target_namespace
    );
    if !progress
        .claim(restore.resource_version(), RestorePhase::Pending, message)
        .await?
    {
        return Ok(Action::await_change());
    }
    match run_restore(&ctx, &restore, &mut progress).await {
        Ok(()) => tracing::info!(restore = %name, "namespace restore completed"),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(restore = %name, error = %message, "namespace restore failed");
            progress.status.phase = RestorePhase::Failed;
            progress.status.message = Some(message);
            progress.status.completion_time = Some(Time(Timestamp::now()));
            progress.write().await?;
        }
    }
    Ok(Action::await_change())
}

type Progress = crate::snapshot::progress::Progress<NamespaceRestore, NamespaceRestoreStatus>;

async fn run_restore(
    ctx: &Context,
    restore: &NamespaceRestore,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let spec = &restore.spec;
    let ns = spec.target_namespace.as_str();
    // Nothing is written to the target until the archive and the target are both checked.
    let snapshot = Api::<NamespaceSnapshot>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(&spec.snapshot)
        .await?
        .ok_or_else(|| anyhow!("NamespaceSnapshot {} does not exist", spec.snapshot))?;
    let archive = read_archive(ctx, &snapshot).await?;
    let member = target_member(ctx, &spec.target_cluster).await?;
    check_target_again(&member, restore, &archive, progress).await?;
    let plan = plan_of(restore, &archive).context("planning the restore; nothing was written")?;
    let resources = resolve_kinds(&member, &plan).await?;
    progress.status.objects_total = u32::try_from(plan.total() + 1).unwrap_or(u32::MAX);

    progress
        .step(
            RestorePhase::Hydrating,
            format!(
                "creating namespace {ns} and {} claim(s) from {} volume snapshot(s)",
                plan.claims.len(),
                archive.manifest.volume_snapshots.len()
            ),
        )
        .await?;
    let waiting = hydrate(
        ctx,
        &member,
        &resources,
        &plan,
        (restore, &snapshot),
        progress,
    )
    .await?;
    progress
        .step(RestorePhase::Restoring, restoring_message(&plan, &waiting))
        .await?;
    for tier in &plan.tiers {
        write_all(&member, &resources, tier, progress).await?;
    }
    progress.status.completion_time = Some(Time(Timestamp::now()));
    let written = progress.status.objects_written;
    progress
        .step(
            RestorePhase::Completed,
            format!("{written} objects written to {}/{ns}", spec.target_cluster),
        )
        .await?;
    Ok(())
}

/// What `restore` writes, from its snapshot's archive.
fn plan_of(
    restore: &NamespaceRestore,
    archive: &Archive,
) -> Result<RestorePlan, restore::RestoreError> {
    let spec = &restore.spec;
    restore::plan(
        archive,
        RestoreTarget {
            restore: restore.metadata.name.as_deref().unwrap_or_default(),
            snapshot: &spec.snapshot,
            cluster: &spec.target_cluster,
            namespace: &spec.target_namespace,
        },
        &spec.transforms,
    )
}

/// A client for the member the restore writes to.
async fn target_member(ctx: &Context, cluster: &str) -> anyhow::Result<Client> {
    let cluster = Api::<MemberCluster>::all(ctx.hub.clone())
        .get_opt(cluster)
        .await?
        .ok_or_else(|| anyhow!("MemberCluster {cluster} does not exist on the hub"))?;
    ctx.members
        .get(
            &ctx.hub,
            &cluster,
            Capability::Snapshots,
            Some(Duration::from_secs(30)),
        )
        .await
        .with_context(|| format!("connecting to member {}", cluster.name_any()))
}

/// The admission check ran when the restore was created; the target may have changed since.
/// Reads it again, consistently, and fails (recording the conflicts) before anything is written.
async fn check_target_again(
    member: &Client,
    restore: &NamespaceRestore,
    archive: &Archive,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let (name, spec) = (restore.name_any(), &restore.spec);
    let ns = spec.target_namespace.as_str();
    let live = crate::snapshot::target::live_objects(
        member,
        ns,
        crate::snapshot::target::Freshness::Consistent,
    )
    .await
    .with_context(|| format!("reading {}/{ns} to check it again", spec.target_cluster))?;
    // What this restore already wrote (it is starting over) is not a conflict.
    let others: Vec<Value> = live
        .into_iter()
        .filter(|o| o["metadata"]["annotations"][keys::RESTORED_BY] != name.as_str())
        .collect();
    let conflicts = multicluster_core::snapshot::conflicts(
        &archive.manifest.inventory,
        &multicluster_core::snapshot::inventory(&others),
        ns,
    );
    if conflicts.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{} {}: {}", c.kind, c.name, c.reason))
        .collect();
    progress.status.conflicts = conflicts;
    bail!(
        "{}/{ns} changed since the restore was admitted and now holds applications that differ \
         from the snapshot; nothing was written: {}",
        spec.target_cluster,
        list.join("; ")
    );
}

/// Creates the namespace, the volume snapshot objects and the claims from them, fills the claims
/// of exported volumes from the location, and waits for the claims to bind (hydrated) before any
/// workload exists; returns the claims that bind only once their first pod is scheduled
/// (`WaitForFirstConsumer`).
async fn hydrate(
    ctx: &Context,
    member: &Client,
    resources: &BTreeMap<(String, String), ApiResource>,
    plan: &RestorePlan,
    (restore, snapshot): (&NamespaceRestore, &NamespaceSnapshot),
    progress: &mut Progress,
) -> anyhow::Result<Vec<String>> {
    let ns = restore.spec.target_namespace.as_str();
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "annotations": {keys::RESTORED_BY: restore.name_any()}}
    });
    // Created, never patched: the snapshots account may create namespaces but not change one
    // that exists (its labels set the pod security level). An existing target namespace passed
    // the conflict checks and keeps its metadata as it is.
    let namespace: Namespace = serde_json::from_value(namespace)?;
    match Api::<Namespace>::all(member.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).with_context(|| format!("creating namespace {ns}")),
    }
    count_written(progress, 1).await?;
    write_all(member, resources, &plan.snapshot_objects, progress).await?;
    if progress.status.attempts > 1 {
        discard_unfilled_claims(member, restore, &plan.hydrations).await?;
    }
    write_all(member, resources, &plan.claims, progress).await?;
    fill_from_location(ctx, member, (restore, snapshot), &plan.hydrations, progress).await?;
    // A filled claim is bound: its mover pod was its first consumer.
    let others: Vec<Value> = plan
        .claims
        .iter()
        .filter(|c| {
            !plan
                .hydrations
                .iter()
                .any(|h| c["metadata"]["name"] == h.claim.as_str())
        })
        .cloned()
        .collect();
    wait_bound(member, ns, &others).await
}

/// Fills each claim of `hydrations` (written empty) from the location's copy of its volume with
/// a mover pod, every chunk checked against its digest; then marks it with the index it holds, so
/// that a restore started over does not fill it again. A missing or corrupt chunk fails the restore
/// here, naming the volume and the file, before any workload is written.
async fn fill_from_location(
    ctx: &Context,
    member: &Client,
    (restore, snapshot): (&NamespaceRestore, &NamespaceSnapshot),
    hydrations: &[Hydration],
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if hydrations.is_empty() {
        return Ok(());
    }
    let (name, ns) = (restore.name_any(), restore.spec.target_namespace.as_str());
    let location_name = &snapshot.spec.location;
    let location = Api::<StorageLocation>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(location_name)
        .await?
        .ok_or_else(|| anyhow!("StorageLocation {location_name} does not exist"))?;
    let s3 = location.spec.s3.as_ref().ok_or_else(|| {
        anyhow!(
            "StorageLocation {location_name} is not an object store, so no pod can read the \
             volumes' data from it; nothing but the claims was written"
        )
    })?;
    let target = transfers::Location::read(&ctx.hub, s3).await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), ns);
    let mut jobs = Vec::new();
    progress.status.volumes.clear();
    for h in hydrations {
        let filled = claims
            .get_opt(&h.claim)
            .await?
            .and_then(|c| c.annotations().get(keys::HYDRATED_FROM).cloned());
        let mut data = VolumeDataStatus {
            bytes_total: h.data.bytes,
            files: h.data.files,
            index: Some(h.data.index.clone()),
            ..Default::default()
        };
        if filled.as_deref() == Some(h.data.index.as_str()) {
            data.bytes_done = h.data.bytes;
            data.done = true;
        } else {
            jobs.push(Job::import(&name, ns, &h.claim, &h.data.index));
        }
        progress.status.volumes.push(VolumeHydrationStatus {
            claim: h.claim.clone(),
            data,
            message: None,
        });
    }
    let message = format!(
        "filling {} claim(s) from {location_name} ({} MiB)",
        jobs.len(),
        hydrations.iter().map(|h| h.data.bytes).sum::<u64>() >> 20
    );
    progress.step(RestorePhase::Hydrating, message).await?;
    let filled = transfers::run(
        member,
        &target,
        &ctx.settings.mover,
        jobs.clone(),
        progress,
        record_imports,
    )
    .await
    .context("filling the claims from the snapshot's data; no workload was written")?;
    for (job, moved) in jobs.iter().zip(filled) {
        let patch = json!({"metadata": {"annotations": {keys::HYDRATED_FROM: moved.index_digest}}});
        claims
            .patch(&job.claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("marking claim {} as filled", job.claim))?;
    }
    Ok(())
}

/// A restore started over: the claims an earlier attempt wrote to be filled and did not mark filled
/// may hold part of their data, so they are deleted (after the mover pods that used them) and
/// written again empty. Claims this restore did not write are left alone.
async fn discard_unfilled_claims(
    member: &Client,
    restore: &NamespaceRestore,
    hydrations: &[Hydration],
) -> anyhow::Result<()> {
    let (name, ns) = (restore.name_any(), restore.spec.target_namespace.as_str());
    let selector = multicluster_core::snapshot::mover::selector(false, &name);
    transfers::remove(member, ns, &selector).await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), ns);
    let mut discarded = Vec::new();
    for h in hydrations {
        let Some(claim) = claims.get_opt(&h.claim).await? else {
            continue;
        };
        let ours = claim.annotations().get(keys::RESTORED_BY) == Some(&name);
        let filled = claim.annotations().get(keys::HYDRATED_FROM) == Some(&h.data.index);
        if ours && !filled {
            claims
                .delete(&h.claim, &Default::default())
                .await
                .with_context(|| format!("deleting the half-filled claim {}", h.claim))?;
            discarded.push(h.claim.clone());
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for claim in &discarded {
        while claims.get_opt(claim).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                bail!("the half-filled claim {claim} of an earlier attempt is still being deleted");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    if !discarded.is_empty() {
        tracing::info!(restore = %name, claims = ?discarded, "started over: claims an earlier attempt left half-filled are written again");
    }
    Ok(())
}

/// Removes the mover pods and Secrets of `restore`'s imports from its target (logged, never failing:
/// a target that cannot be reached keeps them, labelled `multicluster.dev/data-import`).
async fn remove_imports(ctx: &Context, restore: &NamespaceRestore) {
    let selector = multicluster_core::snapshot::mover::selector(false, &restore.name_any());
    let removed = async {
        let member = target_member(ctx, &restore.spec.target_cluster).await?;
        transfers::remove(&member, &restore.spec.target_namespace, &selector).await
    }
    .await;
    if let Err(e) = removed {
        tracing::warn!(restore = %restore.name_any(), %selector, error = %format!("{e:#}"),
            "removing the data mover's pods and Secrets; delete them by that label");
    }
}

/// Writes each import's progress into its claim's line, and the total into the message.
fn record_imports(status: &mut NamespaceRestoreStatus, transfers: &[transfers::Transfer]) {
    for t in transfers {
        if let Some(v) = status.volumes.iter_mut().find(|v| v.claim == t.job.claim) {
            v.data.bytes_done = t.data.bytes_done;
            v.data.bytes_transferred = t.data.bytes_transferred;
            v.data.done = t.data.done;
            if t.data.bytes_total > 0 {
                v.data.bytes_total = t.data.bytes_total;
            }
        }
    }
    let (done, total) = status.volumes.iter().fold((0, 0), |(d, t), v| {
        (d + v.data.bytes_done, t + v.data.bytes_total)
    });
    status.message = Some(format!(
        "filling {} claim(s) from the snapshot's data: {} of {} MiB written",
        status.volumes.len(),
        done >> 20,
        total >> 20
    ));
}

fn restoring_message(plan: &RestorePlan, waiting: &[String]) -> String {
    let later = if waiting.is_empty() {
        String::new()
    } else {
        format!(
            " ({} bind when their first pod is scheduled: {})",
            waiting.len(),
            waiting.join(", ")
        )
    };
    format!(
        "{} claim(s) bound{later}; writing {} objects in {} tier(s), workloads last",
        plan.claims.len() - waiting.len(),
        plan.tiers.iter().map(Vec::len).sum::<usize>(),
        plan.tiers.len()
    )
}

/// Reads the snapshot's archive from its location and checks it against the checksum the
/// snapshot recorded. A truncated, altered or unknown-version archive is refused here, before
/// anything is written.
async fn read_archive(ctx: &Context, snapshot: &NamespaceSnapshot) -> anyhow::Result<Archive> {
    let name = snapshot.name_any();
    let status = snapshot.status.clone().unwrap_or_default();
    if status.phase != SnapshotPhase::Completed {
        bail!(
            "NamespaceSnapshot {name} is {:?}, not Completed",
            status.phase
        );
    }
    let recorded = status
        .archive
        .ok_or_else(|| anyhow!("NamespaceSnapshot {name} records no archive"))?;
    let location = Api::<StorageLocation>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(&snapshot.spec.location)
        .await?
        .ok_or_else(|| anyhow!("StorageLocation {} does not exist", snapshot.spec.location))?;
    let store = crate::snapshot::storage::open(&ctx.hub, &location)
        .await
        .with_context(|| format!("opening StorageLocation {}", snapshot.spec.location))?;
    let key = archive_key(SYSTEM_NAMESPACE, &name);
    let refused = || {
        format!(
            "the archive {} is refused; nothing was written",
            recorded.url
        )
    };
    // Its size as recorded and as stored, before a byte of it is held in memory.
    let limits = ctx.settings.limits;
    limits
        .check_archive_size(recorded.size_bytes)
        .with_context(refused)?;
    let stored = store
        .get(&Path::from(key.as_str()))
        .await
        .with_context(|| format!("reading the archive {}", recorded.url))?;
    limits
        .check_archive_size(stored.meta.size)
        .with_context(refused)?;
    let bytes = stored
        .bytes()
        .await
        .with_context(|| format!("reading the archive {}", recorded.url))?;
    archive::read_within(&bytes, Some(&recorded.checksum), limits).with_context(|| {
        format!(
            "the archive {} is refused; nothing was written",
            recorded.url
        )
    })
}

/// The API resource of every kind the plan writes, found by discovery on the target. A kind the
/// target does not serve (a custom resource whose definition is not installed there) is refused
/// here, before any write.
async fn resolve_kinds(
    member: &Client,
    plan: &RestorePlan,
) -> anyhow::Result<BTreeMap<(String, String), ApiResource>> {
    let kinds: BTreeSet<(String, String)> = plan
        .snapshot_objects
        .iter()
        .chain(&plan.claims)
        .chain(plan.tiers.iter().flatten())
        .filter_map(|o| {
            Some((
                o["apiVersion"].as_str()?.to_owned(),
                o["kind"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    let mut served = Kinds::default();
    for (api_version, kind) in kinds {
        match served.resolve(member, &api_version, &kind).await {
            Ok(found) => {
                out.insert((api_version, kind), found.resource);
            }
            Err(e) if not_served(&e) => missing.push(format!("{kind} ({api_version})")),
            Err(e) => return Err(e).context(format!("discovering {kind} on the target")),
        }
    }
    if !missing.is_empty() {
        bail!(
            "the target member does not serve {}: install their definitions (CRDs, the CSI snapshot \
             API) there first; nothing was written",
            missing.join(", ")
        );
    }
    Ok(out)
}

/// Whether discovery said the kind is not served there (as opposed to not answering).
fn not_served(e: &KindError) -> bool {
    match e {
        KindError::ApiVersion(..) => true,
        KindError::Discovery(kube::Error::Discovery(_)) => true,
        KindError::Discovery(kube::Error::Api(status)) => status.code == 404,
        KindError::Discovery(_) => false,
    }
}

/// Counts written objects, writing the status when it was last written a while ago.
async fn count_written(progress: &mut Progress, n: usize) -> Result<(), kube::Error> {
    progress.status.objects_written += u32::try_from(n).unwrap_or(u32::MAX);
    if progress.since_write() >= PROGRESS_EVERY {
        let (written, total) = (
            progress.status.objects_written,
            progress.status.objects_total,
        );
        progress.status.message = Some(format!("{written} of {total} objects written"));
        progress.write().await?;
    }
    Ok(())
}

/// Writes `objects` at once (server-side apply) and fails after all were tried, naming each that
/// was refused in the status.
async fn write_all(
    member: &Client,
    resources: &BTreeMap<(String, String), ApiResource>,
    objects: &[Value],
    progress: &mut Progress,
) -> anyhow::Result<()> {
    // Built up front: a lazily mapped stream would hold a closure over borrowed objects, which
    // the controller's `Send` bound cannot see through.
    let pending: Vec<_> = objects
        .iter()
        .map(|object| write_one(member.clone(), resources, object.clone()))
        .collect();
    let mut writes = futures::stream::iter(pending).buffer_unordered(CONCURRENT_WRITES);
    let mut failures = Vec::new();
    let mut written = 0;
    while let Some(result) = writes.next().await {
        match result {
            Ok(()) => written += 1,
            Err(f) => failures.push(f),
        }
        if written >= 50 {
            count_written(progress, written).await?;
            written = 0;
        }
    }
    count_written(progress, written).await?;
    if failures.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = failures
        .iter()
        .map(|f| format!("{} {}: {}", f.kind, f.name, f.message))
        .collect();
    let (done, total) = (
        progress.status.objects_written,
        progress.status.objects_total,
    );
    progress.status.failures.extend(failures);
    bail!(
        "the target refused {} object(s): {}. {done} of {total} objects were written (the namespace \
         first, then claims, then in dependency order, workloads last); nothing after the refused \
         ones was written. Fix the cause and create the restore again: objects already written are \
         written again unchanged",
        list.len(),
        list.join("; ")
    )
}

/// Server-side applies one object (owned, so that many are in flight at once).
fn write_one(
    member: Client,
    resources: &BTreeMap<(String, String), ApiResource>,
    object: Value,
) -> impl Future<Output = Result<(), RestoreObjectFailure>> + Send + 'static {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = (
        object["apiVersion"].as_str().unwrap_or_default().to_owned(),
        kind.clone(),
    );
    let api: Option<Api<DynamicObject>> =
        resources
            .get(&key)
            .map(|resource| match object["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(member, ns, resource),
                None => Api::all_with(member, resource),
            });
    async move {
        let result = match api {
            None => Err(format!("{kind} is not served by the target")),
            Some(api) => api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    kube::Error::Api(s) => s.message,
                    e => e.to_string(),
                }),
        };
        result.map_err(|message| RestoreObjectFailure {
            kind,
            name,
            message,
        })
    }
}

/// Waits until every claim that binds on its own is bound (its volume hydrated from the snapshot).
/// Returns the claims of `WaitForFirstConsumer` classes, which bind only once a pod uses them.
async fn wait_bound(member: &Client, ns: &str, claims: &[Value]) -> anyhow::Result<Vec<String>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let classes: Vec<Value> = Api::<StorageClass>::all(member.clone())
        .list(&ListParams::default())
        .await
        .context("listing StorageClasses")?
        .items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let (now, later): (Vec<&Value>, Vec<&Value>) = claims
        .iter()
        .partition(|c| restore::binds_immediately(c, &classes));
    let names = |v: &[&Value]| -> Vec<String> {
        v.iter()
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let mut pending: BTreeSet<String> = names(&now).into_iter().collect();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(member.clone(), ns);
    let deadline = tokio::time::Instant::now() + HYDRATE_TIMEOUT;
    while !pending.is_empty() {
        for claim in api.list(&ListParams::default()).await?.items {
            let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if bound {
                pending.remove(&claim.name_any());
            }
        }
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "claims not bound after {}s: {} (is the CSI driver's provisioner running on the \
                 target, and does it serve the snapshots' driver?). The namespace and claims were \
                 written; nothing else was",
                HYDRATE_TIMEOUT.as_secs(),
                pending.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(names(&later))
}
