//! The status of an object the hub server works on for a while (a snapshot, a restore), written
//! at every step so that `kubectl multicluster … create` can follow it, and claimed by its first
//! write so that the work runs once.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    NamespaceRestoreStatus, NamespaceSnapshotStatus, RestorePhase, SnapshotPhase,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// A status with a phase and a message.
pub trait PhasedStatus: Serialize {
    type Phase;
    fn set(&mut self, phase: Self::Phase, message: String);
}

impl PhasedStatus for NamespaceSnapshotStatus {
    type Phase = SnapshotPhase;
    fn set(&mut self, phase: SnapshotPhase, message: String) {
        self.phase = phase;
        self.message = Some(message);
    }
}

impl PhasedStatus for NamespaceRestoreStatus {
    type Phase = RestorePhase;
    fn set(&mut self, phase: RestorePhase, message: String) {
        self.phase = phase;
        self.message = Some(message);
    }
}

/// The status of object `name` (of kind `K`, in `multicluster-system`) as the work goes.
#[derive(Debug)]
pub struct Progress<K, S> {
    api: Api<K>,
    name: String,
    pub status: S,
    last_write: tokio::time::Instant,
}

impl<K, S> Progress<K, S>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
    S: PhasedStatus,
{
    pub fn new(hub: &Client, name: &str, status: S) -> Self {
        Self {
            api: Api::namespaced(hub.clone(), SYSTEM_NAMESPACE),
            name: name.to_owned(),
            status,
            last_write: tokio::time::Instant::now(),
        }
    }

    /// Writes this run's first status only if the object is still as it was read
    /// (`resource_version`): a second run for the same object (a stale trigger, another replica)
    /// gets a conflict and backs off, so the work is never done twice at once.
    pub async fn claim(
        &mut self,
        resource_version: Option<String>,
        phase: S::Phase,
        message: String,
    ) -> Result<bool, kube::Error> {
        self.status.set(phase, message);
        let patch =
            json!({"metadata": {"resourceVersion": resource_version}, "status": self.status});
        match self.patch(patch).await {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn step(&mut self, phase: S::Phase, message: String) -> Result<(), kube::Error> {
        self.status.set(phase, message);
        self.write().await
    }

    pub async fn write(&mut self) -> Result<(), kube::Error> {
        self.patch(json!({ "status": self.status })).await
    }

    /// How long ago the status was last written.
    pub fn since_write(&self) -> Duration {
        self.last_write.elapsed()
    }

    async fn patch(&mut self, patch: serde_json::Value) -> Result<(), kube::Error> {
        self.last_write = tokio::time::Instant::now();
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
    }
}
