//! `kubectl multicluster init` against a real hub API server (a playground of its own, since init
//! re-points the webhook configurations at the in-cluster Service). The playground has no kubelet,
//! so the hub server's pods never run: the test checks what init installs and that it refuses to
//! register webhooks that nothing would answer.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use multicluster_tests::{run, run_ok, start_playground};

#[test]
fn init_installs_the_hub_server_and_registers_webhooks_only_when_asked_or_available() {
    let scratch = tempfile::tempdir().unwrap();
    let pg = start_playground(&scratch.path().join("pg"), 0, &[]);
    let kubectl = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        // kubectl takes no flags before a plugin's name: the kubeconfig comes from the environment.
        cmd.env("KUBECONFIG", &pg.kubeconfig)
            .args(args)
            .args(["--context", "hub"]);
        cmd.env(
            "PATH",
            std::env::join_paths(
                std::iter::once(multicluster_tests::target_dir())
                    .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
            )
            .unwrap(),
        );
        cmd
    };
    let validating_url = || {
        run_ok(&mut kubectl(&[
            "get",
            "validatingwebhookconfiguration",
            "multicluster-webhook",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.url}{.webhooks[0].clientConfig.service.name}",
        ]))
    };
    let local_url = validating_url();
    assert!(local_url.starts_with("https://127.0.0.1:"), "{local_url}");

    // --dry-run prints every object and changes nothing.
    let yaml = run_ok(&mut kubectl(&["multicluster", "init", "--dry-run"]));
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "CustomResourceDefinition",
    ] {
        assert!(
            yaml.contains(&format!("\nkind: {kind}\n")),
            "--dry-run lacks a {kind}"
        );
    }
    assert!(
        !run(&mut kubectl(&[
            "-n",
            "multicluster-system",
            "get",
            "deployment",
            "multicluster-webhook"
        ]))
        .status
        .success()
    );

    // Waiting for a hub server that cannot start (no kubelet here): init fails, saying so, and
    // leaves the webhooks as they were.
    let out = run(&mut kubectl(&["multicluster", "init", "--timeout", "2"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("webhooks were NOT registered"), "{err}");
    assert_eq!(
        validating_url(),
        local_url,
        "no webhook may point at a hub server that is not there"
    );

    // What it installed is all there: a Deployment as asked, a certificate in a Secret, and RBAC
    // that lets the hub server read Intents and nothing like Secrets.
    let replicas = run_ok(&mut kubectl(&[
        "-n",
        "multicluster-system",
        "get",
        "deployment",
        "multicluster-webhook",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem}",
    ]));
    assert_eq!(replicas, "2 true");
    let ca = run_ok(&mut kubectl(&[
        "-n",
        "multicluster-system",
        "get",
        "secret",
        "multicluster-webhook-tls",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]));
    assert!(!ca.is_empty());
    let sa = "system:serviceaccount:multicluster-system:multicluster-webhook";
    assert_eq!(
        run_ok(&mut kubectl(&[
            "auth",
            "can-i",
            "watch",
            "intents.multicluster.dev",
            "--as",
            sa
        ]))
        .trim(),
        "yes"
    );
    let secrets = run(&mut kubectl(&[
        "auth", "can-i", "list", "secrets", "-A", "--as", sa,
    ]));
    assert_eq!(
        String::from_utf8_lossy(&secrets.stdout).trim(),
        "no",
        "the hub server must not read Secrets"
    );

    // --no-wait registers the webhooks at the Service, trusting the generated CA.
    run_ok(&mut kubectl(&["multicluster", "init", "--no-wait"]));
    assert_eq!(validating_url(), "multicluster-webhook");
    let bundle = run_ok(&mut kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        "multicluster-webhook",
        "-o",
        "jsonpath={.webhooks[0].clientConfig.caBundle}",
    ]));
    assert_eq!(
        bundle, ca,
        "the webhooks trust the CA of the stored certificate"
    );

    // cert-manager is not installed here: a clear error.
    let out = run(&mut kubectl(&[
        "multicluster",
        "init",
        "--cert-manager",
        "--no-wait",
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cert-manager does not seem to be installed")
    );

    // --uninstall removes the webhook configurations (first), the hub server, its RBAC and its
    // certificate, and keeps the CRDs and the namespace.
    let removed = run_ok(&mut kubectl(&[
        "multicluster",
        "init",
        "--uninstall",
        "-o",
        "json",
    ]));
    let removed: serde_json::Value = serde_json::from_str(&removed).unwrap();
    let removed: Vec<&str> = removed["removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        removed[0].ends_with("WebhookConfiguration/multicluster-webhook"),
        "{removed:?}"
    );
    for gone in [
        &[
            "get",
            "validatingwebhookconfiguration",
            "multicluster-webhook",
        ][..],
        &[
            "get",
            "mutatingwebhookconfiguration",
            "multicluster-webhook",
        ],
        &[
            "-n",
            "multicluster-system",
            "get",
            "deployment",
            "multicluster-webhook",
        ],
        &[
            "-n",
            "multicluster-system",
            "get",
            "secret",
            "multicluster-webhook-tls",
        ],
    ] {
        assert!(
            !run(&mut kubectl(gone)).status.success(),
            "{gone:?} is still there"
        );
    }
    run_ok(&mut kubectl(&[
        "get",
        "crd",
        "memberclusters.multicluster.dev",
    ]));
    run_ok(&mut kubectl(&["get", "namespace", "multicluster-system"]));

    run_ok(
        Command::new(multicluster_tests::plugin_bin())
            .args(["local", "down", "--dir"])
            .arg(&pg.dir),
    );
}
