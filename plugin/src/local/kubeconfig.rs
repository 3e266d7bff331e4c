//! The playground's kubeconfig: one context per cluster (`hub`, `member-1`, …) with an admin client
//! certificate, and the merge into (and removal from) the user's own kubeconfig.

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;
use serde_json::json;

/// What the kubeconfig needs to know of one cluster.
#[derive(Debug, Clone)]
pub struct ClusterAccess<'a> {
    /// The context name (`hub`, `member-1`, …).
    pub context: &'a str,
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub client_cert_pem: &'a str,
    pub client_key_pem: &'a str,
}

/// Cluster and user entries get a prefixed name so that merging never replaces a user's own entries;
/// contexts keep the short names the design fixes.
fn entry_name(context: &str) -> String {
    format!("multicluster-local-{context}")
}

fn b64(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// A kubeconfig holding exactly the given clusters, with the first one as current context.
pub fn build(clusters: &[ClusterAccess<'_>]) -> Result<Kubeconfig, serde_json::Error> {
    let entries: Vec<_> = clusters
        .iter()
        .map(|c| {
            (
                json!({"name": entry_name(c.context), "cluster": {
                    "server": c.server, "certificate-authority-data": b64(c.ca_pem)}}),
                json!({"name": entry_name(c.context), "user": {
                    "client-certificate-data": b64(c.client_cert_pem),
                    "client-key-data": b64(c.client_key_pem)}}),
                json!({"name": c.context, "context": {
                    "cluster": entry_name(c.context), "user": entry_name(c.context)}}),
            )
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": entries.iter().map(|e| &e.0).collect::<Vec<_>>(),
        "users": entries.iter().map(|e| &e.1).collect::<Vec<_>>(),
        "contexts": entries.iter().map(|e| &e.2).collect::<Vec<_>>(),
        "current-context": clusters.first().map(|c| c.context),
    }))
}

/// Puts `ours` into `target`, replacing entries of the same names, and makes our first context
/// current (as kind and minikube do).
/// `context` of `all` alone, its user authenticated by `token` instead of a client certificate.
pub fn for_token(all: &Kubeconfig, context: &str, token: &str) -> anyhow::Result<Kubeconfig> {
    let mut out = all.clone();
    out.contexts.retain(|c| c.name == context);
    let Some(named) = out.contexts.first().and_then(|c| c.context.clone()) else {
        anyhow::bail!("no context {context} in the playground's kubeconfig");
    };
    out.clusters.retain(|c| c.name == named.cluster);
    out.auth_infos
        .retain(|a| Some(&a.name) == named.user.as_ref());
    for user in &mut out.auth_infos {
        user.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_owned().into()),
            ..Default::default()
        });
    }
    out.current_context = Some(context.to_owned());
    Ok(out)
}

pub fn merge(target: &mut Kubeconfig, ours: &Kubeconfig) {
    for c in &ours.clusters {
        target.clusters.retain(|t| t.name != c.name);
        target.clusters.push(c.clone());
    }
    for u in &ours.auth_infos {
        target.auth_infos.retain(|t| t.name != u.name);
        target.auth_infos.push(u.clone());
    }
    for c in &ours.contexts {
        target.contexts.retain(|t| t.name != c.name);
        target.contexts.push(c.clone());
    }
    target.current_context.clone_from(&ours.current_context);
    if target.api_version.is_none() {
        target.api_version = Some("v1".to_owned());
        target.kind = Some("Config".to_owned());
    }
}

/// Removes from `target` what `merge` put there, but only entries that still point at our servers:
/// a context the user has since re-pointed elsewhere is theirs now and stays.
pub fn unmerge(target: &mut Kubeconfig, ours: &Kubeconfig) {
    let server_of = |kc: &Kubeconfig, name: &str| {
        kc.clusters
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
    };
    for c in &ours.clusters {
        if server_of(target, &c.name) == server_of(ours, &c.name) {
            target.clusters.retain(|t| t.name != c.name);
            target.auth_infos.retain(|t| t.name != c.name);
            target.contexts.retain(|t| {
                t.name != c.name.trim_start_matches("multicluster-local-")
                    || t.context.as_ref().map(|x| x.cluster.as_str()) != Some(c.name.as_str())
            });
        }
    }
    let current_gone = target
        .current_context
        .as_ref()
        .is_some_and(|cur| !target.contexts.iter().any(|c| &c.name == cur));
    if current_gone {
        target.current_context = None;
    }
}

/// The file kubectl writes to: the first path of `$KUBECONFIG`, else `~/.kube/config`.
pub fn default_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        .unwrap_or_else(|| super::binaries::home_dir().join(".kube").join("config"))
}

/// Reads a kubeconfig, or an empty one when the file does not exist yet.
pub fn read_or_empty(path: &Path) -> anyhow::Result<Kubeconfig> {
    if !path.exists() {
        return Ok(Kubeconfig::default());
    }
    Kubeconfig::read_from(path)
        .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))
}

/// Makes `options` create the file readable and writable by its owner only (mode 0600), for files
/// holding credentials. On Windows a new file takes the access list of its directory (the
/// user's profile or temporary directory), as kubectl's own kubeconfig does.
pub fn owner_only(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Writes `contents` to a new file (or over an old one) readable by its owner only: for keys,
/// certificates and anything else of a playground's that an attacker on the machine could use.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    // A file left by an earlier run keeps its mode when opened: remove it first.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    owner_only(std::fs::OpenOptions::new().write(true).create_new(true))
        .open(path)?
        .write_all(contents.as_ref())
}

/// Creates `dir` and its missing parents, the ones it creates reachable by their owner only
/// (0700 on Unix).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a kubeconfig readable by its owner only: it holds admin client keys.
pub fn write(path: &Path, kubeconfig: &Kubeconfig) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let yaml = serde_saphyr::to_string(kubeconfig)?;
    // Write next to the target and rename, so a crash never leaves a half-written kubeconfig.
    let tmp = path.with_extension("multicluster-tmp");
    let mut file = owner_only(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
    )
    .open(&tmp)?;
    file.write_all(yaml.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(server: &str) -> Kubeconfig {
        build(&[ClusterAccess {
            context: "hub",
            server,
            ca_pem: "CA",
            client_cert_pem: "CERT",
            client_key_pem: "KEY",
        }])
        .unwrap()
    }

    #[test]
    fn merge_keeps_the_users_entries_and_unmerge_removes_only_ours() {
        let mut user: Kubeconfig = serde_json::from_value(json!({
            "clusters": [{"name": "prod", "cluster": {"server": "https://prod:6443"}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "me"}}],
            "current-context": "prod"
        }))
        .unwrap();
        let ours = ours("https://127.0.0.1:1234");
        merge(&mut user, &ours);
        assert_eq!(user.contexts.len(), 2);
        assert_eq!(user.current_context.as_deref(), Some("hub"));
        unmerge(&mut user, &ours);
        assert_eq!(user.contexts.len(), 1);
        assert_eq!(user.contexts[0].name, "prod");
        assert_eq!(user.clusters.len(), 1);
        assert_eq!(user.auth_infos.len(), 1);
        assert_eq!(user.current_context, None);
    }

    #[test]
    fn unmerge_leaves_entries_that_now_point_elsewhere() {
        let mut user = Kubeconfig::default();
        merge(&mut user, &ours("https://127.0.0.1:1111"));
        // A second playground took the same names since.
        merge(&mut user, &ours("https://127.0.0.1:2222"));
        unmerge(&mut user, &ours("https://127.0.0.1:1111"));
        assert_eq!(
            user.contexts.len(),
            1,
            "the newer playground's context stays"
        );
    }

    #[test]
    fn kube_rs_reads_what_build_writes() {
        let kc = ours("https://127.0.0.1:1234");
        let yaml = serde_saphyr::to_string(&kc).unwrap();
        let back = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(back.contexts[0].name, "hub");
        assert!(yaml.contains("client-key-data: S0VZ"), "{yaml}");
    }
}
