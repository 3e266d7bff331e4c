//! Project chores behind `cargo xtask`: the release (archives, checksums, krew manifest, hub
//! server image). The packaging is pure functions over bytes, so that tests can check archive
//! names, contents, checksums and the manifest without building every target.

pub mod protocols;
pub mod release;
