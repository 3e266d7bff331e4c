//! Distribution end to end: `kubectl multicluster distribute` stores a bundle on the real hub, the
//! hub server applies it to two real member API servers, and watches on the members record the
//! order the objects were created in. The playground has no controllers: the Deployment is stored
//! and never runs, which is all the order needs.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::Distribution;
use multicluster_tests::{
    distribute, eventually, fresh_namespace, playground, run, run_ok, succeeded, unique_name,
    write_bundle,
};
use serde_json::Value;

const MEMBERS: [&str; 2] = ["member-1", "member-2"];

fn bundle(ns: &str, crd_group: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      imagePullSecrets: [{{name: registry}}]
      volumes: [{{name: cfg, configMap: {{name: web-config}}}}]
      containers:
      - name: web
        image: registry.k8s.io/nginx:1.27
        envFrom: [{{secretRef: {{name: db}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: web, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}}
subjects: [{{kind: ServiceAccount, name: web}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: web, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get]}}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config, namespace: {ns}}}
data: {{greeting: hello}}
---
apiVersion: {crd_group}/v1
kind: Profile
metadata: {{name: eu, namespace: {ns}}}
spec: {{credentials: {{secretName: bucket}}}}
---
apiVersion: {crd_group}/v1
kind: Profile
metadata: {{name: us, namespace: {ns}}}
spec: {{region: us}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: profiles.{crd_group}}}
spec:
  group: {crd_group}
  scope: Namespaced
  names: {{kind: Profile, plural: profiles, singular: profile}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db, namespace: {ns}}}
stringData: {{PASSWORD: hunter2}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bucket, namespace: {ns}}}
stringData: {{key: s3cr3t}}
---
apiVersion: v1
kind: Secret
metadata: {{name: registry, namespace: {ns}}}
type: kubernetes.io/dockerconfigjson
stringData: {{.dockerconfigjson: '{{"auths": {{}}}}'}}
"#
    )
}

/// What a watch on a member saw: per object (`Kind/name`), the resourceVersion it was first seen
/// with. These API servers keep one etcd each, so a resourceVersion is that etcd's revision and
/// orders creations; nothing here updates an object after creating it (no controllers run).
type Seen = Arc<Mutex<HashMap<String, u64>>>;

fn record_creations(client: &Client, ns: &str, crd_group: &str) -> Seen {
    let seen: Seen = Arc::default();
    let kinds: [(&str, &str, &str, &str, bool); 10] = [
        ("", "v1", "Namespace", "namespaces", false),
        ("", "v1", "Secret", "secrets", true),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "ServiceAccount", "serviceaccounts", true),
        ("", "v1", "Service", "services", true),
        ("apps", "v1", "Deployment", "deployments", true),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        (
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
        (crd_group, "v1", "Profile", "profiles", true),
    ];
    for (group, version, kind, plural, namespaced) in kinds {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let seen = seen.clone();
        let kind = kind.to_owned();
        tokio::spawn(async move {
            // A custom resource's watch fails until its CRD exists; the backoff retries it.
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(o) = event {
                    let rv: u64 = o.resource_version().unwrap().parse().unwrap();
                    seen.lock()
                        .unwrap()
                        .entry(format!("{kind}/{}", o.name_any()))
                        .or_insert(rv);
                }
            }
        });
    }
    seen
}

async fn wait_until_seen(seen: &Seen, keys: &[String], member: &str) -> HashMap<String, u64> {
    eventually(
        &format!("{member} sees {keys:?}"),
        Duration::from_secs(30),
        async || {
            let now = seen.lock().unwrap().clone();
            let missing: Vec<_> = keys.iter().filter(|k| !now.contains_key(*k)).collect();
            if missing.is_empty() {
                Ok(now)
            } else {
                Err(format!("missing {missing:?}; saw {now:?}"))
            }
        },
    )
    .await
}

fn status_of(name: &str) -> Value {
    let out = run_ok(&mut playground().multicluster(&["distribute", "status", name, "-o", "json"]));
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn a_bundle_reaches_both_members_dependencies_first_and_secrets_before_everything() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "dist").await.unwrap();
    let group = format!("{}.example.com", unique_name("order"));
    playground().grant_custom_resources(&group);
    let dir = write_bundle(&bundle(&ns, &group));
    let name = unique_name("order");
    let rule = format!("{group}/v1,Profile,.spec.credentials.secretName,Secret");

    // The plan, before anything is stored: Secrets first (after their namespace).
    let plan: Value = serde_json::from_str(&run_ok(&mut pg.multicluster(&[
        "distribute",
        "-f",
        dir.path().to_str().unwrap(),
        "--plan",
        "--dependency-rule",
        &rule,
        "-o",
        "json",
    ])))
    .unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let tier = |kind: &str, name: &str| {
        steps
            .iter()
            .find(|s| s["kind"] == kind && s["name"] == name)
            .unwrap()["tier"]
            .as_u64()
            .unwrap()
    };
    let last_secret = ["db", "bucket", "registry"]
        .iter()
        .map(|n| tier("Secret", n))
        .max()
        .unwrap();
    for step in steps
        .iter()
        .filter(|s| s["kind"] != "Secret" && s["kind"] != "Namespace")
    {
        assert!(
            step["tier"].as_u64().unwrap() > last_secret,
            "{step} precedes a Secret"
        );
    }
    assert!(
        Api::<Distribution>::namespaced(hub.clone(), "multicluster-system")
            .get_opt(&name)
            .await
            .unwrap()
            .is_none(),
        "--plan stores nothing"
    );

    let members: Vec<Client> = futures::future::join_all(MEMBERS.map(|m| pg.client(m)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let recorders: Vec<Seen> = members
        .iter()
        .map(|c| record_creations(c, &ns, &group))
        .collect();
    // Let the watches finish their first list before anything is created.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = distribute(
        dir.path(),
        &name,
        &[
            "--to",
            "member-1,member-2",
            "--dependency-rule",
            &rule,
            "-o",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["synced"], "True", "{report}");
    for m in report["members"].as_array().unwrap() {
        assert_eq!(
            (m["applied"].as_u64(), m["total"].as_u64()),
            (Some(12), Some(12)),
            "{m}"
        );
    }

    let objects = [
        ("Namespace", ns.as_str()),
        ("Secret", "db"),
        ("Secret", "bucket"),
        ("Secret", "registry"),
        ("ConfigMap", "web-config"),
        ("ServiceAccount", "web"),
        ("Role", "web"),
        ("RoleBinding", "web"),
        ("Deployment", "web"),
        ("Service", "web"),
        ("CustomResourceDefinition", &format!("profiles.{group}")),
        ("Profile", "eu"),
        ("Profile", "us"),
    ];
    let keys: Vec<String> = objects.iter().map(|(k, n)| format!("{k}/{n}")).collect();
    let depends_on: &[(&str, &[&str])] = &[
        (
            "Deployment/web",
            &[
                "Secret/db",
                "Secret/registry",
                "ConfigMap/web-config",
                "ServiceAccount/web",
            ],
        ),
        ("RoleBinding/web", &["Role/web", "ServiceAccount/web"]),
        ("Profile/eu", &["Secret/bucket"]),
    ];
    for (member, seen) in MEMBERS.iter().zip(&recorders) {
        let created = wait_until_seen(seen, &keys, member).await;
        let at = |key: &str| created[key];
        let namespace = at(&format!("Namespace/{ns}"));
        let crd = at(&format!("CustomResourceDefinition/profiles.{group}"));
        for key in keys.iter().filter(|k| !k.starts_with("Namespace/")) {
            if !key.starts_with("CustomResourceDefinition/") {
                assert!(namespace < at(key), "{member}: {key} before its namespace");
            }
        }
        for (dependent, deps) in depends_on {
            for dep in *deps {
                assert!(
                    at(dep) < at(dependent),
                    "{member}: {dependent} created before {dep}"
                );
            }
        }
        for profile in ["Profile/eu", "Profile/us"] {
            assert!(
                crd < at(profile),
                "{member}: {profile} created before its CRD"
            );
        }
        let last_secret = ["Secret/db", "Secret/bucket", "Secret/registry"]
            .map(at)
            .into_iter()
            .max()
            .unwrap();
        for key in keys
            .iter()
            .filter(|k| !k.starts_with("Secret/") && !k.starts_with("Namespace/"))
        {
            assert!(
                last_secret < at(key),
                "{member}: {key} created before a Secret"
            );
        }
        let order: BTreeMap<u64, &String> = keys.iter().map(|k| (at(k), k)).collect();
        eprintln!(
            "{member} creation order: {:?}",
            order.values().collect::<Vec<_>>()
        );
    }

    // An in-cluster hub server reads Secrets only where distribute stored some: this namespace.
    let can_i = |ns: &str| {
        let out = run(pg.kubectl().args([
            "--context",
            "hub",
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            ns,
            "--as",
            "system:serviceaccount:multicluster-system:multicluster-webhook",
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can_i(&ns), "yes");
    assert_eq!(can_i("default"), "no");

    // The hub server talks to each member over one multiplexed connection, however many
    // requests it had in flight.
    let hub_server = pg.state.hub_server.as_ref().unwrap().process.pid;
    for cluster in pg
        .state
        .clusters
        .iter()
        .filter(|c| c.name.starts_with("member-"))
    {
        let port: u16 = cluster.server.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            multicluster_tests::connections_to(hub_server, port),
            1,
            "connections from the hub server to {}",
            cluster.name
        );
    }

    // What a user reads: the copies are there and labelled with their Distribution.
    let secret = Api::<Secret>::namespaced(members[1].clone(), &ns)
        .get("db")
        .await
        .unwrap();
    assert_eq!(secret.labels()["multicluster.dev/distribution"], name);
    let status = status_of(&name);
    assert_eq!(status["synced"], "True", "{status}");
}

#[tokio::test]
async fn continuous_mode_follows_the_hub_corrects_edits_and_removes_what_left() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "cont").await.unwrap();
    let name = unique_name("cont");
    let manifest = |greeting: &str, password: &str, extra: bool| {
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{greeting: {greeting}}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\nstringData: {{password: {password}}}\n"
        );
        if extra {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: extra, namespace: {ns}}}\ndata: {{a: b}}\n"
            ));
        }
        text
    };
    let dir = write_bundle(&manifest("hello", "one", true));
    succeeded(distribute(
        dir.path(),
        &name,
        &["--to", "member-1,member-2", "--mode", "continuous"],
    ));
    let members: Vec<Client> = futures::future::join_all(MEMBERS.map(|m| pg.client(m)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // A change on the hub (a plain kubectl apply of the source) reaches both members.
    let changed = Instant::now();
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}, labels: {{multicluster.dev/source-of: {name}}}}}\ndata: {{greeting: bonjour}}\n"
    );
    let out = pg.apply(
        "hub",
        &cm,
        &["--server-side", "--field-manager", "kubectl-multicluster"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (member, client) in MEMBERS.iter().zip(&members) {
        wait_for_data(client, &ns, "settings", "greeting", "bonjour", member).await;
    }
    eprintln!(
        "source change reached both members in {:?}",
        changed.elapsed()
    );

    // Secret rotation on the hub.
    let rotated = Instant::now();
    Api::<Secret>::namespaced(hub.clone(), &ns)
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "two"}})),
        )
        .await
        .unwrap();
    for (member, client) in MEMBERS.iter().zip(&members) {
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        eventually(
            &format!("{member} gets the rotated Secret"),
            Duration::from_secs(10),
            async || secrets.get("creds").await.unwrap().data.unwrap()["password"].0 == b"two",
        )
        .await;
    }
    eprintln!(
        "Secret rotation reached both members in {:?}",
        rotated.elapsed()
    );

    // Someone edits the copy on member-1 (as `kubectl edit` would): the hub puts its version back
    // and says so in status.
    Api::<ConfigMap>::namespaced(members[0].clone(), &ns)
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"data": {"greeting": "hacked"}})),
        )
        .await
        .unwrap();
    wait_for_data(
        &members[0],
        &ns,
        "settings",
        "greeting",
        "bonjour",
        "member-1",
    )
    .await;
    eventually(
        "the correction shows in status",
        Duration::from_secs(10),
        async || {
            let status = status_of(&name);
            let m1 = status["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["member"] == "member-1")
                .unwrap()
                .clone();
            let note = m1["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["object"]["name"] == "settings")
                .and_then(|o| o["message"].as_str().map(str::to_owned));
            let corrected = note
                .as_deref()
                .is_some_and(|n| n.contains("kubectl-edit") && n.contains("corrected"));
            if corrected {
                Ok(())
            } else {
                Err(m1.to_string())
            }
        },
    )
    .await;

    // `extra` leaves the bundle: it leaves the members (and the hub's sources).
    let dir2 = write_bundle(&manifest("bonjour", "two", false));
    succeeded(distribute(
        dir2.path(),
        &name,
        &["--to", "member-1,member-2", "--mode", "continuous"],
    ));
    for (member, client) in MEMBERS.iter().zip(&members) {
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        eventually(
            &format!("{member} loses extra"),
            Duration::from_secs(10),
            async || config_maps.get_opt("extra").await.unwrap().is_none(),
        )
        .await;
    }
    assert!(
        Api::<ConfigMap>::namespaced(hub.clone(), &ns)
            .get_opt("extra")
            .await
            .unwrap()
            .is_none()
    );
}

async fn wait_for_data(client: &Client, ns: &str, name: &str, key: &str, want: &str, member: &str) {
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    eventually(
        &format!("{member}: {name}.{key} is {want:?}"),
        Duration::from_secs(10),
        async || {
            let cm = config_maps.get_opt(name).await.unwrap();
            let got = cm.and_then(|c| c.data).and_then(|mut d| d.remove(key));
            if got.as_deref() == Some(want) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn drift_can_be_reported_instead_of_corrected() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "drift").await.unwrap();
    let name = unique_name("drift");
    let dir = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{greeting: hello}}\n"
    ));
    succeeded(distribute(
        dir.path(),
        &name,
        &[
            "--to",
            "member-2",
            "--mode",
            "continuous",
            "--drift-policy",
            "report",
        ],
    ));
    let m2 = pg.client("member-2").await.unwrap();
    Api::<ConfigMap>::namespaced(m2.clone(), &ns)
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"data": {"greeting": "local"}})),
        )
        .await
        .unwrap();
    eventually(
        "the drift is reported",
        Duration::from_secs(10),
        async || {
            let status = status_of(&name);
            let drifted = status["members"][0]["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| {
                    o["state"] == "Drifted"
                        && o["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("kubectl-edit")
                });
            if drifted && status["synced"] == "False" {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;
    // Reported, not corrected.
    let cm = Api::<ConfigMap>::namespaced(m2, &ns)
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "local");
}

#[tokio::test]
async fn conflicts_unknown_members_and_bad_files_are_reported_and_change_nothing() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "conflict").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();

    // Malformed YAML: the file is named, nothing is stored.
    let bad = write_bundle("apiVersion: v1\nkind: [unclosed\n");
    let name = unique_name("bad");
    let out = distribute(bad.path(), &name, &["--to", "member-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bundle.yaml") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
    assert!(
        Api::<Distribution>::namespaced(hub.clone(), "multicluster-system")
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );

    // A ConfigMap member-1 already has, made by someone else: Abort leaves it and says why.
    let theirs = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: taken, namespace: {ns}}}\ndata: {{owner: them}}\n"
    );
    let out = pg.apply(
        "member-1",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n{theirs}"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: taken, namespace: {ns}}}\ndata: {{owner: hub}}\n"
    ));
    let name = unique_name("conflict");
    let out = distribute(
        ours.path(),
        &name,
        &["--to", "member-1,member-9", "-o", "json"],
    );
    assert!(!out.status.success(), "a conflict is a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not in sync"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let object = &report["members"][0]["objects"][0];
    assert_eq!(object["state"], "Conflict", "{report}");
    assert!(
        object["message"]
            .as_str()
            .unwrap()
            .contains("conflictPolicy"),
        "{object}"
    );
    let cm = Api::<ConfigMap>::namespaced(m1.clone(), &ns)
        .get("taken")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["owner"], "them", "Abort must not touch it");

    // Adopt takes it over.
    let out = distribute(
        ours.path(),
        &name,
        &["--to", "member-1", "--conflict-policy", "adopt"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = Api::<ConfigMap>::namespaced(m1, &ns)
        .get("taken")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["owner"], "hub");
    assert_eq!(
        cm.metadata.labels.unwrap()["multicluster.dev/distribution"],
        name
    );

    // A member that is not registered is named.
    let out = distribute(ours.path(), &unique_name("nowhere"), &["--to", "member-9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("member-9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dry_run_stores_nothing_and_diff_shows_an_edit_on_a_member_with_secrets_masked() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "diff").await.unwrap();
    let name = unique_name("diff");
    let dir = write_bundle(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{greeting: hello}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {ns}}}\nstringData: {{password: hunter2}}\n"
    ));
    let path = dir.path().to_str().unwrap();
    let out = succeeded(distribute(
        path,
        &name,
        &["--to", "member-1,member-2", "--dry-run", "server"],
    ));
    assert_eq!(
        out.lines().filter(|l| l.contains(" Create")).count(),
        4,
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !out.contains("aHVudGVyMg=="),
        "a Secret value was printed:\n{out}"
    );
    let m2 = pg.client("member-2").await.unwrap();
    assert!(
        Api::<ConfigMap>::namespaced(m2.clone(), &ns)
            .get_opt("settings")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Distribution>::namespaced(hub.clone(), "multicluster-system")
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );

    succeeded(distribute(path, &name, &["--to", "member-1,member-2"]));
    let diff: Value = serde_json::from_str(&run_ok(
        &mut pg.multicluster(&["diff", &name, "-o", "json"]),
    ))
    .unwrap();
    assert!(
        diff["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["change"] == "Unchanged"),
        "{diff}"
    );

    // Once mode: an edit on member-2 stays until the next sync, and diff shows it.
    Api::<ConfigMap>::namespaced(m2, &ns)
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"greeting": "edited"}})),
        )
        .await
        .unwrap();
    let out = run_ok(&mut pg.multicluster(&["diff", &name]));
    assert!(
        out.contains("-  greeting: edited") && out.contains("+  greeting: hello"),
        "{out}"
    );
    let updates: Vec<&str> = out.lines().filter(|l| l.contains(" Update")).collect();
    assert_eq!(updates.len(), 1, "{out}");
    assert!(
        updates[0].starts_with("member-2") && updates[0].contains("ConfigMap"),
        "{out}"
    );
}
