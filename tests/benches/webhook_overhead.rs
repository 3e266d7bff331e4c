//! What the hub server's webhooks cost a writer: 1,000 creates of a Service managed by an Intent
//! (so both the mutating and the validating fence are called) with the webhook configurations in
//! place and without them, alternated twice in the same run on the same API server, and the ratio.
//! Part of tests/bench/webhook.sh (which builds the release binaries this needs first).

// A benchmark: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use multicluster_core::api::{Intent, IntentSpec};
use multicluster_core::webhooks::CONFIGURATION_NAME;

const CREATES: usize = 1000;
const IN_FLIGHT: usize = 16;

async fn namespace_with_intent(client: &Client, name: &str) {
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let intent = Intent::new(
        "orders",
        IntentSpec {
            intent_id: "bench-id".into(),
            holder: "bench".into(),
        },
    );
    Api::<Intent>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &intent)
        .await
        .unwrap();
}

async fn create_services(client: &Client, ns: &str) -> Duration {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..CREATES)
        .map(|i| {
            let api = api.clone();
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i}"),
                                 "labels": {"multicluster.dev/managed-by-intent": "orders"},
                                 "annotations": {"multicluster.dev/intent-id": "bench-id"}},
                    "spec": {"ports": [{"port": 80}]}
                }))
                .unwrap();
                api.create(&PostParams::default(), &svc).await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed,
        0,
        "{failed} creates failed: {:?}",
        results.iter().find(|r| r.is_err())
    );
    elapsed
}

/// Whether the webhooks saw the Services of `ns` (the mutating step moves the carried ID aside).
async fn went_through_webhook(client: &Client, ns: &str) -> bool {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get("svc-0")
        .await
        .unwrap();
    svc.metadata
        .annotations
        .unwrap_or_default()
        .contains_key("multicluster.dev/written-with-intent-id")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let pg = multicluster_tests::start_playground(&scratch.path().join("pg"), 0, &[]);
    let client = pg.client("hub").await.unwrap();
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut saved_m = mutating.get(CONFIGURATION_NAME).await.unwrap();
    let mut saved_v = validating.get(CONFIGURATION_NAME).await.unwrap();
    saved_m.metadata.resource_version = None;
    saved_v.metadata.resource_version = None;

    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 1..=2 {
        let ns = format!("with-webhook-{round}");
        namespace_with_intent(&client, &ns).await;
        let t = create_services(&client, &ns).await;
        assert!(
            went_through_webhook(&client, &ns).await,
            "the webhooks were not called"
        );
        println!(
            "round {round}: with the webhooks    {CREATES} creates in {:.2}s ({:.0}/s)",
            t.as_secs_f64(),
            CREATES as f64 / t.as_secs_f64()
        );
        with.push(t);

        mutating
            .delete(CONFIGURATION_NAME, &DeleteParams::default())
            .await
            .unwrap();
        validating
            .delete(CONFIGURATION_NAME, &DeleteParams::default())
            .await
            .unwrap();
        // A changed webhook configuration takes about a second to take effect.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ns = format!("without-webhook-{round}");
        namespace_with_intent(&client, &ns).await;
        let t = create_services(&client, &ns).await;
        assert!(
            !went_through_webhook(&client, &ns).await,
            "the webhooks were still called"
        );
        println!(
            "round {round}: without the webhooks {CREATES} creates in {:.2}s ({:.0}/s)",
            t.as_secs_f64(),
            CREATES as f64 / t.as_secs_f64()
        );
        without.push(t);

        mutating
            .create(&PostParams::default(), &saved_m)
            .await
            .unwrap();
        validating
            .create(&PostParams::default(), &saved_v)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let total = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>();
    println!(
        "ratio with/without the webhooks: {:.2} ({:.2}s / {:.2}s over {} rounds)",
        total(&with) / total(&without),
        total(&with),
        total(&without),
        with.len()
    );
    let out = std::process::Command::new(multicluster_tests::plugin_bin())
        .args(["local", "down", "--dir"])
        .arg(&pg.dir)
        .output()
        .unwrap();
    assert!(out.status.success());
}
