//! `kubectl multicluster intent register|rotate|show` and `kubectl multicluster apply --intent`:
//! the manager side of intent-ID fencing.
//!
//! A manager holds an intent ID and sends it with every write; when someone registers a new ID, the
//! hub's webhook refuses the manager's next write and the manager stops (exit code 3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use multicluster_core::api::{Intent, IntentSpec};
use multicluster_core::keys::{INTENT_ID, MANAGED_BY_INTENT};
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

/// The exit code of a manager stopped because its intent was taken over.
pub const FENCED_EXIT_CODE: u8 = 3;

/// A write refused because the intent ID it carried is no longer current.
#[derive(Debug, thiserror::Error)]
#[error("fenced off: {0}\nstopping: another manager holds the intent now")]
pub struct Fenced(pub String);

#[derive(Subcommand, Debug)]
pub enum IntentCommand {
    /// Register an Intent: from now on only writes carrying its ID may change the objects it manages
    Register(RegisterArgs),
    /// Give an Intent a new ID (and holder): the previous holder's next write is refused
    Rotate(RotateArgs),
    /// Show an Intent: its ID, holder, epoch and previous holder
    Show { name: String },
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    pub name: String,
    /// Who holds it (a person, a pipeline, a manager); named in every refusal
    #[arg(long)]
    pub holder: String,
    /// The intent ID (default: a new random ID)
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    pub name: String,
    /// The new holder (default: the current one)
    #[arg(long)]
    pub holder: Option<String>,
    /// The new intent ID (default: a new random ID)
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file (YAML, several documents allowed), or - for stdin
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The Intent whose ID this write carries (read once, at start: that is the ID this manager holds)
    #[arg(long, value_name = "NAME")]
    pub intent: String,
    /// Keep applying every DURATION (e.g. 500ms, 10s) until fenced off or interrupted
    #[arg(long, value_name = "DURATION", value_parser = multicluster_core::duration::parse)]
    pub interval: Option<Duration>,
}

/// 128 random bits, hex: an intent ID nobody guesses or reuses by accident.
fn random_id() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a new intent ID; pass --id")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct IntentReport {
    pub namespace: String,
    pub name: String,
    pub intent_id: String,
    pub holder: String,
    pub epoch: u64,
    pub previous_holder: Option<String>,
    pub last_rotation_time: Option<String>,
}

impl IntentReport {
    fn from(intent: &Intent) -> Self {
        let status = intent.status.clone().unwrap_or_default();
        Self {
            namespace: intent.metadata.namespace.clone().unwrap_or_default(),
            name: intent.metadata.name.clone().unwrap_or_default(),
            intent_id: intent.spec.intent_id.clone(),
            holder: intent.spec.holder.clone(),
            epoch: status.epoch,
            previous_holder: status.previous_holder,
            last_rotation_time: status.last_rotation_time.map(|t| t.0.to_string()),
        }
    }
}

impl Tabular for IntentReport {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "name",
            "intent id",
            "holder",
            "epoch",
            "previous holder",
            "last rotation",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![
            self.name.clone(),
            self.intent_id.clone(),
            self.holder.clone(),
            self.epoch.to_string(),
            self.previous_holder.clone().unwrap_or_else(|| "-".into()),
            self.last_rotation_time
                .clone()
                .unwrap_or_else(|| "-".into()),
        ]]
    }
}

/// Waits briefly for the hub server to record the new epoch, so the command can print it.
async fn settled(api: &Api<Intent>, name: &str, id: &str) -> anyhow::Result<Intent> {
    for _ in 0..50 {
        let intent = api.get(name).await?;
        if intent
            .status
            .as_ref()
            .and_then(|s| s.observed_intent_id.as_deref())
            == Some(id)
        {
            return Ok(intent);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("warning: the hub server has not recorded the new epoch yet (is it running?)");
    Ok(api.get(name).await?)
}

pub async fn run(
    cmd: IntentCommand,
    client: Client,
    namespace: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let api: Api<Intent> = Api::namespaced(client, namespace);
    match cmd {
        IntentCommand::Register(args) => {
            if let Some(existing) = api.get_opt(&args.name).await? {
                bail!(
                    "Intent {namespace}/{} exists, held by {:?}: take it over with \
                     `kubectl multicluster intent rotate {} --holder {}`",
                    args.name,
                    existing.spec.holder,
                    args.name,
                    args.holder
                );
            }
            let id = match args.id {
                Some(id) => id,
                None => random_id()?,
            };
            let intent = Intent::new(
                &args.name,
                IntentSpec {
                    intent_id: id.clone(),
                    holder: args.holder,
                },
            );
            api.create(&PostParams::default(), &intent)
                .await
                .with_context(|| format!("creating Intent {namespace}/{}", args.name))?;
            output::print(
                format,
                &IntentReport::from(&settled(&api, &args.name, &id).await?),
            )
        }
        IntentCommand::Rotate(args) => {
            let mut intent = api
                .get(&args.name)
                .await
                .with_context(|| format!("reading Intent {namespace}/{}", args.name))?;
            let id = match args.id {
                Some(id) => id,
                None => random_id()?,
            };
            if id == intent.spec.intent_id {
                bail!(
                    "Intent {namespace}/{} already has that ID; rotating needs a new one",
                    args.name
                );
            }
            intent.spec.intent_id = id.clone();
            if let Some(holder) = args.holder {
                intent.spec.holder = holder;
            }
            // `replace` carries the resourceVersion read above: two rotations at once cannot both win.
            api.replace(&args.name, &PostParams::default(), &intent)
                .await
                .with_context(|| format!("rotating Intent {namespace}/{}", args.name))?;
            output::print(
                format,
                &IntentReport::from(&settled(&api, &args.name, &id).await?),
            )
        }
        IntentCommand::Show { name } => {
            let intent = api
                .get_opt(&name)
                .await?
                .ok_or_else(|| anyhow!("no Intent {namespace}/{name}"))?;
            output::print(format, &IntentReport::from(&intent))
        }
    }
}

fn read_manifests(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow!("{} is not valid YAML: {e}", file.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// `kubectl multicluster apply --intent NAME -f FILE [--interval D]`: server-side applies every
/// object with the intent ID in `multicluster.dev/intent-id`; with `--interval` it keeps doing so,
/// as a manager does, until a write is refused as fenced off.
pub async fn apply(args: ApplyArgs, client: Client, namespace: &str) -> anyhow::Result<()> {
    let manifests = read_manifests(&args.file)?;
    let intent: Api<Intent> = Api::namespaced(client.clone(), namespace);
    let held = intent
        .get(&args.intent)
        .await
        .with_context(|| format!("reading Intent {namespace}/{}", args.intent))?;
    let id = held.spec.intent_id.clone();
    eprintln!(
        "Applying {} object(s) as holder {:?} of Intent {namespace}/{} (epoch {})",
        manifests.len(),
        held.spec.holder,
        args.intent,
        held.status.as_ref().map_or(0, |s| s.epoch)
    );
    let mut round = 0u64;
    loop {
        for manifest in &manifests {
            apply_one(&client, manifest, namespace, &args.intent, &id).await?;
        }
        round += 1;
        let Some(interval) = args.interval else {
            return Ok(());
        };
        tracing::info!(round, "applied");
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn apply_one(
    client: &Client,
    manifest: &serde_json::Value,
    namespace: &str,
    intent: &str,
    id: &str,
) -> anyhow::Result<()> {
    let crate::apply::Located {
        mut object,
        name,
        kind,
        api,
    } = crate::apply::locate(client, manifest, Some(namespace)).await?;
    let labels = object.metadata.labels.get_or_insert_with(Default::default);
    labels
        .entry(MANAGED_BY_INTENT.to_owned())
        .or_insert_with(|| intent.to_owned());
    object
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(INTENT_ID.to_owned(), id.to_owned());
    let params = PatchParams::apply("kubectl-multicluster").force();
    match api.patch(&name, &params, &Patch::Apply(&object)).await {
        Ok(_) => Ok(()),
        Err(e) => match crate::hub::api_error(&e) {
            Some(status) if status.message.contains("intent-fence.multicluster.dev") => {
                Err(Fenced(status.message.clone()).into())
            }
            _ => Err(anyhow::Error::new(e).context(format!("applying {kind} {name}"))),
        },
    }
}
