use super::*;
use k8s_openapi::api::core::v1::Service;

fn service(json: serde_json::Value) -> Service {
    serde_json::from_value(json).unwrap()
}

fn node(name: &str, ip: &str, ready: bool) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    }))
    .unwrap()
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(m, w)| ((*m).to_owned(), *w)).collect()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(m, c)| ((*m).to_owned(), *c)).collect()
}

#[test]
fn a_load_balancer_is_reached_on_its_ingress_addresses_with_the_service_ports() {
    let svc = service(serde_json::json!({
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    }));
    let backends = backends_of(&svc, &[node("n1", "10.0.0.1", true)]).unwrap();
    assert_eq!(backends.len(), 1);
    assert_eq!(
        backends[0].address,
        "192.0.2.7".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(backends[0].ports["http"], 80);
    assert_eq!(backends[0].node, None);
}

#[test]
fn a_node_port_service_is_reached_on_every_ready_node_with_the_node_port() {
    let svc = service(serde_json::json!({
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}
    }));
    let mut excluded = node("d", "10.0.0.4", true);
    excluded.metadata.labels = Some(
        [(NO_NODE_PORTS_LABEL.to_owned(), String::new())]
            .into_iter()
            .collect(),
    );
    let nodes = [
        node("b", "10.0.0.2", true),
        node("a", "10.0.0.1", true),
        node("c", "10.0.0.3", false),
        excluded,
    ];
    let backends = backends_of(&svc, &nodes).unwrap();
    let addresses: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
    assert_eq!(
        addresses,
        ["10.0.0.1", "10.0.0.2"],
        "the NotReady node and the one excluded from load balancers are left out"
    );
    assert_eq!(backends[0].ports[""], 30080);
    assert_eq!(backends[0].node.as_deref(), Some("a"));
}

#[test]
fn a_cluster_ip_service_cannot_be_reached_from_other_clusters_and_says_what_to_do() {
    let svc = service(serde_json::json!({"spec": {"ports": [{"port": 80}]}}));
    let err = backends_of(&svc, &[node("a", "10.0.0.1", true)]).unwrap_err();
    assert!(
        err.contains("ClusterIP") && err.contains("NodePort or LoadBalancer"),
        "{err}"
    );
    let no_nodes = service(
        serde_json::json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}),
    );
    let err = backends_of(&no_nodes, &[node("a", "10.0.0.1", false)]).unwrap_err();
    assert!(err.contains("no ready node"), "{err}");
}

/// Every listed member serves every port (no port conflicts).
fn every_member_serves(
    listed: &BTreeMap<String, Vec<Backend>>,
    ports: &[ServicePort],
) -> BTreeMap<String, Vec<String>> {
    listed
        .keys()
        .map(|m| (m.clone(), ports.iter().map(|p| p.name.clone()).collect()))
        .collect()
}

fn export(member: &str, created: &str, ports: &[(&str, i32, &str)]) -> Export {
    Export {
        member: member.to_owned(),
        created: created.to_owned(),
        ports: ports
            .iter()
            .map(|(n, p, proto)| ServicePort {
                name: (*n).to_owned(),
                port: *p,
                protocol: (*proto).to_owned(),
                app_protocol: None,
            })
            .collect(),
        backends: Ok(Vec::new()),
        valid: Ok(()),
        properties: ServiceProperties::default(),
    }
}

#[test]
fn the_oldest_export_sets_the_ports_and_a_differing_one_is_a_named_conflict() {
    let merged = merge(&[
        export("member-2", "2026-11-22T10:00:00Z", &[("http", 8080, "TCP")]),
        export("member-1", "2026-11-22T09:00:00Z", &[("http", 80, "TCP")]),
        export("member-3", "2026-11-22T11:00:00Z", &[("http", 80, "TCP")]),
    ]);
    assert_eq!(merged.ports.len(), 1);
    assert_eq!(merged.ports[0].port, 80);
    assert_eq!(merged.serving(), ["member-1", "member-3"]);
    let why = &merged.conflicts["member-2"];
    assert!(
        why.contains("http:8080/TCP differs from http:80/TCP exported first by member-1")
            && why.contains("serves nothing"),
        "{why}"
    );
    assert_eq!(merge(&[]), Merged::default());
}

/// The MCS API: the import's ports are the union of the exporters' ports; a name exported
/// differently is a PortConflict on every export, the oldest export's port is imported, and each
/// port's traffic goes only to the members that export it as imported.
#[test]
fn ports_are_the_union_and_a_port_conflict_is_named_on_every_export() {
    let old = export(
        "member-1",
        "2026-11-22T09:00:00Z",
        &[("http", 80, "TCP"), ("admin", 9000, "TCP")],
    );
    let new = export(
        "member-2",
        "2026-11-22T10:00:00Z",
        &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
    );
    let merged = merge(&[new.clone(), old.clone()]);
    let ports: Vec<(&str, i32)> = merged
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    assert_eq!(ports, [("http", 80), ("admin", 9000), ("metrics", 9090)]);
    assert_eq!(merged.serving(), ["member-1", "member-2"]);
    assert_eq!(merged.serving_ports["member-1"], ["http", "admin"]);
    assert_eq!(merged.serving_ports["member-2"], ["metrics"]);
    for (member, e) in [("member-1", &old), ("member-2", &new)] {
        let conditions =
            export_conditions(member, e, &merged, Ok(Some(Ipv4Addr::new(10, 0, 0, 1))));
        let conflict = conditions.iter().find(|c| c.0 == "Conflict").unwrap();
        assert!(conflict.1, "{member}: {conflict:?}");
        assert_eq!(conflict.2, "PortConflict", "{member}");
        assert!(
            conflict
                .3
                .contains("member-2: port http:8080/TCP differs from http:80/TCP"),
            "{member}: {}",
            conflict.3
        );
        let ready = conditions.iter().find(|c| c.0 == "Ready").unwrap();
        assert!(ready.1, "{member} serves some ports: {ready:?}");
    }

    // Each member's EndpointSlice lists only the ports it serves.
    let backend = |port: &str| Backend {
        address: "10.0.1.1".parse().unwrap(),
        node: None,
        ports: BTreeMap::from([(port.to_owned(), 30000)]),
        hostname: None,
    };
    let listed = BTreeMap::from([
        ("member-1".to_owned(), vec![backend("http")]),
        ("member-2".to_owned(), vec![backend("metrics")]),
    ]);
    let objects = data_plane(&Import {
        namespace: "shop",
        name: "web",
        vip: "10.9.0.1".parse().unwrap(),
        hostname: "web.shop.example",
        ports: &merged.ports,
        properties: &merged.properties,
        listed: &listed,
        serving_ports: &merged.serving_ports,
        cluster_ids: &BTreeMap::new(),
    });
    let slice_ports = |member: &str| -> Vec<String> {
        let slice = objects
            .iter()
            .find(|o| {
                o["kind"] == "EndpointSlice"
                    && o["metadata"]["labels"][SOURCE_CLUSTER_LABEL] == member
            })
            .unwrap();
        slice["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(slice_ports("member-1"), ["http", "admin"]);
    assert_eq!(slice_ports("member-2"), ["metrics"]);
}

#[test]
fn node_weights_order_backends_and_weight_zero_removes_one() {
    let b = |ip: &str, n: &str| Backend {
        address: ip.parse().unwrap(),
        node: Some(n.to_owned()),
        ports: BTreeMap::new(),
        hostname: None,
    };
    let nw = |name: &str, weight: u32, priority: u32| NodeWeight {
        name: name.to_owned(),
        weight,
        priority,
    };
    let ranked = rank_backends(
        &[
            b("10.0.0.1", "a"),
            b("10.0.0.2", "b"),
            b("10.0.0.3", "c"),
            b("10.0.0.4", "d"),
        ],
        &[nw("a", 100, 1), nw("b", 0, 0), nw("c", 300, 1)],
    );
    let order: Vec<&str> = ranked.iter().map(|b| b.node.as_deref().unwrap()).collect();
    // d: unnamed, priority 0; then priority 1 by weight: c (300) before a (100); b has weight 0.
    assert_eq!(order, ["d", "c", "a"]);
}

#[test]
fn endpoint_counts_carry_the_weights_as_closely_as_the_addresses_allow() {
    // (weights, addresses available, addresses listed, what the case is)
    type Case<'a> = (
        &'a [(&'a str, u32)],
        &'a [(&'a str, usize)],
        &'a [(&'a str, usize)],
        &'a str,
    );
    let cases: &[Case] = &[
        (
            &[("m1", 2), ("m2", 1)],
            &[("m1", 3), ("m2", 3)],
            &[("m1", 2), ("m2", 1)],
            "2:1 exactly",
        ),
        (
            &[("m1", 100), ("m2", 100)],
            &[("m1", 3), ("m2", 3)],
            &[("m1", 3), ("m2", 3)],
            "equal: every address",
        ),
        (
            &[("m1", 100), ("m2", 100)],
            &[("m1", 3), ("m2", 1)],
            &[("m1", 1), ("m2", 1)],
            "equal, fewer on m2",
        ),
        (
            &[("m1", 3), ("m2", 1)],
            &[("m1", 2), ("m2", 2)],
            &[("m1", 2), ("m2", 1)],
            "3:1 with two each",
        ),
        (
            &[("m1", 100), ("m2", 0)],
            &[("m1", 2), ("m2", 3)],
            &[("m1", 2), ("m2", 0)],
            "failed member: none",
        ),
        (
            &[("m1", 0), ("m2", 0)],
            &[("m1", 2), ("m2", 3)],
            &[("m1", 0), ("m2", 0)],
            "nobody serves: nothing",
        ),
        (
            &[("m1", 100), ("m2", 100)],
            &[("m1", 0), ("m2", 2)],
            &[("m1", 0), ("m2", 2)],
            "no addresses on m1",
        ),
        (
            &[("m1", 50), ("m2", 30), ("m3", 20)],
            &[("m1", 5), ("m2", 3), ("m3", 2)],
            &[("m1", 5), ("m2", 3), ("m3", 2)],
            "5:3:2",
        ),
    ];
    for (w, a, want, what) in cases {
        assert_eq!(
            endpoint_counts(&weights(w), &counts(a)),
            counts(want),
            "{what}"
        );
    }
}

#[test]
fn derived_names_stay_valid_and_distinct_when_cut() {
    assert_eq!(imported_service_name("web"), "web-multicluster");
    let long = "a".repeat(60);
    let one = derived_name(&long, "member-1");
    let two = derived_name(&long, "member-2");
    assert!(one.len() <= 63 && two.len() <= 63);
    assert_ne!(one, two);
}

#[test]
fn a_gateway_gets_exact_weights_over_one_service_per_member() {
    let b = |ip: &str| Backend {
        address: ip.parse().unwrap(),
        node: None,
        ports: BTreeMap::from([("http".to_owned(), 30080)]),
        hostname: None,
    };
    let ports = [ServicePort {
        name: "http".to_owned(),
        port: 80,
        protocol: "TCP".to_owned(),
        app_protocol: None,
    }];
    let ranked = BTreeMap::from([
        ("member-1".to_owned(), vec![b("10.0.1.1"), b("10.0.1.2")]),
        ("member-2".to_owned(), vec![b("10.0.2.1")]),
    ]);
    let listed = BTreeMap::new();
    let cluster_ids = BTreeMap::new();
    let import = Import {
        namespace: "shop",
        name: "web",
        vip: "10.9.0.1".parse().unwrap(),
        hostname: "web.shop.example",
        ports: &ports,
        properties: &ServiceProperties::default(),
        listed: &listed,
        serving_ports: &every_member_serves(&ranked, &ports),
        cluster_ids: &cluster_ids,
    };
    let gateway = crate::api::GatewayParent {
        name: "edge".to_owned(),
        namespace: Some("infra".to_owned()),
        section_name: None,
    };
    let objects = gateway_objects(
        &import,
        &gateway,
        &ranked,
        &weights(&[("member-1", 200), ("member-2", 100)]),
    );
    let route = objects.iter().find(|o| o["kind"] == "HTTPRoute").unwrap();
    assert_eq!(
        route["spec"]["parentRefs"][0],
        serde_json::json!({"name": "edge", "namespace": "infra"})
    );
    assert_eq!(route["spec"]["hostnames"][0], "web.shop.example");
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"],
        serde_json::json!([
            {"name": "web-multicluster-member-1", "port": 80, "weight": 200},
            {"name": "web-multicluster-member-2", "port": 80, "weight": 100}
        ])
    );
    // Every backend of a member behind its own Service (all of them: the weights are exact).
    let slice = objects
        .iter()
        .find(|o| {
            o["kind"] == "EndpointSlice"
                && o["metadata"]["labels"]["kubernetes.io/service-name"]
                    == "web-multicluster-member-1"
        })
        .unwrap();
    assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(slice["ports"][0]["port"], 30080);
}

#[test]
fn an_external_name_or_missing_service_is_not_valid_with_the_mcs_reasons_and_takes_no_part() {
    let alias = service(
        serde_json::json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
    );
    let invalid = validity(Some(&alias), "member-1", "shop", "db").unwrap_err();
    assert_eq!(invalid.reason, "InvalidServiceType");
    assert!(
        invalid.message.contains("ExternalName"),
        "{}",
        invalid.message
    );
    assert_eq!(
        validity(None, "member-1", "shop", "db").unwrap_err().reason,
        "NoService"
    );
    let plain = service(serde_json::json!({"spec": {"type": "NodePort"}}));
    assert_eq!(validity(Some(&plain), "member-1", "shop", "db"), Ok(()));

    // An invalid export, even the oldest, neither sets the ports nor conflicts.
    let mut old = export("member-1", "2026-01-01T00:00:00Z", &[("db", 5432, "TCP")]);
    old.valid = Err(invalid);
    let new = export("member-2", "2026-02-01T00:00:00Z", &[("db", 6432, "TCP")]);
    let merged = merge(&[old.clone(), new.clone()]);
    assert_eq!(merged.serving(), ["member-2"]);
    assert!(merged.conflicts.is_empty(), "{:?}", merged.conflicts);
    assert_eq!(merged.ports[0].port, 6432);

    let reasons = |member: &str, e: &Export| -> Vec<(String, bool, String)> {
        export_conditions(member, e, &merged, Ok(Some(Ipv4Addr::new(10, 0, 0, 1))))
            .into_iter()
            .map(|(t, s, r, _)| (t.to_owned(), s, r))
            .collect()
    };
    assert_eq!(
        reasons("member-1", &old),
        [
            ("Valid".into(), false, "InvalidServiceType".into()),
            ("Conflict".into(), false, "NoConflicts".into()),
            ("Ready".into(), false, "Pending".into()),
        ]
    );
    assert_eq!(
        reasons("member-2", &new),
        [
            ("Valid".into(), true, "Valid".into()),
            ("Conflict".into(), false, "NoConflicts".into()),
            ("Ready".into(), true, "Ready".into()),
        ]
    );
}

#[test]
fn the_import_carries_the_oldest_exports_affinity_policies_and_one_family_per_address() {
    let affinity = service(serde_json::json!({"spec": {
        "type": "NodePort", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "internalTrafficPolicy": "Local", "trafficDistribution": "PreferClose"}}));
    let mut old = export("member-1", "2026-01-01T00:00:00Z", &[("http", 80, "TCP")]);
    old.properties = properties_of(&affinity);
    let new = export("member-2", "2026-02-01T00:00:00Z", &[("http", 80, "TCP")]);
    let merged = merge(&[new, old]);
    assert_eq!(
        merged.properties.session_affinity.as_deref(),
        Some("ClientIP")
    );
    let listed = BTreeMap::new();
    let cluster_ids = BTreeMap::new();
    let (spec, _) = service_import(&Import {
        namespace: "shop",
        name: "web",
        vip: "10.9.0.1".parse().unwrap(),
        hostname: "web.shop.example",
        ports: &merged.ports,
        properties: &merged.properties,
        listed: &listed,
        serving_ports: &every_member_serves(&listed, &merged.ports),
        cluster_ids: &cluster_ids,
    });
    let spec = &spec["spec"];
    assert_eq!(spec["sessionAffinity"], "ClientIP");
    assert_eq!(
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        600
    );
    assert_eq!(spec["internalTrafficPolicy"], "Local");
    assert_eq!(spec["trafficDistribution"], "PreferClose");
    assert_eq!(spec["ips"], serde_json::json!(["10.9.0.1"]));
    assert_eq!(spec["ipFamilies"], serde_json::json!(["IPv4"]));
}

/// The MCS API's EndpointSlice labels: the service's name, the exporting cluster by its cluster ID
/// (the member's name only for a member joined before it had one), and this project as manager.
#[test]
fn endpoint_slices_name_the_service_and_the_source_cluster_by_its_id() {
    let ports = vec![ServicePort {
        name: "http".to_owned(),
        port: 80,
        protocol: "TCP".to_owned(),
        app_protocol: None,
    }];
    let backend = Backend {
        address: "10.0.1.1".parse().unwrap(),
        node: None,
        ports: BTreeMap::from([("http".to_owned(), 30080)]),
        hostname: None,
    };
    let listed = BTreeMap::from([
        ("member-1".to_owned(), vec![backend.clone()]),
        ("member-2".to_owned(), vec![backend]),
    ]);
    let cluster_ids = BTreeMap::from([("member-1".to_owned(), "4f1c-uid".to_owned())]);
    let objects = data_plane(&Import {
        namespace: "shop",
        name: "web",
        vip: "10.9.0.1".parse().unwrap(),
        hostname: "web.shop.example",
        ports: &ports,
        properties: &ServiceProperties::default(),
        listed: &listed,
        serving_ports: &every_member_serves(&listed, &ports),
        cluster_ids: &cluster_ids,
    });
    let slices: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|o| o["kind"] == "EndpointSlice")
        .collect();
    let sources: Vec<&str> = slices
        .iter()
        .map(|s| {
            s["metadata"]["labels"][SOURCE_CLUSTER_LABEL]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(sources, ["4f1c-uid", "member-2"]);
    for slice in slices {
        let labels = &slice["metadata"]["labels"];
        assert_eq!(labels[MCS_SERVICE_NAME_LABEL], "web");
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            ENDPOINTSLICE_MANAGER
        );
    }
}

/// Exported labels reach the ServiceImport; where exports disagree on a property, the oldest
/// export's value is imported, every export keeps serving, and every export (the oldest too) says
/// Conflict with the MCS API's reasons, comma-joined.
#[test]
fn property_conflicts_are_named_on_every_export_and_the_oldest_value_wins() {
    let mut old = export("member-1", "2026-01-01T00:00:00Z", &[("http", 80, "TCP")]);
    old.properties = old.properties.with_exported(&serde_json::json!({
        "exportedLabels": {"tier": "gold"}, "exportedAnnotations": {"owner": "team-a"}}));
    let mut new = export("member-2", "2026-02-01T00:00:00Z", &[("http", 80, "TCP")]);
    new.properties = new.properties.with_exported(&serde_json::json!({
        "exportedLabels": {"tier": "silver"}, "exportedAnnotations": {"owner": "team-a"}}));
    new.properties.session_affinity = Some("ClientIP".to_owned());
    let merged = merge(&[new.clone(), old.clone()]);
    assert_eq!(
        merged.serving(),
        ["member-1", "member-2"],
        "both keep serving"
    );
    let reasons: Vec<&str> = merged.property_conflicts.iter().map(|(r, _)| *r).collect();
    assert_eq!(reasons, ["SessionAffinityConflict", "LabelsConflict"]);
    for (member, e) in [("member-1", &old), ("member-2", &new)] {
        let conditions =
            export_conditions(member, e, &merged, Ok(Some(Ipv4Addr::new(10, 0, 0, 1))));
        let conflict = conditions.iter().find(|c| c.0 == "Conflict").unwrap();
        assert!(conflict.1, "{member}: {conflict:?}");
        assert_eq!(conflict.2, "SessionAffinityConflict,LabelsConflict");
        assert!(
            conflict.3.contains("member-2") && conflict.3.contains("silver"),
            "{}",
            conflict.3
        );
    }
    let listed = BTreeMap::new();
    let cluster_ids = BTreeMap::new();
    let (spec, _) = service_import(&Import {
        namespace: "shop",
        name: "web",
        vip: "10.9.0.1".parse().unwrap(),
        hostname: "web.shop.example",
        ports: &merged.ports,
        properties: &merged.properties,
        listed: &listed,
        serving_ports: &every_member_serves(&listed, &merged.ports),
        cluster_ids: &cluster_ids,
    });
    assert_eq!(spec["metadata"]["labels"]["tier"], "gold");
    assert_eq!(spec["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(spec["metadata"]["labels"][SERVICE_LABEL], "web");
    assert!(
        spec["spec"]["sessionAffinity"].is_null(),
        "the oldest has none"
    );
}

/// An exporting member reaches its own pods through the VIP by their endpoints, not by its node
/// addresses and node ports (kube-proxy would not translate a connection to its own node port a
/// second time): its slice on itself lists as many ready pods as it lists node backends elsewhere.
#[test]
fn an_exporting_member_lists_its_own_ready_pods_in_its_own_data_plane() {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.200.1.7"], "nodeName": "n1", "conditions": {"ready": true}},
            {"addresses": ["10.200.1.5"], "nodeName": "n1"},
            {"addresses": ["10.200.2.9"], "nodeName": "n2", "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    let local = local_backends(&[slice]);
    let addresses: Vec<String> = local.iter().map(|b| b.address.to_string()).collect();
    assert_eq!(
        addresses,
        ["10.200.1.5", "10.200.1.7"],
        "ready (or unset) only"
    );
    assert_eq!(
        local[0].ports["http"], 8080,
        "the pods' port, not a node port"
    );

    let node = |a: &str| Backend {
        address: a.parse().unwrap(),
        node: None,
        ports: BTreeMap::from([("http".to_owned(), 30080)]),
        hostname: None,
    };
    let listed = BTreeMap::from([
        ("member-1".to_owned(), vec![node("10.200.0.11")]),
        (
            "member-2".to_owned(),
            vec![node("10.200.0.12"), node("10.200.0.13")],
        ),
    ]);
    let own = listed_in(&listed, "member-1", &local);
    assert_eq!(own["member-1"].len(), 1, "as many as it lists elsewhere");
    assert_eq!(own["member-1"][0].address.to_string(), "10.200.1.5");
    assert_eq!(own["member-2"], listed["member-2"], "the others' stay");
    assert_eq!(listed_in(&listed, "member-3", &local), listed);
}

/// A headless Service is imported as type `Headless` with no clusterset IP, its exporters' pod
/// endpoints (with their hostnames) in one slice each; an export that is not headless while the
/// oldest is (or the other way round) is a `TypeConflict` on every export, and the oldest's type
/// is imported.
#[test]
fn a_headless_export_is_imported_headless_with_its_pods_and_a_type_difference_is_a_conflict() {
    let headless = service(
        serde_json::json!({"spec": {"clusterIP": "None", "ports": [{"name": "db", "port": 5432}]}}),
    );
    let mut old = export("member-1", "2026-01-01T00:00:00Z", &[("db", 5432, "TCP")]);
    old.properties = properties_of(&headless);
    let new = export("member-2", "2026-02-01T00:00:00Z", &[("db", 5432, "TCP")]);
    let merged = merge(&[new.clone(), old.clone()]);
    assert!(merged.properties.headless, "the oldest export's type");
    for (member, e) in [("member-1", &old), ("member-2", &new)] {
        let conditions = export_conditions(member, e, &merged, Ok(None));
        let conflict = conditions.iter().find(|c| c.0 == "Conflict").unwrap();
        assert_eq!(
            (conflict.1, conflict.2.as_str()),
            (true, "TypeConflict"),
            "{member}"
        );
        assert!(
            conflict
                .3
                .contains("type ClusterSetIP (the oldest export has Headless)"),
            "{}",
            conflict.3
        );
        let ready = conditions.iter().find(|c| c.0 == "Ready").unwrap();
        assert!(ready.1 && ready.3.starts_with("headless"), "{ready:?}");
    }

    let pod = |ip: &str, host: &str| Backend {
        address: ip.parse().unwrap(),
        node: Some("n1".to_owned()),
        ports: BTreeMap::from([("db".to_owned(), 5432)]),
        hostname: Some(host.to_owned()),
    };
    let endpoints = BTreeMap::from([
        (
            "member-1".to_owned(),
            vec![pod("10.200.1.4", "db-0"), pod("10.200.1.5", "db-1")],
        ),
        ("member-2".to_owned(), vec![pod("10.200.2.4", "db-0")]),
    ]);
    let ids = BTreeMap::from([("member-1".to_owned(), "id-1".to_owned())]);
    let (spec, status, slices) = headless_objects("shop", "db", &merged, &endpoints, &ids);
    assert_eq!(spec["spec"]["type"], "Headless");
    assert!(
        spec["spec"]["ips"].is_null() && spec["spec"]["ipFamilies"].is_null(),
        "{spec}"
    );
    assert_eq!(status["status"]["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(slices.len(), 2);
    let first = &slices[0];
    assert_eq!(first["metadata"]["labels"][SOURCE_CLUSTER_LABEL], "id-1");
    assert_eq!(first["metadata"]["labels"][MCS_SERVICE_NAME_LABEL], "db");
    assert_eq!(
        first["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        ENDPOINTSLICE_MANAGER
    );
    assert_eq!(first["endpoints"][1]["hostname"], "db-1");
    assert_eq!(first["ports"][0]["port"], 5432);
}
