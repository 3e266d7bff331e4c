//! The playground's network when it has nodes: one Linux bridge in the machine's network namespace,
//! and every node in a network namespace of its own, joined to that bridge by a veth pair.
//!
//! ```text
//!   root namespace            bridge mcpg<K>  10.<200+K>.0.1/24   (the API servers listen here)
//!     │ veth mcpg<K>n<N>
//!   node namespace mcpg<K>-n<N>: eth0 10.<200+K>.0.<10+N>/24, default route via the bridge
//!     │ bridge cni0 10.<200+K>.<N>.1/24 (the CNI bridge plugin)
//!   pod namespaces: 10.<200+K>.<N>.x
//! ```
//!
//! Every address is in `10.<200+K>.0.0/16`, where K is the first index whose block no address or
//! route of the machine overlaps and whose bridge name is free: creating the bridge claims K, so
//! two playgrounds starting at the same time never share one. Each node namespace routes every
//! other node's pod range via that node's address, so pods reach pods and NodePorts of every cluster
//! of the playground. The machine's own routing table gets one route per pod range, on the bridge
//! (so that replies from the API servers reach pods); deleting the bridge removes them. No sysctl
//! and no firewall rule of the machine's namespace is changed: forwarding is switched on inside the
//! node namespaces only.
//!
//! The plan is a pure function of K and the clusters' node counts ([`plan`]); [`create`] and
//! [`remove`] carry it out with `ip`.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The first block index tried; `10.200.0.0/16` and up are rarely used by cloud VPCs and Docker.
const FIRST_OCTET: u8 = 200;
/// How many playgrounds with nodes can run side by side on one machine.
const MAX_INDEX: u8 = 50;

/// A bridge with its gateway address, and every node's place on it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPlan {
    pub index: u8,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub nodes: Vec<NodeNetwork>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// The playground cluster the node belongs to.
    pub cluster: String,
    /// The Node's name: `<cluster>-node-<i>`.
    pub node: String,
    /// The network namespace (`ip netns`) the node's processes run in.
    pub netns: String,
    /// The veth end on the bridge, in the machine's namespace.
    pub host_link: String,
    /// The node's InternalIP, on eth0 in its namespace.
    pub address: Ipv4Addr,
    /// The node's pod range (a /24), served by its CNI bridge.
    pub pod_cidr: String,
}

impl NodeNetwork {
    /// The CNI bridge's own address in the pod range: the pods' gateway.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        let net: Ipv4Addr = self
            .pod_cidr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let [a, b, c, _] = net.octets();
        Ipv4Addr::new(a, b, c, 1)
    }
}

impl NetworkPlan {
    /// The whole block this playground owns, `10.<200+K>.0.0/16`.
    pub fn block(&self) -> String {
        format!("10.{}.0.0/16", FIRST_OCTET + self.index)
    }

    pub fn nodes_of<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a NodeNetwork> {
        self.nodes.iter().filter(move |n| n.cluster == cluster)
    }
}

/// The addresses and names for block `index` and `nodes` nodes for each named cluster, numbered
/// across the playground in the order given.
pub fn plan(index: u8, clusters: &[(String, u32)]) -> NetworkPlan {
    let second = FIRST_OCTET + index;
    let nodes = clusters
        .iter()
        .flat_map(|(cluster, count)| (1..=*count).map(move |i| (cluster.clone(), i)))
        .enumerate()
        .map(|(n, (cluster, i))| {
            // 1-based across the playground: the pod range's third octet and the address's last.
            let n = n as u8 + 1;
            NodeNetwork {
                node: format!("{cluster}-node-{i}"),
                cluster,
                netns: format!("mcpg{index}-n{n}"),
                host_link: format!("mcpg{index}n{n}"),
                address: Ipv4Addr::new(10, second, 0, 10 + n),
                pod_cidr: format!("10.{second}.{n}.0/24"),
            }
        })
        .collect();
    NetworkPlan {
        index,
        bridge: format!("mcpg{index}"),
        gateway: Ipv4Addr::new(10, second, 0, 1),
        nodes,
    }
}

/// Nodes one playground can hold: the node addresses share a /24 with the gateway, after `.10`.
pub const MAX_NODES: u32 = 240;

/// Whether `10.<200+index>.0.0/16` overlaps any of the `ip -4 -o addr` / `ip -4 route` words given
/// (an address or a CIDR), so that the playground never shadows a network the machine uses.
pub fn block_in_use(index: u8, used: &[String]) -> bool {
    let second = FIRST_OCTET + index;
    used.iter().any(|word| {
        let (addr, len) = word.split_once('/').unwrap_or((word.as_str(), "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        // Two prefixes overlap when they agree on the shorter one's bits.
        let shorter = len.min(16);
        let mask = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - shorter)
        };
        // The default route (length 0) overlaps everything and shadows nothing.
        len != 0 && (u32::from(addr) & mask) == (u32::from(Ipv4Addr::new(10, second, 0, 0)) & mask)
    })
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2): install it, or use `local up --nodes 0`")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every IPv4 address and route destination of the machine's namespace.
fn used_networks() -> anyhow::Result<Vec<String>> {
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let routes = ip(&["-4", "route", "show", "table", "all"])?;
    let from_addrs = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1));
    let from_routes = routes.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
    });
    Ok(from_addrs.chain(from_routes).map(str::to_owned).collect())
}

/// Claims a free block (by creating its bridge) and builds the whole network of `clusters`.
/// On failure, what was created is removed again.
pub fn create(clusters: &[(String, u32)]) -> anyhow::Result<NetworkPlan> {
    #[cfg(unix)]
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "a playground with nodes creates network namespaces, a bridge and mounts, which needs \
             root: run `local up` as root (sudo), or start an API-only playground with `--nodes 0`"
        );
    }
    let total: u32 = clusters.iter().map(|(_, n)| n).sum();
    if total > MAX_NODES {
        bail!("a playground holds at most {MAX_NODES} nodes, {total} were asked for");
    }
    let used = used_networks()?;
    for index in 0..MAX_INDEX {
        if block_in_use(index, &used) {
            continue;
        }
        let plan = plan(index, clusters);
        // `ip link add` fails when the name exists: that is the claim on this index.
        if ip(&["link", "add", &plan.bridge, "type", "bridge"]).is_err() {
            continue;
        }
        return match build(&plan) {
            Ok(()) => Ok(plan),
            Err(e) => {
                remove(&plan);
                Err(e)
            }
        };
    }
    bail!(
        "no free address block for the playground's network: 10.{FIRST_OCTET}.0.0/16 to \
         10.{}.0.0/16 are all in use on this machine (other playgrounds, or your networks); \
         stop a playground with `kubectl multicluster local down`, or use `--nodes 0`",
        FIRST_OCTET + MAX_INDEX - 1
    )
}

fn build(plan: &NetworkPlan) -> anyhow::Result<()> {
    let gateway = format!("{}/24", plan.gateway);
    ip(&["addr", "add", &gateway, "dev", &plan.bridge])?;
    ip(&["link", "set", &plan.bridge, "up"])?;
    for node in &plan.nodes {
        ip(&["netns", "add", &node.netns])?;
        ip(&[
            "link",
            "add",
            &node.host_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &node.netns,
        ])?;
        ip(&["link", "set", &node.host_link, "master", &plan.bridge, "up"])?;
        let n = |args: &[&str]| {
            let mut all = vec!["-n", node.netns.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        };
        n(&["link", "set", "lo", "up"])?;
        n(&[
            "addr",
            "add",
            &format!("{}/24", node.address),
            "dev",
            "eth0",
        ])?;
        n(&["link", "set", "eth0", "up"])?;
        n(&["route", "add", "default", "via", &plan.gateway.to_string()])?;
        for other in plan.nodes.iter().filter(|o| o.netns != node.netns) {
            n(&[
                "route",
                "add",
                &other.pod_cidr,
                "via",
                &other.address.to_string(),
            ])?;
        }
        // Pods' replies from the API servers, which listen on the bridge's address.
        ip(&[
            "route",
            "add",
            &node.pod_cidr,
            "via",
            &node.address.to_string(),
            "dev",
            &plan.bridge,
        ])?;
        // The node forwards its pods' traffic; this sysctl is the namespace's own.
        sysctl_in(&node.netns, "net.ipv4.ip_forward", "1")?;
    }
    Ok(())
}

/// Sets a sysctl inside a node's network namespace (network sysctls are per namespace).
fn sysctl_in(netns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-q",
        "-w",
        &format!("{key}={value}"),
    ])
    .map(|_| ())
}

/// Removes what [`create`] made, ignoring what is already gone: every node namespace, the pod
/// namespaces whose veth peers sit on a node's CNI bridge, and the bridge (which takes its veths
/// and routes with it).
pub fn remove(plan: &NetworkPlan) -> Vec<String> {
    let mut removed = Vec::new();
    for node in &plan.nodes {
        for pod_netns in pod_namespaces(&node.netns) {
            if ip(&["netns", "delete", &pod_netns]).is_ok() {
                removed.push(pod_netns);
            }
        }
        if ip(&["netns", "delete", &node.netns]).is_ok() {
            removed.push(node.netns.clone());
        }
        let _ = ip(&["link", "delete", &node.host_link]);
    }
    if ip(&["link", "delete", &plan.bridge]).is_ok() {
        removed.push(plan.bridge.clone());
    }
    removed
}

/// The named network namespaces (containerd's `cni-…`) of the pods of the node in `netns`: those
/// the node namespace has an id for, which its pods' veth pairs gave it. Pods' namespaces are now
/// mounted under the node's containerd state directory (see `node`); this finds those of a
/// playground started by an earlier release, which put them in `/run/netns`.
pub fn pod_namespaces(netns: &str) -> Vec<String> {
    let Ok(ids) = ip(&["-n", netns, "netns", "list-id"]) else {
        return Vec::new();
    };
    pod_namespaces_from_list_id(&ids)
}

/// Parses `ip netns list-id` output: `nsid 0 (iproute2 netns name: cni-…)`.
fn pod_namespaces_from_list_id(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split("netns name: ").nth(1))
        .map(|name| name.trim_end_matches(')').trim().to_owned())
        .filter(|name| name.starts_with("cni-"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_numbered_across_the_playground_with_distinct_ranges() {
        let p = plan(
            3,
            &[
                ("hub".into(), 0),
                ("member-1".into(), 2),
                ("member-2".into(), 1),
            ],
        );
        assert_eq!(p.bridge, "mcpg3");
        assert_eq!(p.gateway, Ipv4Addr::new(10, 203, 0, 1));
        assert_eq!(p.block(), "10.203.0.0/16");
        let names: Vec<_> = p.nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(
            names,
            ["member-1-node-1", "member-1-node-2", "member-2-node-1"]
        );
        let ranges: Vec<_> = p.nodes.iter().map(|n| n.pod_cidr.as_str()).collect();
        assert_eq!(ranges, ["10.203.1.0/24", "10.203.2.0/24", "10.203.3.0/24"]);
        assert_eq!(p.nodes[2].address, Ipv4Addr::new(10, 203, 0, 13));
        assert_eq!(p.nodes[2].pod_gateway(), Ipv4Addr::new(10, 203, 3, 1));
        assert_eq!(p.nodes_of("member-1").count(), 2);
        // Linux limits interface names to 15 bytes.
        let widest = plan(MAX_INDEX - 1, &[("member-20".into(), MAX_NODES)]);
        assert!(widest.nodes.iter().all(|n| n.host_link.len() <= 15));
    }

    #[test]
    fn a_block_the_machine_uses_is_skipped() {
        let used: Vec<String> = ["127.0.0.1/8", "10.0.2.15/24", "default", "0.0.0.0/0"]
            .map(String::from)
            .to_vec();
        assert!(!block_in_use(0, &used));
        assert!(block_in_use(0, &["10.200.7.0/24".into()]));
        assert!(block_in_use(1, &["10.0.0.0/8".into()]), "a wider route");
        assert!(block_in_use(2, &["10.202.0.1".into()]), "a bare address");
        assert!(!block_in_use(2, &["10.203.0.0/16".into()]));
    }

    #[test]
    fn pod_namespaces_are_read_from_list_id() {
        let text = "nsid 0 (iproute2 netns name: cni-1b2c)\nnsid 1 \nnsid 2 (iproute2 netns name: mcpg0-n2)\n";
        assert_eq!(pod_namespaces_from_list_id(text), ["cni-1b2c"]);
    }
}
