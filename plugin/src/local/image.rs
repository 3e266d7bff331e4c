//! The playground's image: Debian's static busybox with a link for every applet it has (`sh`,
//! `httpd`, `wget`, `nc`, …), written as an OCI archive and imported into every node, because the
//! playground reaches no registry. It is also the nodes' sandbox ("pause") image: run without a
//! command it sleeps.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use multicluster_core::oci::{Entry, RunConfig, image_archive};

/// The reference pods use: `kubectl create deployment web --image=multicluster.dev/busybox:playground`.
/// Not `latest`, so that the kubelet never tries to pull it.
pub const IMAGE: &str = "multicluster.dev/busybox:playground";

const BUSYBOX_PATHS: [&str; 2] = ["/usr/bin/busybox", "/bin/busybox"];

/// The image archive, built from this machine's static busybox.
pub fn busybox_archive() -> anyhow::Result<Vec<u8>> {
    let busybox = BUSYBOX_PATHS
        .iter()
        .find(|p| Path::new(p).is_file())
        .context(
            "the playground's image is built from a static busybox, and none is installed \
             (Debian: `apt-get install busybox-static`, or run tests/install-deps.sh --playground)",
        )?;
    let bytes = std::fs::read(busybox).with_context(|| format!("reading {busybox}"))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {busybox} --list"))?;
    let applets = String::from_utf8_lossy(&list.stdout);
    let mut entries: Vec<Entry> = ["bin", "tmp", "proc", "dev", "sys", "etc", "var", "www"]
        .into_iter()
        .map(|d| Entry::Dir { path: d.into() })
        .collect();
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        bytes,
    });
    entries.extend(
        applets
            .split_whitespace()
            .filter(|a| *a != "busybox" && !a.contains('/'))
            .map(|a| Entry::Symlink {
                path: format!("bin/{a}"),
                target: "busybox".into(),
            }),
    );
    Ok(image_archive(
        IMAGE,
        &entries,
        &RunConfig {
            entrypoint: vec!["/bin/sleep".into(), "2147483647".into()],
            env: vec!["PATH=/bin".into()],
        },
    )?)
}
