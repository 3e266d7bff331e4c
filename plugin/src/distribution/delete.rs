//! `kubectl multicluster distribute delete NAME`: deletes a Distribution and follows the hub
//! server as it removes the copies from each member (or, with `--orphan`, only their labels), then
//! the sources `distribute` stored on the hub.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{DeletionPolicy, Distribution};
use multicluster_core::keys;
use serde::Serialize;
use serde_json::json;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl multicluster distribute delete shop\n  \
    kubectl multicluster distribute delete shop --orphan\n  \
    kubectl multicluster distribute delete shop --force --timeout 1m")]
pub struct DeleteArgs {
    /// The Distribution (in multicluster-system)
    pub name: String,
    /// Keep the copies on the members and the sources on the hub; only take off the labels that
    /// tie them to the Distribution
    #[arg(long)]
    pub orphan: bool,
    /// Do not wait for members that do not answer: their copies stay there (and are listed)
    #[arg(long)]
    pub force: bool,
    /// Wait until the copies are gone and the Distribution with them (--wait=false returns at once)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub wait: bool,
    /// How long to wait
    #[arg(long, default_value = "5m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

/// What `distribute delete` did.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub name: String,
    pub deletion_policy: DeletionPolicy,
    /// Whether the Distribution is gone (false with --wait=false).
    pub gone: bool,
}

impl Tabular for Deleted {
    fn headers(&self) -> Vec<&'static str> {
        vec!["distribution", "policy", "gone"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![
            self.name.clone(),
            format!("{:?}", self.deletion_policy),
            self.gone.to_string(),
        ]]
    }
}

pub async fn run(client: Client, args: DeleteArgs, format: OutputFormat) -> anyhow::Result<()> {
    let name = &args.name;
    let api: Api<Distribution> = Api::namespaced(client, SYSTEM_NAMESPACE);
    let d = api
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("no Distribution {name} in {SYSTEM_NAMESPACE}"))?;
    let mut policy = d.spec.deletion_policy;
    if args.orphan && policy != DeletionPolicy::Orphan {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"deletionPolicy": "Orphan"}})),
        )
        .await?;
        policy = DeletionPolicy::Orphan;
    }
    if args.force {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {keys::RELEASE_UNREACHABLE: "true"}}}),
            ),
        )
        .await?;
    }
    api.delete(name, &DeleteParams::default()).await?;
    let members = d.status.as_ref().map_or(0, |s| s.members.len());
    eprintln!(
        "Distribution {name} deleted; the hub server {} on {members} member(s)",
        match policy {
            DeletionPolicy::Delete => "removes its copies, then its stored sources,",
            DeletionPolicy::Orphan => "takes its labels off the copies and sources",
        }
    );
    let gone = if args.wait {
        let members: Vec<String> = d
            .status
            .iter()
            .flat_map(|s| s.members.iter().map(|m| m.member.clone()))
            .collect();
        wait_gone(&api, name, members, args.timeout).await?;
        true
    } else {
        false
    };
    output::print(
        format,
        &Deleted {
            name: name.clone(),
            deletion_policy: policy,
            gone,
        },
    )
}

/// Polls until the Distribution is gone, printing a line whenever a member's progress changes
/// (and when it is done).
async fn wait_gone(
    api: &Api<Distribution>,
    name: &str,
    members: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    for member in members {
        eprintln!("{member}: removing");
        shown.insert(member, String::new());
    }
    loop {
        let Some(d) = api.get_opt(name).await? else {
            for member in shown.keys() {
                eprintln!("{member}: done");
            }
            return Ok(());
        };
        let status = d.status.unwrap_or_default();
        let now: BTreeMap<String, String> = status
            .members
            .iter()
            .map(|m| (m.member.clone(), m.message.clone().unwrap_or_default()))
            .collect();
        for (member, message) in &now {
            if shown.get(member) != Some(message) {
                eprintln!(
                    "{member}: {}",
                    if message.is_empty() {
                        "removing"
                    } else {
                        message
                    }
                );
            }
        }
        for member in shown.keys().filter(|m| !now.contains_key(*m)) {
            eprintln!("{member}: done");
        }
        shown = now;
        if tokio::time::Instant::now() > deadline {
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Synced")
                .map(|c| c.message.clone())
                .unwrap_or_else(|| {
                    if d.metadata.finalizers.is_some() {
                        "is multicluster-webhook running?".to_owned()
                    } else {
                        String::new()
                    }
                });
            bail!(
                "Distribution {name} is still being deleted after {}s: {why}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
