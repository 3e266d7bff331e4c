//! `kubectl multicluster snapshot schedule create|list|show|delete`: `SnapshotSchedule`s on the
//! hub. The hub server takes the snapshots when they come due and deletes what retention expires;
//! these commands write the schedule and read back what it did.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    NamespaceSnapshot, Retention, SnapshotSchedule, SnapshotScheduleSpec,
};
use multicluster_core::snapshot::schedule;
use multicluster_core::{SYSTEM_NAMESPACE, keys};
use serde::Serialize;

use super::{SnapshotOptions, Whole};
use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Snapshot a member's namespace on a cron schedule (UTC), keeping the newest N, one a day…
    #[command(
        after_help = "SCHEDULE is a cron expression in UTC: five fields as a CronJob's \
        (\"0 2 * * *\": every day at 02:00), six with seconds first (\"*/30 * * * * *\"), or \
        @hourly, @daily, @weekly. Expired snapshots are deleted with their archives and volume \
        snapshots; the location's volume data that no snapshot references any more goes at its \
        next sweep (`snapshot location collect`)."
    )]
    Create(CreateArgs),
    /// Every schedule with its last and next run and how many snapshots it keeps
    #[command(visible_alias = "ls")]
    List,
    /// One schedule: its spec, its runs and its snapshots with their phase
    Show { name: String },
    /// Stop taking snapshots (retention still applies)
    Suspend { name: String },
    /// Take snapshots again; a run that came due while suspended is taken at once
    Resume { name: String },
    /// Delete a schedule; its snapshots stay unless --with-snapshots
    Delete {
        name: String,
        /// Delete its snapshots too (their archives and volume snapshots with them)
        #[arg(long)]
        with_snapshots: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The namespace to snapshot, on --cluster
    pub namespace: String,
    /// When to snapshot: a cron expression in UTC, e.g. "0 2 * * *"
    #[arg(long)]
    pub schedule: String,
    /// The schedule's name, at most 48 characters; its snapshots are NAME-YYYYMMDDHHMMSS
    /// (default: NAMESPACE-CLUSTER)
    #[arg(long)]
    pub name: Option<String>,
    /// The member the namespace is on
    #[arg(long)]
    pub cluster: String,
    /// The StorageLocation to save to
    #[arg(long)]
    pub location: String,
    #[command(flatten)]
    pub options: SnapshotOptions,
    /// Keep the N newest completed snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N latest days (UTC)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N latest ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Create it suspended (no snapshot until spec.suspend is false)
    #[arg(long)]
    pub suspend: bool,
}

pub async fn run(cmd: ScheduleCommand, hub: Client, format: OutputFormat) -> anyhow::Result<()> {
    let api: Api<SnapshotSchedule> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    match cmd {
        ScheduleCommand::Create(args) => create(&api, args, format).await,
        ScheduleCommand::List => {
            let mut items = api
                .list(&ListParams::default())
                .await
                .context("listing SnapshotSchedules on the hub")?
                .items;
            items.sort_by_key(ResourceExt::name_any);
            output::print(format, &ScheduleTable(items.iter().map(row).collect()))
        }
        ScheduleCommand::Show { name } => {
            let found = get(&api, &name).await?;
            match format {
                OutputFormat::Table => {
                    let snapshots = snapshots_of(&hub, &name).await?;
                    print!("{}", describe(&found, &snapshots));
                    Ok(())
                }
                _ => output::print(format, &Whole(found)),
            }
        }
        ScheduleCommand::Suspend { name } => set_suspended(&api, &name, true).await,
        ScheduleCommand::Resume { name } => set_suspended(&api, &name, false).await,
        ScheduleCommand::Delete {
            name,
            with_snapshots,
        } => delete(&hub, &api, &name, with_snapshots).await,
    }
}

async fn create(
    api: &Api<SnapshotSchedule>,
    args: CreateArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    // Refused here with the reason rather than accepted and reported later in its status.
    let cron = schedule::parse(&args.schedule).map_err(|e| anyhow!("--schedule: {e}"))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.namespace, args.cluster));
    if name.len() > 48 {
        bail!(
            "a schedule's name has at most 48 characters (its snapshots add a timestamp): {name} \
             (give a shorter --name)"
        );
    }
    let retention = Retention {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
    };
    // Without a rule every snapshot stays (an empty retention would be refused by the API).
    let retention = (retention != Retention::default()).then_some(retention);
    let spec = SnapshotScheduleSpec {
        schedule: args.schedule.clone(),
        snapshot: args
            .options
            .spec(&args.cluster, &args.namespace, &args.location),
        retention,
        suspend: args.suspend,
    };
    let created = api
        .create(&PostParams::default(), &SnapshotSchedule::new(&name, spec))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => anyhow!(
                "schedule {name} already exists (delete it first, or `kubectl edit \
                 snapshotschedule -n {SYSTEM_NAMESPACE} {name}`)"
            ),
            e => anyhow::Error::new(e).context("creating the SnapshotSchedule on the hub"),
        })?;
    match (args.suspend, schedule::next_run(&cron, Timestamp::now())) {
        (true, _) => eprintln!("schedule {name} created, suspended"),
        (false, Some(next)) => eprintln!(
            "schedule {name} created ({}); first snapshot at {next}",
            cron.describe()
        ),
        (false, None) => eprintln!(
            "schedule {name} created, but {:?} names no time to come",
            args.schedule
        ),
    }
    match format {
        OutputFormat::Table => Ok(()),
        _ => output::print(format, &Whole(created)),
    }
}

async fn set_suspended(
    api: &Api<SnapshotSchedule>,
    name: &str,
    suspend: bool,
) -> anyhow::Result<()> {
    get(api, name).await?;
    let patch = serde_json::json!({"spec": {"suspend": suspend}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("changing the SnapshotSchedule")?;
    if suspend {
        eprintln!(
            "schedule {name} suspended: no new snapshot until `snapshot schedule resume {name}`"
        );
    } else {
        eprintln!("schedule {name} resumed");
    }
    Ok(())
}

async fn get(api: &Api<SnapshotSchedule>, name: &str) -> anyhow::Result<SnapshotSchedule> {
    api.get_opt(name)
        .await
        .context("reading the SnapshotSchedule on the hub")?
        .ok_or_else(|| {
            anyhow!("no schedule {name} (see `kubectl multicluster snapshot schedule list`)")
        })
}

/// The schedule's snapshots on the hub, newest first.
async fn snapshots_of(hub: &Client, schedule: &str) -> anyhow::Result<Vec<NamespaceSnapshot>> {
    let mut items = Api::<NamespaceSnapshot>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .list(&ListParams::default().labels(&format!("{}={schedule}", keys::SCHEDULE_LABEL)))
        .await
        .context("listing the schedule's NamespaceSnapshots")?
        .items;
    items.sort_by_key(|s| std::cmp::Reverse(s.creation_timestamp().map(|t| t.0)));
    Ok(items)
}

async fn delete(
    hub: &Client,
    api: &Api<SnapshotSchedule>,
    name: &str,
    with_snapshots: bool,
) -> anyhow::Result<()> {
    get(api, name).await?;
    api.delete(name, &DeleteParams::default())
        .await
        .context("deleting the SnapshotSchedule")?;
    let snapshots = snapshots_of(hub, name).await?;
    if !with_snapshots {
        eprintln!(
            "schedule {name} deleted; its {} snapshot(s) stay (`snapshot delete` each, or \
             --with-snapshots)",
            snapshots.len()
        );
        return Ok(());
    }
    let snapshots_api: Api<NamespaceSnapshot> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    // The hub server removes each one's archive and volume snapshots, then the object goes. Each
    // look deletes what is not being deleted yet: a pass of the schedule that was under way when it
    // was deleted may still create one.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = snapshots_of(hub, name).await?;
        if left.is_empty() {
            break;
        }
        for s in left
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
        {
            match snapshots_api
                .delete(&s.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("deleting {}", s.name_any())));
                }
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = left.iter().map(ResourceExt::name_any).collect();
            bail!(
                "schedule {name} deleted, but its snapshots {} are still being deleted after 120s: \
                 the hub server removes their archives and volume snapshots first (is \
                 multicluster-webhook running?)",
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "schedule {name} deleted with its {} snapshot(s), their archives and volume snapshots",
        snapshots.len()
    );
    Ok(())
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRow {
    pub name: String,
    pub schedule: String,
    pub cluster: String,
    pub namespace: String,
    pub location: String,
    pub retention: String,
    pub suspended: bool,
    pub last: Option<String>,
    pub next: Option<String>,
    pub snapshots: usize,
    pub message: String,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct ScheduleTable(pub Vec<ScheduleRow>);

impl Tabular for ScheduleTable {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "name",
            "schedule",
            "source",
            "location",
            "keep",
            "last run",
            "next run",
            "snapshots",
            "message",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.schedule.clone(),
                    format!("{}/{}", r.cluster, r.namespace),
                    r.location.clone(),
                    r.retention.clone(),
                    r.last.clone().unwrap_or_else(|| "-".to_owned()),
                    if r.suspended {
                        "suspended".to_owned()
                    } else {
                        r.next.clone().unwrap_or_else(|| "-".to_owned())
                    },
                    r.snapshots.to_string(),
                    r.message.clone(),
                ]
            })
            .collect()
    }
}

/// `last 7, daily 14, weekly 8`, or `all`.
fn retention_text(retention: Option<&Retention>) -> String {
    let Some(r) = retention else {
        return "all".to_owned();
    };
    let rules: Vec<String> = [
        ("last", r.keep_last),
        ("daily", r.keep_daily),
        ("weekly", r.keep_weekly),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(rule, n)| format!("{rule} {n}"))
    .collect();
    rules.join(", ")
}

fn row(s: &SnapshotSchedule) -> ScheduleRow {
    let status = s.status.clone().unwrap_or_default();
    ScheduleRow {
        name: s.name_any(),
        schedule: s.spec.schedule.clone(),
        cluster: s.spec.snapshot.cluster.clone(),
        namespace: s.spec.snapshot.namespace.clone(),
        location: s.spec.snapshot.location.clone(),
        retention: retention_text(s.spec.retention.as_ref()),
        suspended: s.spec.suspend,
        last: status.last_schedule_time.map(|t| t.0.to_string()),
        next: status.next_schedule_time.map(|t| t.0.to_string()),
        snapshots: status.snapshots.len(),
        message: status.message.unwrap_or_default(),
    }
}

/// `kubectl describe`-style text of one schedule and its snapshots.
fn describe(s: &SnapshotSchedule, snapshots: &[NamespaceSnapshot]) -> String {
    use std::fmt::Write;
    let r = row(s);
    let mut out = String::new();
    let when = schedule::parse(&s.spec.schedule)
        .map(|c| c.describe())
        .unwrap_or_else(|e| e);
    let _ = writeln!(out, "Name:       {}", r.name);
    let _ = writeln!(out, "Schedule:   {} ({when}, UTC)", r.schedule);
    let _ = writeln!(out, "Source:     {}/{}", r.cluster, r.namespace);
    let _ = writeln!(out, "Location:   {}", r.location);
    let _ = writeln!(out, "Quiesce:    {:?}", s.spec.snapshot.quiesce);
    let _ = writeln!(out, "Data:       {:?}", s.spec.snapshot.volume_data);
    let _ = writeln!(out, "Keep:       {}", r.retention);
    let _ = writeln!(out, "Suspended:  {}", r.suspended);
    let _ = writeln!(out, "Last run:   {}", r.last.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "Next run:   {}", r.next.as_deref().unwrap_or("-"));
    if !r.message.is_empty() {
        let _ = writeln!(out, "Message:    {}", r.message);
    }
    let _ = writeln!(out, "Snapshots:");
    if snapshots.is_empty() {
        let _ = writeln!(out, "  (none)");
        return out;
    }
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|snapshot| {
            let status = snapshot.status.clone().unwrap_or_default();
            vec![
                snapshot.name_any(),
                format!("{:?}", status.phase),
                snapshot
                    .creation_timestamp()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                status.message.unwrap_or_default(),
            ]
        })
        .collect();
    for line in output::table(&["name", "phase", "created", "message"], &rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}
