//! The foundation end to end, on a real playground (hub + 2 members, real kube-apiservers and
//! etcds started by `kubectl multicluster local up`): the CRDs install and are Established, an
//! object of every kind round-trips through the hub with its defaults and status subresource,
//! schema validation rejects a bad object of every kind on `kubectl apply`, and the kubeconfig's
//! contexts reach three distinct clusters with kube-rs and with kubectl.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use multicluster_core::api::*;
use multicluster_tests::{fresh_namespace, playground, run, run_ok, unique_name};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[tokio::test]
async fn every_multicluster_crd_is_established_on_the_hub_and_absent_from_members() {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(hub);
    for expected in multicluster_core::crds::all() {
        let name = expected.metadata.name.unwrap();
        let crd = crds.get(&name).await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established on the hub");
    }
    // The members are separate clusters: the hub's CRDs are not there.
    let member: Api<CustomResourceDefinition> = Api::all(pg.client("member-1").await.unwrap());
    assert!(
        member
            .get_opt("memberclusters.multicluster.dev")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn every_context_reaches_its_own_api_server_with_kube_rs() {
    let pg = playground();
    let mut uids = Vec::new();
    for cluster in &pg.state.clusters {
        let client = pg.client(&cluster.name).await.unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(
            version.git_version,
            multicluster_core::versions::kubernetes()
        );
        let ns: Api<Namespace> = Api::all(client);
        let kube_system = ns.get("kube-system").await.unwrap();
        uids.push(kube_system.metadata.uid.unwrap());
    }
    uids.sort();
    uids.dedup();
    assert_eq!(
        uids.len(),
        3,
        "hub, member-1 and member-2 must be three distinct clusters"
    );
}

#[tokio::test]
async fn kubectl_reaches_every_context_and_runs_the_plugin() {
    let pg = playground();
    let out = run_ok(
        pg.kubectl()
            .args(["--context", "member-1", "get", "ns", "-o", "name"]),
    );
    assert!(out.contains("namespace/kube-system"), "{out}");

    // kubectl finds kubectl-multicluster on PATH and runs it as `kubectl multicluster`.
    let dir = pg.dir().display().to_string();
    let status = run_ok(pg.kubectl().args([
        "multicluster",
        "local",
        "status",
        "--dir",
        &dir,
        "-o",
        "json",
    ]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let clusters = status["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 3);
    for c in clusters {
        assert_eq!(c["ready"], true, "{c}");
        assert_eq!(c["apiserverRunning"], true, "{c}");
        assert_eq!(c["etcdRunning"], true, "{c}");
    }
    let help = run_ok(pg.kubectl().args(["multicluster", "--help"]));
    assert!(help.contains("kubectl multicluster"), "{help}");
}

/// Creates `object` (JSON as a user would write it, defaults omitted), reads it back typed, sets a
/// status through the status subresource and reads that back too.
async fn round_trip<K>(api: &Api<K>, object: serde_json::Value, status: serde_json::Value) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let typed: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &typed).await.unwrap();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
    api.get(&name).await.unwrap()
}

#[tokio::test]
async fn an_object_of_every_kind_round_trips_through_the_hub() {
    let hub: Client = playground().client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "roundtrip").await.unwrap();
    let now = "2026-11-22T10:00:00Z";

    let name = unique_name("member");
    let mc: MemberCluster = round_trip(
        &Api::all(hub.clone()),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "MemberCluster",
               "metadata": {"name": name, "labels": {"region": "eu"}},
               "spec": {"endpoint": "https://10.0.0.1:6443", "credentialsSecret": {"name": "m-1"}}}),
        json!({"readyNodes": 3, "totalNodes": 4, "version": "v1.36.3",
               "conditions": [{"type": "Healthy", "status": "True", "reason": "EnoughReadyNodes",
                               "message": "3 of 4 nodes ready", "lastTransitionTime": now}]}),
    )
    .await;
    assert_eq!(mc.spec.weight, 100, "weight defaults to 100");
    assert_eq!(mc.spec.role, Role::Active);
    assert_eq!(
        mc.spec.health,
        HealthCheck::default(),
        "health defaults are applied by the API server"
    );
    assert_eq!(mc.status.unwrap().ready_nodes, Some(3));

    let dist: Distribution = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "Distribution",
               "metadata": {"name": "config"},
               "spec": {"sources": [{"object": {"apiVersion": "v1", "kind": "ConfigMap", "name": "app", "namespace": "shop"}}],
                        "targets": {"members": ["member-1", "member-2"]},
                        "overrides": [{"member": "member-2", "namespaceMap": {"shop": "shop-eu"},
                                       "jsonPatch": [{"op": "replace", "path": "/data/region", "value": "eu"}]}]}}),
        json!({"members": [{"member": "member-1", "objects": [{"object": {"apiVersion": "v1", "kind": "ConfigMap", "name": "app", "namespace": "shop"}, "state": "Applied"}]}]}),
    )
    .await;
    assert_eq!(dist.spec.mode, DistributionMode::Once);
    assert_eq!(dist.spec.conflict_policy, ConflictPolicy::Abort);
    assert_eq!(
        dist.spec.overrides[0].json_patch[0].value,
        Some(json!("eu")),
        "patch values are kept, not pruned"
    );
    assert_eq!(
        dist.status.unwrap().members[0].objects[0].state,
        ObjectSyncState::Applied
    );

    let intent: Intent = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "Intent",
               "metadata": {"name": "orders"}, "spec": {"intentId": "a1b2", "holder": "pipeline-7"}}),
        // A status the hub server agrees with (it observed this very ID and holder), so its
        // epoch loop, running in this playground, has nothing to record meanwhile.
        json!({"epoch": 2, "previousIntentId": "z9", "observedIntentId": "a1b2", "observedHolder": "pipeline-7"}),
    )
    .await;
    assert_eq!(intent.spec.intent_id, "a1b2");
    assert_eq!(intent.status.unwrap().epoch, 2);

    let pool_name = unique_name("pool");
    let pool: VipPool = round_trip(
        &Api::all(hub.clone()),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "VipPool",
               "metadata": {"name": pool_name},
               "spec": {"ranges": ["10.96.100.0/24"], "domainSuffix": "mc.example.com"}}),
        json!({"allocated": 1, "free": 253}),
    )
    .await;
    assert!(!pool.spec.ecosystem_annotations.metallb);

    // A claim is named after its address; a unique address per test run keeps reruns independent.
    let address = format!(
        "10.200.{}.{}",
        std::process::id() % 250,
        std::process::id() % 200 + 1
    );
    let claim: VipClaim = round_trip(
        &Api::all(hub.clone()),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "VipClaim",
               "metadata": {"name": address},
               "spec": {"pool": pool_name, "address": address, "hostname": "web.shop.mc.example.com",
                        "owner": {"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "web"}}}),
        json!({}),
    )
    .await;
    assert_eq!(claim.spec.owner.name, "web");

    let tp: TrafficPolicy = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "TrafficPolicy",
               "metadata": {"name": "web"},
               "spec": {"mode": "ActiveStandby",
                        "members": [{"name": "member-1", "weight": 70}, {"name": "member-2", "role": "Standby"}]}}),
        json!({"healthy": ["member-1"], "activeWeights": {"member-1": 100, "member-2": 0}}),
    )
    .await;
    assert_eq!(tp.spec.failback_after_healthy_probes, 3);
    assert_eq!(tp.spec.members[1].weight, 100);
    assert_eq!(tp.status.unwrap().active_weights["member-2"], 0);

    let loc: StorageLocation = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "StorageLocation",
               "metadata": {"name": "minio"},
               "spec": {"s3": {"bucket": "snapshots", "endpoint": "http://127.0.0.1:9000",
                               "credentialsSecret": {"name": "minio-creds"}, "forcePathStyle": true}}}),
        json!({}),
    )
    .await;
    assert_eq!(loc.spec.s3.unwrap().region, "us-east-1");

    let snap: NamespaceSnapshot = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceSnapshot",
               "metadata": {"name": "shop-1"},
               "spec": {"cluster": "member-1", "namespace": "shop", "location": "minio", "quiesce": "ScaleDown"}}),
        json!({"phase": "Completed", "resourceCount": 42,
               "archive": {"url": "s3://snapshots/shop-1.tar.zst", "checksum": "sha256:00", "sizeBytes": 1024}}),
    )
    .await;
    assert_eq!(
        snap.spec.unsnapshottable_volumes,
        UnsnapshottablePolicy::Fail
    );
    assert_eq!(snap.status.unwrap().phase, SnapshotPhase::Completed);

    // A restore passes the hub server's conflict check on create, which needs member-2 joined
    // (its shop-2 does not exist: nothing conflicts).
    playground().join_members();
    let restore: NamespaceRestore = round_trip(
        &Api::namespaced(hub.clone(), &ns),
        json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": "NamespaceRestore",
               "metadata": {"name": "shop-1-to-m2"},
               "spec": {"snapshot": "shop-1", "targetCluster": "member-2", "targetNamespace": "shop-2"}}),
        json!({"phase": "Failed", "conflicts": [{"kind": "Deployment", "name": "web",
               "reason": "image nginx:1.25 in shop-2, nginx:1.27 in the snapshot"}]}),
    )
    .await;
    assert_eq!(restore.status.unwrap().conflicts[0].name, "web");
}

/// Feeds `manifest` to `kubectl apply -f -` and returns (success, stderr).
fn kubectl_apply(namespace: &str, manifest: &serde_json::Value) -> (bool, String) {
    let out = playground().apply("hub", &manifest.to_string(), &["-n", namespace]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn schema_validation_rejects_a_bad_object_of_every_kind_on_kubectl_apply() {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let ns = fresh_namespace(&hub, "validation").await.unwrap();
    let obj = |kind: &str, name: &str, spec: serde_json::Value| json!({"apiVersion": "multicluster.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let member_name = unique_name("bad-member");
    let cases = [
        (
            obj(
                "MemberCluster",
                &member_name,
                json!({"endpoint": "http://10.0.0.1:6443", "credentialsSecret": {"name": "s"}}),
            ),
            "the endpoint must be an https:// URL",
        ),
        (
            obj(
                "MemberCluster",
                &member_name,
                json!({"endpoint": "https://10.0.0.1", "credentialsSecret": {"name": "s"}, "weight": 5000}),
            ),
            "spec.weight: Invalid value",
        ),
        (
            obj(
                "MemberCluster",
                &member_name,
                json!({"endpoint": "https://10.0.0.1", "credentialsSecret": {"name": "s"}, "role": "Leader"}),
            ),
            "spec.role: Unsupported value: \"Leader\"",
        ),
        (
            obj(
                "Distribution",
                "both",
                json!({"targets": {"members": ["m"]},
              "sources": [{"object": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a"},
                           "selector": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": {}}}]}),
            ),
            "set exactly one of object or selector",
        ),
        (
            obj(
                "Distribution",
                "nowhere",
                json!({"targets": {}, "sources": [{"object": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a"}}]}),
            ),
            "name members or give a selector",
        ),
        (
            obj("Intent", "empty", json!({"intentId": "", "holder": "me"})),
            "spec.intentId: Invalid value",
        ),
        (
            obj(
                "VipPool",
                &unique_name("bad-pool"),
                json!({"ranges": ["10.0.0.0/24"], "domainSuffix": "Not_A_Domain"}),
            ),
            "domainSuffix must be a DNS name",
        ),
        (
            obj(
                "VipClaim",
                "10.9.9.9",
                json!({"pool": "p", "address": "10.9.9.8", "hostname": "h",
              "owner": {"apiVersion": "v1", "kind": "Service", "name": "s"}}),
            ),
            "a VipClaim must be named after its address",
        ),
        (
            obj(
                "TrafficPolicy",
                "rr",
                json!({"mode": "RoundRobin", "members": [{"name": "m"}]}),
            ),
            "spec.mode: Unsupported value: \"RoundRobin\"",
        ),
        (
            obj(
                "StorageLocation",
                "both",
                json!({"filesystem": {"path": "/snapshots"},
              "s3": {"bucket": "abc", "credentialsSecret": {"name": "s"}}}),
            ),
            "set exactly one of spec.filesystem or spec.s3",
        ),
        (
            obj(
                "NamespaceSnapshot",
                "no-location",
                json!({"cluster": "member-1", "namespace": "shop"}),
            ),
            "spec.location: Required value",
        ),
        (
            obj(
                "NamespaceRestore",
                "no-target",
                json!({"snapshot": "s", "targetCluster": "member-2"}),
            ),
            "spec.targetNamespace: Required value",
        ),
    ];
    for (manifest, expected) in &cases {
        let (ok, stderr) = kubectl_apply(&ns, manifest);
        assert!(!ok, "kubectl apply accepted an invalid {}", manifest);
        assert!(
            stderr.contains(expected),
            "for {manifest}\nexpected {expected:?} in:\n{stderr}"
        );
        // Nothing half-created: the object does not exist.
        let kind = manifest["kind"].as_str().unwrap().to_lowercase();
        let name = manifest["metadata"]["name"].as_str().unwrap();
        let out = run(pg
            .kubectl()
            .args(["--context", "hub", "-n", &ns, "get", &kind, name]));
        assert!(
            !out.status.success(),
            "{kind}/{name} exists after a rejected apply"
        );
    }
}

#[test]
fn local_up_without_binaries_names_the_install_command_and_starts_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("pg");
    let out = run(std::process::Command::new(multicluster_tests::plugin_bin())
        .args(["local", "up", "--no-merge-kubeconfig", "--dir"])
        .arg(&dir)
        .env("MULTICLUSTER_CACHE_DIR", scratch.path().join("empty-cache")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("tests/install-deps.sh"), "{stderr}");
    assert!(
        !dir.exists(),
        "nothing may be created when the binaries are missing"
    );
}

#[tokio::test]
async fn version_names_the_plugin_build_and_the_hub_servers_which_match() {
    let pg = playground();
    // The hub server writes its build on the hub's Lease when it takes it, right after it starts.
    let (info, stderr) = multicluster_tests::eventually(
        "the hub server's build on its Lease",
        std::time::Duration::from_secs(20),
        async || {
            let out = run(&mut pg.multicluster(&["version", "-o", "json"]));
            let stderr = multicluster_tests::stderr(&out);
            assert!(out.status.success(), "{stderr}");
            let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if info["hubServer"].is_string() {
                Ok((info, stderr))
            } else {
                Err(info.to_string())
            }
        },
    )
    .await;
    let plugin = info["plugin"].as_str().unwrap();
    assert!(plugin.starts_with(env!("CARGO_PKG_VERSION")), "{info}");
    assert_eq!(plugin, multicluster_core::versions::release(), "{info}");
    assert_eq!(info["hubServer"], json!(plugin), "{info}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // `--version` of both programs names the same build.
    let webhook = multicluster_tests::plugin_bin().with_file_name("multicluster-webhook");
    for program in [multicluster_tests::plugin_bin(), webhook] {
        let out = std::process::Command::new(&program)
            .arg("--version")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.trim_end().ends_with(plugin),
            "{}: {said}",
            program.display()
        );
    }
    // The table says the same.
    let table = run_ok(&mut pg.multicluster(&["version"]));
    assert!(
        table.contains("multicluster-webhook (hub)") && table.contains(plugin),
        "{table}"
    );
}

#[test]
fn a_missing_kubeconfig_is_named_once_with_what_to_pass() {
    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-kubeconfig");
    let plugin = || {
        let mut cmd = std::process::Command::new(multicluster_tests::plugin_bin());
        cmd.env("KUBECONFIG", &missing);
        cmd
    };
    let out = run(plugin().arg("list"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pass --kubeconfig or --context")
            && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    // The OS's reason once, not once per layer of the error that carries it.
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    // `version` still prints the plugin's build, and why the hub server's is unknown.
    let out = run(plugin().arg("version"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("unknown: loading the kubeconfig"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("No such file or directory").count(),
        1,
        "{stdout}"
    );
}
