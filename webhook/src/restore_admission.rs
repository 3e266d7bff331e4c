//! `POST /validate/restore`: a `NamespaceRestore` is admitted only if its target namespace, read
//! live on the target member, holds no application that differs from the snapshot's
//! (`multicluster_core::snapshot::conflicts`). The I/O around that decision: the snapshot's
//! inventory from its status on the hub, the target's objects from the member.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use kube::api::{GroupVersionKind, ListParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use multicluster_core::api::{MemberCluster, NamespaceRestore, NamespaceSnapshot, SnapshotPhase};

use crate::admission::AppState;
use crate::members::MemberClients;

/// The kinds whose objects make up a namespace's application inventory.
const INVENTORY_KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("batch", "v1", "CronJob"),
    ("batch", "v1", "Job"),
    ("", "v1", "Service"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "ConfigMap"),
];

pub async fn validate_restore(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let proxy = state
        .proxy
        .as_ref()
        .map(|p| (p.hub.clone(), p.members.clone()));
    crate::admission::review(&state, "validate-restore", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create) {
            return response;
        }
        let Some((hub, members)) = proxy.as_ref() else {
            return response
                .deny("this hub server is not connected to a hub; it cannot check restores");
        };
        match check(hub, members, req).await {
            Ok(()) => response,
            Err(reason) => {
                tracing::info!(%reason, "restore denied");
                response.deny(reason)
            }
        }
    })
    .await
}

async fn check(
    hub: &Client,
    members: &MemberClients,
    req: &AdmissionRequest<DynamicObject>,
) -> Result<(), String> {
    let object = req
        .object
        .as_ref()
        .ok_or("the request carries no NamespaceRestore")?;
    let restore: NamespaceRestore =
        serde_json::from_value(serde_json::to_value(object).map_err(|e| e.to_string())?)
            .map_err(|e| format!("not a valid NamespaceRestore: {e}"))?;
    check_restore(
        hub,
        members,
        &req.namespace.clone().unwrap_or_default(),
        &restore,
    )
    .await
}

/// The check itself: `restore` (in `ns` on the hub) against its target namespace, read live. `Err`
/// is the denial, naming each conflict (or why the check could not be made).
pub async fn check_restore(
    hub: &Client,
    members: &MemberClients,
    ns: &str,
    restore: &NamespaceRestore,
) -> Result<(), String> {
    let spec = &restore.spec;
    // The snapshot (on the hub) and the target (on the member) are read at the same time: each
    // is a round trip of its own, and the admission review waits for the slower one only.
    let snapshot = async {
        Api::<NamespaceSnapshot>::namespaced(hub.clone(), ns)
            .get_opt(&spec.snapshot)
            .await
            .map_err(|e| format!("cannot read NamespaceSnapshot {ns}/{}: {e}; retry", spec.snapshot))?
            .ok_or_else(|| {
                format!(
                    "NamespaceSnapshot {} does not exist in {ns}: `kubectl multicluster snapshot list -n {ns}` shows the snapshots",
                    spec.snapshot
                )
            })
    };
    let target = async {
        let member = Api::<MemberCluster>::all(hub.clone())
            .get_opt(&spec.target_cluster)
            .await
            .map_err(|e| {
                format!(
                    "cannot read MemberCluster {}: {e}; retry",
                    spec.target_cluster
                )
            })?
            .ok_or_else(|| {
                format!(
                    "no member named {}: `kubectl multicluster list` shows the members",
                    spec.target_cluster
                )
            })?;
        async {
            let client = members.get(hub, &member, Some(Duration::from_secs(5))).await?;
            live_objects(&client, &spec.target_namespace, Freshness::WatchCache).await
        }
        .await
        .map_err(|e| {
            format!(
                "cannot check {}/{} for conflicting applications: {e:#}; the restore is refused until the member answers",
                spec.target_cluster, spec.target_namespace
            )
        })
    };
    let (snapshot, target) = futures::future::try_join(snapshot, target).await?;
    let status = snapshot.status.unwrap_or_default();
    if status.phase != SnapshotPhase::Completed {
        return Err(format!(
            "NamespaceSnapshot {} is {:?}, not Completed: only a completed snapshot can be restored",
            spec.snapshot, status.phase
        ));
    }
    let found = multicluster_core::snapshot::conflicts(
        &status.inventory,
        &multicluster_core::snapshot::inventory(&target),
        &spec.target_namespace,
    );
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found
        .iter()
        .map(|c| format!("{} {}: {}", c.kind, c.name, c.reason))
        .collect();
    Err(format!(
        "restoring {} into {}/{} would land on applications that differ from the snapshot: {}. \
         Restore into an empty or absent namespace, or remove these first",
        spec.snapshot,
        spec.target_cluster,
        spec.target_namespace,
        list.join("; ")
    ))
}

/// How current a read of the member must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Read through to etcd (a consistent read): what the restore re-checks just before writing.
    Consistent,
    /// Served from the API server's watch cache (`resourceVersion=0`), at most the watch's lag
    /// behind: enough for admission, which the restore's own consistent re-check backs up, and
    /// it spares etcd a range read of the whole namespace on every `NamespaceRestore` CREATE.
    WatchCache,
}

/// Every object of the inventory kinds in `namespace` on the member `client` reaches, with its
/// kind set (list items come without it). An absent namespace has none.
pub(crate) async fn live_objects(
    client: &Client,
    namespace: &str,
    freshness: Freshness,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let params = match freshness {
        Freshness::Consistent => ListParams::default(),
        Freshness::WatchCache => ListParams::default().match_any(),
    };
    let lists = INVENTORY_KINDS.iter().map(|(group, version, kind)| {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let (client, params) = (client.clone(), params.clone());
        async move {
            // Read as plain JSON: the inventory works on JSON, and a namespace of thousands of
            // objects is parsed once instead of into typed objects and back.
            let request = kube::core::Request::new(<DynamicObject as kube::Resource>::url_path(
                &resource,
                Some(namespace),
            ))
            .list(&params)?;
            let mut list: serde_json::Value = client.request(request).await?;
            let items = match list.get_mut("items").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(items)) => items,
                _ => Vec::new(),
            };
            anyhow::Ok(
                items
                    .into_iter()
                    .map(|mut v| {
                        v["kind"] = (*kind).into();
                        v
                    })
                    .collect::<Vec<_>>(),
            )
        }
    });
    let all = futures::future::try_join_all(lists).await?;
    Ok(all.into_iter().flatten().collect())
}
