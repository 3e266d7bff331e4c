//! Continuous mode's watches: the sources on the hub (any change re-syncs) and the copies on each
//! member (a change we did not make is drift).

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{Distribution, MemberCluster};
use multicluster_core::distribution::ObjectKey;
use multicluster_core::distribution::order::group_of;
use multicluster_core::keys;
use multicluster_core::members::join::Capability;
use tokio::sync::mpsc;

use super::Trigger;
use crate::members::MemberClients;

/// A kind in one namespace (or cluster-wide), on the hub (`member` None) or on a member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub member: Option<String>,
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespace: Option<String>,
}

/// The kinds and namespaces a Distribution's objects live in: `(resource, namespaced, namespace)`.
pub type Kinds = Vec<(ApiResource, bool, Option<String>)>;

#[derive(Default)]
pub struct Watches {
    running: HashMap<Target, tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Watches {
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    pub fn clear(&mut self) {
        for (_, task) in self.running.drain() {
            task.abort();
        }
    }

    /// Starts the watches `distribution` needs over `kinds` and stops the others.
    pub async fn ensure(
        &mut self,
        hub: &Client,
        clients: &MemberClients,
        distribution: &Distribution,
        members: &[MemberCluster],
        kinds: &Kinds,
        tx: &mpsc::UnboundedSender<Trigger>,
    ) {
        let mut wanted: BTreeMap<Target, (ApiResource, bool)> = BTreeMap::new();
        for (resource, namespaced, ns) in kinds {
            let target = |member: Option<&str>, namespace: Option<String>| Target {
                member: member.map(str::to_owned),
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
                plural: resource.plural.clone(),
                namespace,
            };
            wanted.insert(target(None, ns.clone()), (resource.clone(), *namespaced));
            // The distribution account may get a member's Secrets by name but not list or watch
            // them (so the hub cannot read every Secret there): drift of a Secret copy is put
            // right by the full resync instead of within a second.
            if resource.api_version == "v1" && resource.kind == "Secret" {
                continue;
            }
            for member in members {
                let member_ns = ns.as_ref().map(|ns| {
                    super::member::mapped_namespace(distribution, &member.name_any(), ns)
                });
                wanted.insert(
                    target(Some(&member.name_any()), member_ns),
                    (resource.clone(), *namespaced),
                );
            }
        }
        self.running.retain(|t, task| {
            let keep = wanted.contains_key(t) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (target, (resource, namespaced)) in wanted {
            if self.running.contains_key(&target) {
                continue;
            }
            let client = match &target.member {
                None => hub.clone(),
                Some(name) => {
                    let Some(member) = members.iter().find(|m| m.name_any() == *name) else {
                        continue;
                    };
                    match clients
                        .get(
                            hub,
                            member,
                            Capability::Distribution,
                            Some(super::MEMBER_TIMEOUT),
                        )
                        .await
                    {
                        Ok(c) => c,
                        Err(_) => continue,
                    }
                }
            };
            let api: Api<DynamicObject> = match (&target.namespace, namespaced) {
                (Some(ns), true) => Api::namespaced_with(client, ns, &resource),
                _ => Api::all_with(client, &resource),
            };
            let task = tokio::spawn(watch_one(
                api,
                target.clone(),
                distribution.clone(),
                tx.clone(),
            ));
            self.running.insert(target, task);
        }
    }
}

async fn watch_one(
    api: Api<DynamicObject>,
    target: Target,
    distribution: Distribution,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    let config = match &target.member {
        // On the hub: any change of the kind where the sources live.
        None => watcher::Config::default(),
        // On a member: only our copies.
        Some(_) => watcher::Config::default().labels(&format!(
            "{}={}",
            keys::DISTRIBUTION,
            distribution.name_any()
        )),
    };
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let trigger = match (event, &target.member) {
            // After a (re)list nothing says what changed while we were not watching: sync.
            (Ok(watcher::Event::InitDone), _) => Some(Trigger::Sync),
            (Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)), None) => Some(Trigger::Sync),
            (Ok(watcher::Event::Apply(o)), Some(member)) => {
                Some(copy_trigger(&distribution, member, &o, true))
            }
            (Ok(watcher::Event::Delete(o)), Some(member)) => {
                Some(copy_trigger(&distribution, member, &o, false))
            }
            (Ok(_), _) => None,
            (Err(e), _) => {
                tracing::debug!(member = ?target.member, kind = %target.kind, error = %e, "watching");
                None
            }
        };
        if let Some(t) = trigger
            && tx.send(t).is_err()
        {
            return;
        }
    }
}

fn copy_trigger(
    distribution: &Distribution,
    member: &str,
    o: &DynamicObject,
    present: bool,
) -> Trigger {
    let types = o.types.clone().unwrap_or_default();
    // The hub's key of the copy: undo the member's namespace mapping.
    let namespace = o.namespace().map(|ns| {
        distribution
            .spec
            .overrides
            .iter()
            .filter(|ov| ov.member == member)
            .find_map(|ov| {
                ov.namespace_map
                    .iter()
                    .find(|(_, to)| **to == ns)
                    .map(|(from, _)| from.clone())
            })
            .unwrap_or(ns)
    });
    let last_manager = o
        .metadata
        .managed_fields
        .as_ref()
        .and_then(|fields| {
            fields
                .iter()
                .max_by(|a, b| {
                    a.time.as_ref().map(|t| t.0).cmp(&b.time.as_ref().map(|t| t.0)).then_with(|| {
                        // At the same second, believe the other manager: a missed drift is worse than
                        // a needless re-apply.
                        let ours = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
                            m.manager.as_deref() == Some(multicluster_core::distribution::FIELD_MANAGER)
                        };
                        ours(b).cmp(&ours(a))
                    })
                })
                .and_then(|m| m.manager.clone())
        });
    Trigger::Copy {
        member: member.to_owned(),
        key: ObjectKey {
            group: group_of(&types.api_version).to_owned(),
            kind: types.kind,
            namespace,
            name: o.name_any(),
        },
        resource_version: present.then(|| o.resource_version()).flatten(),
        last_manager,
        quiesced_by: present
            .then(|| {
                o.annotations()
                    .get(multicluster_core::keys::QUIESCED_BY)
                    .cloned()
            })
            .flatten(),
    }
}
