//! `kubectl multicluster proxy --cluster NAME [-- KUBECTL ARGS]`: reach a member through the hub
//! with your hub credentials. The hub's API server authenticates you and checks that you may use
//! `memberclusters/proxy` NAME (group `proxy.multicluster.dev`); the hub server checks again and
//! forwards as you (impersonation), so the member's RBAC applies to you there.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Args;
use kube::config::{Kubeconfig, NamedCluster, NamedContext};

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl multicluster proxy --cluster member-1 -- get configmaps -n shop\n  \
    kubectl multicluster proxy --cluster member-1 > member-1-via-hub.kubeconfig")]
pub struct ProxyArgs {
    /// The member to reach
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: String,
    /// kubectl arguments to run against the member through the hub; without them, print a
    /// kubeconfig for the member through the hub
    #[arg(last = true, value_name = "KUBECTL ARGS")]
    pub kubectl: Vec<String>,
}

/// kubectl exited non-zero: its own message is already on stderr; exit with its code.
#[derive(Debug, thiserror::Error)]
#[error("kubectl exited with {0}")]
pub struct KubectlFailed(pub i32);

/// The hub context of `kubeconfig` (`context` or the current one), re-pointed at the member's
/// proxy path on the hub's API server, as a kubeconfig of its own with context `MEMBER-via-hub`.
pub fn via_hub(
    mut kubeconfig: Kubeconfig,
    context: Option<&str>,
    member: &str,
) -> anyhow::Result<Kubeconfig> {
    let context_name = context
        .map(str::to_owned)
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or_else(|| anyhow!("no current context in the kubeconfig; pass --context"))?;
    let hub_context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| anyhow!("no context {context_name:?} in the kubeconfig"))?;
    let mut cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == hub_context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow!("no cluster {:?} in the kubeconfig", hub_context.cluster))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| anyhow!("cluster {:?} has no server", hub_context.cluster))?;
    cluster.server = Some(format!(
        "{}{}",
        server.trim_end_matches('/'),
        multicluster_core::members::proxy::path_prefix(member)
    ));
    let name = format!("{member}-via-hub");
    let user = hub_context.user.clone();
    let auth = kubeconfig
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .cloned();
    let mut context = hub_context;
    context.cluster = name.clone();
    kubeconfig.clusters = vec![NamedCluster {
        name: name.clone(),
        cluster: Some(cluster),
        other: Default::default(),
    }];
    kubeconfig.contexts = vec![NamedContext {
        name: name.clone(),
        context: Some(context),
        other: Default::default(),
    }];
    kubeconfig.auth_infos = auth.into_iter().collect();
    kubeconfig.current_context = Some(name);
    Ok(kubeconfig)
}

pub async fn run(
    args: ProxyArgs,
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let mut config = crate::hub::config(kubeconfig.map(PathBuf::as_path), context).await?;
    let hub = kube::Client::try_from(config.clone())?;
    let members: kube::Api<multicluster_core::api::MemberCluster> = kube::Api::all(hub);
    if members.get_opt(&args.cluster).await?.is_none() {
        anyhow::bail!(
            "no member cluster named {:?} on the hub (see `kubectl multicluster list`)",
            args.cluster
        );
    }
    // Ask the hub first, as the user kubectl will act as, so a denial names the permission
    // (kubectl's discovery would only say "Forbidden: unknown").
    let (user, groups) = impersonation_in(&args.kubectl);
    config.auth_info.impersonate = user.clone();
    config.auth_info.impersonate_groups = (!groups.is_empty()).then_some(groups);
    let as_caller = kube::Client::try_from(config)?;
    if !may_proxy(as_caller.clone(), &args.cluster).await? {
        let caller = multicluster_core::members::proxy::Caller {
            user: user.unwrap_or_else(|| "you".into()),
            ..Default::default()
        };
        anyhow::bail!(multicluster_core::members::proxy::denied(
            &caller,
            "get",
            &args.cluster
        ));
    }
    // Then once through the proxy itself, so that what the hub server refuses (a member that
    // gives the hub no proxy access, a user it may not act as there, a member that does not
    // answer) is said in its words.
    reach_through_proxy(as_caller, &args.cluster).await?;
    let source =
        match kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => Kubeconfig::read()
                .context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
        };
    let config = via_hub(source, context, &args.cluster)?;
    let yaml = serde_saphyr::to_string(&config)?;
    if args.kubectl.is_empty() {
        print!("{yaml}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    {
        use std::io::Write;
        // Holds the user's credentials: readable by them only.
        let mut file = crate::local::kubeconfig::owner_only(
            std::fs::OpenOptions::new().create_new(true).write(true),
        )
        .open(&path)?;
        file.write_all(yaml.as_bytes())?;
    }
    let status = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&path)
        .args(&args.kubectl)
        .status()
        .context("running kubectl")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(KubectlFailed(code).into()),
        None => Err(anyhow!("kubectl was killed by a signal")),
    }
}

/// GETs the member's `/version` through the proxy; a refusal comes back as its message.
async fn reach_through_proxy(client: kube::Client, name: &str) -> anyhow::Result<()> {
    let path = format!(
        "{}/version",
        multicluster_core::members::proxy::path_prefix(name)
    );
    let request = http::Request::get(path).body(Vec::new())?;
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(anyhow!(
            "{} ({}, through the hub's proxy to member {name})",
            status.message,
            status.reason
        )),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("reaching member {name} through the hub's proxy"))),
    }
}

/// Whether the hub lets the client's user read member `name`'s proxy.
async fn may_proxy(client: kube::Client, name: &str) -> anyhow::Result<bool> {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    use multicluster_core::members::proxy::{GROUP, RESOURCE, SUBRESOURCE, VERSION};
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {"resourceAttributes": {"group": GROUP, "version": VERSION, "resource": RESOURCE,
                                        "subresource": SUBRESOURCE, "name": name, "verb": "get"}}
    }))?;
    let answer = kube::Api::<SelfSubjectAccessReview>::all(client)
        .create(&Default::default(), &review)
        .await
        .context("asking the hub whether you may use the proxy")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// kubectl's `--as USER` and `--as-group GROUP` among `args` (both `--as X` and `--as=X`).
fn impersonation_in(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut user = None;
    let mut groups = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| iter.next().cloned());
        match flag {
            "--as" => user = value(),
            "--as-group" => groups.extend(value()),
            _ => {}
        }
    }
    (user, groups)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubectls_impersonation_flags_are_understood() {
        let args: Vec<String> = [
            "get",
            "cm",
            "--as",
            "alice",
            "--as-group=dev",
            "--as-group",
            "ops",
            "-n",
            "x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            super::impersonation_in(&args),
            (Some("alice".into()), vec!["dev".into(), "ops".into()])
        );
        assert_eq!(
            super::impersonation_in(&["--as=bob".to_owned()])
                .0
                .as_deref(),
            Some("bob")
        );
        assert_eq!(super::impersonation_in(&["get".to_owned()]), (None, vec![]));
    }

    use super::*;

    #[test]
    fn the_member_context_points_at_the_proxy_path_with_the_hub_user() {
        let kubeconfig: Kubeconfig = serde_saphyr::from_str(
            "apiVersion: v1\nkind: Config\ncurrent-context: hub\n\
             clusters:\n- name: hub\n  cluster: {server: 'https://127.0.0.1:6443/', certificate-authority-data: Q0E=}\n\
             - name: member-1\n  cluster: {server: 'https://127.0.0.1:7443'}\n\
             contexts:\n- name: hub\n  context: {cluster: hub, user: admin}\n\
             - name: member-1\n  context: {cluster: member-1, user: member-admin}\n\
             users:\n- name: admin\n  user: {token: hub-token}\n- name: member-admin\n  user: {token: member-token}\n",
        )
        .unwrap();
        let via = via_hub(kubeconfig, None, "member-1").unwrap();
        assert_eq!(via.current_context.as_deref(), Some("member-1-via-hub"));
        assert_eq!(via.clusters.len(), 1);
        let cluster = via.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.server.as_deref(),
            Some(
                "https://127.0.0.1:6443/apis/proxy.multicluster.dev/v1alpha1/memberclusters/member-1/proxy"
            )
        );
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(
            via.auth_infos.len(),
            1,
            "only the hub user, never a member's credentials"
        );
        assert_eq!(via.auth_infos[0].name, "admin");
    }
}
