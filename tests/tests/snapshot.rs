//! Namespace snapshots end to end: storage locations checked by the real hub server against a real
//! S3 server (MinIO over TLS, started by the test support) and a directory.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use multicluster_tests::minio::Minio;
use multicluster_tests::{playground, run, run_ok, unique_name};
use serde_json::json;

async fn credentials_secret(hub: &kube::Client, name: &str, id: &str, key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "multicluster-system"},
        "stringData": {"accessKeyId": id, "secretAccessKey": key}
    }))
    .unwrap();
    Api::<Secret>::namespaced(hub.clone(), "multicluster-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn storage_locations_are_checked_by_the_hub_server_on_minio_and_a_directory_and_failures_say_what_failed()
 {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let minio = Minio::start(&dir.path().join("minio"), "snapshots");
    let ca = dir.path().join("minio-ca.pem");
    std::fs::write(&ca, &minio.ca_pem).unwrap();
    let good = unique_name("minio");
    credentials_secret(&hub, &good, &minio.access_key, &minio.secret_key).await;
    let s3_args = |name: &str, secret: &str, with_ca: bool| {
        let mut args = vec![
            "snapshot".to_owned(),
            "location".to_owned(),
            "add".to_owned(),
            name.to_owned(),
            "--bucket".to_owned(),
            minio.bucket.clone(),
            "--endpoint".to_owned(),
            minio.endpoint.clone(),
            "--force-path-style".to_owned(),
            "--prefix".to_owned(),
            "fleet".to_owned(),
            "--secret".to_owned(),
            secret.to_owned(),
        ];
        if with_ca {
            args.extend(["--ca-file".to_owned(), ca.display().to_string()]);
        }
        args
    };
    let strs = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");

    // Good credentials and the CA: available, and the probe object is gone again.
    let name = unique_name("s3");
    let args = s3_args(&name, &good, true);
    let out = run_ok(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(out.contains("True"), "{}: {out}", strs(&args));
    assert!(
        out.contains(&format!("s3://{}/fleet/", minio.bucket)),
        "{out}"
    );
    assert!(
        minio.object_keys().is_empty(),
        "probe left behind: {:?}",
        minio.object_keys()
    );

    // Wrong secret key: not available, exit 1, the store's refusal named.
    let wrong = unique_name("wrong");
    credentials_secret(&hub, &wrong, &minio.access_key, "not-the-key").await;
    let args = s3_args(&unique_name("s3-wrong"), &wrong, true);
    let out = run(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("writing the probe object"), "{stderr}");
    assert!(
        stderr.contains("SignatureDoesNotMatch") || stderr.contains("403"),
        "{stderr}"
    );

    // Without the CA the TLS handshake fails: the endpoint's certificate is really checked.
    let args = s3_args(&unique_name("s3-no-ca"), &good, false);
    let out = run(&mut pg.multicluster(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // A directory: available; a missing one: not, saying so.
    let snapshots_dir = dir.path().join("snapshots");
    std::fs::create_dir(&snapshots_dir).unwrap();
    let fs_name = unique_name("fs");
    let path = snapshots_dir.display().to_string();
    run_ok(&mut pg.multicluster(&["snapshot", "location", "add", &fs_name, "--path", &path]));
    let missing = dir.path().join("missing").display().to_string();
    let out = run(&mut pg.multicluster(&[
        "snapshot",
        "location",
        "add",
        &unique_name("fs-missing"),
        "--path",
        &missing,
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("directory {missing} does not exist")),
        "{stderr}"
    );

    // `check` asks again and answers; `list -o json` shows the verdicts.
    let out = run_ok(&mut pg.multicluster(&["snapshot", "location", "check", &name]));
    assert!(out.contains("True"), "{out}");
    let list: serde_json::Value = serde_json::from_str(&run_ok(
        &mut pg.multicluster(&["snapshot", "location", "list", "-o", "json"]),
    ))
    .unwrap();
    let available = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .map(|r| r["available"].clone())
    };
    assert_eq!(available(&name), Some(json!("True")));
    assert_eq!(available(&fs_name), Some(json!("True")));
    let out = run(&mut pg.multicluster(&["snapshot", "location", "check", "no-such-location"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no StorageLocation no-such-location"));
}
