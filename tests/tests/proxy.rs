//! Proxy access end to end: a hub user reaches a member through the hub's real API server (the
//! aggregation layer, with its front-proxy certificate) and the hub server (SubjectAccessReview on
//! the hub, impersonation on the member). Users are played with `kubectl --as`: the playground's
//! admin impersonates them on the hub, which then authenticates the request as that user.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use multicluster_tests::{fresh_namespace, playground, run, succeeded, unique_name};
use serde_json::Value;

fn proxy(member: &str, kubectl: &[&str]) -> std::process::Output {
    let mut cmd = playground().kubectl();
    cmd.args([
        "multicluster",
        "proxy",
        "--cluster",
        member,
        "--context",
        "hub",
        "--",
    ])
    .args(kubectl);
    run(&mut cmd)
}

#[tokio::test]
async fn hub_users_played_by_impersonation_reach_a_member_as_themselves_or_are_told_what_they_lack()
{
    let pg = playground();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let ns = fresh_namespace(&m1, "proxy").await.unwrap();
    let alice = unique_name("alice");
    let bob = unique_name("bob");
    let carol = unique_name("carol");
    // member-1's admin lets the hub act as alice there (with group readers), and nobody else.
    pg.join_member(
        "member-1",
        &["--proxy-user", &alice, "--proxy-group", "readers"],
    );

    // On the hub: alice may use member-1's proxy, and nothing else.
    let hub_rbac = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {alice}-proxy}}
rules: [{{apiGroups: [proxy.multicluster.dev], resources: [memberclusters/proxy], resourceNames: [member-1], verbs: [get, create]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {alice}-proxy}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {alice}-proxy}}
subjects: [{{kind: User, name: {alice}, apiGroup: rbac.authorization.k8s.io}}]
"#
    );
    let out = pg.apply("hub", &hub_rbac, &[]);
    succeeded(out);
    // On member-1: alice may read ConfigMaps in one namespace, not Secrets.
    let member_objects = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: visible-through-the-hub, namespace: {ns}}}
data: {{a: b}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-configmaps, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: read-configmaps, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}}
subjects: [{{kind: User, name: {alice}, apiGroup: rbac.authorization.k8s.io}}]
"#
    );
    let out = pg.apply("member-1", &member_objects, &[]);
    succeeded(out);

    // Alice lists member-1's ConfigMaps through the hub, with no member credentials of her own.
    let out = proxy(
        "member-1",
        &["get", "configmaps", "-n", &ns, "--as", &alice, "-o", "name"],
    );
    assert!(succeeded(out).contains("configmap/visible-through-the-hub"));

    // The member sees alice (impersonated by the hub's account), not the hub.
    let out = proxy(
        "member-1",
        &["auth", "whoami", "--as", &alice, "-o", "json"],
    );
    let review: Value = serde_json::from_str(&succeeded(out)).unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        alice.as_str(),
        "{review}"
    );

    // The member's RBAC still applies to her.
    let out = proxy("member-1", &["get", "secrets", "-n", &ns, "--as", &alice]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "User \"{alice}\" cannot list resource \"secrets\""
        )),
        "{stderr}"
    );

    // Bob has no hub permission: denied, and told which one.
    let out = proxy("member-1", &["get", "configmaps", "-n", &ns, "--as", &bob]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("memberclusters/proxy")
            && stderr.contains("proxy.multicluster.dev")
            && stderr.contains(&bob),
        "{stderr}"
    );

    // Carol may use the proxy on the hub, but member-1 did not name her at join: the hub does not
    // ask the member to take her (its proxy account could not impersonate her anyway).
    let out = pg.apply(
        "hub",
        &format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {carol}-proxy}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {alice}-proxy}}
subjects: [{{kind: User, name: {carol}, apiGroup: rbac.authorization.k8s.io}}]
"#
        ),
        &[],
    );
    succeeded(out);
    let out = proxy(
        "member-1",
        &["get", "configmaps", "-n", &ns, "--as", &carol],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("--proxy-user {carol}")),
        "{stderr}"
    );
    // Groups: only the one member-1 named goes along, never system:masters.
    let out = proxy(
        "member-1",
        &[
            "auth",
            "whoami",
            "--as",
            &alice,
            "--as-group",
            "readers",
            "--as-group",
            "auditors",
            "--as-group",
            "system:masters",
            "-o",
            "json",
        ],
    );
    let review: Value = serde_json::from_str(&succeeded(out)).unwrap();
    let groups: Vec<&str> = review["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(groups, ["readers", "system:authenticated"], "{review}");

    // Alice's hub permission names member-1 only.
    let out = proxy(
        "member-2",
        &["get", "configmaps", "-n", "default", "--as", &alice],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("member-2"),
        "{stderr}"
    );

    // member-2's admin gave the hub no proxy access (joined without --proxy-user): even the hub's
    // admin is told so, as a refusal that names the flag, not as a server error.
    let out = proxy("member-2", &["get", "configmaps", "-n", "default"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("Forbidden")
            && stderr.contains("no proxy credentials for member member-2")
            && stderr.contains("--proxy-user"),
        "{stderr}"
    );

    // Straight to the hub server, past the hub's API server: without the front proxy's client
    // certificate nobody is believed, whoever they claim to be.
    let url = &pg.state.hub_server.as_ref().unwrap().url;
    let empty = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(empty.path(), "apiVersion: v1\nkind: Config\n").unwrap();
    let out = run(pg.kubectl().args([
        "get",
        "--raw",
        "/apis/proxy.multicluster.dev/v1alpha1/memberclusters/member-1/proxy/api",
        "--server",
        url,
        "--insecure-skip-tls-verify",
        "--kubeconfig",
        empty.path().to_str().unwrap(),
        // Some credential, so kubectl does not prompt; the hub server ignores it either way.
        "--token",
        "not-a-hub-token",
        "--as",
        "system:admin",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("did not come through the hub's API server"),
        "{stderr}"
    );

    // A member that does not exist is named before kubectl runs.
    let out = proxy("member-9", &["get", "ns"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no member cluster named \"member-9\""),
        "{stderr}"
    );
}
