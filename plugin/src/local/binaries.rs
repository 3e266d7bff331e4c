//! Where the playground's kube-apiserver and etcd come from: the cache that
//! `tests/install-deps.sh` fills, one directory per pinned version. Nothing is downloaded at run time.

use std::path::{Path, PathBuf};

use multicluster_core::versions;

/// The command that fills the cache, named in every "missing binary" error.
pub const INSTALL_COMMAND: &str = "tests/install-deps.sh";

#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    /// Checked only for a playground with nodes.
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub csi_provisioner: PathBuf,
    pub csi_snapshotter: PathBuf,
    pub snapshot_controller: PathBuf,
    /// Checked only for a playground with simulated nodes.
    pub kwok: PathBuf,
    pub coredns: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{component} {version} is not installed (looked for {path}).\n\
     Install the playground's binaries with `{INSTALL_COMMAND} --playground` from a checkout of \
     kubectl-multicluster (it builds the Kubernetes binaries from the k8s.io/kubernetes Go module and \
     etcd from its module once, about 15 minutes on 2 cores), or point MULTICLUSTER_CACHE_DIR at a \
     cache that holds them."
)]
pub struct MissingBinary {
    pub component: &'static str,
    pub version: &'static str,
    pub path: String,
}

/// `$MULTICLUSTER_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/kubectl-multicluster`: the same rule
/// as the install script.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MULTICLUSTER_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cache"));
    base.join("kubectl-multicluster")
}

pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

impl Binaries {
    /// The binaries of the pinned versions in `cache`, or an error naming the install command.
    /// `with_nodes`: also those of the controllers and nodes.
    pub fn locate(cache: &Path, with_nodes: bool, with_kwok: bool) -> Result<Self, MissingBinary> {
        let kubernetes = cache.join("kubernetes").join(versions::kubernetes());
        let etcd = cache.join("etcd").join(versions::etcd()).join("etcd");
        let provisioner = cache
            .join("csi/external-provisioner")
            .join(versions::csi_provisioner());
        let snapshotter = cache
            .join("csi/external-snapshotter")
            .join(versions::csi_snapshotter());
        let found = Self {
            kube_apiserver: kubernetes.join("kube-apiserver"),
            etcd,
            kube_controller_manager: kubernetes.join("kube-controller-manager"),
            kube_scheduler: kubernetes.join("kube-scheduler"),
            kubelet: kubernetes.join("kubelet"),
            kube_proxy: kubernetes.join("kube-proxy"),
            csi_provisioner: provisioner.join("csi-provisioner"),
            csi_snapshotter: snapshotter.join("csi-snapshotter"),
            snapshot_controller: snapshotter.join("snapshot-controller"),
            kwok: cache.join("kwok").join(versions::kwok()).join("kwok"),
            coredns: cache
                .join("coredns")
                .join(versions::coredns())
                .join("coredns"),
        };
        let mut needed = vec![
            (
                "kube-apiserver",
                versions::kubernetes(),
                &found.kube_apiserver,
            ),
            ("etcd", versions::etcd(), &found.etcd),
        ];
        if with_nodes {
            needed.extend([
                (
                    "kube-controller-manager",
                    versions::kubernetes(),
                    &found.kube_controller_manager,
                ),
                (
                    "kube-scheduler",
                    versions::kubernetes(),
                    &found.kube_scheduler,
                ),
                ("kubelet", versions::kubernetes(), &found.kubelet),
                ("kube-proxy", versions::kubernetes(), &found.kube_proxy),
                (
                    "csi-provisioner",
                    versions::csi_provisioner(),
                    &found.csi_provisioner,
                ),
                (
                    "csi-snapshotter",
                    versions::csi_snapshotter(),
                    &found.csi_snapshotter,
                ),
                (
                    "snapshot-controller",
                    versions::csi_snapshotter(),
                    &found.snapshot_controller,
                ),
                ("coredns", versions::coredns(), &found.coredns),
            ]);
        }
        if with_kwok {
            needed.push(("kwok", versions::kwok(), &found.kwok));
        }
        for (component, version, path) in needed {
            if !path.is_file() {
                return Err(MissingBinary {
                    component,
                    version,
                    path: path.display().to_string(),
                });
            }
        }
        Ok(found)
    }
}

/// The hub server binary: next to this plugin (as `cargo install` and the release archives put it),
/// else on PATH.
pub fn hub_server() -> Result<PathBuf, MissingHubServer> {
    const NAME: &str = "multicluster-webhook";
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(NAME));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(NAME));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or(MissingHubServer)
}

#[derive(Debug, thiserror::Error)]
#[error(
    "multicluster-webhook (the hub server) is neither next to kubectl-multicluster nor on PATH; \
     install it with `cargo install --locked --path webhook` from a checkout of kubectl-multicluster"
)]
pub struct MissingHubServer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_install_command() {
        let empty = tempfile::tempdir().unwrap();
        let err = Binaries::locate(empty.path(), true, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains(INSTALL_COMMAND), "{err}");
        assert!(
            err.contains("etcd") || err.contains("kube-apiserver"),
            "{err}"
        );
    }
}
