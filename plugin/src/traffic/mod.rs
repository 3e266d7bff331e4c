//! `kubectl multicluster traffic create|show|set|drain|undrain`: TrafficPolicies, which members
//! serve with what weight, and how that moves when members fail and recover.

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{
    GatewayParent, Role, TrafficMember, TrafficMode, TrafficPolicy, TrafficPolicySpec,
};
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum TrafficCommand {
    /// Create or replace a TrafficPolicy
    #[command(after_help = "Example:\n  \
        kubectl multicluster traffic create web --mode active-standby \\\n    \
        --member member-1=100 --member member-2=100:1:standby --failback 3")]
    Create(CreateArgs),
    /// Each member's health, configured and active weight, role, and the recent transitions
    Show { name: String },
    /// Change one member's weight, priority or role
    Set(SetArgs),
    /// Move a member's share away on purpose (maintenance)
    Drain { name: String, member: String },
    /// Give a drained member its share back
    Undrain { name: String, member: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    #[arg(long, value_enum, default_value_t = Mode::MultiActive)]
    pub mode: Mode,
    /// A member: NAME[=WEIGHT][:PRIORITY][:active|standby] (weight 100, priority 0, active by
    /// default; lower priority is preferred); repeat for each member
    #[arg(long = "member", value_name = "NAME[=WEIGHT][:PRIORITY][:ROLE]", required = true, value_parser = parse_member)]
    pub members: Vec<TrafficMember>,
    /// Consecutive healthy probes before a recovered member gets its share back
    #[arg(long, default_value_t = 3)]
    pub failback: u32,
    /// Services (in the policy's namespace on the members) whose traffic the policy steers
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// A Gateway API Gateway on the members ([NAMESPACE/]NAME): importing members get an HTTPRoute
    /// attached to it with the active weights as backend weights
    #[arg(long, value_name = "[NAMESPACE/]NAME", value_parser = parse_gateway)]
    pub gateway: Option<GatewayParent>,
}

fn parse_gateway(s: &str) -> Result<GatewayParent, String> {
    let (namespace, name) = match s.split_once('/') {
        Some((ns, n)) => (Some(ns.to_owned()), n),
        None => (None, s),
    };
    if name.is_empty() || namespace.as_deref() == Some("") {
        return Err(format!("{s:?}: expected [NAMESPACE/]NAME"));
    }
    Ok(GatewayParent {
        name: name.to_owned(),
        namespace,
        section_name: None,
    })
}

#[derive(Args, Debug)]
pub struct SetArgs {
    pub name: String,
    pub member: String,
    #[arg(long)]
    pub weight: Option<u32>,
    #[arg(long)]
    pub priority: Option<u32>,
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    MultiActive,
    ActiveStandby,
    ActiveWithOneStandby,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Active,
    Standby,
}

fn parse_member(text: &str) -> Result<TrafficMember, String> {
    let mut parts = text.split(':');
    let head = parts.next().unwrap_or_default();
    let (name, weight) = match head.split_once('=') {
        Some((n, w)) => (
            n,
            w.parse::<u32>()
                .map_err(|_| format!("weight {w:?} is not a number"))?,
        ),
        None => (head, 100),
    };
    if name.is_empty() {
        return Err(format!(
            "{text:?}: expected NAME[=WEIGHT][:PRIORITY][:ROLE]"
        ));
    }
    let mut priority = 0;
    let mut role = Role::Active;
    for part in parts {
        match part {
            "active" => role = Role::Active,
            "standby" => role = Role::Standby,
            p => {
                priority = p
                    .parse()
                    .map_err(|_| format!("{p:?} is neither a priority nor a role"))?
            }
        }
    }
    if weight > 1000 || priority > 1000 {
        return Err("weight and priority go from 0 to 1000".into());
    }
    Ok(TrafficMember::new(name, weight, priority, role))
}

pub async fn run(
    cmd: TrafficCommand,
    client: Client,
    namespace: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let api: Api<TrafficPolicy> = Api::namespaced(client, namespace);
    match cmd {
        TrafficCommand::Create(args) => {
            let policy = TrafficPolicy::new(
                &args.name,
                TrafficPolicySpec {
                    mode: match args.mode {
                        Mode::MultiActive => TrafficMode::MultiActive,
                        Mode::ActiveStandby => TrafficMode::ActiveStandby,
                        Mode::ActiveWithOneStandby => TrafficMode::ActiveWithOneStandby,
                    },
                    members: args.members,
                    failback_after_healthy_probes: args.failback,
                    services: args.services,
                    gateway: args.gateway,
                },
            );
            let stored = api
                .patch(
                    &args.name,
                    &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
                    &Patch::Apply(&policy),
                )
                .await
                .with_context(|| format!("storing TrafficPolicy {namespace}/{}", args.name))?;
            output::print(format, &Report::of(&stored))
        }
        TrafficCommand::Show { name } => {
            let policy = api
                .get_opt(&name)
                .await?
                .ok_or_else(|| anyhow!("no TrafficPolicy {namespace}/{name}"))?;
            let report = Report::of(&policy);
            output::print(format, &report)?;
            if format == OutputFormat::Table {
                print!("{}", report.transitions_text());
            }
            Ok(())
        }
        TrafficCommand::Set(args) => {
            let policy = edit(&api, &args.name, &args.member, |m| {
                if let Some(w) = args.weight {
                    m.weight = w;
                }
                if let Some(p) = args.priority {
                    m.priority = p;
                }
                if let Some(r) = args.role {
                    m.role = match r {
                        RoleArg::Active => Role::Active,
                        RoleArg::Standby => Role::Standby,
                    };
                }
            })
            .await?;
            output::print(format, &Report::of(&policy))
        }
        TrafficCommand::Drain { name, member } => {
            let policy = edit(&api, &name, &member, |m| m.drained = true).await?;
            eprintln!(
                "Drained {member}: its share moves to the others until `traffic undrain {name} {member}`"
            );
            output::print(format, &Report::of(&policy))
        }
        TrafficCommand::Undrain { name, member } => {
            let policy = edit(&api, &name, &member, |m| m.drained = false).await?;
            output::print(format, &Report::of(&policy))
        }
    }
}

/// Changes one member of a policy with a compare-and-swap write (retried once if someone else
/// wrote in between).
async fn edit(
    api: &Api<TrafficPolicy>,
    name: &str,
    member: &str,
    change: impl Fn(&mut TrafficMember),
) -> anyhow::Result<TrafficPolicy> {
    for attempt in 0..3 {
        let mut policy = api
            .get_opt(name)
            .await?
            .ok_or_else(|| anyhow!("no TrafficPolicy {name}"))?;
        let Some(m) = policy.spec.members.iter_mut().find(|m| m.name == member) else {
            bail!(
                "TrafficPolicy {name} has no member {member} (it has {})",
                policy
                    .spec
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        change(m);
        match api.replace(name, &PostParams::default(), &policy).await {
            Ok(p) => return Ok(p),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 2 => continue,
            Err(e) => return Err(e).with_context(|| format!("updating TrafficPolicy {name}")),
        }
    }
    bail!("TrafficPolicy {name} kept changing; try again")
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub mode: TrafficMode,
    pub serving: Option<String>,
    pub message: Option<String>,
    pub members: Vec<MemberRow>,
    pub transitions: Vec<multicluster_core::api::TrafficTransition>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub name: String,
    pub role: Role,
    pub priority: u32,
    pub configured_weight: u32,
    pub active_weight: Option<u32>,
    pub healthy: Option<bool>,
    pub state: String,
}

impl Report {
    fn of(policy: &TrafficPolicy) -> Self {
        let status = policy.status.clone().unwrap_or_default();
        let serving = status.conditions.iter().find(|c| c.type_ == "Serving");
        Report {
            name: policy.name_any(),
            mode: policy.spec.mode,
            serving: serving.map(|c| c.status.clone()),
            message: serving.map(|c| c.message.clone()),
            members: policy
                .spec
                .members
                .iter()
                .map(|m| {
                    let state = status.member_states.get(&m.name);
                    let active = status.active_weights.get(&m.name).copied();
                    let described = match (m.drained, state, active) {
                        (true, _, _) => "drained".to_owned(),
                        (_, None, _) => "not probed yet".to_owned(),
                        (_, Some(s), _) if !s.healthy => "unhealthy".to_owned(),
                        (_, Some(s), _) if s.recovering.is_some() => format!(
                            "recovering ({} of {} healthy probes)",
                            s.recovering.unwrap_or_default(),
                            policy.spec.failback_after_healthy_probes
                        ),
                        (_, _, Some(w)) if w > 0 => "serving".to_owned(),
                        _ => "standing by".to_owned(),
                    };
                    MemberRow {
                        name: m.name.clone(),
                        role: m.role,
                        priority: m.priority,
                        configured_weight: m.weight,
                        active_weight: active,
                        healthy: state.map(|s| s.healthy),
                        state: described,
                    }
                })
                .collect(),
            transitions: status.transitions,
        }
    }

    fn transitions_text(&self) -> String {
        if self.transitions.is_empty() {
            return String::new();
        }
        let mut out = String::from("\nRecent transitions (newest first):\n");
        for t in &self.transitions {
            out.push_str(&format!("  {}  {}\n", t.time.0, t.reason));
        }
        out
    }
}

impl Tabular for Report {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "member", "role", "priority", "healthy", "weight", "active", "state",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    format!("{:?}", m.role),
                    m.priority.to_string(),
                    m.healthy.map_or("Unknown".into(), |h| {
                        if h { "True".into() } else { "False".into() }
                    }),
                    m.configured_weight.to_string(),
                    m.active_weight.map_or("-".into(), |w| w.to_string()),
                    m.state.clone(),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_from_the_command_line() {
        let m = parse_member("member-2=50:1:standby").unwrap();
        assert_eq!(
            (m.name.as_str(), m.weight, m.priority, m.role),
            ("member-2", 50, 1, Role::Standby)
        );
        let m = parse_member("member-1").unwrap();
        assert_eq!((m.weight, m.priority, m.role), (100, 0, Role::Active));
        assert!(parse_member("m=heavy").is_err());
        assert!(parse_member("m:sometimes").is_err());
        assert!(parse_member("=5").is_err());
        assert!(parse_member("m=5000").is_err());
    }
}
