//! `clusterset.local` DNS on a playground whose members run a real node each
//! (`local up --nodes 1 --simulated-nodes 4`): the questions are asked by a real pod of member-2,
//! with busybox's `nslookup`, of the member's real CoreDNS, which forwards the zone to the
//! clusterset DNS server running in a pod of that member (the hub server's binary,
//! `multicluster-webhook clusterset-dns`). The answers come from the ServiceImports and MCS
//! EndpointSlices the hub server wrote on member-2. Nothing is played.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use multicluster_tests::mcs::{
    api, cluster_id, export_service, headless_app, joined_with_namespace,
};
use multicluster_tests::{Playground, eventually, playground_with_nodes, run, unique_name};

const WAIT: Duration = Duration::from_secs(90);

/// Seconds since boot: the clock the test and the pod share (same kernel; busybox's `date` has
/// no sub-second format).
fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// What `nslookup ARGS` prints in `pod` of member-2, and whether it succeeded.
fn nslookup(pg: &Playground, ns: &str, pod: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = pg.exec_in("member-2", ns, pod, &["nslookup"]);
    let out = run(cmd.args(args));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The addresses an `nslookup` answer lists for `name` (not the server's own address line).
fn addresses(output: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_answer = false;
    for line in output.lines() {
        if let Some(n) = line.strip_prefix("Name:") {
            in_answer = n.trim() == name;
        } else if let Some(a) = line.strip_prefix("Address:")
            && in_answer
        {
            out.push(a.trim().to_owned());
        }
    }
    out.sort();
    out
}

/// The SRV answers (`priority weight port target`) an `nslookup -type=srv` lists.
fn services(output: &str) -> Vec<String> {
    let mut out: Vec<String> = output
        .lines()
        .filter_map(|l| l.split_once("service = ").map(|(_, v)| v.trim().to_owned()))
        .collect();
    out.sort();
    out
}

/// The pod IP of each ready pod of StatefulSet `db` in `ns`, by pod name.
async fn db_pods(member: &Client, ns: &str) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(member.clone(), ns);
    let mut out: Vec<(String, String)> = pods
        .list(&kube::api::ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| {
            let status = p.status?;
            let ready = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some((p.metadata.name?, status.pod_ip?))
        })
        .collect();
    out.sort();
    out
}

async fn wait_ready_pods(
    member: &Client,
    ns: &str,
    count: usize,
    what: &str,
) -> Vec<(String, String)> {
    eventually(what, WAIT, async || {
        let pods = db_pods(member, ns).await;
        if pods.len() == count {
            Ok(pods)
        } else {
            Err(format!("{pods:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn a_pod_resolves_clusterset_names_a_srv_and_per_pod_for_headless_services_of_both_members_and_cluster_local_stays_local()
 {
    let pg = playground_with_nodes();
    let (m1, m2, ns) = joined_with_namespace(pg, "dns").await;
    let (id1, id2) = (cluster_id(&m1).await, cluster_id(&m2).await);

    // A headless StatefulSet exported from both members (two pods on member-1, one on member-2),
    // and a ClusterSetIP Service `web` exported from member-1 only.
    for (context, replicas) in [("member-1", 2), ("member-2", 1)] {
        let out = pg.apply(context, &headless_app(&ns, context, replicas), &[]);
        assert!(out.status.success(), "{out:?}");
    }
    let pool = unique_name("dns");
    let out = pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.250.211.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    export_service(&m1, &ns, "web", 80, None, &pool).await;
    let pods1 = wait_ready_pods(&m1, &ns, 2, "member-1's db pods are ready").await;
    let pods2 = wait_ready_pods(&m2, &ns, 1, "member-2's db pod is ready").await;
    let vip = eventually(
        "member-2 imports web with its clusterset IP",
        WAIT,
        async || {
            let import = api(&m2, &ns, "ServiceImport").get_opt("web").await.unwrap();
            import.and_then(|i| i.data["spec"]["ips"][0].as_str().map(str::to_owned))
        },
    )
    .await;

    let zone = format!("{ns}.svc.clusterset.local");
    let web = format!("web.{zone}");
    // A: the ClusterSetIP, answered once the import reached member-2's DNS server.
    let (_, out) = eventually(&format!("{web} resolves to {vip}"), WAIT, async || {
        let (ok, out) = nslookup(pg, &ns, "db-0", &[&web]);
        if ok && addresses(&out, &web) == vec![vip.clone()] {
            Ok((ok, out))
        } else {
            Err(out)
        }
    })
    .await;
    println!("{out}");
    // AAAA: the name exists, with no IPv6 address (the pool hands out IPv4 only): no NXDOMAIN.
    let (ok, out) = nslookup(pg, &ns, "db-0", &["-type=aaaa", &web]);
    assert!(
        ok && !out.contains("NXDOMAIN") && addresses(&out, &web).is_empty(),
        "{out}"
    );
    // SRV for the named port, to the service's name.
    let (ok, out) = nslookup(
        pg,
        &ns,
        "db-0",
        &["-type=srv", &format!("_http._tcp.{web}")],
    );
    assert!(ok, "{out}");
    assert_eq!(services(&out), vec![format!("0 100 80 {web}")], "{out}");
    // The schema version.
    let (ok, out) = nslookup(
        pg,
        &ns,
        "db-0",
        &["-type=txt", "dns-version.clusterset.local"],
    );
    assert!(ok && out.contains("\"1.0.0\""), "{out}");

    // Headless: every ready pod of both exporters, each also by `<hostname>.<cluster ID>`.
    let db = format!("db.{zone}");
    let mut all: Vec<String> = pods1
        .iter()
        .chain(&pods2)
        .map(|(_, ip)| ip.clone())
        .collect();
    all.sort();
    eventually(
        &format!("{db} resolves to the pods of both members"),
        WAIT,
        async || {
            let (_, out) = nslookup(pg, &ns, "db-0", &[&db]);
            if addresses(&out, &db) == all {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    for (id, pods) in [(&id1, &pods1), (&id2, &pods2)] {
        for (pod, ip) in pods {
            let name = format!("{pod}.{id}.{db}");
            let (ok, out) = nslookup(pg, &ns, "db-0", &[&name]);
            assert!(ok, "{out}");
            assert_eq!(addresses(&out, &name), vec![ip.clone()], "{out}");
        }
    }
    let (ok, out) = nslookup(pg, &ns, "db-0", &["-type=srv", &format!("_http._tcp.{db}")]);
    assert!(ok, "{out}");
    let db_ref = &db;
    let mut want: Vec<String> = [(&id1, &pods1), (&id2, &pods2)]
        .iter()
        .flat_map(|(id, pods)| {
            pods.iter()
                .map(move |(pod, _)| format!("0 100 8080 {pod}.{id}.{db_ref}"))
        })
        .collect();
    want.sort();
    assert_eq!(services(&out), want, "{out}");

    // cluster.local answers only member-2 itself: `web` is not a Service there, `db` is its own
    // pod only. A name nobody exports does not exist in the clusterset either.
    let (ok, out) = nslookup(pg, &ns, "db-0", &[&format!("web.{ns}.svc.cluster.local")]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    let local_db = format!("db.{ns}.svc.cluster.local");
    let (_, out) = nslookup(pg, &ns, "db-0", &[&local_db]);
    assert_eq!(
        addresses(&out, &local_db),
        vec![pods2[0].1.clone()],
        "{out}"
    );
    let (ok, out) = nslookup(pg, &ns, "db-0", &[&format!("nope.{zone}")]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    // No per-cluster name for a ClusterSetIP service (the specification forbids it).
    let (ok, out) = nslookup(pg, &ns, "db-0", &[&format!("{id1}.{web}")]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");

    // A change: member-2's StatefulSet grows a pod. The pod in member-2 asks for its name every
    // 50 ms from before the scale-up; the test notes when member-2's MCS slice first lists it.
    let new_pod = format!("db-1.{id2}.{db}");
    let mut watcher = pg.exec_in(
        "member-2",
        &ns,
        "db-0",
        &["sh", "-c", &format!("until nslookup {new_pod} >/dev/null 2>&1; do sleep 0.05; done; cut -d' ' -f1 /proc/uptime")],
    );
    watcher.stdout(std::process::Stdio::piped());
    let watcher = watcher.spawn().unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(m2.clone(), &ns);
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(m2.clone(), &ns);
    let listed_at = eventually("member-2's MCS slice lists its db-1", WAIT, async || {
        let list = slices
            .list(&kube::api::ListParams::default().labels(&format!(
                "multicluster.kubernetes.io/service-name=db,multicluster.kubernetes.io/source-cluster={id2}"
            )))
            .await
            .unwrap();
        let listed = list.items.iter().flat_map(|s| s.endpoints.iter().flatten()).any(|e| e.hostname.as_deref() == Some("db-1"));
        if listed {
            Ok(uptime())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    let started = Instant::now();
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let resolved_at: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    println!(
        "db-1 of member-2 resolved {:.3} s after member-2's slice was seen listing it (the test polls \
         the slice every 100 ms, the pod asks every 50 ms, so a negative figure means the answer came before the test's next \
         look at the slice; {:?} waited for the pod's answer after that)",
        resolved_at - listed_at,
        started.elapsed()
    );
}
