//! `kubectl multicluster distribute`: store manifests on the hub as the sources of a Distribution,
//! create or update that Distribution, and follow the hub server as it applies them to members;
//! `--plan` prints the order without touching anything; `distribute status NAME` reads the result.

pub mod delete;
pub mod preview;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::{StreamExt, stream};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    ConflictPolicy, DeletionPolicy, DependencyRule, Distribution, DistributionMode,
    DistributionStatus, DistributionTargets, DriftPolicy, MemberCluster, ObjectSyncState,
};
use multicluster_core::cluster::Kinds;
use multicluster_core::distribution::{self, Plan};
use multicluster_core::keys;
use serde::Serialize;
use serde_json::{Value, json};

use crate::output::{self, OutputFormat, Tabular};

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    kubectl multicluster distribute -f app/ --to member-1,member-2 --name shop\n  \
    kubectl multicluster distribute -f app/ --selector region=eu --mode continuous\n  \
    kubectl multicluster distribute -f app/ --plan\n  \
    kubectl multicluster distribute status shop\n  \
    kubectl multicluster distribute delete shop"
)]
pub struct DistributeArgs {
    #[command(subcommand)]
    pub action: Option<DistributeCommand>,
    /// Manifests to distribute: files or directories (YAML or JSON, directories recursively)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    /// Name of the Distribution (default: the first file's or directory's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Member clusters to distribute to, by name
    #[arg(long, value_delimiter = ',', value_name = "MEMBER,...")]
    pub to: Vec<String>,
    /// Member clusters to distribute to, by label (key=value,...)
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub selector: Option<String>,
    /// once: apply and report; continuous: keep members in sync with the hub
    #[arg(long, value_enum, default_value_t = Mode::Once)]
    pub mode: Mode,
    /// What to do with an object a member already has and that is not ours
    #[arg(long, value_enum, default_value_t = Conflicts::Abort)]
    pub conflict_policy: Conflicts,
    /// What continuous mode does with a copy edited on a member
    #[arg(long, value_enum, default_value_t = Drift::Correct)]
    pub drift_policy: Drift,
    /// What deleting the Distribution (or a member leaving --to/--selector) does to the copies:
    /// delete them, or orphan them (keep them, without the Distribution's labels)
    #[arg(long, value_enum, default_value_t = Deletion::Delete)]
    pub deletion_policy: Deletion,
    /// A reference inside a custom resource, for the order: objects of KIND depend on the object of
    /// REFERENCED_KIND named at PATH (a JSONPath); `secret-bearing` puts KIND with the Secrets
    #[arg(
        long = "dependency-rule",
        value_name = "APIVERSION,KIND,PATH,REFERENCED_KIND[,secret-bearing]",
        value_parser = parse_rule
    )]
    pub rules: Vec<DependencyRule>,
    /// Place Deployments' replicas across members by this TrafficPolicy's active weights (a
    /// policy in multicluster-system); they move off failed members and back on fail-back
    #[arg(long, value_name = "NAME")]
    pub traffic_policy: Option<String>,
    /// Print the order objects would be applied in, and why, and change nothing
    #[arg(long)]
    pub plan: bool,
    /// `server`: dry-run every object on every target member and show what would change; store
    /// nothing
    #[arg(long, value_enum, value_name = "server")]
    pub dry_run: Option<DryRun>,
    /// Return once the Distribution is stored, without waiting for the members
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the members
    #[arg(long, default_value = "5m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum DistributeCommand {
    /// Each member's progress and every object that is not applied, with the reason
    Status { name: String },
    /// Delete a Distribution: its copies leave every member, then its stored sources leave the hub
    Delete(delete::DeleteArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DryRun {
    Server,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    Once,
    Continuous,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Conflicts {
    Abort,
    Adopt,
    Overwrite,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Deletion {
    Delete,
    Orphan,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Drift {
    Correct,
    Report,
}

pub async fn run(
    args: DistributeArgs,
    client: Client,
    namespace: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    if let Some(DistributeCommand::Delete(delete)) = args.action {
        return delete::run(client, delete, format).await;
    }
    if let Some(DistributeCommand::Status { name }) = &args.action {
        let api: Api<Distribution> = Api::namespaced(client, SYSTEM_NAMESPACE);
        let d = api
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow!("no Distribution {name} in {SYSTEM_NAMESPACE}"))?;
        return output::print(format, &Report::of(&d));
    }
    if args.files.is_empty() {
        bail!("give the manifests with -f FILE|DIR (or `distribute status NAME`)");
    }
    if !args.plan && args.to.is_empty() && args.selector.is_none() {
        bail!("say where to: --to MEMBER,... or --selector KEY=VALUE,...");
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&args.files[0])?,
    };
    let mut objects = read_all(&args.files)?;
    if objects.is_empty() {
        bail!("no objects in {}", display_paths(&args.files));
    }
    // Custom resources whose CRD is in the bundle take their scope from that CRD.
    let bundle_crds = crds_of(&objects);
    let mut scopes = Scopes::default();
    for object in &mut objects {
        scopes
            .place(&client, object, namespace, &bundle_crds)
            .await?;
    }
    let plan = distribution::plan(&objects, &args.rules)?;
    if args.plan {
        return output::print(format, &PlanReport::of(&plan));
    }
    if args.dry_run.is_some() {
        let targets = DistributionTargets {
            members: args.to.clone(),
            selector: args
                .selector
                .as_deref()
                .map(parse_labels)
                .transpose()?
                .map(|labels| LabelSelector {
                    match_labels: Some(labels),
                    ..Default::default()
                }),
            traffic_policy: args.traffic_policy.clone(),
        };
        let ordered: Vec<Value> = plan.in_order(&objects).into_iter().cloned().collect();
        let preview = preview_on_members(
            &client,
            &name,
            &targets,
            &[],
            conflict_policy(args.conflict_policy),
            &ordered,
        )
        .await?;
        return print_preview(format, &preview);
    }
    for object in &mut objects {
        object["metadata"]["labels"][keys::SOURCE_OF] = json!(name);
    }
    // The hub server reads Secrets only where they are stored as sources.
    let secret_namespaces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["apiVersion"] == "v1" && o["kind"] == "Secret")
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    for ns in secret_namespaces {
        crate::apply::apply_objects(&client, &distribution::secret_reader_objects(ns))
            .await
            .with_context(|| format!("letting the hub server read the Secrets in {ns}"))?;
    }
    let unchanged = store_sources(&client, &name, &objects, &plan).await?;
    eprintln!(
        "Stored {} object(s) on the hub as the sources of Distribution {name} ({unchanged} unchanged)",
        objects.len() - unchanged
    );
    prune_old_sources(&client, &name, &objects).await?;
    let requested = k8s_openapi::jiff::Timestamp::now().to_string();
    let distribution = distribution_object(&args, &name, &objects, &requested)?;
    let api: Api<Distribution> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let stored = api
        .patch(
            &name,
            &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
            &Patch::Apply(&distribution),
        )
        .await
        .with_context(|| format!("storing Distribution {name} on the hub"))?;
    if args.no_wait {
        eprintln!(
            "Distribution {name} stored; follow it with `kubectl multicluster distribute status {name}`"
        );
        return Ok(());
    }
    let done = wait(
        &api,
        &name,
        &requested,
        stored.metadata.generation,
        args.timeout,
    )
    .await?;
    output::print(format, &Report::of(&done))?;
    let synced = done
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
        .cloned();
    match synced {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => bail!(
            "Distribution {name} is not in sync: {} ({})",
            c.message,
            c.reason
        ),
        None => bail!("Distribution {name} has no Synced condition"),
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A DNS-1123 name from a path: `./my_app/` → `my-app`.
fn default_name(path: &Path) -> anyhow::Result<String> {
    let stem = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = stem
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned();
    if name.is_empty() {
        bail!(
            "cannot name the Distribution after {}; pass --name",
            path.display()
        );
    }
    Ok(name)
}

/// Every document of every file (directories recursively, `.yaml`, `.yml`, `.json`, sorted), with
/// a `List` unpacked. A file that does not parse is named and nothing is stored.
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| {
            anyhow!(
                "{} is not valid YAML: {e}; nothing was stored",
                file.display()
            )
        })?;
        for (i, doc) in docs.into_iter().enumerate() {
            match doc {
                Value::Null => {}
                Value::Object(_) if doc["kind"] == "List" => {
                    objects.extend(doc["items"].as_array().cloned().unwrap_or_default())
                }
                Value::Object(_) if doc["kind"].is_string() && doc["apiVersion"].is_string() => {
                    objects.push(doc)
                }
                _ => bail!(
                    "{} document {}: not a Kubernetes object (no apiVersion and kind); nothing was stored",
                    file.display(),
                    i + 1
                ),
            }
        }
    }
    Ok(objects)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let is_manifest = entry
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if entry.is_dir() || is_manifest {
                collect_files(&entry, out)?;
            }
        }
    } else {
        out.push(path.to_owned());
    }
    Ok(())
}

fn crds_of(objects: &[Value]) -> HashMap<(String, String), bool> {
    objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| {
            Some((
                (
                    o["spec"]["group"].as_str()?.to_owned(),
                    o["spec"]["names"]["kind"].as_str()?.to_owned(),
                ),
                o["spec"]["scope"] == "Namespaced",
            ))
        })
        .collect()
}

/// Which kinds are namespaced: from a CRD in the bundle, or else from the hub's discovery.
#[derive(Default)]
struct Scopes {
    hub: Kinds,
}

impl Scopes {
    async fn namespaced(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
        bundle_crds: &HashMap<(String, String), bool>,
    ) -> anyhow::Result<bool> {
        let group = distribution::order::group_of(api_version);
        if let Some(namespaced) = bundle_crds.get(&(group.to_owned(), kind.to_owned())) {
            return Ok(*namespaced);
        }
        let found = self
            .hub
            .resolve(client, api_version, kind)
            .await
            .with_context(|| {
                format!(
                    "the hub does not serve {api_version} {kind} (and the bundle has no CRD for it)"
                )
            })?;
        Ok(found.namespaced)
    }

    /// Gives a namespaced object without a namespace the default one; drops one from a
    /// cluster-scoped object, as kubectl does.
    async fn place(
        &mut self,
        client: &Client,
        object: &mut Value,
        namespace: &str,
        bundle_crds: &HashMap<(String, String), bool>,
    ) -> anyhow::Result<()> {
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if self
            .namespaced(client, &api_version, &kind, bundle_crds)
            .await?
        {
            if !object["metadata"]["namespace"].is_string() {
                object["metadata"]["namespace"] = json!(namespace);
            }
        } else if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        Ok(())
    }
}

/// Applies the sources to the hub in the plan's tiers (a CRD is Established before its custom
/// resources), concurrently within a tier.
async fn store_sources(
    client: &Client,
    name: &str,
    objects: &[Value],
    plan: &Plan,
) -> anyhow::Result<usize> {
    let mut kinds = Kinds::default();
    let mut stored_now: HashMap<String, HashMap<String, kube::core::ObjectMeta>> = HashMap::new();
    let selector = format!("{}={name}", keys::SOURCE_OF);
    let mut unchanged = 0;
    for tier in plan.tiers() {
        let mut crds = Vec::new();
        // Located one after the other (discovery once per kind), applied concurrently.
        let mut located = Vec::new();
        for index in tier.iter().filter_map(|s| s.index) {
            let mut l =
                crate::apply::locate_cached(client, &objects[index], None, &mut kinds).await?;
            let hash = source_hash(&serde_json::to_value(&l.object)?);
            // What this Distribution already stored, one list per kind and namespace.
            let url = l.api.resource_url().to_owned();
            if !stored_now.contains_key(&url) {
                let listed = match l
                    .api
                    .list_metadata(&ListParams::default().labels(&selector))
                    .await
                {
                    Ok(list) => list
                        .items
                        .into_iter()
                        .map(|m| (m.name_any(), m.metadata))
                        .collect(),
                    // A namespace not created yet, a kind not served yet: nothing stored.
                    Err(_) => HashMap::new(),
                };
                stored_now.insert(url.clone(), listed);
            }
            if stored_now[&url]
                .get(&l.name)
                .is_some_and(|m| unchanged_on_hub(m, &hash))
            {
                unchanged += 1;
                continue;
            }
            l.object
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(keys::SOURCE_HASH.to_owned(), hash);
            located.push(l);
        }
        let results: Vec<anyhow::Result<()>> =
            stream::iter(located.into_iter().map(|l| async move {
                l.api
                    .patch(
                        &l.name,
                        &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
                        &Patch::Apply(&l.object),
                    )
                    .await
                    .with_context(|| format!("storing {} {} on the hub", l.kind, l.name))?;
                anyhow::Ok(())
            }))
            .buffer_unordered(32)
            .collect()
            .await;
        for step in &tier {
            if step.object.kind == "CustomResourceDefinition" {
                crds.push(step.object.name.clone());
            }
        }
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        for crd in crds {
            multicluster_core::cluster::wait_established(client, &crd, Duration::from_secs(30))
                .await
                .with_context(|| format!("waiting for CRD {crd} on the hub"))?;
        }
    }
    Ok(unchanged)
}

/// A digest of a source as `distribute` stores it. Only ever compared with a digest the same
/// binary wrote: a different build may re-store an unchanged object once, which is harmless.
fn source_hash(object: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.to_string().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Whether the hub already holds exactly what `distribute` would store: the digest matches and
/// no other manager has written to the object since (an edit on the hub is put right).
fn unchanged_on_hub(stored: &kube::core::ObjectMeta, hash: &str) -> bool {
    if stored
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::SOURCE_HASH))
        .map(String::as_str)
        != Some(hash)
    {
        return false;
    }
    let entries = stored.managed_fields.as_deref().unwrap_or_default();
    let ours = entries
        .iter()
        .filter(|e| e.manager.as_deref() == Some(crate::apply::FIELD_MANAGER))
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max();
    let others = entries
        .iter()
        .filter(|e| e.manager.as_deref() != Some(crate::apply::FIELD_MANAGER))
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max();
    match (ours, others) {
        (Some(ours), Some(others)) => others < ours,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Deletes hub objects an earlier `distribute` of `name` stored that this bundle no longer has, so
/// they leave the members too.
async fn prune_old_sources(client: &Client, name: &str, objects: &[Value]) -> anyhow::Result<()> {
    let api: Api<Distribution> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let Some(previous) = api.get_opt(name).await? else {
        return Ok(());
    };
    let keep: BTreeSet<distribution::ObjectKey> = objects
        .iter()
        .filter_map(distribution::ObjectKey::of)
        .collect();
    let selector = format!("{}={name}", keys::SOURCE_OF);
    let mut kinds = Kinds::default();
    for source in previous
        .spec
        .sources
        .iter()
        .filter_map(|s| s.selector.as_ref())
    {
        // A kind the hub no longer serves has no sources left to prune.
        let Ok(found) = kinds
            .resolve(client, &source.api_version, &source.kind)
            .await
        else {
            continue;
        };
        let resource = &found.resource;
        let api = found.api(client, source.namespace.as_deref());
        for item in api
            .list_metadata(&ListParams::default().labels(&selector))
            .await?
            .items
        {
            let key = distribution::ObjectKey {
                group: resource.group.clone(),
                kind: resource.kind.clone(),
                namespace: item.namespace(),
                name: item.name_any(),
            };
            if !keep.contains(&key) {
                eprintln!("Removing {key} from the sources: it is no longer in the bundle");
                api.delete(&item.name_any(), &DeleteParams::default())
                    .await?;
            }
        }
    }
    Ok(())
}

fn distribution_object(
    args: &DistributeArgs,
    name: &str,
    objects: &[Value],
    requested: &str,
) -> anyhow::Result<Value> {
    // One selector per kind and namespace: the hub server lists each once per sync.
    let mut kinds: BTreeSet<(String, String, Option<String>)> = BTreeSet::new();
    for o in objects {
        kinds.insert((
            o["apiVersion"].as_str().unwrap_or_default().to_owned(),
            o["kind"].as_str().unwrap_or_default().to_owned(),
            o["metadata"]["namespace"].as_str().map(str::to_owned),
        ));
    }
    let sources: Vec<Value> = kinds
        .into_iter()
        .map(|(api_version, kind, namespace)| {
            let mut selector = json!({"apiVersion": api_version, "kind": kind,
                                      "labelSelector": {"matchLabels": {keys::SOURCE_OF: name}}});
            if let Some(ns) = namespace {
                selector["namespace"] = json!(ns);
            }
            json!({ "selector": selector })
        })
        .collect();
    let mut targets = json!({"members": args.to});
    if let Some(policy) = &args.traffic_policy {
        targets["trafficPolicy"] = json!(policy);
    }
    if let Some(selector) = &args.selector {
        targets["selector"] = json!({"matchLabels": parse_labels(selector)?});
    }
    let mode = match args.mode {
        Mode::Once => DistributionMode::Once,
        Mode::Continuous => DistributionMode::Continuous,
    };
    let conflict_policy = conflict_policy(args.conflict_policy);
    let drift_policy = match args.drift_policy {
        Drift::Correct => DriftPolicy::Correct,
        Drift::Report => DriftPolicy::Report,
    };
    let deletion_policy = match args.deletion_policy {
        Deletion::Delete => DeletionPolicy::Delete,
        Deletion::Orphan => DeletionPolicy::Orphan,
    };
    Ok(json!({
        "apiVersion": "multicluster.dev/v1alpha1", "kind": "Distribution",
        "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE,
                     "annotations": {keys::SYNC_REQUESTED: requested}},
        "spec": {
            "sources": sources,
            "targets": targets,
            "mode": mode,
            "conflictPolicy": conflict_policy,
            "driftPolicy": drift_policy,
            "deletionPolicy": deletion_policy,
            // The user named every Secret in the bundle by passing its file.
            "includeSelectedSecrets": true,
            "dependencyRules": args.rules,
        }
    }))
}

fn conflict_policy(c: Conflicts) -> ConflictPolicy {
    match c {
        Conflicts::Abort => ConflictPolicy::Abort,
        Conflicts::Adopt => ConflictPolicy::Adopt,
        Conflicts::Overwrite => ConflictPolicy::Overwrite,
    }
}

/// Dry-runs `objects` (hub objects, in order) as Distribution `name` would write them to each target.
async fn preview_on_members(
    hub: &Client,
    name: &str,
    targets: &DistributionTargets,
    overrides: &[multicluster_core::api::MemberOverride],
    policy: ConflictPolicy,
    objects: &[Value],
) -> anyhow::Result<crate::distribution::preview::Preview> {
    let members = Api::<MemberCluster>::all(hub.clone())
        .list(&Default::default())
        .await?
        .items;
    let labels: BTreeMap<String, BTreeMap<String, String>> = members
        .iter()
        .map(|m| (m.name_any(), m.labels().clone()))
        .collect();
    let (chosen, unknown) = distribution::targets(targets, &labels)?;
    if !unknown.is_empty() {
        bail!("no MemberCluster named {}", unknown.join(", "));
    }
    let hub_id = multicluster_core::cluster::cluster_id(hub)
        .await
        .context("reading the hub's cluster ID (its kube-system namespace)")?;
    let owner = distribution::Owner {
        distribution: name,
        hub: &hub_id,
    };
    let mut previews = Vec::new();
    for member in members.iter().filter(|m| chosen.contains(&m.name_any())) {
        let member_name = member.name_any();
        let copies = objects
            .iter()
            .map(|o| distribution::for_member(o, owner, &member_name, overrides))
            .collect::<Result<Vec<_>, _>>()?;
        previews.push(async move {
            match crate::distribution::preview::member_client(hub, member).await {
                Ok(client) => Ok(crate::distribution::preview::member_changes(
                    &client,
                    &member_name,
                    owner,
                    policy,
                    copies,
                )
                .await),
                Err(e) => Err(e),
            }
        });
    }
    let mut preview = crate::distribution::preview::Preview::default();
    for changes in futures::future::join_all(previews).await {
        preview.changes.extend(changes?);
    }
    Ok(preview)
}

fn print_preview(
    format: OutputFormat,
    preview: &crate::distribution::preview::Preview,
) -> anyhow::Result<()> {
    output::print(format, preview)?;
    if format == OutputFormat::Table && preview.differs() {
        print!("\n{}", preview.diffs());
    }
    Ok(())
}

/// `kubectl multicluster diff NAME`: what syncing the stored Distribution would change on each
/// member now (drift included), from a dry run on each member.
pub async fn diff(client: Client, name: &str, format: OutputFormat) -> anyhow::Result<()> {
    let api: Api<Distribution> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let d = api
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("no Distribution {name} in {SYSTEM_NAMESPACE}"))?;
    let objects = read_sources(&client, &d).await?;
    let plan = distribution::plan(&objects, &d.spec.dependency_rules)?;
    let ordered: Vec<Value> = plan.in_order(&objects).into_iter().cloned().collect();
    let preview = preview_on_members(
        &client,
        name,
        &d.spec.targets,
        &d.spec.overrides,
        d.spec.conflict_policy,
        &ordered,
    )
    .await?;
    print_preview(format, &preview)?;
    if !preview.differs() && format == OutputFormat::Table {
        eprintln!("No differences: every member matches the hub.");
    }
    Ok(())
}

/// The Distribution's sources as they are on the hub now.
async fn read_sources(client: &Client, d: &Distribution) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut kinds = Kinds::default();
    for source in &d.spec.sources {
        let (api_version, kind, namespace) = match (&source.object, &source.selector) {
            (Some(r), _) => (&r.api_version, &r.kind, &r.namespace),
            (None, Some(s)) => (&s.api_version, &s.kind, &s.namespace),
            (None, None) => continue,
        };
        let found_kind = kinds
            .resolve(client, api_version, kind)
            .await
            .with_context(|| format!("the hub does not serve {api_version} {kind}"))?;
        let api = found_kind.api(client, namespace.as_deref());
        let mut found = Vec::new();
        if let Some(r) = &source.object {
            found.extend(api.get_opt(&r.name).await?);
        } else if let Some(s) = &source.selector {
            if !distribution::may_leave_hub(&d.spec, api_version, kind, false) {
                continue;
            }
            let selector = kube::core::Selector::try_from(s.label_selector.clone())?;
            found.extend(
                api.list(&ListParams::default().labels(&selector.to_string()))
                    .await?
                    .items,
            );
        }
        for mut object in found
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?
        {
            object["apiVersion"] = json!(found_kind.resource.api_version);
            object["kind"] = json!(found_kind.resource.kind);
            out.push(object);
        }
    }
    Ok(out)
}

fn parse_rule(text: &str) -> Result<DependencyRule, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [api_version, kind, path, references_kind, rest @ ..]
            if rest.is_empty() || rest == ["secret-bearing"] =>
        {
            Ok(DependencyRule {
                api_version: (*api_version).to_owned(),
                kind: (*kind).to_owned(),
                path: (*path).to_owned(),
                references_kind: (*references_kind).to_owned(),
                secret_bearing: !rest.is_empty(),
            })
        }
        _ => Err(format!(
            "expected APIVERSION,KIND,PATH,REFERENCED_KIND[,secret-bearing], got {text:?}"
        )),
    }
}

fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow!("--selector takes key=value pairs, got {pair:?}"))
        })
        .collect()
}

/// Waits until the hub server has finished the sync this run asked for, showing each member's
/// progress on a terminal.
async fn wait(
    api: &Api<Distribution>,
    name: &str,
    requested: &str,
    generation: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<Distribution> {
    let deadline = tokio::time::Instant::now() + timeout;
    let bars = std::io::stderr()
        .is_terminal()
        .then(indicatif::MultiProgress::new);
    let mut member_bars: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    loop {
        let d = api.get(name).await?;
        let status = d.status.clone().unwrap_or_default();
        if let Some(bars) = &bars {
            for m in &status.members {
                let bar = member_bars.entry(m.member.clone()).or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new(u64::from(m.total)));
                    bar.set_style(style.clone());
                    bar.set_prefix(m.member.clone());
                    bar
                });
                bar.set_length(u64::from(m.total));
                bar.set_position(u64::from(m.applied));
                bar.set_message(m.message.clone().unwrap_or_default());
            }
        }
        let finished = status.observed_sync_request.as_deref() == Some(requested)
            && status.observed_generation >= generation;
        if finished {
            for bar in member_bars.values() {
                bar.finish();
            }
            return Ok(d);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the hub server did not finish syncing Distribution {name} within {}s \
                 (is multicluster-webhook running? `kubectl multicluster distribute status {name}` shows progress)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Distribution's result, member by member.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub synced: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    #[serde(flatten)]
    pub status: DistributionStatus,
}

impl Report {
    pub fn of(d: &Distribution) -> Self {
        let status = d.status.clone().unwrap_or_default();
        let synced = status.conditions.iter().find(|c| c.type_ == "Synced");
        Report {
            name: d.name_any(),
            synced: synced.map(|c| c.status.clone()),
            reason: synced.map(|c| c.reason.clone()),
            message: synced.map(|c| c.message.clone()),
            status,
        }
    }
}

impl Tabular for Report {
    fn headers(&self) -> Vec<&'static str> {
        vec!["member", "object", "state", "message"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for m in &self.status.members {
            rows.push(vec![
                m.member.clone(),
                format!("{}/{} applied", m.applied, m.total),
                if m.applied == m.total && m.message.is_none() {
                    "InSync".into()
                } else {
                    "NotInSync".into()
                },
                m.message.clone().unwrap_or_default(),
            ]);
            for o in m
                .objects
                .iter()
                .filter(|o| o.state != ObjectSyncState::Applied || o.message.is_some())
            {
                rows.push(vec![
                    String::new(),
                    format!(
                        "{} {}{}",
                        o.object.kind,
                        o.object
                            .namespace
                            .as_ref()
                            .map(|n| format!("{n}/"))
                            .unwrap_or_default(),
                        o.object.name
                    ),
                    format!("{:?}", o.state),
                    o.message.clone().unwrap_or_default(),
                ]);
            }
        }
        rows
    }
}

/// `--plan`: the order, tier by tier, and why.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub steps: Vec<PlanRow>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    pub tier: usize,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub why: String,
}

impl PlanReport {
    pub fn of(plan: &Plan) -> Self {
        PlanReport {
            steps: plan
                .steps
                .iter()
                .map(|s| PlanRow {
                    tier: s.tier,
                    kind: s.object.kind.clone(),
                    namespace: s.object.namespace.clone(),
                    name: s.object.name.clone(),
                    why: s.why(),
                })
                .collect(),
        }
    }
}

impl Tabular for PlanReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["tier", "kind", "namespace", "name", "why"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.steps
            .iter()
            .map(|s| {
                vec![
                    s.tier.to_string(),
                    s.kind.clone(),
                    s.namespace.clone().unwrap_or_default(),
                    s.name.clone(),
                    s.why.clone(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_parses_from_the_command_line() {
        let rule =
            parse_rule("example.com/v1,Profile,.spec.credentials.secretName,Secret,secret-bearing")
                .unwrap();
        assert_eq!(rule.kind, "Profile");
        assert!(rule.secret_bearing);
        assert!(
            !parse_rule("v1,ConfigMap,.data.x,Secret")
                .unwrap()
                .secret_bearing
        );
        assert!(parse_rule("v1,ConfigMap").is_err());
        assert!(parse_rule("v1,ConfigMap,.a,Secret,oops").is_err());
    }

    #[test]
    fn malformed_yaml_names_the_file_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed\n").unwrap();
        let err = read_all(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(
            err.contains("b.yaml") && err.contains("nothing was stored"),
            "{err}"
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "just: text\n").unwrap();
        let err = read_all(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(err.contains("document 1"), "{err}");
    }

    #[test]
    fn lists_are_unpacked_and_directories_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2.json"), r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]}"#).unwrap();
        std::fs::write(
            dir.path().join("1.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
        let names: Vec<String> = read_all(&[dir.path().to_owned()])
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn a_source_is_stored_again_when_its_content_or_someone_else_changed_it() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
        let at = |secs: i64| {
            Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
            ))
        };
        let meta = |hash: &str, entries: Vec<(&str, i64)>| kube::core::ObjectMeta {
            annotations: Some([(keys::SOURCE_HASH.to_owned(), hash.to_owned())].into()),
            managed_fields: Some(
                entries
                    .into_iter()
                    .map(|(m, t)| ManagedFieldsEntry {
                        manager: Some(m.into()),
                        time: at(t),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        assert!(unchanged_on_hub(
            &meta("h", vec![("kubectl-multicluster", 10)]),
            "h"
        ));
        assert!(!unchanged_on_hub(
            &meta("h", vec![("kubectl-multicluster", 10)]),
            "other"
        ));
        assert!(!unchanged_on_hub(
            &meta(
                "h",
                vec![("kubectl-multicluster", 10), ("kubectl-edit", 20)]
            ),
            "h"
        ));
        assert!(unchanged_on_hub(
            &meta(
                "h",
                vec![("kubectl-create", 5), ("kubectl-multicluster", 10)]
            ),
            "h"
        ));
        assert!(!unchanged_on_hub(&kube::core::ObjectMeta::default(), "h"));
    }

    #[test]
    fn a_default_name_is_a_dns_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("My_App.yaml");
        std::fs::write(&path, "").unwrap();
        assert_eq!(default_name(&path).unwrap(), "my-app");
    }
}
