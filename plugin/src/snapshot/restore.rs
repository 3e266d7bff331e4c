//! `kubectl multicluster restore …`: creates a `NamespaceRestore` on the hub (the validating
//! webhook refuses it there when the target namespace holds a conflicting application) and follows
//! the hub server's progress as it writes the namespace to the target member.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    NamespaceRestore, NamespaceRestoreSpec, RestorePhase, RestoreTransform,
};
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};
use crate::snapshot::Whole;

#[derive(Subcommand, Debug)]
pub enum RestoreCommand {
    /// Restore a snapshot into a namespace of a member, following progress (refused when that
    /// namespace holds a conflicting application)
    Create(CreateArgs),
    /// Every restore with its snapshot, target, phase and objects written
    #[command(visible_alias = "ls")]
    List,
    /// One restore in detail: progress, conflicts and the objects the target refused
    Show { name: String },
    /// Delete a restore's record on the hub; with --with-objects, first remove what it wrote to
    /// the target (objects changed since by someone else stay, and are listed)
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The NamespaceRestore (in multicluster-system)
    pub name: String,
    /// Remove from the target the objects this restore wrote, unless someone changed them since
    #[arg(long)]
    pub with_objects: bool,
    /// How long to wait for the hub server to remove them
    #[arg(long, default_value = "5m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The NamespaceSnapshot to restore
    pub snapshot: String,
    /// The member to restore to
    #[arg(long)]
    pub to_cluster: String,
    /// The namespace to restore into (created when absent)
    #[arg(long)]
    pub to_namespace: String,
    /// The restore's name (default: SNAPSHOT-to-NAMESPACE-YYYYMMDDHHMMSS)
    #[arg(long)]
    pub name: Option<String>,
    /// YAML file of transforms, a list of {target: {kind, name}, jsonPatch: [...]}, applied to
    /// the restored objects
    #[arg(long, value_name = "FILE")]
    pub transforms: Option<PathBuf>,
    /// Create the restore and return without waiting
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the restore to complete
    #[arg(long, default_value = "30m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

pub async fn run(cmd: RestoreCommand, hub: Client, format: OutputFormat) -> anyhow::Result<()> {
    let api: Api<NamespaceRestore> = Api::namespaced(hub, SYSTEM_NAMESPACE);
    match cmd {
        RestoreCommand::Create(args) => create(args, &api, format).await,
        RestoreCommand::List => {
            let list = api
                .list(&ListParams::default())
                .await
                .context("listing NamespaceRestores on the hub")?;
            match format {
                OutputFormat::Table => output::print(
                    format,
                    &RestoreTable(list.items.iter().map(restore_row).collect()),
                ),
                _ => output::print(format, &Whole(&list.items)),
            }
        }
        RestoreCommand::Show { name } => {
            let restore = get(&api, &name).await?;
            match format {
                OutputFormat::Table => {
                    print!("{}", describe(&restore));
                    Ok(())
                }
                _ => output::print(format, &Whole(&restore)),
            }
        }
        RestoreCommand::Delete(args) => delete(&api, args, format).await,
    }
}

async fn delete(
    api: &Api<NamespaceRestore>,
    args: DeleteArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let name = &args.name;
    let restore = get(api, name).await?;
    let removal = if args.with_objects {
        Some(remove_objects(api, &restore, args.timeout).await?)
    } else {
        None
    };
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting NamespaceRestore {name}"))?;
    match &removal {
        None => eprintln!("restore {name} deleted (what it wrote to the target stays)"),
        Some(r) => eprintln!(
            "restore {name} deleted; {} object(s) it wrote removed from the target, {} kept",
            r.removed,
            r.kept.len()
        ),
    }
    match (removal, format) {
        (Some(r), OutputFormat::Table) if !r.kept.is_empty() => {
            output::print(format, &KeptTable(r.kept))
        }
        (Some(r), OutputFormat::Json | OutputFormat::Yaml) => output::print(format, &Whole(&r)),
        _ => Ok(()),
    }
}

/// Asks the hub server to remove what `restore` wrote and waits for its answer.
async fn remove_objects(
    api: &Api<NamespaceRestore>,
    restore: &NamespaceRestore,
    timeout: Duration,
) -> anyhow::Result<multicluster_core::api::RestoreRemoval> {
    let name = restore.name_any();
    let phase = restore.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if !matches!(phase, RestorePhase::Completed | RestorePhase::Failed) {
        bail!(
            "restore {name} is still {phase:?}: wait until it has finished, then delete it with its objects"
        );
    }
    let token = k8s_openapi::jiff::Timestamp::now().to_string();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"metadata": {"annotations": {
            multicluster_core::keys::REMOVE_RESTORED_OBJECTS: token}}})),
    )
    .await
    .with_context(|| format!("asking for the removal of what restore {name} wrote"))?;
    eprintln!(
        "removing what restore {name} wrote to {}/{}",
        restore.spec.target_cluster, restore.spec.target_namespace
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = get(api, &name).await?;
        if let Some(removal) = now.status.and_then(|s| s.removal)
            && removal.request == token
        {
            if let Some(message) = removal.message {
                bail!(
                    "the hub server could not remove what restore {name} wrote: {message}; the restore is kept"
                );
            }
            return Ok(removal);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the hub server did not remove what restore {name} wrote within {}s (is \
                 multicluster-webhook running?); the restore is kept",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The objects a removal left on the target, and why.
#[derive(Serialize)]
#[serde(transparent)]
struct KeptTable(Vec<multicluster_core::api::RestoreObjectFailure>);

impl Tabular for KeptTable {
    fn headers(&self) -> Vec<&'static str> {
        vec!["kept", "why"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|k| vec![format!("{} {}", k.kind, k.name), k.message.clone()])
            .collect()
    }
}

async fn get(api: &Api<NamespaceRestore>, name: &str) -> anyhow::Result<NamespaceRestore> {
    api.get_opt(name)
        .await
        .context("reading the NamespaceRestore on the hub")?
        .ok_or_else(|| anyhow!("no restore {name} (see `kubectl multicluster restore list`)"))
}

async fn create(
    args: CreateArgs,
    api: &Api<NamespaceRestore>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}-to-{}-{}",
            args.snapshot,
            args.to_namespace,
            Timestamp::now().strftime("%Y%m%d%H%M%S")
        )
    });
    let transforms: Vec<RestoreTransform> = match &args.transforms {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_saphyr::from_str(&text).with_context(|| {
                format!(
                    "{} is not a list of transforms ({{target: {{kind, name}}, jsonPatch: [...]}})",
                    path.display()
                )
            })?
        }
    };
    let spec = NamespaceRestoreSpec {
        snapshot: args.snapshot.clone(),
        target_cluster: args.to_cluster.clone(),
        target_namespace: args.to_namespace.clone(),
        transforms,
    };
    api.create(&PostParams::default(), &NamespaceRestore::new(&name, spec))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                anyhow!("restore {name} already exists (give another --name)")
            }
            // The validating webhook's verdict, conflicts named: nothing was written.
            kube::Error::Api(s) if s.code == 400 || s.code == 403 => {
                anyhow!("restore refused, nothing was written: {}", s.message)
            }
            e => anyhow::Error::new(e).context("creating the NamespaceRestore on the hub"),
        })?;
    eprintln!("restore {name} created");
    if args.no_wait {
        return Ok(());
    }
    let restore = follow(api, &name, args.timeout).await?;
    let status = restore.status.clone().unwrap_or_default();
    match format {
        OutputFormat::Table => output::print(format, &RestoreTable(vec![restore_row(&restore)]))?,
        _ => output::print(format, &Whole(&restore))?,
    }
    if status.phase != RestorePhase::Completed {
        bail!(
            "restore {name} failed: {}",
            status.message.unwrap_or_default()
        );
    }
    Ok(())
}

/// Prints each phase and message as the hub server writes it, until the restore ends.
async fn follow(
    api: &Api<NamespaceRestore>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<NamespaceRestore> {
    crate::follow::follow(api, name, timeout, "restore", |o: &NamespaceRestore| {
        let status = o.status.clone().unwrap_or_default();
        crate::follow::Step {
            phase: format!("{:?}", status.phase),
            message: status.message.unwrap_or_default(),
            finished: matches!(status.phase, RestorePhase::Completed | RestorePhase::Failed),
        }
    })
    .await
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRow {
    pub name: String,
    pub snapshot: String,
    pub cluster: String,
    pub namespace: String,
    pub phase: String,
    pub written: String,
    pub message: String,
    pub created: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct RestoreTable(pub Vec<RestoreRow>);

impl Tabular for RestoreTable {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "name",
            "snapshot",
            "cluster",
            "namespace",
            "phase",
            "written",
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
                    r.snapshot.clone(),
                    r.cluster.clone(),
                    r.namespace.clone(),
                    r.phase.clone(),
                    r.written.clone(),
                    r.created.clone().unwrap_or_default(),
                    r.message.clone(),
                ]
            })
            .collect()
    }
}

fn restore_row(r: &NamespaceRestore) -> RestoreRow {
    let status = r.status.clone().unwrap_or_default();
    RestoreRow {
        name: r.name_any(),
        snapshot: r.spec.snapshot.clone(),
        cluster: r.spec.target_cluster.clone(),
        namespace: r.spec.target_namespace.clone(),
        phase: format!("{:?}", status.phase),
        written: format!("{}/{}", status.objects_written, status.objects_total),
        message: status.message.unwrap_or_default(),
        created: r.creation_timestamp().map(|t| t.0.to_string()),
    }
}

/// `kubectl describe`-style text of one restore.
fn describe(r: &NamespaceRestore) -> String {
    use std::fmt::Write;
    let status = r.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", r.name_any());
    let _ = writeln!(out, "Snapshot:   {}", r.spec.snapshot);
    let _ = writeln!(
        out,
        "Target:     {}/{}",
        r.spec.target_cluster, r.spec.target_namespace
    );
    let _ = writeln!(out, "Phase:      {:?}", status.phase);
    if let Some(m) = &status.message {
        let _ = writeln!(out, "Message:    {m}");
    }
    let _ = writeln!(
        out,
        "Written:    {} of {} objects",
        status.objects_written, status.objects_total
    );
    if !r.spec.transforms.is_empty() {
        let _ = writeln!(out, "Transforms: {}", r.spec.transforms.len());
    }
    if !status.volumes.is_empty() {
        let _ = writeln!(out, "Filled from the snapshot's data:");
        for v in &status.volumes {
            let _ = writeln!(out, "  {}: {}", v.claim, super::data_cell(&v.data));
        }
    }
    if !status.conflicts.is_empty() {
        let _ = writeln!(out, "Conflicts:");
        for c in &status.conflicts {
            let _ = writeln!(out, "  {} {}: {}", c.kind, c.name, c.reason);
        }
    }
    if !status.failures.is_empty() {
        let _ = writeln!(out, "Refused by the target:");
        for f in &status.failures {
            let _ = writeln!(out, "  {} {}: {}", f.kind, f.name, f.message);
        }
    }
    out
}
