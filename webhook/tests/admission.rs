//! The admission router in-process (no cluster): real AdmissionReview JSON in, the verdict out.
//! The Intents come from a fixed table standing in for the watch-fed cache.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use multicluster_core::fencing::IntentView;
use multicluster_webhook::fencing::IntentLookup;
use multicluster_webhook::metrics::Metrics;
use multicluster_webhook::server::{AppState, admission_router};
use tower::ServiceExt;

const FIXTURE: &str = include_str!("fixtures/configmap-update.json");

/// Plays the Intent cache: Intent shop/orders with the given current ID.
#[derive(Debug)]
struct FixedIntent(&'static str);

impl IntentLookup for FixedIntent {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView> {
        (namespace == "shop" && name == "orders").then(|| IntentView {
            namespace: "shop".into(),
            name: "orders".into(),
            intent_id: self.0.into(),
            holder: "bob".into(),
            epoch: 2,
        })
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>> {
        Box::pin(async move { Ok(self.cached(namespace, name)) })
    }
    /// Plays the hub's objects: Deployment shop/api is managed by Intent orders, shop/free by
    /// none; nothing else exists.
    fn labels_of<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        Box::pin(async move {
            Ok(match (plural, namespace, name) {
                ("deployments", Some("shop"), "api") => Some(BTreeMap::from([(
                    "multicluster.dev/managed-by-intent".to_owned(),
                    "orders".to_owned(),
                )])),
                ("deployments", Some("shop"), "free") => Some(BTreeMap::new()),
                _ => None,
            })
        })
    }
}

/// Plays an Intent cache that has stalled: it still holds `v1` and says it is not fresh, while the
/// hub's Intent (read live) has been rotated to `v2`.
#[derive(Debug)]
struct StalledCache;

impl IntentLookup for StalledCache {
    fn cached(&self, namespace: &str, name: &str) -> Option<IntentView> {
        FixedIntent("v1").cached(namespace, name)
    }
    fn is_fresh(&self, _: &str, _: &str) -> bool {
        false
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>> {
        Box::pin(async move { Ok(FixedIntent("v2").cached(namespace, name)) })
    }
    fn labels_of<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        FixedIntent("v2").labels_of(group, version, plural, namespace, name)
    }
}

/// The router's state with only the fence connected (`intents`): no hub, so no VIPs, restores or
/// proxy, and admission callers not checked.
fn fence_only(intents: Arc<dyn IntentLookup>) -> AppState {
    AppState {
        intents,
        vips: None,
        restores: None,
        metrics: Arc::new(Metrics::default()),
        proxy: None,
        admission_callers: None,
    }
}

async fn post(
    current_id: &'static str,
    path: &str,
    body: String,
) -> (StatusCode, serde_json::Value) {
    post_to(Arc::new(FixedIntent(current_id)), path, body).await
}

async fn post_to(
    intents: Arc<dyn IntentLookup>,
    path: &str,
    body: String,
) -> (StatusCode, serde_json::Value) {
    let response = admission_router(fence_only(intents))
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_mutating_step_moves_the_carried_id_aside() {
    let (status, review) = post("v2", "/mutate/intent", FIXTURE.to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &review["response"];
    assert_eq!(response["uid"], "3c6d2f0e-5b1a-4f44-9b7e-2f1d7c9e8a10");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // kube-rs sends the patch bytes as a JSON array of numbers, which the API server's decoder
    // accepts for a []byte field as well as base64 (the end-to-end tests rely on that).
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        patch,
        serde_json::json!([
            {"op": "remove", "path": "/metadata/annotations/multicluster.dev~1intent-id"},
            {"op": "add", "path": "/metadata/annotations/multicluster.dev~1written-with-intent-id", "value": "v2"}
        ])
    );
}

/// The fixture as the validating webhook sees it: after the mutating step.
fn after_mutation(carried: Option<&str>) -> String {
    let mut review: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    let annotations = review["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap();
    annotations.remove("multicluster.dev/intent-id");
    match carried {
        Some(id) => annotations.insert("multicluster.dev/written-with-intent-id".into(), id.into()),
        None => annotations.remove("multicluster.dev/written-with-intent-id"),
    };
    review.to_string()
}

#[tokio::test]
async fn the_validating_step_admits_the_current_id_only() {
    let (_, review) = post("v2", "/validate/intent", after_mutation(Some("v2"))).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");

    let (_, review) = post("v2", "/validate/intent", after_mutation(Some("v1"))).await;
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("Intent shop/orders") && message.contains("\"bob\""),
        "{message}"
    );

    let (_, review) = post("v2", "/validate/intent", after_mutation(None)).await;
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("carries no intent ID"), "{message}");
}

/// A cache that is not fresh (its watch stalled) still says `v1`, the old manager's ID: the write
/// is decided on a live read, which says `v2`, and refused.
#[tokio::test]
async fn a_write_is_decided_on_a_live_read_when_the_cache_is_not_fresh() {
    let (_, review) = post_to(
        Arc::new(StalledCache),
        "/validate/intent",
        after_mutation(Some("v1")),
    )
    .await;
    assert_eq!(review["response"]["allowed"], false, "{review}");
    let (_, review) = post_to(
        Arc::new(StalledCache),
        "/validate/intent",
        after_mutation(Some("v2")),
    )
    .await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

#[tokio::test]
async fn malformed_reviews_get_400_with_the_reason() {
    for (body, expected) in [
        (
            FIXTURE[..FIXTURE.len() / 2].to_owned(),
            "not a valid AdmissionReview",
        ),
        (
            FIXTURE.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
            "only admission.k8s.io/v1",
        ),
        (
            FIXTURE.replace("\"uid\": \"3c6d", "\"xuid\": \"3c6d"),
            "uid",
        ),
        (
            "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}".to_owned(),
            "no request",
        ),
    ] {
        let (status, review) = post("v2", "/validate/intent", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
}

/// Plays a watch that has not yet seen Intent shop/orders (created a moment ago): the cache knows
/// nothing of it, a live read finds it with ID `v2`.
#[derive(Debug)]
struct LaggingWatch;

impl IntentLookup for LaggingWatch {
    fn cached(&self, _: &str, _: &str) -> Option<IntentView> {
        None
    }
    fn live<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<IntentView>, String>> {
        Box::pin(async move { Ok(FixedIntent("v2").cached(namespace, name)) })
    }
    fn labels_of<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<BTreeMap<String, String>>, String>> {
        Box::pin(async move {
            FixedIntent("v2")
                .labels_of(group, version, plural, namespace, name)
                .await
        })
    }
}

/// A DELETE of the fixture's managed ConfigMap, its stored object approved for `approved`.
fn delete_review(approved: Option<&str>) -> String {
    let mut review: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    review["request"]["operation"] = "DELETE".into();
    review["request"]["object"] = serde_json::Value::Null;
    if let Some(id) = approved {
        review["request"]["oldObject"]["metadata"]["annotations"]["multicluster.dev/delete-approved-intent-id"] =
            id.into();
    }
    review.to_string()
}

#[tokio::test]
async fn a_delete_is_decided_on_the_live_intent_even_when_the_watch_has_not_seen_it() {
    let post_delete = async |body: String| {
        let response = admission_router(fence_only(Arc::new(LaggingWatch)))
            .oneshot(
                Request::post("/validate/intent")
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    // Not approved: denied, although the cache would have called the Intent gone.
    let review = post_delete(delete_review(None)).await;
    assert_eq!(review["response"]["allowed"], false, "{review}");
    // Approved with an old ID: denied; with the current one: admitted.
    let review = post_delete(delete_review(Some("v1"))).await;
    assert_eq!(review["response"]["allowed"], false, "{review}");
    let review = post_delete(delete_review(Some("v2"))).await;
    assert_eq!(review["response"]["allowed"], true, "{review}");
}

/// A write to `deployments/NAME/scale` in shop, as the API server sends it: the Scale object has
/// no labels; `carried` is an intent ID on the Scale's annotations, if any.
fn scale_review(name: &str, carried: Option<&str>) -> String {
    let annotations = match carried {
        Some(id) => serde_json::json!({"multicluster.dev/intent-id": id}),
        None => serde_json::json!({}),
    };
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "9e1c7b52-3d4a-4c1e-8f0a-6b5d4c3b2a19",
            "kind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale",
            "name": name, "namespace": "shop", "operation": "UPDATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
                       "spec": {"replicas": 5}},
            "oldObject": {"apiVersion": "autoscaling/v1", "kind": "Scale",
                          "metadata": {"name": name, "namespace": "shop"}, "spec": {"replicas": 2}},
            "dryRun": false}
    })
    .to_string()
}

#[tokio::test]
async fn a_scale_of_a_managed_object_needs_the_current_intent_id_and_others_pass() {
    let verdict = async |name: &str, carried: Option<&str>| {
        let (status, review) =
            post("v2", "/validate/intent-scale", scale_review(name, carried)).await;
        assert_eq!(status, StatusCode::OK);
        review["response"].clone()
    };
    let denied = verdict("api", None).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("deployments/scale shop/api is managed by Intent shop/orders")
            && message.contains("carries no intent ID"),
        "{message}"
    );
    let stale = verdict("api", Some("v1")).await;
    assert_eq!(stale["allowed"], false, "{stale}");
    assert_eq!(verdict("api", Some("v2")).await["allowed"], true);
    assert_eq!(verdict("free", None).await["allowed"], true, "not managed");
    assert_eq!(
        verdict("gone", None).await["allowed"],
        true,
        "nothing to scale"
    );
}

/// POSTs `body` to `path` on the router (current ID `v2`); the HTTP status only.
async fn post_status(path: &str, body: Vec<u8>) -> StatusCode {
    admission_router(fence_only(Arc::new(FixedIntent("v2"))))
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}

/// A review of the fixture's shape with generated kind, operation, namespace, subresource and
/// object: well-formed JSON whose contents are anything.
fn generated_review() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let text = "[a-zA-Z0-9:/._-]{0,12}";
    (
        text,
        prop::sample::select(vec!["CREATE", "UPDATE", "DELETE", "CONNECT", "", "?"]),
        prop::option::of(text),
        prop::option::of(text),
        prop::option::of(prop::collection::btree_map(text, text, 0..3)),
    )
        .prop_map(|(kind, operation, namespace, sub_resource, labels)| {
            let mut review: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
            let request = &mut review["request"];
            request["kind"]["kind"] = kind.into();
            request["operation"] = operation.into();
            request["namespace"] = namespace.into();
            request["subResource"] = sub_resource.into();
            request["object"]["metadata"]["labels"] = serde_json::json!(labels);
            review.to_string().into_bytes()
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever a client sends to whichever admission route: an answer of 200 or 400, never a
    /// panic or a dropped connection.
    #[test]
    fn any_body_on_any_route_is_answered_200_or_400(
        route in proptest::sample::select(vec![
            "/mutate/intent", "/validate/intent", "/validate/intent-scale", "/mutate/vip",
            "/validate/restore",
        ]),
        body in proptest::prop_oneof![
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            generated_review(),
        ],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let status = runtime.block_on(post_status(route, body));
        proptest::prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{}", status);
    }
}

/// With admission callers configured, a review is answered only on a connection whose verified
/// client certificate carries an allowed name (the API server's); anyone else gets 401 and the
/// handler never runs.
#[tokio::test]
async fn with_callers_configured_only_the_api_servers_certificate_is_answered() {
    use axum::extract::ConnectInfo;
    use multicluster_webhook::server::AdmissionCallers;
    use multicluster_webhook::tls::Peer;
    let status = async |peer: Option<&str>| {
        let state = AppState {
            admission_callers: Some(AdmissionCallers {
                names: Arc::new(vec!["kube-apiserver-admission".to_owned()]),
            }),
            ..fence_only(Arc::new(FixedIntent("v2")))
        };
        let mut request = Request::post("/validate/intent")
            .header("content-type", "application/json")
            .body(Body::from(FIXTURE))
            .unwrap();
        if let Some(name) = peer {
            request.extensions_mut().insert(ConnectInfo(Peer {
                client_common_name: Some(name.to_owned()),
            }));
        }
        admission_router(state)
            .oneshot(request)
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(Some("front-proxy-client")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(Some("kube-apiserver-admission")).await,
        StatusCode::OK
    );
}
