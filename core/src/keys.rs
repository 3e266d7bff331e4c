//! Annotation and label keys users see. All live under the `multicluster.dev/` prefix.

/// Carried by a write (annotation) to prove the writer holds the current intent. The hub's mutating
/// webhook never lets it be stored (it moves it to [`WRITTEN_WITH_INTENT_ID`]), so an object read back
/// and written again without it is a write that carries no intent ID.
pub const INTENT_ID: &str = "multicluster.dev/intent-id";
/// Stored on a managed object: the intent ID its last admitted write carried. Set only by the
/// mutating webhook, from [`INTENT_ID`] of that very request; removed when a request carries none.
pub const WRITTEN_WITH_INTENT_ID: &str = "multicluster.dev/written-with-intent-id";
/// Label on a managed resource naming the `Intent` that fences it.
pub const MANAGED_BY_INTENT: &str = "multicluster.dev/managed-by-intent";
/// Annotation holding the virtual IP handed out to a Service.
pub const VIP: &str = "multicluster.dev/vip";
/// Annotation holding the domain name that goes with the virtual IP.
pub const HOSTNAME: &str = "multicluster.dev/hostname";
/// Label on an object a `Distribution` copied to a member, naming that Distribution.
pub const DISTRIBUTION: &str = "multicluster.dev/distribution";
/// Label on a Distribution's copy on a member: the hub that wrote it (its cluster ID, the UID of
/// its `kube-system` namespace). Removal deletes only copies that carry both this and
/// [`DISTRIBUTION`], so two hubs distributing under one name never delete each other's copies.
pub const HUB: &str = "multicluster.dev/hub";
/// Finalizer the hub server puts on every Distribution it syncs: its copies (or, with
/// `deletionPolicy: Orphan`, their labels) and stored sources are removed before it goes.
pub const DISTRIBUTION_CLEANUP: &str = "multicluster.dev/distribution-cleanup";
/// Annotation on a Distribution being deleted (`distribute delete --force`): members that do not
/// answer are released as they are (their copies stay and are listed), instead of waited for.
pub const RELEASE_UNREACHABLE: &str = "multicluster.dev/release-unreachable";
/// Annotation on a `MemberCluster` that `unjoin` is removing: no Distribution targets it any
/// more, so each removes its copies there while the hub still holds the member's credentials.
pub const LEAVING: &str = "multicluster.dev/leaving";
/// Stored on a managed object by a write that carried the current intent ID: the holder of that ID
/// approves deleting the object. A DELETE carries no object, so it cannot carry an intent ID itself;
/// it is admitted only while this annotation equals the Intent's current ID.
pub const DELETE_APPROVED_INTENT_ID: &str = "multicluster.dev/delete-approved-intent-id";
/// Label on a Service asking for a virtual IP from the named `VipPool`. A label, not an annotation,
/// so the API server calls the webhook only for Services that ask.
pub const VIP_POOL: &str = "multicluster.dev/vip-pool";
/// Label on a hub object `kubectl multicluster distribute` stored as a source, naming its
/// Distribution (whose selectors find the sources by it).
pub const SOURCE_OF: &str = "multicluster.dev/source-of";
/// Annotation on a Distribution: when a sync was last asked for (`distribute` sets it on every
/// run, so an unchanged Distribution whose sources changed still syncs). The hub server echoes it in
/// `status.observedSyncRequest` once the sync it asked for is done.
pub const SYNC_REQUESTED: &str = "multicluster.dev/sync-requested";
/// Annotation on a stored source: a digest of what `distribute` stored, so an unchanged file is not
/// written again.
pub const SOURCE_HASH: &str = "multicluster.dev/source-hash";
/// Annotation on the hub's `ServiceImport` of a multi-cluster service: each serving member with how
/// many of its backend addresses the data planes list now, of how many it has
/// (`member-1=2/3,member-2=0/1`), for `kubectl multicluster vip list`.
pub const BACKENDS: &str = "multicluster.dev/backends";

/// Annotation on the hub's `ServiceImport` of a multi-cluster service whose exports disagree: the
/// Conflict condition's reasons and message as every export carries it
/// (`PortConflict: exports disagree: …`), for `kubectl multicluster services list`.
pub const CONFLICTS: &str = "multicluster.dev/conflicts";

/// Annotation on a `StorageLocation` asking the hub server to check it now; the value is a token
/// that the check copies into `status.lastCheckRequest` (`kubectl multicluster snapshot location
/// check` waits for it).
pub const CHECK_REQUESTED: &str = "multicluster.dev/check-requested";

/// Annotation on a `StorageLocation` asking the hub server to sweep its volume data now; the value
/// is a token the sweep copies into `status.lastCollection.request` (`kubectl multicluster
/// snapshot location collect` waits for it). The hub server sets it itself when it deletes a
/// snapshot whose data was exported.
pub const COLLECT_REQUESTED: &str = "multicluster.dev/collect-requested";

/// Label on the `NamespaceSnapshot`s a `SnapshotSchedule` created: the schedule's name.
pub const SCHEDULE_LABEL: &str = "multicluster.dev/schedule";

/// Annotations on a workload a `ScaleDown` snapshot scaled to 0: the snapshot, and the replicas to
/// put back. Recorded in the same write that scales it down, so that an interrupted snapshot can
/// always put it back.
pub const QUIESCED_BY: &str = "multicluster.dev/quiesced-by";
pub const QUIESCED_REPLICAS: &str = "multicluster.dev/quiesced-replicas";
/// Label on the CSI objects a snapshot or restore made, naming it (clean-up finds them by it).
pub const SNAPSHOT_LABEL: &str = "multicluster.dev/snapshot";
/// Annotation on every object a restore wrote: `<restore>` (the `NamespaceRestore` on the hub).
pub const RESTORED_BY: &str = "multicluster.dev/restored-by";
/// Annotation on a claim a restore filled from the location's copy of its data: the volume
/// index it was hydrated from (a restore started over does not fill it twice).
pub const HYDRATED_FROM: &str = "multicluster.dev/hydrated-from";
/// Annotation on a finished `NamespaceRestore` asking the hub server to remove what it wrote
/// (`restore delete --with-objects`); the value is a token the hub server echoes in
/// `status.removal.request` when it is done.
pub const REMOVE_RESTORED_OBJECTS: &str = "multicluster.dev/remove-restored-objects";

/// Annotation on the hub's Lease: the build of the hub server holding it
/// (`multicluster_core::versions::release`), which `kubectl multicluster version` shows.
pub const SERVER_VERSION: &str = "multicluster.dev/server-version";

/// The JSON Pointer (RFC 6901) of annotation `key` in an object, for JSON Patch operations: `~` and
/// `/` in the key escaped.
pub fn annotation_path(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}
