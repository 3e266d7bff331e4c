//! Versions of the real components (kube-apiserver, etcd) that the playground runs.
//!
//! They are pinned in one place, `tests/versions.env`, which the install script sources; this module
//! compiles the same file in so that the plugin looks for binaries where the script put them.

const VERSIONS_ENV: &str = include_str!("../../tests/versions.env");

fn lookup(key: &str) -> &'static str {
    VERSIONS_ENV
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        // A missing key is a build-time mistake in versions.env, caught by the unit test below.
        .unwrap_or("unknown")
}

/// The git commit this build was made from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("MULTICLUSTER_COMMIT");

/// This build of the project: the workspace version and the commit, e.g. `0.1.0 (3f2a9c1e0b7d)`.
/// The plugin and the hub server are built from the same workspace, so equal strings mean the
/// same build. A constant, so that `--version` of both programs prints it too.
pub const RELEASE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MULTICLUSTER_COMMIT"),
    ")"
);

/// [`RELEASE`], owned.
pub fn release() -> String {
    RELEASE.to_owned()
}

/// What `kubectl multicluster version` warns about when the hub server runs another build.
pub fn mismatch(plugin: &str, hub_server: Option<&str>) -> Option<String> {
    let hub_server = hub_server?;
    let version = |v: &str| v.split_whitespace().next().unwrap_or_default().to_owned();
    (version(plugin) != version(hub_server)).then(|| {
        format!(
            "the hub server runs {hub_server}, this plugin is {plugin}: upgrade one of them \
             (`kubectl multicluster init --image …` for the hub server)"
        )
    })
}

/// The Kubernetes release the playground's kube-apiserver is built from, e.g. `v1.36.3`.
pub fn kubernetes() -> &'static str {
    lookup("KUBERNETES_VERSION")
}

/// The etcd release the playground runs, built from the `go.etcd.io/etcd/server/v3` module.
pub fn etcd() -> &'static str {
    lookup("ETCD_VERSION")
}

/// external-provisioner, the CSI sidecar that provisions the playground's volumes.
pub fn csi_provisioner() -> &'static str {
    lookup("CSI_PROVISIONER_VERSION")
}

/// external-snapshotter: csi-snapshotter and snapshot-controller.
pub fn csi_snapshotter() -> &'static str {
    lookup("CSI_SNAPSHOTTER_VERSION")
}

/// csi-test, whose csi-sanity checks the playground CSI driver.
pub fn csi_test() -> &'static str {
    lookup("CSI_TEST_VERSION")
}

/// KWOK, the playground's simulated nodes.
pub fn kwok() -> &'static str {
    lookup("KWOK_VERSION")
}

/// CoreDNS, the cluster DNS of the playground's members with nodes.
pub fn coredns() -> &'static str {
    lookup("COREDNS_VERSION")
}

/// The MinIO module version the snapshot end-to-end tests run as their S3 server.
pub fn minio() -> &'static str {
    lookup("MINIO_VERSION")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_version_is_a_mismatch() {
        assert!(release().starts_with(env!("CARGO_PKG_VERSION")));
        assert_eq!(
            mismatch("0.1.0 (aaa)", Some("0.1.0 (bbb)")),
            None,
            "same release, other commit"
        );
        assert_eq!(mismatch("0.1.0 (aaa)", None), None);
        let warning = mismatch("0.2.0 (aaa)", Some("0.1.0 (bbb)")).unwrap_or_default();
        assert!(
            warning.contains("the hub server runs 0.1.0 (bbb)"),
            "{warning}"
        );
    }

    #[test]
    fn versions_env_defines_every_component() {
        assert!(kubernetes().starts_with("v1."), "{}", kubernetes());
        assert!(etcd().starts_with("v3."), "{}", etcd());
        assert!(minio().starts_with("v0.0.0-"), "{}", minio());
        assert!(csi_provisioner().starts_with('v'), "{}", csi_provisioner());
        assert!(csi_snapshotter().starts_with('v'), "{}", csi_snapshotter());
        assert!(kwok().starts_with('v'), "{}", kwok());
        assert!(coredns().starts_with('v'), "{}", coredns());
    }
}
