//! The end of a Distribution's copies: on a member that left its targets (`--to` narrowed, a
//! selector no longer matching, `unjoin`), and everywhere when the Distribution is deleted (a
//! finalizer holds it until its copies, then the sources `distribute` stored, are gone).
//!
//! A member that does not answer is never taken for empty: it keeps its entry in status (what it
//! holds) and the work waits for it, unless the user released it (`distribute delete --force`).

use std::collections::{BTreeSet, HashMap};

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    DeletionPolicy, Distribution, MemberCluster, MemberDistributionStatus, WrittenKind,
};
use multicluster_core::cluster::Kinds;
use multicluster_core::distribution::Owner;
use multicluster_core::keys;
use multicluster_core::members::join::Capability;
use serde_json::{Value, json};

use super::member::{Source, mapped_namespace};
use super::removal;
use super::{Inputs, MEMBER_TIMEOUT, member_reachable, previous_statuses, read_sources};
use crate::members::MemberClients;

/// Whether `unjoin` is taking the member out of every Distribution.
pub fn leaving(member: &MemberCluster) -> bool {
    member.annotations().contains_key(keys::LEAVING)
}

pub fn holds_finalizer(distribution: &Distribution) -> bool {
    distribution
        .finalizers()
        .iter()
        .any(|f| f == keys::DISTRIBUTION_CLEANUP)
}

/// Adds the clean-up finalizer (the resourceVersion guards the list against a concurrent edit).
pub async fn hold(api: &Api<Distribution>, distribution: &Distribution) -> kube::Result<()> {
    let mut finalizers = distribution.finalizers().to_vec();
    finalizers.push(keys::DISTRIBUTION_CLEANUP.to_owned());
    set_finalizers(api, distribution, finalizers).await
}

/// Removes the clean-up finalizer: the API server then deletes the Distribution.
pub async fn release(api: &Api<Distribution>, distribution: &Distribution) -> kube::Result<()> {
    let finalizers = distribution
        .finalizers()
        .iter()
        .filter(|f| *f != keys::DISTRIBUTION_CLEANUP)
        .cloned()
        .collect();
    set_finalizers(api, distribution, finalizers).await
}

async fn set_finalizers(
    api: &Api<Distribution>,
    distribution: &Distribution,
    finalizers: Vec<String>,
) -> kube::Result<()> {
    let patch = json!({"metadata": {"finalizers": finalizers,
                                    "resourceVersion": distribution.resource_version()}});
    api.patch(
        &distribution.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Where one member stands after its copies were to go.
enum Left {
    /// Nothing of the Distribution's is left to remove there (or the user released it).
    Done,
    /// Still to do: the status that says what the member holds and why it waits.
    Pending(MemberDistributionStatus),
}

/// The departures of one sync: members whose copies are gone, and those still waited for.
#[derive(Default)]
pub struct Departures {
    pub finished: Vec<String>,
    pub pending: Vec<MemberDistributionStatus>,
}

/// Removes the copies of every member the last sync recorded that is no target now.
pub async fn departures(
    client: &Client,
    clients: &MemberClients,
    distribution: &Distribution,
    inputs: &Inputs,
    previous: &HashMap<String, MemberDistributionStatus>,
) -> Departures {
    let gone: Vec<&MemberDistributionStatus> = previous
        .values()
        .filter(|p| !inputs.targets.contains(&p.member))
        .collect();
    let leaves = gone.iter().map(|p| {
        let member = inputs.members.iter().find(|m| m.name_any() == p.member);
        let work = Departure {
            client,
            clients,
            distribution,
            hub: &inputs.hub,
            sources: &inputs.sources,
            why: "no longer a target",
            release_unreachable: false,
        };
        async move { (p.member.clone(), work.leave(member, p).await) }.boxed()
    });
    let mut out = Departures::default();
    for (member, left) in futures::future::join_all(leaves).await {
        match left {
            Left::Done => out.finished.push(member),
            Left::Pending(status) => out.pending.push(status),
        }
    }
    out
}

/// Tears a Distribution being deleted down: every member's copies, then the stored sources.
/// True when it may go (its finalizer removed).
pub async fn run(
    client: &Client,
    clients: &MemberClients,
    api: &Api<Distribution>,
    distribution: &Distribution,
    hub: &str,
) -> bool {
    let name = distribution.name_any();
    let members = match Api::<MemberCluster>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(distribution = %name, error = %e, "listing members for the deletion");
            return false;
        }
    };
    // The sources tell the kinds the copies are in, beside what status recorded; sources that
    // are gone already take nothing away.
    let sources = read_sources(client, distribution, &mut Kinds::default())
        .await
        .unwrap_or_default();
    let release_unreachable = distribution
        .annotations()
        .get(keys::RELEASE_UNREACHABLE)
        .is_some_and(|v| v == "true");
    let previous = previous_statuses(distribution);
    let leaves = previous.values().map(|p| {
        let member = members.iter().find(|m| m.name_any() == p.member);
        let work = Departure {
            client,
            clients,
            distribution,
            hub,
            sources: &sources,
            why: "the Distribution is being deleted",
            release_unreachable,
        };
        async move { work.leave(member, p).await }.boxed()
    });
    let pending: Vec<MemberDistributionStatus> = futures::future::join_all(leaves)
        .await
        .into_iter()
        .filter_map(|left| match left {
            Left::Done => None,
            Left::Pending(status) => Some(status),
        })
        .collect();
    let waiting = pending.len();
    let message = if waiting == 0 {
        "copies removed from every member; removing the stored sources".to_owned()
    } else {
        format!(
            "waiting for {waiting} member(s) to remove their copies (see status.members); \
             `kubectl multicluster distribute delete {name} --force` releases members that do not answer"
        )
    };
    write_deleting(api, distribution, message, pending).await;
    if waiting > 0 {
        return false;
    }
    match remove_sources(client, distribution).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(distribution = %name, error = %e, "removing the stored sources");
            write_deleting(
                api,
                distribution,
                format!("copies removed; the stored sources: {e:#}"),
                Vec::new(),
            )
            .await;
            false
        }
    }
}

/// Status while a Distribution is being deleted: `Synced=False`, reason `Deleting`.
async fn write_deleting(
    api: &Api<Distribution>,
    distribution: &Distribution,
    message: String,
    members: Vec<MemberDistributionStatus>,
) {
    let previous = distribution
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = multicluster_core::conditions::condition(
        &previous,
        "Synced",
        false,
        "Deleting",
        message,
        distribution.metadata.generation,
        Timestamp::now(),
    );
    super::write_status(
        api,
        &distribution.name_any(),
        json!({"conditions": [condition], "members": members}),
    )
    .await;
}

/// One member's departure from one Distribution.
struct Departure<'a> {
    client: &'a Client,
    clients: &'a MemberClients,
    distribution: &'a Distribution,
    hub: &'a str,
    sources: &'a [Source],
    /// Why the copies go, for status.
    why: &'static str,
    /// Whether a member that does not answer is let go as it is.
    release_unreachable: bool,
}

impl Departure<'_> {
    async fn leave(
        &self,
        member: Option<&MemberCluster>,
        previous: &MemberDistributionStatus,
    ) -> Left {
        let name = &previous.member;
        let distribution = self.distribution.name_any();
        let policy = self.distribution.spec.deletion_policy;
        let pending = |message: String, objects| {
            Left::Pending(MemberDistributionStatus {
                member: name.clone(),
                message: Some(message),
                objects,
                last_sync_time: previous.last_sync_time.clone(),
                ..previous.clone()
            })
        };
        let Some(member) = member else {
            // Unregistered without `unjoin`: the hub holds no credentials for it any more.
            tracing::warn!(%distribution, member = %name,
                "the member is no longer registered: its copies stay there (unjoin removes them first)");
            return Left::Done;
        };
        let unanswered = |why: String| {
            if self.release_unreachable {
                tracing::warn!(%distribution, member = %name, %why,
                    "released as it is (--force): its copies stay there");
                Left::Done
            } else {
                pending(
                    format!(
                        "{}; the member does not answer ({why}): its {} copies are removed when it answers",
                        self.why, previous.applied
                    ),
                    previous.objects.clone(),
                )
            }
        };
        if !member_reachable(member) {
            return unanswered("the hub's last health probe".into());
        }
        let client = match self
            .clients
            .get(
                self.client,
                member,
                Capability::Distribution,
                Some(MEMBER_TIMEOUT),
            )
            .await
        {
            Ok(client) => client,
            Err(e) => return unanswered(format!("no client for the member: {e:#}")),
        };
        let mut written: BTreeSet<WrittenKind> = previous.written.iter().cloned().collect();
        written.extend(self.source_kinds(name));
        let mut written_secrets = previous.written_secrets.iter().cloned().collect();
        let owner = Owner {
            distribution: &distribution,
            hub: self.hub,
        };
        let removed = removal::remove_copies(
            &client,
            owner,
            policy,
            &written,
            &mut written_secrets,
            &BTreeSet::new(),
            self.sources,
        )
        .await;
        tracing::info!(%distribution, member = %name, removed = removed.removed, ?policy, why = self.why, "copies removed");
        if let Some(why) = &removed.unanswered {
            return unanswered(why.clone());
        }
        if removed.finished() || self.release_unreachable {
            for kept in removed.kept.values() {
                tracing::info!(%distribution, member = %name, object = %format!("{} {}", kept.object.kind, kept.object.name),
                               why = kept.message.as_deref().unwrap_or_default(), "kept on the member");
            }
            return Left::Done;
        }
        let left = removed.kept.len();
        Left::Pending(MemberDistributionStatus {
            member: name.clone(),
            message: Some(format!(
                "{}; {left} copies could not be removed (see objects): retrying",
                self.why
            )),
            objects: removed.kept.into_values().collect(),
            written: written.into_iter().collect(),
            written_secrets: written_secrets.into_iter().collect(),
            ..Default::default()
        })
    }

    /// The kinds and namespaces the sources' copies have on `member`.
    fn source_kinds(&self, member: &str) -> Vec<WrittenKind> {
        self.sources
            .iter()
            .map(|s| WrittenKind {
                api_version: s.resource.api_version.clone(),
                kind: s.resource.kind.clone(),
                namespace: s.object["metadata"]["namespace"]
                    .as_str()
                    .filter(|_| s.namespaced)
                    .map(|ns| mapped_namespace(self.distribution, member, ns)),
            })
            .collect()
    }
}

/// Requests in flight on the hub while removing stored sources.
const SOURCES_IN_FLIGHT: usize = 32;

/// The hub objects `distribute` stored as this Distribution's sources (labelled `source-of` with
/// its name; a source anyone else made is never touched): deleted, or with `Orphan` unlabelled.
async fn remove_sources(client: &Client, distribution: &Distribution) -> anyhow::Result<()> {
    let name = distribution.name_any();
    let selector = format!("{}={name}", keys::SOURCE_OF);
    let mut kinds = Kinds::default();
    let mut seen = BTreeSet::new();
    for source in &distribution.spec.sources {
        let (api_version, kind, namespace) = match (&source.selector, &source.object) {
            (Some(s), _) => (&s.api_version, &s.kind, &s.namespace),
            (None, Some(o)) => (&o.api_version, &o.kind, &o.namespace),
            (None, None) => continue,
        };
        if !seen.insert((api_version.clone(), kind.clone(), namespace.clone())) {
            continue;
        }
        // A kind the hub no longer serves holds no sources.
        let Ok(found) = kinds.resolve(client, api_version, kind).await else {
            continue;
        };
        let api = found.api(client, namespace.as_deref());
        let stored = match api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list.items,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        let policy = distribution.spec.deletion_policy;
        let api = &api;
        let results: Vec<(String, kube::Result<()>)> =
            stream::iter(stored.into_iter().map(|item| async move {
                let name = item.name_any();
                let result = match policy {
                    DeletionPolicy::Delete => api
                        .delete(&name, &DeleteParams::background())
                        .await
                        .map(|_| ()),
                    DeletionPolicy::Orphan => {
                        let patch = json!({"metadata": {"labels": {keys::SOURCE_OF: Value::Null}}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(|_| ())
                    }
                };
                (name, result)
            }))
            .buffer_unordered(SOURCES_IN_FLIGHT)
            .collect()
            .await;
        for (source, result) in results {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    let at = namespace
                        .as_ref()
                        .map(|n| format!("{n}/{source}"))
                        .unwrap_or(source);
                    return Err(anyhow::anyhow!("{kind} {at}: {e}"));
                }
            }
        }
    }
    tracing::info!(distribution = %name, namespace = SYSTEM_NAMESPACE, "stored sources removed");
    Ok(())
}
