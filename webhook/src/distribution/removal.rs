//! Taking a Distribution's copies off one member: the copies that left the bundle (during a sync),
//! or all of them (the member left the targets, or the Distribution is being deleted).
//!
//! Only copies labelled with this Distribution *and* this hub are touched. Namespaces are never
//! deleted (a namespace holds what others put there too): one that is itself a copy is unlabelled
//! instead. A CRD goes last, and only when none of its custom resources belongs to anyone else.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, stream};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    DeletionPolicy, ObjectDistributionStatus, ObjectReference, ObjectSyncState, WrittenKind,
    WrittenSecret,
};
use multicluster_core::cluster::Kinds;
use multicluster_core::distribution::{ObjectKey, Owner, order::group_of};
use multicluster_core::keys;
use serde_json::{Value, json};

use super::member::{Source, is_secret, is_transport};

/// (kind, namespace, name) of a copy on a member.
pub type Identity = (String, Option<String>, String);

/// What one removal pass did on a member.
#[derive(Debug, Default)]
pub struct Removed {
    /// Copies deleted (or, with `Orphan`, unlabelled).
    pub removed: usize,
    /// Copies that stay, each with why (a refused delete, a CRD whose custom resources others
    /// hold, a namespace).
    pub kept: BTreeMap<ObjectKey, ObjectDistributionStatus>,
    /// Set when the member stopped answering part way: what is left is removed on the next pass.
    pub unanswered: Option<String>,
}

impl Removed {
    /// Whether nothing is left to do on the member (kept namespaces and shared CRDs are final).
    pub fn finished(&self) -> bool {
        self.unanswered.is_none()
            && self
                .kept
                .values()
                .all(|k| k.state != ObjectSyncState::Error)
    }
}

/// Removes `owner`'s copies on the member behind `client`, except those in `keep`: deleted, or
/// unlabelled with `DeletionPolicy::Orphan`. Looks in every kind and namespace of `written`; a
/// Secret only by the names in `written_secrets` (the hub may not list a member's Secrets), which
/// forgets the names that are gone.
pub async fn remove_copies(
    client: &Client,
    owner: Owner<'_>,
    policy: DeletionPolicy,
    written: &BTreeSet<WrittenKind>,
    written_secrets: &mut BTreeSet<WrittenSecret>,
    keep: &BTreeSet<Identity>,
    sources: &[Source],
) -> Removed {
    let mut out = Removed::default();
    let mut served = Kinds::default();
    // CRDs last: their custom resources (ours among them) go first.
    let (crds, others): (Vec<&WrittenKind>, Vec<&WrittenKind>) = written
        .iter()
        .partition(|k| is_crd(&k.api_version, &k.kind));
    for kind in others.into_iter().chain(crds) {
        let Some(resource) = resource_of(client, kind, sources, &mut served).await else {
            // Not served any more: nothing of that kind is left to remove.
            continue;
        };
        let api = match (resource.1, &kind.namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource.0),
            _ => Api::all_with(client.clone(), &resource.0),
        };
        let copies = if is_secret(&kind.api_version, &kind.kind) {
            secret_copies(&api, owner, kind, written_secrets).await
        } else {
            api.list_metadata(&ListParams::default().labels(&owner.selector()))
                .await
                .map(|list| list.items)
        };
        let copies = match copies {
            Ok(copies) => copies,
            Err(e) if is_transport(&e) => {
                out.unanswered = Some(e.to_string());
                return out;
            }
            // A namespace that is gone, a kind the account may not list: nothing to find there.
            Err(_) => continue,
        };
        // Decided one by one (a CRD needs a look at its custom resources), removed concurrently.
        let mut removals = Vec::new();
        for item in copies {
            let identity = (kind.kind.clone(), item.namespace(), item.name_any());
            if keep.contains(&identity) {
                continue;
            }
            let copy = Doomed::of(kind, &item);
            if policy == DeletionPolicy::Delete && is_crd(&kind.api_version, &kind.kind) {
                match held_by_others(client, owner, &item.name_any()).await {
                    Ok(None) => {}
                    Ok(Some(why)) => {
                        out.kept.extend([copy.kept(why, ObjectSyncState::Applied)]);
                        continue;
                    }
                    Err(e) if is_transport(&e) => {
                        out.unanswered = Some(e.to_string());
                        return out;
                    }
                    Err(e) => {
                        let why = format!(
                            "kept: could not tell whether anyone else holds custom resources of it: {e}"
                        );
                        out.kept.extend([copy.kept(why, ObjectSyncState::Error)]);
                        continue;
                    }
                }
            }
            removals.push(copy);
        }
        let namespace = kind.kind == "Namespace" && kind.api_version == "v1";
        let api = &api;
        let results: Vec<(Doomed, kube::Result<()>)> =
            stream::iter(removals.into_iter().map(|copy| async move {
                let result = if policy == DeletionPolicy::Orphan || namespace {
                    unlabel(api, &copy.reference.name).await
                } else {
                    api.delete(&copy.reference.name, &DeleteParams::background())
                        .await
                        .map(|_| ())
                };
                (copy, result)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (copy, result) in results {
            match result {
                Ok(()) => {
                    out.removed += 1;
                    written_secrets.remove(&WrittenSecret {
                        namespace: copy.reference.namespace.clone().unwrap_or_default(),
                        name: copy.reference.name.clone(),
                    });
                    tracing::debug!(distribution = %owner.distribution, object = %copy.key, ?policy, "removed a copy");
                    if namespace && policy == DeletionPolicy::Delete {
                        let why =
                            "kept and unlabelled: a namespace holds what others put there too";
                        out.kept
                            .extend([copy.kept(why.to_owned(), ObjectSyncState::Applied)]);
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) if is_transport(&e) => {
                    out.unanswered = Some(e.to_string());
                }
                Err(e) => {
                    let why = format!("could not be removed: {e}");
                    out.kept.extend([copy.kept(why, ObjectSyncState::Error)]);
                }
            }
        }
        if out.unanswered.is_some() {
            return out;
        }
    }
    out
}

/// Requests in flight per member while removing.
const CONCURRENCY: usize = 32;

/// One copy to remove: its key (for status) and reference.
struct Doomed {
    key: ObjectKey,
    reference: ObjectReference,
}

impl Doomed {
    fn of(kind: &WrittenKind, item: &PartialObjectMeta<DynamicObject>) -> Self {
        Self {
            key: ObjectKey {
                group: group_of(&kind.api_version).to_owned(),
                kind: kind.kind.clone(),
                namespace: item.namespace(),
                name: item.name_any(),
            },
            reference: ObjectReference {
                api_version: kind.api_version.clone(),
                kind: kind.kind.clone(),
                name: item.name_any(),
                namespace: item.namespace(),
            },
        }
    }

    /// Its key and status when it stays on the member, and why.
    fn kept(self, why: String, state: ObjectSyncState) -> (ObjectKey, ObjectDistributionStatus) {
        let status = ObjectDistributionStatus {
            object: self.reference,
            state,
            message: Some(why),
        };
        (self.key, status)
    }
}

fn is_crd(api_version: &str, kind: &str) -> bool {
    kind == "CustomResourceDefinition" && api_version.starts_with("apiextensions.k8s.io/")
}

/// The API of a written kind: from the bundle when it is still there, else from the member.
async fn resource_of(
    client: &Client,
    kind: &WrittenKind,
    sources: &[Source],
    served: &mut Kinds,
) -> Option<(ApiResource, bool)> {
    if let Some(s) = sources.iter().find(|s| {
        s.object["apiVersion"] == kind.api_version.as_str()
            && s.object["kind"] == kind.kind.as_str()
    }) {
        return Some((s.resource.clone(), s.namespaced));
    }
    served
        .resolve(client, &kind.api_version, &kind.kind)
        .await
        .ok()
        .map(|found| (found.resource, found.namespaced))
}

/// Takes the owner's labels off a copy, which leaves it to whoever holds it now.
async fn unlabel(api: &Api<DynamicObject>, name: &str) -> kube::Result<()> {
    let patch =
        json!({"metadata": {"labels": {keys::DISTRIBUTION: Value::Null, keys::HUB: Value::Null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Why CRD `name` must stay on the member: a custom resource of it that is not `owner`'s. `None`
/// when every one left is ours (deleting the CRD deletes them with it).
async fn held_by_others(
    client: &Client,
    owner: Owner<'_>,
    name: &str,
) -> kube::Result<Option<String>> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let Some(crd) = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    let Some(version) = crd.spec.versions.iter().find(|v| v.served) else {
        return Ok(None);
    };
    let resource = ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind),
        &crd.spec.names.plural,
    );
    let theirs: Vec<PartialObjectMeta<DynamicObject>> =
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|o| !owner.owns(o.labels()))
            .collect();
    Ok(theirs.first().map(|first| {
        format!(
            "kept: {} custom resource(s) of it belong to others (first: {}{})",
            theirs.len(),
            first
                .namespace()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            first.name_any()
        )
    }))
}

/// `owner`'s Secret copies in `kind`'s namespace, read by name from what it wrote; names that are
/// gone or no longer ours are forgotten.
async fn secret_copies(
    api: &Api<DynamicObject>,
    owner: Owner<'_>,
    kind: &WrittenKind,
    written_secrets: &mut BTreeSet<WrittenSecret>,
) -> kube::Result<Vec<PartialObjectMeta<DynamicObject>>> {
    let namespace = kind.namespace.clone().unwrap_or_default();
    let mut copies = Vec::new();
    for secret in written_secrets.clone() {
        if secret.namespace != namespace {
            continue;
        }
        match api.get_metadata_opt(&secret.name).await? {
            Some(m) if owner.owns(m.labels()) => copies.push(m),
            _ => {
                written_secrets.remove(&secret);
            }
        }
    }
    Ok(copies)
}
