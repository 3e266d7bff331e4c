//! `cargo xtask gen-csi`: Rust code for the gRPC protocols the playground CSI driver serves (CSI,
//! and the kubelet's plugin registration), compiled from `webhook/proto/` with protox (a protobuf
//! compiler in Rust, so no `protoc` is needed) and tonic's code generator, server side only. The
//! output is checked in: building the hub server needs neither.

use std::path::Path;

use anyhow::Context;

/// The protocol files, in the order their generated modules are written.
pub const PROTOS: [&str; 2] = ["csi.proto", "pluginregistration.proto"];

/// Compiles `proto_dir`'s protocols into one `.rs` file per protobuf package in `out_dir`.
pub fn generate(proto_dir: &Path, out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let descriptors = protox::compile(PROTOS, [proto_dir])
        .with_context(|| format!("compiling the protocols in {}", proto_dir.display()))?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .out_dir(out_dir)
        .compile_fds(descriptors)
        .context("generating the Rust code")?;
    for entry in std::fs::read_dir(out_dir)? {
        eprintln!("wrote {}", entry?.path().display());
    }
    Ok(())
}
