//! Storage locations as pure functions: where a snapshot's archive goes inside a location, the
//! address users see for it, and when a location is due for its next check.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{StorageLocation, StorageLocationSpec};
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
    let interval = if last.swept {
        interval
    } else {
        interval.min(SWEEP_RETRY)
    };
    interval.checked_sub(age).filter(|left| !left.is_zero())
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
