//! The pods that move a volume's files between a member and an object store location
//! (`multicluster-webhook mover`, in the format of [`crate::snapshot::data`]), as the objects the
//! hub server creates on the member for one job, and what it reads back from them.
//!
//! A job is a Secret with the location's keys (created for the job, deleted after it: the keys
//! never sit on the member longer than one transfer), for an export a temporary claim made from the
//! volume snapshot, and the mover pod. The pod runs with no Kubernetes credential at all
//! (`automountServiceAccountToken: false`): it can reach the location and nothing else. It runs as
//! root with only the capabilities that reading and writing other users' files with their owners
//! take (`CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID`: all in Pod Security's baseline).
//!
//! The pod reports as pods do: its progress as JSON lines on its output (read with `tailLines`),
//! and its result (the mover's JSON, or its error) as its termination message, which the kubelet
//! keeps in the pod's status.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{NamespaceSnapshot, S3Location, SnapshotPhase, VolumeDataStatus};
use crate::snapshot::archive::sha256_hex;
use crate::snapshot::data::Moved;

/// Label on every object of an export: the snapshot it serves, as [`label_value`] of its name.
pub const EXPORT_LABEL: &str = "multicluster.dev/data-export";
/// Label on every object of an import: the restore it serves, as [`label_value`] of its name.
pub const IMPORT_LABEL: &str = "multicluster.dev/data-import";
/// Where the pod mounts the volume.
pub const VOLUME_MOUNT: &str = "/volume";
/// Where the pod mounts the job Secret's CA bundle (when the location has one).
pub const CA_MOUNT: &str = "/etc/multicluster-mover";
/// The job Secret's keys: the environment variables the mover reads them from.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
const CA_KEY: &str = "ca.pem";
/// Where the kubelet reads the termination message from (the Kubernetes default).
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The most of a termination message the kubelet keeps.
pub const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Which way a job moves data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// From a temporary claim made from `volume_snapshot` (mounted read-only) to the location.
    Export {
        volume_snapshot: String,
        /// The claim's size: the snapshot's restore size.
        size: String,
        storage_class: Option<String>,
        /// The index of this claim's data in the snapshot before ([`parent_index`]).
        parent: Option<String>,
    },
    /// From the location into the (empty) claim, as index `index` lists the files.
    Import { index: String },
}

/// One volume's transfer on a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub direction: Direction,
    /// The snapshot (export) or restore (import) this job serves.
    pub owner: String,
    pub namespace: String,
    /// The claim whose data moves (for an export, the snapshot's claim, not the temporary one).
    pub claim: String,
    /// The pod's, the Secret's and the temporary claim's name.
    pub name: String,
}

impl Job {
    pub fn export(
        owner: &str,
        namespace: &str,
        claim: &str,
        volume_snapshot: &str,
        size: &str,
        storage_class: Option<&str>,
        parent: Option<&str>,
    ) -> Self {
        Job {
            direction: Direction::Export {
                volume_snapshot: volume_snapshot.to_owned(),
                size: size.to_owned(),
                storage_class: storage_class.map(str::to_owned),
                parent: parent.map(str::to_owned),
            },
            owner: owner.to_owned(),
            namespace: namespace.to_owned(),
            claim: claim.to_owned(),
            name: job_name("export", owner, claim),
        }
    }

    pub fn import(owner: &str, namespace: &str, claim: &str, index: &str) -> Self {
        Job {
            direction: Direction::Import {
                index: index.to_owned(),
            },
            owner: owner.to_owned(),
            namespace: namespace.to_owned(),
            claim: claim.to_owned(),
            name: job_name("import", owner, claim),
        }
    }

    /// The claim the pod mounts.
    pub fn mounted_claim(&self) -> &str {
        match self.direction {
            Direction::Export { .. } => &self.name,
            Direction::Import { .. } => &self.claim,
        }
    }

    /// The label selector of every object of its snapshot's (or restore's) jobs.
    pub fn selector(&self) -> String {
        selector(
            matches!(self.direction, Direction::Export { .. }),
            &self.owner,
        )
    }

    fn metadata(&self) -> Value {
        let key = match self.direction {
            Direction::Export { .. } => EXPORT_LABEL,
            Direction::Import { .. } => IMPORT_LABEL,
        };
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": {
                key: label_value(&self.owner),
                "app.kubernetes.io/part-of": "kubectl-multicluster",
                "app.kubernetes.io/component": "data-mover"
            }
        })
    }
}

/// The parent of `claim`'s export in `snapshot`: its index in the newest completed snapshot of the
/// same namespace of the same member in the same location, if that one exported it. The mover
/// reads again only the files changed since, and looks for none of the parent's chunks.
pub fn parent_index<'a>(
    snapshots: &'a [NamespaceSnapshot],
    snapshot: &NamespaceSnapshot,
    claim: &str,
) -> Option<&'a str> {
    snapshots
        .iter()
        .filter(|s| {
            s.metadata.name != snapshot.metadata.name
                && s.metadata.deletion_timestamp.is_none()
                && s.spec.cluster == snapshot.spec.cluster
                && s.spec.namespace == snapshot.spec.namespace
                && s.spec.location == snapshot.spec.location
        })
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            let index = status
                .volumes
                .iter()
                .find(|v| v.claim == claim)?
                .data
                .as_ref()?
                .index
                .as_deref()?;
            (status.phase == SnapshotPhase::Completed)
                .then_some((status.completion_time.as_ref().map(|t| t.0), index))
        })
        .max_by_key(|(completed, _)| *completed)
        .map(|(_, index)| index)
}

/// The label selector of the export (or import) jobs of snapshot (or restore) `owner`.
pub fn selector(export: bool, owner: &str) -> String {
    let key = if export { EXPORT_LABEL } else { IMPORT_LABEL };
    format!("{key}={}", label_value(owner))
}

/// `<owner>-<claim>-<direction>-<hash>`, at most 63 characters (a DNS label, as a pod's hostname
/// is): the hash of the whole keeps two long names apart.
pub fn job_name(direction: &str, owner: &str, claim: &str) -> String {
    let hash = &sha256_hex(format!("{owner}/{claim}/{direction}").as_bytes())[..8];
    let mut stem = format!("{owner}-{claim}");
    stem.truncate(63 - direction.len() - hash.len() - 2);
    let stem = stem.trim_end_matches(['-', '.']);
    format!("{stem}-{direction}-{hash}")
}

/// A name as a label value (at most 63 characters): itself, or its start and a hash.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    let hash = &sha256_hex(name.as_bytes())[..8];
    let stem = name[..54].trim_end_matches(['-', '.']);
    format!("{stem}-{hash}")
}

/// The Secret the job's pod takes the location's keys (and CA bundle) from.
pub fn credentials_secret(
    job: &Job,
    access_key_id: &str,
    secret_access_key: &str,
    ca_bundle: Option<&str>,
) -> Value {
    let mut data = json!({ACCESS_KEY_ENV: access_key_id, SECRET_KEY_ENV: secret_access_key});
    if let Some(ca) = ca_bundle {
        data[CA_KEY] = ca.into();
    }
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": job.metadata(),
        "type": "Opaque",
        "immutable": true,
        "stringData": data
    })
}

/// An export's temporary claim: made from the volume snapshot, read by the pod, deleted after.
pub fn temporary_claim(job: &Job) -> Option<Value> {
    let Direction::Export {
        volume_snapshot,
        size,
        storage_class,
        ..
    } = &job.direction
    else {
        return None;
    };
    let source = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": volume_snapshot});
    let mut claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": job.metadata(),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "dataSource": source,
            "dataSourceRef": source
        }
    });
    if let Some(class) = storage_class {
        claim["spec"]["storageClassName"] = class.as_str().into();
    }
    Some(claim)
}

/// The image the mover pods run, and (on the playground) the host binary they run instead of its
/// entrypoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoverImage {
    pub image: String,
    /// The hub server binary on the node, with the host's C library (see
    /// [`crate::playground::run_from_host`]).
    pub host_binary: Option<String>,
}

/// The mover pod of `job`, for S3 location `s3`.
pub fn pod(job: &Job, s3: &S3Location, image: &MoverImage) -> Value {
    let mut args: Vec<String> = vec!["mover".into(), format!("--s3-bucket={}", s3.bucket)];
    if let Some(endpoint) = &s3.endpoint {
        args.push(format!("--s3-endpoint={endpoint}"));
    }
    args.push(format!("--s3-region={}", s3.region));
    if let Some(prefix) = &s3.prefix {
        args.push(format!("--s3-prefix={prefix}"));
    }
    if s3.force_path_style {
        args.push("--s3-path-style".into());
    }
    if s3.ca_bundle.is_some() {
        args.push(format!("--s3-ca-bundle={CA_MOUNT}/{CA_KEY}"));
    }
    args.push(format!("--message-file={TERMINATION_LOG}"));
    args.push("--progress".into());
    let read_only = match &job.direction {
        Direction::Export { parent, .. } => {
            args.extend(["export".into(), format!("--source={VOLUME_MOUNT}")]);
            args.extend(parent.iter().map(|p| format!("--parent={p}")));
            true
        }
        Direction::Import { index } => {
            args.extend([
                "import".into(),
                format!("--target={VOLUME_MOUNT}"),
                format!("--index={index}"),
            ]);
            false
        }
    };
    let key = |key: &str| json!({"name": key, "valueFrom": {"secretKeyRef": {"name": job.name, "key": key}}});
    let mut mounts =
        vec![json!({"name": "volume", "mountPath": VOLUME_MOUNT, "readOnly": read_only})];
    let mut volumes = vec![json!({"name": "volume",
        "persistentVolumeClaim": {"claimName": job.mounted_claim(), "readOnly": read_only}})];
    if s3.ca_bundle.is_some() {
        mounts.push(json!({"name": "ca", "mountPath": CA_MOUNT, "readOnly": true}));
        volumes.push(json!({"name": "ca", "secret": {"secretName": job.name,
            "items": [{"key": CA_KEY, "path": CA_KEY}]}}));
    }
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": job.metadata(),
        "spec": {
            "restartPolicy": "Never",
            // No Kubernetes credential: the pod moves files, it has nothing to ask the API.
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsUser": 0, "runAsGroup": 0},
            "containers": [{
                "name": "mover",
                "image": image.image,
                "args": args,
                "env": [key(ACCESS_KEY_ENV), key(SECRET_KEY_ENV)],
                "volumeMounts": mounts,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"memory": "1Gi"}},
                "terminationMessagePolicy": "File",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    // Read every file whatever its mode, and give written ones their owners,
                    // modes (setuid kept) and times.
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]}
                }
            }],
            "volumes": volumes
        }
    });
    if let Some(binary) = &image.host_binary {
        crate::playground::run_from_host(
            &mut pod["spec"],
            binary,
            &crate::playground::host_library_dirs(),
        );
    }
    pod
}

/// One line of the mover's progress output (`--progress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressLine {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The last progress line in `log` (a tail of the pod's output).
pub fn last_progress(log: &str) -> Option<ProgressLine> {
    log.lines()
        .rev()
        .find_map(|line| serde_json::from_str::<ProgressLine>(line.trim()).ok())
}

/// A finished transfer's line in a status.
pub fn data_status(moved: &Moved) -> VolumeDataStatus {
    VolumeDataStatus {
        index: Some(moved.index_digest.clone()).filter(|d| !d.is_empty()),
        bytes_done: moved.bytes,
        bytes_total: moved.bytes,
        bytes_transferred: moved.bytes_transferred,
        files: moved.files,
        done: true,
    }
}

/// Where a mover pod is, read from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not started yet, and why (unscheduled, its claim not bound, pulling the image).
    Waiting(String),
    Running,
    Succeeded(Moved),
    /// It will not succeed: its error, or what Kubernetes said (evicted, out of memory, an image
    /// that cannot be pulled).
    Failed(String),
}

/// Container waiting reasons that do not resolve by waiting.
const HOPELESS: &[&str] = &[
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// What a mover pod's status says.
pub fn outcome(pod: &Value) -> Outcome {
    let status = &pod["status"];
    let container = &status["containerStatuses"][0];
    let terminated = &container["state"]["terminated"];
    let message = terminated["message"]
        .as_str()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    match status["phase"].as_str().unwrap_or_default() {
        "Succeeded" => match message.map(serde_json::from_str::<Moved>) {
            Some(Ok(moved)) => Outcome::Succeeded(moved),
            _ => Outcome::Failed(
                "the mover exited without reporting what it moved (its termination message is not \
                 its result)"
                    .to_owned(),
            ),
        },
        "Failed" => Outcome::Failed(match message {
            Some(m) => m.to_owned(),
            None => {
                let said = [
                    status["reason"].as_str(),
                    status["message"].as_str(),
                    terminated["reason"].as_str(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
                match terminated["exitCode"].as_i64() {
                    Some(code) if said.is_empty() => format!("the mover exited with code {code}"),
                    _ if said.is_empty() => "the pod failed".to_owned(),
                    _ => said,
                }
            }
        }),
        "Running" => Outcome::Running,
        _ => {
            let waiting = &container["state"]["waiting"];
            if let Some(reason) = waiting["reason"].as_str() {
                let detail = waiting["message"].as_str().unwrap_or_default();
                let said = format!("{reason} {detail}").trim().to_owned();
                if HOPELESS.contains(&reason) {
                    return Outcome::Failed(said);
                }
                return Outcome::Waiting(said);
            }
            let unscheduled = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "PodScheduled" && c["status"] == "False");
            Outcome::Waiting(match unscheduled {
                Some(c) => format!(
                    "not scheduled: {}",
                    c["message"].as_str().unwrap_or("no reason given")
                ),
                None => "pending".to_owned(),
            })
        }
    }
}

/// Cuts `message` to what a termination message holds, on a character boundary.
pub fn termination_message(message: &str) -> &str {
    if message.len() <= TERMINATION_MESSAGE_MAX {
        return message;
    }
    let mut end = TERMINATION_MESSAGE_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(ca: bool) -> S3Location {
        S3Location {
            bucket: "snapshots".into(),
            endpoint: Some("https://10.1.0.1:9000".into()),
            region: "us-east-1".into(),
            prefix: Some("team-a".into()),
            credentials_secret: crate::api::SecretRef {
                name: "minio".into(),
            },
            force_path_style: true,
            ca_bundle: ca.then(|| "-----BEGIN CERTIFICATE-----".into()),
        }
    }

    fn export_job() -> Job {
        Job::export(
            "nightly",
            "shop",
            "data-db-0",
            "nightly-data-db-0",
            "1Gi",
            Some("fast"),
            Some("0f0f"),
        )
    }

    #[test]
    fn an_export_s_parent_is_the_claim_s_index_in_the_newest_completed_snapshot_of_its_place() {
        use crate::api::{NamespaceSnapshotStatus, VolumeSnapshotStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let snapshot = |name: &str, location: &str, phase, completed: i64, index: Option<&str>| {
            let mut s: NamespaceSnapshot = serde_json::from_value(json!({
                "apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceSnapshot",
                "metadata": {"name": name},
                "spec": {"cluster": "member-1", "namespace": "shop", "location": location}
            }))
            .unwrap();
            s.status = Some(NamespaceSnapshotStatus {
                phase,
                completion_time: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(completed).unwrap(),
                )),
                volumes: vec![VolumeSnapshotStatus {
                    claim: "data-db-0".into(),
                    data: index.map(|i| VolumeDataStatus {
                        index: Some(i.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
            s
        };
        let this = snapshot("now", "minio", SnapshotPhase::Exporting, 0, None);
        let all = [
            snapshot("old", "minio", SnapshotPhase::Completed, 100, Some("i-old")),
            snapshot(
                "newer",
                "minio",
                SnapshotPhase::Completed,
                200,
                Some("i-newer"),
            ),
            snapshot(
                "failed",
                "minio",
                SnapshotPhase::Failed,
                300,
                Some("i-failed"),
            ),
            snapshot(
                "elsewhere",
                "other",
                SnapshotPhase::Completed,
                400,
                Some("i-other"),
            ),
            snapshot("csi-only", "minio", SnapshotPhase::Completed, 500, None),
            this.clone(),
        ];
        assert_eq!(parent_index(&all, &this, "data-db-0"), Some("i-newer"));
        assert_eq!(parent_index(&all, &this, "data-db-1"), None);
        assert_eq!(parent_index(&all[2..], &this, "data-db-0"), None);
    }

    #[test]
    fn job_names_are_dns_labels_that_keep_long_names_apart() {
        let short = job_name("export", "nightly", "data-db-0");
        assert!(short.starts_with("nightly-data-db-0-export-"), "{short}");
        let long = "a".repeat(80);
        let (one, two) = (
            job_name("import", &long, "data-0"),
            job_name("import", &long, "data-1"),
        );
        assert!(one.len() <= 63 && two.len() <= 63, "{one} {two}");
        assert_ne!(one, two);
        assert!(
            one.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(label_value("nightly"), "nightly");
        assert_eq!(label_value(&long).len(), 63);
    }

    #[test]
    fn the_export_pod_mounts_the_temporary_claim_read_only_and_has_no_api_credential() {
        let job = export_job();
        let pod = pod(
            &job,
            &s3(true),
            &MoverImage {
                image: "registry/mover:v1".into(),
                host_binary: None,
            },
        );
        let spec = &pod["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
            job.name
        );
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["readOnly"],
            true
        );
        let c = &spec["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args[0], "mover");
        assert!(args.contains(&"--s3-endpoint=https://10.1.0.1:9000"));
        assert!(args.contains(&"--s3-prefix=team-a"));
        assert!(args.contains(&"--s3-path-style"));
        assert!(args.contains(&"--s3-ca-bundle=/etc/multicluster-mover/ca.pem"));
        assert_eq!(
            &args[args.len() - 3..],
            ["export", "--source=/volume", "--parent=0f0f"]
        );
        // The keys come from the job's Secret, never from the arguments.
        assert!(!args.iter().any(|a| a.contains("minio")));
        assert_eq!(c["env"][0]["valueFrom"]["secretKeyRef"]["name"], job.name);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert!(c.get("command").is_none(), "the image's entrypoint runs");
    }

    #[test]
    fn the_import_pod_writes_into_the_restored_claim_and_a_location_without_a_ca_mounts_none() {
        let job = Job::import("r1", "shop-restored", "data-db-0", "abc123");
        let pod = pod(&job, &s3(false), &MoverImage::default());
        let spec = &pod["spec"];
        assert_eq!(spec["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-db-0"
        );
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["readOnly"],
            false
        );
        let args = spec["containers"][0]["args"].as_array().unwrap();
        assert_eq!(args[args.len() - 1], "--index=abc123");
        assert!(temporary_claim(&job).is_none());
    }

    #[test]
    fn the_temporary_claim_is_made_from_the_volume_snapshot_at_its_restore_size() {
        let claim = temporary_claim(&export_job()).unwrap();
        assert_eq!(claim["spec"]["dataSource"]["name"], "nightly-data-db-0");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast");
        assert_eq!(claim["metadata"]["labels"][EXPORT_LABEL], "nightly");
        assert_eq!(
            export_job().selector(),
            "multicluster.dev/data-export=nightly"
        );
    }

    #[test]
    fn the_job_secret_holds_the_keys_and_the_ca_and_cannot_be_changed() {
        let secret = credentials_secret(&export_job(), "id", "key", Some("PEM"));
        assert_eq!(secret["stringData"][ACCESS_KEY_ENV], "id");
        assert_eq!(secret["stringData"][SECRET_KEY_ENV], "key");
        assert_eq!(secret["stringData"]["ca.pem"], "PEM");
        assert_eq!(secret["immutable"], true);
    }

    #[test]
    fn on_the_playground_the_pod_runs_the_host_binary() {
        let pod = pod(
            &export_job(),
            &s3(false),
            &MoverImage {
                image: "busybox".into(),
                host_binary: Some("/opt/multicluster-webhook".into()),
            },
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"][0], crate::playground::HOST_BINARY_MOUNT);
        assert_eq!(c["args"][0], "mover");
        assert_eq!(pod["spec"]["volumes"][0]["name"], "volume");
    }

    fn pod_status(status: Value) -> Value {
        json!({"status": status})
    }

    #[test]
    fn a_succeeded_pod_reports_what_it_moved_and_a_failed_one_its_error() {
        let moved = Moved {
            index_digest: "abc".into(),
            files: 3,
            bytes: 100,
            ..Default::default()
        };
        let done = pod_status(
            json!({"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {
            "exitCode": 0, "message": serde_json::to_string(&moved).unwrap()}}}]}),
        );
        assert_eq!(outcome(&done), Outcome::Succeeded(moved.clone()));
        assert_eq!(data_status(&moved).index.as_deref(), Some("abc"));
        let failed = pod_status(
            json!({"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
            "exitCode": 1, "message": "importing file db/pages: chunk 1f… is corrupt"}}}]}),
        );
        assert_eq!(
            outcome(&failed),
            Outcome::Failed("importing file db/pages: chunk 1f… is corrupt".into())
        );
        let silent = pod_status(
            json!({"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]}),
        );
        assert!(matches!(outcome(&silent), Outcome::Failed(_)));
    }

    #[test]
    fn an_evicted_or_out_of_memory_pod_fails_with_what_kubernetes_said() {
        let evicted = pod_status(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: ephemeral-storage."}));
        assert_eq!(
            outcome(&evicted),
            Outcome::Failed("Evicted: The node was low on resource: ephemeral-storage.".into())
        );
        let oom = pod_status(
            json!({"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
            "exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(outcome(&oom), Outcome::Failed("OOMKilled".into()));
    }

    #[test]
    fn a_pending_pod_waits_unless_its_image_can_never_run() {
        let unscheduled = pod_status(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "message": "0/3 nodes are available"}]}),
        );
        assert_eq!(
            outcome(&unscheduled),
            Outcome::Waiting("not scheduled: 0/3 nodes are available".into())
        );
        let pulling = pod_status(
            json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(
            outcome(&pulling),
            Outcome::Waiting("ContainerCreating".into())
        );
        let never = pod_status(
            json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
            "reason": "ErrImageNeverPull", "message": "image not present"}}}]}),
        );
        assert_eq!(
            outcome(&never),
            Outcome::Failed("ErrImageNeverPull image not present".into())
        );
    }

    #[test]
    fn progress_is_the_last_line_that_parses() {
        let log =
            "{\"bytesDone\":1,\"bytesTotal\":10}\nnoise\n{\"bytesDone\":5,\"bytesTotal\":10}\n";
        assert_eq!(
            last_progress(log),
            Some(ProgressLine {
                bytes_done: 5,
                bytes_total: 10
            })
        );
        assert_eq!(last_progress("nothing yet"), None);
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let long = "é".repeat(3000);
        let cut = termination_message(&long);
        assert!(cut.len() <= TERMINATION_MESSAGE_MAX);
        assert!(long.starts_with(cut));
    }
}
