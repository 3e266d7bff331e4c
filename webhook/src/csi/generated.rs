//! Code generated from `webhook/proto/` by `cargo xtask gen-csi` (do not edit; regenerate).

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod csi {
    include!("generated/csi.v1.rs");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pluginregistration {
    include!("generated/pluginregistration.rs");
}
