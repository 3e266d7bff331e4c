//! VIPs for Services end to end: the real hub API server calls the hub server's mutating webhook
//! on every create of a Service labelled `multicluster.dev/vip-pool`. This binary has its own
//! playground, because one test re-points the webhook configuration at a second hub server process.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{VipClaim, VipPool};
use multicluster_tests::{eventually, fresh_namespace, playground, run_ok, unique_name};

async fn pool(client: &Client, ranges: &[&str], metallb: bool) -> String {
    let name = unique_name("pool");
    let pool: VipPool = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"ranges": ranges, "domainSuffix": "mc.example.com",
                 "ecosystemAnnotations": {"metallb": metallb}}
    }))
    .unwrap();
    Api::<VipPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    name
}

fn service(name: &str, pool: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"multicluster.dev/vip-pool": pool}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap()
}

fn vip(svc: &Service) -> String {
    svc.annotations()
        .get("multicluster.dev/vip")
        .cloned()
        .unwrap_or_default()
}

async fn claims_of(client: &Client, pool: &str) -> Vec<VipClaim> {
    Api::<VipClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.pool == pool)
        .collect()
}

#[tokio::test]
async fn a_service_gets_a_vip_and_hostname_keeps_it_on_update_and_loses_it_when_deleted() {
    let client = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&client, "vip").await.unwrap();
    let pool = pool(&client, &["10.231.0.0/24"], true).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    let created = services
        .create(&PostParams::default(), &service("web", &pool))
        .await
        .unwrap();
    let address = vip(&created);
    assert!(
        address.starts_with("10.231.0."),
        "{:?}",
        created.annotations()
    );
    assert_eq!(
        created.annotations()["multicluster.dev/hostname"],
        format!("web.{ns}.mc.example.com")
    );
    assert_eq!(
        created.annotations()["metallb.universe.tf/loadBalancerIPs"],
        address
    );
    let claims = claims_of(&client, &pool).await;
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0].name_any(),
        address,
        "the claim is named after its address"
    );
    assert_eq!(claims[0].spec.owner.name, "web");

    // An update (here a label) keeps the address.
    let patch = serde_json::json!({"metadata": {"labels": {"tier": "front"}}});
    let updated = services
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(vip(&updated), address);

    // Deleted: the Lease holder releases the claim (the playground checks every 2 s, 5 s grace).
    services.delete("web", &Default::default()).await.unwrap();
    eventually(
        "the claim of the deleted Service is released",
        Duration::from_secs(30),
        async || claims_of(&client, &pool).await.is_empty(),
    )
    .await;
}

/// A Service leaves its pool when its pool label is removed: the update goes through (the
/// webhook's match condition reads the missing label as empty instead of failing), the VIP
/// annotations go, and the claim collector releases the address.
#[tokio::test]
async fn removing_the_pool_label_removes_the_vip_and_releases_its_claim() {
    let client = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&client, "vip-leave").await.unwrap();
    let pool = pool(&client, &["10.233.0.0/24"], true).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let created = services
        .create(&PostParams::default(), &service("web", &pool))
        .await
        .unwrap();
    assert!(vip(&created).starts_with("10.233.0."));
    assert_eq!(claims_of(&client, &pool).await.len(), 1);

    let unlabel = serde_json::json!({"metadata": {"labels": {"multicluster.dev/vip-pool": null}}});
    let updated = services
        .patch("web", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .expect("removing the pool label is admitted");
    let left: Vec<&String> = updated
        .annotations()
        .keys()
        .filter(|k| k.starts_with("multicluster.dev/") || k.starts_with("metallb."))
        .collect();
    assert!(left.is_empty(), "VIP annotations left: {left:?}");
    eventually(
        "the claim of the Service that left its pool is released",
        Duration::from_secs(30),
        async || claims_of(&client, &pool).await.is_empty(),
    )
    .await;
}

/// The reproduction: a review the API server never sends (a Secret carrying the pool
/// label, a Service with no namespace) POSTed straight to the hub server's VIP route. From a client
/// without the API server's admission client certificate it is refused unread (401); even with
/// that certificate (a caller that stole it) the route refuses the kinds it does not serve. No
/// address is claimed either way.
#[tokio::test]
async fn a_forged_vip_request_for_another_kind_or_no_namespace_is_refused_and_claims_nothing() {
    let client = playground().client("hub").await.unwrap();
    let pool = pool(&client, &["10.234.0.0/24"], false).await;
    let request = |kind: &str, resource: &str, namespace: Option<&str>| {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "0c5a3f4e-9b2d-4f61-8d7e-3a1b2c4d5e6f",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "name": "forged", "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "mallory"},
                "object": {"apiVersion": "v1", "kind": kind,
                           "metadata": {"name": "forged", "namespace": namespace,
                                        "labels": {"multicluster.dev/vip-pool": pool}}},
                "oldObject": null, "dryRun": false}
        })
        .to_string()
    };
    for (what, review, expected) in [
        (
            "a Secret",
            request("Secret", "secrets", Some("default")),
            "not v1 Secret",
        ),
        (
            "a Service in no namespace",
            request("Service", "services", None),
            "names none",
        ),
    ] {
        let (code, body) = playground().post_to_hub_server("/mutate/vip", review.as_bytes());
        assert_eq!(code, 401, "{what}, no client certificate: {body}");
        let (code, body) =
            playground().post_to_hub_server_as_api_server("/mutate/vip", review.as_bytes());
        assert_eq!(code, 200, "{what}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{what}: {body}");
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(expected), "{what}: {body}");
    }
    assert!(
        claims_of(&client, &pool).await.is_empty(),
        "a forged request claimed an address"
    );
}

#[tokio::test]
async fn a_full_pool_is_refused_clearly_and_dry_run_claims_nothing() {
    let client = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&client, "vipfull").await.unwrap();
    let pool = pool(&client, &["10.232.0.1-10.232.0.2"], false).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    // A server-side dry run shows the VIP it would get and claims nothing.
    let dry = services
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &service("dry", &pool),
        )
        .await
        .unwrap();
    assert!(vip(&dry).starts_with("10.232.0."));
    assert!(
        claims_of(&client, &pool).await.is_empty(),
        "a dry run must not claim an address"
    );

    for name in ["a", "b"] {
        services
            .create(&PostParams::default(), &service(name, &pool))
            .await
            .unwrap();
    }
    let err = services
        .create(&PostParams::default(), &service("c", &pool))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("VipPool {pool} is full")) && message.contains("all 2 addresses"),
        "{message}"
    );
    assert!(services.get_opt("c").await.unwrap().is_none());

    // A Service naming a pool that does not exist is refused, naming it.
    let err = services
        .create(&PostParams::default(), &service("d", "no-such-pool"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"no-such-pool\", which does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn two_hundred_services_created_at_once_through_two_hub_server_processes_get_distinct_vips() {
    let pg = playground();
    let client = pg.client("hub").await.unwrap();
    let hub_server = pg.state.hub_server.as_ref().unwrap();
    let pool = pool(&client, &["10.233.0.0/24"], false).await;

    // A second hub server process, as the first: the hub server's own ServiceAccount, answering
    // the hub API server's admission client certificate only.
    let second = pg.second_hub_server(
        &pg.dir().join("hub-server/kubeconfig"),
        &[format!(
            "--admission-client-ca-file={}",
            pg.dir().join("hub/pki/admission-ca.crt").display()
        )],
        &[],
    );
    let health = second.health.clone();
    eventually(
        "the second hub server is ready",
        Duration::from_secs(20),
        async || kubectl_multicluster::local::http_ok(&health, "/readyz").await,
    )
    .await;

    // Namespaces labelled `replica: second` go to the second process, all others to the first.
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut first = configs.get("multicluster-webhook").await.unwrap();
    let mut other = first.clone();
    let exclude = serde_json::json!({"key": "e2e.multicluster.dev/replica", "operator": "NotIn", "values": ["second"]});
    let include = serde_json::json!({"key": "e2e.multicluster.dev/replica", "operator": "In", "values": ["second"]});
    for hook in first.webhooks.iter_mut().flatten() {
        let selector = hook.namespace_selector.get_or_insert_with(Default::default);
        selector
            .match_expressions
            .get_or_insert_with(Vec::new)
            .push(serde_json::from_value(exclude.clone()).unwrap());
    }
    configs
        .replace("multicluster-webhook", &PostParams::default(), &first)
        .await
        .unwrap();
    other.metadata = kube::api::ObjectMeta {
        name: Some("multicluster-webhook-second".into()),
        ..Default::default()
    };
    for hook in other.webhooks.iter_mut().flatten() {
        let url = hook.client_config.url.clone().unwrap().replace(
            &hub_server.url,
            &format!("https://127.0.0.1:{}", second.admission_port),
        );
        hook.client_config.url = Some(url);
        hook.namespace_selector = Some(
            serde_json::from_value(serde_json::json!({"matchExpressions": [include]})).unwrap(),
        );
    }
    configs
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // a new webhook configuration takes about a second

    let ns_first = fresh_namespace(&client, "vip-first").await.unwrap();
    let ns_second = unique_name("vip-second");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns_second, "labels": {"e2e.multicluster.dev/replica": "second"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let creates = (0..200).map(|i| {
        let ns = if i % 2 == 0 {
            ns_first.clone()
        } else {
            ns_second.clone()
        };
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        let svc = service(&format!("svc-{i}"), &pool);
        async move { api.create(&PostParams::default(), &svc).await }
    });
    let results: Vec<_> = futures::stream::iter(creates)
        .buffer_unordered(32)
        .collect()
        .await;
    let services: Vec<Service> = results.into_iter().map(|r| r.unwrap()).collect();
    let vips: HashSet<String> = services.iter().map(vip).collect();
    assert!(!vips.contains(""), "every Service got a VIP");
    assert_eq!(vips.len(), 200, "200 Services, 200 distinct VIPs");
    assert_eq!(claims_of(&client, &pool).await.len(), 200);

    // The second process really answered half of them.
    let metrics = run_ok(Command::new("curl").args(["-sS", &format!("http://{health}/metrics")]));
    let patched = metrics
        .lines()
        .find(|l| {
            l.contains("admission_requests_total")
                && l.contains("mutate-vip")
                && l.contains("patched")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(patched, 100, "{metrics}");
}
