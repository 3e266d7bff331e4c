//! The Intents the fence checks against: a watch-fed in-memory store (so an admission review costs
//! no API call), with a live read as the fallback before any denial, because the watch may lag a
//! just-created or just-rotated Intent by a few milliseconds.

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use multicluster_core::api::Intent;
use multicluster_core::fencing::IntentView;

#[derive(Clone)]
pub struct Intents {
    store: Store<Intent>,
    client: Client,
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
    /// Starts watching every Intent; the returned store fills in the background.
    pub fn watch(client: Client) -> Self {
        let store = crate::cache::watched(Api::<Intent>::all(client.clone()), "Intents");
        Self { store, client }
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

    /// A live read, bypassing the watch.
    pub async fn live(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<IntentView>, kube::Error> {
        let api: Api<Intent> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.get_opt(name).await?.as_ref().and_then(view))
    }
}
