//! A Distribution's copies end with it, on real API servers: deleting it (with `kubectl delete` and
//! with `distribute delete`), narrowing its targets, and `--orphan`. Only what the Distribution
//! itself created on a member is ever deleted: an object of the same name someone else made, a
//! custom resource someone else holds (which keeps its CRD), and the namespaces stay. The
//! playground runs no namespace controller, so namespaces are never deleted here anyway; the test
//! checks that the hub server did not ask for it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::Distribution;
use multicluster_core::keys;
use multicluster_tests::{
    distribute, eventually, fresh_namespace, playground, run, stderr, succeeded, unique_name,
    write_bundle,
};

const MEMBERS: [&str; 2] = ["member-1", "member-2"];

/// A ConfigMap and a Secret in `ns`, a CRD of `group` and one custom resource of it.
fn bundle(ns: &str, group: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: {ns}}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: {ns}}}
stringData: {{PASSWORD: hunter2}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: profiles.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Profile, plural: profiles, singular: profile}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
---
apiVersion: {group}/v1
kind: Profile
metadata: {{name: eu, namespace: {ns}}}
spec: {{region: eu}}
"#
    )
}

fn profiles(client: &Client, ns: &str, group: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, "v1", "Profile"),
        "profiles",
    );
    Api::namespaced_with(client.clone(), ns, &resource)
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// What `distribute` stored on the hub for `name` in `ns` (ConfigMaps and Secrets).
async fn stored_sources(hub: &Client, ns: &str, name: &str) -> Vec<String> {
    let selector = ListParams::default().labels(&format!("{}={name}", keys::SOURCE_OF));
    let mut out: Vec<String> = Api::<ConfigMap>::namespaced(hub.clone(), ns)
        .list_metadata(&selector)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| format!("ConfigMap {}", m.name_any()))
        .collect();
    out.extend(
        Api::<Secret>::namespaced(hub.clone(), ns)
            .list_metadata(&selector)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|m| format!("Secret {}", m.name_any())),
    );
    out
}

async fn gone(hub: &Client, name: &str) {
    eventually(
        &format!("Distribution {name} is gone"),
        Duration::from_secs(30),
        async || match Api::<Distribution>::namespaced(hub.clone(), "multicluster-system")
            .get_opt(name)
            .await
            .unwrap()
        {
            None => Ok(()),
            Some(d) => Err(format!("{:?}", d.status)),
        },
    )
    .await;
}

#[tokio::test]
async fn kubectl_delete_of_a_distribution_removes_its_copies_everywhere_and_nothing_else() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "lifecycle").await.unwrap();
    let group = format!("{}.example.com", unique_name("life"));
    playground().grant_custom_resources(&group);
    let dir = write_bundle(&bundle(&ns, &group));
    let name = unique_name("shop");
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    // Someone else's ConfigMap on member-2 with the name of a copy, before the Distribution: a
    // conflict (the default policy aborts), and never deleted.
    let mine: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-config", "namespace": ns}, "data": {"owner": "member-2's team"}}))
    .unwrap();
    Api::<Namespace>::all(m2.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(m2.clone(), &ns)
        .create(&PostParams::default(), &mine)
        .await
        .unwrap();
    let out = distribute(dir.path(), &name, &["--to", "member-1,member-2"]);
    assert!(
        !out.status.success() && stderr(&out).contains("not in sync"),
        "member-2's own web-config is a conflict: {}",
        stderr(&out)
    );

    // Every copy carries the Distribution and the hub that wrote it.
    let hub_id = multicluster_core::cluster::cluster_id(&hub).await.unwrap();
    let copy = config_map(&m1, &ns, "web-config").await.unwrap();
    assert_eq!(copy.labels().get(keys::DISTRIBUTION), Some(&name));
    assert_eq!(copy.labels().get(keys::HUB), Some(&hub_id));
    assert!(secret(&m2, &ns, "db").await.is_some());
    // A custom resource of the distributed CRD that someone else made on member-1.
    let theirs: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{group}/v1"), "kind": "Profile",
        "metadata": {"name": "local", "namespace": ns}, "spec": {"region": "local"}}))
    .unwrap();
    profiles(&m1, &ns, &group)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    assert_eq!(stored_sources(&hub, &ns, &name).await.len(), 2);

    succeeded(run(pg.kubectl().args([
        "--context",
        "hub",
        "-n",
        "multicluster-system",
        "delete",
        "distribution",
        &name,
        "--timeout=60s",
    ])));
    gone(&hub, &name).await;

    for (member, client) in [("member-1", &m1), ("member-2", &m2)] {
        assert!(
            secret(client, &ns, "db").await.is_none(),
            "the Secret copy is gone from {member}"
        );
        assert!(
            profiles(client, &ns, &group)
                .get_opt("eu")
                .await
                .unwrap_or(None)
                .is_none(),
            "our custom resource is gone from {member}"
        );
        let namespace = Api::<Namespace>::all(client.clone())
            .get(&ns)
            .await
            .unwrap();
        assert!(
            namespace.metadata.deletion_timestamp.is_none(),
            "the namespace on {member} was not deleted"
        );
    }
    assert!(config_map(&m1, &ns, "web-config").await.is_none());
    let kept = config_map(&m2, &ns, "web-config").await.unwrap();
    assert_eq!(
        kept.data.unwrap()["owner"],
        "member-2's team",
        "an object the Distribution did not create is never deleted"
    );
    // The CRD stays where someone else holds a custom resource of it, and goes elsewhere.
    let crds = |c: &Client| {
        Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(c.clone())
    };
    let crd = format!("profiles.{group}");
    assert!(crds(&m1).get_opt(&crd).await.unwrap().is_some());
    assert!(
        profiles(&m1, &ns, &group)
            .get_opt("local")
            .await
            .unwrap()
            .is_some()
    );
    eventually(
        "the CRD is gone from member-2",
        Duration::from_secs(10),
        async || match crds(&m2).get_opt(&crd).await.unwrap() {
            None => Ok(()),
            Some(c) if c.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there"),
        },
    )
    .await;
    assert_eq!(
        stored_sources(&hub, &ns, &name).await,
        Vec::<String>::new(),
        "the sources distribute stored on the hub are gone"
    );
}

#[tokio::test]
async fn narrowing_the_targets_removes_the_copies_from_the_member_that_left() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "narrow").await.unwrap();
    let name = unique_name("narrow");
    let dir = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-config, namespace: {ns}}}\ndata: {{a: b}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: {ns}}}\nstringData: {{p: q}}\n"
    ));
    succeeded(distribute(
        dir.path(),
        &name,
        &["--to", "member-1,member-2"],
    ));
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    assert!(config_map(&m2, &ns, "web-config").await.is_some());

    let out = succeeded(distribute(
        dir.path(),
        &name,
        &["--to", "member-1", "-o", "json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let members: Vec<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["member-1"], "{report}");
    assert!(config_map(&m2, &ns, "web-config").await.is_none());
    assert!(secret(&m2, &ns, "db").await.is_none());
    assert!(config_map(&m1, &ns, "web-config").await.is_some());
    assert!(secret(&m1, &ns, "db").await.is_some());
}

#[tokio::test]
async fn distribute_delete_orphan_keeps_copies_and_sources_without_their_labels() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "orphan").await.unwrap();
    let name = unique_name("orphan");
    let dir = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-config, namespace: {ns}}}\ndata: {{a: b}}\n"
    ));
    succeeded(distribute(
        dir.path(),
        &name,
        &["--to", "member-1,member-2"],
    ));
    let out = run(&mut pg.multicluster(&["distribute", "delete", &name, "--orphan", "-o", "json"]));
    let deleted: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(deleted["deletionPolicy"], "Orphan");
    assert_eq!(deleted["gone"], true);
    for member in MEMBERS {
        let client = pg.client(member).await.unwrap();
        let copy = config_map(&client, &ns, "web-config").await.unwrap();
        let labels: BTreeMap<String, String> = copy.labels().clone();
        assert!(
            !labels.contains_key(keys::DISTRIBUTION) && !labels.contains_key(keys::HUB),
            "{member}: {labels:?}"
        );
    }
    let source = config_map(&hub, &ns, "web-config").await.unwrap();
    assert!(!source.labels().contains_key(keys::SOURCE_OF));
}

#[tokio::test]
async fn distribute_delete_says_what_happens_on_each_member() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "progress").await.unwrap();
    let name = unique_name("progress");
    let dir = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\ndata: {{a: b}}\n"
    ));
    succeeded(distribute(
        dir.path(),
        &name,
        &["--to", "member-1,member-2"],
    ));
    let out = run(&mut pg.multicluster(&["distribute", "delete", &name]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("member-1: done") && err.contains("member-2: done"),
        "{err}"
    );
    let missing = run(&mut pg.multicluster(&["distribute", "delete", &name]));
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains(&format!("no Distribution {name}")));
}

/// The shipped policy that confines the hub server's deletes on the hub to stored sources, on the
/// real hub API server: the test applies the install's source role and the policy, and plays the
/// hub server by impersonating its ServiceAccount (the playground's hub server runs as admin).
#[tokio::test]
async fn the_hub_server_may_delete_only_the_sources_distribute_stored() {
    use multicluster_core::{distribution, install};
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "guard").await.unwrap();
    let user = install::service_account_user();
    let role = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "e2e-source-guard"}, "rules": distribution::source_reader_rules()});
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "e2e-source-guard"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-source-guard"},
        "subjects": [{"kind": "ServiceAccount", "name": "multicluster-webhook", "namespace": "multicluster-system"}]});
    let objects = [
        role,
        binding,
        distribution::source_guard_policy(&user),
        distribution::source_guard_binding(),
    ];
    let out = pg.apply("hub", &install::to_yaml(&objects).unwrap(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cm = |name: &str, stored: bool| {
        let mut v =
            serde_json::json!({"metadata": {"name": name, "namespace": ns}, "data": {"a": "b"}});
        if stored {
            v["metadata"]["labels"] = serde_json::json!({keys::SOURCE_OF: "shop"});
        }
        serde_json::from_value::<ConfigMap>(v).unwrap()
    };
    let api = Api::<ConfigMap>::namespaced(hub.clone(), &ns);
    for (name, stored) in [("users", false), ("stored", true)] {
        api.create(&PostParams::default(), &cm(name, stored))
            .await
            .unwrap();
    }
    let delete_as_hub_server = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "--context",
            "hub",
            "-n",
            &ns,
            "--as",
            &user,
            "delete",
            "configmap",
            name,
        ];
        args.extend_from_slice(extra);
        run(pg.kubectl().args(args))
    };
    // The policy is in force once the API server has loaded it: asked with server-side dry runs
    // (admission runs for those too), so nothing is deleted before then.
    eventually(
        "the policy is loaded",
        Duration::from_secs(20),
        async || {
            let out = delete_as_hub_server("users", &["--dry-run=server"]);
            if out.status.success() {
                Err(
                    "a dry-run delete of a ConfigMap that is no stored source was admitted"
                        .to_owned(),
                )
            } else {
                Ok(())
            }
        },
    )
    .await;
    let out = delete_as_hub_server("users", &[]);
    let refused = stderr(&out);
    assert!(!out.status.success(), "{refused}");
    assert!(refused.contains("only sources"), "{refused}");
    assert!(refused.contains(keys::SOURCE_OF), "{refused}");
    succeeded(delete_as_hub_server("stored", &[]));
    assert!(config_map(&hub, &ns, "users").await.is_some());
    assert!(config_map(&hub, &ns, "stored").await.is_none());
}
