//! The MutatingWebhookConfiguration and ValidatingWebhookConfiguration of the hub server, built in
//! one place for every way of installing it (the playground's local process today, the in-cluster
//! Service with `init` later).
//!
//! Choices, and why:
//! - `failurePolicy: Fail` for the intent fence: fencing must not silently lapse while the hub server
//!   is down. What that can block is kept small: the `objectSelector` sends only objects labelled
//!   `multicluster.dev/managed-by-intent`, and the `namespaceSelector` never matches `kube-system`,
//!   `kube-node-lease` or `multicluster-system` (so the hub server can always be repaired).
//! - `reinvocationPolicy: Never` for the mutating step: it moves the request's intent ID aside, and
//!   running it twice would read the moved ID as one inherited from the stored object.
//! - `sideEffects: None`: nothing is written while admitting, so dry-run requests are safe.
//! - `timeoutSeconds: 5`: the fence answers from memory; a slow answer means trouble, not work.
//! - `matchConditions` (CEL, evaluated by the API server) skip requests with nothing to do: the
//!   mutating fence step only runs when an intent ID is carried or recorded, the VIP webhook not on
//!   an update that keeps the Service's address and pool.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::SYSTEM_NAMESPACE;
use crate::keys::{INTENT_ID, MANAGED_BY_INTENT, VIP, VIP_POOL, WRITTEN_WITH_INTENT_ID};

/// Name of both configurations.
pub const CONFIGURATION_NAME: &str = "multicluster-webhook";

/// Namespaces the webhooks never act in.
pub const EXEMPT_NAMESPACES: [&str; 3] = ["kube-system", "kube-node-lease", SYSTEM_NAMESPACE];

/// How the API server reaches the hub server.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A URL base such as `https://127.0.0.1:8443` (the playground's local process).
    Url(String),
    /// The in-cluster Service `multicluster-system/<name>` on port 443.
    Service { name: String },
}

fn client_config(endpoint: &Endpoint, path: &str, ca_bundle_pem: &str) -> WebhookClientConfig {
    let ca_bundle = Some(ByteString(ca_bundle_pem.as_bytes().to_vec()));
    match endpoint {
        Endpoint::Url(base) => WebhookClientConfig {
            url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            ca_bundle,
            service: None,
        },
        Endpoint::Service { name } => WebhookClientConfig {
            service: Some(
                k8s_openapi::api::admissionregistration::v1::ServiceReference {
                    namespace: SYSTEM_NAMESPACE.to_owned(),
                    name: name.clone(),
                    path: Some(path.to_owned()),
                    port: Some(443),
                },
            ),
            ca_bundle,
            url: None,
        },
    }
}

fn not_exempt() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_owned(),
            operator: "NotIn".to_owned(),
            values: Some(EXEMPT_NAMESPACES.iter().map(|s| (*s).to_owned()).collect()),
        }]),
        match_labels: None,
    }
}

fn labelled(key: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_owned(),
            operator: "Exists".to_owned(),
            values: None,
        }]),
        match_labels: None,
    }
}

/// Every resource of every group (not subresources: a status write is the owner's, not a manager's).
fn every_resource(operations: &[&str]) -> Vec<RuleWithOperations> {
    vec![rule("*", "*", "*", operations, "*")]
}

/// One rule: `resource` of `group`/`version` (each may be `*`), on `operations`, in `scope`.
fn rule(
    group: &str,
    version: &str,
    resource: &str,
    operations: &[&str],
    scope: &str,
) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.to_owned()]),
        api_versions: Some(vec![version.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        scope: Some(scope.to_owned()),
    }
}

fn meta() -> ObjectMeta {
    ObjectMeta {
        name: Some(CONFIGURATION_NAME.to_owned()),
        labels: Some(
            [(
                "app.kubernetes.io/part-of".to_owned(),
                "kubectl-multicluster".to_owned(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

pub fn mutating(endpoint: &Endpoint, ca_bundle_pem: &str) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: meta(),
        webhooks: Some(vec![
            MutatingWebhook {
                name: "intent-carry.multicluster.dev".to_owned(),
                client_config: client_config(endpoint, "/mutate/intent", ca_bundle_pem),
                rules: Some(every_resource(&["CREATE", "UPDATE"])),
                object_selector: Some(labelled(MANAGED_BY_INTENT)),
                namespace_selector: Some(not_exempt()),
                admission_review_versions: vec!["v1".to_owned()],
                side_effects: "None".to_owned(),
                failure_policy: Some("Fail".to_owned()),
                reinvocation_policy: Some("Never".to_owned()),
                timeout_seconds: Some(5),
                match_policy: Some("Equivalent".to_owned()),
                // Work exists only when the request carries an intent ID, or the stored object
                // records one that must now be cleared.
                match_conditions: Some(vec![MatchCondition {
                    name: "carries-or-records-an-intent-id".to_owned(),
                    expression: format!(
                        "has(object.metadata.annotations) && ('{INTENT_ID}' in object.metadata.annotations || \
                         '{WRITTEN_WITH_INTENT_ID}' in object.metadata.annotations)"
                    ),
                }]),
            },
            vip_webhook(endpoint, ca_bundle_pem),
        ]),
    }
}

/// Services (and the hub's ServiceImports) labelled `multicluster.dev/vip-pool` get a VIP. It creates a `VipClaim`, but never on a
/// dry run (`NoneOnDryRun`). `Fail`: a Service that asked for a VIP and silently got none would be
/// wrong in a way nobody notices; one that fails to create says so.
fn vip_webhook(endpoint: &Endpoint, ca_bundle_pem: &str) -> MutatingWebhook {
    MutatingWebhook {
        name: "vip.multicluster.dev".to_owned(),
        client_config: client_config(endpoint, "/mutate/vip", ca_bundle_pem),
        rules: Some(vec![
            rule("", "v1", "services", &["CREATE", "UPDATE"], "Namespaced"),
            // The hub's record of a multi-cluster service (the hub server creates it).
            rule(
                "multicluster.x-k8s.io",
                "v1beta1",
                "serviceimports",
                &["CREATE", "UPDATE"],
                "Namespaced",
            ),
        ]),
        object_selector: Some(labelled(VIP_POOL)),
        namespace_selector: Some(not_exempt()),
        admission_review_versions: vec!["v1".to_owned()],
        side_effects: "NoneOnDryRun".to_owned(),
        failure_policy: Some("Fail".to_owned()),
        reinvocation_policy: Some("Never".to_owned()),
        timeout_seconds: Some(10),
        match_policy: Some("Equivalent".to_owned()),
        // An update that keeps the Service's VIP and pool has nothing to do. The pool is read
        // with a default: an update that removes the label (leaving the pool) has no such key,
        // and a CEL error would fail the request closed.
        match_conditions: Some(vec![MatchCondition {
            name: "new-or-changed-vip".to_owned(),
            expression: format!(
                "request.operation == 'CREATE' || !has(object.metadata.annotations) || \
                 !('{VIP}' in object.metadata.annotations) || !has(oldObject.metadata.annotations) || \
                 !('{VIP}' in oldObject.metadata.annotations) || \
                 object.metadata.annotations['{VIP}'] != oldObject.metadata.annotations['{VIP}'] || \
                 {new_pool} != {old_pool}",
                new_pool = label_or_empty("object", VIP_POOL),
                old_pool = label_or_empty("oldObject", VIP_POOL),
            ),
        }]),
    }
}

/// A CEL expression for the value of label `key` of `object` (`object` or `oldObject`), `''` when
/// it has no such label (indexing a missing key is an error in CEL).
fn label_or_empty(object: &str, key: &str) -> String {
    format!(
        "(has({object}.metadata.labels) && '{key}' in {object}.metadata.labels ? \
         {object}.metadata.labels['{key}'] : '')"
    )
}

pub fn validating(endpoint: &Endpoint, ca_bundle_pem: &str) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: meta(),
        webhooks: Some(vec![
            fence_webhook(
                "intent-fence.multicluster.dev",
                client_config(endpoint, "/validate/intent", ca_bundle_pem),
                every_resource(&["CREATE", "UPDATE", "DELETE"]),
                Some(labelled(MANAGED_BY_INTENT)),
            ),
            scale_fence_webhook(endpoint, ca_bundle_pem),
            status_fence_webhook(endpoint, ca_bundle_pem),
            restore_webhook(endpoint, ca_bundle_pem),
        ]),
    }
}

/// Writes to any object's `scale` subresource. The Scale object in such a request carries no
/// labels, so an object selector never matches it (kubernetes/kubernetes#113594): every scale in
/// the namespaces the fence may act in is sent, and the hub server reads the scaled object's labels
/// itself. `Fail` like the rest of the fence; the cost is that scaling anything there waits for
/// (and needs) the hub server, as writes to managed objects already do.
fn scale_fence_webhook(endpoint: &Endpoint, ca_bundle_pem: &str) -> ValidatingWebhook {
    fence_webhook(
        "intent-fence-scale.multicluster.dev",
        client_config(endpoint, "/validate/intent-scale", ca_bundle_pem),
        vec![rule("*", "*", "*/scale", &["UPDATE"], "*")],
        None,
    )
}

/// One of the fence's validating webhooks: outside the exempt namespaces, `Fail` (fencing never
/// lapses while the hub server is down), 5 s.
fn fence_webhook(
    name: &str,
    client_config: WebhookClientConfig,
    rules: Vec<RuleWithOperations>,
    object_selector: Option<LabelSelector>,
) -> ValidatingWebhook {
    ValidatingWebhook {
        name: name.to_owned(),
        client_config,
        rules: Some(rules),
        object_selector,
        namespace_selector: Some(not_exempt()),
        admission_review_versions: vec!["v1".to_owned()],
        side_effects: "None".to_owned(),
        failure_policy: Some("Fail".to_owned()),
        timeout_seconds: Some(5),
        match_policy: Some("Equivalent".to_owned()),
        ..Default::default()
    }
}

/// Writes to the `status` subresource of managed objects (the object in such a request is the whole
/// object, labels included, so the object selector works here): one that changes the object's
/// labels or annotations is refused (`fencing::status_write_refusal`). `Fail`, like the fence.
fn status_fence_webhook(endpoint: &Endpoint, ca_bundle_pem: &str) -> ValidatingWebhook {
    fence_webhook(
        "intent-fence-status.multicluster.dev",
        client_config(endpoint, "/validate/intent-status", ca_bundle_pem),
        vec![rule("*", "*", "*/status", &["UPDATE"], "*")],
        Some(labelled(MANAGED_BY_INTENT)),
    )
}

/// `NamespaceRestore` CREATEs, checked against the target namespace on the target member. It
/// matches this one kind of ours only, wherever it is created (restores live in
/// `multicluster-system`): nothing the hub server or the cluster needs to run passes through it.
/// `Fail`: a restore must not slip onto a different application while the hub server is down.
fn restore_webhook(endpoint: &Endpoint, ca_bundle_pem: &str) -> ValidatingWebhook {
    ValidatingWebhook {
        name: "restore-conflicts.multicluster.dev".to_owned(),
        client_config: client_config(endpoint, "/validate/restore", ca_bundle_pem),
        rules: Some(vec![rule(
            "multicluster.dev",
            "v1alpha1",
            "namespacerestores",
            &["CREATE"],
            "Namespaced",
        )]),
        admission_review_versions: vec!["v1".to_owned()],
        side_effects: "None".to_owned(),
        failure_policy: Some("Fail".to_owned()),
        // Reads the target member live: give a slow member some room.
        timeout_seconds: Some(15),
        match_policy: Some("Equivalent".to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validating_hook(name: &str) -> ValidatingWebhook {
        validating(&Endpoint::Url("https://127.0.0.1:1".into()), "CA")
            .webhooks
            .unwrap()
            .into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no webhook {name}"))
    }

    #[test]
    fn status_writes_of_managed_objects_outside_the_exempt_namespaces_go_to_the_fence() {
        let hook = validating_hook("intent-fence-status.multicluster.dev");
        let rules = hook.rules.as_ref().unwrap();
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["*/status".to_owned()][..])
        );
        assert_eq!(
            rules[0].operations.as_deref(),
            Some(&["UPDATE".to_owned()][..])
        );
        let selected = &hook.object_selector.as_ref().unwrap().match_expressions;
        assert_eq!(selected.as_ref().unwrap()[0].key, MANAGED_BY_INTENT);
        let ns = &hook.namespace_selector.as_ref().unwrap().match_expressions;
        assert_eq!(ns.as_ref().unwrap()[0].operator, "NotIn");
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    }

    #[test]
    fn the_restore_check_sees_only_restore_creates_and_fails_closed() {
        let hook = validating_hook("restore-conflicts.multicluster.dev");
        let rules = hook.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["namespacerestores".to_owned()][..])
        );
        assert_eq!(
            rules[0].operations.as_deref(),
            Some(&["CREATE".to_owned()][..])
        );
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    }

    #[test]
    fn every_scale_outside_the_exempt_namespaces_is_sent_to_the_fence() {
        let v = validating(&Endpoint::Url("https://127.0.0.1:1".into()), "CA");
        let hook = &v.webhooks.unwrap()[1];
        assert_eq!(hook.name, "intent-fence-scale.multicluster.dev");
        let rules = hook.rules.as_ref().unwrap();
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["*/scale".to_owned()][..])
        );
        assert!(
            hook.object_selector.is_none(),
            "a Scale has no labels to select"
        );
        let ns = &hook.namespace_selector.as_ref().unwrap().match_expressions;
        assert_eq!(ns.as_ref().unwrap()[0].operator, "NotIn");
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    }

    #[test]
    fn exempt_namespaces_are_never_matched_and_only_managed_objects_are_sent() {
        let v = validating(&Endpoint::Url("https://127.0.0.1:1".into()), "CA");
        let hook = &v.webhooks.unwrap()[0];
        let ns = hook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(ns[0].operator, "NotIn");
        for exempt in ["kube-system", "kube-node-lease", "multicluster-system"] {
            assert!(ns[0].values.as_ref().unwrap().iter().any(|v| v == exempt));
        }
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some("https://127.0.0.1:1/validate/intent")
        );
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hook.admission_review_versions, ["v1"]);
    }
}
