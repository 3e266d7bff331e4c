//! Multi-cluster services whose backends are real pods, on a playground whose members run a real
//! node each (`local up --nodes 1 --simulated-nodes 4`): the exporters' EndpointSlices come from
//! their own endpointslice controllers, and a pod of one member connects to the pods of another.
//! Nothing is played.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams};
use kube::{Api, Client};
use multicluster_tests::mcs::{api, cluster_id, create_namespace, headless_app};
use multicluster_tests::{eventually, fresh_namespace, playground_with_nodes, run};
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
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let ns = fresh_namespace(&m1, "db").await.unwrap();
    create_namespace(&m2, &ns).await;
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
                let out = run(pg.kubectl().args([
                    "--context",
                    "member-2",
                    "exec",
                    "-n",
                    &ns,
                    "db-0",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ]));
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
