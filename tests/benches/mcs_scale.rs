//! Multi-cluster services at scale: SERVICES (default 300) services exported by both members of a
//! playground whose members run a real node each (`local up --members 2 --nodes 1`), half of them
//! ClusterSetIP (NodePort; the backends are the members' nodes), half headless. Two figures, each
//! side by side with the bare API writes the hub server's loop performs for it:
//!
//! 1. **Export → imported everywhere**: from the moment both members have exported a service,
//!    until both members hold its ServiceImport (with its clusterset IP when it has one) and both
//!    exporters' EndpointSlices, and member-2's clusterset DNS server answers its name; p50/p99
//!    over every service, and the makespan (first export → last service imported) against the
//!    same ServiceImports, Services and EndpointSlices applied directly, 64 in flight as the hub
//!    server writes.
//! 2. **Endpoint change → slices and DNS**: a headless service's endpoint on member-1 changes
//!    address; until member-2's EndpointSlice for member-1 lists the new address, and until
//!    member-2's DNS server answers it; p50/p99 over ROUNDS changes, against the two slice writes
//!    made directly.
//!
//! Played here: the headless services' endpoints, as EndpointSlices the benchmark writes with the
//! endpointslice controller's label (selector-less Services: no pods run, so 300 services need no
//! 300 pods; the hub server reads them as it reads the controller's). The DNS questions go from
//! this process straight to member-2's clusterset DNS pod (its pod address, port 5353): the real
//! server, without CoreDNS in front.
//!
//! Rerun: tests/bench/mcs-scale.sh [ROUNDS] [SERVICES]

// A benchmark: a failed unwrap is a failed run, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use multicluster_tests::mcs::{api, cluster_id, resource};
use multicluster_tests::{Playground, run_ok, start_playground};
use serde_json::json;

const NS: &str = "bench";
const RAW_NS: &str = "bench-raw";
const IN_FLIGHT: usize = 64;

fn headless(i: usize) -> bool {
    i % 2 == 1
}

/// The played endpoint of headless service `i` on member `m` in round `round`.
fn endpoint(m: usize, i: usize, round: usize) -> String {
    format!("10.{}.{}.{}", 240 + m, round % 250, i % 250 + 1)
}

fn played_slice(i: usize, address: &str) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-played"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "hostname": "pod-0", "conditions": {"ready": true}}]
    })
}

async fn apply<K>(api: &Api<K>, name: &str, object: &serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for attempt in 1.. {
        match api
            .patch(
                name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(object),
            )
            .await
        {
            Ok(_) => return,
            // Retried like the hub server's writes are: a timeout under load is not the measurement.
            Err(e) if attempt < 5 => eprintln!("writing {name}: {e}; retrying"),
            Err(e) => panic!("writing {name}: {e}"),
        }
    }
}

/// Service `i` (and for a headless one its played endpoints) on member `m`, not exported yet.
async fn create_service(member: &Client, m: usize, i: usize) {
    let name = format!("svc-{i}");
    let spec = if headless(i) {
        json!({"clusterIP": "None", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    } else {
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    };
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    Api::<Service>::namespaced(member.clone(), NS)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    if headless(i) {
        let slices: Api<EndpointSlice> = Api::namespaced(member.clone(), NS);
        apply(
            &slices,
            &format!("svc-{i}-played"),
            &played_slice(i, &endpoint(m, i, 0)),
        )
        .await;
    }
}

async fn export(member: &Client, i: usize) {
    let export: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": format!("svc-{i}"), "namespace": NS,
                     "labels": {"multicluster.dev/vip-pool": "bench"}}
    }))
    .unwrap();
    api(member, NS, "ServiceExport")
        .create(&PostParams::default(), &export)
        .await
        .unwrap();
}

/// One DNS question to `server`; the addresses answered (empty on NXDOMAIN or no answer).
async fn resolve(server: SocketAddr, name: &str) -> Vec<String> {
    let mut query = Message::query();
    query.metadata.id = rand_id(name);
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => {
            let answer = Message::from_vec(&buf[..n]).unwrap();
            let mut out: Vec<String> = answer
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect();
            out.sort();
            out
        }
        _ => Vec::new(),
    }
}

fn rand_id(name: &str) -> u16 {
    name.bytes()
        .fold(7u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)))
}

/// What one member holds for the benchmark's services: imports (name → clusterset IP, empty for
/// headless) and our EndpointSlices (name → source cluster → addresses).
struct Held {
    imports: BTreeMap<String, String>,
    slices: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

async fn held(member: &Client) -> Held {
    let imports = api(member, NS, "ServiceImport")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|i| {
            let ip = i.data["spec"]["ips"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((i.metadata.name?, ip))
        })
        .collect();
    let mut slices: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let lp =
        ListParams::default().labels("endpointslice.kubernetes.io/managed-by=multicluster.dev");
    for s in Api::<EndpointSlice>::namespaced(member.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
        .items
    {
        let labels = s.metadata.labels.clone().unwrap_or_default();
        let (Some(service), Some(source)) = (
            labels.get("multicluster.kubernetes.io/service-name"),
            labels.get("multicluster.kubernetes.io/source-cluster"),
        ) else {
            continue;
        };
        let mut addresses: Vec<String> = s
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.clone())
            .collect();
        addresses.sort();
        slices
            .entry(service.clone())
            .or_default()
            .insert(source.clone(), addresses);
    }
    Held { imports, slices }
}

/// Service `i` is imported on `h`: its import (with a clusterset IP unless headless) and a slice
/// from each exporter, with the played endpoints for a headless one (a ClusterSetIP service's
/// slice for the member itself lists its own pods, and these services have none).
fn imported(h: &Held, i: usize, ids: &[String; 2]) -> bool {
    let name = format!("svc-{i}");
    let import_ok = h
        .imports
        .get(&name)
        .is_some_and(|ip| headless(i) || !ip.is_empty());
    let slices_ok = h.slices.get(&name).is_some_and(|by_source| {
        ids.iter().all(|id| {
            by_source
                .get(id)
                .is_some_and(|a| !headless(i) || !a.is_empty())
        })
    });
    import_ok && slices_ok
}

/// The ServiceImports, Services and EndpointSlices the hub server writes for `services`, applied
/// directly into RAW_NS (hub: the import and its status; each member: the import and its status,
/// the VIP Service for a ClusterSetIP one, one slice per exporter), IN_FLIGHT at once. Returns the
/// time it took and the number of writes.
async fn raw_import_writes(
    hub: &Client,
    members: &[Client; 2],
    services: usize,
) -> (Duration, usize) {
    let import = |i: usize| {
        json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
               "metadata": {"name": format!("svc-{i}"), "namespace": RAW_NS},
               "spec": {"type": if headless(i) { "Headless" } else { "ClusterSetIP" },
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    };
    let mut writes: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    for i in 0..services {
        for client in std::iter::once(hub).chain(members.iter()) {
            let imports = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                RAW_NS,
                &resource("ServiceImport"),
            );
            let import = import(i);
            let status = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
                                "status": {"clusters": [{"cluster": "member-1"}, {"cluster": "member-2"}]}});
            // Two writes, in order (the status needs the object), as the hub server makes them.
            writes.push(Box::pin(async move {
                let name = format!("svc-{i}");
                apply(&imports, &name, &import).await;
                imports
                    .patch_status(
                        &name,
                        &PatchParams::apply("bench").force(),
                        &Patch::Apply(&status),
                    )
                    .await
                    .unwrap();
            }));
        }
        for (m, member) in members.iter().enumerate() {
            if !headless(i) {
                let services: Api<Service> = Api::namespaced(member.clone(), RAW_NS);
                let svc = json!({"apiVersion": "v1", "kind": "Service",
                                 "metadata": {"name": format!("svc-{i}-multicluster"), "namespace": RAW_NS},
                                 "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}});
                writes.push(Box::pin(async move {
                    apply(&services, &format!("svc-{i}-multicluster"), &svc).await
                }));
            }
            for source in 0..2 {
                let slices: Api<EndpointSlice> = Api::namespaced(member.clone(), RAW_NS);
                let name = format!("svc-{i}-multicluster-member-{}", source + 1);
                let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                   "metadata": {"name": name, "namespace": RAW_NS},
                                   "addressType": "IPv4",
                                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                                   "endpoints": [{"addresses": [endpoint(m, i, 0)], "conditions": {"ready": true}}]});
                writes.push(Box::pin(async move { apply(&slices, &name, &slice).await }));
            }
        }
    }
    // The import and its status count as two.
    let count = writes.len() + 3 * services;
    let started = Instant::now();
    futures::stream::iter(writes)
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    (started.elapsed(), count)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "p50 {:.3}s  p99 {:.3}s  (n={})",
        percentile(values, 0.5),
        percentile(values, 0.99),
        values.len()
    )
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// member-2's clusterset DNS server: its pod's address, port 5353, once Ready.
async fn dns_server(member: &Client) -> SocketAddr {
    let pods: Api<Pod> = Api::namespaced(member.clone(), "multicluster-system");
    let started = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=clusterset-dns"))
            .await
            .unwrap();
        let ready = list.items.iter().find_map(|p| {
            let status = p.status.as_ref()?;
            let ok = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ok.then(|| status.pod_ip.clone()).flatten()
        });
        if let Some(ip) = ready {
            return format!("{ip}:5353").parse().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the clusterset DNS pod never got Ready"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rounds = env("ROUNDS", 20);
    let services = env("SERVICES", 300);
    let dir = std::env::temp_dir().join(format!("multicluster-bench-mcs-{}", std::process::id()));
    eprintln!(
        "starting a hub and 2 members with a node each in {}",
        dir.display()
    );
    let pg = Playground {
        state: start_playground(&dir, 2, &["--nodes", "1"]),
    };
    let hub = pg.client("hub").await.unwrap();
    let members = [
        pg.client("member-1").await.unwrap(),
        pg.client("member-2").await.unwrap(),
    ];
    for name in ["member-1", "member-2"] {
        run_ok(&mut pg.multicluster(&["join", name, "--member-context", name]));
    }
    let ids = [cluster_id(&members[0]).await, cluster_id(&members[1]).await];
    pg.apply(
        "hub",
        "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {name: bench}\n\
         spec: {ranges: [\"10.252.0.0/22\"], domainSuffix: clusterset.example}\n",
        &[],
    );
    for client in std::iter::once(&hub).chain(members.iter()) {
        create_namespace(client, NS).await;
        create_namespace(client, RAW_NS).await;
    }
    let dns = dns_server(&members[1]).await;
    eprintln!("member-2's clusterset DNS server answers at {dns}");

    // Phase 1: every service created on both members, then exported by both.
    for (m, member) in members.iter().enumerate() {
        futures::stream::iter(0..services)
            .for_each_concurrent(16, |i| create_service(member, m, i))
            .await;
    }
    eprintln!(
        "{services} services on each member ({} headless); exporting them",
        services / 2
    );
    let first_export = Instant::now();
    let exported_at: BTreeMap<usize, Instant> = futures::stream::iter(0..services)
        .map(|i| {
            let members = &members;
            async move {
                export(&members[0], i).await;
                export(&members[1], i).await;
                (i, Instant::now())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut present: BTreeMap<usize, Instant> = BTreeMap::new();
    while present.len() < services {
        let (h1, h2) = tokio::join!(held(&members[0]), held(&members[1]));
        let now = Instant::now();
        for i in 0..services {
            if present.contains_key(&i) || !imported(&h1, i, &ids) || !imported(&h2, i, &ids) {
                continue;
            }
            let answers = resolve(dns, &format!("svc-{i}.{NS}.svc.clusterset.local.")).await;
            let want = if headless(i) { 2 } else { 1 };
            if answers.len() == want {
                present.insert(i, now);
            }
        }
        assert!(
            first_export.elapsed() < Duration::from_secs(900),
            "only {} of {services} services imported after 15 min",
            present.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let makespan = present.values().max().unwrap().duration_since(first_export);
    let mut import_latency: Vec<f64> = present
        .iter()
        .map(|(i, at)| at.saturating_duration_since(exported_at[i]).as_secs_f64())
        .collect();
    let (raw, writes) = raw_import_writes(&hub, &members, services).await;

    // Phase 2: a headless service's endpoint on member-1 changes address.
    let mut slice_latency = Vec::new();
    let mut dns_latency = Vec::new();
    let mut raw_change = Vec::new();
    let member1_slices: Api<EndpointSlice> = Api::namespaced(members[0].clone(), NS);
    for round in 1..=rounds {
        let i = (round * 37 % services) | 1;
        let i = if i >= services { 1 } else { i };
        let address = endpoint(0, i, round);
        let name = format!("svc-{i}.{NS}.svc.clusterset.local.");
        let changed = Instant::now();
        apply(
            &member1_slices,
            &format!("svc-{i}-played"),
            &played_slice(i, &address),
        )
        .await;
        let (mut slice_at, mut dns_at) = (None, None);
        while slice_at.is_none() || dns_at.is_none() {
            if dns_at.is_none() && resolve(dns, &name).await.contains(&address) {
                dns_at = Some(changed.elapsed().as_secs_f64());
            }
            if slice_at.is_none() {
                let h = held(&members[1]).await;
                let listed = h
                    .slices
                    .get(&format!("svc-{i}"))
                    .and_then(|s| s.get(&ids[0]))
                    .is_some_and(|a| a.contains(&address));
                if listed {
                    slice_at = Some(changed.elapsed().as_secs_f64());
                }
            }
            assert!(
                changed.elapsed() < Duration::from_secs(60),
                "round {round}: the change never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (slice_at, dns_at) = (slice_at.unwrap_or_default(), dns_at.unwrap_or_default());
        eprintln!(
            "round {round}: svc-{i}'s endpoint moved: member-2's slice {slice_at:.3}s, its DNS answer {dns_at:.3}s"
        );
        slice_latency.push(slice_at);
        dns_latency.push(dns_at);
        // The writes the loop makes for it: member-1's slice on each member.
        let started = Instant::now();
        let raw_slice = |m: &Client| {
            let api: Api<EndpointSlice> = Api::namespaced(m.clone(), RAW_NS);
            let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                               "metadata": {"name": format!("svc-{i}-multicluster-member-1"), "namespace": RAW_NS},
                               "addressType": "IPv4",
                               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                               "endpoints": [{"addresses": [address.clone()], "conditions": {"ready": true}}]});
            async move { apply(&api, &format!("svc-{i}-multicluster-member-1"), &slice).await }
        };
        tokio::join!(raw_slice(&members[0]), raw_slice(&members[1]));
        raw_change.push(started.elapsed().as_secs_f64());
    }

    println!(
        "{services} services exported by 2 members ({} ClusterSetIP, {} headless):",
        services - services / 2,
        services / 2
    );
    println!(
        "  export → import, slices on both members and DNS answer: {}",
        summary(&mut import_latency)
    );
    println!(
        "  all imported {:.1}s after the first export; the same {writes} writes applied directly ({IN_FLIGHT} in flight): {:.1}s, ratio {:.1}×",
        makespan.as_secs_f64(),
        raw.as_secs_f64(),
        makespan.as_secs_f64() / raw.as_secs_f64()
    );
    let raw_p50 = {
        let mut r = raw_change.clone();
        r.sort_by(f64::total_cmp);
        percentile(&r, 0.5)
    };
    let dns_p50 = {
        let mut d = dns_latency.clone();
        d.sort_by(f64::total_cmp);
        percentile(&d, 0.5)
    };
    println!("an endpoint change of a headless service ({rounds} rounds):");
    println!(
        "  → member-2's EndpointSlice: {}",
        summary(&mut slice_latency)
    );
    println!(
        "  → member-2's DNS answer:    {}",
        summary(&mut dns_latency)
    );
    println!(
        "  the 2 slice writes made directly: {}; DNS p50 is {:.1}× that",
        summary(&mut raw_change),
        dns_p50 / raw_p50
    );
}
