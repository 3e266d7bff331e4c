//! The `clusterset.local` zone as a pure function of what a member holds: the ServiceImports and
//! the MCS EndpointSlices the hub server writes there. The records are those of the Kubernetes
//! DNS-Based Multicluster Service Discovery specification (KEP-1645's `specification.md`, schema
//! 1.0.0):
//!
//! - `<svc>.<ns>.svc.clusterset.local` A/AAAA: a ClusterSetIP service's clusterset IPs; a headless
//!   service's ready endpoint addresses in every exporting cluster (NXDOMAIN when it has none);
//! - `_<port>._<proto>.<svc>.<ns>.svc.clusterset.local` SRV for every named port: to the service
//!   name for ClusterSetIP; for headless, one per ready endpoint to its per-endpoint name;
//! - `<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local` A/AAAA for a headless endpoint (a
//!   StatefulSet pod's `db-0`); never for a ClusterSetIP service, which must not be targetable per
//!   cluster;
//! - `dns-version.clusterset.local` TXT `1.0.0`.
//!
//! Not served: PTR records (the reverse zones stay with the cluster DNS, which owns them); the
//! specification lets an implementation leave them where a record already exists.
//!
//! The server ([`Zone::answer`] behind a DNS listener) lives in the hub server's binary and runs
//! in every member; this module decides every answer, so that the server only carries bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::{ENDPOINTSLICE_MANAGER, MCS_SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL};

/// The clusterset zone; the MCS API fixes it.
pub const ZONE: &str = "clusterset.local";
/// The version of the multicluster DNS schema served (`dns-version.clusterset.local`).
pub const SCHEMA_VERSION: &str = "1.0.0";
/// Time to live of every answer but the schema version: short, because an endpoint that stops
/// being ready must leave clients' answers within seconds (the spec's examples use 4).
pub const TTL: u32 = 5;
/// The schema version's time to live, the specification's example.
pub const VERSION_TTL: u32 = 28_800;

/// The label that marks the EndpointSlices the hub server writes (the others are not ours).
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// What a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Srv,
    Txt,
    Soa,
    Any,
    /// Anything else (MX, CNAME, PTR, …): never held here, so the name's existence decides.
    Other,
}

/// The data of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Txt(String),
    /// The zone's start of authority; `serial` counts the zone's rebuilds.
    Soa {
        serial: u32,
    },
}

/// One resource record; `name` is fully qualified, without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: Rdata,
}

/// How a question ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    NxDomain,
    /// Not in this zone: this server answers only `clusterset.local`.
    Refused,
}

/// The answer to one question: records, and for an empty answer (NXDOMAIN or no data) the zone's
/// SOA for the authority section, which tells resolvers how long to cache the absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    pub answers: Vec<Record>,
    pub authority: Option<Record>,
}

/// One port of an imported service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    protocol: String,
    number: u16,
}

/// One ready endpoint of a headless service in one exporting cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    cluster: String,
    /// Its `hostname`, else a name made from its first address (the specification's
    /// "system-assigned identifier").
    hostname: String,
    addresses: Vec<IpAddr>,
    /// Port numbers by (port name, protocol), from its slice.
    ports: BTreeMap<(String, String), u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    ClusterSetIp(Vec<IpAddr>),
    Headless(Vec<Endpoint>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Service {
    kind: Kind,
    ports: Vec<Port>,
}

/// Everything `clusterset.local` answers on a member, built from its objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    serial: u32,
    /// (namespace, name) → the service.
    services: BTreeMap<(String, String), Service>,
}

fn ports_of(import: &Value) -> Vec<Port> {
    import["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                number: u16::try_from(p["port"].as_i64()?).ok()?,
            })
        })
        .collect()
}

/// The ready endpoints an MCS EndpointSlice lists, named by its source cluster.
fn slice_endpoints(slice: &EndpointSlice) -> Vec<Endpoint> {
    let labels = slice.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
    let Some(cluster) = label(SOURCE_CLUSTER_LABEL) else {
        return Vec::new();
    };
    let ports: BTreeMap<(String, String), u16> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                (
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                ),
                u16::try_from(p.port?).ok()?,
            ))
        })
        .collect();
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| super::endpoint_ready(e))
        .filter_map(|e| {
            let addresses: Vec<IpAddr> =
                e.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let first = addresses.first()?;
            let hostname = match &e.hostname {
                Some(h) if !h.is_empty() => h.to_lowercase(),
                _ => first.to_string().replace(['.', ':'], "-"),
            };
            Some(Endpoint {
                cluster: cluster.to_lowercase(),
                hostname,
                addresses,
                ports: ports.clone(),
            })
        })
        .collect()
}

impl Zone {
    /// The zone of a member holding `imports` (ServiceImports, as JSON) and `slices` (its
    /// EndpointSlices; only the hub server's MCS slices count). `serial` numbers this build.
    pub fn build(imports: &[Value], slices: &[EndpointSlice], serial: u32) -> Zone {
        let mut endpoints: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key));
            if label(MANAGED_BY).map(String::as_str) != Some(ENDPOINTSLICE_MANAGER) {
                continue;
            }
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.clone(),
                label(MCS_SERVICE_NAME_LABEL),
            ) else {
                continue;
            };
            endpoints
                .entry((namespace, service.to_lowercase()))
                .or_default()
                .extend(slice_endpoints(slice));
        }
        let mut services = BTreeMap::new();
        for import in imports {
            let (Some(namespace), Some(name)) = (
                import["metadata"]["namespace"].as_str(),
                import["metadata"]["name"].as_str(),
            ) else {
                continue;
            };
            let key = (namespace.to_lowercase(), name.to_lowercase());
            let kind = if import["spec"]["type"] == "Headless" {
                Kind::Headless(endpoints.remove(&key).unwrap_or_default())
            } else {
                Kind::ClusterSetIp(
                    import["spec"]["ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|ip| ip.as_str()?.parse().ok())
                        .collect(),
                )
            };
            services.insert(
                key,
                Service {
                    kind,
                    ports: ports_of(import),
                },
            );
        }
        Zone { serial, services }
    }

    /// How many services the zone answers for.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn soa(&self) -> Record {
        Record {
            name: ZONE.to_owned(),
            ttl: TTL,
            data: Rdata::Soa {
                serial: self.serial,
            },
        }
    }

    fn nx(&self) -> Answer {
        Answer {
            rcode: Rcode::NxDomain,
            answers: Vec::new(),
            authority: Some(self.soa()),
        }
    }

    /// The answer for `records` of a name that exists: no data comes with the SOA.
    fn found(&self, answers: Vec<Record>) -> Answer {
        let authority = answers.is_empty().then(|| self.soa());
        Answer {
            rcode: Rcode::NoError,
            answers,
            authority,
        }
    }

    /// Answers `qtype` for `qname` (any case, with or without the trailing dot).
    pub fn answer(&self, qname: &str, qtype: QueryType) -> Answer {
        let name = qname.trim_end_matches('.').to_lowercase();
        let labels: Vec<&str> = if name == ZONE {
            Vec::new()
        } else if let Some(prefix) = name.strip_suffix(&format!(".{ZONE}")) {
            prefix.split('.').collect()
        } else {
            return Answer {
                rcode: Rcode::Refused,
                answers: Vec::new(),
                authority: None,
            };
        };
        let record = |data: Rdata| Record {
            name: name.clone(),
            ttl: TTL,
            data,
        };
        match labels.as_slice() {
            [] => self.found(match qtype {
                QueryType::Soa | QueryType::Any => vec![self.soa()],
                _ => Vec::new(),
            }),
            ["dns-version"] => self.found(match qtype {
                QueryType::Txt | QueryType::Any => vec![Record {
                    name: name.clone(),
                    ttl: VERSION_TTL,
                    data: Rdata::Txt(SCHEMA_VERSION.to_owned()),
                }],
                _ => Vec::new(),
            }),
            // Empty non-terminals: they exist while something below them does.
            ["svc"] => self.found(Vec::new()),
            [namespace, "svc"] => {
                if self.services.keys().any(|(ns, _)| ns == namespace) {
                    self.found(Vec::new())
                } else {
                    self.nx()
                }
            }
            [service, namespace, "svc"] => {
                let Some(svc) = self.service(namespace, service) else {
                    return self.nx();
                };
                let addresses: Vec<IpAddr> = match &svc.kind {
                    Kind::ClusterSetIp(ips) => ips.clone(),
                    Kind::Headless(endpoints) if endpoints.is_empty() => return self.nx(),
                    Kind::Headless(endpoints) => endpoints
                        .iter()
                        .flat_map(|e| e.addresses.iter().copied())
                        .collect(),
                };
                self.found(address_records(&addresses, qtype, record))
            }
            [port, proto, service, namespace, "svc"]
                if port.starts_with('_') && proto.starts_with('_') =>
            {
                let Some(svc) = self.service(namespace, service) else {
                    return self.nx();
                };
                // Nothing exists below a headless name without ready endpoints (NXDOMAIN).
                if matches!(&svc.kind, Kind::Headless(endpoints) if endpoints.is_empty()) {
                    return self.nx();
                }
                let Some(port) = svc.ports.iter().find(|p| {
                    !p.name.is_empty()
                        && p.name.eq_ignore_ascii_case(&port[1..])
                        && p.protocol.eq_ignore_ascii_case(&proto[1..])
                }) else {
                    return self.nx();
                };
                if !matches!(qtype, QueryType::Srv | QueryType::Any) {
                    return self.found(Vec::new());
                }
                let base = format!("{service}.{namespace}.svc.{ZONE}");
                let srv = |number: u16, target: String| {
                    record(Rdata::Srv {
                        priority: 0,
                        weight: 100,
                        port: number,
                        target,
                    })
                };
                self.found(match &svc.kind {
                    Kind::ClusterSetIp(_) => vec![srv(port.number, base)],
                    // Only the endpoints whose slice lists the port: an exporter that defines
                    // the port differently serves it nowhere (its slice leaves it out).
                    Kind::Headless(endpoints) => endpoints
                        .iter()
                        .filter_map(|e| {
                            let number =
                                e.ports.get(&(port.name.clone(), port.protocol.clone()))?;
                            Some(srv(*number, format!("{}.{}.{base}", e.hostname, e.cluster)))
                        })
                        .collect(),
                })
            }
            [cluster, service, namespace, "svc"] => match self.headless(namespace, service) {
                Some(endpoints) if endpoints.iter().any(|e| e.cluster == *cluster) => {
                    self.found(Vec::new())
                }
                _ => self.nx(),
            },
            [hostname, cluster, service, namespace, "svc"] => {
                let addresses: Vec<IpAddr> = self
                    .headless(namespace, service)
                    .into_iter()
                    .flatten()
                    .filter(|e| e.cluster == *cluster && e.hostname == *hostname)
                    .flat_map(|e| e.addresses.iter().copied())
                    .collect();
                if addresses.is_empty() {
                    return self.nx();
                }
                self.found(address_records(&addresses, qtype, record))
            }
            _ => self.nx(),
        }
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// A headless service's endpoints; `None` for a ClusterSetIP service, which has no names per
    /// cluster (the specification forbids them).
    fn headless(&self, namespace: &str, name: &str) -> Option<&Vec<Endpoint>> {
        match &self.service(namespace, name)?.kind {
            Kind::Headless(endpoints) => Some(endpoints),
            Kind::ClusterSetIp(_) => None,
        }
    }
}

/// The A or AAAA records of `addresses` that `qtype` asks for.
fn address_records(
    addresses: &[IpAddr],
    qtype: QueryType,
    record: impl Fn(Rdata) -> Record,
) -> Vec<Record> {
    let mut seen = Vec::new();
    addresses
        .iter()
        .filter(|a| {
            let new = !seen.contains(*a);
            seen.push(**a);
            new
        })
        .filter_map(|a| match (a, qtype) {
            (IpAddr::V4(v4), QueryType::A | QueryType::Any) => Some(record(Rdata::A(*v4))),
            (IpAddr::V6(v6), QueryType::Aaaa | QueryType::Any) => Some(record(Rdata::Aaaa(*v6))),
            _ => None,
        })
        .collect()
}

/// The name of the server's Deployment, Service, account and ClusterRole on a member.
pub const SERVER_NAME: &str = "clusterset-dns";
/// The port the server answers on in its pod (unprivileged: it runs as non-root with no
/// capabilities); its Service offers it on 53.
pub const SERVER_PORT: u16 = 5353;
/// Its health port (`/healthz`, and `/readyz` once its watches have listed).
pub const HEALTH_PORT: u16 = 8080;

/// What runs the server on a member, in `multicluster-system`: a ServiceAccount that can list and
/// watch ServiceImports and EndpointSlices and nothing else, the Deployment running `image`
/// (the hub server's image: `multicluster-webhook clusterset-dns`) and its Service, on
/// `service_ip` when given (the cluster DNS forwards to an address, so the playground fixes it).
pub fn server_objects(image: &str, service_ip: Option<&str>) -> Vec<Value> {
    let namespace = crate::SYSTEM_NAMESPACE;
    let labels = serde_json::json!({"app.kubernetes.io/name": SERVER_NAME,
                                    "app.kubernetes.io/part-of": "kubectl-multicluster"});
    let role = format!("multicluster-{SERVER_NAME}");
    let mut service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVER_NAME, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": SERVER_PORT},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": SERVER_PORT}
        ]}
    });
    if let Some(ip) = service_ip {
        service["spec"]["clusterIP"] = ip.into();
    }
    vec![
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": namespace}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                           "metadata": {"name": SERVER_NAME, "namespace": namespace, "labels": labels}}),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": role, "labels": labels},
            "rules": [
                {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
            ]
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": SERVER_NAME, "namespace": namespace}]
        }),
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": SERVER_NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": SERVER_NAME,
                        // It answers the cluster DNS; it must not depend on it.
                        "dnsPolicy": "Default",
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
                        "containers": [{
                            "name": "dns",
                            "image": image,
                            "args": ["clusterset-dns", format!("--listen=0.0.0.0:{SERVER_PORT}"),
                                     format!("--health-listen=0.0.0.0:{HEALTH_PORT}")],
                            "ports": [
                                {"name": "dns", "containerPort": SERVER_PORT, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": SERVER_PORT, "protocol": "TCP"},
                                {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}
                            ],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": HEALTH_PORT}, "periodSeconds": 1},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}
                            }
                        }]
                    }
                }
            }
        }),
        service,
    ]
}

/// The server block a member's CoreDNS needs so that its pods resolve `clusterset.local`: the zone
/// forwarded to the server's Service address, uncached (the server's answers are short-lived by
/// design), while `cluster.local` keeps answering only the local cluster.
pub fn corefile_block(server_ip: &str) -> String {
    format!(
        "{ZONE}:53 {{
    errors
    forward . {server_ip}:53
}}
"
    )
}

/// A member's CoreDNS configuration with the clusterset zone forwarded to `server_ip`
/// ([`corefile_block`] appended), or `None` when it already has a server block for the zone (ours
/// or the admin's: never replaced).
pub fn corefile_with_clusterset(corefile: &str, server_ip: &str) -> Option<String> {
    (!corefile_serves(corefile, ZONE))
        .then(|| format!("{}\n{}", corefile.trim_end(), corefile_block(server_ip)))
}

/// Whether a server block of `corefile` serves `zone`: the keys before each top-level `{` (several
/// zones on one line, with or without `dns://` and a port).
fn corefile_serves(corefile: &str, zone: &str) -> bool {
    let mut depth = 0usize;
    let mut keys = String::new();
    for c in corefile.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    let serves = keys.split_whitespace().any(|key| {
                        let key = key.strip_prefix("dns://").unwrap_or(key);
                        let host = key.split(':').next().unwrap_or(key);
                        host.trim_end_matches('.').eq_ignore_ascii_case(zone)
                    });
                    if serves {
                        return true;
                    }
                }
                depth += 1;
                keys.clear();
            }
            '}' => {
                depth = depth.saturating_sub(1);
                keys.clear();
            }
            '\n' if depth > 0 => {}
            _ if depth == 0 => keys.push(c),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn import(ns: &str, name: &str, kind: &str, ips: &[&str]) -> Value {
        json!({"metadata": {"namespace": ns, "name": name},
               "spec": {"type": kind, "ips": ips,
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                  {"port": 9000, "protocol": "TCP"}]}})
    }

    fn slice(
        ns: &str,
        service: &str,
        cluster: &str,
        manager: &str,
        endpoints: Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{service}-{cluster}"),
                         "labels": {MANAGED_BY: manager, MCS_SERVICE_NAME_LABEL: service,
                                    SOURCE_CLUSTER_LABEL: cluster}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .expect("an EndpointSlice")
    }

    fn zone() -> Zone {
        Zone::build(
            &[
                import("shop", "web", "ClusterSetIP", &["10.240.0.7"]),
                import("shop", "db", "Headless", &[]),
                import("shop", "empty", "Headless", &[]),
            ],
            &[
                slice(
                    "shop",
                    "db",
                    "cluster-a",
                    ENDPOINTSLICE_MANAGER,
                    json!([
                        {"addresses": ["10.200.1.5"], "hostname": "db-0"},
                        {"addresses": ["10.200.1.6"], "hostname": "db-1", "conditions": {"ready": false}}
                    ]),
                ),
                slice(
                    "shop",
                    "db",
                    "cluster-b",
                    ENDPOINTSLICE_MANAGER,
                    json!([
                        {"addresses": ["10.200.2.9"], "hostname": "db-0"},
                        {"addresses": ["10.200.2.10"]}
                    ]),
                ),
                // The member's own endpointslice controller's slices are not the clusterset's.
                slice(
                    "shop",
                    "db",
                    "cluster-c",
                    "endpointslice-controller.k8s.io",
                    json!([
                        {"addresses": ["10.200.3.1"], "hostname": "db-0"}
                    ]),
                ),
            ],
            7,
        )
    }

    fn data(answer: &Answer) -> Vec<Rdata> {
        answer.answers.iter().map(|r| r.data.clone()).collect()
    }

    #[test]
    fn a_clusterset_ip_service_answers_its_ip_and_an_srv_per_named_port() {
        let z = zone();
        let a = z.answer("web.shop.svc.clusterset.local.", QueryType::A);
        assert_eq!(a.rcode, Rcode::NoError);
        assert_eq!(data(&a), vec![Rdata::A(Ipv4Addr::new(10, 240, 0, 7))]);
        assert_eq!(a.answers[0].ttl, TTL);
        // Same name, any case; no IPv6 address: the name exists with no AAAA data.
        let aaaa = z.answer("WEB.Shop.svc.clusterset.local", QueryType::Aaaa);
        assert_eq!((aaaa.rcode, aaaa.answers.len()), (Rcode::NoError, 0));
        assert!(matches!(
            aaaa.authority,
            Some(Record {
                data: Rdata::Soa { serial: 7 },
                ..
            })
        ));
        let srv = z.answer("_http._tcp.web.shop.svc.clusterset.local", QueryType::Srv);
        assert_eq!(
            data(&srv),
            vec![Rdata::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.shop.svc.clusterset.local".into()
            }]
        );
        // A port of another protocol, an unknown port: no such name.
        for q in [
            "_http._udp.web.shop.svc.clusterset.local",
            "_grpc._tcp.web.shop.svc.clusterset.local",
        ] {
            assert_eq!(z.answer(q, QueryType::Srv).rcode, Rcode::NxDomain, "{q}");
        }
        // The specification forbids names that target one cluster of a ClusterSetIP service.
        assert_eq!(
            z.answer("cluster-a.web.shop.svc.clusterset.local", QueryType::A)
                .rcode,
            Rcode::NxDomain
        );
    }

    #[test]
    fn a_headless_service_answers_every_ready_endpoint_of_every_exporter_and_each_by_its_hostname_and_cluster()
     {
        let z = zone();
        let a = z.answer("db.shop.svc.clusterset.local", QueryType::A);
        assert_eq!(
            data(&a),
            ["10.200.1.5", "10.200.2.9", "10.200.2.10"]
                .map(|ip| Rdata::A(ip.parse().expect("an address")))
                .to_vec(),
            "ready endpoints of cluster-a and cluster-b; not the unready db-1, not the member's own slice"
        );
        let pod = z.answer("db-0.cluster-b.db.shop.svc.clusterset.local", QueryType::A);
        assert_eq!(data(&pod), vec![Rdata::A(Ipv4Addr::new(10, 200, 2, 9))]);
        let unnamed = z.answer(
            "10-200-2-10.cluster-b.db.shop.svc.clusterset.local",
            QueryType::A,
        );
        assert_eq!(
            data(&unnamed),
            vec![Rdata::A(Ipv4Addr::new(10, 200, 2, 10))]
        );
        for q in [
            "db-1.cluster-a.db.shop.svc.clusterset.local",
            "db-0.cluster-c.db.shop.svc.clusterset.local",
        ] {
            assert_eq!(z.answer(q, QueryType::A).rcode, Rcode::NxDomain, "{q}");
        }
        assert_eq!(
            z.answer("cluster-a.db.shop.svc.clusterset.local", QueryType::A)
                .rcode,
            Rcode::NoError
        );
        let srv = z.answer("_http._tcp.db.shop.svc.clusterset.local", QueryType::Srv);
        let targets: Vec<(u16, String)> = srv
            .answers
            .iter()
            .map(|r| match &r.data {
                Rdata::Srv { port, target, .. } => (*port, target.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                (
                    8080,
                    "db-0.cluster-a.db.shop.svc.clusterset.local".to_owned()
                ),
                (
                    8080,
                    "db-0.cluster-b.db.shop.svc.clusterset.local".to_owned()
                ),
                (
                    8080,
                    "10-200-2-10.cluster-b.db.shop.svc.clusterset.local".to_owned()
                ),
            ],
            "one per ready endpoint, on the pods' port from the slice"
        );
        // No ready endpoint anywhere: the specification says NXDOMAIN.
        assert_eq!(
            z.answer("empty.shop.svc.clusterset.local", QueryType::A)
                .rcode,
            Rcode::NxDomain
        );
    }

    #[test]
    fn the_zone_is_added_to_a_corefile_once_and_never_replaces_an_admins_block() {
        let kubeadm = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf\n    reload\n}\n";
        let added = corefile_with_clusterset(kubeadm, "10.96.7.7").expect("added");
        assert!(added.starts_with(kubeadm.trim_end()), "{added}");
        assert!(
            added.ends_with("clusterset.local:53 {\n    errors\n    forward . 10.96.7.7:53\n}\n"),
            "{added}"
        );
        assert_eq!(corefile_with_clusterset(&added, "10.96.7.7"), None, "once");
        let admins = format!("{kubeadm}clusterset.local {{\n    forward . 192.0.2.53\n}}\n");
        assert_eq!(corefile_with_clusterset(&admins, "10.96.7.7"), None);
        for shared in [
            format!("{kubeadm}cluster.local clusterset.local:53 {{\n}}\n"),
            format!("{kubeadm}dns://clusterset.local.:53 {{\n}}\n"),
        ] {
            assert_eq!(
                corefile_with_clusterset(&shared, "10.96.7.7"),
                None,
                "{shared}"
            );
        }
        // A zone that merely starts with the name is another zone.
        let other = format!("{kubeadm}clusterset.localdomain:53 {{\n}}\n");
        assert!(corefile_with_clusterset(&other, "10.96.7.7").is_some());
    }

    #[test]
    fn names_outside_the_imports_do_not_exist_and_other_zones_are_refused() {
        let z = zone();
        assert_eq!(
            z.answer("nope.shop.svc.clusterset.local", QueryType::A)
                .rcode,
            Rcode::NxDomain
        );
        assert_eq!(
            z.answer("shop.svc.clusterset.local", QueryType::A).rcode,
            Rcode::NoError
        );
        assert_eq!(
            z.answer("other.svc.clusterset.local", QueryType::A).rcode,
            Rcode::NxDomain
        );
        assert_eq!(
            z.answer("web.shop.svc.cluster.local", QueryType::A).rcode,
            Rcode::Refused
        );
        assert_eq!(
            z.answer("clusterset.local.evil", QueryType::A).rcode,
            Rcode::Refused
        );
        let version = z.answer("dns-version.clusterset.local", QueryType::Txt);
        assert_eq!(data(&version), vec![Rdata::Txt("1.0.0".into())]);
        assert_eq!(
            data(&z.answer("clusterset.local", QueryType::Soa)),
            vec![Rdata::Soa { serial: 7 }]
        );
    }
}
