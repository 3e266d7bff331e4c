//! Intent-ID fencing in the hub server: the Intent cache the webhooks read ([`intents`]), the two
//! webhooks ([`admission`]) and the loop that records each rotation ([`epochs`]). The decisions
//! are `multicluster_core::fencing`.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use multicluster_core::fencing::IntentView;

pub mod admission;
pub mod epochs;
pub mod intents;

/// Where the fence looks up Intents: a watch-fed cache, and a live read before any denial.
pub trait IntentLookup: Send + Sync + std::fmt::Debug {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView>;
    /// Whether the cached view of this Intent may decide a write; when not, it is read live.
    fn is_fresh(&self, _namespace: &str, _name: &str) -> bool {
        true
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>>;
    /// The labels of one object, read live (metadata only): the object a `scale` write is for,
    /// which the review does not carry. `None` when it does not exist.
    fn labels_of<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>>;
}

impl IntentLookup for intents::Intents {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView> {
        intents::Intents::cached(self, namespace, name)
    }
    fn is_fresh(&self, namespace: &str, name: &str) -> bool {
        intents::Intents::is_fresh(self, namespace, name)
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>> {
        Box::pin(async move {
            intents::Intents::live(self, namespace, name)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn labels_of<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        Box::pin(async move {
            intents::Intents::labels_of(self, group, version, plural, namespace, name)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
