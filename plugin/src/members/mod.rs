//! `kubectl multicluster join|unjoin|list|status`: registering members on the hub and showing
//! their health.
//!
//! `join` works with the joining user's credentials for the member only to create the hub's own
//! accounts there, one per capability (`multicluster_core::members::join`); what the hub stores is
//! those accounts' tokens, never the user's credentials. It checks everything it can before it
//! writes anything, and removes what it created on the member if a later step fails, so a failed
//! join leaves nothing half-created.

pub mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Event, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{HealthCheck, MemberCluster, MemberClusterSpec, Role, SecretRef};
use multicluster_core::members::about;
use multicluster_core::members::join::{
    self as member, CAPABILITY_LABEL, Capability, Grants, MEMBER_LABEL, secret_keys,
};
use multicluster_core::members::proxy::ProxyAccess;
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The member's name on the hub
    pub name: String,
    /// Kubeconfig with the member's credentials (default: the hub's kubeconfig)
    #[arg(long, value_name = "FILE")]
    pub member_kubeconfig: Option<PathBuf>,
    /// The member's context in that kubeconfig
    #[arg(long, value_name = "NAME")]
    pub member_context: String,
    /// Labels of the MemberCluster, k=v,k2=v2
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub weight: u32,
    #[arg(long, default_value_t = 0)]
    pub priority: u32,
    #[arg(long, value_enum, default_value = "active")]
    pub role: RoleArg,
    /// Let the hub distribute Roles, ClusterRoles and their bindings here (its distribution
    /// account may then grant whatever those roles grant)
    #[arg(long)]
    pub allow_rbac: bool,
    /// Let the hub snapshot and restore namespaces here (its snapshots account reads and writes
    /// their Secrets)
    #[arg(long)]
    pub allow_snapshots: bool,
    /// Let snapshots run quiesce hook commands in pods (`pods/exec`); implies --allow-snapshots
    #[arg(long)]
    pub allow_hooks: bool,
    /// A hub user the hub may act as on this member through `kubectl multicluster proxy`
    /// (repeat, or a,b; a hub service account is system:serviceaccount:NS:NAME); without any
    /// the hub gets no proxy account here
    #[arg(long, value_delimiter = ',', value_name = "USER")]
    pub proxy_user: Vec<String>,
    /// A group the hub may assert for proxied users on this member (repeat, or a,b; never a
    /// system: group)
    #[arg(long, value_delimiter = ',', value_name = "GROUP")]
    pub proxy_group: Vec<String>,
    /// Show what would be created where, and create nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not set up the clusterset.local DNS server on the member (by default join starts it
    /// unless one runs, and has the member's CoreDNS forward the zone to it)
    #[arg(long)]
    pub no_clusterset_dns: bool,
    /// The clusterset DNS server's image (the hub server's)
    #[arg(long, value_name = "IMAGE", default_value_t = multicluster_core::install::default_image())]
    pub clusterset_dns_image: String,
    /// The image the data mover pods of snapshots and restores run here (the hub server's
    /// --mover-image): the only one the member admits for the hub's snapshots account. Recorded
    /// in multicluster-system/multicluster-data-mover; without this flag a recorded image is kept,
    /// and a new record names this release's image
    #[arg(long, value_name = "IMAGE")]
    pub mover_image: Option<String>,
}

impl JoinArgs {
    fn grants(&self) -> anyhow::Result<Grants> {
        if !self.proxy_group.is_empty() && self.proxy_user.is_empty() {
            bail!(
                "--proxy-group needs at least one --proxy-user: the hub always acts as a user on the member"
            );
        }
        Ok(Grants {
            rbac: self.allow_rbac,
            snapshots: self.allow_snapshots || self.allow_hooks,
            hooks: self.allow_hooks,
            proxy: ProxyAccess::from_hub_names(&self.proxy_user, &self.proxy_group)?,
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Active,
    Standby,
}

#[derive(Args, Debug)]
pub struct UnjoinArgs {
    pub name: String,
    /// Kubeconfig with the member's credentials, to remove the hub's account there
    #[arg(long, value_name = "FILE")]
    pub member_kubeconfig: Option<PathBuf>,
    /// The member's context, to remove the hub's account there
    #[arg(long, value_name = "NAME")]
    pub member_context: Option<String>,
    /// Leave the hub's accounts on the member
    #[arg(long)]
    pub keep_remote: bool,
    /// Leave the Distributions' copies on the member (by default they are removed first, while
    /// the hub still holds the member's credentials)
    #[arg(long)]
    pub keep_copies: bool,
    /// How long to wait for the hub server to remove the copies
    #[arg(long, default_value = "5m", value_parser = multicluster_core::duration::parse)]
    pub timeout: Duration,
}

async fn member_client(
    kubeconfig: Option<&PathBuf>,
    hub_kubeconfig: Option<&PathBuf>,
    context: &str,
) -> anyhow::Result<(Client, Config)> {
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let mut config = match kubeconfig.or(hub_kubeconfig) {
        Some(path) => {
            Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        None => Config::from_kubeconfig(&options).await?,
    }
    .clone();
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    Ok((Client::try_from(config.clone())?, config))
}

/// Turns a failed member request into a sentence that says which kind of failure it was.
fn explain(member: &str, url: &str, e: kube::Error) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 401 => anyhow!(
            "the member {member} ({url}) rejected the credentials: {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow!(
            "missing permission on member {member} ({url}): {}",
            s.message
        ),
        kube::Error::Api(_) => anyhow!("member {member} ({url}) refused: {e}"),
        _ => anyhow!("cannot reach member {member} at {url}: {e}"),
    }
}

/// What the joining user must be allowed to do on the member.
const NEEDED: [(&str, &str, &str); 8] = [
    ("create", "", "namespaces"),
    ("create", "", "serviceaccounts"),
    ("create", "", "serviceaccounts/token"),
    ("create", "rbac.authorization.k8s.io", "clusterroles"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ("create", "rbac.authorization.k8s.io", "roles"),
    ("create", "rbac.authorization.k8s.io", "rolebindings"),
    // The member's identity in the clusterset (About API).
    ("create", "about.k8s.io", "clusterproperties"),
];

async fn missing_permissions(client: &Client) -> anyhow::Result<Vec<String>> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for (verb, group, resource) in NEEDED {
        let (resource, subresource) = resource
            .split_once('/')
            .map_or((resource, None), |(r, s)| (r, Some(s)));
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource: subresource.map(str::to_owned),
                    namespace: Some(SYSTEM_NAMESPACE.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            let what = subresource.map_or(resource.to_owned(), |s| format!("{resource}/{s}"));
            missing.push(format!(
                "{verb} {what}{}",
                if group.is_empty() {
                    String::new()
                } else {
                    format!(".{group}")
                }
            ));
        }
    }
    Ok(missing)
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PlanRow {
    pub cluster: String,
    pub object: String,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct Plan(pub Vec<PlanRow>);

impl Tabular for Plan {
    fn headers(&self) -> Vec<&'static str> {
        vec!["cluster", "object"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|r| vec![r.cluster.clone(), r.object.clone()])
            .collect()
    }
}

fn object_label(o: &serde_json::Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!(
            "{} {ns}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        ),
        None => format!(
            "{} {}",
            o["kind"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        ),
    }
}

pub async fn join(
    args: JoinArgs,
    hub: Client,
    hub_kubeconfig: Option<&PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let (member, config) = member_client(
        args.member_kubeconfig.as_ref(),
        hub_kubeconfig,
        &args.member_context,
    )
    .await?;
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let name = &args.name;
    // 1. Check, before writing anything.
    check_member(&member, name, &url, &args.member_context).await?;
    let members: Api<MemberCluster> = Api::all(hub.clone());
    members.list(&ListParams::default().limit(1)).await.map_err(|e| {
        anyhow!("the hub does not serve MemberClusters ({e}); install the hub first with `kubectl multicluster init`")
    })?;
    let labels = parse_labels(&args.labels)?;
    let base = member::secret_name(name);
    let grants = args.grants()?;
    if args.dry_run {
        return output::print(
            format,
            &join_plan(name, &url, &base, &grants, !args.no_clusterset_dns),
        );
    }

    // 2. The hub's accounts on the member; removed again if anything after this fails.
    eprintln!("Creating the hub's accounts on member {name} ({url})");
    let result = async {
        crate::apply::apply_objects(&member, &member::member_objects(&grants)).await?;
        if grants.snapshots {
            record_mover_image(&member, args.mover_image.as_deref()).await?;
        }
        let ca = config
            .root_cert
            .as_deref()
            .map(member::pem_of)
            .unwrap_or_default();
        for capability in Capability::granted(&grants) {
            let token = issue_token(&member, capability, name, &url, &ca).await?;
            let mut data = vec![
                (secret_keys::SERVER, url.clone()),
                (secret_keys::CA, ca.clone()),
                (secret_keys::TOKEN, token.token),
                (secret_keys::EXPIRES, token.expires),
            ];
            if capability == Capability::Proxy {
                data.push((secret_keys::PROXY_USERS, grants.proxy.users.join("\n")));
                data.push((secret_keys::PROXY_GROUPS, grants.proxy.groups.join("\n")));
            }
            store_credentials(&hub, name, capability, &capability.secret_name(&base), data).await?;
        }
        eprintln!(
            "Stored the member's endpoint, CA and a token per capability on the hub ({})",
            Capability::granted(&grants)
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cluster_id = cluster_identity(&hub, &member, name).await?;
        eprintln!(
            "Member {name} has cluster ID {cluster_id} ({} {})",
            about::KIND,
            about::CLUSTER_ID
        );
        let mut mc = MemberCluster::new(
            name,
            MemberClusterSpec {
                cluster_id: Some(cluster_id),
                endpoint: url.clone(),
                credentials_secret: SecretRef { name: base.clone() },
                weight: args.weight,
                priority: args.priority,
                role: match args.role {
                    RoleArg::Active => Role::Active,
                    RoleArg::Standby => Role::Standby,
                },
                health: HealthCheck::default(),
            },
        );
        mc.metadata.labels = Some(labels);
        // Joining an existing name again updates it (endpoint, tokens, labels, weights, grants).
        members
            .patch(
                name,
                &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
                &Patch::Apply(&mc),
            )
            .await
            .context("creating the MemberCluster on the hub")?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("Join failed: removing what it created on the member and the hub");
        remove_remote(&member).await;
        remove_credentials(&hub, name, |_| true).await;
        return Err(e.context(format!("joining {name}; nothing was left behind")));
    }
    // 3. What this join no longer grants (a join again without a flag), and what a join before
    //    per-capability accounts created (one account for everything), goes.
    remove_ungranted(&member, &grants).await;
    remove_credentials(&hub, name, |c| {
        !c.is_some_and(|c| Capability::granted(&grants).contains(&c))
    })
    .await;
    // 4. Clusterset DNS: the member works without it, so a failure is reported, not undone.
    if !args.no_clusterset_dns {
        match crate::services::dns::install(&member, &args.clusterset_dns_image).await {
            Ok(report) => report.iter().for_each(|line| eprintln!("{line}")),
            Err(e) => eprintln!(
                "warning: the clusterset DNS server was not set up on {name}: {e:#}. The member is \
                 joined; apply manifests/clusterset-dns.yaml there and forward clusterset.local to \
                 it from its cluster DNS (docs/services.md, Clusterset DNS), or join again"
            ),
        }
    }
    eprintln!(
        "Joined {name}; the hub server probes it and reports its health in `kubectl multicluster list`"
    );
    output::print(format, &members_report(&hub, Some(name)).await?)
}

/// The member's About API properties (KEP-2149): its cluster ID (`id.k8s.io`, kept when the member
/// has one, else the UID of its `kube-system` namespace) and its clusterset (`clusterset.k8s.io`,
/// this hub's). Installs the `ClusterProperty` CRD when the member lacks it. A member that already
/// belongs to another clusterset is refused. Returns the cluster ID.
async fn cluster_identity(hub: &Client, member: &Client, name: &str) -> anyhow::Result<String> {
    use kube::api::DynamicObject;
    let crd = serde_saphyr::from_str(about::CRD_YAML).context("parsing the About API CRD")?;
    crate::apply::install_these_crds(member, &[crd])
        .await
        .context("installing the About API (ClusterProperty) CRD on the member")?;
    let properties: Api<DynamicObject> = Api::all_with(member.clone(), &about::api_resource());
    let value_of = |p: Option<DynamicObject>| {
        p.and_then(|p| p.data["spec"]["value"].as_str().map(str::to_owned))
    };
    let clusterset = about::clusterset_of(
        &multicluster_core::cluster::cluster_id(hub)
            .await
            .context("reading the hub's cluster ID")?,
    );
    let existing_set = value_of(properties.get_opt(about::CLUSTERSET).await?);
    if let Some(why) = about::clusterset_refusal(name, existing_set.as_deref(), &clusterset) {
        bail!(why);
    }
    let id = match value_of(properties.get_opt(about::CLUSTER_ID).await?) {
        Some(id) => id,
        None => multicluster_core::cluster::cluster_id(member)
            .await
            .context("reading the member's kube-system namespace for its cluster ID")?,
    };
    crate::apply::apply_objects(
        member,
        &[
            about::property(about::CLUSTER_ID, &id),
            about::property(about::CLUSTERSET, &clusterset),
        ],
    )
    .await
    .context("writing the member's ClusterProperties")?;
    Ok(id)
}

/// The member answers, and the joining user's credentials there may create what join creates.
async fn check_member(member: &Client, name: &str, url: &str, context: &str) -> anyhow::Result<()> {
    member
        .apiserver_version()
        .await
        .map_err(|e| explain(name, url, e))?;
    let missing =
        missing_permissions(member)
            .await
            .map_err(|e| match e.downcast::<kube::Error>() {
                Ok(e) => explain(name, url, e),
                Err(e) => e,
            })?;
    if !missing.is_empty() {
        bail!(
            "the credentials of context {context} lack permissions on member {name} ({url}) that join needs: {}; nothing was created",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `--label k=v` flags as a label map.
fn parse_labels(flags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    flags
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("label {l:?} is not k=v"))
        })
        .collect()
}

/// What `join --dry-run` says it would create, on the member and on the hub.
fn join_plan(name: &str, url: &str, base: &str, grants: &Grants, clusterset_dns: bool) -> Plan {
    let mut rows: Vec<PlanRow> = member::member_objects(grants)
        .iter()
        .map(|o| PlanRow {
            cluster: format!("member {name} ({url})"),
            object: object_label(o),
        })
        .collect();
    for capability in Capability::granted(grants) {
        rows.push(PlanRow {
            cluster: format!("member {name}"),
            object: format!(
                "token for ServiceAccount {SYSTEM_NAMESPACE}/{} (24h, renewed by the hub)",
                capability.account()
            ),
        });
        rows.push(PlanRow {
            cluster: "hub".into(),
            object: format!(
                "Secret {SYSTEM_NAMESPACE}/{} (endpoint, CA, the {capability} token)",
                capability.secret_name(base)
            ),
        });
    }
    rows.push(PlanRow {
        cluster: "hub".into(),
        object: format!("MemberCluster {name}"),
    });
    if clusterset_dns {
        rows.push(PlanRow {
            cluster: format!("member {name}"),
            object: format!(
                "the {} DNS server ({SYSTEM_NAMESPACE}/{}) unless one runs, and its zone in kube-system/coredns",
                multicluster_core::services::dns::ZONE,
                multicluster_core::services::dns::SERVER_NAME
            ),
        });
    }
    Plan(rows)
}

/// A token of the hub's account on a member, and when it expires (RFC 3339).
struct IssuedToken {
    token: String,
    expires: String,
}

/// Requests a token for `capability`'s account on the member, and checks that the member takes
/// it as that account before the hub stores it.
async fn issue_token(
    member: &Client,
    capability: Capability,
    name: &str,
    url: &str,
    ca: &str,
) -> anyhow::Result<IssuedToken> {
    let account = capability.account();
    let sa: Api<ServiceAccount> = Api::namespaced(member.clone(), SYSTEM_NAMESPACE);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(member::TOKEN_LIFETIME_SECONDS),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = sa
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for the hub's account {account}"))?
        .status
        .ok_or_else(|| anyhow!("the member returned no token"))?;
    let token = status
        .token
        .clone()
        .ok_or_else(|| anyhow!("the member returned an empty token"))?;
    let check = Client::try_from(member::client_config(
        url,
        ca,
        &token,
        Duration::from_secs(5),
    )?)?;
    // Who the member says the token is: every account may ask that, whatever its role allows.
    let review = Api::<SelfSubjectReview>::all(check)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| {
            anyhow!("the hub's new {capability} token does not work on member {name}: {e}")
        })?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    let expected = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{account}");
    if user != expected {
        bail!("member {name} takes the hub's new {capability} token as {user:?}, not {expected}");
    }
    Ok(IssuedToken {
        token,
        expires: status
            .expiration_timestamp
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    })
}

/// Writes the member's credentials Secret for `capability` on the hub (the only place they are
/// kept).
async fn store_credentials(
    hub: &Client,
    name: &str,
    capability: Capability,
    secret_name: &str,
    data: Vec<(&str, String)>,
) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(SYSTEM_NAMESPACE.to_owned()),
            labels: Some(
                [
                    (MEMBER_LABEL.to_owned(), name.to_owned()),
                    (CAPABILITY_LABEL.to_owned(), capability.name().to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("multicluster.dev/member-credentials".to_owned()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .patch(
            secret_name,
            &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .with_context(|| format!("storing the member's {capability} credentials on the hub"))?;
    Ok(())
}

/// Removes the hub's accounts of every capability from the member, and what a join before
/// per-capability accounts created there (the namespace stays: it may hold more than ours).
/// Takes the member out of the clusterset (its `clusterset.k8s.io` property); its cluster ID stays,
/// as the About API intends.
async fn leave_clusterset(member: &Client) {
    let properties: Api<kube::api::DynamicObject> =
        Api::all_with(member.clone(), &about::api_resource());
    let _ = properties
        .delete(about::CLUSTERSET, &DeleteParams::default())
        .await;
}

/// Records the image the member's admission policy lets the hub's snapshots account run as data
/// mover pods (`member::mover_policy`): created when missing, changed only when `--mover-image`
/// names one, so that what the member's admin recorded (the playground records its own) stays.
async fn record_mover_image(member: &Client, image: Option<&str>) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(member.clone(), SYSTEM_NAMESPACE);
    let name = member::MOVER_POLICY_PARAMS;
    let recorded = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {SYSTEM_NAMESPACE}/{name}"))?;
    let default = multicluster_core::install::default_image();
    // A record of another release of our own image follows this release (the hub server runs
    // this one after an upgrade); an image the admin chose stays.
    let ours = |i: &str| {
        i.strip_prefix(multicluster_core::install::IMAGE_REPOSITORY)
            .is_some_and(|tag| tag.starts_with(':'))
    };
    let image = match (&recorded, image) {
        (Some(found), None) => found
            .data
            .as_ref()
            .and_then(|d| d.get("image"))
            .filter(|i| ours(i) && **i != default)
            .map(|_| default.as_str()),
        (_, image) => image,
    };
    match (recorded, image) {
        (Some(_), None) => Ok(()),
        (Some(_), Some(image)) => {
            let patch = serde_json::json!({"data": {"image": image}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| {
                    format!("recording the data mover image in {SYSTEM_NAMESPACE}/{name}")
                })?;
            Ok(())
        }
        (None, image) => {
            let params = member::mover_policy_params(image.unwrap_or(&default), &[]);
            crate::apply::apply_objects(member, &[params]).await?;
            Ok(())
        }
    }
}

async fn remove_remote(member: &Client) {
    let objects = member::every_capability_object();
    let legacy = member::legacy_member_objects();
    for object in objects.iter().rev().chain(&legacy) {
        let _ = delete_dynamic(member, object).await;
    }
}

/// Removes from the member the accounts of capabilities `grants` does not allow (a join again
/// without `--allow-snapshots` takes that access back), and the pre-capability account.
async fn remove_ungranted(member: &Client, grants: &Grants) {
    let kept = member::member_objects(grants);
    let every = member::every_capability_object();
    let legacy = member::legacy_member_objects();
    let same = |a: &serde_json::Value, b: &serde_json::Value| {
        a["kind"] == b["kind"] && a["metadata"]["name"] == b["metadata"]["name"]
    };
    for object in every.iter().rev().chain(&legacy) {
        if object["kind"] == "Namespace" || kept.iter().any(|k| same(k, object)) {
            continue;
        }
        let _ = delete_dynamic(member, object).await;
    }
}

/// Deletes the member's credentials Secrets on the hub whose capability `doomed` picks (`None`
/// for the one Secret of a join before per-capability accounts).
async fn remove_credentials(hub: &Client, name: &str, doomed: impl Fn(Option<Capability>) -> bool) {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    // The Secret of a join before per-capability accounts has the base name and no labels.
    if doomed(None) {
        let _ = secrets
            .delete(&member::secret_name(name), &DeleteParams::default())
            .await;
    }
    let Ok(list) = secrets
        .list_metadata(&ListParams::default().labels(&format!("{MEMBER_LABEL}={name}")))
        .await
    else {
        return;
    };
    for secret in list.items {
        let capability = secret
            .labels()
            .get(CAPABILITY_LABEL)
            .and_then(|c| Capability::ALL.into_iter().find(|k| k.name() == c));
        if doomed(capability) {
            let _ = secrets
                .delete(&secret.name_any(), &DeleteParams::default())
                .await;
        }
    }
}

async fn delete_dynamic(client: &Client, object: &serde_json::Value) -> anyhow::Result<()> {
    let located = crate::apply::locate(client, object, None).await?;
    located
        .api
        .delete(&located.name, &DeleteParams::default())
        .await?;
    Ok(())
}

pub async fn unjoin(
    args: UnjoinArgs,
    hub: Client,
    hub_kubeconfig: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let members: Api<MemberCluster> = Api::all(hub.clone());
    let existing = members.get_opt(&args.name).await?;
    if existing.is_none() {
        bail!("no member {} on the hub", args.name);
    }
    if !args.keep_copies {
        remove_copies(&hub, &args.name, args.timeout).await?;
    }
    if !args.keep_remote {
        let context = args.member_context.as_ref().ok_or_else(|| {
            anyhow!("give the member's --member-context to remove the hub's account there, or --keep-remote to leave it")
        })?;
        let (member, config) =
            member_client(args.member_kubeconfig.as_ref(), hub_kubeconfig, context).await?;
        member
            .apiserver_version()
            .await
            .map_err(|e| explain(&args.name, &config.cluster_url.to_string(), e))?;
        remove_remote(&member).await;
        leave_clusterset(&member).await;
        eprintln!("Removed the hub's accounts from member {}", args.name);
    }
    remove_credentials(&hub, &args.name, |_| true).await;
    members.delete(&args.name, &DeleteParams::default()).await?;
    eprintln!("Unjoined {}", args.name);
    Ok(())
}

/// Takes the member out of every Distribution's targets (the `leaving` annotation) and waits until
/// the hub server has removed their copies from it: no Distribution's status lists it any more.
async fn remove_copies(hub: &Client, member: &str, timeout: Duration) -> anyhow::Result<()> {
    use multicluster_core::api::Distribution;
    let distributions: Api<Distribution> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    let holding = |list: &[Distribution]| -> BTreeMap<String, String> {
        list.iter()
            .filter_map(|d| {
                let status = d.status.as_ref()?;
                let m = status.members.iter().find(|m| m.member == member)?;
                let what = match &m.message {
                    Some(message) => message.clone(),
                    None => format!("{} object(s)", m.applied),
                };
                Some((d.name_any(), what))
            })
            .collect()
    };
    let mut shown = holding(&distributions.list(&Default::default()).await?.items);
    if shown.is_empty() {
        return Ok(());
    }
    for (name, what) in &shown {
        eprintln!("Removing the copies of Distribution {name} from {member} ({what})");
    }
    Api::<MemberCluster>::all(hub.clone())
        .patch(
            member,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"annotations": {
                multicluster_core::keys::LEAVING: "true"}}})),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = holding(&distributions.list(&Default::default()).await?.items);
        for name in shown.keys().filter(|n| !now.contains_key(*n)) {
            eprintln!("Distribution {name}: copies removed from {member}");
        }
        for (name, what) in &now {
            if shown.get(name) != Some(what) {
                eprintln!("Distribution {name}: {what}");
            }
        }
        if now.is_empty() {
            return Ok(());
        }
        shown = now;
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the hub server did not remove the copies of {} from {member} within {}s (is \
                 multicluster-webhook running, and does {member} answer?); the member stays \
                 registered and no Distribution targets it any more: run unjoin again, or add \
                 --keep-copies to leave the copies there",
                shown.keys().cloned().collect::<Vec<_>>().join(", "),
                timeout.as_secs()
            );
        }
    }
}

/// One row of `list`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MemberRow {
    pub name: String,
    pub healthy: String,
    pub reason: String,
    pub ready_nodes: Option<u32>,
    pub total_nodes: Option<u32>,
    pub version: Option<String>,
    pub role: String,
    pub weight: u32,
    pub priority: u32,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the hub last probed it.
    pub last_probe_age_seconds: Option<i64>,
    pub message: String,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct MembersReport(pub Vec<MemberRow>);

impl Tabular for MembersReport {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "name",
            "healthy",
            "ready",
            "version",
            "role",
            "weight",
            "priority",
            "labels",
            "last probe",
            "reason",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.healthy.clone(),
                    match (m.ready_nodes, m.total_nodes) {
                        (Some(r), Some(t)) => format!("{r}/{t}"),
                        _ => "-".into(),
                    },
                    m.version.clone().unwrap_or_else(|| "-".into()),
                    m.role.clone(),
                    m.weight.to_string(),
                    m.priority.to_string(),
                    m.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    m.last_probe_age_seconds
                        .map_or("never".into(), |s| format!("{s}s ago")),
                    m.reason.clone(),
                ]
            })
            .collect()
    }
}

async fn members_report(hub: &Client, only: Option<&str>) -> anyhow::Result<MembersReport> {
    let members: Api<MemberCluster> = Api::all(hub.clone());
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut rows = Vec::new();
    for mc in members.list(&ListParams::default()).await?.items {
        if only.is_some_and(|n| n != mc.name_any()) {
            continue;
        }
        let status = mc.status.clone().unwrap_or_default();
        let healthy = status.conditions.iter().find(|c| c.type_ == "Healthy");
        rows.push(MemberRow {
            name: mc.name_any(),
            healthy: healthy.map_or("Unknown".into(), |c| c.status.clone()),
            reason: healthy.map_or("NotProbedYet".into(), |c| c.reason.clone()),
            message: healthy.map_or("the hub server has not probed it yet".into(), |c| {
                c.message.clone()
            }),
            ready_nodes: status.ready_nodes,
            total_nodes: status.total_nodes,
            version: status.version.clone(),
            role: format!("{:?}", mc.spec.role),
            weight: mc.spec.weight,
            priority: mc.spec.priority,
            labels: mc.labels().clone(),
            last_probe_age_seconds: status
                .last_probe_time
                .map(|t| now.duration_since(t.0).as_secs()),
        });
    }
    Ok(MembersReport(rows))
}

/// `list`: every member as the hub server last saw it.
pub async fn list(hub: Client, format: OutputFormat) -> anyhow::Result<()> {
    output::print(format, &members_report(&hub, None).await?)
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct MemberDetail {
    pub member: MemberRow,
    pub endpoint: String,
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    pub events: Vec<String>,
}

impl Tabular for MemberDetail {
    fn headers(&self) -> Vec<&'static str> {
        vec!["field", "value"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let m = &self.member;
        let mut rows = vec![
            vec!["Name".into(), m.name.clone()],
            vec!["Endpoint".into(), self.endpoint.clone()],
            vec![
                "Healthy".into(),
                format!("{} ({}): {}", m.healthy, m.reason, m.message),
            ],
        ];
        for c in &self.conditions {
            rows.push(vec![
                format!("Condition {}", c.type_),
                format!("{} {}: {}", c.status, c.reason, c.message),
            ]);
        }
        for e in &self.events {
            rows.push(vec!["Event".into(), e.clone()]);
        }
        rows
    }
}

/// `status NAME`: the detail of one member, with its recent Events.
pub async fn status(hub: Client, name: &str, format: OutputFormat) -> anyhow::Result<()> {
    let mc = Api::<MemberCluster>::all(hub.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow!("no member {name} on the hub"))?;
    let report = members_report(&hub, Some(name)).await?;
    let row = report
        .0
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no member {name}"))?;
    let events: Vec<String> = Api::<Event>::all(hub.clone())
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={name},involvedObject.kind=MemberCluster"
        )))
        .await
        .map(|l| {
            let mut items = l.items;
            items.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
            items
                .iter()
                .rev()
                .take(10)
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    output::print(
        format,
        &MemberDetail {
            member: row,
            endpoint: mc.spec.endpoint.clone(),
            conditions: mc.status.map(|s| s.conditions).unwrap_or_default(),
            events,
        },
    )
}
