//! The data mover (`multicluster-webhook mover`) as a snapshot's mover pod runs it, against a real
//! S3 server (MinIO on loopback, over TLS). Directories on this machine stand in for the claims
//! the pods will mount (wiring the mover into snapshots and restores is the next step of issue
//! 20); everything else is the real command: its chunks, its index, its S3 client.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use multicluster_tests::minio::Minio;
use multicluster_tests::target_dir;
use serde_json::Value;

fn mover(minio: &Minio, ca: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(target_dir().join("multicluster-webhook"));
    cmd.args([
        "mover",
        "--s3-bucket",
        &minio.bucket,
        "--s3-endpoint",
        &minio.endpoint,
        "--s3-path-style",
        "--s3-ca-bundle",
    ])
    .arg(ca)
    .args(args)
    // The keys as the pod gets them from the job's Secret: in the environment, never as arguments.
    .env("AWS_ACCESS_KEY_ID", &minio.access_key)
    .env("AWS_SECRET_ACCESS_KEY", &minio.secret_key);
    cmd
}

fn moved(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Exports `source`; returns what moved and (bytes, bytes sent).
fn export(minio: &Minio, ca: &Path, source: &Path) -> (Value, (u64, u64)) {
    let out = moved(
        &mover(minio, ca, &["export", "--source", source.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    let sizes = (
        out["bytes"].as_u64().unwrap(),
        out["bytesTransferred"].as_u64().unwrap(),
    );
    (out, sizes)
}

fn random_file(path: &Path, bytes: usize, seed: u64) {
    let mut state = seed;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for _ in 0..bytes / 8 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        file.write_all(&state.to_le_bytes()).unwrap();
    }
}

fn start(dir: &Path) -> (Minio, std::path::PathBuf) {
    let minio = Minio::start(&dir.join("minio"), "volumes");
    let ca = dir.join("minio-ca.pem");
    std::fs::write(&ca, &minio.ca_pem).unwrap();
    (minio, ca)
}

#[test]
fn a_volume_exported_to_minio_is_imported_elsewhere_byte_for_byte_and_a_second_export_moves_only_the_change()
 {
    let dir = tempfile::tempdir().unwrap();
    let (minio, ca) = start(dir.path());
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("data/small")).unwrap();
    for i in 0..300 {
        std::fs::write(
            source.join(format!("data/small/{i}.txt")),
            format!("line {i}\n").repeat(i % 40 + 1),
        )
        .unwrap();
    }
    random_file(&source.join("data/large"), 24 << 20, 1);
    let sparse = std::fs::File::create(source.join("sparse")).unwrap();
    sparse.set_len(256 << 20).unwrap();
    sparse.write_all_at(b"middle", 128 << 20).unwrap();
    std::os::unix::fs::symlink("data/large", source.join("current")).unwrap();

    let (first, _) = export(&minio, &ca, &source);
    let index = first["indexDigest"].as_str().unwrap().to_owned();
    assert_eq!(first["files"], 302, "{first}");
    assert!(
        minio
            .object_keys()
            .iter()
            .any(|k| k == &format!("data/indexes/{index}")),
        "the index is in the bucket under its digest"
    );

    let target = dir.path().join("target");
    let back = moved(
        &mover(
            &minio,
            &ca,
            &[
                "import",
                "--target",
                target.to_str().unwrap(),
                "--index",
                &index,
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(back["bytes"], first["bytes"]);
    for path in [
        "data/large",
        "data/small/7.txt",
        "data/small/299.txt",
        "sparse",
    ] {
        assert!(
            std::fs::read(source.join(path)).unwrap() == std::fs::read(target.join(path)).unwrap(),
            "{path} differs"
        );
    }
    assert_eq!(
        std::fs::read_link(target.join("current")).unwrap(),
        Path::new("data/large")
    );
    let sparse = std::fs::metadata(target.join("sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "256 MiB with one write stays sparse: {} KiB allocated",
        sparse.blocks() / 2
    );

    // 5 % of the large file rewritten in one place: the second export moves about that.
    let large = std::fs::OpenOptions::new()
        .write(true)
        .open(source.join("data/large"))
        .unwrap();
    large
        .write_all_at(&vec![7u8; (24 << 20) / 20], 10 << 20)
        .unwrap();
    let (second, (all, sent)) = export(&minio, &ca, &source);
    println!(
        "second export: {sent} of {all} bytes sent ({} of {} chunks)",
        second["chunksTransferred"], second["chunks"]
    );
    assert!(
        sent < all / 5,
        "only the chunks around the change move: {second}"
    );
}

#[test]
fn minio_stopped_in_the_middle_of_an_export_fails_it_and_the_next_export_uploads_only_what_is_missing()
 {
    let dir = tempfile::tempdir().unwrap();
    let (minio, ca) = start(dir.path());
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    random_file(&source.join("large"), 96 << 20, 2);

    let running = mover(
        &minio,
        &ca,
        &["export", "--source", source.to_str().unwrap()],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Stop MinIO once some of the chunks are in.
    multicluster_tests::eventually_blocking(
        "some chunks are uploaded",
        Duration::from_secs(120),
        || {
            let chunks = minio
                .object_keys()
                .iter()
                .filter(|k| k.starts_with("data/chunks/"))
                .count();
            if chunks >= 10 {
                Ok(chunks)
            } else {
                Err(chunks)
            }
        },
    );
    let data = minio.data_dir.clone();
    drop(minio);
    let out = running.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "an export whose location went away must fail: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("chunk"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("indexDigest"),
        "no index was reported"
    );

    // Back on the same drive: the chunks it already has are not sent again.
    let (minio, ca) = start(dir.path());
    assert_eq!(minio.data_dir, data);
    let (again, (all, sent)) = export(&minio, &ca, &source);
    println!("after the restart: {sent} of {all} bytes sent");
    assert!(
        sent < all,
        "the chunks uploaded before the stop stay: {again}"
    );
    assert!(sent > 0);
}
