use serde_json::{Value, json};

use super::*;
use crate::api::DependencyRule;

fn tier_of(plan: &Plan, kind: &str, name: &str) -> usize {
    plan.steps
        .iter()
        .find(|s| s.object.kind == kind && s.object.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} is not in the plan"))
        .tier
}

/// The bundle the end-to-end test distributes, in a deliberately unhelpful order.
fn bundle() -> Vec<Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"template": {"spec": {
                   "serviceAccountName": "web",
                   "imagePullSecrets": [{"name": "registry"}],
                   "volumes": [{"name": "cfg", "configMap": {"name": "web-config"}}],
                   "containers": [{"name": "web", "image": "nginx",
                                   "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]}}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "web", "namespace": "shop"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"},
               "subjects": [{"kind": "ServiceAccount", "name": "web"}]}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": {}}),
        json!({"apiVersion": "example.com/v1", "kind": "Profile", "metadata": {"name": "eu", "namespace": "shop"},
               "spec": {"credentials": {"secretName": "bucket"}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "web", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": "shop"}}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "profiles.example.com"},
               "spec": {"group": "example.com", "names": {"kind": "Profile"}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bucket", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry", "namespace": "shop"}}),
    ]
}

fn profile_rule(secret_bearing: bool) -> DependencyRule {
    DependencyRule {
        api_version: "example.com/v1".into(),
        kind: "Profile".into(),
        path: ".spec.credentials.secretName".into(),
        references_kind: "Secret".into(),
        secret_bearing,
    }
}

#[test]
fn every_dependency_comes_in_an_earlier_tier() {
    let plan = plan(&bundle(), &[profile_rule(false)]).unwrap();
    for step in &plan.steps {
        for dep in &step.depends_on {
            let dep_tier = tier_of(&plan, &dep.on.kind, &dep.on.name);
            assert!(
                dep_tier < step.tier,
                "{} (tier {}) must come after {} (tier {dep_tier})",
                step.object,
                step.tier,
                dep.on
            );
        }
    }
    let deployment = plan
        .steps
        .iter()
        .find(|s| s.object.kind == "Deployment")
        .unwrap();
    let mut vias: Vec<&str> = deployment
        .depends_on
        .iter()
        .map(|d| d.via.as_str())
        .collect();
    vias.sort();
    assert_eq!(
        vias,
        [
            "imagePullSecrets",
            "namespace",
            "serviceAccountName",
            "valueFrom",
            "volume"
        ]
    );
    assert!(
        tier_of(&plan, "Profile", "eu")
            > tier_of(&plan, "CustomResourceDefinition", "profiles.example.com")
    );
    assert!(tier_of(&plan, "Profile", "eu") > tier_of(&plan, "Secret", "bucket"));
    assert!(tier_of(&plan, "RoleBinding", "web") > tier_of(&plan, "Role", "web"));
    assert!(tier_of(&plan, "RoleBinding", "web") > tier_of(&plan, "ServiceAccount", "web"));
}

#[test]
fn secrets_come_before_everything_but_their_namespace() {
    let plan = plan(&bundle(), &[profile_rule(false)]).unwrap();
    let last_secret = ["db", "bucket", "registry"]
        .iter()
        .map(|n| tier_of(&plan, "Secret", n))
        .max()
        .unwrap();
    for step in &plan.steps {
        if step.object.kind == "Secret" {
            continue;
        }
        if step.object.kind == "Namespace" {
            assert!(
                step.tier < last_secret,
                "the namespace must precede its Secrets"
            );
            assert_eq!(step.needed_by_secrets.len(), 3);
            assert!(step.why().contains("needed by"));
            continue;
        }
        assert!(step.tier > last_secret, "{} precedes a Secret", step.object);
    }
}

#[test]
fn the_namespace_of_the_bundle_is_planned_even_when_the_bundle_does_not_contain_it() {
    let plan = plan(&bundle(), &[]).unwrap();
    let ns = plan
        .steps
        .iter()
        .find(|s| s.object.kind == "Namespace")
        .unwrap();
    assert_eq!(
        (ns.index, ns.tier, ns.object.name.as_str()),
        (None, 0, "shop")
    );
    assert!(ns.why().contains("created if missing"));
}

#[test]
fn a_rule_can_make_a_custom_resource_secret_bearing() {
    let plan = plan(&bundle(), &[profile_rule(true)]).unwrap();
    let profile = plan
        .steps
        .iter()
        .find(|s| s.object.kind == "Profile")
        .unwrap();
    assert!(profile.secret_bearing);
    // It still waits for its CRD and its Secret, and the CRD moves into the first phase for it.
    let crd = plan
        .steps
        .iter()
        .find(|s| s.object.kind == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(crd.needed_by_secrets[0].name, "eu");
    assert!(tier_of(&plan, "Profile", "eu") < tier_of(&plan, "ConfigMap", "web-config"));
    assert!(tier_of(&plan, "Profile", "eu") > crd.tier);
}

#[test]
fn a_cycle_is_reported_with_its_members() {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n",
               "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": "1"}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "n",
               "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "2"}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}),
    ];
    let OrderError::Cycle(members) = plan(&objects, &[]).unwrap_err() else {
        panic!("expected a cycle")
    };
    let mut names: Vec<&str> = members.iter().map(|k| k.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let text = OrderError::Cycle(members).to_string();
    assert!(
        text.contains("ConfigMap n/a") && text.contains("ConfigMap n/b"),
        "{text}"
    );
}

#[test]
fn a_duplicate_and_an_unnamed_document_are_errors() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}});
    assert!(matches!(
        plan(&[cm.clone(), cm], &[]),
        Err(OrderError::Duplicate(_))
    ));
    assert_eq!(
        plan(&[json!({"kind": "ConfigMap"})], &[]),
        Err(OrderError::Unnamed { index: 0 })
    );
}

#[test]
fn a_bad_rule_path_is_an_error_not_a_silent_miss() {
    let mut rule = profile_rule(false);
    rule.path = "$$[".into();
    assert!(matches!(
        plan(&bundle(), &[rule]),
        Err(OrderError::BadRule { .. })
    ));
}

#[test]
fn references_outside_the_bundle_do_not_constrain_the_order() {
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                              "spec": {"serviceAccountName": "elsewhere", "containers": []}}),
    ];
    let plan = plan(&objects, &[]).unwrap();
    let pod = plan.steps.iter().find(|s| s.object.kind == "Pod").unwrap();
    assert_eq!(pod.depends_on.len(), 1, "only its namespace");
}

#[test]
fn a_large_flat_bundle_is_two_tiers() {
    let mut objects: Vec<Value> = (0..1000)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": "n"}}))
        .collect();
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}));
    let plan = plan(&objects, &[]).unwrap();
    assert_eq!(plan.tiers().len(), 2);
    assert_eq!(plan.tiers()[1].len(), 1000);
}

#[test]
fn secrets_leave_the_hub_only_when_named_or_opted_in() {
    let mut spec: DistributionSpec = serde_json::from_value(json!({
        "sources": [{"object": {"apiVersion": "v1", "kind": "Secret", "name": "s"}}],
        "targets": {"members": ["m1"]}
    }))
    .unwrap();
    assert!(may_leave_hub(&spec, "v1", "Secret", true));
    assert!(!may_leave_hub(&spec, "v1", "Secret", false));
    assert!(may_leave_hub(&spec, "v1", "ConfigMap", false));
    spec.include_selected_secrets = true;
    assert!(may_leave_hub(&spec, "v1", "Secret", false));
}

#[test]
fn targets_by_name_and_selector() {
    let members = BTreeMap::from([
        (
            "m1".to_owned(),
            BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        ),
        (
            "m2".to_owned(),
            BTreeMap::from([("region".to_owned(), "us".to_owned())]),
        ),
        (
            "m3".to_owned(),
            BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        ),
    ]);
    let by_selector: DistributionTargets = serde_json::from_value(json!({
        "members": ["m2", "gone"], "selector": {"matchLabels": {"region": "eu"}}
    }))
    .unwrap();
    let (chosen, unknown) = targets(&by_selector, &members).unwrap();
    assert_eq!(chosen, ["m1", "m2", "m3"]);
    assert_eq!(unknown, ["gone"]);
}
