//! The playground CSI driver (`multicluster-webhook csi-driver`) against csi-sanity, the CSI
//! conformance suite of kubernetes-csi/csi-test: every call the driver offers (identity,
//! controller, group controller and node services; the rest are skipped for the capabilities it
//! does not advertise) with the error codes the CSI spec requires. The driver runs as a process on a
//! Unix socket, as on a playground node; csi-sanity is the real suite, built by
//! `tests/install-deps.sh`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use multicluster_tests::{KillOnDrop, csi_sanity_binary, eventually_blocking, target_dir};

#[test]
fn the_playground_csi_driver_passes_csi_sanity() {
    let sanity = csi_sanity_binary();
    assert!(
        sanity.is_file(),
        "no csi-sanity at {}: run tests/install-deps.sh",
        sanity.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let log = std::fs::File::create(dir.path().join("driver.log")).unwrap();
    let _driver = KillOnDrop(
        Command::new(target_dir().join("multicluster-webhook"))
            .arg("csi-driver")
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--node-id", "sanity-node"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    eventually_blocking("the driver's socket", Duration::from_secs(20), || {
        socket.exists()
    });
    let out = Command::new(&sanity)
        .arg(format!("--csi.endpoint={}", socket.display()))
        .arg(format!(
            "--csi.mountdir={}",
            dir.path().join("mnt").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            dir.path().join("staging").display()
        ))
        .arg("--ginkgo.no-color")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "csi-sanity failed:\n{report}\n{}\ndriver log: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("driver.log")).unwrap_or_default()
    );
    // The suite ran the driver's calls rather than skipping everything.
    let summary = report
        .lines()
        .find(|l| l.contains("Passed"))
        .unwrap_or_default()
        .to_owned();
    let passed: u32 = summary
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 50, "too few specs ran: {summary}");
}
