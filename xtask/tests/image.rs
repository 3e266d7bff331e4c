//! The hub server's image, built from stand-in binaries (a few bytes each, named as such) and read
//! back the way a registry or runtime reads an OCI image layout: through the index to each
//! platform's manifest, config and layer, every blob checked against its digest. The real image
//! of a release is checked the same way by hand (see the note).

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::collections::BTreeMap;
use std::io::Read;

use multicluster_core::install;
use serde_json::Value;
use xtask::release::{VERSION, checksum::sha256_hex, image, platform::Platform};

/// (path, mode, uid, bytes) of every entry of a tar.
fn read_tar(bytes: &[u8]) -> Vec<(String, u32, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header();
            let (mode, uid) = (header.mode().unwrap(), header.uid().unwrap());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (path, mode, uid, content)
        })
        .collect()
}

struct Layout {
    files: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    /// The blob a descriptor points at, after checking its digest and size.
    fn blob(&self, descriptor: &Value) -> &[u8] {
        let digest = descriptor["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = self
            .files
            .get(&format!("blobs/sha256/{hex}"))
            .unwrap_or_else(|| panic!("no blob {digest}"));
        assert_eq!(
            sha256_hex(bytes),
            hex,
            "blob {digest} does not match its digest"
        );
        assert_eq!(
            descriptor["size"].as_u64().unwrap(),
            bytes.len() as u64,
            "size of {digest}"
        );
        bytes
    }

    fn json(&self, descriptor: &Value) -> Value {
        serde_json::from_slice(self.blob(descriptor)).unwrap()
    }
}

#[test]
fn the_image_runs_the_static_hub_server_as_non_root_with_ca_certificates_and_nothing_else() {
    let amd64 = Platform::find("linux/amd64").unwrap();
    let arm64 = Platform::find("linux/arm64").unwrap();
    let stand_in =
        |p: &Platform| format!("stand-in multicluster-webhook for {}", p.name()).into_bytes();
    let (amd64_bin, arm64_bin) = (stand_in(amd64), stand_in(arm64));
    let ca = b"-----BEGIN CERTIFICATE-----\nstand-in CA bundle\n-----END CERTIFICATE-----\n";
    let inputs = image::ImageInputs {
        binaries: vec![(amd64, &amd64_bin), (arm64, &arm64_bin)],
        ca_certificates: ca,
        version: VERSION,
        commit: "0123456789ab",
        reference: &install::default_image(),
        source: "https://example.com/src",
    };
    let (archive, digest) = image::oci_layout(&inputs, 1_764_000_000).unwrap();
    assert_eq!(
        image::oci_layout(&inputs, 1_764_000_000).unwrap().0,
        archive,
        "the image is reproducible"
    );

    let layout = Layout {
        files: read_tar(&archive)
            .into_iter()
            .filter(|(p, ..)| !p.ends_with('/'))
            .map(|(p, _, _, b)| (p, b))
            .collect(),
    };
    let oci_layout: Value = serde_json::from_slice(&layout.files["oci-layout"]).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");

    // index.json names the image by its tag, the one manifests/install.yaml pulls.
    let top: Value = serde_json::from_slice(&layout.files["index.json"]).unwrap();
    let tagged = &top["manifests"][0];
    assert_eq!(
        tagged["annotations"]["org.opencontainers.image.ref.name"],
        format!("v{VERSION}")
    );
    assert_eq!(
        tagged["annotations"]["io.containerd.image.name"],
        install::default_image()
    );
    assert_eq!(tagged["digest"], digest);
    let index = layout.json(tagged);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["os"].as_str().unwrap().to_owned(),
                m["platform"]["architecture"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [
            ("linux".into(), "amd64".into()),
            ("linux".into(), "arm64".into())
        ]
    );

    for (descriptor, binary) in index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&amd64_bin, &arm64_bin])
    {
        let manifest = layout.json(descriptor);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let config = layout.json(&manifest["config"]);
        assert_eq!(
            config["architecture"],
            descriptor["platform"]["architecture"]
        );
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/usr/local/bin/multicluster-webhook"])
        );
        assert!(
            config["config"].get("Cmd").is_none(),
            "the Deployment passes the arguments"
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"],
            format!("v{VERSION}")
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.revision"],
            "0123456789ab"
        );

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let mut gz = flate2::read::GzDecoder::new(layout.blob(&layers[0]));
        let mut layer = Vec::new();
        gz.read_to_end(&mut layer).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer))
        );

        let files = read_tar(&layer);
        let listed: Vec<(&str, u32)> = files.iter().map(|(p, m, ..)| (p.as_str(), *m)).collect();
        assert_eq!(
            listed,
            [
                ("etc/", 0o755),
                ("etc/passwd", 0o644),
                ("etc/group", 0o644),
                ("etc/ssl/", 0o755),
                ("etc/ssl/certs/", 0o755),
                ("etc/ssl/certs/ca-certificates.crt", 0o644),
                ("usr/", 0o755),
                ("usr/local/", 0o755),
                ("usr/local/bin/", 0o755),
                ("usr/local/bin/multicluster-webhook", 0o755),
            ],
            "one executable, no shell, nothing else"
        );
        assert!(
            files.iter().all(|(_, _, uid, _)| *uid == 0),
            "owned by root, so the server cannot change its own files"
        );
        let content = |path: &str| &files.iter().find(|(p, ..)| p == path).unwrap().3;
        assert_eq!(content("usr/local/bin/multicluster-webhook"), binary);
        assert_eq!(content("etc/ssl/certs/ca-certificates.crt"), ca);
        assert!(String::from_utf8_lossy(content("etc/passwd")).contains("nonroot:x:65532:65532:"));
    }
}

#[test]
fn the_deployment_runs_the_image_as_its_user_on_a_read_only_root_filesystem() {
    let objects = install::hub_server_objects(&install::default_image(), 1);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let (user, group) = image::USER.split_once(':').unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), user);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), group);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], install::default_image());
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
}
