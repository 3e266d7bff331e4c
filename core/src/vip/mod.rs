//! Virtual IP allocation as pure functions: parsing a pool's ranges, choosing which
//! free addresses to try, and the annotations a Service gets. The webhook turns a choice into a
//! `VipClaim` named after the address, so the API server itself settles races between replicas.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use crate::api::VipPoolSpec;
use crate::keys::{HOSTNAME, VIP};

/// Inclusive address ranges of a pool.
pub type Ranges = Vec<(Ipv4Addr, Ipv4Addr)>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{0:?} is not an IPv4 CIDR (10.96.100.0/24) or range (10.96.100.10-10.96.100.50)")]
    Malformed(String),
    #[error("{0:?}: the range ends before it starts")]
    Backwards(String),
    #[error("{0:?}: IPv6 pools are not supported yet")]
    Ipv6(String),
}

/// Parses CIDRs and `first-last` ranges. A CIDR of /30 or wider leaves out its network and
/// broadcast addresses; /31 and /32 use every address.
pub fn parse_ranges(entries: &[String]) -> Result<Ranges, RangeError> {
    entries.iter().map(|e| parse_range(e.trim())).collect()
}

fn parse_range(entry: &str) -> Result<(Ipv4Addr, Ipv4Addr), RangeError> {
    if entry.contains(':') {
        return Err(RangeError::Ipv6(entry.to_owned()));
    }
    let bad = || RangeError::Malformed(entry.to_owned());
    if let Some((addr, prefix)) = entry.split_once('/') {
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u32 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let network = u32::from(addr) & mask;
        let broadcast = network | !mask;
        return Ok(if prefix >= 31 {
            (network.into(), broadcast.into())
        } else {
            ((network + 1).into(), (broadcast - 1).into())
        });
    }
    let (first, last) = entry.split_once('-').ok_or_else(bad)?;
    let first: Ipv4Addr = first.trim().parse().map_err(|_| bad())?;
    let last: Ipv4Addr = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(RangeError::Backwards(entry.to_owned()));
    }
    Ok((first, last))
}

pub fn pool_size(ranges: &[(Ipv4Addr, Ipv4Addr)]) -> u64 {
    ranges
        .iter()
        .map(|(a, b)| u64::from(u32::from(*b) - u32::from(*a)) + 1)
        .sum()
}

fn contains(ranges: &[(Ipv4Addr, Ipv4Addr)], addr: Ipv4Addr) -> bool {
    ranges.iter().any(|(a, b)| *a <= addr && addr <= *b)
}

/// The `i`-th address of the pool (ranges in order), for `i < pool_size`.
fn nth(ranges: &[(Ipv4Addr, Ipv4Addr)], mut i: u64) -> Option<Ipv4Addr> {
    for (a, b) in ranges {
        let len = u64::from(u32::from(*b) - u32::from(*a)) + 1;
        if i < len {
            return u32::from(*a)
                .checked_add(u32::try_from(i).ok()?)
                .map(Ipv4Addr::from);
        }
        i -= len;
    }
    None
}

/// A stable 64-bit FNV-1a hash of a Service's identity (std's hasher may change between
/// releases; replicas of different builds must agree).
pub fn seed_for(namespace: &str, name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Up to `limit` free addresses, starting at an offset derived from `seed` and wrapping around,
/// so that replicas allocating for different Services rarely try the same address first.
pub fn candidates(
    ranges: &[(Ipv4Addr, Ipv4Addr)],
    taken: &HashSet<Ipv4Addr>,
    seed: u64,
    limit: usize,
) -> Vec<Ipv4Addr> {
    let size = pool_size(ranges);
    if size == 0 {
        return Vec::new();
    }
    let start = seed % size;
    (0..size)
        .filter_map(|i| nth(ranges, (start + i) % size))
        .filter(|a| !taken.contains(a))
        .take(limit)
        .collect()
}

/// What to do for one Service asking for a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipDecision {
    /// It has an address of this pool already (an update, or a retried create): keep it.
    Keep(Ipv4Addr),
    /// Try to claim these, in order, until one claim is created.
    TryInOrder(Vec<Ipv4Addr>),
    /// Every address is claimed.
    PoolFull { size: u64 },
}

/// How many candidates one admission request tries before giving up on a busy pool.
pub const CANDIDATES_PER_REQUEST: usize = 64;

pub fn decide(
    existing: Option<Ipv4Addr>,
    ranges: &[(Ipv4Addr, Ipv4Addr)],
    taken: &HashSet<Ipv4Addr>,
    seed: u64,
) -> VipDecision {
    if let Some(addr) = existing
        && contains(ranges, addr)
    {
        return VipDecision::Keep(addr);
    }
    let tries = candidates(ranges, taken, seed, CANDIDATES_PER_REQUEST);
    if tries.is_empty() {
        VipDecision::PoolFull {
            size: pool_size(ranges),
        }
    } else {
        VipDecision::TryInOrder(tries)
    }
}

/// What holds a VIP: a Service, or the hub's `ServiceImport` of a multi-cluster service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerKind {
    pub api_version: String,
    pub kind: String,
}

impl OwnerKind {
    pub fn service() -> Self {
        OwnerKind {
            api_version: "v1".to_owned(),
            kind: "Service".to_owned(),
        }
    }

    pub fn service_import() -> Self {
        OwnerKind {
            api_version: SERVICE_IMPORT_API_VERSION.to_owned(),
            kind: "ServiceImport".to_owned(),
        }
    }

    /// Whether the VIP webhook serves this kind: the API server sends it nothing else, so anything
    /// else is a forged request (and a claim owned by anything else was made by one).
    pub fn is_served(&self) -> bool {
        *self == Self::service() || *self == Self::service_import()
    }
}

/// Why the VIP webhook refuses to hand out an address for a request, if it does: only a Service or
/// a hub ServiceImport, in a namespace, gets one. The webhook configuration sends nothing else,
/// so this catches requests that did not come from the API server (whoever reaches the port).
pub fn refusal(owner: &OwnerKind, namespace: Option<&str>) -> Option<String> {
    if !owner.is_served() {
        return Some(format!(
            "the VIP webhook serves Services (v1) and ServiceImports ({SERVICE_IMPORT_API_VERSION}) \
             only, not {} {}: no VIP handed out",
            owner.api_version, owner.kind
        ));
    }
    if namespace.is_none_or(str::is_empty) {
        return Some(format!(
            "a {} gets a VIP only in a namespace, and this request names none",
            owner.kind
        ));
    }
    None
}

/// The Multi-Cluster Services API version this project reads and writes (the CRDs' storage one).
pub const SERVICE_IMPORT_API_VERSION: &str = "multicluster.x-k8s.io/v1beta1";

/// MetalLB's annotation for the address a LoadBalancer Service asks for.
pub const METALLB_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// ExternalDNS's annotation for the name to publish.
pub const EXTERNAL_DNS_HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";

/// The annotations to remove from an object that leaves its pool (its pool label removed on an
/// update), given its annotations: ours, and MetalLB's and ExternalDNS's where they still hold the
/// VIP and hostname we set (someone else's value is theirs to keep). The VIP claim collector then
/// releases the address, as the object no longer carries it.
pub fn released_annotations(current: &BTreeMap<String, String>) -> Vec<String> {
    let ours = [
        (VIP, None),
        (HOSTNAME, None),
        (METALLB_IPS, Some(VIP)),
        (EXTERNAL_DNS_HOSTNAME, Some(HOSTNAME)),
    ];
    ours.into_iter()
        .filter(|(key, same_as)| match (current.get(*key), same_as) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(value), Some(ours)) => current.get(*ours) == Some(value),
        })
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// Why `owner` may not have `hostname` in `pool`: another object's claim in that pool holds it
/// already. A hostname names one address (ExternalDNS publishes every address that carries it),
/// so the second holder is refused, with the first named.
pub fn hostname_refusal<'a>(
    claims: impl IntoIterator<Item = &'a crate::api::VipClaimSpec>,
    pool: &str,
    hostname: &str,
    owner: &OwnerKind,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let holder = claims.into_iter().find(|c| {
        c.pool == pool
            && c.hostname == hostname
            && !(c.owner.kind == owner.kind
                && c.owner.namespace.as_deref() == Some(namespace)
                && c.owner.name == name)
    })?;
    Some(format!(
        "hostname {hostname} already names {} in VipPool {pool}, held by {} {}/{}: a hostname names one \
         address. Use the existing one, delete that {} (or take it out of the pool), or ask for this \
         {} from another pool",
        holder.address,
        holder.owner.kind,
        holder.owner.namespace.as_deref().unwrap_or_default(),
        holder.owner.name,
        holder.owner.kind,
        owner.kind,
    ))
}

/// `<service>.<namespace>.<domainSuffix>`, lower-cased.
pub fn hostname(service: &str, namespace: &str, domain_suffix: &str) -> String {
    format!(
        "{service}.{namespace}.{}",
        domain_suffix.trim_end_matches('.')
    )
    .to_lowercase()
}

/// The annotations a Service with a VIP carries: ours always, MetalLB's and ExternalDNS's when the
/// pool asks for them.
pub fn annotations_for(
    addr: Ipv4Addr,
    hostname: &str,
    pool: &VipPoolSpec,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (VIP.to_owned(), addr.to_string()),
        (HOSTNAME.to_owned(), hostname.to_owned()),
    ]);
    if pool.ecosystem_annotations.metallb {
        out.insert(METALLB_IPS.to_owned(), addr.to_string());
    }
    if pool.ecosystem_annotations.external_dns {
        out.insert(EXTERNAL_DNS_HOSTNAME.to_owned(), hostname.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(entries: &[&str]) -> Ranges {
        parse_ranges(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_hostname_held_by_another_object_of_the_pool_is_refused_naming_the_holder() {
        use crate::api::{ClaimOwner, VipClaimSpec};
        let claim = |kind: &str, pool: &str, address: &str| VipClaimSpec {
            pool: pool.to_owned(),
            address: address.to_owned(),
            hostname: "web.shop.mc.example.com".to_owned(),
            owner: ClaimOwner {
                api_version: "v1".to_owned(),
                kind: kind.to_owned(),
                namespace: Some("shop".to_owned()),
                name: "web".to_owned(),
                uid: None,
            },
        };
        let service = claim("Service", "pool", "10.250.0.5");
        let elsewhere = claim("Service", "other", "10.251.0.5");
        let import = OwnerKind::service_import();
        let why = hostname_refusal(
            [&service, &elsewhere],
            "pool",
            "web.shop.mc.example.com",
            &import,
            "shop",
            "web",
        )
        .unwrap();
        assert!(
            why.contains("10.250.0.5") && why.contains("Service shop/web"),
            "{why}"
        );
        // Its own claim (a retried request, an update) is no conflict; nor a claim of another pool.
        assert_eq!(
            hostname_refusal(
                [&service],
                "pool",
                "web.shop.mc.example.com",
                &OwnerKind::service(),
                "shop",
                "web"
            ),
            None
        );
        assert_eq!(
            hostname_refusal(
                [&elsewhere],
                "pool",
                "web.shop.mc.example.com",
                &import,
                "shop",
                "web"
            ),
            None
        );
    }

    #[test]
    fn cidrs_and_ranges_parse_to_usable_addresses() {
        assert_eq!(pool_size(&r(&["10.0.0.0/24"])), 254);
        assert_eq!(
            r(&["10.0.0.0/24"])[0],
            ("10.0.0.1".parse().unwrap(), "10.0.0.254".parse().unwrap())
        );
        assert_eq!(pool_size(&r(&["10.0.0.10-10.0.0.12"])), 3);
        assert_eq!(pool_size(&r(&["10.0.0.7/32", "10.0.0.8/31"])), 3);
    }

    #[test]
    fn malformed_entries_are_named() {
        for (entry, expected) in [
            ("10.0.0.0/33", "not an IPv4"),
            ("banana", "not an IPv4"),
            ("10.0.0.9-10.0.0.1", "ends before it starts"),
            ("fd00::/64", "IPv6"),
        ] {
            let err = parse_ranges(&[entry.to_owned()]).unwrap_err().to_string();
            assert!(err.contains(entry) && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn candidates_cover_the_free_pool_once_and_skip_taken_addresses() {
        let pool = r(&["10.0.0.0/28"]);
        let taken: HashSet<Ipv4Addr> = ["10.0.0.3".parse().unwrap()].into();
        let all = candidates(&pool, &taken, 7, 1000);
        assert_eq!(all.len(), 13);
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 13);
        assert!(!all.contains(&"10.0.0.3".parse().unwrap()));
        assert_ne!(
            candidates(&pool, &taken, 1, 1)[0],
            candidates(&pool, &taken, 2, 1)[0]
        );
    }

    #[test]
    fn decisions_keep_allocate_or_report_a_full_pool() {
        let pool = r(&["10.0.0.1-10.0.0.2"]);
        let a: Ipv4Addr = "10.0.0.1".parse().unwrap();
        assert_eq!(decide(Some(a), &pool, &[a].into(), 0), VipDecision::Keep(a));
        let outside: Ipv4Addr = "192.168.0.1".parse().unwrap();
        assert!(matches!(
            decide(Some(outside), &pool, &HashSet::new(), 0),
            VipDecision::TryInOrder(_)
        ));
        let full: HashSet<Ipv4Addr> = [a, "10.0.0.2".parse().unwrap()].into();
        assert_eq!(
            decide(None, &pool, &full, 0),
            VipDecision::PoolFull { size: 2 }
        );
    }

    #[test]
    fn only_namespaced_services_and_service_imports_are_served() {
        assert_eq!(refusal(&OwnerKind::service(), Some("shop")), None);
        assert_eq!(refusal(&OwnerKind::service_import(), Some("shop")), None);
        let secret = OwnerKind {
            api_version: "v1".into(),
            kind: "Secret".into(),
        };
        let refused = refusal(&secret, Some("shop")).unwrap();
        assert!(refused.contains("not v1 Secret"), "{refused}");
        let other_group = OwnerKind {
            api_version: "example.com/v1".into(),
            kind: "Service".into(),
        };
        assert!(refusal(&other_group, Some("shop")).is_some());
        for ns in [None, Some("")] {
            let refused = refusal(&OwnerKind::service(), ns).unwrap();
            assert!(refused.contains("names none"), "{refused}");
        }
    }

    #[test]
    fn leaving_the_pool_removes_our_annotations_and_only_the_ecosystem_ones_we_set() {
        let mut current = BTreeMap::from([
            (VIP.to_owned(), "10.0.0.5".to_owned()),
            (HOSTNAME.to_owned(), "web.shop.mc.example.com".to_owned()),
            (
                "metallb.universe.tf/loadBalancerIPs".to_owned(),
                "10.0.0.5".to_owned(),
            ),
            (
                "external-dns.alpha.kubernetes.io/hostname".to_owned(),
                "www.example.com".to_owned(),
            ),
            ("team".to_owned(), "web".to_owned()),
        ]);
        assert_eq!(
            released_annotations(&current),
            [VIP, HOSTNAME, "metallb.universe.tf/loadBalancerIPs"]
        );
        current.clear();
        assert!(released_annotations(&current).is_empty());
    }

    #[test]
    fn names_and_annotations() {
        assert_eq!(
            hostname("Web", "shop", "mc.example.com."),
            "web.shop.mc.example.com"
        );
        assert_eq!(seed_for("a", "b"), seed_for("a", "b"));
        assert_ne!(seed_for("a", "b"), seed_for("ab", ""));
        let mut spec = VipPoolSpec {
            ranges: vec![],
            domain_suffix: "mc".into(),
            ecosystem_annotations: Default::default(),
        };
        let addr: Ipv4Addr = "10.0.0.1".parse().unwrap();
        assert_eq!(annotations_for(addr, "h", &spec).len(), 2);
        spec.ecosystem_annotations.metallb = true;
        spec.ecosystem_annotations.external_dns = true;
        let all = annotations_for(addr, "h", &spec);
        assert_eq!(all["metallb.universe.tf/loadBalancerIPs"], "10.0.0.1");
        assert_eq!(all["external-dns.alpha.kubernetes.io/hostname"], "h");
    }
}
