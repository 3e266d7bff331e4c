//! Volume data in a storage location, as the data mover writes and reads it (issue 20): every
//! file's bytes cut into content-defined chunks (FastCDC), each chunk stored once under the
//! SHA-256 of its bytes, zstd-compressed; and one index per exported volume listing its files
//! (kind, mode, owner, modification time, and for a file the chunks at their offsets), itself
//! stored under its digest, which the snapshot's manifest records.
//!
//! A chunk already in the location is never uploaded again: a second snapshot of a volume that
//! changed a little moves only the chunks around the change. A run of zeros as long as a chunk is
//! a hole: not stored, not written back, so a sparse file stays sparse.
//!
//! A chunk shorter than [`PACK_BELOW`] (a small file, the tail of a large one) is not an object of
//! its own: small chunks are packed, each compressed on its own, into objects of about
//! [`PACK_TARGET`], as restic packs its blobs. A volume of 10,000 small files is then a few dozen
//! objects to write and read, not 10,000. The index says where in which pack each one is.
//!
//! Layout under the location's root (beside the snapshot archives):
//! - `data/chunks/<first two hex digits>/<sha256>`: a chunk, zstd;
//! - `data/packs/<first two hex digits>/<id>`: small chunks, each zstd on its own, one after
//!   another; the id is random (128 bits), so two exports never write the same pack;
//! - `data/indexes/<sha256>`: a volume index, JSON, zstd; the digest is of the uncompressed JSON.

use serde::{Deserialize, Serialize};

/// Chunk sizes (FastCDC's minimum, average and maximum): a change moves about one average chunk,
/// and a large file costs one object per megabyte.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// The largest volume index (uncompressed JSON) this build writes or reads: about 1.3 million
/// files or chunks. An export that would write a larger one fails saying so, instead of leaving an
/// index no restore could read.
pub const INDEX_MAX_BYTES: usize = 256 << 20;

/// The index format this build writes: 2 has packed chunks. It reads [`INDEX_FORMATS_READ`].
pub const INDEX_FORMAT: u32 = 2;
/// The index formats this build reads (1 has no packs, and reads as 2).
pub const INDEX_FORMATS_READ: std::ops::RangeInclusive<u32> = 1..=INDEX_FORMAT;

/// A chunk shorter than this (bytes of file data) goes into a pack.
pub const PACK_BELOW: u32 = CHUNK_MIN;
/// A pack is written once it holds this many (compressed) bytes.
pub const PACK_TARGET: usize = 8 << 20;

/// Where chunk `digest` is kept.
pub fn chunk_key(digest: &str) -> String {
    format!("data/chunks/{}/{digest}", digest.get(..2).unwrap_or("00"))
}

/// Where pack `id` is kept.
pub fn pack_key(id: &str) -> String {
    format!("data/packs/{}/{id}", id.get(..2).unwrap_or("00"))
}

/// Where a chunk stored in a pack is: `stored` compressed bytes at `at` in pack `pack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Packed {
    pub pack: String,
    pub at: u64,
    pub stored: u32,
}

/// Where the index with `digest` is kept.
pub fn index_key(digest: &str) -> String {
    format!("data/indexes/{digest}")
}

/// One exported volume: what its files were when the volume snapshot was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeIndex {
    pub format: u32,
    /// Parents before children; a hard link after the path it links to.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Relative to the volume's root, `/`-separated; never absolute, never `..`.
    pub path: String,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        /// Its stored chunks in offset order; the bytes between them are a hole (zeros).
        chunks: Vec<ChunkRef>,
    },
    Symlink {
        target: String,
    },
    /// Another name of the file at `to` (listed before it).
    HardLink {
        to: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkRef {
    pub offset: u64,
    pub len: u32,
    /// SHA-256 of the chunk's bytes, lower-case hex.
    pub digest: String,
    /// In a pack; otherwise the chunk is its own object, [`chunk_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packed: Option<Packed>,
}

impl ChunkRef {
    /// The key of the object the chunk is in: its own, or its pack's.
    pub fn object_key(&self) -> String {
        match &self.packed {
            Some(p) => pack_key(&p.pack),
            None => chunk_key(&self.digest),
        }
    }
}

/// Whether `data` is all zeros: a hole, never stored.
pub fn is_hole(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}

/// Why an index read back from a location cannot be restored from; `None`: it can. A path that
/// escapes the volume (`..`, absolute, or under anything but a directory listed before it, such
/// as a symlink: `evil -> /etc` then `evil/passwd`), a path listed twice, chunks that overlap or
/// run past the file's end, a hard link to anything but a file listed before it, or a digest that
/// is not one: each named with its path. An index is data from outside the cluster; a forged one
/// must not make the mover write outside the volume.
pub fn index_problem(index: &VolumeIndex) -> Option<String> {
    if !INDEX_FORMATS_READ.contains(&index.format) {
        return Some(format!(
            "the volume index has format {} and this build reads formats {} to {}: restore with the version that wrote it",
            index.format,
            INDEX_FORMATS_READ.start(),
            INDEX_FORMATS_READ.end()
        ));
    }
    // Path → Some(true) for a directory, Some(false) for a file, None for a link (neither a
    // parent nor a hard link's target).
    let mut seen: std::collections::BTreeMap<&str, Option<bool>> =
        std::collections::BTreeMap::new();
    for entry in &index.entries {
        let path = &entry.path;
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Some(format!(
                "the volume index names the path {path:?}, which is not inside the volume"
            ));
        }
        if seen.contains_key(path.as_str()) {
            return Some(format!("the volume index lists {path} twice"));
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && seen.get(parent) != Some(&Some(true))
        {
            return Some(format!(
                "the volume index lists {path} under {parent}, which it does not list before as a directory"
            ));
        }
        match &entry.kind {
            EntryKind::File { size, chunks } => {
                let mut end = 0u64;
                for c in chunks {
                    let valid_digest = c.digest.len() == 64
                        && c.digest
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                    if !valid_digest {
                        return Some(format!(
                            "file {path}: {:?} is not a SHA-256 digest",
                            c.digest
                        ));
                    }
                    if let Some(p) = &c.packed
                        && !is_pack_id(&p.pack)
                    {
                        return Some(format!("file {path}: {:?} is not a pack id", p.pack));
                    }
                    if c.offset < end || c.offset.saturating_add(u64::from(c.len)) > *size {
                        return Some(format!(
                            "file {path}: its chunk at offset {} ({} bytes) overlaps another or runs past its size {size}",
                            c.offset, c.len
                        ));
                    }
                    end = c.offset + u64::from(c.len);
                }
            }
            EntryKind::HardLink { to } if seen.get(to.as_str()) != Some(&Some(false)) => {
                return Some(format!(
                    "hard link {path} names {to}, which the index does not list before it as a file"
                ));
            }
            _ => {}
        }
        let node = match entry.kind {
            EntryKind::Dir => Some(true),
            EntryKind::File { .. } => Some(false),
            EntryKind::Symlink { .. } | EntryKind::HardLink { .. } => None,
        };
        seen.insert(path.as_str(), node);
    }
    None
}

/// What moving one volume's data did, in status and in the follow progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The volume's index (export) or the index read (import).
    pub index_digest: String,
    pub files: u64,
    /// Bytes of file data (holes not counted).
    pub bytes: u64,
    /// Bytes of chunk data sent to (export) or read from (import) the location, uncompressed;
    /// on export, chunks the location already had are not counted.
    pub bytes_transferred: u64,
    /// Compressed bytes sent or read.
    pub bytes_stored: u64,
    pub chunks: u64,
    pub chunks_transferred: u64,
}

/// Where the data mover's objects are kept under a location's root: everything a sweep considers.
pub const DATA_PREFIX: &str = "data/";

/// Whether `id` is a pack id as exports make them: 32 lower-case hex digits.
pub fn is_pack_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl VolumeIndex {
    /// Every chunk the index's files use.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entries.iter().flat_map(|e| match &e.kind {
            EntryKind::File { chunks, .. } => chunks.as_slice(),
            _ => &[],
        })
    }

    /// The keys of the objects (chunks and packs) the index's files use; a pack once per chunk
    /// in it.
    pub fn object_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.chunks().map(ChunkRef::object_key)
    }
}

/// An object under [`DATA_PREFIX`], as a listing of the location gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    /// Stored (compressed) bytes.
    pub size: u64,
    pub last_modified: jiff::Timestamp,
}

/// What a sweep of a location's data does: the keys to delete, and its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    pub remove: Vec<String>,
    pub chunks_kept: u64,
    pub bytes_kept: u64,
    pub chunks_removed: u64,
    pub bytes_removed: u64,
    pub indexes_removed: u64,
    /// Unreferenced objects younger than the grace period, kept for now.
    pub waiting: u64,
}

/// Which of the `stored` chunks, packs and indexes a sweep deletes at `now`: indexes whose digest
/// is not in `indexes` and chunks and packs whose key is not in `objects` (what the remaining
/// snapshots reference), last written before `now - grace`. A pack goes only once none of its
/// chunks is referenced. The grace period covers an export at work: its chunks and packs are
/// uploaded before the index that references them, and its index before the snapshot that records
/// it. Keys that are none of these are left alone.
pub fn sweep(
    stored: &[Stored],
    indexes: &std::collections::BTreeSet<String>,
    objects: &std::collections::BTreeSet<String>,
    now: jiff::Timestamp,
    grace: std::time::Duration,
) -> Sweep {
    let cutoff = jiff::SignedDuration::try_from(grace)
        .ok()
        .and_then(|g| now.checked_sub(g).ok())
        .unwrap_or(jiff::Timestamp::MIN);
    let mut out = Sweep::default();
    for object in stored {
        let (is_data, referenced) =
            if object.key.starts_with("data/chunks/") || object.key.starts_with("data/packs/") {
                (true, objects.contains(&object.key))
            } else if let Some(digest) = object.key.strip_prefix("data/indexes/") {
                (false, indexes.contains(digest))
            } else {
                continue;
            };
        if referenced {
            if is_data {
                out.chunks_kept += 1;
                out.bytes_kept += object.size;
            }
        } else if object.last_modified > cutoff {
            out.waiting += 1;
        } else {
            out.remove.push(object.key.clone());
            if is_data {
                out.chunks_removed += 1;
                out.bytes_removed += object.size;
            } else {
                out.indexes_removed += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_unreferenced_data_older_than_the_grace_period() {
        let now: jiff::Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let old = now
            .checked_sub(jiff::SignedDuration::from_secs(7200))
            .unwrap();
        let young = now
            .checked_sub(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let at = |key: &str, size, last_modified| Stored {
            key: key.to_owned(),
            size,
            last_modified,
        };
        let stored = [
            at(&chunk_key("aa01"), 10, old),
            at(&chunk_key("aa02"), 20, old),
            at(&chunk_key("bb03"), 30, young),
            at(&index_key("i1"), 5, old),
            at(&index_key("i2"), 5, old),
            at("ns/snap.tar.gz", 100, old),
            at(&pack_key(&"1".repeat(32)), 1000, old),
            at(&pack_key(&"2".repeat(32)), 2000, old),
        ];
        let indexes = ["i1".to_owned()].into();
        let objects = [chunk_key("aa01"), pack_key(&"1".repeat(32))].into();
        let grace = std::time::Duration::from_secs(3600);
        let sweep = sweep(&stored, &indexes, &objects, now, grace);
        assert_eq!(
            sweep.remove,
            [
                chunk_key("aa02"),
                index_key("i2"),
                pack_key(&"2".repeat(32))
            ],
            "the archive, the referenced and the young stay"
        );
        assert_eq!(
            (sweep.chunks_kept, sweep.bytes_kept, sweep.chunks_removed),
            (2, 1010, 2)
        );
        assert_eq!(
            (sweep.bytes_removed, sweep.indexes_removed, sweep.waiting),
            (2020, 1, 1)
        );
    }

    fn file(path: &str, size: u64, chunks: &[(u64, u32)]) -> Entry {
        Entry {
            path: path.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            kind: EntryKind::File {
                size,
                chunks: chunks
                    .iter()
                    .map(|(offset, len)| ChunkRef {
                        offset: *offset,
                        len: *len,
                        digest: "ab".repeat(32),
                        packed: None,
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn an_index_that_escapes_the_volume_or_overlaps_its_chunks_is_refused_with_the_path() {
        let ok = VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![file("b", 10, &[(0, 4), (6, 4)])],
        };
        assert_eq!(
            index_problem(&ok),
            None,
            "a hole between two chunks is fine"
        );
        for (entries, want) in [
            (vec![file("../etc/passwd", 1, &[])], "not inside the volume"),
            (vec![file("/abs", 1, &[])], "not inside the volume"),
            (vec![file("a//b", 1, &[])], "not inside the volume"),
            (
                vec![file("f", 10, &[(0, 6), (4, 4)])],
                "file f: its chunk at offset 4",
            ),
            (vec![file("f", 10, &[(8, 4)])], "runs past its size 10"),
        ] {
            let problem = index_problem(&VolumeIndex {
                format: INDEX_FORMAT,
                entries,
            })
            .expect(want);
            assert!(problem.contains(want), "{problem}");
        }
        let mut packed = file("p", 10, &[(0, 4)]);
        if let EntryKind::File { chunks, .. } = &mut packed.kind {
            chunks[0].packed = Some(Packed {
                pack: "../../x".into(),
                at: 0,
                stored: 4,
            });
        }
        let problem = index_problem(&VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![packed],
        });
        assert!(problem.expect("refused").contains("not a pack id"));
        let older = VolumeIndex {
            format: 1,
            entries: vec![file("b", 10, &[(0, 4)])],
        };
        assert_eq!(index_problem(&older), None, "format 1 reads as 2");
        // Through a symlink listed before: `evil -> /etc`, then `evil/passwd`.
        let symlink = Entry {
            kind: EntryKind::Symlink {
                target: "/etc".into(),
            },
            ..file("evil", 0, &[])
        };
        let through = VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![symlink, file("evil/passwd", 1, &[])],
        };
        let problem = index_problem(&through).expect("refused");
        assert!(
            problem
                .contains("evil/passwd under evil, which it does not list before as a directory"),
            "{problem}"
        );
        let dir = Entry {
            kind: EntryKind::Dir,
            ..file("d", 0, &[])
        };
        let nested = VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![dir.clone(), file("d/f", 1, &[])],
        };
        assert_eq!(index_problem(&nested), None);
        let twice = VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![dir.clone(), dir],
        };
        assert!(index_problem(&twice).expect("refused").contains("twice"));
        let link = Entry {
            kind: EntryKind::HardLink { to: "later".into() },
            ..file("l", 0, &[])
        };
        let problem = index_problem(&VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![link],
        })
        .expect("refused");
        assert!(problem.contains("hard link l names later"), "{problem}");
        let newer = VolumeIndex {
            format: INDEX_FORMAT + 1,
            entries: Vec::new(),
        };
        assert!(index_problem(&newer).expect("refused").contains("format 3"));
    }

    #[test]
    fn the_index_is_json_a_user_can_read() {
        let index = VolumeIndex {
            format: INDEX_FORMAT,
            entries: vec![file("data/db", 5, &[(0, 5)])],
        };
        let json = serde_json::to_value(&index).expect("json");
        assert_eq!(json["entries"][0]["type"], "file");
        assert_eq!(json["entries"][0]["chunks"][0]["len"], 5);
        assert_eq!(
            serde_json::from_value::<VolumeIndex>(json).expect("back"),
            index
        );
        assert_eq!(
            chunk_key(&"ab".repeat(32)),
            format!("data/chunks/ab/{}", "ab".repeat(32))
        );
    }
}
