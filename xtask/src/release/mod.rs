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
