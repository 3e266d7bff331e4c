//! Where the playground CSI driver keeps its volumes and snapshots: directories on the node, with a
//! JSON record beside each.
//!
//! ```text
//! STATE/volumes/<id>/          the volume's files (what pods see, bind-mounted)
//! STATE/volumes/<id>.json      its record: name, capacity, where its content came from
//! STATE/snapshots/<id>/        a copy of the volume's files when the snapshot was cut
//! STATE/snapshots/<id>.json
//! STATE/groups/<id>.json       a group snapshot: the snapshots it holds
//! ```
//!
//! Ids derive from the names the callers choose (a digest), so a retried create finds what the
//! first attempt made: CSI requires creates to be idempotent by name. Copies are `cp -a` (owners,
//! modes, times, links and sparse files kept), made into a temporary directory and renamed into
//! place, so that a crash never leaves a half-copied snapshot that looks complete.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub capacity_bytes: i64,
    /// The snapshot the volume was restored from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    pub source_volume_id: String,
    pub size_bytes: i64,
    /// Nanoseconds since the Unix epoch.
    pub created_nanos: i64,
    /// The group snapshot this one was cut in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub snapshot_ids: Vec<String>,
    /// Nanoseconds since the Unix epoch.
    pub created_nanos: i64,
}

/// An id for `name` in `kind`'s namespace of ids: stable across retries, distinct across names.
pub fn id_for(kind: &str, name: &str) -> String {
    let digest =
        multicluster_core::snapshot::archive::sha256_hex(format!("{kind}\0{name}").as_bytes());
    format!("{kind}-{}", &digest[..20])
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for dir in ["volumes", "snapshots", "groups", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.root.join("volumes").join(id)
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    fn record_path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(format!("{id}.json"))
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> std::io::Result<Option<T>> {
        // An id from a caller is a path component: anything that could leave the directory is no
        // id of ours.
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Ok(None);
        }
        match std::fs::read(self.record_path(kind, id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a record atomically (temporary file, then rename).
    fn write<T: Serialize>(&self, kind: &str, id: &str, record: &T) -> std::io::Result<()> {
        let tmp = self.root.join("tmp").join(format!("{kind}-{id}.json"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, self.record_path(kind, id))
    }

    fn all<T: serde::de::DeserializeOwned>(&self, kind: &str) -> std::io::Result<Vec<T>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(self.root.join(kind))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path)?;
                records.push(serde_json::from_slice(&bytes).map_err(std::io::Error::other)?);
            }
        }
        Ok(records)
    }

    pub fn volume(&self, id: &str) -> std::io::Result<Option<VolumeRecord>> {
        self.read("volumes", id)
    }

    pub fn snapshot(&self, id: &str) -> std::io::Result<Option<SnapshotRecord>> {
        self.read("snapshots", id)
    }

    pub fn group(&self, id: &str) -> std::io::Result<Option<GroupRecord>> {
        self.read("groups", id)
    }

    pub fn snapshots(&self) -> std::io::Result<Vec<SnapshotRecord>> {
        let mut all: Vec<SnapshotRecord> = self.all("snapshots")?;
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// Creates the volume's directory (empty, or a copy of `from_snapshot`'s files), then records it.
    pub fn create_volume(&self, record: &VolumeRecord) -> std::io::Result<()> {
        let dir = self.volume_dir(&record.id);
        match &record.from_snapshot {
            Some(snapshot) => copy_into_place(&self.snapshot_dir(snapshot), &dir, &self.root)?,
            None => std::fs::create_dir_all(&dir)?,
        }
        self.write("volumes", &record.id, record)
    }

    pub fn delete_volume(&self, id: &str) -> std::io::Result<()> {
        remove_if_present(&self.record_path("volumes", id))?;
        remove_dir_if_present(&self.volume_dir(id))
    }

    /// Copies the volume's files as they are now into the snapshot, then records it.
    pub fn create_snapshot(&self, record: &SnapshotRecord) -> std::io::Result<()> {
        copy_into_place(
            &self.volume_dir(&record.source_volume_id),
            &self.snapshot_dir(&record.id),
            &self.root,
        )?;
        self.write("snapshots", &record.id, record)
    }

    pub fn delete_snapshot(&self, id: &str) -> std::io::Result<()> {
        remove_if_present(&self.record_path("snapshots", id))?;
        remove_dir_if_present(&self.snapshot_dir(id))
    }

    pub fn write_group(&self, record: &GroupRecord) -> std::io::Result<()> {
        self.write("groups", &record.id, record)
    }

    pub fn delete_group(&self, id: &str) -> std::io::Result<()> {
        remove_if_present(&self.record_path("groups", id))
    }

    /// Bytes the files under the volume's directory take on disk.
    pub fn used_bytes(&self, volume_id: &str) -> i64 {
        disk_usage(&self.volume_dir(volume_id))
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_dir_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `cp -a from/. tmp` then `rename(tmp, to)`: the copy appears whole or not at all.
fn copy_into_place(from: &Path, to: &Path, root: &Path) -> std::io::Result<()> {
    if to.exists() {
        return Ok(());
    }
    let tmp = root.join("tmp").join(
        to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    remove_dir_if_present(&tmp)?;
    std::fs::create_dir_all(&tmp)?;
    let out = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(&tmp)
        .output()?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(std::io::Error::other(format!(
            "copying {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, to)
}

fn disk_usage(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = (meta.blocks() * 512) as i64;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_usage(&e.path()))
        .sum::<i64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_name_and_distinct_across_names_and_kinds() {
        assert_eq!(id_for("vol", "a"), id_for("vol", "a"));
        assert_ne!(id_for("vol", "a"), id_for("vol", "b"));
        assert_ne!(id_for("vol", "a"), id_for("snap", "a"));
        assert!(id_for("vol", "a").starts_with("vol-"));
    }

    #[test]
    fn a_snapshot_is_a_copy_and_a_restore_copies_it_back() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let volume = VolumeRecord {
            id: "vol-1".into(),
            name: "pvc-1".into(),
            capacity_bytes: 1 << 20,
            from_snapshot: None,
        };
        store.create_volume(&volume).unwrap();
        std::fs::write(store.volume_dir("vol-1").join("data"), "before").unwrap();
        std::os::unix::fs::symlink("data", store.volume_dir("vol-1").join("link")).unwrap();
        let snapshot = SnapshotRecord {
            id: "snap-1".into(),
            name: "s".into(),
            source_volume_id: "vol-1".into(),
            size_bytes: 1 << 20,
            created_nanos: 0,
            group: None,
        };
        store.create_snapshot(&snapshot).unwrap();
        std::fs::write(store.volume_dir("vol-1").join("data"), "after").unwrap();
        store
            .create_volume(&VolumeRecord {
                id: "vol-2".into(),
                name: "pvc-2".into(),
                capacity_bytes: 1 << 20,
                from_snapshot: Some("snap-1".into()),
            })
            .unwrap();
        let restored = store.volume_dir("vol-2");
        assert_eq!(
            std::fs::read_to_string(restored.join("data")).unwrap(),
            "before"
        );
        assert_eq!(
            std::fs::read_link(restored.join("link")).unwrap(),
            PathBuf::from("data")
        );
        assert_eq!(store.snapshots().unwrap(), [snapshot]);
        assert_eq!(
            store
                .volume("vol-2")
                .unwrap()
                .unwrap()
                .from_snapshot
                .as_deref(),
            Some("snap-1")
        );
        assert_eq!(
            store.volume("../x").unwrap(),
            None,
            "no path escapes the store"
        );
        store.delete_volume("vol-1").unwrap();
        store.delete_volume("vol-1").unwrap();
        assert!(!store.volume_dir("vol-1").exists());
    }
}
