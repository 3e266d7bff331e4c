//! Watch-fed caches of hub objects, so that an admission review costs no API call.

use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::task::AbortOnDropHandle;

/// A store kept up to date by a watch of `api` in the background (with backoff on errors), for
/// the life of the process (the admission caches).
pub fn watched<K>(api: Api<K>, what: &'static str) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, feed) = watched_then(api, what, || {});
    feed.detach();
    store
}

/// A store kept up to date by a watch of `api`, calling `changed` after the store has taken each
/// change (so that whoever it wakes reads the new state). The watch runs while the returned
/// handle lives: a loop holds it, so its watches stop when the loop is aborted (the Lease lost)
/// instead of piling up with each new term.
pub fn watched_then<K>(
    api: Api<K>,
    what: &'static str,
    changed: impl Fn() + Send + Sync + 'static,
) -> (Store<K>, AbortOnDropHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let feed = tokio::spawn(async move {
        use futures::StreamExt;
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => changed(),
                    Err(e) => tracing::warn!(error = %e, "watching {what}"),
                }
                async {}
            })
            .await;
    });
    (store, AbortOnDropHandle::new(feed))
}
