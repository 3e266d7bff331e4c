//! Deleting Distributions while a member does not answer, and `unjoin`, on real API servers:
//! member-2's API server process is stopped (SIGSTOP: it hangs, as a dead host does) to play the
//! outage. Its own test binary, so the outage and the unjoin cannot disturb other tests'
//! playground; one test, because its steps share member-2.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use multicluster_core::api::{Distribution, MemberCluster};
use multicluster_tests::{
    distribute, eventually, fresh_namespace, playground, probe_every_second, run, stderr,
    succeeded, unique_name, write_bundle,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// ConfigMaps `names` in `ns`, as a bundle directory.
fn config_maps(ns: &str, names: &[&str]) -> tempfile::TempDir {
    let text: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: {ns}}}\ndata: {{a: b}}\n"
            )
        })
        .collect();
    write_bundle(&text.join("---\n"))
}

/// Distributes `dir` as `name` to `to` and expects it in sync.
fn distribute_to(dir: &tempfile::TempDir, name: &str, to: &str) {
    succeeded(distribute(dir.path(), name, &["--to", to]));
}

async fn has(client: &Client, ns: &str, name: &str) -> bool {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

async fn distribution(hub: &Client, name: &str) -> Option<Distribution> {
    Api::<Distribution>::namespaced(hub.clone(), "multicluster-system")
        .get_opt(name)
        .await
        .unwrap()
}

async fn reachable(hub: &Client, member: &str) -> Option<bool> {
    let m = Api::<MemberCluster>::all(hub.clone())
        .get(member)
        .await
        .ok()?;
    m.status?
        .conditions
        .iter()
        .find(|c| c.type_ == "Reachable")
        .map(|c| c.status == "True")
}

#[tokio::test]
async fn a_member_stopped_with_sigstop_keeps_its_copies_until_it_answers_and_unjoin_removes_them_first()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let ns = fresh_namespace(&hub, "departure").await.unwrap();
    let (waited, forced) = (unique_name("waited"), unique_name("forced"));
    distribute_to(&config_maps(&ns, &["waited"]), &waited, "member-1,member-2");
    distribute_to(&config_maps(&ns, &["forced"]), &forced, "member-1,member-2");
    assert!(has(&m2, &ns, "waited").await && has(&m2, &ns, "forced").await);
    probe_every_second(&hub, "member-2").await;

    // Outage.
    let pid = pg.apiserver_pid("member-2");
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let during = async {
        eventually(
            "the probe sees member-2 unreachable",
            Duration::from_secs(30),
            async || reachable(&hub, "member-2").await == Some(false),
        )
        .await;
        let out =
            run(&mut playground().multicluster(&["distribute", "delete", &waited, "--wait=false"]));
        assert!(out.status.success(), "{}", stderr(&out));
        // member-1 answers: its copy goes; member-2 is waited for, and status says so.
        eventually(
            "member-1's copy is removed",
            Duration::from_secs(20),
            async || !has(&m1, &ns, "waited").await,
        )
        .await;
        let status = eventually(
            "the Distribution says it waits for member-2",
            Duration::from_secs(20),
            async || {
                let d = distribution(&hub, &waited).await.ok_or("gone")?;
                let status = d.status.unwrap_or_default();
                let m2 = status
                    .members
                    .iter()
                    .find(|m| m.member == "member-2")
                    .ok_or("no member-2 entry")?;
                let message = m2.message.clone().unwrap_or_default();
                if message.contains("does not answer") && status.members.len() == 1 {
                    Ok(message)
                } else {
                    Err(format!("{status:?}"))
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let still_there = distribution(&hub, &waited).await.is_some();
        // --force: members that do not answer are released as they are.
        let out = run(&mut playground().multicluster(&[
            "distribute",
            "delete",
            &forced,
            "--force",
            "--timeout",
            "30s",
        ]));
        (status, still_there, out)
    }
    .await;
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    let (status, still_there, forced_out) = during;
    eprintln!("member-2's status while it did not answer: {status}");
    assert!(still_there, "the Distribution waits for member-2");
    assert!(forced_out.status.success(), "{}", stderr(&forced_out));
    assert!(distribution(&hub, &forced).await.is_none());
    assert!(!has(&m1, &ns, "forced").await);

    // Back: the waited-for deletion finishes; the forced one left member-2's copy.
    eventually(
        "member-2's copy is removed once it answers, and the Distribution goes",
        Duration::from_secs(60),
        async || {
            let copy = has(&m2, &ns, "waited").await;
            let d = distribution(&hub, &waited).await.is_some();
            if !copy && !d {
                Ok(())
            } else {
                Err(format!("copy {copy}, distribution {d}"))
            }
        },
    )
    .await;
    assert!(
        has(&m2, &ns, "forced").await,
        "--force releases without removing"
    );

    // unjoin removes the copies before the hub loses the member's credentials.
    let kept = unique_name("kept");
    distribute_to(&config_maps(&ns, &["kept"]), &kept, "member-1,member-2");
    let out = run(&mut playground().multicluster(&[
        "unjoin",
        "member-2",
        "--member-context",
        "member-2",
        "--timeout",
        "60s",
    ]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "Removing the copies of Distribution {kept} from member-2"
        )),
        "{err}"
    );
    assert!(!has(&m2, &ns, "kept").await);
    assert!(has(&m1, &ns, "kept").await, "member-1 keeps its copy");
    let d = distribution(&hub, &kept).await.unwrap();
    let members: Vec<String> = d
        .status
        .unwrap_or_default()
        .members
        .into_iter()
        .map(|m| m.member)
        .collect();
    assert_eq!(members, ["member-1"]);
}
