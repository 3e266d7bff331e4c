//! The one module of this crate that talks to an API server: two small mechanisms both programs
//! need and that decide nothing, so that each exists once. Resolving a kind to the API that serves
//! it, with a cache (discovery costs a request per kind), and waiting until a CRD just applied is
//! Established (its custom resources are served); and a cluster's ID.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::{DynamicObject, GroupVersionKind, TypeMeta};
use kube::discovery::{ApiResource, Scope};
use kube::{Api, Client};

/// The `GroupVersionKind` of an `apiVersion` and `kind` as written in a manifest.
pub fn gvk(
    api_version: &str,
    kind: &str,
) -> Result<GroupVersionKind, kube::core::gvk::ParseGroupVersionError> {
    GroupVersionKind::try_from(&TypeMeta {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })
}

/// A kind resolved to its API: where its objects live and whether they are namespaced.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Kind {
    /// The API of this kind's objects in `namespace`, or cluster-wide when the kind is not
    /// namespaced or no namespace is given.
    pub fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// Kinds resolved on one cluster, each asked of its API server once.
#[derive(Debug, Default)]
pub struct Kinds {
    resolved: HashMap<(String, String), Kind>,
}

/// Why a kind could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("{0:?} is not an apiVersion: {1}")]
    ApiVersion(String, kube::core::gvk::ParseGroupVersionError),
    #[error(transparent)]
    Discovery(#[from] kube::Error),
}

impl Kinds {
    /// The API serving `api_version`/`kind` on the cluster `client` reaches (from the cache after
    /// the first time).
    pub async fn resolve(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Kind, KindError> {
        let id = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.resolved.get(&id) {
            return Ok(found.clone());
        }
        let gvk =
            gvk(api_version, kind).map_err(|e| KindError::ApiVersion(api_version.to_owned(), e))?;
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
        let found = Kind {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.resolved.insert(id, found.clone());
        Ok(found)
    }
}

/// The cluster's ID: the UID of its `kube-system` namespace, which never changes while the cluster
/// lives and differs between clusters (the About API's `id.k8s.io` suggests the same).
pub async fn cluster_id(client: &Client) -> kube::Result<String> {
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_metadata("kube-system")
        .await?;
    Ok(namespace.metadata.uid.unwrap_or_default())
}

/// Why a CRD did not become Established.
#[derive(Debug, thiserror::Error)]
pub enum EstablishedError {
    #[error("CRD {name} was not Established within {}s", .within.as_secs())]
    NotWithin { name: String, within: Duration },
    /// The API server did not answer (transport, TLS, timeout), as opposed to answering "not yet".
    #[error("{0}")]
    Unanswered(kube::Error),
}

/// Waits until the CRD `name` is Established, reading it every 100 ms for up to `within`. An
/// answer that is not yet (absent, not Established, an API error) is waited out; no answer at all
/// ends the wait at once.
pub async fn wait_established(
    client: &Client,
    name: &str,
    within: Duration,
) -> Result<(), EstablishedError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match api.get_opt(name).await {
            Ok(Some(crd)) if is_established(&crd) => return Ok(()),
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(EstablishedError::Unanswered(e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(EstablishedError::NotWithin {
                name: name.to_owned(),
                within,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the CRD's `Established` condition is True.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_the_core_group_and_of_named_groups_parse() {
        let core = gvk("v1", "ConfigMap").expect("core group");
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = gvk("apps/v1", "Deployment").expect("apps");
        assert_eq!(
            (apps.group.as_str(), apps.kind.as_str()),
            ("apps", "Deployment")
        );
    }

    #[test]
    fn a_crd_is_established_only_when_its_condition_says_true() {
        let crd = |status: &str| -> CustomResourceDefinition {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                         "names": {"plural": "widgets", "kind": "Widget"}, "versions": []},
                "status": {"conditions": [{"type": "Established", "status": status,
                    "lastTransitionTime": "2026-12-04T10:00:00Z", "reason": "", "message": ""}]}
            }))
            .expect("crd")
        };
        assert!(is_established(&crd("True")));
        assert!(!is_established(&crd("False")));
    }
}
