//! Storage locations as pure functions: where a snapshot's archive goes inside a location, the
//! address users see for it, and when a location is due for its next check.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{
    DataCollection, NamespaceRestore, NamespaceSnapshot, RestorePhase, StorageLocation,
    StorageLocationSpec,
};
use crate::keys;

/// How long a check's verdict stands before the hub server checks the location again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(300);

/// The condition a check sets.
pub const AVAILABLE: &str = "Available";

/// The object key of a snapshot's archive inside its location (below the location's prefix):
/// one directory per hub namespace, so that snapshots of the same name in two namespaces of the
/// hub do not overwrite each other.
pub fn archive_key(snapshot_namespace: &str, snapshot_name: &str) -> String {
    format!("{snapshot_namespace}/{snapshot_name}.tar.gz")
}

/// The address of `key` in the location as users read it: `s3://bucket/prefix/key` or
/// `file:///path/key`.
pub fn object_url(spec: &StorageLocationSpec, key: &str) -> String {
    match (&spec.filesystem, &spec.s3) {
        (Some(fs), _) => format!("file://{}/{key}", fs.path.trim_end_matches('/')),
        (None, Some(s3)) => {
            let prefix = s3
                .prefix
                .as_deref()
                .map(|p| p.trim_matches('/'))
                .filter(|p| !p.is_empty())
                .map(|p| format!("{p}/"))
                .unwrap_or_default();
            format!("s3://{}/{prefix}{key}", s3.bucket)
        }
        (None, None) => key.to_owned(),
    }
}

/// When the location must be checked: `None` now (never checked, its spec changed since the last
/// check, or a user asked with the `multicluster.dev/check-requested` annotation), else how long
/// until its verdict is [`RECHECK_AFTER`] old.
pub fn check_due(location: &StorageLocation, now: Timestamp) -> Option<Duration> {
    let status = location.status.as_ref()?;
    let requested = location
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::CHECK_REQUESTED));
    if requested.is_some() && requested != status.last_check_request.as_ref() {
        return None;
    }
    let checked_generation = status
        .conditions
        .iter()
        .find(|c| c.type_ == AVAILABLE)
        .and_then(|c| c.observed_generation);
    if checked_generation != location.metadata.generation {
        return None;
    }
    let last = status.last_check_time.as_ref()?;
    let age = now.duration_since(last.0).unsigned_abs();
    RECHECK_AFTER
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

/// Whether two locations keep their objects in the same place: one directory, or one bucket (at
/// one endpoint) with the same prefix. (A prefix inside another's is another place: a location
/// only ever touches keys under its own prefix, and its data under `data/` there.)
pub fn same_store(a: &StorageLocationSpec, b: &StorageLocationSpec) -> bool {
    let prefix = |p: &Option<String>| {
        p.as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}/"))
            .unwrap_or_default()
    };
    match (a, b) {
        (
            StorageLocationSpec {
                filesystem: Some(x),
                ..
            },
            StorageLocationSpec {
                filesystem: Some(y),
                ..
            },
        ) => x.path.trim_end_matches('/') == y.path.trim_end_matches('/'),
        (StorageLocationSpec { s3: Some(x), .. }, StorageLocationSpec { s3: Some(y), .. }) => {
            let endpoint = |e: &Option<String>| {
                e.as_deref()
                    .map(|e| e.trim_end_matches('/').to_ascii_lowercase())
            };
            x.bucket == y.bucket
                && endpoint(&x.endpoint) == endpoint(&y.endpoint)
                && prefix(&x.prefix) == prefix(&y.prefix)
        }
        _ => false,
    }
}

/// The first unfinished restore that may be reading `location`'s chunks with no snapshot keeping
/// them referenced, which a sweep of the location must wait for: one still `Pending` or
/// `Hydrating` whose snapshot of this location is being deleted, or one `Hydrating` whose snapshot
/// is gone (its location unknown: it read the manifest before). A restore of a live snapshot holds
/// nothing up, as that snapshot references every chunk it reads; nor does a `Pending` one whose
/// snapshot is gone, which fails as it starts.
pub fn restore_holding_data<'a>(
    location: &str,
    restores: &'a [NamespaceRestore],
    snapshots: &[NamespaceSnapshot],
) -> Option<&'a NamespaceRestore> {
    restores.iter().find(|restore| {
        let phase = restore.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if !matches!(phase, RestorePhase::Pending | RestorePhase::Hydrating) {
            return false;
        }
        let snapshot = snapshots.iter().find(|s| {
            s.metadata.name.as_deref() == Some(restore.spec.snapshot.as_str())
                && s.metadata.namespace == restore.metadata.namespace
        });
        match snapshot {
            Some(s) => s.spec.location == location && s.metadata.deletion_timestamp.is_some(),
            None => phase == RestorePhase::Hydrating,
        }
    })
}

/// How soon a sweep that did not run to the end (an export at work, the location unreachable) is
/// tried again.
pub const SWEEP_RETRY: Duration = Duration::from_secs(30);

/// When the location's volume data must be swept: `None` now (never swept, or a sweep was asked
/// for with `multicluster.dev/collect-requested`, which the hub server also sets when it deletes a
/// snapshot), else how long until the last sweep is `interval` old ([`SWEEP_RETRY`] when it did
/// not run to the end).
pub fn collection_due(
    location: &StorageLocation,
    now: Timestamp,
    interval: Duration,
) -> Option<Duration> {
    let last = location.status.as_ref()?.last_collection.as_ref()?;
    let requested = location
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::COLLECT_REQUESTED));
    if requested.is_some() && requested != last.request.as_ref() {
        return None;
    }
    let at = last.time.as_ref()?;
    let age = now.duration_since(at.0).unsigned_abs();
    sweep_interval(last, interval)
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

/// How long after sweep `last` the next one is due: `interval`, or [`SWEEP_RETRY`] when it did not
/// run to the end.
pub fn sweep_interval(last: &DataCollection, interval: Duration) -> Duration {
    if last.swept {
        interval
    } else {
        interval.min(SWEEP_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FilesystemLocation, S3Location, SecretRef, StorageLocationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn s3(prefix: Option<&str>) -> StorageLocationSpec {
        StorageLocationSpec {
            filesystem: None,
            s3: Some(S3Location {
                bucket: "backups".into(),
                endpoint: None,
                region: "us-east-1".into(),
                prefix: prefix.map(str::to_owned),
                credentials_secret: SecretRef { name: "s3".into() },
                force_path_style: false,
                ca_bundle: None,
            }),
        }
    }

    #[test]
    fn urls_name_the_bucket_prefix_and_key() {
        let key = archive_key("multicluster-system", "shop-1");
        assert_eq!(key, "multicluster-system/shop-1.tar.gz");
        assert_eq!(
            object_url(&s3(Some("/fleet/")), &key),
            "s3://backups/fleet/multicluster-system/shop-1.tar.gz"
        );
        assert_eq!(object_url(&s3(None), "k"), "s3://backups/k");
        let fs = StorageLocationSpec {
            filesystem: Some(FilesystemLocation {
                path: "/var/snapshots/".into(),
            }),
            s3: None,
        };
        assert_eq!(object_url(&fs, "k"), "file:///var/snapshots/k");
    }

    fn checked(generation: i64, at: Timestamp, request: Option<&str>) -> StorageLocation {
        let mut location = StorageLocation::new("minio", s3(None));
        location.metadata.generation = Some(1);
        location.status = Some(StorageLocationStatus {
            conditions: vec![Condition {
                type_: AVAILABLE.into(),
                status: "True".into(),
                observed_generation: Some(generation),
                last_transition_time: Time(at),
                reason: "Checked".into(),
                message: String::new(),
            }],
            last_check_time: Some(Time(at)),
            last_check_request: request.map(str::to_owned),
            last_collection: None,
        });
        location
    }

    #[test]
    fn locations_on_one_bucket_and_prefix_share_a_store() {
        assert!(same_store(&s3(None), &s3(None)));
        assert!(same_store(&s3(Some("a/")), &s3(Some("/a"))));
        assert!(!same_store(&s3(None), &s3(Some("team"))), "its own keys");
        assert!(!same_store(&s3(Some("team-a")), &s3(Some("team-b"))));
        let dir = |path: &str| StorageLocationSpec {
            filesystem: Some(FilesystemLocation { path: path.into() }),
            s3: None,
        };
        assert!(same_store(&dir("/backups/"), &dir("/backups")));
        assert!(!same_store(&dir("/backups"), &s3(None)));
    }

    #[test]
    fn a_sweep_waits_only_for_restores_no_snapshot_keeps_referenced() {
        use crate::api::{NamespaceRestoreSpec, NamespaceRestoreStatus, NamespaceSnapshotSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let snapshot = |name: &str, location: &str, deleting: bool| {
            let mut s = NamespaceSnapshot::new(
                name,
                serde_json::from_value::<NamespaceSnapshotSpec>(serde_json::json!({
                    "cluster": "member-1", "namespace": "shop", "location": location
                }))
                .unwrap(),
            );
            s.metadata.namespace = Some("multicluster-system".into());
            if deleting {
                s.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
            }
            s
        };
        let restore = |name: &str, of: &str, phase: RestorePhase| {
            let mut r = NamespaceRestore::new(
                name,
                serde_json::from_value::<NamespaceRestoreSpec>(serde_json::json!({
                    "snapshot": of, "targetCluster": "member-2", "targetNamespace": "shop"
                }))
                .unwrap(),
            );
            r.metadata.namespace = Some("multicluster-system".into());
            r.status = Some(NamespaceRestoreStatus {
                phase,
                ..Default::default()
            });
            r
        };
        let snapshots = [
            snapshot("live", "minio", false),
            snapshot("going", "minio", true),
            snapshot("elsewhere", "other", true),
        ];
        let holding = |restores: &[NamespaceRestore]| {
            restore_holding_data("minio", restores, &snapshots)
                .and_then(|r| r.metadata.name.clone())
        };
        assert_eq!(
            holding(&[restore("a", "live", RestorePhase::Hydrating)]),
            None
        );
        assert_eq!(
            holding(&[restore("a", "elsewhere", RestorePhase::Hydrating)]),
            None
        );
        assert_eq!(
            holding(&[restore("a", "going", RestorePhase::Restoring)]),
            None
        );
        assert_eq!(
            holding(&[restore("a", "gone", RestorePhase::Pending)]),
            None
        );
        assert_eq!(
            holding(&[
                restore("a", "live", RestorePhase::Pending),
                restore("b", "going", RestorePhase::Pending),
            ]),
            Some("b".into())
        );
        assert_eq!(
            holding(&[restore("c", "gone", RestorePhase::Hydrating)]),
            Some("c".into())
        );
    }

    #[test]
    fn a_location_is_swept_when_never_swept_asked_or_due() {
        let hour = Duration::from_secs(3600);
        let at: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let mut location = checked(1, at, None);
        assert_eq!(collection_due(&location, at, hour), None, "never swept");
        let swept = |request: Option<&str>| crate::api::DataCollection {
            time: Some(Time(at)),
            request: request.map(str::to_owned),
            swept: true,
            ..Default::default()
        };
        location.status.as_mut().unwrap().last_collection = Some(swept(None));
        let later = at
            .checked_add(jiff::SignedDuration::from_secs(600))
            .unwrap();
        assert_eq!(
            collection_due(&location, later, hour),
            Some(Duration::from_secs(3000))
        );
        let much_later = at
            .checked_add(jiff::SignedDuration::from_secs(3600))
            .unwrap();
        assert_eq!(collection_due(&location, much_later, hour), None);
        location.metadata.annotations =
            Some([(keys::COLLECT_REQUESTED.to_owned(), "t1".to_owned())].into());
        assert_eq!(collection_due(&location, later, hour), None, "asked");
        location.status.as_mut().unwrap().last_collection = Some(swept(Some("t1")));
        assert!(collection_due(&location, later, hour).is_some(), "answered");
        let mut failed = swept(Some("t1"));
        failed.swept = false;
        location.status.as_mut().unwrap().last_collection = Some(failed);
        assert_eq!(collection_due(&location, later, hour), None, "retried");
    }

    #[test]
    fn a_location_is_checked_when_new_changed_asked_or_stale() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().expect("time");
        let minute_ago = now - Duration::from_secs(60);
        // New: no status yet.
        assert_eq!(check_due(&StorageLocation::new("x", s3(None)), now), None);
        // Checked a minute ago at this generation: due in four minutes.
        let fresh = checked(1, minute_ago, None);
        assert_eq!(check_due(&fresh, now), Some(Duration::from_secs(240)));
        // Its spec changed since.
        assert_eq!(check_due(&checked(0, minute_ago, None), now), None);
        // Stale.
        assert_eq!(check_due(&checked(1, now - RECHECK_AFTER, None), now), None);
        // Asked for, once: a served request is not served again.
        let mut asked = checked(1, minute_ago, Some("t1"));
        asked
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(keys::CHECK_REQUESTED.into(), "t2".into());
        assert_eq!(check_due(&asked, now), None);
        asked.status.as_mut().expect("status").last_check_request = Some("t2".into());
        assert!(check_due(&asked, now).is_some());
    }
}
