//! Multi-cluster services whose backends are real pods, on a playground whose members run a real
//! node each (`local up --nodes 1 --simulated-nodes 4`): the exporters' EndpointSlices come from
//! their own endpointslice controllers, and a pod of one member connects to the pods of another,
//! by pod address or through the clusterset IP, which member-2's real kube-proxy routes (to
//! member-1's node and node port, or to member-2's own pods). The simulated nodes carry
//! `multicluster.dev/no-node-ports` (no kube-proxy serves their node
//! ports), so they are no backends. Nothing is played.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};
use multicluster_tests::mcs::{api, cluster_id, headless_app, joined_with_namespace};
use multicluster_tests::{Playground, eventually, playground_with_nodes, run, run_ok, unique_name};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// The MCS EndpointSlices this project wrote in `ns` of `member` for `db`: source cluster →
/// (address, hostname) of each endpoint.
async fn mcs_slices(member: &Client, ns: &str) -> Vec<(String, Vec<(String, String)>)> {
    let slices = Api::<DynamicObject>::namespaced_with(
        member.clone(),
        ns,
        &kube::api::ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()),
    )
    .list(&ListParams::default().labels(
        "multicluster.kubernetes.io/service-name=db,endpointslice.kubernetes.io/managed-by=multicluster.dev",
    ))
    .await
    .unwrap();
    let mut out: Vec<(String, Vec<(String, String)>)> = slices
        .items
        .iter()
        .map(|s| {
            let source =
                s.metadata.labels.as_ref().unwrap()["multicluster.kubernetes.io/source-cluster"]
                    .clone();
            let endpoints = s.data["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["addresses"][0].as_str().unwrap_or_default().to_owned(),
                        e["hostname"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (source, endpoints)
        })
        .collect();
    out.sort();
    out
}

fn condition(export: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    export.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

#[tokio::test]
async fn a_headless_statefulset_exported_from_two_members_is_imported_headless_with_each_pod_and_its_hostname_and_reached_pod_to_pod()
 {
    let pg = playground_with_nodes();
    let (m1, m2, ns) = joined_with_namespace(pg, "db").await;
    for (context, member, replicas) in [("member-1", "member-1", 2), ("member-2", "member-2", 1)] {
        let out = pg.apply(context, &headless_app(&ns, member, replicas), &[]);
        assert!(out.status.success(), "{out:?}");
    }
    let (id1, id2) = (cluster_id(&m1).await, cluster_id(&m2).await);

    // Every member imports `db` as Headless (no clusterset IP) with one slice per exporter, each
    // listing that exporter's ready pods by their hostnames.
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let imports = api(member, &ns, "ServiceImport");
        let import: Value = eventually(
            &format!("{name} imports db as Headless"),
            WAIT,
            async || {
                let import = imports.get_opt("db").await.unwrap()?;
                (import.data["spec"]["type"] == "Headless").then_some(import.data)
            },
        )
        .await;
        assert!(import["spec"]["ips"].is_null(), "{import}");
        assert_eq!(import["spec"]["ports"][0]["port"], 8080, "{import}");
        eventually(
            &format!("{name} has each exporter's pods"),
            WAIT,
            async || {
                let slices = mcs_slices(member, &ns).await;
                let hosts: Vec<Vec<&str>> = slices
                    .iter()
                    .map(|(_, e)| e.iter().map(|(_, h)| h.as_str()).collect())
                    .collect();
                let sources: Vec<&str> = slices.iter().map(|(s, _)| s.as_str()).collect();
                let mut want_sources = vec![id1.as_str(), id2.as_str()];
                want_sources.sort();
                let by_source = |id: &str| {
                    slices
                        .iter()
                        .find(|(s, _)| s == id)
                        .map(|(_, e)| e.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>())
                };
                if sources == want_sources
                    && by_source(&id1) == Some(vec!["db-0".to_owned(), "db-1".to_owned()])
                    && by_source(&id2) == Some(vec!["db-0".to_owned()])
                {
                    Ok(())
                } else {
                    Err(format!("{hosts:?} from {sources:?}"))
                }
            },
        )
        .await;
    }

    // The hub lists it as a headless multi-cluster service exported by both, with no IPs.
    let out = multicluster_tests::run_ok(
        &mut pg.multicluster(&["services", "list", "-n", &ns, "-o", "json"]),
    );
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["type"], "Headless", "{out}");
    assert_eq!(rows[0]["ips"], serde_json::json!([]), "{out}");
    assert_eq!(rows[0]["exporters"].as_array().unwrap().len(), 2, "{out}");

    // A pod of member-2 connects to member-1's pods by the addresses member-2's slice lists.
    let on_m2 = mcs_slices(&m2, &ns).await;
    let member1_pods = &on_m2.iter().find(|(s, _)| *s == id1).unwrap().1;
    for (address, host) in member1_pods {
        let script = format!(
            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 8080 | tail -n 1"
        );
        let answer = eventually(
            &format!("member-2's db-0 reaches member-1's {host} at {address}"),
            WAIT,
            async || {
                let out = run(&mut pg.exec_in("member-2", &ns, "db-0", &["sh", "-c", &script]));
                let body = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if body == "member-1" {
                    Ok(body)
                } else {
                    Err(format!("{body:?} {}", String::from_utf8_lossy(&out.stderr)))
                }
            },
        )
        .await;
        assert_eq!(answer, "member-1");
    }

    // member-2 replaces its Service with one that is not headless: a TypeConflict, on both
    // exports; member-1's export is older, so the import stays Headless.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(m2.clone(), &ns);
    services
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let out = pg.apply(
        "member-2",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: {ns}}}\n\
             spec: {{type: NodePort, selector: {{app: db}}, ports: [{{name: http, port: 8080, protocol: TCP}}]}}\n"
        ),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let exports = api(member, &ns, "ServiceExport");
        let (_, _, message) = eventually(
            &format!("{name}'s export reports the TypeConflict"),
            WAIT,
            async || {
                let export = exports.get("db").await.unwrap();
                match condition(&export, "Conflict") {
                    Some((s, r, m)) if s == "True" && r == "TypeConflict" => Ok((s, r, m)),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert!(
            message.contains("member-2: type ClusterSetIP (the oldest export has Headless)"),
            "{message}"
        );
        let import = api(member, &ns, "ServiceImport").get("db").await.unwrap();
        assert_eq!(import.data["spec"]["type"], "Headless");
    }

    // Unexported on both: the imports and the slices go from both members.
    for member in [&m1, &m2] {
        api(member, &ns, "ServiceExport")
            .delete("db", &DeleteParams::default())
            .await
            .unwrap();
    }
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let imports = api(member, &ns, "ServiceImport");
        eventually(
            &format!("{name} loses the import and its slices"),
            WAIT,
            async || {
                let import = imports.get_opt("db").await.unwrap();
                let slices = mcs_slices(member, &ns).await;
                if import.is_none() && slices.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{:?} {slices:?}", import.map(|i| i.data)))
                }
            },
        )
        .await;
    }
}

/// A Deployment `name` of one pod whose httpd answers `body` on 8080, behind a Service `name` of
/// `type_` with `ports` (`name:port` pairs, all to 8080), and when `export` its ServiceExport
/// asking VipPool `pool` for the VIP.
fn web_app(
    ns: &str,
    name: &str,
    body: &str,
    type_: &str,
    ports: &[(&str, u16)],
    export: Option<&str>,
) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!("{{name: {n}, port: {p}, targetPort: 8080, protocol: TCP}}"))
        .collect();
    let mut out = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  type: {type_}
  selector: {{app: {name}}}
  ports: [{ports}]
"#,
        image = kubectl_multicluster::local::image::IMAGE,
        ports = ports.join(", ")
    );
    if let Some(pool) = export {
        out.push_str(&format!(
            "---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
             metadata: {{name: {name}, namespace: {ns}, labels: {{multicluster.dev/vip-pool: {pool}}}}}\n"
        ));
    }
    out
}

fn apply_ok(pg: &Playground, context: &str, manifest: &str) {
    let out = pg.apply(context, manifest, &[]);
    assert!(out.status.success(), "{out:?}");
}

/// A VipPool of its own for a test, in `range`.
fn pool(pg: &Playground, range: &str) -> String {
    let name = unique_name("conn");
    apply_ok(
        pg,
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {name}}}\n\
             spec: {{ranges: [\"{range}\"], domainSuffix: clusterset.example}}\n"
        ),
    );
    name
}

/// The bodies of `count` HTTP requests to `host:port` from pod `pod` of member-2, one per line
/// (an empty line for a request that got no answer within 3 s).
fn requests_from_member_2(
    pg: &Playground,
    ns: &str,
    pod: &str,
    host: &str,
    port: u16,
    count: u32,
) -> Vec<String> {
    let script = format!(
        "for i in $(seq {count}); do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | tail -n 1; echo; done"
    );
    let out = run(&mut pg.exec_in("member-2", ns, pod, &["sh", "-c", &script]));
    String::from_utf8_lossy(&out.stdout)
        .split('\n')
        .map(|l| l.trim().to_owned())
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| c[0].clone())
        .collect()
}

/// The name of the one pod of Deployment `app` in `ns` of member-2.
fn pod_of(pg: &Playground, ns: &str, app: &str) -> String {
    run_ok(pg.kubectl().args([
        "--context",
        "member-2",
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        &format!("app={app}"),
        "-o",
        // Every name (none yet is an empty answer, not an error): the Deployment has one pod.
        "jsonpath={.items[*].metadata.name}",
    ]))
    .split_whitespace()
    .next()
    .unwrap_or_default()
    .to_owned()
}

async fn wait_vip(member: &Client, ns: &str, name: &str) -> String {
    eventually(
        &format!("the member imports {name} with its clusterset IP"),
        WAIT,
        async || {
            let import = api(member, ns, "ServiceImport")
                .get_opt(name)
                .await
                .unwrap();
            import.and_then(|i| i.data["spec"]["ips"][0].as_str().map(str::to_owned))
        },
    )
    .await
}

#[tokio::test]
async fn the_clusterset_ip_reaches_only_the_exporters_pods_never_a_same_named_service_a_member_does_not_export()
 {
    let pg = playground_with_nodes();
    let (_, m2, ns) = joined_with_namespace(pg, "conn").await;
    let pool = pool(pg, "10.250.212.0/24");
    // member-1 exports `web`; member-2 has a Service `web` of its own and does not export it.
    apply_ok(
        pg,
        "member-1",
        &web_app(
            &ns,
            "web",
            "member-1",
            "NodePort",
            &[("http", 80)],
            Some(&pool),
        ),
    );
    apply_ok(
        pg,
        "member-2",
        &web_app(
            &ns,
            "web",
            "member-2-unexported",
            "ClusterIP",
            &[("http", 80)],
            None,
        ),
    );
    let vip = wait_vip(&m2, &ns, "web").await;
    let client = eventually("member-2's web pod runs", WAIT, async || {
        let pod = pod_of(pg, &ns, "web");
        (!pod.is_empty()).then_some(pod)
    })
    .await;

    // By address and by its clusterset name, every answer is member-1's.
    for host in [vip.clone(), format!("web.{ns}.svc.clusterset.local")] {
        let answers = eventually(
            &format!("{host}:80 answers from member-2"),
            WAIT,
            async || {
                let answers = requests_from_member_2(pg, &ns, &client, &host, 80, 20);
                if answers.len() == 20 && answers.iter().all(|a| !a.is_empty()) {
                    Ok(answers)
                } else {
                    Err(format!("{answers:?}"))
                }
            },
        )
        .await;
        assert!(
            answers.iter().all(|a| a == "member-1"),
            "{host}: {answers:?}"
        );
    }
    // The member's own `web` is still its own by its cluster name.
    let local = requests_from_member_2(pg, &ns, &client, "web", 80, 3);
    assert_eq!(local, vec!["member-2-unexported"; 3]);
}

#[tokio::test]
async fn each_port_of_a_multi_cluster_service_reaches_only_the_members_that_export_it_as_imported()
{
    let pg = playground_with_nodes();
    let (m1, m2, ns) = joined_with_namespace(pg, "ports").await;
    let pool = pool(pg, "10.250.213.0/24");
    // member-1 (the oldest export) serves `http` on 80 and `shared` on 9000; member-2 defines
    // `http` as 8080 (a PortConflict: the import keeps 80, member-1's) and `shared` the same.
    apply_ok(
        pg,
        "member-1",
        &web_app(
            &ns,
            "api",
            "member-1",
            "NodePort",
            &[("http", 80), ("shared", 9000)],
            Some(&pool),
        ),
    );
    let vip = wait_vip(&m1, &ns, "api").await;
    apply_ok(
        pg,
        "member-2",
        &web_app(
            &ns,
            "api",
            "member-2",
            "NodePort",
            &[("http", 8080), ("shared", 9000)],
            Some(&pool),
        ),
    );
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let exports = api(member, &ns, "ServiceExport");
        eventually(
            &format!("{name}'s export reports the PortConflict"),
            WAIT,
            async || {
                let export = exports.get("api").await.unwrap();
                match condition(&export, "Conflict") {
                    Some((s, r, _)) if s == "True" && r == "PortConflict" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    let client = eventually("member-2's api pod runs", WAIT, async || {
        let pod = pod_of(pg, &ns, "api");
        (!pod.is_empty()).then_some(pod)
    })
    .await;

    // `shared` is served by both: the answers come from both members (equal weights).
    let shared = eventually("port 9000 reaches both members", WAIT, async || {
        let answers = requests_from_member_2(pg, &ns, &client, &vip, 9000, 30);
        let mut seen: Vec<&str> = answers.iter().map(String::as_str).collect();
        seen.sort();
        seen.dedup();
        if seen == ["member-1", "member-2"] {
            Ok(answers)
        } else {
            Err(format!("{answers:?}"))
        }
    })
    .await;
    println!("port 9000: {shared:?}");
    // `http` as imported (80) is member-1's only: member-2 exports it as another number.
    let http = requests_from_member_2(pg, &ns, &client, &vip, 80, 20);
    assert_eq!(http, vec!["member-1"; 20], "port 80 reaches member-1 only");
    // member-2's number is not a port of the import: nothing answers there.
    let other = requests_from_member_2(pg, &ns, &client, &vip, 8080, 1);
    assert_eq!(other, vec![""], "port 8080 is not imported");
}
