//! `POST /validate/restore`: a `NamespaceRestore` is admitted only if its target namespace, read
//! live on the target member, holds no application that differs from the snapshot's
//! (`multicluster_core::snapshot::conflicts`). The I/O around that decision: the snapshot's
//! inventory from its status on the hub, the target's objects from the member.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::{Api, Client};
use multicluster_core::api::{MemberCluster, NamespaceRestore, NamespaceSnapshot, SnapshotPhase};
use multicluster_core::members::join::Capability;

use super::target::{Freshness, live_objects};
use crate::admission::AdmissionError;
use crate::members::MemberClients;
use crate::metrics::Metrics;

/// What the restore check reads with: the hub and the connections to its members.
#[derive(Clone)]
pub struct RestoreCheck {
    pub hub: Client,
    pub members: MemberClients,
}

impl std::fmt::Debug for RestoreCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreCheck")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

pub async fn validate_restore(
    State(metrics): State<Arc<Metrics>>,
    State(check_with): State<Option<RestoreCheck>>,
    State(callers): State<Option<crate::server::AdmissionCallers>>,
    body: Bytes,
) -> Response {
    // Only a caller the TLS layer verified as the API server is told what differs (images,
    // digests); without `--admission-client-ca-file` anyone who reaches the port could ask.
    let detail = if callers.is_some() {
        Detail::Full
    } else {
        Detail::NamesOnly
    };
    crate::admission::review(&metrics, "validate-restore", &body, async |req| {
        let response = AdmissionResponse::from(req);
        if !matches!(req.operation, Operation::Create) {
            return response;
        }
        let Some(RestoreCheck { hub, members }) = check_with.as_ref() else {
            return response.deny(AdmissionError::NotConnected("check restores").to_string());
        };
        match check(hub, members, req, detail).await {
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
    detail: Detail,
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
        detail,
    )
    .await
}

/// How much a denial says about the target namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// What differs, object by object (images, digests): for the API server.
    Full,
    /// The conflicting objects' names only.
    NamesOnly,
}

/// The denial for `found` conflicts of restoring `spec` there.
fn denial(
    spec: &multicluster_core::api::NamespaceRestoreSpec,
    found: &[multicluster_core::api::RestoreConflict],
    detail: Detail,
) -> String {
    let list: Vec<String> = found
        .iter()
        .map(|c| match detail {
            Detail::Full => format!("{} {}: {}", c.kind, c.name, c.reason),
            Detail::NamesOnly => format!("{} {}", c.kind, c.name),
        })
        .collect();
    let withheld = match detail {
        Detail::Full => "",
        Detail::NamesOnly => {
            " (what differs is told only to an API server the hub server can verify: \
             see --admission-client-ca-file)"
        }
    };
    format!(
        "restoring {} into {}/{} would land on applications that differ from the snapshot: {}{withheld}. \
         Restore into an empty or absent namespace, or remove these first",
        spec.snapshot,
        spec.target_cluster,
        spec.target_namespace,
        list.join("; ")
    )
}

/// The check itself: `restore` (in `ns` on the hub) against its target namespace, read live. `Err`
/// is the denial, naming each conflict (or why the check could not be made).
pub async fn check_restore(
    hub: &Client,
    members: &MemberClients,
    ns: &str,
    restore: &NamespaceRestore,
    detail: Detail,
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
            let client = members
                .get(hub, &member, Capability::Snapshots, Some(Duration::from_secs(5))).await?;
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
    Err(denial(spec, &found, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use multicluster_core::api::{NamespaceRestoreSpec, RestoreConflict};

    #[test]
    fn a_caller_not_verified_as_the_api_server_is_told_names_only() {
        let spec: NamespaceRestoreSpec = serde_json::from_value(serde_json::json!({
            "snapshot": "s", "targetCluster": "m2", "targetNamespace": "shop"}))
        .unwrap();
        let found = [RestoreConflict {
            kind: "Deployment".into(),
            name: "web".into(),
            reason: "container web: image registry.example/web@sha256:abc in shop, web:1 in the snapshot".into(),
        }];
        let full = denial(&spec, &found, Detail::Full);
        assert!(full.contains("sha256:abc"), "{full}");
        let names = denial(&spec, &found, Detail::NamesOnly);
        assert!(names.contains("Deployment web"), "{names}");
        assert!(
            !names.contains("sha256") && !names.contains("registry.example"),
            "{names}"
        );
    }
}
