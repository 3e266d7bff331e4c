//! Multi-cluster services end to end, on the playground's real API servers with the real hub
//! server: `ServiceExport`s on two members become one multi-cluster service whose VIP (handed out
//! by the hub's mutating webhook) is fed back to every member, with the data-plane objects that
//! kube-proxy reads; conflicting exports are named; unexported services are cleaned up.
//!
//! Played here: the members' nodes (Node objects with an InternalIP and a Ready condition the test
//! sets; no kubelets run). No data plane runs in this test (`data_plane.rs` runs kube-proxy).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::ApiResource;
use kube::{Api, Client, ResourceExt};
use multicluster_tests::mcs::{create_namespace, export_service, play_node, resource as mcs};
use multicluster_tests::{eventually, fresh_namespace, playground, run_ok, unique_name};
use serde_json::{Value, json};

/// How long the hub server may take to carry an export's change to the hub and the members.
const WAIT: Duration = Duration::from_secs(40);

fn condition(export: &DynamicObject, type_: &str) -> Option<(String, String)> {
    export.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The value of `member`'s About API `ClusterProperty` `name`.
async fn cluster_property(member: &Client, name: &str) -> Option<String> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("about.k8s.io", "v1alpha1", "ClusterProperty"),
        "clusterproperties",
    );
    Api::<DynamicObject>::all_with(member.clone(), &resource)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|p| p.data["spec"]["value"].as_str().map(str::to_owned))
}

/// The addresses and port of member `source`'s EndpointSlice for `web` on `member`.
async fn slice_of(member: &Client, ns: &str, source: &str) -> Option<(Vec<String>, i32, Value)> {
    let slice = Api::<EndpointSlice>::namespaced(member.clone(), ns)
        .get_opt(&format!("web-multicluster-{source}"))
        .await
        .unwrap()?;
    let addresses = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect();
    let port = slice.ports.as_ref()?.first()?.port?;
    Some((
        addresses,
        port,
        serde_json::to_value(&slice.metadata.labels).unwrap(),
    ))
}

#[tokio::test]
async fn exports_on_two_members_with_played_nodes_become_one_service_with_its_vip_fed_back_and_conflicts_named()
 {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    play_node(&m1, "m1-a", "10.251.1.2", true).await;
    play_node(&m1, "m1-b", "10.251.1.3", true).await;
    play_node(&m2, "m2-a", "10.251.2.2", true).await;

    let pool = unique_name("mcs");
    pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.251.200.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
        &[],
    );
    let ns = fresh_namespace(&m1, "shop").await.unwrap();
    create_namespace(&m2, &ns).await;
    export_service(&m1, &ns, "web", 80, None, &pool).await;
    export_service(&m2, &ns, "web", 80, None, &pool).await;

    // The hub keeps one ServiceImport with a VIP from the pool.
    let hub_imports =
        Api::<DynamicObject>::namespaced_with(hub.clone(), &ns, &mcs("ServiceImport"));
    let vip = eventually("the hub's ServiceImport gets a VIP", WAIT, async || {
        let import = hub_imports
            .get_opt("web")
            .await
            .unwrap()
            .ok_or("no ServiceImport on the hub")?;
        let vip = import.data["spec"]["ips"][0]
            .as_str()
            .ok_or(format!("{:?}", import.data))?;
        Ok::<_, String>(vip.to_owned())
    })
    .await;
    assert!(vip.starts_with("10.251.200."), "{vip}");
    let hostname = format!("web.{ns}.clusterset.example");

    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        // Fed back: the member's ServiceImport carries the VIP, its export the VIP, hostname and
        // a Ready condition.
        let imports =
            Api::<DynamicObject>::namespaced_with(member.clone(), &ns, &mcs("ServiceImport"));
        let exports =
            Api::<DynamicObject>::namespaced_with(member.clone(), &ns, &mcs("ServiceExport"));
        eventually(
            &format!("{name} imports the VIP and its export says so"),
            WAIT,
            async || {
                let import = imports
                    .get_opt("web")
                    .await
                    .unwrap()
                    .ok_or("no ServiceImport")?;
                if import.data["spec"]["ips"] != json!([vip]) {
                    return Err(format!("ServiceImport spec {}", import.data["spec"]));
                }
                let export = exports.get("web").await.unwrap();
                let a = &export.metadata.annotations.clone().unwrap_or_default();
                if a.get("multicluster.dev/vip") != Some(&vip)
                    || a.get("multicluster.dev/hostname") != Some(&hostname)
                {
                    return Err(format!("export annotations {a:?}"));
                }
                match condition(&export, "Ready") {
                    Some((s, _)) if s == "True" => Ok(()),
                    other => Err(format!("export Ready {other:?}")),
                }
            },
        )
        .await;
        // The data plane's objects: a selector-less Service routable at the VIP ...
        let service = Api::<Service>::namespaced(member.clone(), &ns)
            .get("web-multicluster")
            .await
            .unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.external_ips, Some(vec![vip.clone()]), "{name}");
        assert_eq!(
            spec.selector, None,
            "{name}: the Service must be selector-less"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 80);
    }

    // ... and one EndpointSlice per exporting member, with that member's node port. Equal member
    // weights (no TrafficPolicy) mean equal shares on kube-proxy, which spreads evenly over
    // addresses: member-1 lists 1 of its 2 node addresses, member-2 its one (each on the other
    // member; on itself, an exporter lists its ready pods).
    let node_port = async |member: &Client| {
        let service = Api::<Service>::namespaced(member.clone(), &ns)
            .get("web")
            .await
            .unwrap();
        service.spec.unwrap().ports.unwrap()[0].node_port.unwrap()
    };
    let (m1_port, m2_port) = (node_port(&m1).await, node_port(&m2).await);
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let (addresses, port, labels) =
            eventually("member-1's backends listed", WAIT, async || {
                slice_of(member, &ns, "member-1")
                    .await
                    .ok_or("no slice".to_owned())
            })
            .await;
        if name == "member-1" {
            // An exporter reaches its own backends by its ready pods, and this API-only cluster
            // runs none (services_on_nodes.rs and data_plane.rs check the pods).
            assert_eq!(addresses, Vec::<String>::new(), "{name}");
        } else {
            assert_eq!(addresses.len(), 1, "{addresses:?}");
            assert!(addresses[0] == "10.251.1.2" || addresses[0] == "10.251.1.3");
            assert_eq!(port, m1_port);
        }
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "multicluster.dev"
        );
        assert_eq!(labels["kubernetes.io/service-name"], "web-multicluster");
        // The MCS API's labels: the service, and the source cluster by its About API cluster ID.
        assert_eq!(labels["multicluster.kubernetes.io/service-name"], "web");
        assert_eq!(
            labels["multicluster.kubernetes.io/source-cluster"],
            cluster_property(&m1, "id.k8s.io").await.unwrap()
        );
        let (addresses, port, _) = eventually("member-2's backends listed", WAIT, async || {
            slice_of(member, &ns, "member-2")
                .await
                .ok_or("no slice".to_owned())
        })
        .await;
        if name == "member-2" {
            assert_eq!(addresses, Vec::<String>::new(), "{name}");
        } else {
            assert_eq!((addresses, port), (vec!["10.251.2.2".to_owned()], m2_port));
        }
    }

    // `vip list` names the multi-cluster service and who serves it.
    let rows: Value = serde_json::from_str(&run_ok(
        &mut pg.multicluster(&["vip", "list", "-o", "json"]),
    ))
    .unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == vip.as_str())
        .unwrap_or_else(|| panic!("{vip} not in {rows:#}"))
        .clone();
    assert_eq!(row["service"], format!("{ns}/web"));
    assert_eq!(row["kind"], "ServiceImport");
    assert_eq!(row["hostname"], hostname);
    assert_eq!(row["members"], "member-1=1/2,member-2=1/1", "{row:#}");

    // Someone deletes a slice on member-1 by hand: the hub server writes it again.
    Api::<EndpointSlice>::namespaced(m1.clone(), &ns)
        .delete("web-multicluster-member-2", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted slice is written again", WAIT, async || {
        slice_of(&m1, &ns, "member-2")
            .await
            .ok_or("not yet".to_owned())
    })
    .await;

    // A TrafficPolicy naming a Gateway: member-1 serves the Gateway API (its HTTPRoute CRD is
    // installed here, as a Gateway implementation would), so it gets an HTTPRoute with the exact
    // active weights over one Service per member; member-2 does not serve the Gateway API and gets
    // none. kube-proxy's slices carry 300:100 as 2 addresses to 1.
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/gateway-api/gateway.networking.k8s.io_httproutes.yaml"
    );
    run_ok(
        pg.kubectl()
            .args(["--context", "member-1", "apply", "--server-side", "-f", crd]),
    );
    run_ok(pg.kubectl().args([
        "--context",
        "member-1",
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/httproutes.gateway.networking.k8s.io",
    ]));
    let policy = unique_name("web");
    run_ok(&mut pg.multicluster(&[
        "traffic",
        "create",
        &policy,
        "-n",
        &ns,
        "--member",
        "member-1=300",
        "--member",
        "member-2=100",
        "--service",
        "web",
        "--gateway",
        "infra/edge",
    ]));
    let routes = Api::<DynamicObject>::namespaced_with(
        m1.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        )),
    );
    let route = eventually(
        "member-1 gets an HTTPRoute with the active weights", WAIT,
        async || {
            let route = routes
                .get_opt("web-multicluster")
                .await
                .unwrap()
                .ok_or("no HTTPRoute")?;
            let refs = route.data["spec"]["rules"][0]["backendRefs"].clone();
            // (The API server fills in the defaults: group "" and kind Service.)
            if refs
                == json!([{"group": "", "kind": "Service", "name": "web-multicluster-member-1", "port": 80, "weight": 300},
                          {"group": "", "kind": "Service", "name": "web-multicluster-member-2", "port": 80, "weight": 100}])
            {
                Ok(route)
            } else {
                Err(format!("backendRefs {refs}"))
            }
        },
    )
    .await;
    let parent = &route.data["spec"]["parentRefs"][0];
    assert_eq!(
        (&parent["name"], &parent["namespace"]),
        (&json!("edge"), &json!("infra"))
    );
    assert_eq!(route.data["spec"]["hostnames"], json!([hostname]));
    // The Gateway's per-member backends: all of each member's addresses.
    let (addresses, port, _) = eventually(
        "the Gateway's member-1 Service has its backends",
        WAIT,
        async || {
            let slice = Api::<EndpointSlice>::namespaced(m1.clone(), &ns)
                .get_opt("web-multicluster-member-1-all")
                .await
                .unwrap()
                .ok_or("no slice")?;
            let addresses: Vec<String> = slice
                .endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect();
            Ok::<_, String>((addresses, slice.ports.unwrap()[0].port.unwrap(), ()))
        },
    )
    .await;
    assert_eq!((addresses.len(), port), (2, m1_port));
    eventually(
        "kube-proxy's slices carry 300:100 as 2 addresses to 1",
        WAIT,
        async || {
            // Each as the other member lists it (an exporter lists its own pods on itself).
            let one = slice_of(&m2, &ns, "member-1").await.map(|s| s.0.len());
            let two = slice_of(&m1, &ns, "member-2").await.map(|s| s.0.len());
            if (one, two) == (Some(2), Some(1)) {
                Ok(())
            } else {
                Err(format!("{one:?} {two:?}"))
            }
        },
    )
    .await;
    assert!(
        Api::<DynamicObject>::namespaced_with(m2.clone(), &ns, &mcs("ServiceImport"))
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );

    // member-2 changes its port: a PortConflict, named on both exports (the MCS API asks for it on
    // every export of the name); member-2 serves nothing meanwhile, member-1 keeps serving.
    Api::<Service>::namespaced(m2.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let exports2 = Api::<DynamicObject>::namespaced_with(m2.clone(), &ns, &mcs("ServiceExport"));
    let why = eventually("member-2's export reports the conflict", WAIT, async || {
        let export = exports2.get("web").await.unwrap();
        match condition(&export, "Conflict") {
            Some((s, why)) if s == "True" => Ok(why),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        why.contains("http:8080/TCP differs from http:80/TCP exported first by member-1"),
        "{why}"
    );
    let exports1 = Api::<DynamicObject>::namespaced_with(m1.clone(), &ns, &mcs("ServiceExport"));
    eventually(
        "member-1's export (the oldest) reports the conflict too",
        WAIT,
        async || {
            let export = exports1.get("web").await.unwrap();
            match (condition(&export, "Conflict"), condition(&export, "Ready")) {
                (Some((c, why)), Some((r, _)))
                    if c == "True"
                        && why.contains("member-2: port http:8080/TCP")
                        && r == "True" =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // `kubectl multicluster services list` shows the service with its conflict, from the hub.
    let listed = eventually("services list shows the PortConflict", WAIT, async || {
        let out = run_ok(&mut pg.multicluster(&["services", "list", "-n", &ns, "-o", "json"]));
        let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
        match rows.iter().find(|r| r["name"] == "web") {
            Some(r)
                if r["conflict"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("PortConflict: ")) =>
            {
                Ok(r.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(listed["type"], "ClusterSetIP", "{listed}");
    assert_eq!(listed["ports"][0], "http:80/TCP", "{listed}");
    let table = run_ok(&mut pg.multicluster(&["services", "list", "-n", &ns]));
    assert!(
        table.contains("PortConflict") && table.contains("web"),
        "{table}"
    );
    eventually(
        "member-2's backends leave the data plane",
        WAIT,
        async || match slice_of(&m1, &ns, "member-2").await {
            None => Ok(()),
            Some(s) => Err(format!("{s:?}")),
        },
    )
    .await;

    // Unexported everywhere: the import side goes from every member and from the hub.
    for member in [&m1, &m2] {
        Api::<DynamicObject>::namespaced_with(member.clone(), &ns, &mcs("ServiceExport"))
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
    }
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        eventually(&format!("{name} loses the import side"), WAIT, async || {
            let svc = Api::<Service>::namespaced(member.clone(), &ns)
                .get_opt("web-multicluster")
                .await
                .unwrap();
            let import =
                Api::<DynamicObject>::namespaced_with(member.clone(), &ns, &mcs("ServiceImport"))
                    .get_opt("web")
                    .await
                    .unwrap();
            let slice = slice_of(member, &ns, "member-1").await;
            if svc.is_none() && import.is_none() && slice.is_none() {
                Ok(())
            } else {
                Err("still there".to_owned())
            }
        })
        .await;
        // The member's own Service stays.
        assert!(
            Api::<Service>::namespaced(member.clone(), &ns)
                .get_opt("web")
                .await
                .unwrap()
                .is_some()
        );
    }
    eventually("member-1's HTTPRoute goes", WAIT, async || {
        match routes.get_opt("web-multicluster").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    eventually(
        "the hub's ServiceImport goes",
        WAIT,
        async || match hub_imports.get_opt("web").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        },
    )
    .await;
}

/// The MCS API's `Valid` condition: an `ExternalName` Service (a DNS alias) is not exportable
/// (`InvalidServiceType`) and an export without its Service is `NoService`; neither is imported
/// anywhere nor given a VIP. (No node is played: nodes are cluster-wide, and the other test here
/// counts member-1's.)
/// The About API (KEP-2149) after `join`: each member has a stable cluster ID of its own (its
/// `kube-system` namespace's UID) in `ClusterProperty` `id.k8s.io`, the same clusterset in
/// `clusterset.k8s.io`, and the hub records the ID in the `MemberCluster`.
#[tokio::test]
async fn joined_members_have_cluster_ids_and_one_clusterset() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let mut ids = Vec::new();
    let mut sets = Vec::new();
    for member in ["member-1", "member-2"] {
        let client = pg.client(member).await.unwrap();
        let id = cluster_property(&client, "id.k8s.io").await.unwrap();
        let kube_system = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .unwrap();
        assert_eq!(Some(&id), kube_system.metadata.uid.as_ref(), "{member}");
        let recorded = Api::<multicluster_core::api::MemberCluster>::all(hub.clone())
            .get(member)
            .await
            .unwrap()
            .spec
            .cluster_id;
        assert_eq!(recorded.as_ref(), Some(&id), "{member}");
        ids.push(id);
        sets.push(
            cluster_property(&client, "clusterset.k8s.io")
                .await
                .unwrap(),
        );
    }
    assert_ne!(ids[0], ids[1], "cluster IDs are unique");
    assert_eq!(sets[0], sets[1], "one clusterset");
    let hub_id = Api::<k8s_openapi::api::core::v1::Namespace>::all(hub)
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(sets[0], format!("hub-{hub_id}"));
}

#[tokio::test]
async fn an_external_name_service_and_a_missing_one_are_not_valid_exports_and_nothing_is_imported()
{
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let pool = unique_name("mcs-valid");
    pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.251.201.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
        &[],
    );
    let ns = fresh_namespace(&m1, "valid").await.unwrap();
    let alias: Service = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": "db.example.com"}
    }))
    .unwrap();
    Api::<Service>::namespaced(m1.clone(), &ns)
        .create(&Default::default(), &alias)
        .await
        .unwrap();
    let exports = multicluster_tests::mcs::api(&m1, &ns, "ServiceExport");
    for name in ["db", "ghost"] {
        let export: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": ns, "labels": {"multicluster.dev/vip-pool": pool}}
        }))
        .unwrap();
        exports.create(&Default::default(), &export).await.unwrap();
    }
    for (name, reason) in [("db", "InvalidServiceType"), ("ghost", "NoService")] {
        eventually(
            &format!("export {name} is Valid=False with reason {reason}"),
            WAIT,
            async || {
                let export = exports.get(name).await.unwrap();
                let valid = serde_json::to_value(&export).unwrap();
                match multicluster_tests::condition(&valid, "Valid") {
                    Some(c) if c["status"] == "False" && c["reason"] == reason => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    // A valid export in the same namespace is imported within the wait; these two never are.
    export_service(&m1, &ns, "web", 80, None, &pool).await;
    let hub_imports =
        Api::<DynamicObject>::namespaced_with(hub.clone(), &ns, &mcs("ServiceImport"));
    eventually("web is imported on the hub", WAIT, async || {
        hub_imports.get_opt("web").await.unwrap()
    })
    .await;
    for name in ["db", "ghost"] {
        assert!(
            hub_imports.get_opt(name).await.unwrap().is_none(),
            "{name} was imported"
        );
    }
}

/// The imported ServiceImport carries what the MCS API says it carries from the exported
/// Service: session affinity and its config, the internal traffic policy, the traffic
/// distribution, and `ipFamilies` that agree with `ips`. No node is played (see above).
#[tokio::test]
async fn a_client_ip_affinity_local_policy_prefer_close_service_is_imported_with_those_fields() {
    let pg = playground();
    pg.join_members();
    let m1 = pg.client("member-1").await.unwrap();
    let m2 = pg.client("member-2").await.unwrap();
    let pool = unique_name("mcs-fields");
    pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.251.202.0/24\"], domainSuffix: clusterset.example}}\n"
        ),
        &[],
    );
    let ns = fresh_namespace(&m1, "fields").await.unwrap();
    create_namespace(&m2, &ns).await;
    let sticky: Service = serde_json::from_value(json!({
        "metadata": {"name": "cart", "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": "cart"},
                 "ports": [{"name": "http", "port": 8080}],
                 "sessionAffinity": "ClientIP",
                 "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                 "internalTrafficPolicy": "Local", "trafficDistribution": "PreferClose"}
    }))
    .unwrap();
    Api::<Service>::namespaced(m1.clone(), &ns)
        .create(&Default::default(), &sticky)
        .await
        .unwrap();
    let export: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": "cart", "namespace": ns, "labels": {"multicluster.dev/vip-pool": pool}},
        "spec": {"exportedLabels": {"tier": "gold"}, "exportedAnnotations": {"owner": "team-cart"}}
    }))
    .unwrap();
    multicluster_tests::mcs::api(&m1, &ns, "ServiceExport")
        .create(&Default::default(), &export)
        .await
        .unwrap();
    // Imported into every member of the clusterset, the exporter included.
    for (name, member) in [("member-1", &m1), ("member-2", &m2)] {
        let imports =
            Api::<DynamicObject>::namespaced_with(member.clone(), &ns, &mcs("ServiceImport"));
        let import = eventually(&format!("{name} imports cart"), WAIT, async || {
            imports.get_opt("cart").await.unwrap()
        })
        .await;
        // The export's exportedLabels and exportedAnnotations, beside ours.
        assert_eq!(
            import.labels().get("tier").map(String::as_str),
            Some("gold")
        );
        assert_eq!(
            import.annotations().get("owner").map(String::as_str),
            Some("team-cart")
        );
        let spec = import.data["spec"].clone();
        assert_eq!(spec["type"], "ClusterSetIP", "{name}: {spec}");
        assert_eq!(spec["sessionAffinity"], "ClientIP", "{name}: {spec}");
        assert_eq!(
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"], 600,
            "{spec}"
        );
        assert_eq!(spec["internalTrafficPolicy"], "Local", "{spec}");
        assert_eq!(spec["trafficDistribution"], "PreferClose", "{spec}");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]), "{spec}");
        assert_eq!(spec["ips"].as_array().map(Vec::len), Some(1), "{spec}");
        assert_eq!(spec["ports"][0]["port"], 8080, "{spec}");
    }
}

/// One hostname, one address (issue 22): a hub Service `NS/web` in a pool holds
/// `web.NS.<suffix>`; a multi-cluster service `NS/web` exported into the same pool would get the
/// same name with a second address, so the hub's webhook refuses it, naming the holder, and the
/// export says so. `vip list` shows one address for the name. No node is played (see above).
#[tokio::test]
async fn a_multi_cluster_service_whose_hostname_a_hub_service_holds_is_refused_naming_it() {
    let pg = playground();
    pg.join_members();
    let hub = pg.client("hub").await.unwrap();
    let m1 = pg.client("member-1").await.unwrap();
    let pool = unique_name("one-name");
    pg.apply(
        "hub",
        &format!(
            "apiVersion: multicluster.dev/v1alpha1\nkind: VipPool\nmetadata: {{name: {pool}}}\n\
             spec: {{ranges: [\"10.251.202.0/24\"], domainSuffix: mc.example.com}}\n"
        ),
        &[],
    );
    let ns = fresh_namespace(&m1, "onename").await.unwrap();
    create_namespace(&hub, &ns).await;
    let on_hub: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": ns, "labels": {"multicluster.dev/vip-pool": pool}},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    let created = Api::<Service>::namespaced(hub.clone(), &ns)
        .create(&Default::default(), &on_hub)
        .await
        .unwrap();
    let annotations = created.metadata.annotations.unwrap_or_default();
    let hostname = format!("web.{ns}.mc.example.com");
    assert_eq!(annotations["multicluster.dev/hostname"], hostname);
    let address = annotations["multicluster.dev/vip"].clone();

    export_service(&m1, &ns, "web", 80, None, &pool).await;
    let exports = multicluster_tests::mcs::api(&m1, &ns, "ServiceExport");
    let message = eventually(
        "the export says its hostname is held by the hub Service",
        WAIT,
        async || {
            let export = exports.get("web").await.unwrap();
            match condition(&export, "Ready") {
                Some((status, message)) if status == "False" && message.contains("held by") => {
                    Ok(message)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        message.contains(&hostname)
            && message.contains(&address)
            && message.contains(&format!("Service {ns}/web")),
        "{message}"
    );
    let hub_imports =
        Api::<DynamicObject>::namespaced_with(hub.clone(), &ns, &mcs("ServiceImport"));
    assert!(hub_imports.get_opt("web").await.unwrap().is_none());
    let listed: Value = serde_json::from_str(&run_ok(
        &mut pg.multicluster(&["vip", "list", "-o", "json"]),
    ))
    .unwrap();
    let addresses: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row.to_string().contains(&hostname))
        .collect();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
}
