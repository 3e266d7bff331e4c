//! What wakes the services loop for a member between its refreshes: a watch of the member's
//! ServiceExports and of the EndpointSlices its own endpointslice controller keeps. An event marks
//! the member changed and wakes the loop, which reads that member again at once, so a pod that
//! turns ready (or an export that appears) reaches every member's slices, and their clusterset
//! DNS, in one read and one round of writes instead of up to a refresh period later. Metadata
//! only: the loop reads the objects itself; the watch only says when.
//!
//! The watches are a fast path: the periodic refresh still reads every member, so a watch that
//! fails (a member that does not answer, a token that expired) delays changes by at most one
//! refresh. Each is restarted with a fresh client every [`FEED_LIFETIME`] (the hub renews its
//! tokens) and when its member's endpoint or credentials change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::MemberCluster;
use multicluster_core::members::join::Capability;
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use crate::members::connections::MemberClients;

/// How long a watch lives before it is started again with a fresh client.
pub const FEED_LIFETIME: Duration = Duration::from_secs(600);

struct Feed {
    /// What the watch was started for: the member's endpoint and credentials Secret.
    target: (String, String),
    started: Instant,
    _task: AbortOnDropHandle<()>,
}

/// Member → the Services it exports, (namespace, name), shared with the watches.
type Exported = Arc<Mutex<BTreeMap<String, BTreeSet<(String, String)>>>>;

/// The watches of every joined member, and the members they marked changed.
pub struct MemberFeeds {
    feeds: HashMap<String, Feed>,
    changed_members: Arc<Mutex<BTreeSet<String>>>,
    /// Member → the Services it exports (namespace, name), as the loop last read them: only their
    /// slices wake it (a pod restarting in kube-system is none of its business).
    exported: Exported,
    wake: Arc<Notify>,
}

impl MemberFeeds {
    /// Feeds that wake the loop through `wake`.
    pub fn new(wake: Arc<Notify>) -> Self {
        MemberFeeds {
            feeds: HashMap::new(),
            changed_members: Arc::default(),
            exported: Arc::default(),
            wake,
        }
    }

    /// What `member` exports now (read by the loop): the slices that matter.
    pub fn exported(&self, member: &str, services: BTreeSet<(String, String)>) {
        self.exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(member.to_owned(), services);
    }

    /// Starts a watch for every member in `clusters` that has none (or an outdated one) and stops
    /// those of members that left. A member whose client cannot be had now is tried again on the
    /// next call.
    pub async fn follow(
        &mut self,
        hub: &Client,
        clients: &MemberClients,
        clusters: &BTreeMap<String, MemberCluster>,
    ) {
        self.feeds.retain(|name, feed| {
            clusters
                .get(name)
                .is_some_and(|m| feed.target == target(m) && feed.started.elapsed() < FEED_LIFETIME)
        });
        for (name, member) in clusters {
            if self.feeds.contains_key(name) {
                continue;
            }
            match clients
                .get(
                    hub,
                    member,
                    Capability::Services,
                    Some(Duration::from_secs(10)),
                )
                .await
            {
                Ok(client) => {
                    let task = tokio::spawn(watch_member(
                        client,
                        name.clone(),
                        self.changed_members.clone(),
                        self.exported.clone(),
                        self.wake.clone(),
                    ));
                    self.feeds.insert(
                        name.clone(),
                        Feed {
                            target: target(member),
                            started: Instant::now(),
                            _task: AbortOnDropHandle::new(task),
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(member = %name, error = %format!("{e:#}"), "no watch of exports and endpoints yet");
                }
            }
        }
    }

    /// The members marked changed since the last call.
    pub fn take_changed(&self) -> BTreeSet<String> {
        let mut changed = self
            .changed_members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *changed)
    }
}

fn target(member: &MemberCluster) -> (String, String) {
    (
        member.spec.endpoint.clone(),
        member.spec.credentials_secret.name.clone(),
    )
}

/// Watches `member`'s ServiceExports and controller EndpointSlices until aborted; an export's
/// event, or a slice's of an exported Service (any slice while the exports are not known yet),
/// marks it changed and wakes the loop (the initial listing too: one extra read at the start).
async fn watch_member(
    client: Client,
    member: String,
    changed: Arc<Mutex<BTreeSet<String>>>,
    exported: Exported,
    wake: Arc<Notify>,
) {
    let exports = Api::<PartialObjectMeta<DynamicObject>>::all_with(
        client.clone(),
        &multicluster_core::services::mcs_api_resource("ServiceExport"),
    );
    let slices = Api::<PartialObjectMeta<EndpointSlice>>::all(client);
    let controller_slices = watcher::Config::default()
        .labels("endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io");
    // Each event as whether it matters: every export's does; a slice's only when its Service is
    // exported (or the exports are not known yet).
    let exports = watcher(exports, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|e| e.map(|_| true))
        .boxed();
    let member_name = member.clone();
    let slices = watcher(slices, controller_slices)
        .default_backoff()
        .touched_objects()
        .map(move |e| {
            e.map(|slice| {
                let service = slice.labels().get("kubernetes.io/service-name").cloned();
                let key = (
                    slice.namespace().unwrap_or_default(),
                    service.unwrap_or_default(),
                );
                exported
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&member_name)
                    .is_none_or(|services| services.contains(&key))
            })
        })
        .boxed();
    futures::stream::select(exports, slices)
        .for_each(|event| {
            match event {
                Ok(false) => {}
                Ok(true) => {
                    changed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(member.clone());
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::debug!(member = %member, error = %e, "watching exports and endpoints")
                }
            }
            async {}
        })
        .await;
}
