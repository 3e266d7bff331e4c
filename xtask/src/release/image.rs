//! The hub server's OCI image, written without a container daemon as an OCI image layout in a tar
//! (what `skopeo copy oci-archive:…`, `crane push` and `podman load` take). One layer: the static
//! `multicluster-webhook`, CA certificates, and `/etc/passwd` naming the non-root user it runs as.
//! No shell, no package manager, nothing writable needed (the Deployment sets
//! `readOnlyRootFilesystem`). One image per Linux architecture under one image index.

use serde_json::json;

use super::archive::{Entry, tar, tar_gz};
use super::checksum::checksum;
use super::platform::{HUB_SERVER_BIN, Platform};

/// The user the server runs as (the Deployment's `runAsUser`/`runAsGroup` say the same).
pub const USER: &str = "65532:65532";
pub const ENTRYPOINT: &str = "/usr/local/bin/multicluster-webhook";
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the image is built from.
#[derive(Debug, Clone)]
pub struct ImageInputs<'a> {
    /// The hub server built for each Linux platform.
    pub binaries: Vec<(&'a Platform, &'a [u8])>,
    /// A PEM bundle of CA certificates (the build machine's, from Debian's `ca-certificates`).
    pub ca_certificates: &'a [u8],
    pub version: &'a str,
    pub commit: &'a str,
    /// The image's name with its tag, as the install manifests pull it (`install::default_image`).
    pub reference: &'a str,
    pub source: &'a str,
}

/// The files of the image's one layer for `binary`; paths ending in `/` are directories.
pub fn layer_entries(binary: &[u8], ca_certificates: &[u8]) -> Vec<Entry> {
    let dir = |path: &str| Entry::file(path, 0o755, Vec::new());
    vec![
        dir("etc/"),
        Entry::file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        Entry::file("etc/group", 0o644, "root:x:0:\nnonroot:x:65532:\n"),
        dir("etc/ssl/"),
        dir("etc/ssl/certs/"),
        Entry::file(&CA_CERTIFICATES[1..], 0o644, ca_certificates),
        dir("usr/"),
        dir("usr/local/"),
        dir("usr/local/bin/"),
        Entry::file(&ENTRYPOINT[1..], 0o755, binary),
    ]
}

/// The image layout archive, and the digest of its top image index (what a registry would call
/// the image's digest once pushed).
pub fn oci_layout(inputs: &ImageInputs<'_>, mtime: u64) -> anyhow::Result<(Vec<u8>, String)> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add_blob = |bytes: Vec<u8>| -> (String, usize) {
        let digest = checksum(&bytes);
        let size = bytes.len();
        if !blobs.iter().any(|(d, _)| *d == digest) {
            blobs.push((digest.clone(), bytes));
        }
        (digest, size)
    };
    let tag = format!("v{}", inputs.version);
    let labels = json!({
        "org.opencontainers.image.title": HUB_SERVER_BIN,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.revision": inputs.commit,
        "org.opencontainers.image.source": inputs.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
    });

    let mut manifests = Vec::new();
    for (platform, binary) in &inputs.binaries {
        let files = layer_entries(binary, inputs.ca_certificates);
        // The config names the layer by its uncompressed digest, the manifest by its blob's.
        let diff_id = checksum(&tar(&files, mtime)?);
        let (layer_digest, layer_size) = add_blob(tar_gz(&files, mtime)?);
        let config = json!({
            "architecture": platform.arch,
            "os": platform.os,
            "config": {
                "User": USER,
                "Entrypoint": [ENTRYPOINT],
                "Env": ["PATH=/usr/local/bin", format!("SSL_CERT_FILE={CA_CERTIFICATES}")],
                "WorkingDir": "/",
                "Labels": labels,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "cargo xtask release"}],
        });
        let (config_digest, config_size) = add_blob(serde_json::to_vec(&config)?);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer_size}],
            "annotations": labels,
        });
        let (digest, size) = add_blob(serde_json::to_vec(&manifest)?);
        manifests.push(json!({
            "mediaType": MANIFEST, "digest": digest, "size": size,
            "platform": {"architecture": platform.arch, "os": platform.os},
        }));
    }
    let image_index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
    let (index_digest, index_size) = add_blob(serde_json::to_vec(&image_index)?);
    let top = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": INDEX, "digest": index_digest, "size": index_size,
            "annotations": {
                "org.opencontainers.image.ref.name": tag,
                "io.containerd.image.name": inputs.reference,
            },
        }],
    });

    let mut entries = vec![
        Entry::file(
            "oci-layout",
            0o644,
            br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
        ),
        Entry::file("index.json", 0o644, serde_json::to_vec(&top)?),
        Entry::file("blobs/", 0o755, Vec::new()),
        Entry::file("blobs/sha256/", 0o755, Vec::new()),
    ];
    for (digest, bytes) in blobs {
        let hex = digest.trim_start_matches("sha256:");
        entries.push(Entry::file(format!("blobs/sha256/{hex}"), 0o644, bytes));
    }
    Ok((tar(&entries, mtime)?, index_digest))
}
