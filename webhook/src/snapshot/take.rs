//! Takes `NamespaceSnapshot`s (Lease holder): discovers every namespaced kind the member serves,
//! captures the namespace's objects (leaving out derived and ephemeral ones, with the reason),
//! maps its claims to volumes, quiesces at once (every workload that mounts them scaled to 0, or
//! every pre hook run in the pods: `snapshot_hooks`), creates all CSI
//! `VolumeSnapshot`s concurrently, resumes the workloads as soon as the last snapshot is cut, and
//! saves the archive to the `StorageLocation`. Whatever fails, the workloads are put back and the
//! snapshot is marked Failed, never Completed.
//!
//! The decisions (what is left out, how an object is stripped, which claim gets which class, which
//! workloads stop) are `multicluster_core::snapshot`'s; this module carries objects to them and
//! their verdicts to the member and the storage.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    ArchiveRef, HookStatus, MemberCluster, NamespaceSnapshot, NamespaceSnapshotStatus,
    QuiesceMethod, SnapshotPhase, StorageLocation, VolumeDataPolicy, VolumeSnapshotStatus,
};
use multicluster_core::keys;
use multicluster_core::members::join::Capability;
use multicluster_core::snapshot::archive::{self, LeftOut, Manifest, VolumeData, VolumeEntry};
use multicluster_core::snapshot::hooks::{self, HookPlan};
use multicluster_core::snapshot::location::archive_key;
use multicluster_core::snapshot::mover::{self, Job};
use multicluster_core::snapshot::volumes::{self, VolumeAction, Workload};
use multicluster_core::snapshot::{inventory, left_out_kind, left_out_object, strip};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

use crate::members::MemberClients;
use crate::snapshot::transfers;

/// How long the CSI snapshotter may take to cut every snapshot (workloads stay stopped meanwhile).
const CUT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the snapshots may take to become ready to use after they were cut (uploads).
const READY_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long stopped workloads' pods may take to go away.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(300);
/// Objects per list page, as `kubectl get` asks.
const PAGE: u32 = 500;

#[derive(Clone)]
pub(super) struct Context {
    pub(super) hub: Client,
    pub(super) members: MemberClients,
    /// How the volumes' data is exported.
    pub(super) mover: transfers::Settings,
    /// Held for reading while an export writes to a location, so that its sweep waits.
    pub(super) locks: crate::snapshot::collect::DataLocks,
}

/// Reconciles the hub's `NamespaceSnapshot`s, one at a time.
pub async fn run(
    hub: Client,
    members: MemberClients,
    mover: transfers::Settings,
    locks: crate::snapshot::collect::DataLocks,
    run: crate::loops::Loop,
) {
    let api: Api<NamespaceSnapshot> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    let ctx = Arc::new(Context {
        hub,
        members,
        mover,
        locks,
    });
    crate::loops::run_controller(api, reconcile, ctx, run).await;
}

/// Removes what a snapshot owns before its object goes: the archive and the volume snapshots.
pub const FINALIZER: &str = "multicluster.dev/snapshot-data";

async fn reconcile(
    snapshot: Arc<NamespaceSnapshot>,
    ctx: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<kube::Error>> {
    use kube::runtime::finalizer::{Event, finalizer};
    let api: Api<NamespaceSnapshot> = Api::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE);
    finalizer(&api, FINALIZER, snapshot, |event| async {
        match event {
            Event::Apply(snapshot) => take_once(snapshot, &ctx).await,
            Event::Cleanup(snapshot) => {
                remove_data(&ctx, &snapshot).await;
                Ok(Action::await_change())
            }
        }
    })
    .await
}

/// Puts back the workloads the snapshot still holds quiesced, then deletes its archive and volume
/// snapshots. A member or location that cannot be reached is logged and does not hold the
/// deletion up: the object must be deletable even when its member is gone for good.
pub(super) async fn remove_data(ctx: &Context, snapshot: &NamespaceSnapshot) {
    let name = snapshot.name_any();
    let spec = &snapshot.spec;
    if let Some(archive) = snapshot.status.as_ref().and_then(|s| s.archive.as_ref()) {
        let removed = async {
            let location = Api::<StorageLocation>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
                .get(&spec.location)
                .await?;
            let store = crate::snapshot::storage::open(&ctx.hub, &location).await?;
            match store
                .delete(&Path::from(archive_key(SYSTEM_NAMESPACE, &name).as_str()))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok::<_, anyhow::Error>(()),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        match removed {
            Ok(()) => tracing::info!(snapshot = %name, url = %archive.url, "archive deleted"),
            Err(e) => {
                tracing::warn!(snapshot = %name, url = %archive.url, error = %format!("{e:#}"),
                "could not delete the archive; remove it from the storage by hand")
            }
        }
    }
    // Its volume data (all of it, or what an export that failed had sent) goes at the location's
    // next sweep, asked for now.
    let exported = snapshot
        .status
        .iter()
        .flat_map(|s| s.volumes.iter())
        .any(|v| v.data.is_some());
    if exported {
        crate::snapshot::collect::request(&ctx.hub, &spec.location).await;
    }
    let removed = async {
        let member = member_client(ctx, &spec.cluster).await?;
        // Deleted mid-quiesce (or after a hub server stopped half-way): its workloads are still
        // scaled to 0, and nothing else would ever put them back.
        match resume(&member, &spec.namespace, &name).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(snapshot = %name, workloads = n, "deleted while quiescing: workloads put back")
            }
            Err(e) => tracing::warn!(snapshot = %name, error = %format!("{e:#}"),
                "deleted while quiescing, and putting the workloads back failed; scale them by hand"),
        }
        remove_exports(&member, &spec.namespace, &name).await?;
        delete_volume_snapshots(&member, &spec.namespace, &name).await
    }
    .await;
    if let Err(e) = removed {
        tracing::warn!(snapshot = %name, error = %format!("{e:#}"),
            "could not delete the volume snapshots; remove them on the member by hand");
    }
}

pub(super) async fn take_once(
    snapshot: Arc<NamespaceSnapshot>,
    ctx: &Context,
) -> Result<Action, kube::Error> {
    let phase = snapshot
        .status
        .as_ref()
        .map(|s| s.phase)
        .unwrap_or_default();
    let name = snapshot.name_any();
    let mut progress = Progress::new(
        &ctx.hub,
        &snapshot.name_any(),
        snapshot.status.clone().unwrap_or_default(),
    );
    if matches!(phase, SnapshotPhase::Completed | SnapshotPhase::Failed) {
        return Ok(Action::await_change());
    }
    let (first, message) = match phase {
        SnapshotPhase::Pending => (
            SnapshotPhase::Discovering,
            format!(
                "reading {}/{}",
                snapshot.spec.cluster, snapshot.spec.namespace
            ),
        ),
        found => (
            found,
            "found half-way: putting the workloads back".to_owned(),
        ),
    };
    if phase == SnapshotPhase::Pending {
        progress.status.start_time = Some(Time(Timestamp::now()));
    }
    if !progress
        .claim(snapshot.resource_version(), first, message)
        .await?
    {
        return Ok(Action::await_change());
    }
    let outcome = match phase {
        SnapshotPhase::Pending => take(ctx, &snapshot, &mut progress).await,
        // Found half-way: the hub server that was taking it stopped. Put the workloads back and
        // say so; a partial snapshot is never completed.
        _ => match resume_after_interruption(ctx, &snapshot).await {
            Ok(n) => Err(anyhow!(
                "interrupted while {phase:?} (the hub server restarted or lost its Lease); {n} workload(s) put back \
                 at their scale: take a new snapshot"
            )),
            Err(e) => Err(e.context("interrupted, and putting the workloads back failed")),
        },
    };
    match outcome {
        Ok(()) => tracing::info!(snapshot = %name, "namespace snapshot completed"),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(snapshot = %name, error = %message, "namespace snapshot failed");
            progress.status.phase = SnapshotPhase::Failed;
            progress.status.message = Some(message);
            progress.status.completion_time = Some(Time(Timestamp::now()));
            progress.write().await?;
        }
    }
    Ok(Action::await_change())
}

type Progress = crate::snapshot::progress::Progress<NamespaceSnapshot, NamespaceSnapshotStatus>;

async fn member_cluster(ctx: &Context, member: &str) -> anyhow::Result<MemberCluster> {
    Api::<MemberCluster>::all(ctx.hub.clone())
        .get_opt(member)
        .await?
        .ok_or_else(|| anyhow!("MemberCluster {member} does not exist on the hub"))
}

async fn member_client(ctx: &Context, member: &str) -> anyhow::Result<Client> {
    ctx.members
        .get(
            &ctx.hub,
            &member_cluster(ctx, member).await?,
            Capability::Snapshots,
            Some(Duration::from_secs(30)),
        )
        .await
        .with_context(|| format!("connecting to member {member}"))
}

/// A client that can run commands in the member's pods (quiesce hooks).
async fn exec_client(ctx: &Context, member: &str) -> anyhow::Result<Client> {
    ctx.members
        .upgrading(
            &ctx.hub,
            &member_cluster(ctx, member).await?,
            Capability::Snapshots,
        )
        .await
        .with_context(|| format!("connecting to member {member} to run the quiesce hooks"))
}

fn skipped(pods: &[String]) -> String {
    if pods.is_empty() {
        String::new()
    } else {
        format!(
            "; skipped the hooks of pods not running: {}",
            pods.join(", ")
        )
    }
}

/// Takes one snapshot: its location opened first (a snapshot that cannot be saved must stop
/// nothing), the namespace captured and its volumes selected, the volumes quiesced and cut at
/// once, then the archive written.
async fn take(
    ctx: &Context,
    snapshot: &NamespaceSnapshot,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let spec = &snapshot.spec;
    let (ns, name) = (spec.namespace.as_str(), snapshot.name_any());
    let (location, store) = open_location(ctx, &spec.location).await?;
    let member = source_member(ctx, &spec.cluster, ns).await?;
    // A mistake in a hook's annotations is reported before anything is quiesced.
    let hooks = match spec.quiesce {
        QuiesceMethod::Hooks => hooks::plan(&crate::snapshot::hooks::pods(&member, ns).await?)
            .map_err(|e| anyhow!("quiesce hooks: {e}"))?,
        QuiesceMethod::None | QuiesceMethod::ScaleDown => HookPlan::default(),
    };
    let captured = capture(&member, ns).await?;
    progress.status.resource_count =
        Some(u32::try_from(captured.objects.len()).unwrap_or(u32::MAX));
    let claims: Vec<Value> = captured
        .objects
        .iter()
        .filter(|o| o["kind"] == "PersistentVolumeClaim")
        .cloned()
        .collect();
    let plans = plan(&member, &claims).await?;
    progress.status.volumes = plans.iter().map(volume_status).collect();
    let selection =
        volumes::select(&plans, spec.unsnapshottable_volumes).map_err(|e| anyhow!(e))?;
    let cut = Cut {
        member: &member,
        ns,
        snapshot: &name,
        groups: groups_of(&selection, &name, ns),
        all_claims: selection.all_claims(),
        selection,
        plans: &plans,
    };
    let groups = match cut.groups.len() {
        0 => String::new(),
        n => format!(", in {n} volume group snapshot(s)"),
    };
    let message = format!(
        "captured {} objects, {} left out; {} of {} claims to snapshot{groups}",
        captured.objects.len(),
        captured.left_out.len(),
        cut.all_claims.len(),
        claims.len(),
    );
    progress.step(SnapshotPhase::Discovering, message).await?;
    let mut entries = if cut.all_claims.is_empty() {
        Vec::new()
    } else {
        quiesce_and_cut(ctx, spec, &cut, &captured, &hooks, progress).await?
    };
    record_volume_snapshots(progress, &entries, &name);
    let exported = export_data(
        ctx,
        snapshot,
        (&location, &member),
        &claims,
        &mut entries,
        progress,
    )
    .await;
    if let Err(e) = exported {
        // A failed snapshot leaves no volume snapshots behind.
        if let Err(c) = delete_volume_snapshots(&member, ns, &name).await {
            tracing::warn!(error = %format!("{c:#}"), "removing a failed snapshot's volume snapshots");
        }
        return Err(e);
    }
    save(
        store.as_ref(),
        &location,
        snapshot,
        captured,
        entries,
        progress,
    )
    .await
}

/// The snapshot's StorageLocation and its store, opened.
async fn open_location(
    ctx: &Context,
    name: &str,
) -> anyhow::Result<(
    StorageLocation,
    std::sync::Arc<dyn object_store::ObjectStore>,
)> {
    let location = Api::<StorageLocation>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("StorageLocation {name} does not exist"))?;
    let store = crate::snapshot::storage::open(&ctx.hub, &location)
        .await
        .with_context(|| format!("opening StorageLocation {name}"))?;
    Ok((location, store))
}

/// A client for the snapshot's member, once its namespace is known to exist there.
async fn source_member(ctx: &Context, cluster: &str, ns: &str) -> anyhow::Result<Client> {
    let member = member_client(ctx, cluster).await?;
    let namespace_exists = Api::<k8s_openapi::api::core::v1::Namespace>::all(member.clone())
        .get_opt(ns)
        .await?
        .is_some();
    if !namespace_exists {
        bail!("namespace {ns} does not exist on member {cluster}");
    }
    Ok(member)
}

/// A claim's line in the snapshot's status before it is cut: why it is not taken, if it is not.
fn volume_status(plan: &volumes::VolumePlan) -> VolumeSnapshotStatus {
    VolumeSnapshotStatus {
        claim: plan.claim.clone(),
        storage_class: plan.storage_class.clone(),
        driver: plan.driver.clone(),
        message: match &plan.action {
            VolumeAction::Snapshot { .. } | VolumeAction::GroupSnapshot { .. } => None,
            VolumeAction::Empty(why) | VolumeAction::Unsnapshottable(why) => Some(why.clone()),
        },
        ..Default::default()
    }
}

/// What one snapshot cuts on its member.
struct Cut<'a> {
    member: &'a Client,
    ns: &'a str,
    snapshot: &'a str,
    selection: volumes::Selection,
    groups: Vec<Group>,
    /// Every claim to snapshot, alone or in a group: what the quiesce covers.
    all_claims: Vec<(String, String)>,
    plans: &'a [volumes::VolumePlan],
}

/// Quiesces the workloads (scale-down or pre hooks), cuts every volume snapshot, resumes them
/// (or runs the post hooks) whatever happened in between, then waits until the snapshots are
/// ready. A failure leaves no volume snapshots behind.
async fn quiesce_and_cut(
    ctx: &Context,
    spec: &multicluster_core::api::NamespaceSnapshotSpec,
    cut: &Cut<'_>,
    captured: &Captured,
    hooks: &HookPlan,
    progress: &mut Progress,
) -> anyhow::Result<Vec<VolumeEntry>> {
    let (member, ns) = (cut.member, cut.ns);
    let stopped = match spec.quiesce {
        QuiesceMethod::ScaleDown => {
            let mounting: BTreeSet<String> =
                cut.all_claims.iter().map(|(c, _)| c.clone()).collect();
            volumes::workloads_mounting(&captured.objects, &mounting).map_err(|e| anyhow!(e))?
        }
        QuiesceMethod::None | QuiesceMethod::Hooks => Vec::new(),
    };
    progress.status.hooks = hooks
        .not_running
        .iter()
        .map(|pod| HookStatus {
            pod: pod.clone(),
            message: Some("skipped: the pod is not running".to_owned()),
            ..Default::default()
        })
        .collect();
    let exec = match spec.quiesce {
        QuiesceMethod::Hooks => Some(exec_client(ctx, &spec.cluster).await?),
        QuiesceMethod::None | QuiesceMethod::ScaleDown => None,
    };
    let message = match spec.quiesce {
        QuiesceMethod::ScaleDown => format!("scaling {} workload(s) to 0", stopped.len()),
        QuiesceMethod::Hooks => format!(
            "running {} pre hook(s) at once{}",
            hooks.pre.len(),
            skipped(&hooks.not_running)
        ),
        QuiesceMethod::None => "not quiescing (crash-consistent)".to_owned(),
    };
    progress.step(SnapshotPhase::Quiescing, message).await?;
    // One barrier: every workload is stopped (or every pre hook has run) before the first
    // snapshot is taken, and all are resumed (or every post hook runs) only after the last one is
    // cut, whatever happens in between.
    let cut_result =
        quiesce_then_cut(spec.quiesce, exec.as_ref(), cut, &stopped, hooks, progress).await;
    let message = match spec.quiesce {
        QuiesceMethod::ScaleDown => format!("scaling {} workload(s) back", stopped.len()),
        QuiesceMethod::Hooks => format!("running {} post hook(s)", hooks.post.len()),
        QuiesceMethod::None => "nothing to resume".to_owned(),
    };
    // Said before the workloads come back: a hub server that stops now leaves a snapshot in
    // this phase, and the next one puts them back first (`resume_after_interruption`).
    if let Err(e) = progress.step(SnapshotPhase::Resuming, message).await {
        tracing::warn!(error = %e, "recording the Resuming phase; resuming anyway");
    }
    let resumed = resume_all(member, ns, cut.snapshot, exec.as_ref(), hooks, progress).await;
    if let Err(e) = unlabel_group_claims(member, ns, &cut.groups).await {
        tracing::warn!(error = %format!("{e:#}"), "removing the group snapshot labels from the claims");
    }
    let result = match (cut_result, resumed) {
        (Ok(()), Ok(_)) => {
            let message = format!(
                "{} volume snapshot(s) cut, {} workload(s) resumed; waiting until ready",
                cut.all_claims.len(),
                stopped.len()
            );
            progress.step(SnapshotPhase::Snapshotting, message).await?;
            wait_ready(
                member,
                ns,
                cut.snapshot,
                &cut.selection.single,
                &cut.groups,
                cut.plans,
            )
            .await
        }
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Err(e)) => Err(e.context("resuming after the cut")),
        (Err(e), Err(r)) => Err(anyhow!("{e:#}; and resuming failed too: {r:#}")),
    };
    if result.is_err() {
        // A failed snapshot leaves no volume snapshots behind.
        if let Err(c) = delete_volume_snapshots(member, ns, cut.snapshot).await {
            tracing::warn!(error = %format!("{c:#}"), "removing a failed snapshot's volume snapshots");
        }
    }
    result
}

/// Stops the workloads (or runs the pre hooks), then cuts every volume snapshot.
async fn quiesce_then_cut(
    quiesce: QuiesceMethod,
    exec: Option<&Client>,
    cut: &Cut<'_>,
    stopped: &[Workload],
    hooks: &HookPlan,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let (member, ns) = (cut.member, cut.ns);
    match (quiesce, exec) {
        (QuiesceMethod::ScaleDown, _) => {
            scale_down(member, ns, cut.snapshot, stopped).await?;
            wait_quiesced(member, ns, &cut.all_claims).await?;
        }
        (QuiesceMethod::Hooks, Some(exec)) => {
            let (statuses, failing) = crate::snapshot::hooks::run_all(exec, ns, &hooks.pre).await;
            progress.status.hooks.extend(statuses);
            if !failing.is_empty() {
                bail!("{}", failing.join("; "));
            }
        }
        _ => {}
    }
    let message = format!("taking {} volume snapshot(s)", cut.all_claims.len());
    progress.step(SnapshotPhase::Snapshotting, message).await?;
    cut_snapshots(member, ns, cut.snapshot, &cut.selection.single, &cut.groups).await
}

/// Puts the workloads back at their scale and runs the post hooks; returns how many were resumed.
async fn resume_all(
    member: &Client,
    ns: &str,
    snapshot: &str,
    exec: Option<&Client>,
    hooks: &HookPlan,
    progress: &mut Progress,
) -> anyhow::Result<usize> {
    let mut resumed = resume(member, ns, snapshot).await;
    if let Some(exec) = exec {
        let (statuses, failing) = crate::snapshot::hooks::run_all(exec, ns, &hooks.post).await;
        progress.status.hooks.extend(statuses);
        if !failing.is_empty() && resumed.is_ok() {
            resumed = Err(anyhow!(
                "{}; the pods may still be quiesced: check them",
                failing.join("; ")
            ));
        }
    }
    resumed
}

/// Marks each claim's line with the volume snapshot that holds it.
fn record_volume_snapshots(progress: &mut Progress, entries: &[VolumeEntry], snapshot: &str) {
    for status in &mut progress.status.volumes {
        if let Some(entry) = entries.iter().find(|e| e.claim == status.claim) {
            status.volume_snapshot = Some(
                entry
                    .group
                    .clone()
                    .unwrap_or_else(|| volumes::volume_snapshot_name(snapshot, &entry.claim)),
            );
            status.snapshot_handle = Some(entry.snapshot_handle.clone());
            status.restore_size = entry.restore_size.clone();
            status.ready = true;
        }
    }
}

/// Writes the archive (the stripped objects, their inventory, what was left out and the volume
/// snapshots) to the location, and completes the snapshot.
async fn save(
    store: &dyn object_store::ObjectStore,
    location: &StorageLocation,
    snapshot: &NamespaceSnapshot,
    captured: Captured,
    entries: Vec<VolumeEntry>,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let spec = &snapshot.spec;
    let name = snapshot.name_any();
    let message = format!("writing the archive to {}", spec.location);
    progress.step(SnapshotPhase::Saving, message).await?;
    let mut stripped = captured.objects;
    for object in &mut stripped {
        strip(object);
    }
    let apps = inventory(&stripped);
    let manifest = Manifest {
        format_version: archive::FORMAT_VERSION,
        tool: format!("multicluster-webhook {}", env!("CARGO_PKG_VERSION")),
        source_cluster: spec.cluster.clone(),
        source_namespace: spec.namespace.clone(),
        time: Timestamp::now().to_string(),
        inventory: apps.clone(),
        left_out: captured.left_out,
        resources: Vec::new(),
        volume_snapshots: entries,
    };
    let (bytes, checksum) = archive::write(manifest, &stripped).context("building the archive")?;
    let key = archive_key(SYSTEM_NAMESPACE, &name);
    let size_bytes = bytes.len() as u64;
    store
        .put(&Path::from(key.as_str()), PutPayload::from(bytes))
        .await
        .with_context(|| format!("writing the archive to StorageLocation {}", spec.location))?;
    progress.status.archive = Some(ArchiveRef {
        url: multicluster_core::snapshot::location::object_url(&location.spec, &key),
        checksum,
        size_bytes,
    });
    progress.status.inventory = apps;
    progress.status.completion_time = Some(Time(Timestamp::now()));
    let message = format!(
        "{} objects and {} volume snapshot(s) saved",
        stripped.len(),
        progress.status.volumes.iter().filter(|v| v.ready).count()
    );
    progress.step(SnapshotPhase::Completed, message).await?;
    Ok(())
}

/// What a snapshot keeps (as read, not yet stripped) and what it left out.
#[derive(Debug)]
pub struct Captured {
    pub objects: Vec<Value>,
    pub left_out: Vec<LeftOut>,
}

/// Every object of every namespaced kind the member serves (custom resources included) in `ns`,
/// in a stable order, less what a snapshot leaves out.
pub async fn capture(member: &Client, ns: &str) -> anyhow::Result<Captured> {
    let discovery = Discovery::new(member.clone())
        .run_aggregated()
        .await
        .context("discovering the member's API kinds")?;
    let mut kinds = Vec::new();
    let mut left_out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            if let Some(reason) = left_out_kind(&resource.group, &resource.kind) {
                left_out.push(LeftOut {
                    kind: resource.kind.clone(),
                    name: None,
                    reason: reason.to_owned(),
                });
                continue;
            }
            kinds.push(resource);
        }
    }
    let lists = futures::stream::iter(kinds.into_iter().map(|resource| {
        let member = member.clone();
        async move {
            match list_all(&member, ns, &resource).await {
                Err(Forbidden) => Ok(Err(resource.kind)),
                Ok(objects) => Ok(Ok(objects)),
                Err(Failed(e)) => Err(e),
            }
        }
    }))
    .buffered(8)
    .try_collect::<Vec<_>>()
    .await?;
    let mut objects = Vec::new();
    let mut readable = Vec::new();
    for list in lists {
        match list {
            Ok(found) => readable.extend(found),
            // A kind the member's admin did not let the hub's snapshots account read (the
            // account has an explicit list: see `core::members::join`).
            Err(kind) => left_out.push(LeftOut {
                reason: format!(
                    "the hub's snapshots account may not list {kind} on this member; to include \
                     it, bind a ClusterRole with get, list, create and patch on it to \
                     {SYSTEM_NAMESPACE}:{account} there",
                    account = Capability::Snapshots.account()
                ),
                kind,
                name: None,
            }),
        }
    }
    for object in readable {
        match left_out_object(&object) {
            Some(reason) => left_out.push(LeftOut {
                kind: object["kind"].as_str().unwrap_or_default().to_owned(),
                name: object["metadata"]["name"].as_str().map(str::to_owned),
                reason,
            }),
            None => objects.push(object),
        }
    }
    Ok(Captured { objects, left_out })
}

/// Why a kind could not be listed: not allowed (left out), or anything else (the snapshot fails).
enum ListError {
    Forbidden,
    Failed(anyhow::Error),
}
use ListError::{Failed, Forbidden};

/// Every object of one kind in `ns`, page by page, each with its apiVersion and kind.
async fn list_all(
    member: &Client,
    ns: &str,
    resource: &ApiResource,
) -> Result<Vec<Value>, ListError> {
    let api: Api<DynamicObject> = Api::namespaced_with(member.clone(), ns, resource);
    let mut params = ListParams::default().limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = match api.list(&params).await {
            Err(kube::Error::Api(e)) if e.code == 403 => return Err(Forbidden),
            listed => listed
                .with_context(|| format!("listing {} in {ns}", resource.plural))
                .map_err(Failed)?,
        };
        for item in page.items {
            let mut value = serde_json::to_value(&item).map_err(|e| Failed(e.into()))?;
            value["apiVersion"] = resource.api_version.clone().into();
            value["kind"] = resource.kind.clone().into();
            out.push(value);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => break,
        }
    }
    out.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    Ok(out)
}

fn csi_api(kind: &str) -> ApiResource {
    let api_version = if kind.starts_with("VolumeGroupSnapshot") {
        volumes::GROUP_API_VERSION
    } else {
        volumes::SNAPSHOT_API_VERSION
    };
    let (group, version) = api_version.split_once('/').unwrap_or_default();
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// One `VolumeGroupSnapshot` a snapshot takes: a driver's claims, cut together.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    object: Value,
    claims: Vec<String>,
}

fn groups_of(selection: &volumes::Selection, snapshot: &str, ns: &str) -> Vec<Group> {
    selection
        .grouped
        .iter()
        .map(|((driver, class), claims)| {
            let (name, object) = volumes::volume_group_snapshot(snapshot, ns, driver, class);
            Group {
                name,
                object,
                claims: claims.clone(),
            }
        })
        .collect()
}

/// Labels each group's claims with the group's selector label, so that it selects exactly them.
async fn label_group_claims(member: &Client, ns: &str, groups: &[Group]) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(member.clone(), ns);
    for g in groups {
        let patch = json!({"metadata": {"labels": {volumes::GROUP_LABEL: volumes::group_label_value(&g.name)}}});
        for claim in &g.claims {
            api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| {
                    format!("labelling claim {claim} for VolumeGroupSnapshot {}", g.name)
                })?;
        }
    }
    Ok(())
}

async fn unlabel_group_claims(member: &Client, ns: &str, groups: &[Group]) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(member.clone(), ns);
    let patch = json!({"metadata": {"labels": {volumes::GROUP_LABEL: null}}});
    for claim in groups.iter().flat_map(|g| &g.claims) {
        api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Polls the snapshot's `VolumeGroupSnapshot`s until `done` holds for all.
async fn wait_groups(
    api: &Api<DynamicObject>,
    groups: &[Group],
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let objects: Vec<(String, String)> = groups
        .iter()
        .map(|g| (format!("VolumeGroupSnapshot {}", g.name), g.name.clone()))
        .collect();
    wait_csi_objects(api, &objects, timeout, what, done).await
}

/// Maps claims to volumes and snapshot classes (reading the volumes they are bound to and the
/// member's VolumeSnapshotClasses).
async fn plan(member: &Client, claims: &[Value]) -> anyhow::Result<Vec<volumes::VolumePlan>> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(member.clone());
    let mut bound = Vec::new();
    for name in claims
        .iter()
        .filter_map(|c| c["spec"]["volumeName"].as_str())
    {
        if let Some(pv) = pvs.get_opt(name).await? {
            bound.push(serde_json::to_value(pv)?);
        }
    }
    // No CSI snapshot API on the member: no claim can be snapshotted, and each says why.
    let classes = classes_of(member, "VolumeSnapshotClass").await?;
    // No group snapshot API (most drivers): claims are snapshotted one by one.
    let group_classes = classes_of(member, "VolumeGroupSnapshotClass").await?;
    Ok(volumes::plan_volumes(
        claims,
        &bound,
        &classes,
        &group_classes,
    ))
}

/// Every object of a CSI snapshot class kind on the member; none when the member does not serve
/// that kind.
async fn classes_of(member: &Client, kind: &str) -> anyhow::Result<Vec<Value>> {
    let api: Api<DynamicObject> = Api::all_with(member.clone(), &csi_api(kind));
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e).context(format!("listing {kind}es")),
    }
}

fn workload_api(member: &Client, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Api::namespaced_with(
        member.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)),
    )
}

/// Scales each workload to 0, recording its replicas and this snapshot in the same write.
async fn scale_down(
    member: &Client,
    ns: &str,
    snapshot: &str,
    workloads: &[Workload],
) -> anyhow::Result<()> {
    futures::future::try_join_all(workloads.iter().map(|w| async move {
        let patch = json!({
            "metadata": {"annotations": {
                keys::QUIESCED_BY: snapshot,
                keys::QUIESCED_REPLICAS: w.replicas.to_string()
            }},
            "spec": {"replicas": 0}
        });
        workload_api(member, ns, &w.api_version, &w.kind)
            .patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("scaling {} {} to 0", w.kind, w.name))
    }))
    .await?;
    Ok(())
}

/// Puts back every workload of `ns` this snapshot scaled down (found by its annotation, so this
/// also works after an interruption). Returns how many.
/// Scales every workload `snapshot` quiesced in `ns` back to its replicas, each tried up to
/// [`RESUME_ATTEMPTS`] times; one that fails does not stop the others. The error names every
/// workload left quiesced (they keep their `quiesced-by` annotation, so a retry or deleting the
/// snapshot resumes them).
pub(crate) async fn resume(member: &Client, ns: &str, snapshot: &str) -> anyhow::Result<usize> {
    let mut resumed = 0;
    let mut failed = Vec::new();
    for kind in ["Deployment", "StatefulSet"] {
        let api = workload_api(member, ns, "apps/v1", kind);
        for w in api.list(&ListParams::default()).await?.items {
            if w.annotations().get(keys::QUIESCED_BY).map(String::as_str) != Some(snapshot) {
                continue;
            }
            let replicas: i64 = w
                .annotations()
                .get(keys::QUIESCED_REPLICAS)
                .and_then(|r| r.parse().ok())
                .unwrap_or(1);
            let patch = json!({
                "metadata": {"annotations": {keys::QUIESCED_BY: null, keys::QUIESCED_REPLICAS: null}},
                "spec": {"replicas": replicas}
            });
            let name = w.name_any();
            let mut attempt = 1;
            loop {
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        resumed += 1;
                        break;
                    }
                    Err(e) if attempt < RESUME_ATTEMPTS => {
                        tracing::info!(%kind, workload = %name, attempt, error = %e, "scaling back failed; trying again");
                        tokio::time::sleep(RESUME_BACKOFF * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        failed.push(format!("{kind} {name} (to {replicas} replicas): {e}"));
                        break;
                    }
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "could not scale back {}; resumed {resumed} other(s). Those left keep the annotation \
             {}={snapshot}: deleting the snapshot resumes them, or scale them by hand",
            failed.join("; "),
            keys::QUIESCED_BY
        );
    }
    Ok(resumed)
}

/// How often one workload's scale-back is tried, and the wait before the next try (times the try).
const RESUME_ATTEMPTS: u32 = 3;
const RESUME_BACKOFF: Duration = Duration::from_millis(200);

async fn resume_after_interruption(
    ctx: &Context,
    snapshot: &NamespaceSnapshot,
) -> anyhow::Result<usize> {
    let member = member_client(ctx, &snapshot.spec.cluster).await?;
    let n = resume(&member, &snapshot.spec.namespace, &snapshot.name_any()).await?;
    remove_exports(&member, &snapshot.spec.namespace, &snapshot.name_any()).await?;
    delete_volume_snapshots(&member, &snapshot.spec.namespace, &snapshot.name_any()).await?;
    Ok(n)
}

/// Waits until no pod of `ns` mounts a claim about to be snapshotted.
async fn wait_quiesced(
    member: &Client,
    ns: &str,
    claims: &[(String, String)],
) -> anyhow::Result<()> {
    let claims: BTreeSet<&str> = claims.iter().map(|(c, _)| c.as_str()).collect();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(member.clone(), ns);
    let deadline = tokio::time::Instant::now() + QUIESCE_TIMEOUT;
    loop {
        let mounting: Vec<String> = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| claims.contains(c.claim_name.as_str()))
                    })
            })
            .map(|p| p.name_any())
            .collect();
        if mounting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "pods still mount the claims after {}s: {}",
                QUIESCE_TIMEOUT.as_secs(),
                mounting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates every `VolumeSnapshot` at once, then waits until each is cut (`status.creationTime`:
/// the point in time is fixed, so the workloads may run again).
async fn cut_snapshots(
    member: &Client,
    ns: &str,
    snapshot: &str,
    claims: &[(String, String)],
    groups: &[Group],
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), ns, &csi_api("VolumeSnapshot"));
    let group_api: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), ns, &csi_api("VolumeGroupSnapshot"));
    label_group_claims(member, ns, groups).await?;
    let create_groups = futures::future::try_join_all(groups.iter().map(|g| {
        let api = group_api.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(g.object.clone())?;
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("creating VolumeGroupSnapshot {}", g.name))
        }
    }));
    let create_singles = futures::future::try_join_all(claims.iter().map(|(claim, class)| {
        let api = api.clone();
        async move {
            let object: DynamicObject =
                serde_json::from_value(volumes::volume_snapshot(snapshot, ns, claim, class))?;
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("creating the VolumeSnapshot of claim {claim}"))
        }
    }));
    // Groups and single snapshots are created at once too.
    futures::try_join!(create_groups, create_singles)?;
    let cut =
        |s: &Value| s["status"]["creationTime"].is_string() || s["status"]["readyToUse"] == true;
    futures::try_join!(
        wait_snapshots(&api, snapshot, claims, CUT_TIMEOUT, "cut", cut),
        wait_groups(&group_api, groups, CUT_TIMEOUT, "cut", cut),
    )
    .map(|_| ())
}

/// Waits until every snapshot is ready to use and returns what a restore needs of each.
async fn wait_ready(
    member: &Client,
    ns: &str,
    snapshot: &str,
    claims: &[(String, String)],
    groups: &[Group],
    plans: &[volumes::VolumePlan],
) -> anyhow::Result<Vec<VolumeEntry>> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), ns, &csi_api("VolumeSnapshot"));
    let ready = wait_snapshots(&api, snapshot, claims, READY_TIMEOUT, "ready to use", |s| {
        s["status"]["readyToUse"] == true
    })
    .await?;
    let contents: Api<DynamicObject> =
        Api::all_with(member.clone(), &csi_api("VolumeSnapshotContent"));
    let mut entries = Vec::new();
    for ((claim, _), vs) in claims.iter().zip(ready) {
        let content_name = vs["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .ok_or_else(|| {
                anyhow!("VolumeSnapshot of claim {claim} is ready but names no content")
            })?;
        let content = serde_json::to_value(
            contents
                .get(content_name)
                .await
                .with_context(|| format!("reading VolumeSnapshotContent {content_name}"))?,
        )?;
        let handle = content["status"]["snapshotHandle"]
            .as_str()
            .ok_or_else(|| {
                anyhow!("VolumeSnapshotContent {content_name} has no snapshot handle")
            })?;
        let plan = plans.iter().find(|p| &p.claim == claim);
        entries.push(VolumeEntry {
            claim: claim.clone(),
            driver: plan.and_then(|p| p.driver.clone()).unwrap_or_default(),
            snapshot_handle: handle.to_owned(),
            restore_size: vs["status"]["restoreSize"].as_str().map(str::to_owned),
            storage_class: plan.and_then(|p| p.storage_class.clone()),
            group: None,
            data: None,
        });
    }
    if groups.is_empty() {
        return Ok(entries);
    }
    let group_api: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), ns, &csi_api("VolumeGroupSnapshot"));
    let group_contents: Api<DynamicObject> =
        Api::all_with(member.clone(), &csi_api("VolumeGroupSnapshotContent"));
    let ready = wait_groups(&group_api, groups, READY_TIMEOUT, "ready to use", |s| {
        s["status"]["readyToUse"] == true
    })
    .await?;
    for (g, vgs) in groups.iter().zip(ready) {
        let content_name = vgs["status"]["boundVolumeGroupSnapshotContentName"]
            .as_str()
            .ok_or_else(|| {
                anyhow!(
                    "VolumeGroupSnapshot {} is ready but names no content",
                    g.name
                )
            })?;
        let content = serde_json::to_value(
            group_contents
                .get(content_name)
                .await
                .with_context(|| format!("reading VolumeGroupSnapshotContent {content_name}"))?,
        )?;
        let members = volumes::group_members(&content, plans);
        for claim in &g.claims {
            let (_, handle, size) = members.iter().find(|(c, _, _)| c == claim).ok_or_else(|| {
                anyhow!("VolumeGroupSnapshotContent {content_name} lists no snapshot of claim {claim}")
            })?;
            let plan = plans.iter().find(|p| &p.claim == claim);
            entries.push(VolumeEntry {
                claim: claim.clone(),
                driver: plan.and_then(|p| p.driver.clone()).unwrap_or_default(),
                snapshot_handle: handle.clone(),
                restore_size: size.clone(),
                storage_class: plan.and_then(|p| p.storage_class.clone()),
                group: Some(g.name.clone()),
                data: None,
            });
        }
    }
    Ok(entries)
}

/// Polls the snapshot's `VolumeSnapshot`s until `done` holds for all (in `claims` order).
async fn wait_snapshots(
    api: &Api<DynamicObject>,
    snapshot: &str,
    claims: &[(String, String)],
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let objects: Vec<(String, String)> = claims
        .iter()
        .map(|(claim, _)| {
            let name = volumes::volume_snapshot_name(snapshot, claim);
            (format!("the VolumeSnapshot of claim {claim}"), name)
        })
        .collect();
    wait_csi_objects(api, &objects, timeout, what, done).await
}

/// Polls CSI snapshot objects (`(description, name)`) until `done` holds for all, in order,
/// failing at once on an error the CSI driver reports in one of them.
async fn wait_csi_objects(
    api: &Api<DynamicObject>,
    objects: &[(String, String)],
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut all = Vec::new();
        let mut waiting = Vec::new();
        for (description, name) in objects {
            let object = serde_json::to_value(api.get(name).await?)?;
            if let Some(message) = object["status"]["error"]["message"].as_str() {
                bail!("the CSI driver failed {description}: {message}");
            }
            if !done(&object) {
                waiting.push(name.clone());
            }
            all.push(object);
        }
        if waiting.is_empty() {
            return Ok(all);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} not {what} after {}s: {} (is the CSI snapshot controller running on the \
                 member, with group snapshots enabled for group snapshots?)",
                api.resource_url().rsplit('/').next().unwrap_or("snapshots"),
                timeout.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn delete_volume_snapshots(member: &Client, ns: &str, snapshot: &str) -> anyhow::Result<()> {
    let selector = format!("{}={snapshot}", keys::SNAPSHOT_LABEL);
    for kind in ["VolumeGroupSnapshot", "VolumeSnapshot"] {
        let api: Api<DynamicObject> = Api::namespaced_with(member.clone(), ns, &csi_api(kind));
        match api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await
        {
            // No such API on the member: nothing of that kind was created.
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("deleting the snapshot's {kind}s"))
                );
            }
        }
    }
    Ok(())
}

/// Copies every volume snapshot's files to the location (`volumeData: Export`) with mover pods on
/// the member, recording each volume's index in its entry and the progress in the status. A
/// filesystem location is a directory on the hub server, which no pod can reach: the volumes are
/// then kept as CSI snapshots only, and each says why.
async fn export_data(
    ctx: &Context,
    snapshot: &NamespaceSnapshot,
    (location, member): (&StorageLocation, &Client),
    claims: &[Value],
    entries: &mut [VolumeEntry],
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let spec = &snapshot.spec;
    if spec.volume_data == VolumeDataPolicy::SnapshotsOnly || entries.is_empty() {
        return Ok(());
    }
    let Some(s3) = &location.spec.s3 else {
        let why = format!(
            "data not exported: StorageLocation {} is a directory on the hub server, which pods on \
             the member cannot reach; the data stays in the member's storage as a CSI snapshot (an \
             S3 location takes the data too)",
            spec.location
        );
        for v in &mut progress.status.volumes {
            if entries.iter().any(|e| e.claim == v.claim) {
                v.message = Some(why.clone());
            }
        }
        return Ok(());
    };
    let target = transfers::Location::read(&ctx.hub, s3).await?;
    // No sweep of the location while its chunks are sent (one may be there already, unreferenced,
    // and about to be referenced again).
    let lock = ctx.locks.of(&spec.location);
    let _exporting = lock.read().await;
    let (ns, name) = (spec.namespace.as_str(), snapshot.name_any());
    // A raw block volume has no files for the mover to read (not exported yet: it stays a CSI
    // snapshot, and its line says so).
    let block: Vec<String> = claims
        .iter()
        .filter(|c| c["spec"]["volumeMode"] == "Block")
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for v in &mut progress.status.volumes {
        if block.contains(&v.claim) {
            v.message = Some(
                "data not exported: a Block volume is kept as a CSI snapshot only (the mover reads \
                 file systems)"
                    .to_owned(),
            );
        }
    }
    let exported: Vec<&mut VolumeEntry> = entries
        .iter_mut()
        .filter(|e| !block.contains(&e.claim))
        .collect();
    if exported.is_empty() {
        return Ok(());
    }
    // Each volume's parent: the mover reads only what changed since.
    let snapshots = Api::<NamespaceSnapshot>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .list(&ListParams::default())
        .await
        .context("listing the NamespaceSnapshots for each volume's previous export")?
        .items;
    let parents: Vec<Option<&str>> = exported
        .iter()
        .map(|e| mover::parent_index(&snapshots, snapshot, &e.claim))
        .collect();
    let (jobs, provisioned) = export_jobs(&name, ns, claims, &exported, &parents);
    let location_name = spec.location.clone();
    let moved = async {
        create_provisioned(member, ns, &provisioned).await?;
        let message = format!(
            "exporting the data of {} volume(s) to {location_name}",
            jobs.len()
        );
        progress.step(SnapshotPhase::Exporting, message).await?;
        transfers::run(
            member,
            &target,
            &ctx.mover,
            jobs,
            progress,
            move |status, transfers| record_exports(status, transfers, &location_name),
        )
        .await
    }
    .await;
    // Whatever happened: the pods, Secrets, temporary claims and volume snapshots made for it.
    if let Err(e) = remove_exports(member, ns, &name).await {
        tracing::warn!(snapshot = %name, error = %format!("{e:#}"),
            "removing what the export made on the member");
    }
    for (entry, moved) in exported.into_iter().zip(moved?) {
        entry.data = Some(VolumeData {
            index: moved.index_digest,
            bytes: moved.bytes,
            files: moved.files,
        });
    }
    Ok(())
}

/// One export job per volume, and the pre-provisioned `VolumeSnapshotContent` and `VolumeSnapshot`
/// (for its handle) that the temporary claim of a volume cut in a group is made from: the group
/// controller names those volume snapshots, not this one.
fn export_jobs(
    snapshot: &str,
    ns: &str,
    claims: &[Value],
    entries: &[&mut VolumeEntry],
    parents: &[Option<&str>],
) -> (Vec<Job>, Vec<Value>) {
    let mut provisioned = Vec::new();
    let jobs = entries
        .iter()
        .zip(parents)
        .map(|(entry, parent)| {
            let source = match &entry.group {
                None => volumes::volume_snapshot_name(snapshot, &entry.claim),
                Some(_) => {
                    let (mut content, mut vs) = volumes::restore_snapshot_objects(
                        snapshot,
                        ns,
                        &entry.claim,
                        &entry.driver,
                        &entry.snapshot_handle,
                    );
                    // Labelled as the export's, not as the snapshot's own volume snapshots.
                    let labels = json!({mover::EXPORT_LABEL: mover::label_value(snapshot)});
                    content["metadata"]["labels"] = labels.clone();
                    vs["metadata"]["labels"] = labels;
                    let name = vs["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    provisioned.extend([content, vs]);
                    name
                }
            };
            // The claim's own request when the driver reported no restore size.
            let requested = claims
                .iter()
                .find(|c| c["metadata"]["name"] == entry.claim.as_str())
                .and_then(|c| c["spec"]["resources"]["requests"]["storage"].as_str());
            let size = entry.restore_size.as_deref().or(requested).unwrap_or("1Gi");
            Job::export(
                snapshot,
                ns,
                &entry.claim,
                &source,
                size,
                entry.storage_class.as_deref(),
                *parent,
            )
        })
        .collect();
    (jobs, provisioned)
}

/// Writes each export's progress into its volume's line, and the total into the message.
fn record_exports(
    status: &mut NamespaceSnapshotStatus,
    transfers: &[transfers::Transfer],
    location: &str,
) {
    for t in transfers {
        if let Some(v) = status.volumes.iter_mut().find(|v| v.claim == t.job.claim) {
            v.data = Some(t.data.clone());
        }
    }
    let (done, total) = transfers.iter().fold((0, 0), |(d, t), x| {
        (d + x.data.bytes_done, t + x.data.bytes_total)
    });
    status.message = Some(format!(
        "exporting the data of {} volume(s) to {location}: {} of {} MiB read",
        transfers.len(),
        done >> 20,
        total >> 20
    ));
}

async fn create_provisioned(member: &Client, ns: &str, objects: &[Value]) -> anyhow::Result<()> {
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = if kind == "VolumeSnapshotContent" {
            Api::all_with(member.clone(), &csi_api(kind))
        } else {
            Api::namespaced_with(member.clone(), ns, &csi_api(kind))
        };
        let typed: DynamicObject = serde_json::from_value(object.clone())?;
        api.create(&PostParams::default(), &typed)
            .await
            .with_context(|| format!("creating {kind} {} for the export", typed.name_any()))?;
    }
    Ok(())
}

/// Removes what exporting the snapshot's data created on the member: the mover pods, their Secrets
/// and temporary claims, and the volume snapshots made for groups' volumes (retained contents:
/// the group's own data stays).
async fn remove_exports(member: &Client, ns: &str, snapshot: &str) -> anyhow::Result<()> {
    let selector = mover::selector(true, snapshot);
    transfers::remove(member, ns, &selector).await?;
    let params = ListParams::default().labels(&selector);
    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(member.clone(), ns, &csi_api("VolumeSnapshot"));
    let contents: Api<DynamicObject> =
        Api::all_with(member.clone(), &csi_api("VolumeSnapshotContent"));
    for api in [snapshots, contents] {
        match api
            .delete_collection(&DeleteParams::default(), &params)
            .await
        {
            Ok(_) => {}
            // No CSI snapshot API on the member: nothing was made.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).context("deleting the export's volume snapshots"),
        }
    }
    Ok(())
}
