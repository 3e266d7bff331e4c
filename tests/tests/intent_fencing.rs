//! Intent-ID fencing end to end: the real hub API server calls the hub server (started by
//! `kubectl multicluster local up` as a local process, registered with `clientConfig.url`) over
//! TLS on every `kubectl apply` of a managed object.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::{Output, Stdio};

use multicluster_tests::{eventually_blocking, fresh_namespace, playground, run, run_ok, stderr};

/// `kubectl apply -f -` (plus `extra` flags) of `manifest` on the hub.
fn apply(manifest: &str, extra: &[&str]) -> Output {
    playground().apply("hub", manifest, extra)
}

fn intent(ns: &str, id: &str, holder: &str) -> String {
    format!(
        "apiVersion: multicluster.dev/v1alpha1\nkind: Intent\nmetadata: {{name: orders, namespace: {ns}}}\n\
         spec: {{intentId: {id}, holder: {holder}}}\n"
    )
}

/// A ConfigMap managed by Intent `orders`, carrying `intent_id` when given.
fn managed_config(ns: &str, intent_id: Option<&str>, value: &str) -> String {
    let annotations = intent_id
        .map(|id| format!("  annotations: {{multicluster.dev/intent-id: {id}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: orders-config\n  namespace: {ns}\n  \
         labels: {{multicluster.dev/managed-by-intent: orders}}\n{annotations}data: {{value: \"{value}\"}}\n"
    )
}

fn stored_value(ns: &str) -> String {
    run_ok(playground().kubectl().args([
        "--context",
        "hub",
        "-n",
        ns,
        "get",
        "configmap",
        "orders-config",
        "-o",
        "jsonpath={.data.value}",
    ]))
}

#[tokio::test]
async fn writes_of_a_managed_object_need_the_current_intent_id() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "fence").await.unwrap();
    let out = apply(&intent(&ns, "v1", "alice"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Without an intent ID: denied, naming the Intent and saying what to do.
    let out = apply(&managed_config(&ns, None, "1"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Intent {ns}/orders")) && err.contains("carries no intent ID"),
        "{err}"
    );
    assert!(err.contains("multicluster.dev/intent-id"), "{err}");

    // With a wrong ID: denied, naming the holder.
    let out = apply(&managed_config(&ns, Some("stale"), "1"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("\"stale\"") && err.contains("\"alice\""),
        "{err}"
    );

    // With the current ID: admitted. The ID is not stored as sent (so it cannot be inherited by a
    // later write); the stored object records which ID its last write carried.
    let out = apply(&managed_config(&ns, Some("v1"), "1"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let annotations = run_ok(playground().kubectl().args([
        "--context",
        "hub",
        "-n",
        &ns,
        "get",
        "configmap",
        "orders-config",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]));
    assert!(
        annotations.contains("\"multicluster.dev/written-with-intent-id\":\"v1\""),
        "{annotations}"
    );
    assert!(
        !annotations.contains("\"multicluster.dev/intent-id\":"),
        "{annotations}"
    );

    // A write that does not carry the ID itself (a merge patch by someone else) is denied, although
    // the stored object was last written with the current ID.
    let out = run(playground().kubectl().args([
        "--context",
        "hub",
        "-n",
        &ns,
        "label",
        "configmap",
        "orders-config",
        "touched=yes",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("carries no intent ID"),
        "{}",
        stderr(&out)
    );

    // Removing the label is a write the fence checks too.
    let out = run(playground().kubectl().args([
        "--context",
        "hub",
        "-n",
        &ns,
        "label",
        "configmap",
        "orders-config",
        "multicluster.dev/managed-by-intent-",
    ]));
    assert!(
        !out.status.success(),
        "unlabelling without the intent ID must be denied"
    );

    // A new intent ID fences off the old one at once.
    assert!(apply(&intent(&ns, "v2", "bob"), &[]).status.success());
    let out = apply(&managed_config(&ns, Some("v1"), "2"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"bob\""), "{}", stderr(&out));
    assert_eq!(stored_value(&ns), "1", "a denied write changes nothing");
    let out = apply(&managed_config(&ns, Some("v2"), "2"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored_value(&ns), "2");
}

#[tokio::test]
async fn dry_run_is_fenced_the_same_way_and_changes_nothing() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "dryrun").await.unwrap();
    assert!(apply(&intent(&ns, "d1", "carol"), &[]).status.success());
    assert!(
        apply(&managed_config(&ns, Some("d1"), "1"), &[])
            .status
            .success()
    );

    let out = apply(
        &managed_config(&ns, Some("wrong"), "9"),
        &["--dry-run=server"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"wrong\""), "{}", stderr(&out));
    let out = apply(&managed_config(&ns, Some("d1"), "9"), &["--dry-run=server"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stored_value(&ns), "1", "a dry run writes nothing");
}

#[tokio::test]
async fn unmanaged_objects_and_kube_system_are_never_blocked() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "free").await.unwrap();
    let plain = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plain, namespace: {ns}}}\ndata: {{a: b}}\n"
    );
    assert!(apply(&plain, &[]).status.success());

    // Labelled as managed by an Intent that does not even exist, in kube-system: still admitted,
    // because the webhooks never act there.
    let system = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fenced-looking\n  namespace: kube-system\n  \
                  labels: {multicluster.dev/managed-by-intent: nothing-here}\ndata: {a: b}\n";
    let out = apply(system, &[]);
    assert!(
        out.status.success(),
        "kube-system must never be blocked: {}",
        stderr(&out)
    );

    // The same object in an ordinary namespace is denied, naming the missing Intent.
    let elsewhere = system.replace("kube-system", &ns);
    let out = apply(&elsewhere, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("no Intent {ns}/nothing-here")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn malformed_admission_bodies_get_an_error_response_and_the_server_keeps_serving() {
    let valid = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "x", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}},
            "oldObject": null, "dryRun": false}
    });
    let text = valid.to_string();
    let mut wrong_version = valid.clone();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_uid = valid.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));

    for (what, body, expected) in [
        (
            "truncated JSON",
            text[..text.len() / 2].to_owned(),
            "not a valid AdmissionReview",
        ),
        (
            "wrong apiVersion",
            wrong_version.to_string(),
            "only admission.k8s.io/v1",
        ),
        ("missing uid", no_uid.to_string(), "uid"),
    ] {
        let (code, body) =
            playground().post_to_hub_server_as_api_server("/validate/intent", body.as_bytes());
        assert_eq!(code, 400, "{what}: {body}");
        assert!(body.contains(expected), "{what}: {body}");
    }
    let (code, _) =
        playground().post_to_hub_server_as_api_server("/validate/intent", huge.as_bytes());
    assert_eq!(code, 413, "a 10 MB body is refused as too large");

    // And a well-formed review is still answered.
    let (code, body) =
        playground().post_to_hub_server_as_api_server("/validate/intent", text.as_bytes());
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");

    // The same review from a client that is not the API server (no admission client
    // certificate): refused before any handler reads it.
    let (code, body) = playground().post_to_hub_server("/validate/intent", text.as_bytes());
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("answer the API server only"), "{body}");
}

#[tokio::test]
async fn rotating_the_intent_stops_the_running_manager_at_its_next_write() {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "manager").await.unwrap();
    let register = run_ok(pg.kubectl().args([
        "multicluster",
        "intent",
        "register",
        "orders",
        "--holder",
        "alice",
        "-n",
        &ns,
        "--context",
        "hub",
        "-o",
        "json",
    ]));
    let registered: serde_json::Value = serde_json::from_str(&register).unwrap();
    assert_eq!(
        registered["epoch"], 1,
        "the hub server records the first epoch: {registered}"
    );

    // The manager: `kubectl multicluster apply --intent orders --interval 200ms`, running.
    let manifest = pg.dir().join(format!("{ns}-manager.yaml"));
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: managed}\ndata: {a: b}\n",
    )
    .unwrap();
    let mut manager = pg
        .kubectl()
        .args([
            "multicluster",
            "apply",
            "--intent",
            "orders",
            "--interval",
            "200ms",
            "-n",
            &ns,
            "--context",
            "hub",
            "-f",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually_blocking(
        "the manager writes its ConfigMap",
        std::time::Duration::from_secs(20),
        || {
            assert!(
                manager.try_wait().unwrap().is_none(),
                "the manager stopped before rotation"
            );
            run(pg
                .kubectl()
                .args(["--context", "hub", "-n", &ns, "get", "configmap", "managed"]))
            .status
            .success()
        },
    );

    let rotated = run_ok(pg.kubectl().args([
        "multicluster",
        "intent",
        "rotate",
        "orders",
        "--holder",
        "bob",
        "-n",
        &ns,
        "--context",
        "hub",
        "-o",
        "json",
    ]));
    let rotated: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    assert_eq!(rotated["epoch"], 2, "{rotated}");
    assert_eq!(rotated["previousHolder"], "alice", "{rotated}");

    // Its next write is refused and it exits with code 3, saying who holds the intent now.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = manager.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            manager.kill().unwrap();
            panic!("the fenced-off manager kept running after the rotation");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = manager.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        err.contains("fenced off") && err.contains("\"bob\"") && err.contains("epoch 2"),
        "{err}"
    );
}

#[tokio::test]
async fn a_delete_needs_an_approval_written_with_the_current_id() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "delete").await.unwrap();
    assert!(apply(&intent(&ns, "k1", "dave"), &[]).status.success());
    assert!(
        apply(&managed_config(&ns, Some("k1"), "1"), &[])
            .status
            .success()
    );
    let delete = || {
        run(playground().kubectl().args([
            "--context",
            "hub",
            "-n",
            &ns,
            "delete",
            "configmap",
            "orders-config",
        ]))
    };

    let out = delete();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("multicluster.dev/delete-approved-intent-id"),
        "{}",
        stderr(&out)
    );

    // The holder approves with a write that carries the current ID, then the delete goes through.
    let approve = managed_config(&ns, Some("k1"), "1").replace(
        "annotations: {multicluster.dev/intent-id: k1}",
        "annotations: {multicluster.dev/intent-id: k1, multicluster.dev/delete-approved-intent-id: k1}",
    );
    let out = apply(&approve, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = delete();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn custom_resources_are_fenced_like_any_other_object() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "fence-cr").await.unwrap();
    assert!(apply(&intent(&ns, "c1", "erin"), &[]).status.success());
    // A Distribution (a multicluster.dev custom resource) managed by the Intent.
    let distribution = |annotations: &str| {
        format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: Distribution\nmetadata:\n  name: config\n  namespace: {ns}\n  \
             labels: {{multicluster.dev/managed-by-intent: orders}}\n  annotations: {{{annotations}}}\n\
             spec:\n  sources: [{{object: {{apiVersion: v1, kind: ConfigMap, name: app}}}}]\n  targets: {{members: [member-1]}}\n"
        )
    };
    for (annotations, admitted) in [
        ("", false),
        ("multicluster.dev/intent-id: stale", false),
        ("multicluster.dev/intent-id: c1", true),
    ] {
        let out = apply(&distribution(annotations), &[]);
        assert_eq!(
            out.status.success(),
            admitted,
            "{annotations:?}: {}",
            stderr(&out)
        );
        if !admitted {
            assert!(
                stderr(&out).contains(&format!(
                    "Distribution {ns}/config is managed by Intent {ns}/orders"
                )),
                "{}",
                stderr(&out)
            );
        }
    }
}

/// The issue's reproduction: `kubectl scale` of a Deployment an Intent fences, with no intent ID,
/// changed its replicas. The Scale the API server sends has no labels, so the fence reads the
/// Deployment's; the scale is refused and the replicas stay. An unmanaged Deployment beside it
/// scales as ever. (No pods run on the hub: only the Deployment's spec is looked at.)
#[tokio::test]
async fn kubectl_scale_of_a_managed_deployment_is_fenced_and_an_unmanaged_one_scales() {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "fence-scale").await.unwrap();
    let out = apply(&intent(&ns, "v1", "alice"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deployment = |name: &str, labels: &str, annotations: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
             labels: {{{labels}}}\n  annotations: {{{annotations}}}\nspec:\n  replicas: 2\n  \
             selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
             spec: {{containers: [{{name: c, image: busybox}}]}}\n"
        )
    };
    let out = apply(
        &deployment(
            "api",
            "multicluster.dev/managed-by-intent: orders",
            "multicluster.dev/intent-id: v1",
        ),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = apply(&deployment("free", "", ""), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let scale = |name: &str| {
        run(playground().kubectl().args([
            "--context",
            "hub",
            "-n",
            &ns,
            "scale",
            "deployment",
            name,
            "--replicas=5",
        ]))
    };
    let replicas = |name: &str| {
        run_ok(playground().kubectl().args([
            "--context",
            "hub",
            "-n",
            &ns,
            "get",
            "deployment",
            name,
            "-o",
            "jsonpath={.spec.replicas}",
        ]))
    };
    let out = scale("api");
    assert!(!out.status.success(), "a fenced Deployment was scaled");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Intent {ns}/orders")) && err.contains("carries no intent ID"),
        "{err}"
    );
    assert_eq!(replicas("api"), "2");
    let out = scale("free");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(replicas("free"), "5");
}

/// A write to the `status` of a fenced Deployment that changes its annotations: a Deployment
/// stores the annotations a status write sends, so without the fence anyone allowed to write status
/// could approve a delete (`delete-approved-intent-id` set to the current ID, which is readable on
/// the Intent) and then delete it. Refused; a status write that leaves the metadata alone, as a
/// controller's does, passes. (No controller runs on the hub: the test writes the status itself.)
#[tokio::test]
async fn a_status_write_that_changes_a_fenced_objects_annotations_is_refused_and_a_played_controllers_passes()
 {
    let hub = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "fence-status").await.unwrap();
    let out = apply(&intent(&ns, "v7", "alice"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = apply(
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: {ns}\n  \
             labels: {{multicluster.dev/managed-by-intent: orders}}\n  \
             annotations: {{multicluster.dev/intent-id: v7}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    \
             spec: {{containers: [{{name: c, image: busybox}}]}}\n"
        ),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let patch_status = |patch: &str| {
        run(playground().kubectl().args([
            "--context",
            "hub",
            "-n",
            &ns,
            "patch",
            "deployment",
            "api",
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ]))
    };
    let out = patch_status(
        r#"{"metadata":{"annotations":{"multicluster.dev/delete-approved-intent-id":"v7"}}}"#,
    );
    assert!(
        !out.status.success(),
        "a status write approved the delete of a fenced Deployment"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Intent {ns}/orders")) && err.contains("may not change its"),
        "{err}"
    );
    let out = run(playground().kubectl().args([
        "--context",
        "hub",
        "-n",
        &ns,
        "delete",
        "deployment",
        "api",
        "--wait=false",
    ]));
    assert!(!out.status.success(), "the fenced Deployment was deleted");
    // A controller's write: status only.
    let out = patch_status(r#"{"status":{"observedGeneration":1,"replicas":0}}"#);
    assert!(out.status.success(), "{}", stderr(&out));
}
