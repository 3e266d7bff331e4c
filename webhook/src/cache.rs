//! Watch-fed caches of hub objects, so that an admission review costs no API call.

use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// A store kept up to date by a watch of `api` in the background (with backoff on errors).
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
    watched_then(api, what, || {})
}

/// [`watched`], calling `changed` after the store has taken each change (so that whoever it
/// wakes reads the new state).
pub fn watched_then<K>(
    api: Api<K>,
    what: &'static str,
    changed: impl Fn() + Send + Sync + 'static,
) -> Store<K>
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
    tokio::spawn(async move {
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
    store
}
