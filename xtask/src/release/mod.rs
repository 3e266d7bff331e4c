//! `cargo xtask release`: what ships. Each part turns bytes into bytes; `main.rs` builds the
//! binaries and writes the files.
//!
//! - [`platform`]: the platforms released and their archive names;
//! - [`archive`]: one `.tar.gz` (`.zip` on Windows) per platform with the plugin, its kubectl
//!   completion helper, `LICENSE` and `README.md`;
//! - [`checksum`]: `SHA256SUMS` in the format `sha256sum -c` reads;
//! - [`krew`]: the krew `Plugin` manifest and the krew index's rules for it;
//! - [`image`]: the hub server's OCI image, written as an image layout archive.

pub mod archive;
pub mod checksum;
pub mod image;
pub mod krew;
pub mod platform;

/// Where releases are published; the krew manifest's download addresses start here.
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// The release's version: the workspace version, the one place it is written.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The files in a release directory (`existing`) that an earlier release left and this one
/// (`written`) does not replace: archives and images of any version or platform, the checksums
/// and the krew manifest. Anything else in the directory is not the release's to remove.
pub fn stale_outputs(existing: &[String], written: &[String]) -> Vec<String> {
    let ours = |name: &str| {
        name.starts_with("kubectl-multicluster_")
            || name.starts_with("multicluster-webhook_")
            || name == "SHA256SUMS"
            || name == format!("{}.yaml", krew::PLUGIN_NAME)
    };
    let mut stale: Vec<String> = existing
        .iter()
        .filter(|name| ours(name) && !written.contains(name))
        .cloned()
        .collect();
    stale.sort();
    stale
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_earlier_release_files_that_this_release_does_not_write_are_stale() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let existing = names(&[
            "kubectl-multicluster_0.1.0_linux_amd64.tar.gz",
            "kubectl-multicluster_0.1.0_linux_arm64.tar.gz",
            "kubectl-multicluster_0.0.9_linux_amd64.tar.gz",
            "multicluster-webhook_0.0.9_oci.tar",
            "SHA256SUMS",
            "multicluster.yaml",
            "notes.txt",
        ]);
        let written = names(&[
            "kubectl-multicluster_0.1.0_linux_amd64.tar.gz",
            "SHA256SUMS",
            "multicluster.yaml",
        ]);
        assert_eq!(
            super::stale_outputs(&existing, &written),
            names(&[
                "kubectl-multicluster_0.0.9_linux_amd64.tar.gz",
                "kubectl-multicluster_0.1.0_linux_arm64.tar.gz",
                "multicluster-webhook_0.0.9_oci.tar",
            ])
        );
    }
}
