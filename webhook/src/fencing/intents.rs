//! The Intents the fence checks against: a watch-fed in-memory store (so an admission review costs
//! no API call), with a live read as the fallback before any denial, because the watch may lag a
//! just-created or just-rotated Intent by a few milliseconds.
//!
//! A cached view is used only while it is fresh: the watch is synced (its last event was not an
//! error) and the Intent was confirmed (by a watch event or a live read) within [`FRESH_FOR`].
//! Otherwise the fence reads the Intent live. A watch that stalls without an error (a half-open
//! connection) would otherwise admit an old manager's writes for as long as it stalls; with the
//! bound, a busy Intent costs at most one live read per [`FRESH_FOR`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::Intent;
use multicluster_core::fencing::IntentView;

/// How long a cached Intent is trusted after it was last confirmed.
pub const FRESH_FOR: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Intents {
    store: Store<Intent>,
    client: Client,
    freshness: Arc<Freshness>,
}

/// When each Intent was last confirmed, and whether the watch is synced.
#[derive(Debug, Default)]
struct Freshness {
    synced: AtomicBool,
    confirmed: Mutex<HashMap<(String, String), Instant>>,
}

impl Freshness {
    fn confirm(&self, namespace: &str, name: &str) {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.to_owned(), name.to_owned()), Instant::now());
    }

    fn is_fresh(&self, namespace: &str, name: &str) -> bool {
        let confirmed = self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied();
        fresh(
            self.synced.load(Ordering::Acquire),
            confirmed,
            Instant::now(),
        )
    }
}

/// Whether a view confirmed at `confirmed` may decide a write at `now`.
fn fresh(synced: bool, confirmed: Option<Instant>, now: Instant) -> bool {
    synced && confirmed.is_some_and(|at| now.saturating_duration_since(at) < FRESH_FOR)
}

impl std::fmt::Debug for Intents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intents")
            .field("cached", &self.store.len())
            .finish()
    }
}

fn view(intent: &Intent) -> Option<IntentView> {
    Some(IntentView {
        namespace: intent.metadata.namespace.clone()?,
        name: intent.metadata.name.clone()?,
        intent_id: intent.spec.intent_id.clone(),
        holder: intent.spec.holder.clone(),
        epoch: intent.status.as_ref().map_or(0, |s| s.epoch),
    })
}

impl Intents {
    /// Starts watching every Intent; the returned store fills in the background, confirming each
    /// Intent an event touches.
    pub fn watch(client: Client) -> Self {
        let (store, writer) = reflector::store();
        let freshness = Arc::new(Freshness::default());
        let events = reflector::reflector(
            writer,
            watcher(
                Api::<Intent>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let feed = freshness.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        if matches!(event, watcher::Event::InitDone) {
                            feed.synced.store(true, Ordering::Release);
                        }
                        if let watcher::Event::Apply(i) | watcher::Event::InitApply(i) = &event {
                            feed.confirm(&i.namespace().unwrap_or_default(), &i.name_any());
                        }
                    }
                    Err(e) => {
                        // Until the relist is done, every write reads its Intent live.
                        feed.synced.store(false, Ordering::Release);
                        tracing::warn!(error = %e, "watching Intents");
                    }
                }
            }
        });
        Self {
            store,
            client,
            freshness,
        }
    }

    /// Whether the watch is synced (readiness follows it).
    pub fn synced(&self) -> bool {
        self.freshness.synced.load(Ordering::Acquire)
    }

    /// Whether the cached view of this Intent may decide a write.
    pub fn is_fresh(&self, namespace: &str, name: &str) -> bool {
        self.freshness.is_fresh(namespace, name)
    }

    /// Resolves once the first full list of Intents is in the store.
    pub async fn ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    pub fn cached(&self, namespace: &str, name: &str) -> Option<IntentView> {
        let key = ObjectRef::new(name).within(namespace);
        self.store.get(&key).and_then(|i| view(&i))
    }

    /// The labels of the object `plural` (of `group`/`version`) `name`, read live as metadata.
    pub async fn labels_of(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, kube::Error> {
        use kube::api::{ApiResource, DynamicObject};
        let resource = ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            },
            // Not part of the request path; metadata reads need only the plural.
            kind: String::new(),
            plural: plural.to_owned(),
        };
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        Ok(api
            .get_metadata_opt(name)
            .await?
            .map(|m| m.metadata.labels.unwrap_or_default()))
    }

    /// A live read, bypassing the watch; it confirms the Intent (a newer version than the cache
    /// holds is what the next writes are checked against anyway, through the next live read).
    pub async fn live(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<IntentView>, kube::Error> {
        let api: Api<Intent> = Api::namespaced(self.client.clone(), namespace);
        let read = api.get_opt(name).await?;
        let view = read.as_ref().and_then(view);
        // Confirmed only when the cache agrees with what was just read: otherwise the cache is
        // behind, and stays unconfirmed until its watch catches up.
        if view.is_some() && self.cached(namespace, name) == view {
            self.freshness.confirm(namespace, name);
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_decides_only_while_the_watch_is_synced_and_it_was_confirmed_lately() {
        let now = Instant::now();
        let just = now.checked_sub(Duration::from_secs(1));
        let long_ago = now.checked_sub(FRESH_FOR + Duration::from_secs(1));
        assert!(fresh(true, just, now));
        assert!(
            !fresh(false, just, now),
            "a watch that failed is not trusted"
        );
        assert!(
            !fresh(true, long_ago, now),
            "an old confirmation is not trusted"
        );
        assert!(
            !fresh(true, None, now),
            "an Intent never confirmed is not trusted"
        );
    }
}
