//! Multi-cluster services as pure functions: what a member's exported
//! Service offers to other members, how the exports of one name merge into one import (and which
//! conflict), and which backend addresses each importing member's data plane lists so that it
//! spreads traffic by the active weights.
//!
//! The data plane is kube-proxy (or anything that reads EndpointSlices), which spreads connections
//! evenly over the endpoints it sees and keys them by address and port: listing an address twice
//! counts once. A weight can therefore only be carried by *how many* distinct backend addresses of
//! a member are listed. A member's backends are the addresses another cluster reaches its Service
//! on: its load balancer's ingress addresses, else each ready node's InternalIP with the node port.
//! [`endpoint_counts`] picks, per member, how many of them to list so that the shares come as close
//! to the active weights as those addresses allow; a Gateway API data plane gets the exact weights.
//!
//! An exporting member is the exception in its own data plane: kube-proxy translates a connection
//! once, so a connection it sent from a node to that node's own address and node port would never
//! be translated again to a pod, and is refused. In the slices written on the exporting member
//! itself, its own backends are its ready pod endpoints ([`local_backends`], [`listed_in`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::NodeWeight;

pub mod dns;

/// Label on every object the hub server writes for a multi-cluster service (on the hub and on the
/// members): the exported name. Clean-up finds its objects by it.
pub const SERVICE_LABEL: &str = "multicluster.dev/multi-cluster-service";
/// The value of `endpointslice.kubernetes.io/managed-by` on the EndpointSlices the hub writes, so
/// the members' EndpointSlice controllers leave them alone.
pub const ENDPOINTSLICE_MANAGER: &str = "multicluster.dev";
/// The MCS API's label naming the cluster an EndpointSlice's endpoints come from.
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";
/// The MCS API's label on an EndpointSlice naming the multi-cluster service (its ServiceImport).
pub const MCS_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// The field manager of everything the multi-cluster service loop writes.
pub const FIELD_MANAGER: &str = "multicluster-services";

/// The Multi-Cluster Services API resource of `kind` (`ServiceExport`, `ServiceImport`) in the
/// version this project reads and writes; no Rust types ship for it.
pub fn mcs_api_resource(kind: &str) -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "multicluster.x-k8s.io",
        "v1beta1",
        kind,
    ))
}

/// One port of a multi-cluster service, as every exporter must agree on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// One address another cluster reaches an exported Service on, with the port to use for each of
/// the service's port names (a node port differs from the service port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: Ipv4Addr,
    /// The node behind the address, when it is a node address (not a load balancer's).
    pub node: Option<String>,
    pub ports: BTreeMap<String, i32>,
    /// A pod endpoint's hostname (a StatefulSet pod's name under a headless Service).
    pub hostname: Option<String>,
}

/// What one member exports under a name.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub member: String,
    /// When the `ServiceExport` was created (RFC 3339): the oldest export wins a conflict, as the
    /// MCS API specifies.
    pub created: String,
    pub ports: Vec<ServicePort>,
    /// The addresses other members reach it on, or why there are none.
    pub backends: Result<Vec<Backend>, String>,
    /// Whether the export may be imported at all (the MCS API's `Valid` condition).
    pub valid: Result<(), Invalid>,
    /// The Service's properties a ServiceImport carries.
    pub properties: ServiceProperties,
}

/// The properties of an exported Service that the MCS API carries to its ServiceImport, as the
/// Service spells them (`None`: the Service leaves it unset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceProperties {
    /// `None` or `ClientIP`.
    pub session_affinity: Option<String>,
    /// `spec.sessionAffinityConfig` as written (its `clientIP.timeoutSeconds`).
    pub session_affinity_config: Option<serde_json::Value>,
    /// `Cluster` or `Local`.
    pub internal_traffic_policy: Option<String>,
    /// For instance `PreferClose`.
    pub traffic_distribution: Option<String>,
    /// A headless Service (`clusterIP: None`): imported as type `Headless`, with no clusterset IP;
    /// other members reach its pods' own addresses.
    pub headless: bool,
    /// The ServiceExport's `spec.exportedLabels`: carried to the ServiceImport.
    pub exported_labels: BTreeMap<String, String>,
    /// The ServiceExport's `spec.exportedAnnotations`: carried to the ServiceImport.
    pub exported_annotations: BTreeMap<String, String>,
}

impl ServiceProperties {
    /// Takes the labels and annotations a ServiceExport asks to export (`spec.exportedLabels`,
    /// `spec.exportedAnnotations`).
    pub fn with_exported(mut self, export_spec: &serde_json::Value) -> Self {
        let map = |v: &serde_json::Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default()
        };
        self.exported_labels = map(&export_spec["exportedLabels"]);
        self.exported_annotations = map(&export_spec["exportedAnnotations"]);
        self
    }

    /// The MCS API's conflict reasons on which `self` differs from `winner`, each with what
    /// differs (`winner`'s value is the one imported).
    fn differences(&self, winner: &ServiceProperties) -> Vec<(&'static str, String)> {
        let show = |v: &dyn std::fmt::Debug| format!("{v:?}");
        let mut out = Vec::new();
        let mut check =
            |differs: bool, reason: &'static str, field: &str, mine: String, theirs: String| {
                if differs {
                    out.push((
                        reason,
                        format!("{field} {mine} (the oldest export has {theirs})"),
                    ));
                }
            };
        let kind = |headless: bool| if headless { "Headless" } else { "ClusterSetIP" };
        check(
            self.headless != winner.headless,
            "TypeConflict",
            "type",
            kind(self.headless).to_owned(),
            kind(winner.headless).to_owned(),
        );
        check(
            self.session_affinity != winner.session_affinity,
            "SessionAffinityConflict",
            "sessionAffinity",
            show(&self.session_affinity),
            show(&winner.session_affinity),
        );
        check(
            self.session_affinity_config != winner.session_affinity_config,
            "SessionAffinityConfigConflict",
            "sessionAffinityConfig",
            show(&self.session_affinity_config),
            show(&winner.session_affinity_config),
        );
        check(
            self.internal_traffic_policy != winner.internal_traffic_policy,
            "InternalTrafficPolicyConflict",
            "internalTrafficPolicy",
            show(&self.internal_traffic_policy),
            show(&winner.internal_traffic_policy),
        );
        check(
            self.traffic_distribution != winner.traffic_distribution,
            "TrafficDistributionConflict",
            "trafficDistribution",
            show(&self.traffic_distribution),
            show(&winner.traffic_distribution),
        );
        check(
            self.exported_labels != winner.exported_labels,
            "LabelsConflict",
            "exportedLabels",
            show(&self.exported_labels),
            show(&winner.exported_labels),
        );
        check(
            self.exported_annotations != winner.exported_annotations,
            "AnnotationsConflict",
            "exportedAnnotations",
            show(&self.exported_annotations),
            show(&winner.exported_annotations),
        );
        out
    }
}

/// The properties of `service` a ServiceImport carries.
pub fn properties_of(service: &Service) -> ServiceProperties {
    let Some(spec) = service.spec.as_ref() else {
        return ServiceProperties::default();
    };
    ServiceProperties {
        session_affinity: spec.session_affinity.clone(),
        session_affinity_config: spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok()),
        internal_traffic_policy: spec.internal_traffic_policy.clone(),
        traffic_distribution: spec.traffic_distribution.clone(),
        headless: spec.cluster_ip.as_deref() == Some("None"),
        ..ServiceProperties::default()
    }
}

/// Why an export is not valid, with the MCS API's reason for its `Valid=False` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `NoService` or `InvalidServiceType`.
    pub reason: &'static str,
    pub message: String,
}

/// Whether the Service an export names can be exported: it must exist, and not be an
/// `ExternalName` Service (a DNS alias, with no endpoints to import), as the MCS API says.
pub fn validity(
    service: Option<&Service>,
    member: &str,
    ns: &str,
    name: &str,
) -> Result<(), Invalid> {
    let Some(service) = service else {
        return Err(Invalid {
            reason: "NoService",
            message: format!(
                "{MISSING_SERVICE} {ns}/{name} exists on {member}: create it, or delete the ServiceExport"
            ),
        });
    };
    match service.spec.as_ref().and_then(|s| s.type_.as_deref()) {
        Some("ExternalName") => Err(Invalid {
            reason: "InvalidServiceType",
            message: format!(
                "Service {ns}/{name} on {member} is of type ExternalName, which the Multi-Cluster Services API does not export; nothing is imported from it"
            ),
        }),
        _ => Ok(()),
    }
}

/// The ports a Service exports, in a stable order.
pub fn ports_of(service: &Service) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    ports.sort();
    ports
}

/// A node with this label (any value) serves no node ports (no kube-proxy runs for it) and is no
/// backend of a multi-cluster service. Ours, not Kubernetes'
/// `node.kubernetes.io/exclude-from-external-load-balancers`: kubeadm and kind put that one on
/// control-plane nodes, which do serve node ports and may be a member's only node.
pub const NO_NODE_PORTS_LABEL: &str = "multicluster.dev/no-node-ports";

/// The addresses other clusters reach `service` on: its load balancer's ingress IPs (with the
/// service ports), else the InternalIP of every ready node (with the node ports) that is not
/// labelled [`NO_NODE_PORTS_LABEL`]. A ClusterIP-only Service
/// is reachable inside its own cluster only, which is the error.
pub fn backends_of(service: &Service, nodes: &[Node]) -> Result<Vec<Backend>, String> {
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let ingress: Vec<Ipv4Addr> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    if !ingress.is_empty() {
        let by_name: BTreeMap<String, i32> = ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect();
        return Ok(ingress
            .into_iter()
            .map(|address| Backend {
                address,
                node: None,
                ports: by_name.clone(),
                hostname: None,
            })
            .collect());
    }
    let node_ports: BTreeMap<String, i32> = ports
        .iter()
        .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.node_port?)))
        .collect();
    if node_ports.is_empty() || node_ports.len() < ports.len() {
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        return Err(format!(
            "Service is {kind} without a node port on every port and has no load-balancer address, so no other \
             cluster can reach it: make it type NodePort or LoadBalancer"
        ));
    }
    let mut backends: Vec<Backend> = nodes
        .iter()
        .filter(|n| crate::members::health::node_is_ready(n))
        .filter(|n| {
            !n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(NO_NODE_PORTS_LABEL))
        })
        .filter_map(|n| {
            let address = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some(Backend {
                address,
                node: n.metadata.name.clone(),
                ports: node_ports.clone(),
                hostname: None,
            })
        })
        .collect();
    backends.sort_by_key(|b| b.address);
    if backends.is_empty() {
        return Err(format!(
            "no ready node with an InternalIP address carries the Service's node ports (nodes \
             labelled {NO_NODE_PORTS_LABEL} do not count)"
        ));
    }
    Ok(backends)
}

/// The ready pod endpoints of an exported Service in its own cluster, from the EndpointSlices that
/// cluster's endpointslice controller keeps for it: how the exporting member itself reaches its
/// pods through the multi-cluster VIP. Each carries the slice's port numbers (the pods' ports) by
/// port name; an endpoint without a `ready` condition is ready, as the EndpointSlice API says.
pub fn local_backends(slices: &[EndpointSlice]) -> Vec<Backend> {
    let mut out: Vec<Backend> = slices
        .iter()
        .filter(|s| s.address_type == "IPv4")
        .flat_map(|slice| {
            let ports: BTreeMap<String, i32> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port?)))
                .collect();
            slice
                .endpoints
                .iter()
                .flatten()
                .filter(|e| endpoint_ready(e))
                .filter_map(move |e| {
                    Some(Backend {
                        address: e.addresses.first()?.parse().ok()?,
                        node: e.node_name.clone(),
                        ports: ports.clone(),
                        hostname: e.hostname.clone(),
                    })
                })
        })
        .collect();
    out.sort_by_key(|b| b.address);
    out.dedup_by_key(|b| b.address);
    out
}

/// Whether an EndpointSlice endpoint is ready: without a `ready` condition it is, as the
/// EndpointSlice API says.
pub fn endpoint_ready(endpoint: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false)
}

/// The backends `member` lists in its own data plane: as [`listed_backends`], but its own entries
/// replaced by as many of its ready pod endpoints (`local`, at most as many as it lists now, so
/// that its share of the traffic stays what the weights gave it).
pub fn listed_in(
    listed: &BTreeMap<String, Vec<Backend>>,
    member: &str,
    local: &[Backend],
) -> BTreeMap<String, Vec<Backend>> {
    let mut out = listed.clone();
    if let Some(own) = out.get_mut(member) {
        let count = own.len();
        *own = local.iter().take(count).cloned().collect();
    }
    out
}

/// The exports of one name, merged as the MCS API asks: the union of their ports (by name; for a
/// name exported differently, the oldest export's port), the oldest export's properties, which
/// ports each member serves, and what the exports disagree on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged {
    pub ports: Vec<ServicePort>,
    /// The oldest valid export's properties (the MCS API: the oldest export's value wins).
    pub properties: ServiceProperties,
    /// Member → the names of the imported ports it serves: those it exports exactly as imported.
    /// Traffic for a port goes only to the members that serve it.
    pub serving_ports: BTreeMap<String, Vec<String>>,
    /// Member → the ports it exports differently from the older export that set them (it serves
    /// its other ports).
    pub conflicts: BTreeMap<String, String>,
    /// Properties on which the valid exports disagree: each MCS conflict reason once, with what
    /// differs. The oldest export's value is imported and every export keeps serving; every
    /// export of the name reports these (the MCS API asks for the condition on all of them).
    pub property_conflicts: Vec<(&'static str, String)>,
}

/// How a port reads in messages: `http:80/TCP`, or `80/TCP` unnamed.
fn show_port(p: &ServicePort) -> String {
    let name = if p.name.is_empty() {
        String::new()
    } else {
        format!("{}:", p.name)
    };
    format!("{name}{}/{}", p.port, p.protocol)
}

/// Merges the exports of one name. Exports are taken oldest first (then by member name, for a
/// stable result): each port name is set by the first export that has it, so the import's ports
/// are the union of the exporters'; an export whose port of a name differs (number, protocol or
/// application protocol) from the one imported conflicts on it, and serves its other ports.
pub fn merge(exports: &[Export]) -> Merged {
    // Invalid exports take no part: they neither set nor dispute the ports.
    let mut by_age: Vec<&Export> = exports.iter().filter(|e| e.valid.is_ok()).collect();
    by_age.sort_by(|a, b| (&a.created, &a.member).cmp(&(&b.created, &b.member)));
    let Some(oldest) = by_age.first() else {
        return Merged::default();
    };
    let mut merged = Merged {
        properties: oldest.properties.clone(),
        ..Merged::default()
    };
    // Port name → the member whose export set it.
    let mut set_by: BTreeMap<&str, &str> = BTreeMap::new();
    for export in &by_age {
        let mut served = Vec::new();
        let mut differing = Vec::new();
        for port in &export.ports {
            match merged.ports.iter().find(|p| p.name == port.name) {
                None => {
                    merged.ports.push(port.clone());
                    set_by.insert(&port.name, &export.member);
                    served.push(port.name.clone());
                }
                Some(imported) if imported == port => served.push(port.name.clone()),
                Some(imported) => differing.push(format!(
                    "{} differs from {} exported first by {}",
                    show_port(port),
                    show_port(imported),
                    set_by.get(port.name.as_str()).copied().unwrap_or_default()
                )),
            }
        }
        if !differing.is_empty() {
            let serves = if served.is_empty() {
                "it serves nothing until they agree".to_owned()
            } else {
                format!("it serves its other ports ({})", served.join(", "))
            };
            merged.conflicts.insert(
                export.member.clone(),
                format!("port {}; {serves}", differing.join(", port ")),
            );
        }
        if !served.is_empty() {
            merged.serving_ports.insert(export.member.clone(), served);
        }
    }
    for export in by_age.iter().skip(1) {
        for (reason, what) in export.properties.differences(&oldest.properties) {
            let what = format!("{}: {what}", export.member);
            match merged
                .property_conflicts
                .iter_mut()
                .find(|(r, _)| *r == reason)
            {
                Some((_, all)) => {
                    all.push_str("; ");
                    all.push_str(&what);
                }
                None => merged.property_conflicts.push((reason, what)),
            }
        }
    }
    merged
}

impl Merged {
    /// Members serving at least one imported port, in name order.
    pub fn serving(&self) -> Vec<String> {
        self.serving_ports.keys().cloned().collect()
    }
}

/// Orders a member's backends by their node's priority (lower first), then weight (higher
/// first), and drops those whose node has weight 0. Nodes the policy does not name have
/// priority 0 and weight 100, like a member.
pub fn rank_backends(backends: &[Backend], node_weights: &[NodeWeight]) -> Vec<Backend> {
    let of = |node: Option<&str>| {
        node.and_then(|n| node_weights.iter().find(|w| w.name == n))
            .map_or((0, 100), |w| (w.priority, w.weight))
    };
    let mut ranked: Vec<Backend> = backends
        .iter()
        .filter(|b| of(b.node.as_deref()).1 > 0)
        .cloned()
        .collect();
    ranked.sort_by_key(|b| {
        let (priority, weight) = of(b.node.as_deref());
        (priority, std::cmp::Reverse(weight), b.address)
    });
    ranked
}

/// How many backend addresses of each member to list so that an even spread over all listed
/// addresses comes closest to the members' `weights`, given how many addresses each member has
/// (`available`). Tries every total and keeps the one whose shares are closest (total variation
/// distance), preferring more addresses on a tie, so equal weights list every address that keeps
/// the shares equal. Members with weight 0 get 0; nothing at all when no weight is positive.
pub fn endpoint_counts(
    weights: &BTreeMap<String, u32>,
    available: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    let members: Vec<(&String, u64, usize)> = weights
        .iter()
        .map(|(m, w)| (m, u64::from(*w), available.get(m).copied().unwrap_or(0)))
        .filter(|(_, w, a)| *w > 0 && *a > 0)
        .collect();
    let mut best: BTreeMap<String, usize> = weights.keys().map(|m| (m.clone(), 0)).collect();
    let total_weight: u64 = members.iter().map(|(_, w, _)| w).sum();
    let total_available: usize = members.iter().map(|(_, _, a)| a).sum();
    if total_weight == 0 {
        return best;
    }
    let mut best_distance = f64::INFINITY;
    for k in 1..=total_available {
        let counts = apportion(k, &members, total_weight);
        let listed: usize = counts.iter().sum();
        if listed == 0 {
            continue;
        }
        let distance: f64 = members
            .iter()
            .zip(&counts)
            .map(|((_, w, _), c)| {
                (*c as f64 / listed as f64 - *w as f64 / total_weight as f64).abs()
            })
            .sum::<f64>()
            / 2.0;
        // Ties go to the larger total: more addresses, the same shares.
        if distance <= best_distance + 1e-9 {
            best_distance = distance;
            for ((m, _, _), c) in members.iter().zip(&counts) {
                best.insert((*m).clone(), *c);
            }
        }
    }
    best
}

/// Largest-remainder apportionment of `k` addresses by weight, each member capped at what it has
/// (what a capped member cannot take goes to the others in remainder order).
fn apportion(k: usize, members: &[(&String, u64, usize)], total_weight: u64) -> Vec<usize> {
    let mut counts: Vec<usize> = members
        .iter()
        .map(|(_, w, a)| ((k as u64 * w / total_weight) as usize).min(*a))
        .collect();
    let mut order: Vec<usize> = (0..members.len()).collect();
    // Largest remainder first, then heavier, then name: deterministic.
    order.sort_by(|&i, &j| {
        let rem = |i: usize| (k as u64 * members[i].1) % total_weight;
        rem(j)
            .cmp(&rem(i))
            .then(members[j].1.cmp(&members[i].1))
            .then(members[i].0.cmp(members[j].0))
    });
    let mut left = k.saturating_sub(counts.iter().sum());
    while left > 0 {
        let mut gave = false;
        for &i in &order {
            if left > 0 && counts[i] < members[i].2 {
                counts[i] += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    counts
}

/// A Kubernetes name for an object derived from `base` and `suffix`, at most 63 characters: cut
/// and made unique with a hash of the whole when too long.
pub fn derived_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = crate::vip::seed_for(base, suffix);
    let tag = format!("{:08x}", hash as u32);
    let keep = 63 - tag.len() - 1;
    format!("{}-{tag}", full[..keep].trim_end_matches('-'))
}

/// The selector-less Service each importing member gets for a multi-cluster service: its name.
/// It cannot be the exported name, which may already be the member's own (selector) Service.
pub fn imported_service_name(name: &str) -> String {
    derived_name(name, "multicluster")
}

/// The weights one multi-cluster service is spread by, over the members whose export serves it,
/// and the node weights of each. A `TrafficPolicy` in the service's namespace that lists the
/// service decides (its active weights, which the hub recomputes on every health transition; a
/// member it does not list gets nothing); without one, every healthy exporter gets its
/// `MemberCluster` weight.
pub fn weights_for(
    namespace: &str,
    name: &str,
    policies: &[&crate::api::TrafficPolicy],
    serving: &[String],
    members: &BTreeMap<String, crate::api::MemberCluster>,
) -> Steering {
    let policy = policies
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.spec.services.iter().any(|s| s == name)
        })
        .min_by_key(|p| p.metadata.name.clone());
    let mut out = Steering::default();
    match policy {
        Some(p) => {
            out.policy = p.metadata.name.clone();
            out.gateway = p.spec.gateway.clone();
            let active = p.status.as_ref().map(|s| &s.active_weights);
            for m in serving {
                let weight = active.and_then(|a| a.get(m)).copied().unwrap_or(0);
                out.weights.insert(m.clone(), weight);
                if let Some(tm) = p.spec.members.iter().find(|tm| &tm.name == m) {
                    out.node_weights.insert(m.clone(), tm.nodes.clone());
                }
            }
        }
        None => {
            for m in serving {
                let healthy = members.get(m).is_some_and(|c| {
                    c.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Healthy" && c.status == "True")
                    })
                });
                let weight = members.get(m).map_or(0, |c| c.spec.weight);
                out.weights
                    .insert(m.clone(), if healthy { weight } else { 0 });
            }
        }
    }
    out
}

/// What steers one multi-cluster service: the policy (if any), member weights and node weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steering {
    pub policy: Option<String>,
    pub weights: BTreeMap<String, u32>,
    pub node_weights: BTreeMap<String, Vec<NodeWeight>>,
    /// Where the policy wants an `HTTPRoute` with the exact weights.
    pub gateway: Option<crate::api::GatewayParent>,
}

/// Each serving member's backends in the order they are listed (node weights applied).
pub fn ranked_backends(
    steering: &Steering,
    backends: &BTreeMap<String, Vec<Backend>>,
) -> BTreeMap<String, Vec<Backend>> {
    backends
        .iter()
        .map(|(m, b)| {
            let nodes = steering.node_weights.get(m).map_or(&[][..], Vec::as_slice);
            (m.clone(), rank_backends(b, nodes))
        })
        .collect()
}

/// The backends each serving member lists now on an even-spreading data plane: its ranked
/// backends, as many as [`endpoint_counts`] gives it.
pub fn listed_backends(
    steering: &Steering,
    ranked: &BTreeMap<String, Vec<Backend>>,
) -> BTreeMap<String, Vec<Backend>> {
    let available = ranked.iter().map(|(m, b)| (m.clone(), b.len())).collect();
    let counts = endpoint_counts(&steering.weights, &available);
    ranked
        .iter()
        .map(|(m, b)| {
            let n = counts.get(m).copied().unwrap_or(0);
            (m.clone(), b.iter().take(n).cloned().collect())
        })
        .collect()
}

/// The [`crate::keys::BACKENDS`] summary: `member=listed/available`, by member name.
pub fn backends_summary(
    listed: &BTreeMap<String, Vec<Backend>>,
    available: &BTreeMap<String, Vec<Backend>>,
) -> String {
    available
        .iter()
        .map(|(m, all)| {
            let n = listed.get(m).map_or(0, Vec::len);
            format!("{m}={n}/{}", all.len())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One multi-cluster service as every importing member gets it.
#[derive(Debug, Clone)]
pub struct Import<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub vip: Ipv4Addr,
    pub hostname: &'a str,
    pub ports: &'a [ServicePort],
    pub properties: &'a ServiceProperties,
    /// Serving member → the backends listed for it now (empty: none now).
    pub listed: &'a BTreeMap<String, Vec<Backend>>,
    /// Serving member → the names of the ports it serves ([`Merged::serving_ports`]).
    pub serving_ports: &'a BTreeMap<String, Vec<String>>,
    /// Member → its cluster ID (`MemberCluster.spec.clusterId`); a member without one is named
    /// by its member name.
    pub cluster_ids: &'a BTreeMap<String, String>,
}

impl Import<'_> {
    /// The cluster ID `member` is named by in the MCS objects.
    pub fn cluster_id<'m>(&'m self, member: &'m str) -> &'m str {
        self.cluster_ids.get(member).map_or(member, String::as_str)
    }
}

fn port_json(p: &ServicePort, port: i32) -> serde_json::Value {
    let mut v = serde_json::json!({"port": port, "protocol": p.protocol});
    if !p.name.is_empty() {
        v["name"] = p.name.clone().into();
    }
    if let Some(app) = &p.app_protocol {
        v["appProtocol"] = app.clone().into();
    }
    v
}

/// Puts the imported properties on a ServiceImport: the oldest export's exported labels and
/// annotations (ours, which find and route the import, are not theirs to replace), its session
/// affinity and config, internal traffic policy and traffic distribution.
fn carry_properties(spec: &mut serde_json::Value, properties: &ServiceProperties) {
    for (k, v) in &properties.exported_labels {
        if k != SERVICE_LABEL {
            spec["metadata"]["labels"][k] = v.clone().into();
        }
    }
    for (k, v) in &properties.exported_annotations {
        if k != crate::keys::VIP && k != crate::keys::HOSTNAME {
            spec["metadata"]["annotations"][k] = v.clone().into();
        }
    }
    for (field, value) in [
        (
            "sessionAffinity",
            properties.session_affinity.clone().map(Into::into),
        ),
        (
            "sessionAffinityConfig",
            properties.session_affinity_config.clone(),
        ),
        (
            "internalTrafficPolicy",
            properties.internal_traffic_policy.clone().map(Into::into),
        ),
        (
            "trafficDistribution",
            properties.traffic_distribution.clone().map(Into::into),
        ),
    ] {
        if let Some(value) = value {
            spec["spec"][field] = value;
        }
    }
}

/// The ports of a member's EndpointSlice: those of `ports` it serves, each with the number its
/// backends take it on (a node port, a pod's port), else the service port.
fn slice_ports(
    ports: &[ServicePort],
    served: Option<&Vec<String>>,
    backends: &[Backend],
) -> Vec<serde_json::Value> {
    ports
        .iter()
        .filter(|p| served.is_some_and(|names| names.contains(&p.name)))
        .map(|p| {
            let port = backends
                .first()
                .and_then(|b| b.ports.get(&p.name))
                .copied()
                .unwrap_or(p.port);
            port_json(p, port)
        })
        .collect()
}

/// The `ServiceImport` (spec and status) of a multi-cluster service, as the hub and every
/// importing member hold it.
pub fn service_import(import: &Import<'_>) -> (serde_json::Value, serde_json::Value) {
    let spec = serde_json::json!({
        "apiVersion": crate::vip::SERVICE_IMPORT_API_VERSION, "kind": "ServiceImport",
        "metadata": {"name": import.name, "namespace": import.namespace,
                     "labels": {SERVICE_LABEL: import.name},
                     "annotations": {crate::keys::VIP: import.vip.to_string(), crate::keys::HOSTNAME: import.hostname}},
        "spec": {"type": "ClusterSetIP", "ips": [import.vip.to_string()],
                 // The pool hands out IPv4 VIPs only, so the one family agrees with `ips`.
                 "ipFamilies": ["IPv4"],
                 "ports": import.ports.iter().map(|p| port_json(p, p.port)).collect::<Vec<_>>()}
    });
    let mut spec = spec;
    carry_properties(&mut spec, import.properties);
    let status = serde_json::json!({
        "apiVersion": crate::vip::SERVICE_IMPORT_API_VERSION, "kind": "ServiceImport",
        "metadata": {"name": import.name, "namespace": import.namespace},
        "status": {"clusters": import.listed.keys().map(|m| serde_json::json!({"cluster": m})).collect::<Vec<_>>()}
    });
    (spec, status)
}

/// The data-plane objects of a multi-cluster service on an importing member: a selector-less
/// Service whose routable address is the VIP (`spec.externalIPs`: kube-proxy, Cilium and others
/// route it on every node) and one EndpointSlice per serving member listing its backends now.
pub fn data_plane(import: &Import<'_>) -> Vec<serde_json::Value> {
    let service = imported_service_name(import.name);
    let mut out = vec![serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service, "namespace": import.namespace,
                     "labels": {SERVICE_LABEL: import.name},
                     "annotations": {crate::keys::VIP: import.vip.to_string(), crate::keys::HOSTNAME: import.hostname}},
        "spec": {"type": "ClusterIP", "externalIPs": [import.vip.to_string()],
                 "ports": import.ports.iter().map(|p| port_json(p, p.port)).collect::<Vec<_>>()}
    })];
    for (member, backends) in import.listed {
        out.push(endpoint_slice(
            import,
            &service,
            &derived_name(&service, member),
            member,
            backends,
        ));
    }
    out
}

fn endpoint_slice(
    import: &Import<'_>,
    service: &str,
    slice: &str,
    member: &str,
    backends: &[Backend],
) -> serde_json::Value {
    // Only the ports this member serves: kube-proxy sends a port's traffic to the endpoints of the
    // slices that list it, so a port exported differently goes only to the export imported.
    let ports = slice_ports(import.ports, import.serving_ports.get(member), backends);
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice, "namespace": import.namespace,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
                                MCS_SERVICE_NAME_LABEL: import.name,
                                SOURCE_CLUSTER_LABEL: import.cluster_id(member), SERVICE_LABEL: import.name}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": backends.iter().map(|b| serde_json::json!({
            "addresses": [b.address.to_string()], "conditions": {"ready": true}
        })).collect::<Vec<_>>()
    })
}

/// The import side of a headless multi-cluster service (the MCS API's type `Headless`): a
/// `ServiceImport` with no clusterset IP, and on every importing member one EndpointSlice per
/// serving exporter listing its ready pod endpoints (with their hostnames, as a StatefulSet's pods
/// have them) and the pods' ports it serves. Nothing routes a headless name: clients get the
/// endpoints' addresses from DNS and connect to them directly, which needs pod addresses routable
/// across the clusterset (the playground's are).
pub fn headless_objects(
    namespace: &str,
    name: &str,
    merged: &Merged,
    endpoints: &BTreeMap<String, Vec<Backend>>,
    cluster_ids: &BTreeMap<String, String>,
) -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
    let mut spec = serde_json::json!({
        "apiVersion": crate::vip::SERVICE_IMPORT_API_VERSION, "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace, "labels": {SERVICE_LABEL: name}},
        "spec": {"type": "Headless",
                 "ports": merged.ports.iter().map(|p| port_json(p, p.port)).collect::<Vec<_>>()}
    });
    carry_properties(&mut spec, &merged.properties);
    let status = serde_json::json!({
        "apiVersion": crate::vip::SERVICE_IMPORT_API_VERSION, "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"clusters": merged.serving_ports.keys().map(|m| serde_json::json!({"cluster": m})).collect::<Vec<_>>()}
    });
    let slices = merged
        .serving_ports
        .keys()
        .map(|member| {
            let listed = endpoints.get(member).map_or(&[][..], Vec::as_slice);
            let ports = slice_ports(&merged.ports, merged.serving_ports.get(member), listed);
            let cluster = cluster_ids.get(member).map_or(member.as_str(), String::as_str);
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": derived_name(&imported_service_name(name), member), "namespace": namespace,
                             "labels": {"endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
                                        MCS_SERVICE_NAME_LABEL: name,
                                        SOURCE_CLUSTER_LABEL: cluster, SERVICE_LABEL: name}},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": listed.iter().map(|b| {
                    let mut e = serde_json::json!({"addresses": [b.address.to_string()], "conditions": {"ready": true}});
                    if let Some(h) = &b.hostname {
                        e["hostname"] = h.clone().into();
                    }
                    e
                }).collect::<Vec<_>>()
            })
        })
        .collect();
    (spec, status, slices)
}

/// For a Gateway API data plane (the policy names a `Gateway`): one selector-less Service per
/// serving member listing all its ranked backends, and an `HTTPRoute` attached to the Gateway,
/// for the service's hostname, whose `backendRefs` send to those Services with the active weights
/// exactly (a Gateway splits by weight; it does not need the address-count approximation).
pub fn gateway_objects(
    import: &Import<'_>,
    gateway: &crate::api::GatewayParent,
    ranked: &BTreeMap<String, Vec<Backend>>,
    weights: &BTreeMap<String, u32>,
) -> Vec<serde_json::Value> {
    let service = imported_service_name(import.name);
    let mut out = Vec::new();
    let mut backend_refs = Vec::new();
    let first_port = import.ports.first().map_or(80, |p| p.port);
    for (member, backends) in ranked {
        let per_member = derived_name(&service, member);
        out.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": per_member, "namespace": import.namespace,
                         "labels": {SERVICE_LABEL: import.name, SOURCE_CLUSTER_LABEL: import.cluster_id(member)}},
            "spec": {"type": "ClusterIP",
                     "ports": import.ports.iter().map(|p| port_json(p, p.port)).collect::<Vec<_>>()}
        }));
        out.push(endpoint_slice(
            import,
            &per_member,
            &derived_name(&per_member, "all"),
            member,
            backends,
        ));
        backend_refs.push(serde_json::json!({
            "name": per_member, "port": first_port,
            "weight": weights.get(member).copied().unwrap_or(0)
        }));
    }
    let mut parent = serde_json::json!({"name": gateway.name});
    if let Some(ns) = &gateway.namespace {
        parent["namespace"] = ns.clone().into();
    }
    if let Some(section) = &gateway.section_name {
        parent["sectionName"] = section.clone().into();
    }
    out.push(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": service, "namespace": import.namespace,
                     "labels": {SERVICE_LABEL: import.name}},
        "spec": {"parentRefs": [parent], "hostnames": [import.hostname],
                 "rules": [{"backendRefs": backend_refs}]}
    }));
    out
}

/// What the exports of a name disagree on, as the MCS API's Conflict condition says it on every
/// export of the name: each reason once, comma-joined, and what differs. `None`: they agree.
pub fn conflict(merged: &Merged) -> Option<(String, String)> {
    let mut reasons: Vec<&str> = Vec::new();
    let mut what: Vec<String> = Vec::new();
    if !merged.conflicts.is_empty() {
        reasons.push("PortConflict");
        what.extend(
            merged
                .conflicts
                .iter()
                .map(|(m, why)| format!("{m}: {why}")),
        );
    }
    for (reason, differs) in &merged.property_conflicts {
        reasons.push(reason);
        what.push(differs.clone());
    }
    (!reasons.is_empty()).then(|| {
        (
            reasons.join(","),
            format!(
                "exports disagree: {}; the oldest export's values are imported",
                what.join("; ")
            ),
        )
    })
}

/// A condition the loop wants on a `ServiceExport`: type, status, reason, message.
pub type Wanted = (&'static str, bool, String, String);

/// The conditions of one member's export: `Valid` (it names an existing Service), `Conflict`
/// (its ports disagree with the oldest export) and `Ready` (the service has a VIP and this
/// member's backends are reachable from the other members).
pub fn export_conditions(
    member: &str,
    export: &Export,
    merged: &Merged,
    vip: Result<Option<Ipv4Addr>, &str>,
) -> Vec<Wanted> {
    let mut out = Vec::new();
    if let Err(invalid) = &export.valid {
        out.push((
            "Valid",
            false,
            invalid.reason.to_owned(),
            invalid.message.clone(),
        ));
        out.push((
            "Conflict",
            false,
            "NoConflicts".to_owned(),
            "not exported, so in conflict with no other export".to_owned(),
        ));
        out.push((
            "Ready",
            false,
            "Pending".to_owned(),
            "not exported while the export is not valid".to_owned(),
        ));
        return out;
    }
    out.push((
        "Valid",
        true,
        "Valid".to_owned(),
        "the exported Service exists and may be exported".to_owned(),
    ));
    // The MCS API asks for the Conflict condition on every export of the name, whichever one
    // differs.
    out.push(match conflict(merged) {
        None => (
            "Conflict",
            false,
            "NoConflicts".to_owned(),
            "its ports and properties agree with every other export".to_owned(),
        ),
        Some((reasons, message)) => ("Conflict", true, reasons, message),
    });
    out.push(match (&export.backends, vip) {
        // Both said: a missing VIP is not to hide behind the missing backends.
        (Err(e), Err(v)) => ("Ready", false, "Failed".to_owned(), format!("{e}; {v}")),
        (Err(e), _) => ("Ready", false, "Failed".to_owned(), e.clone()),
        (_, Err(e)) => ("Ready", false, "Pending".to_owned(), e.to_owned()),
        _ if !merged.serving_ports.contains_key(member) => (
            "Ready",
            false,
            "Failed".to_owned(),
            "serves nothing while every port it exports conflicts with an older export".to_owned(),
        ),
        (Ok(b), Ok(Some(vip))) => (
            "Ready",
            true,
            "Ready".to_owned(),
            format!(
                "reachable from other members on {} address(es); multi-cluster VIP {vip}",
                b.len()
            ),
        ),
        (Ok(b), Ok(None)) => (
            "Ready",
            true,
            "Ready".to_owned(),
            format!(
                "headless: other members reach its {} ready endpoint(s) by their own addresses",
                b.len()
            ),
        ),
    });
    out
}

/// The start of the message when an export names a Service that does not exist.
pub const MISSING_SERVICE: &str = "no Service";

#[cfg(test)]
mod tests;
