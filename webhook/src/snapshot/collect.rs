//! The sweep of a location's volume data (Lease holder): the chunks and volume indexes no remaining
//! snapshot references go, once older than the grace period. A location is swept when it was never
//! swept, every `--data-collection-interval-seconds`, when a snapshot whose data was exported is
//! deleted (retention included: the hub server asks with `multicluster.dev/collect-requested`), and
//! when a user asks (`kubectl multicluster snapshot location collect`). What a sweep did is the
//! location's `status.lastCollection`.
//!
//! Two things keep a sweep from deleting what an export is about to reference. Exports of this hub
//! server hold the location's [`DataLocks`] for reading while they run, and a sweep holds it for
//! writing: they never overlap. An export started by a replica that has since lost the Lease shows
//! as a snapshot in phase `Exporting`, and the sweep waits for it to end. And nothing younger than
//! the grace period is deleted: an export uploads chunks before the index that names them, and the
//! index before its snapshot's status records it.
//!
//! Which keys go is `multicluster_core::snapshot::data::sweep`'s decision.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    DataCollection, NamespaceRestore, NamespaceSnapshot, SnapshotPhase, StorageLocation,
    VolumeDataPolicy,
};
use multicluster_core::snapshot::data::{self, DATA_PREFIX, Stored, index_key};
use multicluster_core::snapshot::location::{
    collection_due, restore_holding_data, same_store, sweep_interval,
};
use multicluster_core::{SYSTEM_NAMESPACE, keys};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::RwLock;

/// How often, and how carefully, locations are swept.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Between two sweeps of a location nobody asked for.
    pub interval: Duration,
    /// Unreferenced data younger than this stays.
    pub grace: Duration,
}

/// One lock per location, held for reading by the exports to it and for writing by its sweep.
#[derive(Clone, Debug, Default)]
pub struct DataLocks(Arc<Mutex<HashMap<String, Arc<RwLock<()>>>>>);

impl DataLocks {
    /// The lock of location `name`.
    pub fn of(&self, name: &str) -> Arc<RwLock<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(name.to_owned()).or_default().clone()
    }
}

/// Deletes at once.
const DELETING: usize = 16;

struct Ctx {
    hub: Client,
    settings: Settings,
    locks: DataLocks,
}

/// Sweeps every `StorageLocation` in the hub's namespace when due.
pub async fn run(hub: Client, settings: Settings, locks: DataLocks, run: crate::loops::Loop) {
    let api: Api<StorageLocation> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    let ctx = Arc::new(Ctx {
        hub,
        settings,
        locks,
    });
    crate::loops::run_controller(api, sweep_one, ctx, run).await;
}

async fn sweep_one(location: Arc<StorageLocation>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if let Some(wait) = collection_due(&location, Timestamp::now(), ctx.settings.interval) {
        return Ok(Action::requeue(wait));
    }
    let name = location.name_any();
    let lock = ctx.locks.of(&name);
    // An export at work answers at once (and the sweep is tried again within SWEEP_RETRY)
    // instead of holding `snapshot location collect` until it ends.
    let outcome = match lock.try_write() {
        Ok(_sweeping) => collect(&ctx.hub, &location, ctx.settings.grace).await,
        Err(_) => Ok(Outcome::Waiting(
            "an export to this location is at work; the sweep runs once it ends".to_owned(),
        )),
    };
    let collection = match outcome {
        Ok(Outcome::Swept(c)) => {
            tracing::info!(location = %name, removed = c.chunks_removed, bytes = c.bytes_removed,
                kept = c.chunks_kept, waiting = c.waiting, "volume data swept");
            c
        }
        Ok(Outcome::Waiting(why)) => DataCollection {
            message: Some(why),
            ..Default::default()
        },
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(location = %name, error = %message, "sweeping the volume data failed");
            DataCollection {
                message: Some(format!("the sweep failed: {message}")),
                ..Default::default()
            }
        }
    };
    let collection = DataCollection {
        time: Some(Time(Timestamp::now())),
        request: location.annotations().get(keys::COLLECT_REQUESTED).cloned(),
        ..collection
    };
    // The whole record replaced: a message of an earlier sweep must not stay beside this one's.
    let record = super::replacing(&collection, &["request", "message"]);
    Api::<StorageLocation>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": { "lastCollection": record } })),
        )
        .await?;
    // The request, if any, is now answered: the next sweep is due after the interval.
    Ok(Action::requeue(sweep_interval(
        &collection,
        ctx.settings.interval,
    )))
}

enum Outcome {
    Swept(DataCollection),
    /// Not swept, and why (an export another replica started is still at work).
    Waiting(String),
}

async fn collect(
    hub: &Client,
    location: &StorageLocation,
    grace: Duration,
) -> anyhow::Result<Outcome> {
    let name = location.name_any();
    // Another location on the same bucket and prefix (or directory) has snapshots this sweep
    // would not see: their chunks would look unreferenced.
    let locations = Api::<StorageLocation>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .list(&ListParams::default())
        .await
        .context("listing the StorageLocations")?
        .items;
    if let Some(twin) = locations
        .iter()
        .find(|l| l.name_any() != name && same_store(&l.spec, &location.spec))
    {
        return Ok(Outcome::Waiting(format!(
            "not swept: StorageLocation {} points at the same storage, and a sweep of one would \
             delete the other's data; give each location its own bucket or prefix",
            twin.name_any()
        )));
    }
    let all_snapshots: Vec<NamespaceSnapshot> =
        Api::<NamespaceSnapshot>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
            .list(&ListParams::default())
            .await
            .context("listing the NamespaceSnapshots")?
            .items;
    // A restore filling volumes from a snapshot deleted since it started reads chunks no
    // snapshot keeps referenced.
    let restores = Api::<NamespaceRestore>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .list(&ListParams::default())
        .await
        .context("listing the NamespaceRestores")?
        .items;
    if let Some(filling) = restore_holding_data(&name, &restores, &all_snapshots) {
        return Ok(Outcome::Waiting(format!(
            "restore {} may be filling volumes from a deleted snapshot's data here; the sweep \
             runs once it is past that",
            filling.name_any()
        )));
    }
    let snapshots: Vec<NamespaceSnapshot> = all_snapshots
        .into_iter()
        .filter(|s| s.spec.location == name && s.metadata.deletion_timestamp.is_none())
        .collect();
    let phase = |s: &NamespaceSnapshot| s.status.as_ref().map(|st| st.phase).unwrap_or_default();
    if let Some(busy) = snapshots.iter().find(|s| {
        phase(s) == SnapshotPhase::Exporting && s.spec.volume_data == VolumeDataPolicy::Export
    }) {
        return Ok(Outcome::Waiting(format!(
            "snapshot {} is exporting to this location; the sweep runs once it ends",
            busy.name_any()
        )));
    }
    // A failed snapshot has no archive: its data is no one's.
    let indexes: BTreeSet<String> = snapshots
        .iter()
        .filter(|s| phase(s) != SnapshotPhase::Failed)
        .flat_map(|s| s.status.iter().flat_map(|st| st.volumes.iter()))
        .filter_map(|v| v.data.as_ref().and_then(|d| d.index.clone()))
        .collect();
    let store = crate::snapshot::storage::open(hub, location).await?;
    let mut objects = BTreeSet::new();
    for index in &indexes {
        match store.head(&Path::from(index_key(index))).await {
            // Its data cannot be restored anyway; what it named is no one's.
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(location = %name, %index, "a snapshot's volume index is missing");
                continue;
            }
            Err(e) => return Err(e).context(format!("reading the volume index {index}")),
            Ok(_) => {}
        }
        let read = crate::snapshot::mover::read_index(store.as_ref(), index).await?;
        objects.extend(read.object_keys());
    }
    let stored = list_data(store.as_ref()).await?;
    let sweep = data::sweep(&stored, &indexes, &objects, Timestamp::now(), grace);
    futures::stream::iter(sweep.remove.clone())
        .map(|key| {
            let store = store.clone();
            async move {
                match store.delete(&Path::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e).context(format!("deleting {key}"))),
                }
            }
        })
        .buffer_unordered(DELETING)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Outcome::Swept(DataCollection {
        indexes_referenced: indexes.len() as u64,
        chunks_kept: sweep.chunks_kept,
        bytes_kept: sweep.bytes_kept,
        chunks_removed: sweep.chunks_removed,
        bytes_removed: sweep.bytes_removed,
        indexes_removed: sweep.indexes_removed,
        waiting: sweep.waiting,
        swept: true,
        ..Default::default()
    }))
}

/// Every object under the location's data prefix.
async fn list_data(store: &dyn ObjectStore) -> anyhow::Result<Vec<Stored>> {
    let prefix = Path::from(DATA_PREFIX.trim_end_matches('/'));
    store
        .list(Some(&prefix))
        .map(|meta| {
            let meta = meta.context("listing the location's volume data")?;
            Ok(Stored {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
                    .unwrap_or(Timestamp::MAX),
            })
        })
        .try_collect()
        .await
}

/// Asks for a sweep of `location` (after a snapshot whose data it holds was deleted). A failure
/// only delays the sweep to the next interval.
pub async fn request(hub: &Client, location: &str) {
    let token = Timestamp::now().as_millisecond().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {keys::COLLECT_REQUESTED: token}}});
    if let Err(e) = Api::<StorageLocation>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .patch(location, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(%location, error = %e, "could not ask for a sweep of the location's data");
    }
}
