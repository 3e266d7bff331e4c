//! Members end to end: `kubectl multicluster join` against real member API servers, health probed
//! by the hub server against the survival ratio, and outages. The playground's API servers have no
//! kubelets: the test creates Node objects and sets their Ready conditions to play nodes, and
//! stops member-2's API server process (SIGSTOP: it hangs, as a dead host does) to play an outage.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use multicluster_core::api::MemberCluster;
use multicluster_tests::health::{
    member_condition as condition, member_healthy as healthy, wait_for_member as wait_for,
};
use multicluster_tests::{playground, run, run_ok, set_nodes};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Held by the tests that join member-1 with grants or settings of their own: a join with other
/// grants takes accounts away (and resets the member's health settings) under another test's
/// feet.
static MEMBER_JOINS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What `kubectl auth can-i` is asked with each stored token: each would make the token a key to
/// the whole member (impersonating an admin, binding itself a role, reading every Secret, or
/// intercepting every write with a webhook).
const ESCALATIONS: [&[&str]; 4] = [
    &["*", "*", "--as", "someone", "--as-group", "system:masters"],
    &["create", "clusterrolebindings"],
    &["list", "secrets", "-A"],
    &["create", "mutatingwebhookconfigurations"],
];

/// One credentials Secret the hub holds for a member, and kubectl run with nothing else.
struct StoredCredentials {
    capability: String,
    keys: Vec<String>,
    server: String,
    token: String,
    ca: std::path::PathBuf,
}

impl StoredCredentials {
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        run(std::process::Command::new("kubectl")
            .env("KUBECONFIG", "/dev/null")
            .args(["--server", &self.server, "--token", &self.token])
            .arg(format!("--certificate-authority={}", self.ca.display()))
            .args(args))
    }

    fn whoami(&self) -> String {
        let out = self.kubectl(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `yes` or `no`, as `kubectl auth can-i` answers (it exits 1 on no, so the status says
    /// nothing here). With `--as`, the member refusing the impersonation itself is a `no` too;
    /// anything else comes back as kubectl's error, which no assertion takes for an answer.
    fn can_i(&self, args: &[&str]) -> String {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = self.kubectl(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if answer.is_empty() && stderr.contains("cannot impersonate") {
            return "no".to_owned();
        }
        if answer.is_empty() {
            return stderr.into_owned();
        }
        answer
    }
}

/// The member's credentials Secrets on the hub (label `multicluster.dev/member`), by capability.
async fn credentials_of(hub: &Client, member: &str) -> Vec<StoredCredentials> {
    let secrets = Api::<Secret>::namespaced(hub.clone(), "multicluster-system")
        .list(
            &kube::api::ListParams::default().labels(&format!("multicluster.dev/member={member}")),
        )
        .await
        .unwrap();
    let mut stored: Vec<StoredCredentials> = secrets
        .items
        .into_iter()
        .map(|s| {
            let capability =
                s.metadata.labels.as_ref().unwrap()["multicluster.dev/capability"].clone();
            let data = s.data.unwrap();
            let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
            let ca = playground()
                .dir()
                .join(format!("{member}-{capability}-ca-from-hub.crt"));
            std::fs::write(&ca, text("ca.crt")).unwrap();
            StoredCredentials {
                keys: data.keys().cloned().collect(),
                server: text("server"),
                token: text("token"),
                capability,
                ca,
            }
        })
        .collect();
    stored.sort_by(|a, b| a.capability.cmp(&b.capability));
    stored
}

#[tokio::test]
async fn joined_members_are_probed_against_the_survival_ratio_of_played_nodes_and_outages_are_seen()
{
    let _joins = MEMBER_JOINS.lock().await;
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    set_nodes(&pg.client("member-1").await.unwrap(), 4, 4).await;
    set_nodes(&m2, 4, 4).await;

    for member in ["member-1", "member-2"] {
        run_ok(&mut playground().multicluster(&[
            "join",
            member,
            "--member-context",
            member,
            "--labels",
            "env=e2e",
            "--proxy-user",
            "ops-alice",
            "--proxy-group",
            "ops",
        ]));
        // Probe every second, flip after 2 consecutive results either way.
        let patch = serde_json::json!({"spec": {"health": {"intervalSeconds": 1, "timeoutSeconds": 2,
            "failureThreshold": 2, "successThreshold": 2, "minSurvivalRatio": 0.5}}});
        Api::<MemberCluster>::all(hub.clone())
            .patch(member, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    for member in ["member-1", "member-2"] {
        wait_for(
            &hub,
            member,
            Duration::from_secs(20),
            "healthy with 4/4 nodes",
            |mc| healthy(mc) == Some(true) && mc.status.as_ref().unwrap().ready_nodes == Some(4),
        )
        .await;
    }

    // The hub holds, per capability, the member's endpoint, CA and a token of that capability's
    // own account: nothing of the joining user's (an admin client certificate).
    let stored = credentials_of(&hub, "member-2").await;
    let names: Vec<&str> = stored.iter().map(|c| c.capability.as_str()).collect();
    assert_eq!(
        names,
        ["distribution", "health", "proxy", "services"],
        "a join without --allow-snapshots stores no snapshots token, with --proxy-user a proxy one"
    );
    let kubeconfig = std::fs::read_to_string(&pg.state.kubeconfig).unwrap();
    for c in &stored {
        let mut keys = vec!["ca.crt", "expires", "server", "token"];
        if c.capability == "proxy" {
            // Whom the member lets the hub act as, so the hub forwards nobody else.
            keys.extend(["impersonate-groups", "impersonate-users"]);
            keys.sort();
        }
        assert_eq!(c.keys, keys);
        assert!(!kubeconfig.contains(&c.token));
        // Who the stored token is, asked of member-2 with nothing but the stored Secret.
        assert_eq!(
            c.whoami(),
            format!(
                "system:serviceaccount:multicluster-system:multicluster-hub-{}",
                c.capability
            )
        );
        // A compromised hub holds these: none of them is a key to the member.
        for escalation in ESCALATIONS {
            assert_eq!(
                c.can_i(escalation),
                "no",
                "the {} token may {escalation:?} on member-2",
                c.capability
            );
        }
    }
    // …and each may do its own work (so the answers above are not a token that works for nothing).
    for (capability, own) in [
        ("health", &["list", "nodes"][..]),
        ("distribution", &["create", "deployments", "-n", "default"]),
        (
            "services",
            &["create", "endpointslices.discovery.k8s.io", "-n", "default"],
        ),
        ("proxy", &["impersonate", "users/ops-alice"]),
    ] {
        let c = stored.iter().find(|c| c.capability == capability).unwrap();
        assert_eq!(
            c.can_i(own),
            "yes",
            "the {capability} token may not {own:?}"
        );
    }
    let proxy = stored.iter().find(|c| c.capability == "proxy").unwrap();
    for other in ["users/someone-else", "groups/system:masters"] {
        assert_eq!(
            proxy.can_i(&["impersonate", other]),
            "no",
            "proxy may impersonate {other}"
        );
    }
    let distribution = stored
        .iter()
        .find(|c| c.capability == "distribution")
        .unwrap();
    assert_eq!(
        distribution.can_i(&["list", "secrets", "-n", "default"]),
        "no",
        "distribution writes Secrets by name and never reads a namespace's Secrets"
    );

    // 1 of 4 nodes ready is below ⌈4 × 0.5⌉: unhealthy within interval × threshold (plus slack).
    set_nodes(&m2, 4, 1).await;
    let took = wait_for(
        &hub,
        "member-2",
        Duration::from_secs(15),
        "unhealthy",
        |mc| healthy(mc) == Some(false),
    )
    .await;
    let mc = Api::<MemberCluster>::all(hub.clone())
        .get("member-2")
        .await
        .unwrap();
    let reason = condition(&mc, "Healthy").unwrap();
    assert_eq!(reason.reason, "TooFewReadyNodes");
    assert!(
        reason.message.contains("1 of 4 nodes ready, at least 2"),
        "{}",
        reason.message
    );
    eprintln!("member-2 unhealthy {took:?} after its nodes went NotReady");

    set_nodes(&m2, 4, 3).await;
    wait_for(
        &hub,
        "member-2",
        Duration::from_secs(15),
        "healthy again",
        |mc| healthy(mc) == Some(true),
    )
    .await;

    // An outage: member-2's API server stops answering.
    let pid = pg.apiserver_pid("member-2");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let outage = async {
        wait_for(
            &hub,
            "member-2",
            Duration::from_secs(20),
            "unreachable",
            |mc| {
                healthy(mc) == Some(false)
                    && condition(mc, "Reachable").is_some_and(|c| c.status == "False")
            },
        )
        .await;
        // `list` still answers, and says why.
        let started = Instant::now();
        let out = run(&mut playground().multicluster(&["list", "-o", "json"]));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "member-2")
            .unwrap()
            .clone();
        (row, started.elapsed())
    }
    .await;
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    let (row, list_took) = outage;
    assert_eq!(row["healthy"], "False", "{row}");
    assert_eq!(row["reason"], "Unreachable", "{row}");
    assert!(
        list_took < Duration::from_secs(5),
        "list must not wait for a hung member: {list_took:?}"
    );
    wait_for(
        &hub,
        "member-2",
        Duration::from_secs(20),
        "recovered",
        |mc| healthy(mc) == Some(true),
    )
    .await;

    // Every transition left an Event, and `status` shows them.
    let status = run_ok(&mut playground().multicluster(&["status", "member-2"]));
    assert!(
        status.contains("Unhealthy") && status.contains("1 of 4 nodes ready"),
        "{status}"
    );

    // Joining again updates the member; unjoin removes the hub's state and the account on the member.
    run_ok(&mut playground().multicluster(&[
        "join",
        "member-1",
        "--member-context",
        "member-1",
        "--weight",
        "30",
        "--allow-hooks",
    ]));
    let mc = Api::<MemberCluster>::all(hub.clone())
        .get("member-1")
        .await
        .unwrap();
    assert_eq!(mc.spec.weight, 30);
    // Snapshots, opted into: it reads every namespace's Secrets (a snapshot carries them; the
    // reason this is opt-in) and execs hooks, and still cannot become the member's admin.
    let snapshots = credentials_of(&hub, "member-1")
        .await
        .into_iter()
        .find(|c| c.capability == "snapshots")
        .expect("a snapshots token after --allow-hooks");
    for escalation in ESCALATIONS {
        let expected = if escalation == ["list", "secrets", "-A"] {
            "yes"
        } else {
            "no"
        };
        assert_eq!(
            snapshots.can_i(escalation),
            expected,
            "snapshots: {escalation:?}"
        );
    }
    assert_eq!(
        snapshots.can_i(&["create", "pods", "--subresource=exec", "-n", "default"]),
        "yes"
    );
    // It creates pods (the data mover's), and the member's admission policy admits no other.
    let any_pod = snapshots.kubectl(&[
        "run",
        "not-a-mover",
        "-n",
        "default",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "1",
    ]);
    let refused = String::from_utf8_lossy(&any_pod.stderr);
    assert!(
        !any_pod.status.success() && refused.contains("data mover pods only"),
        "the snapshots account ran a pod of its own: {any_pod:?}"
    );
    let mover = multicluster_core::snapshot::mover::pod(
        &multicluster_core::snapshot::mover::Job::import("members-test", "default", "data", "0"),
        &multicluster_core::api::S3Location {
            bucket: "snapshots".into(),
            endpoint: Some("https://s3.example:9000".into()),
            region: "us-east-1".into(),
            prefix: None,
            credentials_secret: multicluster_core::api::SecretRef { name: "s3".into() },
            force_path_style: true,
            ca_bundle: Some("PEM".into()),
        },
        &multicluster_core::snapshot::mover::MoverImage {
            image: multicluster_core::install::default_image(),
            host_binary: None,
        },
    );
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(manifest.path(), mover.to_string()).unwrap();
    let created = snapshots.kubectl(&["create", "-f", manifest.path().to_str().unwrap()]);
    assert!(
        created.status.success(),
        "a pod as the hub server makes data mover pods is admitted: {created:?}"
    );
    snapshots.kubectl(&[
        "delete",
        "-f",
        manifest.path().to_str().unwrap(),
        "--wait=false",
    ]);
    assert_eq!(
        snapshots.can_i(&[
            "create",
            "serviceaccounts",
            "--subresource=token",
            "-n",
            "default"
        ]),
        "no"
    );
    run_ok(&mut playground().multicluster(&["unjoin", "member-1", "--member-context", "member-1"]));
    assert!(
        Api::<MemberCluster>::all(hub.clone())
            .get_opt("member-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        credentials_of(&hub, "member-1").await.is_empty(),
        "unjoin leaves credentials of member-1 on the hub"
    );
    let m1 = pg.client("member-1").await.unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(m1, "multicluster-system");
    let left: Vec<String> = accounts
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.metadata.name.unwrap())
        .filter(|n| n.starts_with("multicluster-hub"))
        .collect();
    assert!(
        left.is_empty(),
        "the hub's accounts stay on the member: {left:?}"
    );
}

#[tokio::test]
async fn a_join_that_cannot_reach_the_member_says_so_and_creates_nothing() {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    // A kubeconfig whose member-1 points at a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let member_1 = pg
        .state
        .clusters
        .iter()
        .find(|c| c.name == "member-1")
        .unwrap()
        .server
        .clone();
    let broken = std::fs::read_to_string(&pg.state.kubeconfig)
        .unwrap()
        .replace(&member_1, &format!("https://127.0.0.1:{closed}"));
    let path = pg.dir().join("broken-kubeconfig");
    std::fs::write(&path, broken).unwrap();
    let out = run(&mut playground().multicluster(&[
        "join",
        "ghost",
        "--member-context",
        "member-1",
        "--member-kubeconfig",
        path.to_str().unwrap(),
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach member ghost"), "{err}");
    assert!(
        Api::<MemberCluster>::all(hub.clone())
            .get_opt("ghost")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(hub, "multicluster-system")
            .get_opt("member-ghost")
            .await
            .unwrap()
            .is_none()
    );
}

/// A kubeconfig with one context `who` reaching member-1 with a bearer token instead of the admin
/// certificate.
fn kubeconfig_with_token(
    dir: &std::path::Path,
    server: &str,
    ca: &std::path::Path,
    token: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("token-kubeconfig-{}", token.len()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: who\n  context:\n    cluster: m\n    user: u\n",
            ca.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_join_with_bad_credentials_or_too_few_permissions_says_which_and_creates_nothing() {
    let pg = playground();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let member_1 = pg
        .state
        .clusters
        .iter()
        .find(|c| c.name == "member-1")
        .unwrap();
    let ca = pg.dir().join("member-1").join("pki").join("ca.crt");

    // Wrong credentials: a token the member does not know.
    let bogus = kubeconfig_with_token(pg.dir(), &member_1.server, &ca, "not-a-real-token");
    let out = run(&mut playground().multicluster(&[
        "join",
        "intruder",
        "--member-context",
        "who",
        "--member-kubeconfig",
        bogus.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("rejected the credentials"), "{err}");

    // Valid credentials without the permissions join needs: a ServiceAccount with no role.
    let ns = multicluster_tests::fresh_namespace(&m1, "nobody")
        .await
        .unwrap();
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(m1.clone(), &ns);
    accounts.create(&PostParams::default(), &sa).await.unwrap();
    let token = accounts
        .create_token_request("nobody", &PostParams::default(), &Default::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let weak = kubeconfig_with_token(pg.dir(), &member_1.server, &ca, &token);
    let out = run(&mut playground().multicluster(&[
        "join",
        "weakling",
        "--member-context",
        "who",
        "--member-kubeconfig",
        weak.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lack permissions")
            && err.contains("create serviceaccounts/token")
            && err.contains("nothing was created"),
        "{err}"
    );

    for name in ["intruder", "weakling"] {
        assert!(
            Api::<MemberCluster>::all(hub.clone())
                .get_opt(name)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn join_starts_the_clusterset_dns_server_on_a_member_and_adds_the_zone_to_its_coredns_once() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    let _joins = MEMBER_JOINS.lock().await;
    let pg = playground();
    pg.join_members();
    let member = pg.client("member-1").await.unwrap();
    // A CoreDNS configuration as kubeadm writes it (no CoreDNS runs on this API-only playground:
    // join edits its ConfigMap, and the pod it starts for the DNS server cannot run without nodes).
    let kubeadm =
        ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    reload\n}\n";
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": kubeadm}
    }))
    .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(member.clone(), "kube-system");
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let join = |what: &str| {
        let out = run(&mut pg.multicluster(&[
            "join",
            "member-1",
            "--member-context",
            "member-1",
            "--allow-rbac",
            "--allow-hooks",
        ]));
        assert!(out.status.success(), "{what}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = join("first join after CoreDNS appeared");
    let deployment = Api::<Deployment>::namespaced(member.clone(), "multicluster-system")
        .get("clusterset-dns")
        .await
        .unwrap();
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(multicluster_core::install::default_image().as_str())
    );
    assert_eq!(container.args.as_ref().unwrap()[0], "clusterset-dns");
    let ip = Api::<Service>::namespaced(member.clone(), "multicluster-system")
        .get("clusterset-dns")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let corefile = configmaps.get("coredns").await.unwrap().data.unwrap()["Corefile"].clone();
    assert!(corefile.starts_with(kubeadm.trim_end()), "{corefile}");
    assert!(
        corefile.contains(&format!(
            "clusterset.local:53 {{\n    errors\n    forward . {ip}:53\n}}"
        )),
        "{corefile}"
    );
    assert!(
        first.contains(&format!("CoreDNS forwards clusterset.local to {ip}:53")),
        "{first}"
    );
    // The server's account reads ServiceImports and EndpointSlices, nothing else.
    let can = |verb: &str, what: &str| {
        run(pg.kubectl().args([
            "--context",
            "member-1",
            "auth",
            "can-i",
            verb,
            what,
            "-A",
            "--as",
            "system:serviceaccount:multicluster-system:clusterset-dns",
        ]))
        .status
        .success()
    };
    assert!(
        can("watch", "serviceimports.multicluster.x-k8s.io")
            && can("list", "endpointslices.discovery.k8s.io")
    );
    assert!(!can("get", "secrets") && !can("create", "endpointslices.discovery.k8s.io"));

    // Again: the server runs already, the zone is there once.
    let second = join("joining again");
    assert!(
        second.contains("already runs")
            && second.contains("CoreDNS already serves clusterset.local"),
        "{second}"
    );
    let again = configmaps.get("coredns").await.unwrap().data.unwrap()["Corefile"].clone();
    assert_eq!(again, corefile);
    configmaps
        .delete("coredns", &Default::default())
        .await
        .unwrap();
}
