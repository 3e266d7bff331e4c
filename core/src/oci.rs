//! Writing OCI image archives (the layout `ctr images import` and `kind load image-archive` read)
//! without a registry or a container daemon: the playground's images are built from files on this
//! machine.

use std::io::Write as _;

use crate::snapshot::archive::{checksum, sha256_hex};

/// One file of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        mode: u32,
        bytes: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// What an image runs when a container names no command.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
}

fn gnu_header(mode: u32, size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header
}

/// An uncompressed tar of `entries`, in order.
fn layer_tar(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            Entry::Dir { path } => {
                let mut h = gnu_header(0o755, 0, tar::EntryType::Directory);
                layer.append_data(&mut h, path, std::io::empty())?;
            }
            Entry::File { path, mode, bytes } => {
                let mut h = gnu_header(*mode, bytes.len() as u64, tar::EntryType::Regular);
                layer.append_data(&mut h, path, bytes.as_slice())?;
            }
            Entry::Symlink { path, target } => {
                let mut h = gnu_header(0o777, 0, tar::EntryType::Symlink);
                layer.append_link(&mut h, path, target)?;
            }
        }
    }
    layer.into_inner()
}

/// The platform's architecture as OCI names it.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An OCI image-layout archive holding one single-layer image tagged `reference` (for example
/// `multicluster.dev/busybox:playground`).
pub fn image_archive(
    reference: &str,
    entries: &[Entry],
    run: &RunConfig,
) -> std::io::Result<Vec<u8>> {
    let layer = layer_tar(entries)?;
    let diff_id = checksum(&layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer)?;
    let layer_gz = gz.finish()?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {"Entrypoint": run.entrypoint, "Env": run.env},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": checksum(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": checksum(&layer_gz), "size": layer_gz.len()}]
    }))?;
    let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": checksum(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": reference,
                                       "org.opencontainers.image.ref.name": tag}}]
    }))?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8]| {
        let mut h = gnu_header(0o644, bytes.len() as u64, tar::EntryType::Regular);
        archive.append_data(&mut h, path, bytes)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&config, &manifest, &layer_gz] {
        add(format!("blobs/sha256/{}", sha256_hex(blob)), blob)?;
    }
    archive.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_an_oci_layout_whose_digests_match_its_blobs() {
        let archive = image_archive(
            "example.org/tool:v1",
            &[
                Entry::Dir { path: "bin".into() },
                Entry::File {
                    path: "bin/tool".into(),
                    mode: 0o755,
                    bytes: b"#!/bin/sh\n".to_vec(),
                },
                Entry::Symlink {
                    path: "bin/alias".into(),
                    target: "tool".into(),
                },
            ],
            &RunConfig {
                entrypoint: vec!["/bin/tool".into()],
                env: vec!["PATH=/bin".into()],
            },
        )
        .unwrap();
        let mut files = std::collections::BTreeMap::new();
        let mut reader = tar::Archive::new(archive.as_slice());
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(path, bytes);
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let descriptor = &index["manifests"][0];
        assert_eq!(
            descriptor["annotations"]["io.containerd.image.name"],
            "example.org/tool:v1"
        );
        assert_eq!(
            descriptor["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        // Every blob is stored under its own digest.
        for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("blobs/")) {
            assert_eq!(path.rsplit('/').next().unwrap(), sha256_hex(bytes));
        }
        assert_eq!(files.len(), 5, "oci-layout, index and three blobs");
    }
}
