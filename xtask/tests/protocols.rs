//! The checked-in CSI code is what `cargo xtask gen-csi` makes of the checked-in protocols.

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::path::Path;

#[test]
fn checked_in_csi_code_matches_the_protocols() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let fresh = tempfile::tempdir().unwrap();
    xtask::protocols::generate(&root.join("webhook/proto"), fresh.path()).unwrap();
    for file in ["csi.v1.rs", "pluginregistration.rs"] {
        let checked_in =
            std::fs::read_to_string(root.join("webhook/src/csi/generated").join(file)).unwrap();
        let generated = std::fs::read_to_string(fresh.path().join(file)).unwrap();
        assert!(
            checked_in == generated,
            "webhook/src/csi/generated/{file} is stale: run `cargo xtask gen-csi`"
        );
    }
}
