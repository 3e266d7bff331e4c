//! Properties of what a forged, corrupt or surprising input reaches, checked over generated
//! inputs (proptest; `PROPTEST_CASES` sets how many per property, 256 by default): the parsers
//! never panic, and the fence's decisions hold for every combination of labels, Intents and IDs.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;
use serde_json::json;

use crate::fencing::{self, FenceVerdict, IntentView, Write};
use crate::keys::MANAGED_BY_INTENT;
use crate::snapshot::archive;

/// Labels that may name one of a few Intents (or none).
fn labels() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    prop::option::of(
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])).prop_map(|intent| {
            let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
            if let Some(i) = intent {
                labels.insert(MANAGED_BY_INTENT.to_owned(), i.to_owned());
            }
            labels
        }),
    )
}

fn archive_bytes() -> (Vec<u8>, String) {
    let manifest = archive::Manifest {
        format_version: 0,
        tool: "kubectl-multicluster test".into(),
        source_cluster: "member-1".into(),
        source_namespace: "shop".into(),
        time: "2026-12-01T00:00:00Z".into(),
        inventory: Vec::new(),
        left_out: Vec::new(),
        resources: Vec::new(),
        volume_snapshots: Vec::new(),
    };
    let resources = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}),
    ];
    archive::write(manifest, &resources).expect("an archive of one ConfigMap")
}

proptest! {
    /// Admitted ⇒ the write carries the current ID of every Intent that fences the object before
    /// or after it; and the fence applies exactly when a label names an Intent.
    #[test]
    fn an_admitted_write_carries_the_current_id_of_every_fence(
        new in labels(),
        old in labels(),
        ids in prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]),
                                           prop::sample::select(vec!["v1", "v2"]), 0..3),
        carried in prop::option::of(prop::sample::select(vec!["v1", "v2", "v3"])),
    ) {
        let lookup = |ns: &str, name: &str| {
            ids.get(name).map(|id| IntentView {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                intent_id: (*id).to_owned(),
                holder: "h".to_owned(),
                epoch: 1,
            })
        };
        let write = Write {
            kind: "ConfigMap",
            namespace: Some("shop"),
            name: "x",
            labels: new.as_ref(),
            old_labels: old.as_ref(),
            carried_intent_id: carried,
        };
        let fences: Vec<&str> = [new.as_ref(), old.as_ref()]
            .into_iter()
            .filter_map(|l| fencing::fencing_intent(Some("shop"), l).map(|(_, n)| n))
            .collect();
        match fencing::check_write(&write, lookup) {
            FenceVerdict::NotManaged => prop_assert!(fences.is_empty()),
            FenceVerdict::Allowed => {
                prop_assert!(!fences.is_empty());
                for fence in fences {
                    prop_assert_eq!(ids.get(fence).copied(), carried);
                }
            }
            FenceVerdict::Denied(reason) => {
                prop_assert!(!fences.is_empty());
                prop_assert!(!reason.is_empty());
            }
        }
    }

    /// Any bytes: the archive reader answers with an archive or an error, never a panic.
    #[test]
    fn the_archive_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = archive::read(&bytes, None);
    }

    /// A real archive with one byte changed: refused by the recorded checksum, and read without
    /// a panic when no checksum is given.
    #[test]
    fn a_changed_byte_is_caught_by_the_recorded_checksum(at in any::<prop::sample::Index>(), xor in 1u8..) {
        let (mut bytes, sum) = archive_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let is_mismatch = matches!(
            archive::read(&bytes, Some(&sum)),
            Err(archive::ArchiveError::ChecksumMismatch { .. })
        );
        prop_assert!(is_mismatch);
        let _ = archive::read(&bytes, None);
    }

    /// Any pool entries: parsed or refused, never a panic; every candidate lies in the ranges,
    /// is free, and appears once.
    #[test]
    fn vip_candidates_are_free_distinct_addresses_of_the_pool(
        entries in prop::collection::vec("[0-9./-]{0,20}", 0..4),
        a in any::<u32>(), len in 0u32..300, seed in any::<u64>(), taken_every in 1u32..7,
    ) {
        let _ = crate::vip::parse_ranges(&entries);
        let start = Ipv4Addr::from(a.min(u32::MAX - len));
        let end = Ipv4Addr::from(u32::from(start) + len);
        let ranges = [(start, end)];
        let taken: HashSet<Ipv4Addr> = (u32::from(start)..=u32::from(end))
            .step_by(taken_every as usize)
            .map(Ipv4Addr::from)
            .collect();
        let found = crate::vip::candidates(&ranges, &taken, seed, 64);
        let distinct: HashSet<&Ipv4Addr> = found.iter().collect();
        prop_assert_eq!(distinct.len(), found.len());
        for addr in &found {
            prop_assert!(start <= *addr && *addr <= end && !taken.contains(addr));
        }
    }

    /// Any request path: the proxy's parser returns a member and a path on it only for its own
    /// prefix, never a panic; the member is one path segment and the rest starts with `/`.
    #[test]
    fn the_proxy_path_parser_takes_only_its_own_paths(
        path in prop_oneof![
            "[a-z0-9/.%-]{0,60}",
            ("[a-z0-9/.%-]{0,12}", "(proxy)?[a-z0-9/.%-]{0,20}").prop_map(|(member, rest)| {
                format!("/apis/proxy.multicluster.dev/v1alpha1/memberclusters/{member}/{rest}")
            }),
        ],
    ) {
        if let Some((member, rest)) = crate::members::proxy::parse_path(&path) {
            prop_assert!(!member.is_empty() && !member.contains('/'));
            prop_assert!(rest.starts_with('/'));
            prop_assert!(path.starts_with(&crate::members::proxy::path_prefix(member)));
        }
    }

    /// Any pool entry, well-formed or not: parsed into a range whose first address is not after
    /// its last (and inside the CIDR when it is one), or refused; never a panic.
    #[test]
    fn address_ranges_parse_in_order_or_are_refused(
        entry in prop_oneof![
            "[0-9./:-]{0,24}",
            (any::<u32>(), 0u32..40).prop_map(|(a, p)| format!("{}/{p}", std::net::Ipv4Addr::from(a))),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
                format!("{}-{}", std::net::Ipv4Addr::from(a), std::net::Ipv4Addr::from(b))
            }),
        ],
    ) {
        if let Ok(ranges) = crate::vip::parse_ranges(std::slice::from_ref(&entry)) {
            for (first, last) in &ranges {
                prop_assert!(first <= last, "{entry}: {first} > {last}");
            }
            if let Some((addr, prefix)) = entry.split_once('/') {
                let addr: std::net::Ipv4Addr = addr.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                let prefix: u32 = prefix.parse().unwrap_or(32);
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32)) };
                let network = u32::from(addr) & mask;
                for (first, last) in &ranges {
                    prop_assert_eq!(u32::from(*first) & mask, network);
                    prop_assert_eq!(u32::from(*last) & mask, network);
                }
            }
        }
    }

    /// Any headers the hub's API server (or anyone) sends: the proxy forwards the caller as one
    /// user the member's admin named and only named, non-`system:` groups; never `system:masters`,
    /// never a UID or extra, never a panic.
    #[test]
    fn the_proxy_forwards_only_named_users_and_groups(
        headers in prop::collection::vec(
            (prop_oneof![
                Just("x-remote-user".to_owned()),
                Just("x-remote-group".to_owned()),
                Just("x-remote-uid".to_owned()),
                "x-remote-extra-[a-z%0-9]{0,8}",
                "[a-z-]{0,12}",
            ], prop_oneof![
                Just("alice".to_owned()),
                Just("system:masters".to_owned()),
                Just("system:serviceaccount:ns:sa".to_owned()),
                Just("devs".to_owned()),
                "[a-z:]{0,12}",
            ]),
            0..8,
        ),
    ) {
        let access = crate::members::proxy::ProxyAccess::from_hub_names(
            &["alice".to_owned(), "system:serviceaccount:ns:sa".to_owned()],
            &["devs".to_owned()],
        )
        .unwrap_or_default();
        let Ok(caller) = crate::members::proxy::caller(&headers, Some("front-proxy-client"), &[]) else {
            return Ok(());
        };
        if let Ok(forwarded) = crate::members::proxy::impersonation_headers(&caller, "m1", &access) {
            let users: Vec<&String> = forwarded.iter().filter(|(k, _)| k == "impersonate-user").map(|(_, v)| v).collect();
            prop_assert_eq!(users.len(), 1);
            prop_assert!(access.users.contains(users[0]));
            for (name, value) in &forwarded {
                prop_assert!(name == "impersonate-user" || name == "impersonate-group", "{name}");
                if name == "impersonate-group" {
                    prop_assert!(access.groups.contains(value) && !value.starts_with("system:"));
                }
            }
        }
    }
}
