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

/// The Kubernetes release the playground's kube-apiserver is built from, e.g. `v1.36.3`.
pub fn kubernetes() -> &'static str {
    lookup("KUBERNETES_VERSION")
}

/// The Debian `etcd-server` package version the playground's etcd is unpacked from.
pub fn etcd_debian() -> &'static str {
    lookup("ETCD_DEBIAN_VERSION")
}

/// The MinIO module version the snapshot end-to-end tests run as their S3 server.
pub fn minio() -> &'static str {
    lookup("MINIO_VERSION")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_env_defines_every_component() {
        assert!(kubernetes().starts_with("v1."), "{}", kubernetes());
        assert_ne!(etcd_debian(), "unknown");
        assert!(minio().starts_with("v0.0.0-"), "{}", minio());
    }
}
