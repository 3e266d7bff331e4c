//! Distributions, run by the Lease holder: one runner per Distribution. A runner syncs when the
//! Distribution changes, retries members that failed with backoff, and in Continuous mode also
//! watches its sources on the hub and its copies on every member.

mod member;
mod removal;
mod teardown;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    Distribution, DistributionMode, DriftPolicy, MemberCluster, MemberDistributionStatus,
    ObjectSyncState, TrafficPolicy,
};
use multicluster_core::cluster::Kinds;
use multicluster_core::distribution::{self, ObjectKey};
use multicluster_core::members::join::Capability;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::members::MemberClients;

use member::MemberMemory;
pub use member::Source;

/// How long a member may take to start answering one request before the sync gives up on it.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a runner wakes up.
#[derive(Debug)]
pub enum Trigger {
    /// The Distribution, a source, or a member list changed: sync.
    Sync,
    /// A copy on a member changed or disappeared.
    Copy {
        member: String,
        key: ObjectKey,
        /// `None` when the copy is gone (deleted, or its label removed).
        resource_version: Option<String>,
        /// The manager of the copy's most recent change.
        last_manager: Option<String>,
        /// The namespace snapshot that has quiesced the copy (`quiesced-by`), if one has.
        quiesced_by: Option<String>,
    },
}

/// Runs every Distribution in `multicluster-system` until aborted (on losing the Lease).
pub async fn run(client: Client, clients: MemberClients, run: crate::loops::Loop) {
    let hub = hub_id(&client, &run).await;
    let api: Api<Distribution> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    // Aborted with this loop (dropped with it): a replica that loses the Lease stops every runner.
    let mut runners: HashMap<String, (AbortOnDropHandle<()>, mpsc::UnboundedSender<Trigger>)> =
        HashMap::new();
    // What last woke each runner: status writes (ours) change neither, so they wake nobody.
    let mut seen: HashMap<String, Wake> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // A member that answers again (or stops answering) changes what every runner should do.
    let mut member_events = watcher(
        Api::<MemberCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    // Per member: whether it answers, and whether `unjoin` is taking it out of every target list.
    let mut reachable: HashMap<String, (bool, bool)> = HashMap::new();
    // Deployments placed by a TrafficPolicy follow its active weights.
    let mut policy_events = watcher(
        Api::<TrafficPolicy>::namespaced(client.clone(), SYSTEM_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    let mut weights_seen: HashMap<String, BTreeMap<String, u32>> = HashMap::new();
    loop {
        let event = tokio::select! {
            e = events.next() => match e {
                Some(e) => e,
                None => return,
            },
            p = policy_events.next() => {
                if let Some(Ok(policy)) = p {
                    let weights = policy.status.map(|s| s.active_weights).unwrap_or_default();
                    if weights_seen.insert(policy.metadata.name.unwrap_or_default(), weights.clone()) != Some(weights) {
                        for (_, tx) in runners.values() {
                            let _ = tx.send(Trigger::Sync);
                        }
                    }
                }
                continue;
            }
            m = member_events.next() => {
                if let Some(Ok(member)) = m {
                    let now = (member_reachable(&member), teardown::leaving(&member));
                    if reachable.insert(member.name_any(), now) != Some(now) {
                        tracing::debug!(member = %member.name_any(), reachable = now.0, leaving = now.1, "member changed");
                        for (_, tx) in runners.values() {
                            let _ = tx.send(Trigger::Sync);
                        }
                    }
                }
                continue;
            }
        };
        match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                let name = d.name_any();
                let wake = (
                    d.metadata.generation,
                    d.annotations()
                        .get(multicluster_core::keys::SYNC_REQUESTED)
                        .cloned(),
                    d.metadata.deletion_timestamp.is_some(),
                    d.annotations()
                        .contains_key(multicluster_core::keys::RELEASE_UNREACHABLE),
                );
                let running = runners.get(&name).is_some_and(|(t, _)| !t.is_finished());
                if running && seen.get(&name) == Some(&wake) {
                    continue;
                }
                seen.insert(name.clone(), wake);
                let (task, tx) = runners.entry(name.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let task = AbortOnDropHandle::new(tokio::spawn(runner(
                        client.clone(),
                        clients.clone(),
                        hub.clone(),
                        name.clone(),
                        tx.clone(),
                        rx,
                        run.clone(),
                    )));
                    (task, tx)
                });
                if task.is_finished() || tx.send(Trigger::Sync).is_err() {
                    runners.remove(&name);
                }
            }
            Ok(watcher::Event::Delete(d)) => {
                seen.remove(&d.name_any());
                if let Some((task, _)) = runners.remove(&d.name_any()) {
                    task.abort();
                }
            }
            Ok(_) => {}
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "watching Distributions")
            }
        }
    }
}

/// What wakes a running runner: the Distribution's generation, its last sync request, whether it
/// is being deleted and whether unreachable members are to be released. Status writes (ours)
/// change none of these, so they wake nobody.
type Wake = (Option<i64>, Option<String>, bool, bool);

/// This hub's cluster ID, asked until the hub answers: every copy carries it.
async fn hub_id(client: &Client, run: &crate::loops::Loop) -> String {
    loop {
        match multicluster_core::cluster::cluster_id(client).await {
            Ok(id) => return id,
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "reading the hub's cluster ID (its kube-system namespace); retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What the hub's health probe last said: `false` only when the member did not answer.
fn member_reachable(member: &MemberCluster) -> bool {
    member
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reachable"))
        .is_none_or(|c| c.status != "False")
}

/// State one runner keeps between syncs.
#[derive(Default)]
struct RunnerState {
    /// This hub's cluster ID.
    hub: String,
    memory: HashMap<String, MemberMemory>,
    /// Copies edited on a member and left alone (DriftPolicy Report): member → key → message.
    drifted: BTreeMap<(String, ObjectKey), String>,
    /// Corrections made since the last sync (DriftPolicy Correct), reported in status.
    corrected: BTreeMap<(String, ObjectKey), String>,
    discovery: Kinds,
    watches: watch::Watches,
    failures: u32,
    /// From the last sync: where the objects live, and the registered members.
    kinds: watch::Kinds,
    members: Vec<MemberCluster>,
}

/// Continuous mode re-applies everything this often even without events, in case a watch missed
/// an edit while it was reconnecting. An unchanged apply writes nothing on the member.
const FULL_RESYNC: Duration = Duration::from_secs(300);

async fn runner(
    client: Client,
    clients: MemberClients,
    hub: String,
    name: String,
    tx: mpsc::UnboundedSender<Trigger>,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    run: crate::loops::Loop,
) {
    let api: Api<Distribution> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let mut state = RunnerState {
        hub,
        ..Default::default()
    };
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut resync_at = tokio::time::Instant::now() + FULL_RESYNC;
    loop {
        let wake_at = retry_at.map_or(resync_at, |r| r.min(resync_at));
        let first = tokio::select! {
            t = rx.recv() => t,
            _ = tokio::time::sleep_until(wake_at) => {
                if tokio::time::Instant::now() >= resync_at {
                    resync_at = tokio::time::Instant::now() + FULL_RESYNC;
                    if !state.watches.is_empty() {
                        state.memory.clear();
                    }
                }
                Some(Trigger::Sync)
            }
        };
        let Some(first) = first else { return };
        // Collect what else arrives in a short window: a burst of changes is one sync.
        let mut triggers = vec![first];
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok(t) = rx.try_recv() {
            triggers.push(t);
        }
        let distribution = match api.get_opt(&name).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                run.failed();
                tracing::warn!(distribution = %name, error = %e, "reading the Distribution");
                retry_at = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                continue;
            }
        };
        if distribution.metadata.deletion_timestamp.is_some() {
            // Being deleted: take the copies off every member, then let it go.
            state.watches.clear();
            if !teardown::holds_finalizer(&distribution) {
                return;
            }
            if teardown::run(&client, &clients, &api, &distribution, &state.hub).await {
                match teardown::release(&api, &distribution).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(distribution = %name, error = %e, "removing the finalizer")
                    }
                }
            }
            run.failed();
            retry_at = Some(backoff(&mut state.failures));
            continue;
        }
        if !teardown::holds_finalizer(&distribution) {
            // Before the first write to a member: from then on its copies go with it.
            if let Err(e) = teardown::hold(&api, &distribution).await {
                run.failed();
                tracing::warn!(distribution = %name, error = %e, "adding the clean-up finalizer");
                retry_at = Some(backoff(&mut state.failures));
                continue;
            }
        }
        let mut needed = triggers.iter().any(|t| matches!(t, Trigger::Sync));
        for t in triggers {
            if let Trigger::Copy {
                member,
                key,
                resource_version,
                last_manager,
                quiesced_by,
            } = t
            {
                needed |= copy_changed(
                    &mut state,
                    &distribution,
                    member,
                    key,
                    resource_version,
                    last_manager,
                    quiesced_by,
                );
            }
        }
        if !needed {
            continue;
        }
        let done = sync(&client, &clients, &api, &distribution, &mut state).await;
        if distribution.spec.mode == DistributionMode::Continuous {
            state
                .watches
                .ensure(
                    &client,
                    &clients,
                    &distribution,
                    &state.members,
                    &state.kinds,
                    &tx,
                )
                .await;
        } else {
            state.watches.clear();
        }
        retry_at = if done {
            state.failures = 0;
            None
        } else {
            run.failed();
            Some(backoff(&mut state.failures))
        };
    }
}

/// When to try again after one more failure in a row: 2, 4, 8, then every 10 seconds.
fn backoff(failures: &mut u32) -> tokio::time::Instant {
    *failures += 1;
    let secs = 1u64 << (*failures).min(3);
    tokio::time::Instant::now() + Duration::from_secs(secs.min(10))
}

/// Decides what a change of a copy means: our own write (nothing), an edit to correct (sync), or
/// an edit to report (status only).
fn copy_changed(
    state: &mut RunnerState,
    distribution: &Distribution,
    member: String,
    key: ObjectKey,
    resource_version: Option<String>,
    last_manager: Option<String>,
    quiesced_by: Option<String>,
) -> bool {
    let memory = state.memory.entry(member.clone()).or_default();
    // A namespace snapshot scaled it down: not drift, and not to be re-applied until the
    // snapshot resumes it (which is a change of its own, corrected then like any other).
    match quiesced_by {
        Some(snapshot) => {
            tracing::info!(distribution = %distribution.name_any(), %member, object = %key, %snapshot, "quiesced by a snapshot: left alone");
            memory.quiesced.insert(key, snapshot);
            return false;
        }
        None => {
            memory.quiesced.remove(&key);
        }
    }
    let Some((_, ours)) = memory.applied.get(&key) else {
        return false;
    };
    if resource_version.as_deref() == Some(ours.as_str())
        || (resource_version.is_some()
            && last_manager.as_deref() == Some(distribution::FIELD_MANAGER))
    {
        return false;
    }
    let what = match (&resource_version, &last_manager) {
        (None, _) => "deleted (or unlabelled) on the member".to_owned(),
        (Some(_), Some(m)) => format!("edited on the member by {m}"),
        (Some(_), None) => "edited on the member".to_owned(),
    };
    let when = Timestamp::now();
    match distribution.spec.drift_policy {
        DriftPolicy::Correct => {
            tracing::info!(distribution = %distribution.name_any(), %member, object = %key, %what, "correcting drift");
            memory.applied.remove(&key);
            state
                .corrected
                .insert((member, key), format!("{what}; corrected at {when}"));
            true
        }
        DriftPolicy::Report => {
            tracing::info!(distribution = %distribution.name_any(), %member, object = %key, %what, "drift reported");
            state.drifted.insert(
                (member, key),
                format!("{what} at {when}; left as is (driftPolicy Report)"),
            );
            true
        }
    }
}

/// The API of `api_version`/`kind` on the hub (cached per runner).
async fn discover(
    client: &Client,
    cache: &mut Kinds,
    api_version: &str,
    kind: &str,
) -> anyhow::Result<(ApiResource, bool)> {
    let found = cache
        .resolve(client, api_version, kind)
        .await
        .map_err(|e| anyhow::anyhow!("the hub does not serve {api_version} {kind}: {e}"))?;
    Ok((found.resource, found.namespaced))
}

/// Reads every source from the hub.
async fn read_sources(
    client: &Client,
    distribution: &Distribution,
    cache: &mut Kinds,
) -> anyhow::Result<Vec<Source>> {
    let spec = &distribution.spec;
    let mut out: Vec<Source> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut push =
        |mut object: Value, resource: &ApiResource, namespaced: bool, out: &mut Vec<Source>| {
            object["apiVersion"] = json!(resource.api_version);
            object["kind"] = json!(resource.kind);
            if let Some(key) = ObjectKey::of(&object)
                && seen.insert(key)
            {
                out.push(Source {
                    object,
                    resource: resource.clone(),
                    namespaced,
                });
            }
        };
    for source in &spec.sources {
        if let Some(r) = &source.object {
            let (resource, namespaced) = discover(client, cache, &r.api_version, &r.kind).await?;
            let api: Api<DynamicObject> = match (&r.namespace, namespaced) {
                (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
                (None, true) => anyhow::bail!(
                    "source {} {} is namespaced: give its namespace",
                    r.kind,
                    r.name
                ),
                _ => Api::all_with(client.clone(), &resource),
            };
            let object = api.get_opt(&r.name).await?.ok_or_else(|| {
                anyhow::anyhow!(
                    "source {} {}{} does not exist on the hub",
                    r.kind,
                    r.namespace
                        .as_ref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    r.name
                )
            })?;
            push(
                serde_json::to_value(object)?,
                &resource,
                namespaced,
                &mut out,
            );
        }
        if let Some(s) = &source.selector {
            let (resource, namespaced) = discover(client, cache, &s.api_version, &s.kind).await?;
            if !distribution::may_leave_hub(spec, &s.api_version, &s.kind, false) {
                tracing::debug!("selector over Secrets without includeSelectedSecrets: skipped");
                continue;
            }
            let api: Api<DynamicObject> = match (&s.namespace, namespaced) {
                (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
                _ => Api::all_with(client.clone(), &resource),
            };
            let selector = kube::core::Selector::try_from(s.label_selector.clone())
                .map_err(|e| anyhow::anyhow!("source selector: {e}"))?;
            let list = api
                .list(&ListParams::default().labels(&selector.to_string()))
                .await?;
            for object in list.items {
                push(
                    serde_json::to_value(object)?,
                    &resource,
                    namespaced,
                    &mut out,
                );
            }
        }
    }
    Ok(out)
}

/// Replicas per member for each Deployment, when `targets.trafficPolicy` names a policy (in
/// `multicluster-system`, beside the Distribution).
async fn placement(
    client: &Client,
    distribution: &Distribution,
    sources: &[Source],
) -> anyhow::Result<member::Placement> {
    let mut out = member::Placement::new();
    let Some(policy_name) = &distribution.spec.targets.traffic_policy else {
        return Ok(out);
    };
    let policy = Api::<TrafficPolicy>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt(policy_name)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("TrafficPolicy {SYSTEM_NAMESPACE}/{policy_name} does not exist")
        })?;
    let active = policy.status.map(|s| s.active_weights).unwrap_or_default();
    for source in sources {
        if source.object["kind"] != "Deployment" || source.object["apiVersion"] != "apps/v1" {
            continue;
        }
        let Some(key) = ObjectKey::of(&source.object) else {
            continue;
        };
        let replicas = distribution::replicas_of(&source.object);
        out.insert(
            key,
            distribution::place_replicas(replicas, &policy.spec, &active),
        );
    }
    Ok(out)
}

/// Writes a Distribution's status: its `Synced` condition (the transition time kept while its
/// status stays) and what the sync that asked for it saw.
struct Report<'a> {
    api: &'a Api<Distribution>,
    name: String,
    generation: Option<i64>,
    /// The `sync-requested` annotation this sync answers (`distribute` waits for it).
    request: Option<String>,
    previous: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

impl<'a> Report<'a> {
    fn new(api: &'a Api<Distribution>, distribution: &Distribution) -> Self {
        Self {
            api,
            name: distribution.name_any(),
            generation: distribution.metadata.generation,
            request: distribution
                .annotations()
                .get(multicluster_core::keys::SYNC_REQUESTED)
                .cloned(),
            previous: distribution
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
        }
    }

    fn condition(&self, status: bool, reason: &str, message: String) -> Value {
        let condition = multicluster_core::conditions::condition(
            &self.previous,
            "Synced",
            status,
            reason,
            message,
            self.generation,
            Timestamp::now(),
        );
        json!(condition)
    }

    /// The sync ended before any member was synced: say why, so `distribute` stops waiting.
    async fn stopped(&self, stop: Stop) {
        let status = json!({"observedGeneration": self.generation, "observedSyncRequest": self.request,
                            "conditions": [self.condition(false, stop.reason, stop.message)]});
        write_status(self.api, &self.name, status).await;
    }

    async fn finished(
        &self,
        condition: (bool, &str, String),
        members: Vec<MemberDistributionStatus>,
    ) {
        let (status, reason, message) = condition;
        let status = json!({"observedGeneration": self.generation, "observedSyncRequest": self.request,
                            "conditions": [self.condition(status, reason, message)], "members": members});
        write_status(self.api, &self.name, status).await;
    }
}

/// Why a sync stopped before syncing members, and whether trying again can help before the
/// Distribution or its sources change (`settled`: it cannot).
struct Stop {
    reason: &'static str,
    message: String,
    settled: bool,
}

impl Stop {
    fn retry(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            settled: false,
        }
    }
    fn settled(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            settled: true,
        }
    }
}

/// What a sync works from, read from the hub.
struct Inputs {
    sources: Vec<Source>,
    plan: distribution::Plan,
    placement: member::Placement,
    members: Vec<MemberCluster>,
    targets: Vec<String>,
    unknown: Vec<String>,
    /// This hub's cluster ID.
    hub: String,
}

async fn write_status(api: &Api<Distribution>, name: &str, status: Value) {
    if let Err(e) = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
    {
        tracing::warn!(distribution = %name, error = %e, "writing Distribution status");
    }
}

/// One sync of every target member; true when everything is Applied everywhere.
async fn sync(
    client: &Client,
    clients: &MemberClients,
    api: &Api<Distribution>,
    distribution: &Distribution,
    state: &mut RunnerState,
) -> bool {
    let report = Report::new(api, distribution);
    let inputs = match read_inputs(client, distribution, state).await {
        Ok(inputs) => inputs,
        Err(stop) => {
            let settled = stop.settled;
            report.stopped(stop).await;
            return settled;
        }
    };
    let previous = previous_statuses(distribution);
    let progress = member_progress(&previous, &inputs.targets);
    let publisher = publish_progress(api.clone(), report.name.clone(), progress.clone());
    let outcomes = sync_members(
        client,
        clients,
        distribution,
        &inputs,
        &previous,
        state,
        &progress,
    )
    .await;
    // Members that left the targets: their copies go too (or are released, with Orphan).
    let departed = teardown::departures(client, clients, distribution, &inputs, &previous).await;
    for d in &departed.finished {
        state.memory.remove(d);
    }
    publisher.abort();
    let (mut statuses, tally) = tally(outcomes, &inputs, state);
    statuses.extend(departed.pending.iter().cloned());
    state.corrected.clear();
    let condition = distribution::synced_condition(&tally, distribution.spec.conflict_policy);
    let synced = condition.0;
    report.finished(condition, statuses).await;
    tracing::info!(distribution = %report.name, synced, members = tally.members, "synced");
    // Conflicts need a change to resolve; unreachable members, errors and departures still to
    // finish are retried.
    tally.unreachable.is_empty() && tally.errors == 0 && departed.pending.is_empty()
}

/// The sources, their order and placement, and the target members, from the hub. Remembers the
/// kinds the sources live in and the registered members (for the copy watches).
async fn read_inputs(
    client: &Client,
    distribution: &Distribution,
    state: &mut RunnerState,
) -> Result<Inputs, Stop> {
    let sources = read_sources(client, distribution, &mut state.discovery)
        .await
        .map_err(|e| Stop::retry("SourceUnavailable", format!("{e:#}")))?;
    let objects: Vec<Value> = sources.iter().map(|s| s.object.clone()).collect();
    // An order that cannot be resolved stays so until the Distribution or its sources change.
    let plan = distribution::plan(&objects, &distribution.spec.dependency_rules)
        .map_err(|e| Stop::settled("OrderUnresolvable", e.to_string()))?;
    let placement = placement(client, distribution, &sources)
        .await
        .map_err(|e| Stop::retry("TrafficPolicyUnavailable", format!("{e:#}")))?;
    state.kinds = kinds_of(&sources);
    let members = Api::<MemberCluster>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| Stop::retry("MembersUnavailable", e.to_string()))?
        .items;
    let labels: BTreeMap<String, BTreeMap<String, String>> = members
        .iter()
        .map(|m| (m.name_any(), m.labels().clone()))
        .collect();
    state.members = members.clone();
    let (mut targets, unknown) = distribution::targets(&distribution.spec.targets, &labels)
        .map_err(|e| Stop::settled("BadTargets", e.to_string()))?;
    // A member `unjoin` is removing is no target: its copies go while the hub can still reach it.
    targets.retain(|t| {
        !members
            .iter()
            .any(|m| m.name_any() == *t && teardown::leaving(m))
    });
    Ok(Inputs {
        sources,
        plan,
        placement,
        members,
        targets,
        unknown,
        hub: state.hub.clone(),
    })
}

/// The kinds and namespaces the sources live in, each once.
fn kinds_of(sources: &[Source]) -> watch::Kinds {
    let mut kinds: watch::Kinds = Vec::new();
    for source in sources {
        let namespace = source.object["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned);
        if !kinds.iter().any(|k| {
            k.0.api_version == source.resource.api_version
                && k.0.kind == source.resource.kind
                && k.2 == namespace
        }) {
            kinds.push((source.resource.clone(), source.namespaced, namespace));
        }
    }
    kinds
}

type MemberProgress = BTreeMap<String, Arc<Mutex<MemberDistributionStatus>>>;

/// Each target's live status during the sync, starting from what the last sync recorded; a member
/// that is no target any more keeps its last status (what it holds) until its departure is done.
fn member_progress(
    previous: &HashMap<String, MemberDistributionStatus>,
    targets: &[String],
) -> MemberProgress {
    let mut progress: MemberProgress = previous
        .iter()
        .map(|(m, p)| (m.clone(), Arc::new(Mutex::new(p.clone()))))
        .collect();
    for m in targets {
        let mut p = previous.get(m).cloned().unwrap_or_default();
        m.clone_into(&mut p.member);
        progress.insert(m.clone(), Arc::new(Mutex::new(p)));
    }
    progress
}

pub(super) fn previous_statuses(
    distribution: &Distribution,
) -> HashMap<String, MemberDistributionStatus> {
    distribution
        .status
        .as_ref()
        .map(|s| {
            s.members
                .iter()
                .map(|m| (m.member.clone(), m.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the members' progress to the Distribution's status every 300 ms while the sync runs
/// (`distribute` shows it); it stops when the caller aborts or drops it (the sync is done, or
/// was aborted itself).
fn publish_progress(
    api: Api<Distribution>,
    name: String,
    progress: MemberProgress,
) -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let members: Vec<MemberDistributionStatus> = progress
                .values()
                .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
                .collect();
            write_status(&api, &name, json!({"members": members})).await;
        }
    }))
}

/// Syncs every target member at once, each with what this runner remembers of it.
async fn sync_members(
    client: &Client,
    clients: &MemberClients,
    distribution: &Distribution,
    inputs: &Inputs,
    previous: &HashMap<String, MemberDistributionStatus>,
    state: &mut RunnerState,
    progress: &MemberProgress,
) -> Vec<member::MemberOutcome> {
    let mut memories: Vec<(String, MemberMemory)> = inputs
        .targets
        .iter()
        .map(|m| (m.clone(), state.memory.remove(m).unwrap_or_default()))
        .collect();
    let syncs = memories.iter_mut().map(|(name, memory)| {
        let target = Target {
            name,
            member: inputs.members.iter().find(|m| m.name_any() == *name),
            previous: previous.get(name),
        };
        sync_member(
            client,
            clients,
            distribution,
            inputs,
            target,
            memory,
            progress[name].clone(),
        )
        .boxed()
    });
    let outcomes = futures::future::join_all(syncs).await;
    for (member, memory) in memories {
        state.memory.insert(member, memory);
    }
    outcomes
}

/// One target member of a sync: its name, its MemberCluster (when registered) and its status
/// from the last sync.
struct Target<'a> {
    name: &'a str,
    member: Option<&'a MemberCluster>,
    previous: Option<&'a MemberDistributionStatus>,
}

impl Target<'_> {
    /// The outcome for a member that was not synced, and why.
    fn not_synced(&self, message: String, unreachable: bool) -> member::MemberOutcome {
        let kept = if unreachable {
            self.previous.cloned().unwrap_or_default()
        } else {
            MemberDistributionStatus::default()
        };
        member::MemberOutcome {
            status: MemberDistributionStatus {
                member: self.name.to_owned(),
                message: Some(message),
                ..kept
            },
            unreachable,
            complete: false,
        }
    }
}

async fn sync_member(
    client: &Client,
    clients: &MemberClients,
    distribution: &Distribution,
    inputs: &Inputs,
    target: Target<'_>,
    memory: &mut MemberMemory,
    progress: Arc<Mutex<MemberDistributionStatus>>,
) -> member::MemberOutcome {
    // Targets come from this very list of members.
    let Some(member) = target.member else {
        return target.not_synced("not a registered member".into(), false);
    };
    if !member_reachable(member) {
        // Waiting out a timeout per sync would hold every other member's updates back; the
        // runner syncs again as soon as the probe sees the member answer.
        return target.not_synced(
            "the member did not answer the hub's last health probe; \
             syncing again when it answers, nothing on it is deleted meanwhile"
                .into(),
            true,
        );
    }
    match clients
        .get(
            client,
            member,
            Capability::Distribution,
            Some(MEMBER_TIMEOUT),
        )
        .await
    {
        Ok(member_client) => {
            let bundle = member::Bundle {
                distribution,
                hub: &inputs.hub,
                plan: &inputs.plan,
                sources: &inputs.sources,
                placement: &inputs.placement,
            };
            member::sync(
                &member_client,
                target.name,
                bundle,
                memory,
                target.previous,
                progress,
            )
            .await
        }
        Err(e) => target.not_synced(format!("no client for the member: {e:#}"), true),
    }
}

/// The target members' statuses (with the drift this runner saw marked on their objects) and the sums
/// the `Synced` condition is decided from.
fn tally(
    outcomes: Vec<member::MemberOutcome>,
    inputs: &Inputs,
    state: &RunnerState,
) -> (Vec<MemberDistributionStatus>, distribution::SyncTally) {
    let mut tally = distribution::SyncTally {
        objects: inputs
            .plan
            .steps
            .iter()
            .filter(|s| s.index.is_some())
            .count(),
        members: inputs.targets.len(),
        unknown: inputs.unknown.clone(),
        drifted: state.drifted.len(),
        ..Default::default()
    };
    let mut statuses = Vec::new();
    for mut outcome in outcomes {
        mark_drift(&mut outcome.status, state);
        tally.complete += usize::from(outcome.complete);
        if outcome.unreachable {
            tally.unreachable.push(outcome.status.member.clone());
        }
        let count = |wanted: ObjectSyncState| {
            outcome
                .status
                .objects
                .iter()
                .filter(|o| o.state == wanted)
                .count()
        };
        tally.conflicts += count(ObjectSyncState::Conflict);
        tally.errors += count(ObjectSyncState::Error);
        statuses.push(outcome.status);
    }
    (statuses, tally)
}

/// Puts this runner's drift reports and corrections on the member's objects.
fn mark_drift(status: &mut MemberDistributionStatus, state: &RunnerState) {
    for ((m, key), message) in state.drifted.iter().chain(state.corrected.iter()) {
        if *m != status.member {
            continue;
        }
        let drifted = state.drifted.contains_key(&(m.clone(), key.clone()));
        if let Some(o) = status
            .objects
            .iter_mut()
            .find(|o| o.object.kind == key.kind && o.object.name == key.name)
        {
            o.message = Some(message.clone());
            if drifted {
                o.state = ObjectSyncState::Drifted;
            }
        }
    }
}
