//! `kubectl multicluster local up --nodes 1` as the README walks a user through it, with nothing
//! played: real kube-controller-manager, kube-scheduler, kubelets with containerd and runc, CNI
//! bridges and kube-proxies in network namespaces, the playground CSI driver with the real CSI
//! sidecars and snapshot-controller. A Deployment gets a Running pod, a NodePort of one member
//! answers a pod of the other member, an image loaded with `local load-image` runs, a claim binds,
//! a VolumeSnapshot and a VolumeGroupSnapshot become ready and a restored claim holds the data, a
//! pod reaches a Service by its name through the cluster DNS (CoreDNS), a namespace deletion
//! finishes; and `local down` leaves no process, mount, network namespace,
//! link, route or host file behind. This binary starts its own playground (one test: the
//! before/after comparison of the machine must not see another test's playground).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use multicluster_tests::{eventually_blocking, plugin_bin, run, run_ok, running, start_playground};

const IMAGE: &str = kubectl_multicluster::local::image::IMAGE;

/// What a playground could leave on the machine, read independently of the code under test.
fn machine_state(dir: &Path) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let lines = |cmd: &mut Command| {
        String::from_utf8_lossy(&cmd.output().unwrap().stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for ns in lines(Command::new("ip").args(["netns", "list"])) {
        seen.insert(format!(
            "netns {}",
            ns.split_whitespace().next().unwrap_or("")
        ));
    }
    for link in lines(Command::new("ip").args(["-o", "link", "show"])) {
        // "3: name@peer: <…": the name, without the index that changes.
        let name = link.split(':').nth(1).unwrap_or("").trim();
        seen.insert(format!("link {}", name.split('@').next().unwrap_or(name)));
    }
    for route in lines(Command::new("ip").args(["-4", "route", "show"])) {
        seen.insert(format!("route {route}"));
    }
    for mount in std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
    {
        seen.insert(format!("mount {mount}"));
    }
    let marker = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        // The test harness's own watchdog (see `start_playground`) names the directory too.
        let watchdog = cmdline.split('\0').nth(3) == Some("watchdog");
        if cmdline.contains(&marker) && !watchdog {
            seen.insert(format!("process {:?}", entry.file_name()));
        }
    }
    for host_dir in [
        "/run/containerd/s",
        "/var/lib/cni/results",
        "/var/log/containers",
    ] {
        for entry in std::fs::read_dir(host_dir).into_iter().flatten().flatten() {
            seen.insert(format!("file {}", entry.path().display()));
        }
    }
    seen
}

fn kubectl(kubeconfig: &Path, context: &str) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context, "--request-timeout=20s"]);
    cmd
}

/// An HTTP GET with busybox's `nc` from inside a pod (its `wget` crashes on a refused
/// connection): the body's last line, or the error.
fn http_from_pod(kubeconfig: &Path, context: &str, deploy: &str, host: &str, port: &str) -> String {
    let script = format!(
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | tail -n 1"
    );
    let out = run(kubectl(kubeconfig, context).args([
        "exec",
        &format!("deploy/{deploy}"),
        "--",
        "sh",
        "-c",
        &script,
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn pods_run_serve_across_members_and_down_leaves_nothing_behind() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("pg");
    let before = machine_state(&dir);

    let state = start_playground(&dir, 2, &["--nodes", "1"]);
    let kc = state.kubeconfig.clone();
    let nodes: Vec<_> = state.clusters.iter().flat_map(|c| &c.nodes).collect();
    assert_eq!(nodes.len(), 2, "one node per member, none on the hub");
    let member1_node = nodes
        .iter()
        .find(|n| n.network.cluster == "member-1")
        .unwrap();

    // The README's first workload: a Deployment of the playground's image gets a Running pod.
    run_ok(kubectl(&kc, "member-1").args([
        "create",
        "deployment",
        "web",
        &format!("--image={IMAGE}"),
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ]));
    run_ok(kubectl(&kc, "member-1").args([
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=90s",
    ]));
    let phase = run_ok(kubectl(&kc, "member-1").args([
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].status.phase} {.items[0].spec.nodeName}",
    ]));
    assert_eq!(phase.trim(), "Running member-1-node-1");
    run_ok(kubectl(&kc, "member-1").args([
        "exec",
        "deploy/web",
        "--",
        "sh",
        "-c",
        "echo served-by-member-1 > /index.html",
    ]));
    run_ok(kubectl(&kc, "member-1").args([
        "expose",
        "deployment",
        "web",
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ]));
    let node_port = run_ok(kubectl(&kc, "member-1").args([
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]));

    // Cluster DNS: the pod reaches its own Service by name, short and fully qualified, through
    // CoreDNS and the Service's cluster IP.
    for name in ["web", "web.default.svc.cluster.local"] {
        eventually_blocking(
            &format!("a pod of member-1 gets its page from Service {name}, resolved by CoreDNS"),
            Duration::from_secs(60),
            || http_from_pod(&kc, "member-1", "web", name, "80") == "served-by-member-1",
        );
    }
    let resolv = run_ok(kubectl(&kc, "member-1").args([
        "exec",
        "deploy/web",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]));
    assert!(
        resolv.contains("nameserver 10.96.0.10")
            && resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );

    // An image that is not the playground's own, loaded into member-2's node only.
    let archive = scratch.path().join("client.oci.tar");
    std::fs::write(
        &archive,
        multicluster_core::oci::image_archive(
            "example.test/client:v1",
            &[
                multicluster_core::oci::Entry::Dir { path: "bin".into() },
                multicluster_core::oci::Entry::Dir { path: "tmp".into() },
                multicluster_core::oci::Entry::File {
                    path: "bin/busybox".into(),
                    mode: 0o755,
                    bytes: std::fs::read("/usr/bin/busybox")
                        .or_else(|_| std::fs::read("/bin/busybox"))
                        .unwrap(),
                },
            ],
            &multicluster_core::oci::RunConfig {
                entrypoint: vec!["/bin/busybox".into(), "sleep".into(), "3600".into()],
                env: vec!["PATH=/bin".into()],
            },
        )
        .unwrap(),
    )
    .unwrap();
    let loaded = run_ok(
        Command::new(plugin_bin())
            .args(["local", "load-image"])
            .arg(&archive)
            .args(["--cluster", "member-2", "-o", "json", "--dir"])
            .arg(&dir),
    );
    let loaded: serde_json::Value = serde_json::from_str(&loaded).unwrap();
    assert_eq!(loaded["loaded"][0]["node"], "member-2-node-1", "{loaded}");
    run_ok(kubectl(&kc, "member-2").args([
        "create",
        "deployment",
        "client",
        "--image=example.test/client:v1",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox --install -s /bin && exec sleep 3600",
    ]));
    run_ok(kubectl(&kc, "member-2").args([
        "wait",
        "--for=condition=Available",
        "deployment/client",
        "--timeout=90s",
    ]));

    // A pod of member-2 reaches member-1's NodePort on member-1's node: pods of different members
    // reach each other's services, the ground multi-cluster services stand on.
    let host = member1_node.network.address.to_string();
    eventually_blocking(
        "a pod of member-2 gets member-1's page through its NodePort",
        Duration::from_secs(30),
        || {
            http_from_pod(&kc, "member-2", "client", &host, node_port.trim())
                == "served-by-member-1"
        },
    );

    // Storage through the real CSI machinery: a claim binds when its pod is scheduled, the
    // playground CSI driver mounts it, a VolumeSnapshot and a VolumeGroupSnapshot are cut by
    // csi-snapshotter and become ready, and a claim restored from the snapshot holds what the pod
    // wrote.
    let manifests = scratch.path().join("storage.yaml");
    std::fs::write(
        &manifests,
        format!(
            r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, labels: {{app: db}}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: w
    image: {IMAGE}
    command: [sh, -c, "echo written-before-the-snapshot > /data/file && sync && sleep 3600"]
    volumeMounts: [{{name: d, mountPath: /data}}]
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: data}}}}]
"#
        ),
    )
    .unwrap();
    run_ok(
        kubectl(&kc, "member-1")
            .arg("apply")
            .arg("-f")
            .arg(&manifests),
    );
    run_ok(kubectl(&kc, "member-1").args([
        "wait",
        "--for=condition=Ready",
        "pod/writer",
        "--timeout=90s",
    ]));
    let snapshots = scratch.path().join("snapshots.yaml");
    std::fs::write(
        &snapshots,
        format!(
            r#"apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {{name: snap}}
spec: {{source: {{persistentVolumeClaimName: data}}}}
---
apiVersion: groupsnapshot.storage.k8s.io/v1beta2
kind: VolumeGroupSnapshot
metadata: {{name: group}}
spec: {{source: {{selector: {{matchLabels: {{app: db}}}}}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: restored}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
  dataSource: {{name: snap, kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io}}
---
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: r
    image: {IMAGE}
    command: [sh, -c, "cat /data/file; sleep 3600"]
    volumeMounts: [{{name: d, mountPath: /data}}]
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: restored}}}}]
"#
        ),
    )
    .unwrap();
    run_ok(
        kubectl(&kc, "member-1")
            .arg("apply")
            .arg("-f")
            .arg(&snapshots),
    );
    for (kind, name) in [("volumesnapshot", "snap"), ("volumegroupsnapshot", "group")] {
        run_ok(kubectl(&kc, "member-1").args([
            "wait",
            "--for=jsonpath={.status.readyToUse}=true",
            &format!("{kind}/{name}"),
            "--timeout=90s",
        ]));
    }
    run_ok(kubectl(&kc, "member-1").args([
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "--timeout=90s",
    ]));
    let restored = run_ok(kubectl(&kc, "member-1").args(["logs", "reader"]));
    assert_eq!(restored.trim(), "written-before-the-snapshot");

    // A namespace deletion finishes: the namespace controller and the kubelet remove its pods.
    run_ok(kubectl(&kc, "member-1").args(["create", "namespace", "doomed"]));
    run_ok(kubectl(&kc, "member-1").args([
        "-n",
        "doomed",
        "run",
        "sleeper",
        &format!("--image={IMAGE}"),
        "--overrides={\"spec\":{\"terminationGracePeriodSeconds\":1}}",
    ]));
    run_ok(kubectl(&kc, "member-1").args([
        "-n",
        "doomed",
        "wait",
        "--for=condition=Ready",
        "pod/sleeper",
        "--timeout=60s",
    ]));
    run_ok(kubectl(&kc, "member-1").args(["delete", "namespace", "doomed", "--timeout=90s"]));
    let gone = run(kubectl(&kc, "member-1").args(["get", "namespace", "doomed"]));
    assert!(!gone.status.success(), "the namespace is gone");

    // `local down` stops everything, with pods still running, and leaves the machine as it was:
    // the containers' processes too, which carry no marker of the playground (found here as the
    // children of its nodes' shims).
    let shims: Vec<u32> = nodes
        .iter()
        .flat_map(|n| kubectl_multicluster::local::node::shim_pids(&n.containerd_socket))
        .collect();
    let containers = kubectl_multicluster::local::node::container_pids(&shims);
    assert!(!containers.is_empty(), "pods are running");
    run_ok(
        Command::new(plugin_bin())
            .args(["local", "down", "--dir"])
            .arg(&dir),
    );
    let after = machine_state(&dir);
    let left: Vec<&String> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind by the playground: {left:#?}");
    let running: Vec<&u32> = containers.iter().filter(|pid| running(**pid)).collect();
    assert!(running.is_empty(), "containers left running: {running:?}");
    assert!(!dir.exists());
}
