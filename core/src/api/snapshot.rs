use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{JsonPatchOperation, OverrideTarget, SecretRef};

/// Where namespace snapshots are saved: a filesystem path or an S3-compatible bucket.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "StorageLocation",
    namespaced,
    category = "multicluster",
    status = "StorageLocationStatus",
    validation = Rule::new("has(self.spec.filesystem) != has(self.spec.s3)").message("set exactly one of spec.filesystem or spec.s3"),
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.filesystem.path"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.s3.bucket"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StorageLocationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemLocation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemLocation {
    /// An absolute directory path (on the playground a local directory; in a cluster a mount).
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must be absolute"))]
    pub path: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or a MinIO URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey`.
    pub credentials_secret: SecretRef,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and most on-premise stores need.
    #[serde(default)]
    pub force_path_style: bool,
    /// PEM certificates trusted for the endpoint besides the system's roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageLocationStatus {
    /// `Available`: the last check wrote, read back and deleted a probe object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// The `multicluster.dev/check-requested` token the last check answered, so that
    /// `snapshot location check` knows its request was served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_request: Option<String>,
    /// The last sweep of the volume data no snapshot references any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_collection: Option<DataCollection>,
}

/// What a sweep of a location's volume data did: the chunks and indexes that no snapshot on the hub
/// references (those being deleted and failed ones do not count) and that are older than the hub
/// server's grace period are deleted; younger ones wait for the next sweep, since an export may be
/// about to reference them. Archives in the location are not read: a location belongs to one hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataCollection {
    pub time: Option<Time>,
    /// The `multicluster.dev/collect-requested` token this sweep answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Volume indexes the remaining snapshots reference.
    #[serde(default)]
    pub indexes_referenced: u64,
    /// Chunk objects kept: chunks of their own and packs of small chunks, each counting one.
    #[serde(default)]
    pub chunks_kept: u64,
    /// Stored (compressed) bytes of the chunk objects kept.
    #[serde(default)]
    pub bytes_kept: u64,
    /// Chunk objects removed (chunks and packs).
    #[serde(default)]
    pub chunks_removed: u64,
    #[serde(default)]
    pub bytes_removed: u64,
    #[serde(default)]
    pub indexes_removed: u64,
    /// Unreferenced chunks and indexes kept because they are younger than the grace period.
    #[serde(default)]
    pub waiting: u64,
    /// `true` when the sweep ran to the end; else `message` says why not, and the next one is
    /// tried within [`SWEEP_RETRY`](crate::snapshot::location::SWEEP_RETRY).
    #[serde(default)]
    pub swept: bool,
    /// Why the sweep did not run, or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A snapshot of one namespace of one member: its volumes (CSI snapshots) and its resources.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "NamespaceSnapshot",
    namespaced,
    shortname = "nss",
    category = "multicluster",
    status = "NamespaceSnapshotStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Resources","type":"integer","jsonPath":".status.resourceCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSnapshotSpec {
    /// Source `MemberCluster`.
    pub cluster: String,
    /// Source namespace on that member.
    pub namespace: String,
    /// `StorageLocation` (same namespace) the archive goes to.
    pub location: String,
    #[serde(default)]
    pub quiesce: QuiesceMethod,
    #[serde(default)]
    pub unsnapshottable_volumes: UnsnapshottablePolicy,
    /// Whether the volumes' data is copied to the location (`Export`, the default, for object
    /// store locations) or stays in the member's storage as CSI snapshots (`SnapshotsOnly`).
    #[serde(default)]
    pub volume_data: VolumeDataPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeDataPolicy {
    /// Each volume snapshot's files go to the location (a mover pod on the member reads them
    /// from a temporary claim made from the snapshot), so that a restore can hydrate a volume on
    /// any member, whatever its storage. A filesystem location is a directory on the hub server,
    /// which pods cannot reach: with one, the volumes stay `SnapshotsOnly` and the snapshot says so.
    #[default]
    Export,
    /// Only the CSI snapshots are recorded: a restore needs the member's storage (or one that
    /// shares it) to still hold them.
    SnapshotsOnly,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QuiesceMethod {
    /// Crash-consistent: snapshot without stopping anything.
    #[default]
    None,
    /// Scale the workloads that mount the volumes to 0, snapshot, scale back.
    ScaleDown,
    /// Run the pre/post hook commands named in pod annotations (`multicluster.dev/pre-hook-command`
    /// …, or Velero's `pre.hook.backup.velero.io/command` …) in the running pods of the namespace.
    Hooks,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnsnapshottablePolicy {
    /// A PVC whose driver has no VolumeSnapshotClass fails the snapshot.
    #[default]
    Fail,
    /// Such a PVC is recorded and skipped.
    Skip,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SnapshotPhase {
    #[default]
    Pending,
    Discovering,
    Quiescing,
    Snapshotting,
    /// The workloads are scaled back (or the post hooks run) once the last snapshot is cut; a
    /// snapshot found in this phase after a restart has its workloads put back first.
    Resuming,
    /// Mover pods copy the volume snapshots' files to the location.
    Exporting,
    Saving,
    Completed,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSnapshotStatus {
    #[serde(default)]
    pub phase: SnapshotPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSnapshotStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_count: Option<u32>,
    /// The applications captured (what a restore is checked against).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<ApplicationSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
    /// Each quiesce hook run (`Hooks` quiesce), with its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The outcome of one quiesce hook: a command run in a container of a pod of the namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookStatus {
    pub pod: String,
    pub container: String,
    /// `pre` (before the volume snapshots are cut) or `post` (after); empty for a pod whose hooks
    /// were skipped because it is not running.
    pub when: String,
    pub succeeded: bool,
    /// Why it failed, or the last of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    pub claim: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// The size a volume restored from the snapshot needs (from the CSI driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<String>,
    #[serde(default)]
    pub ready: bool,
    /// Why the claim has no volume snapshot (not bound, not snapshottable and skipped), or why
    /// its data was not exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The export of the volume's files to the location (`volumeData: Export`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<VolumeDataStatus>,
}

/// One volume's files moving between a member and the location: the mover pod's progress, and
/// what it moved once done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDataStatus {
    /// The volume's index in the location (`sha256` hex), once exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// File bytes read (export) or written (import) so far.
    #[serde(default)]
    pub bytes_done: u64,
    /// File bytes of the volume (holes not counted); 0 until the mover has listed the files.
    #[serde(default)]
    pub bytes_total: u64,
    /// Chunk bytes sent to (export: only those the location lacked) or read from the location,
    /// uncompressed.
    #[serde(default)]
    pub bytes_transferred: u64,
    #[serde(default)]
    pub files: u64,
    /// `true` once the mover finished.
    #[serde(default)]
    pub done: bool,
}

/// An application as the conflict check sees it: a workload's identity and what makes it that app.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSummary {
    pub kind: String,
    pub name: String,
    /// `app.kubernetes.io/name` and `app.kubernetes.io/instance`, when set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identity: BTreeMap<String, String>,
    /// Containers (init containers too) by name, with their image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub containers: BTreeMap<String, String>,
    /// Volume claims it uses (templates of a StatefulSet included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<String>,
    /// For a Service, claim or ConfigMap: what makes it that object (ports and selector; class
    /// and size; a digest of the data), as aspect → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aspects: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRef {
    /// e.g. `s3://bucket/prefix/ns-2026….tar.zst` or `file:///…`.
    pub url: String,
    /// `sha256:<hex>` of the whole archive.
    pub checksum: String,
    pub size_bytes: u64,
}

/// Snapshots of one namespace taken on a cron schedule, and the retention that deletes the
/// expired ones (their archives and volume snapshots with them; the location's chunks that no
/// remaining snapshot references go at the next sweep).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "SnapshotSchedule",
    namespaced,
    shortname = "nssched",
    category = "multicluster",
    status = "SnapshotScheduleStatus",
    // The snapshots it creates are named `<schedule>-<YYYYMMDDHHMMSS>` and labelled with the
    // schedule's name, which a label value bounds to 63 characters.
    validation = Rule::new("size(self.metadata.name) <= 48").message("a schedule's name has at most 48 characters"),
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.snapshot.cluster"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.snapshot.namespace"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleSpec {
    /// A cron expression in UTC: five fields (minute hour day-of-month month day-of-week, as a
    /// CronJob's) or six with seconds first; `@daily`, `@hourly`… too.
    #[schemars(length(min = 1, max = 100))]
    pub schedule: String,
    /// What each snapshot takes, as a `NamespaceSnapshot`'s spec.
    pub snapshot: NamespaceSnapshotSpec,
    /// Which of its completed snapshots to keep; without it, all are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// No new snapshot while set (retention still applies).
    #[serde(default)]
    pub suspend: bool,
}

/// Which completed snapshots of a schedule stay, as restic's `forget` keeps them: a snapshot stays
/// when any rule keeps it. The newest failed snapshot stays while no completed one is newer (so
/// that its message can be read); older failed ones go. Snapshots still running always stay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.keepLast) ? self.keepLast : 0) + (has(self.keepDaily) ? self.keepDaily : 0) + (has(self.keepWeekly) ? self.keepWeekly : 0) > 0").message("keep at least one snapshot: set keepLast, keepDaily or keepWeekly"))]
pub struct Retention {
    /// The N newest.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub keep_last: u32,
    /// The newest of each of the N latest days (UTC) that have one.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub keep_daily: u32,
    /// The newest of each of the N latest ISO weeks that have one.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub keep_weekly: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotScheduleStatus {
    /// The time of the last run the schedule came to (taken or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The snapshot the last run created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
    /// Its snapshots on the hub, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// What the last pass did or why it could not (a bad expression, a run skipped because the
    /// previous snapshot still runs, snapshots deleted by retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A restore of a snapshot into a namespace of a member, blocked at admission when that namespace
/// holds a conflicting application.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multicluster.dev",
    version = "v1alpha1",
    kind = "NamespaceRestore",
    namespaced,
    shortname = "nsr",
    category = "multicluster",
    status = "NamespaceRestoreStatus",
    printcolumn = r#"{"name":"Snapshot","type":"string","jsonPath":".spec.snapshot"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.targetCluster"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.targetNamespace"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRestoreSpec {
    /// `NamespaceSnapshot` (same namespace) to restore.
    pub snapshot: String,
    pub target_cluster: String,
    #[schemars(length(min = 1, max = 63))]
    pub target_namespace: String,
    /// JSON Patches applied to the restored objects (as a distribution's member overrides do),
    /// after their namespace is mapped to the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<RestoreTransform>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTransform {
    /// Only objects of this kind (and name); every object when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<OverrideTarget>,
    pub json_patch: Vec<JsonPatchOperation>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    #[default]
    Pending,
    Hydrating,
    Restoring,
    Completed,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRestoreStatus {
    #[serde(default)]
    pub phase: RestorePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<RestoreConflict>,
    /// Objects written to the target so far (claims and volume snapshots included).
    #[serde(default)]
    pub objects_written: u32,
    #[serde(default)]
    pub objects_total: u32,
    /// Objects the target refused, each with the API server's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RestoreObjectFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many times a hub server has started this restore. One that stopped half-way (a
    /// restart, a leader change, running out of memory) is started over, up to the hub server's
    /// `--restore-max-attempts`; then it fails instead of crashing every replica in turn.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// What the last removal of the restored objects did (`restore delete --with-objects`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<RestoreRemoval>,
    /// The claims hydrated from the location's copy of their data (restores into another member
    /// of a snapshot whose volume data was exported), with the mover's progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeHydrationStatus>,
}

/// One claim a restore fills from the location before any workload is written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeHydrationStatus {
    pub claim: String,
    pub data: VolumeDataStatus,
    /// Why hydrating it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The removal of what a restore wrote to its target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRemoval {
    /// The `multicluster.dev/remove-restored-objects` token this removal answers.
    pub request: String,
    /// Objects deleted from the target.
    #[serde(default)]
    pub removed: u32,
    /// Objects that stay, each with why (changed since by someone else, a refused delete, the
    /// namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<RestoreObjectFailure>,
    /// Why the removal could not run at all, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreObjectFailure {
    pub kind: String,
    pub name: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreConflict {
    pub kind: String,
    pub name: String,
    /// What differs, e.g. "image nginx:1.25 in shop-2, nginx:1.27 in the snapshot".
    pub reason: String,
}
