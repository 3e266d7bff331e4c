//! `kubectl multicluster snapshot …`: storage locations (`location add|list|check`). The hub
//! server does the work (it is where archives are written from); these commands create the
//! objects, ask, and wait for its answer.

pub mod restore;
pub mod schedule;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    FilesystemLocation, NamespaceSnapshot, NamespaceSnapshotSpec, QuiesceMethod, S3Location,
    SecretRef, SnapshotPhase, StorageLocation, StorageLocationSpec, UnsnapshottablePolicy,
    VolumeDataPolicy,
};
use multicluster_core::keys;
use multicluster_core::snapshot::location::AVAILABLE;
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a member's namespace (volumes and resources) to a storage location, following progress
    Create(CreateArgs),
    /// Every snapshot with its source, phase, objects and volumes
    #[command(visible_alias = "ls")]
    List,
    /// One snapshot in detail: volumes, applications, archive and checksum
    Show { name: String },
    /// Delete a snapshot with its archive and its volume snapshots
    Delete { name: String },
    /// Where snapshots are saved: add, list, check and sweep storage locations
    #[command(subcommand)]
    Location(LocationCommand),
    /// Snapshots taken on a cron schedule, and how many are kept
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The namespace to snapshot, on --cluster
    pub namespace: String,
    /// The member the namespace is on
    #[arg(long)]
    pub cluster: String,
    /// The StorageLocation to save to
    #[arg(long)]
    pub location: String,
    /// The snapshot's name (default: NAMESPACE-YYYYMMDDHHMMSS)
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub options: SnapshotOptions,
    /// Create the snapshot and return without waiting
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the snapshot to complete
    #[arg(long, default_value = "30m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

/// How a snapshot is taken: `snapshot create`'s and `snapshot schedule create`'s.
#[derive(Args, Debug)]
pub struct SnapshotOptions {
    /// How to quiesce the volumes: none (crash-consistent), scale-down (stop the workloads that
    /// mount them, all at once, and put them back when the last snapshot is cut), hooks (run the
    /// pre/post commands pods name in multicluster.dev/pre-hook-command… or Velero's annotations)
    #[arg(long, value_enum, default_value_t = Quiesce::None)]
    pub quiesce: Quiesce,
    /// Skip claims that cannot be snapshotted instead of failing
    #[arg(long)]
    pub skip_unsnapshottable: bool,
    /// export: copy each volume's files to the location too (an S3 location; mover pods on the
    /// member), so that a restore can fill volumes on any member; snapshots-only: keep only the
    /// CSI snapshots, in the member's storage
    #[arg(long, value_enum, default_value_t = VolumeData::Export)]
    pub volume_data: VolumeData,
}

impl SnapshotOptions {
    /// The spec of a snapshot of `namespace` on `cluster` to `location`, taken this way.
    pub fn spec(&self, cluster: &str, namespace: &str, location: &str) -> NamespaceSnapshotSpec {
        NamespaceSnapshotSpec {
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            location: location.to_owned(),
            quiesce: match self.quiesce {
                Quiesce::None => QuiesceMethod::None,
                Quiesce::ScaleDown => QuiesceMethod::ScaleDown,
                Quiesce::Hooks => QuiesceMethod::Hooks,
            },
            unsnapshottable_volumes: if self.skip_unsnapshottable {
                UnsnapshottablePolicy::Skip
            } else {
                UnsnapshottablePolicy::Fail
            },
            volume_data: match self.volume_data {
                VolumeData::Export => VolumeDataPolicy::Export,
                VolumeData::SnapshotsOnly => VolumeDataPolicy::SnapshotsOnly,
            },
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum VolumeData {
    Export,
    SnapshotsOnly,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Quiesce {
    None,
    ScaleDown,
    Hooks,
}

#[derive(Subcommand, Debug)]
pub enum LocationCommand {
    /// Add a storage location (a directory on the hub server, or an S3 bucket) and check it
    #[command(
        after_help = "S3 credentials: --secret names a Secret in multicluster-system with keys \
        accessKeyId and secretAccessKey; without it, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
        from your environment are stored in a new Secret storage-NAME (never on the command line)."
    )]
    Add(LocationAddArgs),
    /// Every storage location with where it points and the verdict of its last check
    #[command(visible_alias = "ls")]
    List,
    /// Ask the hub server to sweep the location's volume data now (the chunks and indexes no
    /// snapshot references, older than its grace period), and print what went
    Collect {
        name: String,
        /// How long to wait for the hub server's answer
        #[arg(long, default_value = "5m", value_parser = multicluster_core::duration::parse)]
        timeout: Duration,
    },
    /// Ask the hub server to write, read back and delete a probe object now, and print the verdict
    Check {
        name: String,
        /// How long to wait for the hub server's answer
        #[arg(long, default_value = "60s", value_parser = multicluster_core::duration::parse)]
        timeout: Duration,
    },
}

#[derive(Args, Debug)]
pub struct LocationAddArgs {
    pub name: String,
    /// A directory on the hub server (on the playground, a local directory)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["bucket"], required_unless_present = "bucket")]
    pub path: Option<PathBuf>,
    /// An S3 bucket
    #[arg(long)]
    pub bucket: Option<String>,
    /// The S3 endpoint (default: AWS); e.g. https://minio.example:9000
    #[arg(long, requires = "bucket")]
    pub endpoint: Option<String>,
    #[arg(long, requires = "bucket", default_value = "us-east-1")]
    pub region: String,
    /// Key prefix inside the bucket
    #[arg(long, requires = "bucket")]
    pub prefix: Option<String>,
    /// Path-style addressing (endpoint/bucket/key), as MinIO and most on-premise stores need
    #[arg(long, requires = "bucket")]
    pub force_path_style: bool,
    /// PEM file of a private CA to trust for the endpoint
    #[arg(long, value_name = "FILE", requires = "bucket")]
    pub ca_file: Option<PathBuf>,
    /// Existing Secret in multicluster-system with accessKeyId and secretAccessKey
    #[arg(long, requires = "bucket")]
    pub secret: Option<String>,
    /// Do not wait for the first check
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LocationRow {
    pub name: String,
    pub url: String,
    pub available: String,
    pub message: String,
    pub last_check: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct LocationTable(pub Vec<LocationRow>);

impl Tabular for LocationTable {
    fn headers(&self) -> Vec<&'static str> {
        vec!["name", "url", "available", "last check", "message"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.url.clone(),
                    r.available.clone(),
                    r.last_check.clone().unwrap_or_else(|| "-".to_owned()),
                    r.message.clone(),
                ]
            })
            .collect()
    }
}

fn location_row(location: &StorageLocation) -> LocationRow {
    let condition = location
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == AVAILABLE));
    LocationRow {
        name: location.name_any(),
        url: multicluster_core::snapshot::location::object_url(&location.spec, ""),
        available: condition
            .map_or("Unknown", |c| c.status.as_str())
            .to_owned(),
        message: condition.map(|c| c.message.clone()).unwrap_or_default(),
        last_check: location
            .status
            .as_ref()
            .and_then(|s| s.last_check_time.as_ref())
            .map(|t| t.0.to_string()),
    }
}

pub async fn run(cmd: SnapshotCommand, hub: Client, format: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create(args) => create(args, hub, format).await,
        SnapshotCommand::List => {
            let api: Api<NamespaceSnapshot> = Api::namespaced(hub, SYSTEM_NAMESPACE);
            let mut items = api
                .list(&ListParams::default())
                .await
                .context("listing NamespaceSnapshots on the hub")?
                .items;
            items.sort_by_key(|s| s.creation_timestamp().map(|t| t.0));
            output::print(
                format,
                &SnapshotTable(items.iter().map(snapshot_row).collect()),
            )
        }
        SnapshotCommand::Show { name } => {
            let snapshot = get_snapshot(&hub, &name).await?;
            match format {
                OutputFormat::Table => {
                    print!("{}", describe(&snapshot));
                    Ok(())
                }
                _ => output::print(format, &Whole(snapshot)),
            }
        }
        SnapshotCommand::Delete { name } => {
            let api: Api<NamespaceSnapshot> = Api::namespaced(hub, SYSTEM_NAMESPACE);
            get_snapshot_from(&api, &name).await?;
            api.delete(&name, &Default::default()).await?;
            // The hub server removes the archive and volume snapshots, then the object goes.
            let deadline = Instant::now() + Duration::from_secs(60);
            while api.get_opt(&name).await?.is_some() {
                if Instant::now() >= deadline {
                    bail!(
                        "snapshot {name} is still being deleted after 60s: the hub server removes its \
                         archive and volume snapshots first (is multicluster-webhook running?)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            eprintln!("snapshot {name} deleted, with its archive and volume snapshots");
            Ok(())
        }
        SnapshotCommand::Location(LocationCommand::Add(args)) => {
            add_location(args, hub, format).await
        }
        SnapshotCommand::Location(LocationCommand::List) => {
            let api: Api<StorageLocation> = Api::namespaced(hub, SYSTEM_NAMESPACE);
            let rows = api
                .list(&ListParams::default())
                .await
                .context("listing StorageLocations on the hub")?
                .items
                .iter()
                .map(location_row)
                .collect();
            output::print(format, &LocationTable(rows))
        }
        SnapshotCommand::Location(LocationCommand::Check { name, timeout }) => {
            let location = check_location(&hub, &name, timeout).await?;
            report_check(&location, format)
        }
        SnapshotCommand::Location(LocationCommand::Collect { name, timeout }) => {
            let location = ask_location(&hub, &name, keys::COLLECT_REQUESTED, timeout, |l| {
                l.status
                    .as_ref()?
                    .last_collection
                    .as_ref()?
                    .request
                    .as_deref()
            })
            .await?;
            report_collection(&location, format)
        }
        SnapshotCommand::Schedule(cmd) => schedule::run(cmd, hub, format).await,
    }
}

async fn add_location(
    args: LocationAddArgs,
    hub: Client,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let spec = match (&args.path, &args.bucket) {
        (Some(path), _) => {
            if !path.is_absolute() {
                bail!("--path must be absolute (the hub server resolves it, not your shell)");
            }
            StorageLocationSpec {
                filesystem: Some(FilesystemLocation {
                    path: path.display().to_string(),
                }),
                s3: None,
            }
        }
        (None, Some(bucket)) => {
            let secret = match &args.secret {
                Some(name) => name.clone(),
                None => store_credentials_from_env(&hub, &args.name).await?,
            };
            let ca_bundle = match &args.ca_file {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading --ca-file {}", file.display()))?,
                ),
                None => None,
            };
            StorageLocationSpec {
                filesystem: None,
                s3: Some(S3Location {
                    bucket: bucket.clone(),
                    endpoint: args.endpoint.clone(),
                    region: args.region.clone(),
                    prefix: args.prefix.clone(),
                    credentials_secret: SecretRef { name: secret },
                    force_path_style: args.force_path_style,
                    ca_bundle,
                }),
            }
        }
        (None, None) => bail!("give --path DIR or --bucket NAME"),
    };
    let api: Api<StorageLocation> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    api.create(&PostParams::default(), &StorageLocation::new(&args.name, spec))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => anyhow!(
                "StorageLocation {} already exists (kubectl -n {SYSTEM_NAMESPACE} delete storagelocation {} first)",
                args.name,
                args.name
            ),
            e => anyhow::Error::new(e).context("creating the StorageLocation on the hub"),
        })?;
    eprintln!("storagelocation {} created", args.name);
    if args.no_wait {
        return Ok(());
    }
    let location = check_location(&hub, &args.name, Duration::from_secs(60)).await?;
    report_check(&location, format)
}

/// Keeps S3 keys off the command line: they come from the variables every S3 tool reads.
async fn store_credentials_from_env(hub: &Client, location: &str) -> anyhow::Result<String> {
    let (Ok(id), Ok(key)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        bail!(
            "no S3 credentials: give --secret NAME (a Secret in {SYSTEM_NAMESPACE} with accessKeyId \
             and secretAccessKey), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    };
    let name = format!("storage-{location}");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(SYSTEM_NAMESPACE.to_owned()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([
            ("accessKeyId".to_owned(), id),
            ("secretAccessKey".to_owned(), key),
        ])),
        ..Default::default()
    };
    let params = PatchParams::apply("kubectl-multicluster").force();
    Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .patch(&name, &params, &Patch::Apply(&secret))
        .await
        .with_context(|| {
            format!("storing the S3 credentials in Secret {SYSTEM_NAMESPACE}/{name}")
        })?;
    Ok(name)
}

/// Asks the hub server for a check and waits for its verdict.
async fn check_location(
    hub: &Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<StorageLocation> {
    ask_location(hub, name, keys::CHECK_REQUESTED, timeout, |l| {
        l.status.as_ref()?.last_check_request.as_deref()
    })
    .await
}

/// Asks the hub server for a check or a sweep of location `name` (a fresh token in annotation
/// `request`) and waits until `answered` reads that token from its status.
async fn ask_location(
    hub: &Client,
    name: &str,
    request: &str,
    timeout: Duration,
    answered: impl Fn(&StorageLocation) -> Option<&str>,
) -> anyhow::Result<StorageLocation> {
    let api: Api<StorageLocation> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    let token = Timestamp::now().as_millisecond().to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {request: token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                anyhow!(
                    "no StorageLocation {name} (see `kubectl multicluster snapshot location list`)"
                )
            }
            e => anyhow::Error::new(e).context(format!("asking the hub server about {name}")),
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let location = api.get(name).await?;
        if answered(&location) == Some(token.as_str()) {
            return Ok(location);
        }
        if Instant::now() >= deadline {
            bail!(
                "the hub server did not answer for StorageLocation {name} within {}s: is \
                 multicluster-webhook running? (kubectl -n {SYSTEM_NAMESPACE} get pods, or \
                 `kubectl multicluster local status`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the last sweep of a location did, as `snapshot location collect` prints it.
#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct CollectionReport(pub multicluster_core::api::DataCollection);

impl Tabular for CollectionReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["removed", "kept", "waiting", "message"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let c = &self.0;
        vec![vec![
            format!(
                "{} chunks ({}), {} indexes",
                c.chunks_removed,
                output::mib(c.bytes_removed),
                c.indexes_removed
            ),
            format!(
                "{} chunks ({}) of {} indexes",
                c.chunks_kept,
                output::mib(c.bytes_kept),
                c.indexes_referenced
            ),
            c.waiting.to_string(),
            c.message.clone().unwrap_or_default(),
        ]]
    }
}

fn report_collection(location: &StorageLocation, format: OutputFormat) -> anyhow::Result<()> {
    let collection = location
        .status
        .as_ref()
        .and_then(|s| s.last_collection.clone())
        .unwrap_or_default();
    let (swept, message) = (collection.swept, collection.message.clone());
    output::print(format, &CollectionReport(collection))?;
    if !swept {
        bail!(
            "storage location {} was not swept: {}",
            location.name_any(),
            message.unwrap_or_default()
        );
    }
    Ok(())
}

fn report_check(location: &StorageLocation, format: OutputFormat) -> anyhow::Result<()> {
    let row = location_row(location);
    let available = row.available == "True";
    let (name, message) = (row.name.clone(), row.message.clone());
    output::print(format, &LocationTable(vec![row]))?;
    if !available {
        bail!("storage location {name} is not available: {message}");
    }
    Ok(())
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRow {
    pub name: String,
    pub cluster: String,
    pub namespace: String,
    pub location: String,
    pub phase: String,
    pub resources: Option<u32>,
    /// Volume snapshots taken of claims.
    pub volumes: String,
    pub message: String,
    pub created: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct SnapshotTable(pub Vec<SnapshotRow>);

impl Tabular for SnapshotTable {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "name",
            "cluster",
            "namespace",
            "location",
            "phase",
            "resources",
            "volumes",
            "created",
            "message",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.cluster.clone(),
                    r.namespace.clone(),
                    r.location.clone(),
                    r.phase.clone(),
                    r.resources
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    r.volumes.clone(),
                    r.created.clone().unwrap_or_default(),
                    r.message.clone(),
                ]
            })
            .collect()
    }
}

/// A whole object for `-o json|yaml`.
#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct Whole<T>(pub T);

impl<T: Serialize> Tabular for Whole<T> {
    fn headers(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn rows(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
}

fn snapshot_row(s: &NamespaceSnapshot) -> SnapshotRow {
    let status = s.status.clone().unwrap_or_default();
    SnapshotRow {
        name: s.name_any(),
        cluster: s.spec.cluster.clone(),
        namespace: s.spec.namespace.clone(),
        location: s.spec.location.clone(),
        phase: format!("{:?}", status.phase),
        resources: status.resource_count,
        volumes: format!(
            "{}/{}",
            status.volumes.iter().filter(|v| v.ready).count(),
            status.volumes.len()
        ),
        message: status.message.unwrap_or_default(),
        created: s.creation_timestamp().map(|t| t.0.to_string()),
    }
}

/// `kubectl describe`-style text of one snapshot.
fn describe(s: &NamespaceSnapshot) -> String {
    use std::fmt::Write;
    let status = s.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", s.name_any());
    let _ = writeln!(out, "Source:     {}/{}", s.spec.cluster, s.spec.namespace);
    let _ = writeln!(out, "Location:   {}", s.spec.location);
    let _ = writeln!(out, "Quiesce:    {:?}", s.spec.quiesce);
    let _ = writeln!(out, "Data:       {:?}", s.spec.volume_data);
    let _ = writeln!(out, "Phase:      {:?}", status.phase);
    if let Some(m) = &status.message {
        let _ = writeln!(out, "Message:    {m}");
    }
    if let Some(a) = &status.archive {
        let _ = writeln!(out, "Archive:    {} ({} bytes)", a.url, a.size_bytes);
        let _ = writeln!(out, "Checksum:   {}", a.checksum);
    }
    if let Some(n) = status.resource_count {
        let _ = writeln!(out, "Resources:  {n}");
    }
    if !status.volumes.is_empty() {
        let rows: Vec<Vec<String>> = status
            .volumes
            .iter()
            .map(|v| {
                vec![
                    v.claim.clone(),
                    v.driver.clone().unwrap_or_else(|| "-".into()),
                    v.volume_snapshot.clone().unwrap_or_else(|| "-".into()),
                    v.snapshot_handle.clone().unwrap_or_else(|| "-".into()),
                    v.ready.to_string(),
                    v.data.as_ref().map_or_else(|| "-".into(), data_cell),
                    v.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let _ = writeln!(out, "Volumes:");
        out.push_str(&output::table(
            &[
                "claim",
                "driver",
                "volume snapshot",
                "handle",
                "ready",
                "data",
                "message",
            ],
            &rows,
        ));
    }
    if !status.hooks.is_empty() {
        let rows: Vec<Vec<String>> = status
            .hooks
            .iter()
            .map(|h| {
                let or_dash = |v: &str| {
                    if v.is_empty() {
                        "-".to_owned()
                    } else {
                        v.to_owned()
                    }
                };
                vec![
                    or_dash(&h.when),
                    h.pod.clone(),
                    or_dash(&h.container),
                    h.succeeded.to_string(),
                    h.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let _ = writeln!(out, "Hooks:");
        out.push_str(&output::table(
            &["when", "pod", "container", "succeeded", "message"],
            &rows,
        ));
    }
    if !status.inventory.is_empty() {
        let _ = writeln!(out, "Applications:");
        for app in &status.inventory {
            let images: Vec<String> = app
                .containers
                .iter()
                .map(|(c, i)| format!("{c}={i}"))
                .collect();
            let _ = writeln!(out, "  {} {} {}", app.kind, app.name, images.join(","));
        }
    }
    out
}

/// A volume's data in a table: bytes moved of the total, and once done what was sent and the
/// index it has in the location.
pub(crate) fn data_cell(d: &multicluster_core::api::VolumeDataStatus) -> String {
    use output::mib;
    if !d.done {
        return format!("{} of {}", mib(d.bytes_done), mib(d.bytes_total));
    }
    let index = d
        .index
        .as_deref()
        .map(|i| i.get(..12).unwrap_or(i))
        .unwrap_or("-");
    format!(
        "{} in {} files, {} sent, index {index}",
        mib(d.bytes_total),
        d.files,
        mib(d.bytes_transferred)
    )
}

async fn get_snapshot(hub: &Client, name: &str) -> anyhow::Result<NamespaceSnapshot> {
    get_snapshot_from(&Api::namespaced(hub.clone(), SYSTEM_NAMESPACE), name).await
}

async fn get_snapshot_from(
    api: &Api<NamespaceSnapshot>,
    name: &str,
) -> anyhow::Result<NamespaceSnapshot> {
    api.get_opt(name)
        .await
        .context("reading the NamespaceSnapshot on the hub")?
        .ok_or_else(|| anyhow!("no snapshot {name} (see `kubectl multicluster snapshot list`)"))
}

async fn create(args: CreateArgs, hub: Client, format: OutputFormat) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            args.namespace,
            Timestamp::now().strftime("%Y%m%d%H%M%S")
        )
    });
    let spec = args
        .options
        .spec(&args.cluster, &args.namespace, &args.location);
    let api: Api<NamespaceSnapshot> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    api.create(&PostParams::default(), &NamespaceSnapshot::new(&name, spec))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                anyhow!("snapshot {name} already exists (give another --name)")
            }
            e => anyhow::Error::new(e).context("creating the NamespaceSnapshot on the hub"),
        })?;
    eprintln!("snapshot {name} created");
    if args.no_wait {
        return Ok(());
    }
    let snapshot = follow(&api, &name, args.timeout).await?;
    let status = snapshot.status.clone().unwrap_or_default();
    match format {
        OutputFormat::Table => {
            output::print(format, &SnapshotTable(vec![snapshot_row(&snapshot)]))?
        }
        _ => output::print(format, &Whole(&snapshot))?,
    }
    if status.phase != SnapshotPhase::Completed {
        bail!(
            "snapshot {name} failed: {}",
            status.message.unwrap_or_default()
        );
    }
    Ok(())
}

/// Prints each phase and message as the hub server writes it, until the snapshot ends.
async fn follow(
    api: &Api<NamespaceSnapshot>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<NamespaceSnapshot> {
    crate::follow::follow(api, name, timeout, "snapshot", |o: &NamespaceSnapshot| {
        let status = o.status.clone().unwrap_or_default();
        crate::follow::Step {
            phase: format!("{:?}", status.phase),
            message: status.message.unwrap_or_default(),
            finished: matches!(
                status.phase,
                SnapshotPhase::Completed | SnapshotPhase::Failed
            ),
        }
    })
    .await
}
