use super::*;
use serde_json::json;

fn deployment(name: &str, image: &str, claim: Option<&str>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                     "labels": {"app.kubernetes.io/name": name},
                     "annotations": {"deployment.kubernetes.io/revision": "3", "team": "web"}},
        "spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": name, "image": image}]}}},
        "status": {"replicas": 0}
    });
    if let Some(claim) = claim {
        d["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    d
}

#[test]
fn derived_and_ephemeral_kinds_are_left_out_with_a_reason() {
    for (group, kind) in [
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("coordination.k8s.io", "Lease"),
        ("apps", "ControllerRevision"),
    ] {
        assert!(left_out_kind(group, kind).is_some(), "{group}/{kind}");
    }
    for (group, kind) in [
        ("", "ConfigMap"),
        ("apps", "Deployment"),
        ("example.com", "Widget"),
    ] {
        assert_eq!(left_out_kind(group, kind), None, "{group}/{kind}");
    }
}

#[test]
fn objects_the_control_plane_recreates_are_left_out_and_the_rest_captured() {
    let owned_pod = json!({"kind": "Pod", "metadata": {"name": "web-1",
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": true}]}});
    assert_eq!(
        left_out_object(&owned_pod).as_deref(),
        Some("owned by ReplicaSet web-abc, which re-creates it")
    );
    let ephemeral = json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "web-1-scratch",
        "ownerReferences": [{"kind": "Pod", "name": "web-1", "controller": true}]}});
    assert!(left_out_object(&ephemeral).unwrap().contains("ephemeral"));
    let token = json!({"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}});
    assert!(left_out_object(&token).is_some());
    let ca = json!({"kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}});
    assert!(left_out_object(&ca).is_some());
    // Captured: a bare Pod, an unowned Job, a ConfigMap, a Secret, a workload scaled to 0.
    for object in [
        json!({"kind": "Pod", "metadata": {"name": "debug"}}),
        json!({"kind": "Job", "metadata": {"name": "migrate"}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}}),
        json!({"kind": "Secret", "type": "Opaque", "metadata": {"name": "db"}}),
        deployment("web", "nginx:1.27", None),
    ] {
        assert_eq!(left_out_object(&object), None, "{object}");
    }
}

#[test]
fn stripping_removes_what_belongs_to_the_source_cluster() {
    let mut d = deployment("web", "nginx:1.27", None);
    strip(&mut d);
    assert_eq!(
        d["metadata"],
        json!({"name": "web", "labels": {"app.kubernetes.io/name": "web"}, "annotations": {"team": "web"}})
    );
    assert!(d.get("status").is_none());
    assert_eq!(
        d["spec"]["replicas"], 0,
        "a workload scaled to 0 stays at 0"
    );

    let mut svc = json!({"kind": "Service", "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"], "type": "NodePort",
                 "ports": [{"port": 80, "nodePort": 30080}]}});
    strip(&mut svc);
    assert_eq!(
        svc["spec"],
        json!({"type": "NodePort", "ports": [{"port": 80}]})
    );

    let mut pvc = json!({"kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": "pvc-123", "storageClassName": "fast"}});
    strip(&mut pvc);
    assert_eq!(pvc["spec"], json!({"storageClassName": "fast"}));
    assert!(pvc["metadata"].get("annotations").is_none());
}

#[test]
fn the_inventory_names_workloads_with_what_makes_them_that_application() {
    let objects = vec![
        deployment("web", "nginx:1.27", Some("data")),
        json!({"kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"template": {"spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                                               "containers": [{"name": "pg", "image": "postgres:17"}]}},
                        "volumeClaimTemplates": [{"metadata": {"name": "pgdata"}}]}}),
        json!({"kind": "CronJob", "metadata": {"name": "report"},
               "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r", "image": "report:1"}]}}}}}}),
        json!({"kind": "Job", "metadata": {"name": "report-123",
               "ownerReferences": [{"kind": "CronJob", "name": "report", "controller": true}]}}),
        json!({"kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}),
        json!({"kind": "Secret", "metadata": {"name": "db"}}),
    ];
    let inv = inventory(&objects);
    let names: Vec<String> = inv
        .iter()
        .map(|a| format!("{} {}", a.kind, a.name))
        .collect();
    assert_eq!(
        names,
        [
            "ConfigMap settings",
            "CronJob report",
            "Deployment web",
            "Service web",
            "StatefulSet db"
        ],
        "the CronJob's Job and the Secret are not applications"
    );
    let db = inv.iter().find(|a| a.name == "db").unwrap();
    assert_eq!(db.containers.len(), 2);
    assert_eq!(db.claims, ["pgdata"]);
    let web = inv.iter().find(|a| a.kind == "Deployment").unwrap();
    assert_eq!(web.identity["app.kubernetes.io/name"], "web");
    assert_eq!(web.claims, ["data"]);
    let svc = inv.iter().find(|a| a.kind == "Service").unwrap();
    assert_eq!(svc.aspects["ports"], "80/TCP");
    assert_eq!(svc.aspects["selector"], "app=web");
}

#[test]
fn restore_conflicts_name_each_difference_and_an_empty_or_equal_target_has_none() {
    let snapshot = inventory(&[
        deployment("web", "nginx:1.27", Some("data")),
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}),
    ]);
    assert!(
        conflicts(&snapshot, &[], "shop-2").is_empty(),
        "an empty target"
    );
    assert!(
        conflicts(&snapshot, &snapshot, "shop-2").is_empty(),
        "the same applications"
    );
    assert!(
        conflicts(&snapshot, &snapshot[..1], "shop-2").is_empty(),
        "a target holding some of the same applications"
    );

    let target = inventory(&[
        deployment("web", "nginx:1.25", Some("data")),
        deployment("api", "api:2", None),
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "2"}}),
    ]);
    let found: Vec<String> = conflicts(&snapshot, &target, "shop-2")
        .iter()
        .map(|c| format!("{} {}: {}", c.kind, c.name, c.reason))
        .collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found.contains(&"Deployment web: container web: image nginx:1.25 in shop-2, nginx:1.27 in the snapshot".to_owned()), "{found:#?}");
    assert!(
        found.contains(
            &"Deployment api: in shop-2 and not in the snapshot: a different application"
                .to_owned()
        ),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("ConfigMap settings: data sha256:")),
        "{found:#?}"
    );
}

mod archives {
    use super::super::archive::*;
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format_version: 0,
            tool: "kubectl-multicluster 0.1.0".to_owned(),
            source_cluster: "member-1".to_owned(),
            source_namespace: "shop".to_owned(),
            time: "2026-11-22T12:00:00Z".to_owned(),
            inventory: inventory(&[deployment("web", "nginx:1.27", None)]),
            left_out: vec![LeftOut {
                kind: "Event".to_owned(),
                name: None,
                reason: "events record what happened in the source cluster".to_owned(),
            }],
            resources: Vec::new(),
            volume_snapshots: Vec::new(),
        }
    }

    fn resources() -> Vec<Value> {
        let mut d = deployment("web", "nginx:1.27", None);
        strip(&mut d);
        vec![
            d,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}),
        ]
    }

    #[test]
    fn an_archive_round_trips_with_its_checksums() {
        let (bytes, sum) = write(manifest(), &resources()).unwrap();
        let archive = read(&bytes, Some(&sum)).unwrap();
        assert_eq!(archive.resources, resources());
        assert_eq!(archive.manifest.format_version, FORMAT_VERSION);
        assert_eq!(archive.manifest.resources.len(), 2);
        assert_eq!(archive.manifest.resources[1].kind, "ConfigMap");
        assert_eq!(archive.manifest.inventory, manifest().inventory);
        assert!(sum.starts_with("sha256:") && sum.len() == 7 + 64);
    }

    #[test]
    fn truncated_altered_and_unknown_archives_are_refused_saying_which() {
        let (bytes, sum) = write(manifest(), &resources()).unwrap();
        // Truncated, with the recorded checksum: the checksum says so first.
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            read(cut, Some(&sum)),
            Err(ArchiveError::ChecksumMismatch { .. })
        ));
        // Truncated, no checksum to compare: the structure does.
        assert!(
            matches!(read(cut, None), Err(ArchiveError::Corrupt(_))),
            "{:?}",
            read(cut, None)
        );
        // Not an archive at all.
        assert!(matches!(
            read(b"hello", None),
            Err(ArchiveError::Corrupt(_))
        ));
        // One resource altered inside a well-formed archive: its entry checksum names it.
        let mut altered = resources();
        let (good, _) = write(manifest(), &altered).unwrap();
        let good = read(&good, None).unwrap();
        altered[1]["data"]["a"] = json!("2");
        let tampered = rebuild(&good.manifest, &altered);
        let err = read(&tampered, None).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::EntryAltered { path, .. } if path == "resources/00001.json"),
            "{err}"
        );
        // A newer format: refused as newer, with what to do.
        let mut newer = good.manifest.clone();
        newer.format_version = FORMAT_VERSION + 1;
        let err = read(&rebuild(&newer, &resources()), None).unwrap_err();
        assert_eq!(err, ArchiveError::UnknownVersion(FORMAT_VERSION + 1));
        assert!(err.to_string().contains("upgrade kubectl-multicluster"));
    }

    /// A gzip'd tar of the manifest, then the header of an entry that declares 1 GiB, and none of
    /// its bytes: a reader that trusted the header would allocate or read a gigabyte; one that
    /// tried to read it would fail as truncated. Its checksum is recorded as correct.
    #[test]
    fn an_entry_declaring_a_gigabyte_is_refused_as_too_large_before_it_is_read() {
        let manifest = serde_json::to_vec_pretty(&manifest()).unwrap();
        let mut tar = Vec::new();
        let header = |path: &str, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_cksum();
            h.as_bytes().to_vec()
        };
        tar.extend(header("manifest.json", manifest.len() as u64));
        tar.extend(&manifest);
        tar.resize(tar.len().next_multiple_of(512), 0);
        tar.extend(header("resources/00000.json", 1 << 30));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let bytes = gz.finish().unwrap();
        let sum = checksum(&bytes);
        let err = read(&bytes, Some(&sum)).unwrap_err();
        assert_eq!(
            err,
            ArchiveError::TooLarge {
                what: "entry resources/00000.json".into(),
                size: 1 << 30,
                limit: Limits::default().entry_bytes,
                flag: "archive-entry-bytes",
            }
        );
        assert!(
            err.to_string()
                .contains("--restore-max-archive-entry-bytes")
        );
    }

    #[test]
    fn every_limit_is_checked_and_named() {
        let (bytes, sum) = write(manifest(), &resources()).unwrap();
        let limits = Limits::default();
        assert!(read_within(&bytes, Some(&sum), limits).is_ok());
        let small = |f: &dyn Fn(&mut Limits)| {
            let mut l = limits;
            f(&mut l);
            read_within(&bytes, Some(&sum), l).unwrap_err()
        };
        assert!(matches!(
            small(&|l| l.archive_bytes = 100),
            ArchiveError::TooLarge {
                flag: "archive-bytes",
                ..
            }
        ));
        assert!(matches!(
            small(&|l| l.entry_bytes = 200),
            ArchiveError::TooLarge {
                flag: "archive-entry-bytes",
                ..
            }
        ));
        assert!(matches!(
            small(&|l| l.total_bytes = 1500),
            ArchiveError::TooLarge {
                flag: "archive-total-bytes",
                ..
            }
        ));
        assert_eq!(small(&|l| l.entries = 2), ArchiveError::TooManyEntries(2));
    }

    /// An archive with `manifest` written as given (not recomputed), as a tamperer would.
    fn rebuild(manifest: &Manifest, resources: &[Value]) -> Vec<u8> {
        let manifest = serde_json::to_vec_pretty(manifest).unwrap();
        let entries: Vec<(String, Vec<u8>)> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    format!("resources/{i:05}.json"),
                    serde_json::to_vec_pretty(r).unwrap(),
                )
            })
            .collect();
        let files: Vec<(&str, &[u8])> = std::iter::once(("manifest.json", manifest.as_slice()))
            .chain(entries.iter().map(|(p, b)| (p.as_str(), b.as_slice())))
            .collect();
        pack(&files).unwrap()
    }
}

/// Snapshots already saved carry ConfigMap digests in their inventories: the way the digest is
/// computed must not change, or every restore onto an unchanged ConfigMap would be a conflict.
#[test]
fn a_config_maps_data_digest_is_stable() {
    let inventory = super::inventory(&[
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"b": "2", "a": "é\"1"}, "binaryData": {"blob": "AAE="}}),
    ]);
    let plain = super::inventory(&[json!({"kind": "ConfigMap", "metadata": {"name": "plain"}})]);
    assert_eq!(
        (
            inventory[0].aspects["data"].as_str(),
            plain[0].aspects["data"].as_str()
        ),
        ("sha256:0a57b5931783", "sha256:4513650c0a9d")
    );
}
