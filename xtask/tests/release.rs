//! The release's archives, checksums and krew manifest, made from stand-in binaries (a few bytes
//! each, named as such): building the targets for real takes about 20 minutes on this
//! machine, so the tests check what the release command does with binaries, and a real release
//! (`cargo xtask release`, then `kubectl krew install --manifest --archive`) is recorded in the
//! issue's note. What these check is what a user or the krew index would check: the names, the
//! files and their modes after unpacking with the system's `tar`, `sha256sum --check`, and the
//! index's rules.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use xtask::release::{
    REPOSITORY, VERSION, archive, checksum,
    krew::{self, Download},
    platform::{PLATFORMS, Platform, WINDOWS_AMD64},
};

const MTIME: u64 = 1_764_000_000;

fn stand_in_plugin(platform: &Platform) -> Vec<u8> {
    format!("stand-in kubectl-multicluster for {}\n", platform.name()).into_bytes()
}

fn stand_in_hub_server(platform: &Platform) -> Vec<u8> {
    format!("stand-in multicluster-webhook for {}\n", platform.name()).into_bytes()
}

fn helper_script() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin/kubectl_complete-multicluster"),
    )
    .unwrap()
}

/// Every released platform's archive from stand-in binaries and the real LICENSE, README and helper.
fn package_all() -> Vec<(&'static Platform, String, Vec<u8>)> {
    package(PLATFORMS)
}

fn package(platforms: &'static [Platform]) -> Vec<(&'static Platform, String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let license = std::fs::read(root.join("LICENSE")).unwrap();
    let readme = std::fs::read(root.join("README.md")).unwrap();
    let helper = helper_script();
    platforms
        .iter()
        .map(|platform| {
            let plugin = stand_in_plugin(platform);
            let hub_server = (platform.os == "linux").then(|| stand_in_hub_server(platform));
            let contents = archive::Contents {
                plugin: &plugin,
                hub_server: hub_server.as_deref(),
                license: &license,
                readme: &readme,
                completion_helper_script: &helper,
            };
            let (name, bytes) = archive::package(platform, VERSION, &contents, MTIME).unwrap();
            (platform, name, bytes)
        })
        .collect()
}

fn downloads(archives: &[(&'static Platform, String, Vec<u8>)]) -> Vec<Download<'static>> {
    archives
        .iter()
        .map(|(platform, name, bytes)| Download {
            platform,
            uri: krew::download_uri(REPOSITORY, VERSION, name),
            sha256: checksum::sha256_hex(bytes),
        })
        .collect()
}

/// (path, mode, bytes) of every file in an archive, read with the zip crate or the system's tar.
fn unpack(name: &str, bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    if name.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut file = zip.by_index(i).unwrap();
                let mut content = Vec::new();
                file.read_to_end(&mut content).unwrap();
                (
                    file.name().unwrap().into_owned(),
                    file.unix_mode().unwrap() & 0o7777,
                    content,
                )
            })
            .collect()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let listing = Command::new("tar").arg("-tzf").arg(&path).output().unwrap();
        assert!(listing.status.success(), "tar refused {name}");
        let unpacked = dir.path().join("x");
        std::fs::create_dir(&unpacked).unwrap();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&path)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(status.success());
        String::from_utf8(listing.stdout)
            .unwrap()
            .lines()
            .map(|file| {
                let p = unpacked.join(file);
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                (file.to_owned(), mode, std::fs::read(&p).unwrap())
            })
            .collect()
    }
}

#[test]
fn every_platform_gets_one_archive_named_for_it_with_the_plugin_its_completion_helper_license_and_readme()
 {
    // Windows is not released yet (see PLATFORMS); its zip is packaged here all the same.
    static WITH_WINDOWS: [Platform; 3] = [PLATFORMS[0], PLATFORMS[1], WINDOWS_AMD64];
    let archives = package(&WITH_WINDOWS);
    let names: Vec<&str> = archives.iter().map(|(_, n, _)| n.as_str()).collect();
    let v = VERSION;
    assert_eq!(
        names,
        [
            format!("kubectl-multicluster_{v}_linux_amd64.tar.gz"),
            format!("kubectl-multicluster_{v}_linux_arm64.tar.gz"),
            format!("kubectl-multicluster_{v}_windows_amd64.zip"),
        ]
    );
    let license = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../LICENSE")).unwrap();
    assert!(String::from_utf8_lossy(&license).contains("Apache License"));

    for (platform, name, bytes) in &archives {
        let files = unpack(name, bytes);
        let listed: Vec<(&str, u32)> = files.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        let (bin, helper) = if platform.is_windows() {
            (
                "kubectl-multicluster.exe",
                "kubectl_complete-multicluster.cmd",
            )
        } else {
            ("kubectl-multicluster", "kubectl_complete-multicluster")
        };
        // The hub server, for `local up`, only where it runs: Linux.
        let expected: Vec<(&str, u32)> = if platform.os == "linux" {
            vec![
                (bin, 0o755),
                (helper, 0o755),
                ("multicluster-webhook", 0o755),
                ("LICENSE", 0o644),
                ("README.md", 0o644),
            ]
        } else {
            vec![
                (bin, 0o755),
                (helper, 0o755),
                ("LICENSE", 0o644),
                ("README.md", 0o644),
            ]
        };
        assert_eq!(listed, expected, "{name}");
        assert_eq!(
            files[0].2,
            stand_in_plugin(platform),
            "{name}: the plugin is the one built for its platform"
        );
        if platform.os == "linux" {
            assert_eq!(files[2].2, stand_in_hub_server(platform), "{name}");
        }
        let file = |path: &str| &files.iter().find(|(p, ..)| p == path).unwrap().2;
        assert_eq!(file("LICENSE"), &license);
        let helper_text = String::from_utf8(files[1].2.clone()).unwrap();
        let runs = if platform.is_windows() {
            "kubectl-multicluster.exe __complete %*"
        } else {
            "exec kubectl-multicluster __complete \"$@\""
        };
        assert!(helper_text.contains(runs), "{name}: {helper_text}");
    }

    // Reproducible: the same inputs give the same bytes (the checksums in krew's index stay true).
    let again = package(&WITH_WINDOWS);
    for ((_, name, first), (_, _, second)) in archives.iter().zip(&again) {
        assert!(
            first == second,
            "{name} differs between two packagings of the same files"
        );
    }
}

#[test]
fn sha256sums_passes_sha256sum_check_and_catches_an_altered_archive() {
    let archives = package_all();
    let dir = tempfile::tempdir().unwrap();
    for (_, name, bytes) in &archives {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let sums = checksum::sha256sums(archives.iter().map(|(_, n, b)| (n.as_str(), b.as_slice())));
    std::fs::write(dir.path().join("SHA256SUMS"), &sums).unwrap();
    let check = || {
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let ok = check();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).matches(": OK").count(),
        PLATFORMS.len()
    );

    let (_, name, bytes) = &archives[1];
    let mut altered = bytes.clone();
    altered[100] ^= 1;
    std::fs::write(dir.path().join(name), altered).unwrap();
    let bad = check();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains(&format!("{name}: FAILED")));
}

fn parse_yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn the_rendered_manifest_follows_the_index_rules_and_offers_each_archive_by_its_checksum() {
    let archives = package_all();
    let manifest = parse_yaml(&krew::render(VERSION, REPOSITORY, &downloads(&archives)));
    assert_eq!(
        krew::index_rule_violations("multicluster.yaml", &manifest),
        Vec::<String>::new()
    );
    assert_eq!(manifest["spec"]["version"], format!("v{VERSION}"));

    let offered = manifest["spec"]["platforms"].as_array().unwrap();
    assert_eq!(offered.len(), archives.len());
    for (platform, name, bytes) in &archives {
        // Exactly one entry selects this platform, and it offers this platform's archive.
        let picked: Vec<&Value> = offered
            .iter()
            .filter(|p| krew::selector_matches(&p["selector"], platform.os, platform.arch))
            .collect();
        assert_eq!(picked.len(), 1, "{}", platform.name());
        let entry = picked[0];
        assert_eq!(
            entry["uri"],
            format!("{REPOSITORY}/releases/download/v{VERSION}/{name}")
        );
        assert_eq!(entry["sha256"], checksum::sha256_hex(bytes));
        let files = unpack(name, bytes);
        assert_eq!(
            entry["bin"],
            files[0].0.as_str(),
            "bin is the plugin executable"
        );
        for op in entry["files"].as_array().unwrap() {
            let from = op["from"].as_str().unwrap();
            assert!(
                files.iter().any(|(p, _, _)| p == from),
                "{name} has no {from}"
            );
        }
    }
}

#[test]
fn the_checked_in_krew_manifest_is_what_the_release_renders_for_this_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../krew/multicluster.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest = parse_yaml(&text);
    assert_eq!(
        krew::index_rule_violations("multicluster.yaml", &manifest),
        Vec::<String>::new()
    );
    // The checksums are the one input the checked-in file has that a test cannot rebuild (the
    // binaries carry their commit): take them from the file, render, and compare every byte else.
    let checked_in: Vec<Download<'static>> = PLATFORMS
        .iter()
        .map(|platform| {
            let entry = manifest["spec"]["platforms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| krew::selector_matches(&p["selector"], platform.os, platform.arch))
                .unwrap_or_else(|| {
                    panic!(
                        "krew/multicluster.yaml offers nothing for {}",
                        platform.name()
                    )
                });
            Download {
                platform,
                uri: krew::download_uri(REPOSITORY, VERSION, &platform.archive_name(VERSION)),
                sha256: entry["sha256"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    assert!(
        text == krew::render(VERSION, REPOSITORY, &checked_in),
        "krew/multicluster.yaml is not what `cargo xtask release` renders for v{VERSION}: run it and commit the manifest"
    );
}

#[test]
fn the_index_rules_refuse_what_krew_refuses() {
    let archives = package_all();
    let good = parse_yaml(&krew::render(VERSION, REPOSITORY, &downloads(&archives)));
    let broken = |change: &dyn Fn(&mut Value), file: &str| {
        let mut manifest = good.clone();
        change(&mut manifest);
        krew::index_rule_violations(file, &manifest).join("; ")
    };
    assert!(
        broken(&|_| {}, "kubectl-multicluster.yaml")
            .contains("the file is kubectl-multicluster.yaml")
    );
    assert!(
        broken(
            &|m| m["spec"]["version"] = "0.1.0".into(),
            "multicluster.yaml"
        )
        .contains("spec.version")
    );
    assert!(
        broken(
            &|m| m["spec"]["shortDescription"] = "two\nlines".into(),
            "multicluster.yaml"
        )
        .contains("line break")
    );
    assert!(
        broken(
            &|m| m["spec"]["platforms"][0]["sha256"] = "ABC".into(),
            "multicluster.yaml"
        )
        .contains("platforms[0]: sha256")
    );
    assert!(
        broken(
            &|m| m["spec"]["platforms"][1]["files"] = Value::Array(vec![]),
            "multicluster.yaml"
        )
        .contains("platforms[1]: files is empty")
    );
    assert!(
        broken(
            &|m| m["spec"]["platforms"][1]["selector"] =
                serde_json::json!({"matchLabels": {"os": "linux"}}),
            "multicluster.yaml"
        )
        .contains("overlapping selectors that select linux/amd64")
    );
    assert!(
        broken(
            &|m| m["spec"]["platforms"][0]["selector"] =
                serde_json::json!({"matchLabels": {"os": "linux", "distro": "debian"}}),
            "multicluster.yaml"
        )
        .contains("selector key \"distro\"")
    );
    assert!(
        broken(
            &|m| m["spec"]["platforms"][0]["uri"] = "http://example.com/a.tar.gz".into(),
            "multicluster.yaml"
        )
        .contains("https")
    );
}

#[test]
fn the_install_manifests_name_the_image_tag_the_release_builds() {
    // The image layout is tagged v<workspace version> under this name (tests/image.rs).
    let reference = multicluster_core::install::default_image();
    assert!(reference.ends_with(&format!(":v{VERSION}")), "{reference}");
    let install = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/install.yaml"),
    )
    .unwrap();
    assert!(
        install.contains(&format!("image: {reference}")),
        "manifests/install.yaml does not use {reference}"
    );
}
