//! `kubectl multicluster local up|down|status` as a user runs them, on real API servers: two
//! playgrounds side by side in different directories, `down` stopping exactly its own processes
//! (API servers, then etcd) and removing its state and its kubeconfig contexts, and a second `up`
//! in the same directory working. This binary starts its own playgrounds (one member each, to keep
//! the machine's load down) instead of the shared one.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kube::config::Kubeconfig;
use kubectl_multicluster::local::PlaygroundState;
use multicluster_tests::{plugin_bin, run, run_ok, running, start_playground};

fn pids(state: &PlaygroundState) -> Vec<u32> {
    state
        .clusters
        .iter()
        .flat_map(|c| [c.apiserver.pid, c.etcd.pid])
        .collect()
}

fn kubectl(kubeconfig: &Path, context: &str) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.args(["--kubeconfig"])
        .arg(kubeconfig)
        .args(["--context", context]);
    cmd
}

fn plugin(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(plugin_bin());
    cmd.args(args).arg("--dir").arg(dir);
    cmd
}

#[test]
fn two_playgrounds_side_by_side_down_stops_exactly_its_own_and_up_again_works() {
    let scratch = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (scratch.path().join("a"), scratch.path().join("b"));

    // The user's own kubeconfig, with a context of theirs that must survive up and down.
    let user_kubeconfig = scratch.path().join("user-kubeconfig");
    std::fs::write(
        &user_kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com:6443\n\
         users:\n- name: me\n  user:\n    token: abc\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: me\n\
         current-context: prod\n",
    )
    .unwrap();

    let a = start_playground(
        &a_dir,
        1,
        &["--kubeconfig", user_kubeconfig.to_str().unwrap()],
    );
    let b = start_playground(&b_dir, 1, &[]);

    // Keys and CAs are the owner's alone: directories 0700, files 0600.
    for (path, mode) in [
        (a_dir.clone(), 0o700),
        (a_dir.join("hub/pki"), 0o700),
        (a_dir.join("hub/pki/apiserver.key"), 0o600),
        (a_dir.join("member-1/pki/sa.key"), 0o600),
        (a_dir.join("hub-server"), 0o700),
        (a_dir.join("hub-server/tls.key"), 0o600),
        (a_dir.join("kubeconfig"), 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let found = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(found, mode, "{}: {found:o}", path.display());
    }

    // A's contexts were merged into the user's kubeconfig, which kubectl can now use directly.
    let merged = Kubeconfig::read_from(&user_kubeconfig).unwrap();
    let names: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"prod") && names.contains(&"hub") && names.contains(&"member-1"),
        "{names:?}"
    );
    assert_eq!(merged.current_context.as_deref(), Some("hub"));
    run_ok(kubectl(&user_kubeconfig, "member-1").args(["get", "ns", "kube-system"]));
    // B is a different set of clusters, reachable through its own kubeconfig.
    run_ok(kubectl(&b.kubeconfig, "member-1").args(["get", "ns", "kube-system"]));
    assert_ne!(a.clusters[0].server, b.clusters[0].server);

    // A second `up` into a running playground's directory is refused and changes nothing.
    let refused = run(&mut plugin(
        &["local", "up", "--members", "1", "--no-merge-kubeconfig"],
        &a_dir,
    ));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("already running") && stderr.contains("local down"),
        "{stderr}"
    );
    assert!(
        pids(&a).into_iter().all(running),
        "a refused `up` must not disturb the running one"
    );

    // `down` stops exactly A's processes and removes its state and its contexts.
    run_ok(&mut plugin(&["local", "down"], &a_dir));
    for pid in pids(&a) {
        assert!(
            !running(pid),
            "pid {pid} of playground A still runs after `local down`"
        );
    }
    assert!(!a_dir.exists(), "`local down` leaves no state behind");
    let cleaned = Kubeconfig::read_from(&user_kubeconfig).unwrap();
    let names: Vec<&str> = cleaned.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["prod"], "only the user's own context remains");
    assert!(
        pids(&b).into_iter().all(running),
        "playground B must be untouched"
    );
    run_ok(kubectl(&b.kubeconfig, "hub").args(["get", "crd", "memberclusters.multicluster.dev"]));

    // `status` of a stopped playground says so; `down` again is a harmless no-op.
    let status = run(&mut plugin(&["local", "status"], &a_dir));
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("no playground"));
    run_ok(&mut plugin(&["local", "down"], &a_dir));

    // A second `up` in the same directory works.
    let a2 = start_playground(&a_dir, 1, &[]);
    run_ok(kubectl(&a2.kubeconfig, "member-1").args(["get", "ns", "default"]));
    let status: serde_json::Value = serde_json::from_str(&run_ok(&mut plugin(
        &["local", "status", "-o", "json"],
        &a_dir,
    )))
    .unwrap();
    assert!(
        status["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ready"] == true),
        "{status}"
    );

    run_ok(&mut plugin(&["local", "down"], &a_dir));
    run_ok(&mut plugin(&["local", "down"], &b_dir));
    for pid in pids(&a2).into_iter().chain(pids(&b)) {
        assert!(!running(pid), "pid {pid} still runs after `local down`");
    }
}
