//! Bringing one member in line with one Distribution: tier by tier, concurrently within a tier,
//! never an object before what it depends on, and nothing deleted unless the member answered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    DeletionPolicy, Distribution, MemberDistributionStatus, ObjectDistributionStatus,
    ObjectReference, ObjectSyncState, WrittenKind, WrittenSecret,
};
use multicluster_core::distribution::{self, Action, ObjectKey, Owner, Plan};
use serde_json::{Value, json};

use super::removal::{self, Identity};

/// Requests in flight per member within one tier.
const CONCURRENCY: usize = 32;
/// Up to this many objects, status lists the Applied ones too.
const LIST_APPLIED_UP_TO: u32 = 200;

/// A hub object to distribute, with the API it lives in (from the hub's discovery; members serve
/// the same resources for the same kinds).
#[derive(Clone, Debug)]
pub struct Source {
    pub object: Value,
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// What the hub last wrote to one member: per object, a hash of the copy and the resourceVersion
/// the member answered with. An unchanged source costs no request; a copy whose resourceVersion
/// moved was changed by someone else.
#[derive(Debug, Default)]
pub struct MemberMemory {
    pub applied: HashMap<ObjectKey, (u64, String)>,
    /// Copies a namespace snapshot has quiesced there (annotated `quiesced-by`), by the snapshot:
    /// left alone until it resumes them, or an apply would scale them back up under the snapshot.
    pub quiesced: BTreeMap<ObjectKey, String>,
}

/// One member's result.
#[derive(Debug)]
pub struct MemberOutcome {
    pub status: MemberDistributionStatus,
    /// The member did not answer: try again later, and do not take silence for absence.
    pub unreachable: bool,
    pub complete: bool,
}

fn hash_of(value: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Whether the member did not answer (as opposed to answering with an error).
pub(super) fn is_transport(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(_))
}

fn reference_of(copy: &Value) -> ObjectReference {
    ObjectReference {
        api_version: copy["apiVersion"].as_str().unwrap_or_default().to_owned(),
        kind: copy["kind"].as_str().unwrap_or_default().to_owned(),
        name: copy["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        namespace: copy["metadata"]["namespace"].as_str().map(str::to_owned),
    }
}

fn api_for(client: &Client, source: &Source, namespace: Option<&str>) -> Api<DynamicObject> {
    match (source.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &source.resource),
        _ => Api::all_with(client.clone(), &source.resource),
    }
}

/// Replicas per member for Deployments placed by a TrafficPolicy (`None`: no member serves).
pub type Placement = HashMap<ObjectKey, Option<BTreeMap<String, u32>>>;

/// What one member is synced from: the Distribution, its ordered plan, the sources and the
/// replicas placed per member.
#[derive(Clone, Copy)]
pub struct Bundle<'a> {
    pub distribution: &'a Distribution,
    /// This hub's cluster ID, on every copy beside the Distribution's name.
    pub hub: &'a str,
    pub plan: &'a Plan,
    pub sources: &'a [Source],
    pub placement: &'a Placement,
}

impl Bundle<'_> {
    pub fn owner(&self) -> Owner<'_> {
        Owner {
            distribution: self
                .distribution
                .metadata
                .name
                .as_deref()
                .unwrap_or_default(),
            hub: self.hub,
        }
    }
}

/// Syncs `member`, tier by tier: the copies of a tier and what to do with each, the labels of
/// what already exists there (for the conflict policy), the applies, then a wait until any CRD
/// the tier wrote serves. Stops at the first sign that the member does not answer; removes the
/// copies that left the Distribution only when it answered throughout. `progress` holds this
/// member's live status so the caller can publish it while the work runs.
pub async fn sync(
    client: &Client,
    member: &str,
    bundle: Bundle<'_>,
    memory: &mut MemberMemory,
    previous: Option<&MemberDistributionStatus>,
    progress: Arc<Mutex<MemberDistributionStatus>>,
) -> MemberOutcome {
    let mut run = MemberSync::new(client, member, bundle, previous, progress);
    for tier in bundle.plan.tiers() {
        let work = run.work_of(tier);
        let Some(existing) = run.existing(&work, memory).await else {
            break;
        };
        // A copy the member holds quiesced, which this runner may not know of (a new runner after
        // a restart or a leader change remembers nothing): left alone like one it saw quiesced.
        remember_quiesced(&work, &existing, memory);
        let work = run.hold_quiesced(work, memory);
        let results = run.apply(work, &existing, memory).await;
        let crds = run.record(results, memory);
        run.wait_established(crds).await;
        if run.unreachable.is_some() {
            break;
        }
    }
    // Remove copies that left the Distribution, only from a member that answered throughout.
    if run.unreachable.is_none() {
        let removed = removal::remove_copies(
            client,
            bundle.owner(),
            DeletionPolicy::Delete,
            &run.written,
            &mut run.written_secrets,
            &run.desired,
            bundle.sources,
        )
        .await;
        run.states
            .extend(removed.kept.into_iter().map(|(key, mut kept)| {
                if let Some(why) = &kept.message {
                    kept.message = Some(format!("left the Distribution; {why}"));
                }
                (key, kept)
            }));
    }
    run.outcome()
}

/// One member's sync in progress.
struct MemberSync<'a> {
    client: &'a Client,
    member: &'a str,
    bundle: Bundle<'a>,
    /// Each object's state on the member, as status will show it.
    states: BTreeMap<ObjectKey, ObjectDistributionStatus>,
    /// Objects that failed (and so hold back what depends on them).
    failed: BTreeSet<ObjectKey>,
    /// Why the member stopped answering, once it did.
    unreachable: Option<String>,
    /// The kinds (and namespaces) ever written there, for finding leftovers.
    written: BTreeSet<WrittenKind>,
    /// The Secrets ever written there (which the hub may get but not list), for the same.
    written_secrets: BTreeSet<WrittenSecret>,
    /// Every copy the Distribution wants there now.
    desired: BTreeSet<Identity>,
    total: u32,
    progress: Arc<Mutex<MemberDistributionStatus>>,
}

impl<'a> MemberSync<'a> {
    fn new(
        client: &'a Client,
        member: &'a str,
        bundle: Bundle<'a>,
        previous: Option<&MemberDistributionStatus>,
        progress: Arc<Mutex<MemberDistributionStatus>>,
    ) -> Self {
        let objects = bundle
            .plan
            .steps
            .iter()
            .filter(|s| s.index.is_some())
            .count();
        let total = u32::try_from(objects).unwrap_or(u32::MAX);
        {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            p.total = total;
            p.applied = 0;
        }
        Self {
            client,
            member,
            bundle,
            states: BTreeMap::new(),
            failed: BTreeSet::new(),
            unreachable: None,
            written: previous
                .map(|p| p.written.iter().cloned().collect())
                .unwrap_or_default(),
            written_secrets: previous
                .map(|p| p.written_secrets.iter().cloned().collect())
                .unwrap_or_default(),
            desired: BTreeSet::new(),
            total,
            progress,
        }
    }

    fn set_state(
        &mut self,
        key: ObjectKey,
        of: &Value,
        state: ObjectSyncState,
        message: Option<String>,
    ) {
        let status = ObjectDistributionStatus {
            object: reference_of(of),
            state,
            message,
        };
        self.states.insert(key, status);
    }

    /// The tier's copies for this member and what to do with each. An object whose dependency
    /// failed waits (Pending); a copy that cannot be made for this member is an Error.
    fn work_of(&mut self, tier: Vec<&distribution::Step>) -> Vec<Work<'a>> {
        let mut work = Vec::new();
        for step in tier {
            // Still in the bundle, so never a leftover, whether or not it is applied this sync
            // (a failed dependency, a failed override, no serving member): its copy on the
            // member stays until it leaves the bundle.
            if let Some(index) = step.index {
                let identity = self.identity_here(&self.bundle.sources[index].object);
                self.desired.insert(identity);
            }
            if let Some(dep) = step.depends_on.iter().find(|d| self.failed.contains(&d.on)) {
                self.failed.insert(step.object.clone());
                if let Some(index) = step.index {
                    let message = format!("waits for {} ({})", dep.on, dep.via);
                    let of = &self.bundle.sources[index].object;
                    self.set_state(
                        step.object.clone(),
                        of,
                        ObjectSyncState::Pending,
                        Some(message),
                    );
                }
                continue;
            }
            let Some(index) = step.index else {
                // A namespace the bundle lives in but does not contain.
                let ns = mapped_namespace(self.bundle.distribution, self.member, &step.object.name);
                work.push(Work::Namespace(step.object.clone(), ns));
                continue;
            };
            let source = &self.bundle.sources[index];
            let spec = &self.bundle.distribution.spec;
            match distribution::for_member(
                &source.object,
                self.bundle.owner(),
                self.member,
                &spec.overrides,
            ) {
                Ok(copy) => {
                    if let Some(copy) = self.placed(&step.object, source, copy) {
                        self.desired.insert(identity_of(&copy));
                        work.push(Work::Object(step.object.clone(), source, copy));
                    }
                }
                Err(e) => {
                    self.failed.insert(step.object.clone());
                    self.set_state(
                        step.object.clone(),
                        &source.object,
                        ObjectSyncState::Error,
                        Some(e.to_string()),
                    );
                }
            }
        }
        work
    }

    /// `work` without the copies a snapshot has quiesced on this member (each Pending, saying
    /// which snapshot holds it): applying one would undo the quiesce while volumes are cut.
    fn hold_quiesced(&mut self, work: Vec<Work<'a>>, memory: &MemberMemory) -> Vec<Work<'a>> {
        work.into_iter()
            .filter(|w| {
                let Work::Object(key, source, _) = w else {
                    return true;
                };
                let Some(snapshot) = memory.quiesced.get(key) else {
                    return true;
                };
                let message = format!(
                    "quiesced by namespace snapshot {snapshot}: synced once the snapshot resumes it"
                );
                self.set_state(
                    key.clone(),
                    &source.object,
                    ObjectSyncState::Pending,
                    Some(message),
                );
                false
            })
            .collect()
    }

    /// (kind, namespace, name) of `source`'s copy on this member, from the source and the
    /// member's namespace map: what the copy is called even when it cannot be made this sync.
    fn identity_here(&self, source: &Value) -> (String, Option<String>, String) {
        let (kind, namespace, name) = identity_of(source);
        let namespace =
            namespace.map(|ns| mapped_namespace(self.bundle.distribution, self.member, &ns));
        (kind, namespace, name)
    }

    /// The copy with this member's replicas when a TrafficPolicy places it; `None` (and the
    /// object Pending) when no member serves, so every member keeps the replicas it has.
    fn placed(&mut self, key: &ObjectKey, source: &Source, mut copy: Value) -> Option<Value> {
        match self.bundle.placement.get(key) {
            Some(Some(replicas)) => {
                copy["spec"]["replicas"] = replicas.get(self.member).copied().unwrap_or(0).into();
                Some(copy)
            }
            Some(None) => {
                let message = "no member serves in the TrafficPolicy: replicas stay where they are";
                self.set_state(
                    key.clone(),
                    &source.object,
                    ObjectSyncState::Pending,
                    Some(message.into()),
                );
                None
            }
            None => Some(copy),
        }
    }

    /// Labels of the member's existing objects, one list per kind and namespace, for the conflict
    /// policy (only for objects not already known to be ours). `None` when the member did not
    /// answer (then `unreachable` says why).
    async fn existing(&mut self, work: &[Work<'_>], memory: &MemberMemory) -> Option<Existing> {
        let mut existing: Existing = HashMap::new();
        // Per kind and namespace: its source, and the names of the copies to look for.
        let mut groups: BTreeMap<KindInNamespace, (&Source, Vec<String>)> = BTreeMap::new();
        for w in work {
            if let Work::Object(key, source, copy) = w
                && !memory.applied.contains_key(key)
            {
                let ns = copy["metadata"]["namespace"].as_str().map(str::to_owned);
                groups
                    .entry((group_id(&source.resource), ns))
                    .or_insert((source, Vec::new()))
                    .1
                    .push(key.name.clone());
            }
        }
        for ((plural, ns), (source, names)) in groups {
            let api = api_for(self.client, source, ns.as_deref());
            // Secrets one by one: the hub's distribution account may not list a member's Secrets.
            let found = if is_secret(
                str_of(&source.object["apiVersion"]),
                str_of(&source.object["kind"]),
            ) {
                found_by_name(&api, &names).await
            } else {
                api.list_metadata(&ListParams::default()).await.map(|list| {
                    list.items
                        .into_iter()
                        .map(|m| (m.name_any(), Found::of(&m.metadata)))
                        .collect()
                })
            };
            match found {
                Ok(labels) => {
                    existing.insert((plural, ns), labels);
                }
                Err(e) if is_transport(&e) => {
                    self.unreachable = Some(e.to_string());
                    return None;
                }
                // A namespace that does not exist yet, or a kind the member does not serve: the
                // apply reports it precisely.
                Err(_) => {}
            }
        }
        Some(existing)
    }

    /// Applies the tier's work, [`CONCURRENCY`] requests at a time.
    async fn apply(
        &self,
        work: Vec<Work<'_>>,
        existing: &Existing,
        memory: &MemberMemory,
    ) -> Vec<(ObjectKey, Result<Applied, ObjectDistributionStatus>)> {
        let force_params = PatchParams::apply(distribution::FIELD_MANAGER).force();
        let policy = self.bundle.distribution.spec.conflict_policy;
        // Boxed one by one (not through a closure) so the future stays Send for tokio::spawn.
        let mut applies = Vec::with_capacity(work.len());
        for w in work {
            let apply = apply_one(
                self.client,
                self.bundle.owner(),
                policy,
                existing,
                &memory.applied,
                &force_params,
                w,
            );
            applies.push(apply.boxed());
        }
        stream::iter(applies)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }

    /// Records what the applies did (in memory, in states and in progress) and returns the CRDs
    /// written, whose custom resources come in a later tier.
    fn record(
        &mut self,
        results: Vec<(ObjectKey, Result<Applied, ObjectDistributionStatus>)>,
        memory: &mut MemberMemory,
    ) -> Vec<String> {
        let mut crds = Vec::new();
        for (key, result) in results {
            match result {
                Ok(applied) => {
                    if let Applied::Written {
                        hash,
                        resource_version,
                        copy,
                    } = &applied
                    {
                        memory
                            .applied
                            .insert(key.clone(), (*hash, resource_version.clone()));
                        self.written.insert(written_kind(copy));
                        if let Some(secret) = written_secret(copy) {
                            self.written_secrets.insert(secret);
                        }
                        if key.kind == "CustomResourceDefinition" {
                            crds.push(key.name.clone());
                        }
                    }
                    let step = self.bundle.plan.steps.iter().find(|s| s.object == key);
                    if let Some(index) = step.and_then(|s| s.index) {
                        let of = &self.bundle.sources[index].object;
                        self.set_state(key, of, ObjectSyncState::Applied, None);
                        self.progress
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .applied += 1;
                    }
                }
                Err(status) => {
                    let unanswered = status.state == ObjectSyncState::Error
                        && status
                            .message
                            .as_deref()
                            .is_some_and(|m| m.starts_with(UNREACHABLE));
                    if unanswered {
                        self.unreachable = status.message.clone();
                    }
                    memory.applied.remove(&key);
                    self.failed.insert(key.clone());
                    self.states.insert(key, status);
                }
            }
        }
        crds
    }

    /// Waits until each CRD written serves its custom resources.
    async fn wait_established(&mut self, crds: Vec<String>) {
        for crd in crds {
            if let Err(e) = established(self.client, &crd).await {
                self.unreachable.get_or_insert(e);
            }
        }
    }

    fn outcome(self) -> MemberOutcome {
        let applied = self
            .states
            .values()
            .filter(|s| s.state == ObjectSyncState::Applied)
            .count();
        let complete = self.unreachable.is_none()
            && self
                .states
                .values()
                .all(|s| s.state == ObjectSyncState::Applied);
        let total = self.total;
        let objects: Vec<ObjectDistributionStatus> = self
            .states
            .into_values()
            .filter(|s| total <= LIST_APPLIED_UP_TO || s.state != ObjectSyncState::Applied)
            .collect();
        MemberOutcome {
            status: MemberDistributionStatus {
                member: self.member.to_owned(),
                total,
                applied: u32::try_from(applied).unwrap_or(u32::MAX),
                message: self.unreachable.clone().map(|why| {
                    format!(
                        "{why}; retrying with backoff, nothing on the member is deleted meanwhile"
                    )
                }),
                last_sync_time: Some(Time(Timestamp::now())),
                objects,
                written: self.written.into_iter().collect(),
                written_secrets: self.written_secrets.into_iter().collect(),
            },
            unreachable: self.unreachable.is_some(),
            complete,
        }
    }
}

/// (kind, namespace, name) of a copy.
fn identity_of(copy: &Value) -> (String, Option<String>, String) {
    (
        copy["kind"].as_str().unwrap_or_default().to_owned(),
        copy["metadata"]["namespace"].as_str().map(str::to_owned),
        copy["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A Secret copy, by name.
fn written_secret(copy: &Value) -> Option<WrittenSecret> {
    is_secret(str_of(&copy["apiVersion"]), str_of(&copy["kind"])).then(|| WrittenSecret {
        namespace: copy["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .into(),
        name: copy["metadata"]["name"].as_str().unwrap_or_default().into(),
    })
}

pub(super) fn is_secret(api_version: &str, kind: &str) -> bool {
    api_version == "v1" && kind == "Secret"
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn written_kind(copy: &Value) -> WrittenKind {
    WrittenKind {
        api_version: copy["apiVersion"].as_str().unwrap_or_default().into(),
        kind: copy["kind"].as_str().unwrap_or_default().into(),
        namespace: copy["metadata"]["namespace"].as_str().map(str::to_owned),
    }
}

/// What the member's copy of one object tells a sync: whose it is, and whether a namespace
/// snapshot holds it quiesced.
#[derive(Debug, Clone, Default)]
struct Found {
    labels: BTreeMap<String, String>,
    quiesced_by: Option<String>,
}

impl Found {
    fn of(meta: &kube::core::ObjectMeta) -> Self {
        Self {
            labels: meta.labels.clone().unwrap_or_default(),
            quiesced_by: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(multicluster_core::keys::QUIESCED_BY))
                .cloned(),
        }
    }
}

/// The objects named `names` that exist, read one at a time.
async fn found_by_name(
    api: &Api<DynamicObject>,
    names: &[String],
) -> kube::Result<HashMap<String, Found>> {
    let mut found = HashMap::new();
    for name in names {
        if let Some(m) = api.get_metadata_opt(name).await? {
            found.insert(name.clone(), Found::of(&m.metadata));
        }
    }
    Ok(found)
}

/// Records in `memory` which copies of `work` the member holds quiesced by a snapshot, as
/// `existing` read them (the copies this runner has not applied: the others it follows by their
/// watch events): one quiesced is held, one resumed (or gone) is synced again.
fn remember_quiesced(work: &[Work<'_>], existing: &Existing, memory: &mut MemberMemory) {
    for w in work {
        let Work::Object(key, source, copy) = w else {
            continue;
        };
        if memory.applied.contains_key(key) {
            continue;
        }
        let ns = copy["metadata"]["namespace"].as_str().map(str::to_owned);
        let snapshot = existing
            .get(&(group_id(&source.resource), ns))
            .and_then(|m| m.get(&key.name))
            .and_then(|f| f.quiesced_by.clone());
        match snapshot {
            Some(snapshot) => {
                memory.quiesced.insert(key.clone(), snapshot);
            }
            None => {
                memory.quiesced.remove(key);
            }
        }
    }
}

/// A kind (its group id) in a namespace, or cluster-wide.
type KindInNamespace = (String, Option<String>);

type Existing = HashMap<KindInNamespace, HashMap<String, Found>>;

fn group_id(resource: &ApiResource) -> String {
    format!("{}.{}", resource.plural, resource.group)
}

/// Applies one object (or makes sure one namespace exists) as the conflict policy says.
async fn apply_one(
    client: &Client,
    owner: Owner<'_>,
    policy: multicluster_core::api::ConflictPolicy,
    existing: &Existing,
    memory: &HashMap<ObjectKey, (u64, String)>,
    force_params: &PatchParams,
    w: Work<'_>,
) -> (ObjectKey, Result<Applied, ObjectDistributionStatus>) {
    match w {
        Work::Namespace(key, ns) => {
            let result = ensure_namespace(client, &ns, owner.distribution).await;
            (key, result)
        }
        Work::Object(key, source, copy) => {
            let hash = hash_of(&copy);
            if memory.get(&key).is_some_and(|(h, _)| *h == hash) {
                return (key, Ok(Applied::Unchanged));
            }
            let ns = copy["metadata"]["namespace"].as_str().map(str::to_owned);
            let obj_name = copy["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let labels = if memory.contains_key(&key) {
                None
            } else {
                existing
                    .get(&(group_id(&source.resource), ns.clone()))
                    .and_then(|m| m.get(&obj_name))
                    .map(|f| &f.labels)
            };
            let api = api_for(client, source, ns.as_deref());
            let result = match distribution::decide(labels, owner, policy) {
                Action::Conflict(why) => Err(ObjectDistributionStatus {
                    object: reference_of(&copy),
                    state: ObjectSyncState::Conflict,
                    message: Some(why),
                }),
                Action::Apply => api
                    .patch(&obj_name, force_params, &Patch::Apply(&copy))
                    .await
                    .map(|o| Applied::Written {
                        hash,
                        resource_version: o.resource_version().unwrap_or_default(),
                        copy: copy.clone(),
                    })
                    .map_err(|e| failure(&copy, &e)),
                Action::Overwrite => overwrite(&api, &obj_name, &copy)
                    .await
                    .map(|resource_version| Applied::Written {
                        hash,
                        resource_version,
                        copy: copy.clone(),
                    })
                    .map_err(|e| failure(&copy, &e)),
            };
            (key, result)
        }
    }
}

enum Work<'a> {
    Namespace(ObjectKey, String),
    Object(ObjectKey, &'a Source, Value),
}

enum Applied {
    Unchanged,
    Written {
        hash: u64,
        resource_version: String,
        copy: Value,
    },
}

const UNREACHABLE: &str = "the member did not answer";

fn failure(copy: &Value, e: &kube::Error) -> ObjectDistributionStatus {
    let message = match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => format!("{UNREACHABLE}: {other}"),
    };
    ObjectDistributionStatus {
        object: reference_of(copy),
        state: ObjectSyncState::Error,
        message: Some(message),
    }
}

pub(super) fn mapped_namespace(distribution: &Distribution, member: &str, ns: &str) -> String {
    distribution
        .spec
        .overrides
        .iter()
        .filter(|o| o.member == member)
        .find_map(|o| o.namespace_map.get(ns))
        .cloned()
        .unwrap_or_else(|| ns.to_owned())
}

/// Creates a namespace the bundle's objects need when the member lacks it. It is never labelled as
/// a copy, so removing the Distribution never deletes a namespace (and what else lives in it).
async fn ensure_namespace(
    client: &Client,
    ns: &str,
    distribution: &str,
) -> Result<Applied, ObjectDistributionStatus> {
    let api: Api<Namespace> = Api::all(client.clone());
    let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
        "annotations": {"multicluster.dev/created-for-distribution": distribution}}});
    let result = match api.get_metadata_opt(ns).await {
        Ok(Some(_)) => return Ok(Applied::Unchanged),
        Ok(None) => match serde_json::from_value::<Namespace>(object.clone()) {
            Ok(namespace) => api
                .create(&PostParams::default(), &namespace)
                .await
                .map(|_| ()),
            Err(e) => {
                return Err(ObjectDistributionStatus {
                    object: reference_of(&object),
                    state: ObjectSyncState::Error,
                    message: Some(e.to_string()),
                });
            }
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Applied::Unchanged),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Applied::Unchanged),
        Err(e) => Err(failure(&object, &e)),
    }
}

/// Replaces the member's object with ours (dropping fields other managers set), or creates it.
async fn overwrite(
    api: &Api<DynamicObject>,
    name: &str,
    copy: &Value,
) -> Result<String, kube::Error> {
    let mut object: DynamicObject =
        serde_json::from_value(copy.clone()).map_err(kube::Error::SerdeError)?;
    match api.get_metadata_opt(name).await? {
        Some(current) => {
            object.metadata.resource_version = current.resource_version();
            let written = api.replace(name, &PostParams::default(), &object).await?;
            // Take ownership of the fields in the same step, so later applies are plain applies.
            let written = api
                .patch(
                    name,
                    &PatchParams::apply(distribution::FIELD_MANAGER).force(),
                    &Patch::Apply(copy),
                )
                .await
                .unwrap_or(written);
            Ok(written.resource_version().unwrap_or_default())
        }
        None => Ok(api
            .patch(
                name,
                &PatchParams::apply(distribution::FIELD_MANAGER).force(),
                &Patch::Apply(copy),
            )
            .await?
            .resource_version()
            .unwrap_or_default()),
    }
}

/// Waits (up to 30 s) until a CRD just applied is Established on the member.
async fn established(client: &Client, name: &str) -> Result<(), String> {
    use multicluster_core::cluster::{EstablishedError, wait_established};
    match wait_established(client, name, Duration::from_secs(30)).await {
        Ok(()) => Ok(()),
        Err(EstablishedError::Unanswered(e)) => Err(format!("{UNREACHABLE}: {e}")),
        Err(e @ EstablishedError::NotWithin { .. }) => Err(format!("{e} on the member")),
    }
}

/// The member sync against an in-process fake API server (`crate::testing`): the order writes
/// reach the member in, what an unreachable member keeps, conflicts with objects someone else
/// owns, and leftovers removed only from a member that answered. The fake plays the member's API
/// server only; it runs no controllers.
#[cfg(test)]
mod tests {
    use multicluster_core::api::DistributionSpec;
    use multicluster_core::keys;

    use super::*;
    use crate::testing::{FakeApi, Served};

    fn distribution(conflict_policy: &str) -> Distribution {
        let spec: DistributionSpec = serde_json::from_value(json!({
            "sources": [], "targets": {"members": ["member-1"]}, "conflictPolicy": conflict_policy
        }))
        .unwrap();
        Distribution::new("shop", spec)
    }

    /// A Deployment that mounts Secret `creds` and reads ConfigMap `settings`, in namespace `shop`
    /// (which the bundle does not contain), listed workload first to show that order is the plan's.
    fn bundle() -> Vec<Value> {
        vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                                "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}],
                                "containers": [{"name": "web", "image": "web:1",
                                    "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "settings", "namespace": "shop"}, "data": {"greeting": "hello"}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "creds", "namespace": "shop"}, "data": {"password": "b25l"}}),
        ]
    }

    fn sources(objects: &[Value]) -> Vec<Source> {
        objects
            .iter()
            .map(|o| {
                let (group, version) = o["apiVersion"]
                    .as_str()
                    .unwrap()
                    .split_once('/')
                    .unwrap_or(("", o["apiVersion"].as_str().unwrap()));
                let kind = o["kind"].as_str().unwrap();
                let plural = format!("{}s", kind.to_lowercase());
                Source {
                    object: o.clone(),
                    resource: ApiResource::from_gvk_with_plural(
                        &kube::api::GroupVersionKind::gvk(group, version, kind),
                        &plural,
                    ),
                    namespaced: true,
                }
            })
            .collect()
    }

    struct Run {
        outcome: MemberOutcome,
        memory: MemberMemory,
    }

    async fn sync_once(
        fake: &FakeApi,
        d: &Distribution,
        objects: &[Value],
        memory: MemberMemory,
        previous: Option<&MemberDistributionStatus>,
    ) -> Run {
        let plan = distribution::plan(objects, &[]).unwrap();
        let sources = sources(objects);
        let placement = Placement::new();
        let bundle = Bundle {
            distribution: d,
            hub: "hub-1",
            plan: &plan,
            sources: &sources,
            placement: &placement,
        };
        let mut memory = memory;
        let progress = Arc::new(Mutex::new(MemberDistributionStatus::default()));
        let outcome = sync(
            &fake.client(),
            "member-1",
            bundle,
            &mut memory,
            previous,
            progress,
        )
        .await;
        Run { outcome, memory }
    }

    /// The next pass after `previous`, with what it remembered and reported.
    async fn sync_again(fake: &FakeApi, d: &Distribution, objects: &[Value], previous: Run) -> Run {
        sync_once(
            fake,
            d,
            objects,
            previous.memory,
            Some(&previous.outcome.status),
        )
        .await
    }

    /// The status of the run's one object of `kind`.
    fn state_of(run: &Run, kind: &str) -> ObjectDistributionStatus {
        run.outcome
            .status
            .objects
            .iter()
            .find(|o| o.object.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {:#?}", run.outcome.status))
    }

    fn position(writes: &[String], path: &str) -> usize {
        writes
            .iter()
            .position(|w| w.ends_with(path))
            .unwrap_or_else(|| panic!("no write to {path} in {writes:#?}"))
    }

    #[tokio::test]
    async fn the_namespace_then_what_a_workload_uses_then_the_workload_reach_the_member() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let run = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        assert!(run.outcome.complete, "{:#?}", run.outcome.status);
        assert_eq!(
            (run.outcome.status.applied, run.outcome.status.total),
            (3, 3)
        );
        let writes = fake.writes();
        let namespace = position(&writes, "/api/v1/namespaces");
        let secret = position(&writes, "/namespaces/shop/secrets/creds");
        let config = position(&writes, "/namespaces/shop/configmaps/settings");
        let deployment = position(&writes, "/namespaces/shop/deployments/web");
        assert!(
            namespace < secret && secret < deployment && config < deployment,
            "{writes:#?}"
        );
        // Each copy carries the Distribution's label, so it can be found and removed later.
        let copy = fake.get("v1", "Secret", Some("shop"), "creds").unwrap();
        assert_eq!(copy["metadata"]["labels"][keys::DISTRIBUTION], "shop");
        // The namespace was created for the bundle, never labelled as a copy.
        let ns = fake.get("v1", "Namespace", None, "shop").unwrap();
        assert!(
            ns["metadata"]["labels"][keys::DISTRIBUTION].is_null(),
            "{ns}"
        );

        // Synced again with nothing changed: the member gets no write at all.
        let before = fake.writes().len();
        let again = sync_once(&fake, &d, &bundle(), run.memory, Some(&run.outcome.status)).await;
        assert!(again.outcome.complete);
        assert_eq!(fake.writes().len(), before, "{:#?}", fake.writes());
    }

    #[tokio::test]
    async fn an_unreachable_member_is_reported_as_such_and_nothing_is_deleted_on_it() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        fake.set_unreachable(true);
        // The bundle shrank while the member was away: its copies must stay until it answers.
        let smaller: Vec<Value> = bundle().into_iter().skip(1).collect();
        let run = sync_again(&fake, &d, &smaller, first).await;
        assert!(run.outcome.unreachable && !run.outcome.complete);
        let message = run.outcome.status.message.unwrap_or_default();
        assert!(
            message.contains("nothing on the member is deleted"),
            "{message}"
        );
        fake.set_unreachable(false);
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_some()
        );
        assert!(!fake.writes().iter().any(|w| w.starts_with("DELETE")));
    }

    #[tokio::test]
    async fn a_member_that_stops_answering_half_way_keeps_the_copies_that_left_the_bundle() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        // The settings change, and their write gets no answer; reads still do.
        fake.leave_unanswered(|method, _| method == http::Method::PATCH);
        let mut smaller: Vec<Value> = bundle().into_iter().skip(1).collect();
        smaller[0]["data"]["greeting"] = json!("bonjour");
        let run = sync_again(&fake, &d, &smaller, first).await;
        assert!(run.outcome.unreachable, "{:#?}", run.outcome.status);
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_some()
        );
        assert!(
            !fake.writes().iter().any(|w| w.starts_with("DELETE")),
            "{:#?}",
            fake.writes()
        );
    }

    #[tokio::test]
    async fn a_copy_that_left_the_bundle_is_removed_from_a_member_that_answers() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        let smaller: Vec<Value> = bundle().into_iter().skip(1).collect();
        let run = sync_again(&fake, &d, &smaller, first).await;
        assert!(run.outcome.complete, "{:#?}", run.outcome.status);
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_none()
        );
        assert!(fake.get("v1", "Secret", Some("shop"), "creds").is_some());
        assert!(fake.get("v1", "Namespace", None, "shop").is_some());
    }

    /// The Deployment stays in the bundle but cannot be made for member-1 this sync (an override
    /// replaces a field it does not have). It is not a leftover: the member keeps its copy, and
    /// nothing is deleted.
    #[tokio::test]
    async fn an_object_still_in_the_bundle_but_not_applied_this_sync_keeps_its_copy() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        assert!(first.outcome.complete, "{:#?}", first.outcome.status);
        let mut broken = d.clone();
        broken.spec.overrides = serde_json::from_value(json!([{
            "member": "member-1", "target": {"kind": "Deployment"},
            "jsonPatch": [{"op": "replace", "path": "/spec/strategy/type", "value": "Recreate"}]
        }]))
        .unwrap();
        let run = sync_again(&fake, &broken, &bundle(), first).await;
        let web = state_of(&run, "Deployment");
        assert_eq!(web.state, ObjectSyncState::Error, "{web:?}");
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_some(),
            "the copy of an object still in the bundle was deleted: {:#?}",
            fake.writes()
        );
        assert!(!fake.writes().iter().any(|w| w.starts_with("DELETE")));
    }

    /// A namespace snapshot has scaled the member's copy of the Deployment to 0 (annotated
    /// `quiesced-by`): a sync while it holds it does not write the Deployment (which would scale it
    /// back up while the volumes are cut), says why, and keeps the copy; the rest is synced.
    #[tokio::test]
    async fn a_copy_a_snapshot_has_quiesced_is_left_alone_until_it_is_resumed() {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        let mut changed = bundle();
        changed[0]["spec"]["replicas"] = json!(3);
        changed[1]["data"]["greeting"] = json!("bonjour");
        let web = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        let mut memory = first.memory;
        memory.quiesced.insert(web, "shop-1".into());
        let before = fake.writes().len();
        let run = sync_once(&fake, &d, &changed, memory, Some(&first.outcome.status)).await;
        let writes = fake.writes()[before..].to_vec();
        assert!(
            !writes.iter().any(|w| w.contains("/deployments/")),
            "{writes:#?}"
        );
        assert!(
            writes.iter().any(|w| w.ends_with("/configmaps/settings")),
            "{writes:#?}"
        );
        let state = state_of(&run, "Deployment");
        assert_eq!(state.state, ObjectSyncState::Pending);
        assert!(
            state.message.unwrap_or_default().contains("shop-1"),
            "says which snapshot holds it"
        );
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_some()
        );
    }

    /// A new runner (after a hub server restart, or on the next leader) remembers nothing: the
    /// member's copy, annotated by the snapshot that quiesced it, is what keeps it from being
    /// scaled back up under the snapshot.
    #[tokio::test]
    async fn a_copy_found_quiesced_on_the_member_is_left_alone_by_a_runner_that_did_not_see_it_happen()
     {
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        let mut quiesced = fake
            .get("apps/v1", "Deployment", Some("shop"), "web")
            .unwrap();
        quiesced["spec"]["replicas"] = json!(0);
        quiesced["metadata"]["annotations"] = json!({multicluster_core::keys::QUIESCED_BY: "shop-2", multicluster_core::keys::QUIESCED_REPLICAS: "1"});
        fake.insert(quiesced);
        let before = fake.writes().len();
        // A fresh memory, as after a restart; the previous status is all it has.
        let run = sync_once(
            &fake,
            &d,
            &bundle(),
            MemberMemory::default(),
            Some(&first.outcome.status),
        )
        .await;
        let writes = fake.writes()[before..].to_vec();
        assert!(
            !writes.iter().any(|w| w.contains("/deployments/")),
            "{writes:#?}"
        );
        let state = state_of(&run, "Deployment");
        assert_eq!(state.state, ObjectSyncState::Pending);
        assert!(state.message.unwrap_or_default().contains("shop-2"));
        let web = fake
            .get("apps/v1", "Deployment", Some("shop"), "web")
            .unwrap();
        assert_eq!(web["spec"]["replicas"], 0, "still quiesced");
    }

    /// One case of the property below: ConfigMaps `0..count` distributed, then a second sync
    /// from which those in `left` have left the bundle and whose copies of those in `broken`
    /// cannot be made (a failing override). Returns which copies the member holds afterwards.
    async fn copies_after(count: usize, left: &[usize], broken: &[usize]) -> Vec<usize> {
        let name = |i: usize| format!("c{i}");
        let objects = |which: &dyn Fn(usize) -> bool| -> Vec<Value> {
            (0..count)
                .filter(|i| which(*i))
                .map(|i| {
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name(i), "namespace": "shop"}, "data": {"i": i.to_string()}})
                })
                .collect()
        };
        let fake = FakeApi::new();
        let d = distribution("Abort");
        let first = sync_once(
            &fake,
            &d,
            &objects(&|_| true),
            MemberMemory::default(),
            None,
        )
        .await;
        let mut d2 = d.clone();
        d2.spec.overrides = broken
            .iter()
            .map(|i| {
                serde_json::from_value(json!({"member": "member-1",
                    "target": {"kind": "ConfigMap", "name": name(*i)},
                    "jsonPatch": [{"op": "test", "path": "/data/i", "value": "not this"}]}))
                .unwrap()
            })
            .collect();
        // Changed, so that every copy still in the bundle is applied again (or fails to be).
        let mut second = objects(&|i| !left.contains(&i));
        for o in &mut second {
            o["data"]["changed"] = json!("yes");
        }
        sync_once(
            &fake,
            &d2,
            &second,
            first.memory,
            Some(&first.outcome.status),
        )
        .await;
        (0..count)
            .filter(|i| {
                fake.get("v1", "ConfigMap", Some("shop"), &name(*i))
                    .is_some()
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Every object still in the bundle keeps its copy, whatever happens to it this sync (its
        /// override fails), and only the objects that left the bundle lose theirs.
        #[test]
        fn only_what_left_the_bundle_is_removed(
            count in 1usize..7,
            left_mask in 0u8..,
            broken_mask in 0u8..,
        ) {
            let left: Vec<usize> = (0..count).filter(|i| left_mask & (1 << i) != 0).collect();
            let broken: Vec<usize> = (0..count).filter(|i| broken_mask & (1 << i) != 0).collect();
            let held = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(copies_after(count, &left, &broken));
            let expected: Vec<usize> = (0..count).filter(|i| !left.contains(i)).collect();
            proptest::prop_assert_eq!(held, expected);
        }
    }

    #[tokio::test]
    async fn an_object_someone_else_made_is_a_conflict_and_holds_back_what_uses_it() {
        let fake = FakeApi::new();
        fake.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        fake.insert(json!({"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": "creds", "namespace": "shop"}, "data": {"password": "bWluZQ=="}}));
        let d = distribution("Abort");
        let run = sync_once(&fake, &d, &bundle(), MemberMemory::default(), None).await;
        assert!(!run.outcome.complete);
        let state = |name: &str| {
            run.outcome
                .status
                .objects
                .iter()
                .find(|o| o.object.name == name)
                .map(|o| o.state)
        };
        assert_eq!(state("creds"), Some(ObjectSyncState::Conflict));
        assert_eq!(state("web"), Some(ObjectSyncState::Pending));
        assert_eq!(state("settings"), Some(ObjectSyncState::Applied));
        // Theirs is untouched, and the workload that would mount it was not written.
        let theirs = fake.get("v1", "Secret", Some("shop"), "creds").unwrap();
        assert_eq!(theirs["data"]["password"], "bWluZQ==");
        assert!(
            fake.get("apps/v1", "Deployment", Some("shop"), "web")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_crd_is_established_before_its_custom_resources_are_written() {
        let fake = FakeApi::new();
        fake.serve(Served::new("example.com/v1", "Widget", "widgets", true));
        // Played: the API server's CRD controller, which marks a CRD Established once it serves.
        fake.react("CustomResourceDefinition", |crd| {
            crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
            Vec::new()
        });
        let objects = vec![
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
                   "metadata": {"name": "w", "namespace": "shop"}, "spec": {}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "widgets.example.com"},
                   "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
                            "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true}]}}),
        ];
        let plan = distribution::plan(&objects, &[]).unwrap();
        let mut sources = sources(&objects);
        sources[1].namespaced = false;
        sources[1].resource.plural = "customresourcedefinitions".into();
        let placement = Placement::new();
        let d = distribution("Abort");
        let bundle = Bundle {
            distribution: &d,
            hub: "hub-1",
            plan: &plan,
            sources: &sources,
            placement: &placement,
        };
        let outcome = sync(
            &fake.client(),
            "member-1",
            bundle,
            &mut MemberMemory::default(),
            None,
            Arc::new(Mutex::new(MemberDistributionStatus::default())),
        )
        .await;
        assert!(outcome.complete, "{:#?}", outcome.status);
        let requests = fake.requests();
        let crd = position(&requests, "/customresourcedefinitions/widgets.example.com");
        let checked = requests
            .iter()
            .rposition(|r| r.starts_with("GET") && r.ends_with("/widgets.example.com"))
            .unwrap();
        let widget = position(&requests, "/namespaces/shop/widgets/w");
        assert!(crd < checked && checked < widget, "{requests:#?}");
    }
}
