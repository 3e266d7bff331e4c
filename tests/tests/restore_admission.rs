//! A restore into a namespace holding a different application is refused at admission, naming
//! each conflict, before anything is written: `kubectl apply` of a `NamespaceRestore` on the real
//! hub API server, which calls the real hub server's validating webhook over TLS, which reads the
//! target namespace live on the real member.
//!
//! Played here: the snapshot. The snapshot reconciler is not built yet, so the test writes a
//! `NamespaceSnapshot`'s status itself (phase Completed and the inventory that
//! `multicluster_core::snapshot::inventory` makes of the captured Deployment), as the reconciler
//! will.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use multicluster_core::api::NamespaceSnapshot;
use multicluster_tests::mcs::create_namespace;
use multicluster_tests::{playground, unique_name};
use serde_json::json;

fn deployment(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}
    })
}

fn restore(name: &str, snapshot: &str, target_namespace: &str) -> String {
    format!(
        "apiVersion: multicluster.dev/v1alpha1\nkind: NamespaceRestore\n\
         metadata: {{name: {name}, namespace: multicluster-system}}\n\
         spec: {{snapshot: {snapshot}, targetCluster: member-2, targetNamespace: {target_namespace}}}\n"
    )
}

#[tokio::test]
async fn a_restore_of_a_played_snapshot_onto_a_different_application_is_refused_naming_the_conflict_and_others_are_admitted()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();

    // The played snapshot of shop on member-1: one Deployment, web, nginx:1.27.
    let snapshot = unique_name("shop");
    let snapshots: Api<NamespaceSnapshot> = Api::namespaced(hub.clone(), "multicluster-system");
    let object: NamespaceSnapshot = serde_json::from_value(json!({
        "apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceSnapshot",
        "metadata": {"name": snapshot},
        "spec": {"cluster": "member-1", "namespace": "shop", "location": "local"}
    }))
    .unwrap();
    snapshots
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let inventory = multicluster_core::snapshot::inventory(&[deployment("nginx:1.27")]);
    let status =
        json!({"status": {"phase": "Completed", "inventory": inventory, "resourceCount": 1}});
    snapshots
        .patch_status(&snapshot, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    // member-2's shop-2 runs web on nginx:1.25, and another application, api.
    let taken = unique_name("shop-2");
    create_namespace(&m2, &taken).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(m2.clone(), &taken);
    for (name, image) in [("web", "nginx:1.25"), ("api", "api:2")] {
        let mut d = deployment(image);
        d["metadata"]["name"] = name.into();
        d["spec"]["template"]["spec"]["containers"][0]["name"] = name.into();
        deployments
            .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }
    let out = pg.apply("hub", &restore(&unique_name("r"), &snapshot, &taken), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted: {stderr}");
    assert!(
        stderr.contains(&format!(
            "Deployment web: container web: image nginx:1.25 in {taken}, nginx:1.27 in the snapshot"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "Deployment api: in {taken} and not in the snapshot"
        )),
        "{stderr}"
    );
    // Refused before anything was written: no NamespaceRestore exists.
    let restores = pg
        .kubectl()
        .args([
            "--context",
            "hub",
            "get",
            "namespacerestores",
            "-n",
            "multicluster-system",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert!(
        restores.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&restores.stdout)
    );

    // An absent namespace, and one holding only the same application: admitted.
    let fresh = unique_name("shop-3");
    let out = pg.apply("hub", &restore(&unique_name("r"), &snapshot, &fresh), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same = unique_name("shop-4");
    create_namespace(&m2, &same).await;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(m2.clone(), &same)
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment("nginx:1.27")).unwrap(),
        )
        .await
        .unwrap();
    let out = pg.apply("hub", &restore(&unique_name("r"), &snapshot, &same), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A snapshot that does not exist: refused, saying so.
    let out = pg.apply(
        "hub",
        &restore(&unique_name("r"), "no-such-snapshot", &fresh),
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("NamespaceSnapshot no-such-snapshot does not exist")
    );
}
