//! The snapshot archive: one self-describing object, a gzip-compressed tar holding `manifest.json`
//! first (format version, source cluster and namespace, time, tool version, the application
//! inventory, what was left out and why, and every resource and volume snapshot with a checksum)
//! and then each resource as `resources/<n>.json`. Its SHA-256 is recorded in the
//! `NamespaceSnapshot`'s status; reading checks it, the format version and every entry before
//! anything is written to a target, and says which check failed.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::ApplicationSummary;

/// The format this tool writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    /// `kubectl-multicluster <version>` (the hub server's).
    pub tool: String,
    pub source_cluster: String,
    pub source_namespace: String,
    /// RFC 3339.
    pub time: String,
    pub inventory: Vec<ApplicationSummary>,
    pub left_out: Vec<LeftOut>,
    pub resources: Vec<ResourceEntry>,
    pub volume_snapshots: Vec<VolumeEntry>,
}

/// Something the snapshot did not capture, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeftOut {
    pub kind: String,
    /// Absent when a whole kind was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceEntry {
    pub path: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `sha256:<hex>` of the entry's bytes.
    pub checksum: String,
}

/// A CSI volume snapshot the archive refers to (its data stays with the storage system).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeEntry {
    pub claim: String,
    pub driver: String,
    pub snapshot_handle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The `VolumeGroupSnapshot` it was cut in, when its driver snapshots groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The volume's files in the location, when they were exported: a restore into any member
    /// hydrates a new claim from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<VolumeData>,
}

/// A volume's files exported to the location (see [`crate::snapshot::data`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeData {
    /// `sha256` hex of the volume's index: `data/indexes/<index>` in the location.
    pub index: String,
    /// File bytes (holes not counted).
    pub bytes: u64,
    pub files: u64,
}

/// A read archive: its manifest and resources, in the manifest's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub manifest: Manifest,
    pub resources: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "the archive was altered or is incomplete: its checksum is {found}, the snapshot recorded {expected}"
    )]
    ChecksumMismatch { expected: String, found: String },
    #[error("the archive is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("the archive has no {MANIFEST} first: it is not a kubectl-multicluster snapshot")]
    NoManifest,
    #[error(
        "the archive's format version {0} is newer than this tool reads (up to {FORMAT_VERSION}): upgrade kubectl-multicluster"
    )]
    UnknownVersion(u32),
    #[error("entry {path} was altered: its checksum is {found}, the manifest says {expected}")]
    EntryAltered {
        path: String,
        expected: String,
        found: String,
    },
    #[error("entry {0}, listed in the manifest, is missing from the archive")]
    EntryMissing(String),
    #[error(
        "the archive is too large to read: {what} is {size} bytes, over the limit of {limit} \
         (raise it with the hub server's --restore-max-{flag} and its memory limit)"
    )]
    TooLarge {
        what: String,
        size: u64,
        limit: u64,
        flag: &'static str,
    },
    #[error(
        "the archive holds more than {0} entries (raise it with the hub server's --restore-max-archive-entries)"
    )]
    TooManyEntries(usize),
}

/// How much of an archive a reader holds in memory at most: a restore runs in a hub server pod
/// with a memory limit, and an archive over that would crash it on every replica in turn. Each
/// is checked against the sizes the tar headers declare, before an entry's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The compressed archive as stored.
    pub archive_bytes: u64,
    /// One entry, uncompressed (a Kubernetes object is at most about 1.5 MiB in etcd).
    pub entry_bytes: u64,
    /// Every entry together, uncompressed.
    pub total_bytes: u64,
    /// Entries, the manifest included.
    pub entries: usize,
}

impl Default for Limits {
    /// Sized for the hub server's 256 MiB pod: JSON values take a few times their text in memory.
    fn default() -> Self {
        Limits {
            archive_bytes: 32 << 20,
            entry_bytes: 4 << 20,
            total_bytes: 48 << 20,
            entries: 100_000,
        }
    }
}

impl Limits {
    /// Refuses an archive whose stored size is over [`Limits::archive_bytes`], before it is read.
    pub fn check_archive_size(&self, size: u64) -> Result<(), ArchiveError> {
        if size > self.archive_bytes {
            return Err(ArchiveError::TooLarge {
                what: "the archive".to_owned(),
                size,
                limit: self.archive_bytes,
                flag: "archive-bytes",
            });
        }
        Ok(())
    }
}

/// Keeps the running totals of one read against its [`Limits`].
struct Budget {
    limits: Limits,
    entries: usize,
    total: u64,
}

impl Budget {
    /// Admits one more entry of `size` bytes (as its header declares) named `path`.
    fn admit(&mut self, path: &str, size: u64) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(ArchiveError::TooManyEntries(self.limits.entries));
        }
        if size > self.limits.entry_bytes {
            return Err(ArchiveError::TooLarge {
                what: format!("entry {path}"),
                size,
                limit: self.limits.entry_bytes,
                flag: "archive-entry-bytes",
            });
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.total_bytes {
            return Err(ArchiveError::TooLarge {
                what: format!("its content up to entry {path}"),
                size: self.total,
                limit: self.limits.total_bytes,
                flag: "archive-total-bytes",
            });
        }
        Ok(())
    }
}

/// The bytes of one tar entry, after the budget admitted the size its header declares.
fn entry_bytes<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    budget: &mut Budget,
) -> Result<(String, Vec<u8>), ArchiveError> {
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let path = entry
        .path()
        .map_err(corrupt)?
        .to_string_lossy()
        .into_owned();
    let size = entry.header().size().map_err(corrupt)?;
    budget.admit(&path, size)?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Never more than the header declared, whatever follows.
    entry.take(size).read_to_end(&mut data).map_err(corrupt)?;
    Ok((path, data))
}

/// `sha256:<hex>` of `bytes` (also the form of OCI digests, which the release writes).
pub fn checksum(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// An `io::Write` that hashes what is written to it (SHA-256), for digests of serialised values
/// without building their text.
#[derive(Default)]
pub struct Sha256Writer(Sha256);

impl std::fmt::Debug for Sha256Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Writer")
    }
}

impl Sha256Writer {
    /// The lowercase hex SHA-256 of everything written.
    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Builds the archive from the manifest's description and the (stripped) resources; fills in
/// each resource's entry. Returns the bytes and their checksum.
pub fn write(mut manifest: Manifest, resources: &[Value]) -> std::io::Result<(Vec<u8>, String)> {
    let entries: Vec<(ResourceEntry, Vec<u8>)> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let entry = ResourceEntry {
                path: format!("resources/{i:05}.json"),
                api_version: s(&r["apiVersion"]),
                kind: s(&r["kind"]),
                name: s(&r["metadata"]["name"]),
                checksum: checksum(&bytes),
            };
            Ok((entry, bytes))
        })
        .collect::<std::io::Result<_>>()?;
    manifest.format_version = FORMAT_VERSION;
    manifest.resources = entries.iter().map(|(e, _)| e.clone()).collect();
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    let files: Vec<(&str, &[u8])> = std::iter::once((MANIFEST, manifest_bytes.as_slice()))
        .chain(entries.iter().map(|(e, b)| (e.path.as_str(), b.as_slice())))
        .collect();
    let bytes = pack(&files)?;
    let sum = checksum(&bytes);
    Ok((bytes, sum))
}

/// A gzip-compressed tar of `files` (path, bytes), in order.
pub(crate) fn pack(files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, *bytes)?;
    }
    tar.into_inner()?.finish()
}

/// Reads and checks an archive within the default [`Limits`]; see [`read_within`].
pub fn read(bytes: &[u8], expected: Option<&str>) -> Result<Archive, ArchiveError> {
    read_within(bytes, expected, Limits::default())
}

/// Reads and checks an archive: its size, the whole checksum (when the snapshot recorded one),
/// the compression and tar structure, the manifest first, its format version, every entry's
/// declared size against `limits` before it is read, and every entry's checksum. Nothing is
/// returned unless all hold.
pub fn read_within(
    bytes: &[u8],
    expected: Option<&str>,
    limits: Limits,
) -> Result<Archive, ArchiveError> {
    limits.check_archive_size(bytes.len() as u64)?;
    if let Some(expected) = expected {
        let found = checksum(bytes);
        if found != expected {
            return Err(ArchiveError::ChecksumMismatch {
                expected: expected.to_owned(),
                found,
            });
        }
    }
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt(e.to_string());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut entries = tar.entries().map_err(corrupt)?;
    let mut budget = Budget {
        limits,
        entries: 0,
        total: 0,
    };
    let mut first = entries
        .next()
        .ok_or(ArchiveError::NoManifest)?
        .map_err(corrupt)?;
    if first.path().map_err(corrupt)?.to_string_lossy() != MANIFEST {
        return Err(ArchiveError::NoManifest);
    }
    let (_, text) = entry_bytes(&mut first, &mut budget)?;
    // The version first, so that a newer manifest is refused as newer, not as unreadable.
    let version = serde_json::from_slice::<Value>(&text)
        .map_err(|e| ArchiveError::Corrupt(format!("{MANIFEST}: {e}")))?["formatVersion"]
        .as_u64()
        .ok_or_else(|| ArchiveError::Corrupt(format!("{MANIFEST} has no formatVersion")))?;
    if version > u64::from(FORMAT_VERSION) {
        return Err(ArchiveError::UnknownVersion(
            u32::try_from(version).unwrap_or(u32::MAX),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| ArchiveError::Corrupt(format!("{MANIFEST}: {e}")))?;
    let mut found: std::collections::HashMap<String, Vec<u8>> = Default::default();
    for entry in entries {
        let (path, data) = entry_bytes(&mut entry.map_err(corrupt)?, &mut budget)?;
        found.insert(path, data);
    }
    let mut resources = Vec::with_capacity(manifest.resources.len());
    for r in &manifest.resources {
        let data = found
            .get(&r.path)
            .ok_or_else(|| ArchiveError::EntryMissing(r.path.clone()))?;
        let sum = checksum(data);
        if sum != r.checksum {
            return Err(ArchiveError::EntryAltered {
                path: r.path.clone(),
                expected: r.checksum.clone(),
                found: sum,
            });
        }
        resources.push(
            serde_json::from_slice(data)
                .map_err(|e| ArchiveError::Corrupt(format!("{}: {e}", r.path)))?,
        );
    }
    Ok(Archive {
        manifest,
        resources,
    })
}
