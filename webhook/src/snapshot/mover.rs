//! `multicluster-webhook mover`: moves one volume's files to a storage location and back, in the
//! format of [`multicluster_core::snapshot::data`]. On a member it runs in a pod that mounts the
//! volume (export: a claim made from the volume snapshot, read-only; import: the restored claim);
//! this module is that pod's work, and needs nothing of Kubernetes.
//!
//! Export reads each file once, cutting it into content-defined chunks as it reads (FastCDC over
//! a stream, so a file of any size takes a few chunks of memory), and uploads the chunks the
//! location does not have yet; then the index. Files unchanged since the parent index (size and
//! modification time) are not read at all. Import reads the index, checks it, writes every file's
//! chunks at their offsets (holes stay holes), verifying each chunk's digest, then links, owners,
//! modes and times, deepest first so that a directory's time is its own. Both move many files at
//! once under one bound on the chunks in memory: a volume of small files is as many small objects,
//! and one at a time would leave the store idle between them.
//!
//! Credentials never travel on the command line: an S3 location's keys come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), which the pod takes from the job's Secret.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, FileTimes};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use multicluster_core::api::{S3Location, SecretRef};
use multicluster_core::snapshot::archive::sha256_hex;
use multicluster_core::snapshot::data::{
    CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ChunkRef, Entry, EntryKind, INDEX_FORMAT, INDEX_MAX_BYTES,
    Moved, PACK_BELOW, PACK_TARGET, Packed, VolumeIndex, chunk_key, index_key, index_problem,
    is_hole, pack_key,
};
use multicluster_core::snapshot::mover::{
    ACCESS_KEY_ENV, ProgressLine, SECRET_KEY_ENV, termination_message,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Files read at once in an export, or written at once in an import: a volume of small files keeps
/// the store busy only with many files in flight, each being one small object.
const FILES_IN_FLIGHT: usize = 16;
/// Chunks in memory at once across all the files of one volume (each up to `CHUNK_MAX`, 4 MiB):
/// read and not yet stored, or downloading and not yet written. With the readers' buffers (5 MiB
/// per large file being read) and full packs on their way (8 MiB each), an export stays near
/// 300 MiB at worst, inside the pod's 1 GiB limit.
const CHUNKS_IN_FLIGHT: usize = 16;
/// How close to the parent's newest modification time a file's must be for it to be read again
/// although unchanged by size and time: more than any file system's clock tick (ext4 and XFS
/// stamp with the kernel's coarse clock, a few milliseconds).
const RACY_WINDOW_NS: i64 = 2_000_000_000;
/// Packs read at once in an import (each up to a few `PACK_TARGET`s of memory).
const PACKS_IN_FLIGHT: usize = 4;
/// The granularity at which import leaves zeros unwritten (a file system block).
const HOLE_BLOCK: usize = 4096;
/// zstd level: fast (hundreds of MB/s per core), most of the ratio.
const ZSTD_LEVEL: i32 = 3;

#[derive(clap::Args, Debug)]
pub struct MoverArgs {
    #[command(subcommand)]
    pub command: MoverCommand,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Also write the result (the JSON printed at the end) or the error to FILE: a pod's
    /// termination message, which its status keeps
    #[arg(long, value_name = "FILE")]
    pub message_file: Option<PathBuf>,
    /// Print `{"bytesDone":…,"bytesTotal":…}` every 2 s while moving
    #[arg(long)]
    pub progress: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum MoverCommand {
    /// Upload the files under SOURCE; prints what moved (JSON), with the index digest
    Export {
        #[arg(long)]
        source: PathBuf,
        /// The index of this volume's previous export: files whose size and modification time
        /// are unchanged are not read again, and its chunks are not looked for
        #[arg(long, value_name = "DIGEST")]
        parent: Option<String>,
    },
    /// Write the files of index DIGEST under TARGET, verifying every chunk; prints what moved
    Import {
        #[arg(long)]
        target: PathBuf,
        #[arg(long, value_name = "DIGEST")]
        index: String,
    },
}

/// Where the location is. An S3 location's keys come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` in the environment.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// A directory (a filesystem location mounted into the pod)
    #[arg(long, conflicts_with = "s3_bucket")]
    pub filesystem: Option<PathBuf>,
    #[arg(long)]
    pub s3_bucket: Option<String>,
    #[arg(long, requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long)]
    pub s3_prefix: Option<String>,
    #[arg(long)]
    pub s3_path_style: bool,
    /// PEM file of the CA that signs the S3 endpoint's certificate
    #[arg(long)]
    pub s3_ca_bundle: Option<PathBuf>,
}

impl StoreArgs {
    pub fn open(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        if let Some(dir) = &self.filesystem {
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .with_context(|| format!("opening directory {}", dir.display()))?
                .with_automatic_cleanup(true);
            return Ok(Arc::new(store));
        }
        let bucket = self
            .s3_bucket
            .clone()
            .context("say where the location is: --filesystem DIR or --s3-bucket NAME")?;
        let env = |key: &str| {
            std::env::var(key).map_err(|_| {
                anyhow!(
                    "{key} is not set: the mover takes the location's keys from the environment"
                )
            })
        };
        let ca_bundle = match &self.s3_ca_bundle {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the CA bundle {}", path.display()))?,
            ),
            None => None,
        };
        let location = S3Location {
            bucket,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            prefix: self.s3_prefix.clone(),
            // The keys come from the environment, not from a Secret the mover would read.
            credentials_secret: SecretRef {
                name: String::new(),
            },
            force_path_style: self.s3_path_style,
            ca_bundle,
        };
        // More patience than the hub server's checks: a transfer outlives a blip of the store.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..Default::default()
        };
        super::storage::s3_store(&location, env(ACCESS_KEY_ENV)?, env(SECRET_KEY_ENV)?, retry)
    }
}

/// Bytes done of bytes total in this run, for the progress lines.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    pub fn line(&self) -> ProgressLine {
        ProgressLine {
            bytes_done: self.done.load(Ordering::Relaxed),
            bytes_total: self.total.load(Ordering::Relaxed),
        }
    }
}

/// How often `--progress` prints a line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Prints the progress as a JSON line every [`PROGRESS_EVERY`] (the hub server reads the last).
async fn report(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        if let Ok(line) = serde_json::to_string(&progress.line()) {
            println!("{line}");
        }
    }
}

pub async fn run(args: MoverArgs) -> anyhow::Result<()> {
    let result = transfer(&args).await;
    if let Some(file) = &args.message_file {
        let message = match &result {
            Ok(moved) => serde_json::to_string(moved)?,
            Err(e) => format!("{e:#}"),
        };
        if let Err(e) = std::fs::write(file, termination_message(&message)) {
            tracing::warn!(file = %file.display(), error = %e, "writing the result to the message file");
        }
    }
    println!("{}", serde_json::to_string(&result?)?);
    Ok(())
}

async fn transfer(args: &MoverArgs) -> anyhow::Result<Moved> {
    let store = args.store.open()?;
    let progress = Arc::new(Progress::default());
    let reporter = args
        .progress
        .then(|| tokio::spawn(report(progress.clone())));
    let moved = match &args.command {
        MoverCommand::Export { source, parent } => {
            let parent = match parent {
                // Without it the export is whole, not wrong: every file is read and every chunk
                // looked for in the location.
                Some(digest) => read_index(store.as_ref(), digest)
                    .await
                    .inspect_err(|e| {
                        tracing::warn!(error = %format!("{e:#}"), "the parent index cannot be read; every file is read again");
                    })
                    .ok(),
                None => None,
            };
            export(source, store, &progress, parent.as_ref()).await
        }
        MoverCommand::Import { target, index } => import(target, store, index, &progress).await,
    };
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    moved
}

/// What the walk found, before any byte is read.
enum Found {
    Dir,
    File { size: u64 },
    Symlink { target: String },
    HardLink { to: String },
}

/// Every entry under `root`, parents first, in name order; hard links after their first name.
fn walk(root: &Path) -> anyhow::Result<Vec<(String, std::fs::Metadata, Found)>> {
    let mut out = Vec::new();
    let mut first_names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(root.join(&dir))
            .with_context(|| format!("reading directory {}", root.join(&dir).display()))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = dir.join(&name);
            let full = root.join(&rel);
            let meta = std::fs::symlink_metadata(&full)
                .with_context(|| format!("reading {}", full.display()))?;
            let path = rel
                .to_str()
                .with_context(|| format!("{} is not UTF-8", full.display()))?
                .to_owned();
            let kind = meta.file_type();
            let found = if kind.is_dir() {
                subdirs.push(rel);
                Found::Dir
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&full)?;
                Found::Symlink {
                    target: target
                        .to_str()
                        .with_context(|| format!("the target of {} is not UTF-8", full.display()))?
                        .to_owned(),
                }
            } else if kind.is_file() {
                match first_names.get(&(meta.dev(), meta.ino())) {
                    Some(first) if meta.nlink() > 1 => Found::HardLink { to: first.clone() },
                    _ => {
                        if meta.nlink() > 1 {
                            first_names.insert((meta.dev(), meta.ino()), path.clone());
                        }
                        Found::File { size: meta.len() }
                    }
                }
            } else {
                // Sockets, pipes and devices carry no data a restore could use.
                tracing::info!(path = %full.display(), "skipped: not a file, directory or link");
                continue;
            };
            out.push((path, meta, found));
        }
        // Depth first, in name order: reversed onto the stack.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Shared between the files and chunks of one export.
struct Uploads {
    store: Arc<dyn ObjectStore>,
    /// Chunks known to be in the location (the parent index's, found there, or sent by this run):
    /// digest → where, `None` for a chunk that is its own object.
    present: Mutex<HashMap<String, Option<Packed>>>,
    /// The pack being filled, written once it holds [`PACK_TARGET`] bytes (and the last at the
    /// end, before the index).
    open_pack: Mutex<Option<Pack>>,
    moved: Mutex<Moved>,
    progress: Arc<Progress>,
    /// One per chunk in memory (read and not yet uploaded): [`CHUNKS_IN_FLIGHT`].
    slots: Arc<Semaphore>,
}

/// A pack being filled: its random id and its bytes so far.
struct Pack {
    id: String,
    bytes: Vec<u8>,
}

impl Pack {
    fn new() -> anyhow::Result<Self> {
        let mut id = [0u8; 16];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut id)
            .map_err(|_| anyhow!("no random bytes for a pack id"))?;
        Ok(Pack {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            bytes: Vec::with_capacity(PACK_TARGET + (PACK_BELOW as usize)),
        })
    }
}

impl Uploads {
    /// Where chunk `digest` is, if the location has it (as far as this export knows).
    fn known(&self, digest: &str) -> Option<Option<Packed>> {
        self.present.lock().ok()?.get(digest).cloned()
    }

    fn count_sent(&self, len: u64, stored: u64) {
        if let Ok(mut m) = self.moved.lock() {
            m.bytes_transferred += len;
            m.bytes_stored += stored;
            m.chunks_transferred += 1;
        }
    }

    /// Puts chunk `data` (with `digest`) as an object of its own unless the location has it.
    async fn put(&self, digest: &str, data: Vec<u8>) -> anyhow::Result<()> {
        let key = StorePath::from(chunk_key(digest));
        match self.store.head(&key).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                let len = data.len() as u64;
                let compressed =
                    tokio::task::spawn_blocking(move || zstd::bulk::compress(&data, ZSTD_LEVEL))
                        .await??;
                let stored = compressed.len() as u64;
                self.store
                    .put(&key, PutPayload::from(compressed))
                    .await
                    .with_context(|| format!("uploading chunk {digest}"))?;
                self.count_sent(len, stored);
            }
            Err(e) => return Err(e).with_context(|| format!("looking for chunk {digest}")),
        }
        if let Ok(mut p) = self.present.lock() {
            p.insert(digest.to_owned(), None);
        }
        Ok(())
    }

    /// Adds small chunk `data` to the open pack; writes the pack once full. (A small chunk is not
    /// looked for in the location: that would cost a request per small file, which packing
    /// saves. A small chunk neither the parent nor this run has is stored again.)
    async fn pack(&self, digest: &str, data: Vec<u8>) -> anyhow::Result<Packed> {
        let len = data.len() as u64;
        let compressed =
            tokio::task::spawn_blocking(move || zstd::bulk::compress(&data, ZSTD_LEVEL)).await??;
        let (packed, full) = {
            let mut open = self
                .open_pack
                .lock()
                .map_err(|_| anyhow!("a pack upload panicked"))?;
            if open.is_none() {
                *open = Some(Pack::new()?);
            }
            let pack = open.as_mut().context("a pack is open")?;
            let packed = Packed {
                pack: pack.id.clone(),
                at: pack.bytes.len() as u64,
                stored: u32::try_from(compressed.len())?,
            };
            pack.bytes.extend_from_slice(&compressed);
            let full = if pack.bytes.len() >= PACK_TARGET {
                open.take()
            } else {
                None
            };
            (packed, full)
        };
        self.count_sent(len, compressed.len() as u64);
        if let Ok(mut p) = self.present.lock() {
            p.insert(digest.to_owned(), Some(packed.clone()));
        }
        if let Some(full) = full {
            self.write_pack(full).await?;
        }
        Ok(packed)
    }

    async fn write_pack(&self, pack: Pack) -> anyhow::Result<()> {
        self.store
            .put(
                &StorePath::from(pack_key(&pack.id)),
                PutPayload::from(pack.bytes),
            )
            .await
            .with_context(|| format!("uploading pack {}", pack.id))?;
        Ok(())
    }

    /// Writes the pack still open, if any: before the index that references it.
    async fn finish(&self) -> anyhow::Result<()> {
        let last = self
            .open_pack
            .lock()
            .map_err(|_| anyhow!("a pack upload panicked"))?
            .take();
        match last {
            Some(pack) => self.write_pack(pack).await,
            None => Ok(()),
        }
    }

    /// Hashes and stores one chunk read at `offset` (a hole is neither); returns its reference.
    async fn chunk(&self, offset: u64, data: Vec<u8>) -> anyhow::Result<Option<ChunkRef>> {
        let len = u32::try_from(data.len())?;
        if is_hole(&data) {
            self.progress.add_done(u64::from(len));
            return Ok(None);
        }
        let (data, digest) = tokio::task::spawn_blocking(move || {
            let digest = sha256_hex(&data);
            (data, digest)
        })
        .await?;
        let packed = match self.known(&digest) {
            Some(packed) => packed,
            None if len < PACK_BELOW => Some(self.pack(&digest, data).await?),
            None => {
                self.put(&digest, data).await?;
                None
            }
        };
        self.progress.add_done(u64::from(len));
        Ok(Some(ChunkRef {
            offset,
            len,
            digest,
            packed,
        }))
    }
}

/// Exports the files under `source` to `store`; returns what moved, with the index's digest.
///
/// With `parent` (this volume's index in the snapshot before), a file whose size and modification
/// time (to the nanosecond) are the parent's is not read again: its chunks are the parent's, as
/// rsync decides (the temporary claim is a new copy of the volume, whose inode numbers and change
/// times need not be the source's, so restic's further checks would fail every file), except the
/// files written last before the parent was cut ([`RACY_WINDOW_NS`]). And the parent's chunks are
/// known to be in the location without asking it: they are referenced by a snapshot that exists,
/// and no sweep of the location runs while an export does.
pub async fn export(
    source: &Path,
    store: Arc<dyn ObjectStore>,
    progress: &Arc<Progress>,
    parent: Option<&VolumeIndex>,
) -> anyhow::Result<Moved> {
    let root = source.to_owned();
    let found = tokio::task::spawn_blocking(move || walk(&root)).await??;
    progress.set_total(
        found
            .iter()
            .map(|(_, _, f)| match f {
                Found::File { size } => *size,
                _ => 0,
            })
            .sum(),
    );
    let mut unchanged: HashMap<&str, (u64, i64, &[ChunkRef])> = HashMap::new();
    let mut present = HashMap::new();
    let parent_files = parent
        .iter()
        .flat_map(|p| p.entries.iter())
        .filter_map(|e| match &e.kind {
            EntryKind::File { size, chunks } => Some((e, *size, chunks)),
            _ => None,
        });
    // A file written again within a tick of the file system's clock after the parent's volume
    // snapshot was cut keeps the time the parent recorded (git's "racily clean" file). Its time
    // is then within that tick of the cut, so at or after the parent's newest time less the
    // tick: such files are read again whatever their time says.
    let racy_from = parent_files
        .clone()
        .map(|(e, _, _)| e.mtime_ns)
        .max()
        .unwrap_or(i64::MAX)
        .saturating_sub(RACY_WINDOW_NS);
    for (entry, size, chunks) in parent_files {
        present.extend(chunks.iter().map(|c| (c.digest.clone(), c.packed.clone())));
        if entry.mtime_ns < racy_from {
            unchanged.insert(entry.path.as_str(), (size, entry.mtime_ns, chunks));
        }
    }
    let uploads = Arc::new(Uploads {
        store: store.clone(),
        present: Mutex::new(present),
        open_pack: Mutex::default(),
        moved: Mutex::default(),
        progress: progress.clone(),
        slots: Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT)),
    });
    // Files at once, in any order (a large one does not hold up the small ones behind it); the
    // index lists them in the walk's order.
    let mut entries: Vec<(usize, Entry)> = futures::stream::iter(found.into_iter().enumerate())
        .map(|(at, (path, meta, found))| {
            let reuse = match &found {
                Found::File { size } => unchanged
                    .get(path.as_str())
                    .filter(|(s, mtime, _)| s == size && *mtime == mtime_ns(&meta))
                    .map(|(_, _, chunks)| chunks.to_vec()),
                _ => None,
            };
            let (uploads, full) = (uploads.clone(), source.join(&path));
            async move {
                let kind = match found {
                    Found::Dir => EntryKind::Dir,
                    Found::Symlink { target } => EntryKind::Symlink { target },
                    Found::HardLink { to } => EntryKind::HardLink { to },
                    Found::File { size } => {
                        let chunks = match reuse {
                            Some(chunks) => {
                                uploads.progress.add_done(size);
                                chunks
                            }
                            None => export_file(full, size, &uploads)
                                .await
                                .with_context(|| format!("exporting file {path}"))?,
                        };
                        if let Ok(mut m) = uploads.moved.lock() {
                            m.files += 1;
                            m.chunks += chunks.len() as u64;
                            m.bytes += chunks.iter().map(|c| u64::from(c.len)).sum::<u64>();
                        }
                        EntryKind::File { size, chunks }
                    }
                };
                anyhow::Ok((
                    at,
                    Entry {
                        path,
                        mode: meta.mode() & 0o7777,
                        uid: meta.uid(),
                        gid: meta.gid(),
                        mtime_ns: mtime_ns(&meta),
                        kind,
                    },
                ))
            }
        })
        // The first failure ends the export (the rest are not tried against a store that is down).
        .buffer_unordered(FILES_IN_FLIGHT)
        .try_collect()
        .await?;
    uploads.finish().await?;
    entries.sort_by_key(|(at, _)| *at);
    let index = VolumeIndex {
        format: INDEX_FORMAT,
        entries: entries.into_iter().map(|(_, e)| e).collect(),
    };
    let json = serde_json::to_vec(&index)?;
    if json.len() > INDEX_MAX_BYTES {
        bail!(
            "the volume's index would be {} MiB, over the {} MiB a restore reads: the volume has too \
             many files and chunks for one index",
            json.len() >> 20,
            INDEX_MAX_BYTES >> 20
        );
    }
    let digest = sha256_hex(&json);
    let compressed = zstd::bulk::compress(&json, ZSTD_LEVEL)?;
    store
        .put(
            &StorePath::from(index_key(&digest)),
            PutPayload::from(compressed),
        )
        .await
        .context("uploading the volume index")?;
    let mut moved = uploads
        .moved
        .lock()
        .map_err(|_| anyhow!("a chunk upload panicked"))?
        .clone();
    moved.index_digest = digest;
    Ok(moved)
}

/// Cuts one file into chunks and uploads those the location lacks; holes are left out of the
/// returned list. A file that fits in one chunk's memory is read whole; a larger one is cut as it
/// is read, each chunk taking a slot before it is read, so that what waits holds no data.
async fn export_file(
    path: PathBuf,
    size: u64,
    uploads: &Arc<Uploads>,
) -> anyhow::Result<Vec<ChunkRef>> {
    if size <= u64::from(CHUNK_MAX) {
        let _slot = uploads.slots.acquire().await?;
        let data = tokio::task::spawn_blocking(move || {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        })
        .await??;
        let cuts: Vec<(u64, usize)> = fastcdc::v2020::FastCDC::new(
            &data,
            CHUNK_MIN as usize,
            CHUNK_AVG as usize,
            CHUNK_MAX as usize,
        )
        .map(|c| (c.offset as u64, c.length))
        .collect();
        let mut chunks = Vec::with_capacity(cuts.len());
        for (offset, length) in cuts {
            let at = offset as usize;
            if let Some(chunk) = uploads
                .chunk(offset, data[at..at + length].to_vec())
                .await?
            {
                chunks.push(chunk);
            }
        }
        return Ok(chunks);
    }
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let slots = uploads.slots.clone();
    let (tx, rx) =
        tokio::sync::mpsc::channel::<anyhow::Result<(u64, Vec<u8>, OwnedSemaphorePermit)>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        let mut chunker = fastcdc::v2020::StreamCDC::new(
            std::io::BufReader::with_capacity(1 << 20, file),
            CHUNK_MIN as usize,
            CHUNK_AVG as usize,
            CHUNK_MAX as usize,
        );
        loop {
            let Ok(slot) = futures::executor::block_on(slots.clone().acquire_owned()) else {
                // Never closed; were it, the file must not end short without an error.
                let _ = tx.blocking_send(Err(anyhow!("reading: the export was given up")));
                break;
            };
            let Some(chunk) = chunker.next() else {
                break;
            };
            let item = chunk
                .map(|c| (c.offset, c.data, slot))
                .map_err(|e| anyhow!("reading: {e}"));
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    let mut chunks: Vec<ChunkRef> = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|item| {
            let uploads = uploads.clone();
            async move {
                let (offset, data, _slot) = item?;
                uploads.chunk(offset, data).await
            }
        })
        .buffer_unordered(CHUNKS_IN_FLIGHT)
        .try_filter_map(|chunk| async move { Ok(chunk) })
        .try_collect()
        .await?;
    reader.await?;
    chunks.sort_by_key(|c| c.offset);
    Ok(chunks)
}

/// Reads and checks the index with `digest`.
pub async fn read_index(store: &dyn ObjectStore, digest: &str) -> anyhow::Result<VolumeIndex> {
    let bytes = store
        .get(&StorePath::from(index_key(digest)))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                anyhow!("the volume index {digest} is not in the location")
            }
            e => anyhow!(e).context(format!("reading the volume index {digest}")),
        })?
        .bytes()
        .await?;
    let json = zstd::bulk::decompress(&bytes, INDEX_MAX_BYTES).map_err(|e| {
        anyhow!(
            "the volume index {digest} is corrupt or over {} MiB: {e}",
            INDEX_MAX_BYTES >> 20
        )
    })?;
    if sha256_hex(&json) != digest {
        bail!("the volume index {digest} is corrupt: its content does not have that digest");
    }
    let index: VolumeIndex = serde_json::from_slice(&json)
        .map_err(|e| anyhow!("the volume index {digest} is not one: {e}"))?;
    if let Some(problem) = index_problem(&index) {
        bail!("the volume index {digest} cannot be restored: {problem}");
    }
    Ok(index)
}

/// Writes the files of index `digest` under `target`, verifying every chunk; a missing or corrupt
/// chunk fails the import naming the file.
pub async fn import(
    target: &Path,
    store: Arc<dyn ObjectStore>,
    digest: &str,
    progress: &Arc<Progress>,
) -> anyhow::Result<Moved> {
    let index = read_index(store.as_ref(), digest).await?;
    progress.set_total(
        index
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum(),
    );
    let mut moved = Moved {
        index_digest: digest.to_owned(),
        ..Moved::default()
    };
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    // An earlier run of this same import that stopped half-way (its pod evicted, the restore
    // started over) left its marker: what it wrote goes, and the import starts again.
    let marker = target.join(IMPORT_MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|d| d.trim() == digest) {
        clear(target)?;
    }
    // Into an empty directory only: what is there already (a symlink above all) is not the index's
    // and could lead writes out of the volume. A new ext4 or XFS volume holds an empty
    // `lost+found`, which mkfs made, not a user.
    if let Some(found) = std::fs::read_dir(target)?
        .filter_map(Result::ok)
        .find(|e| !is_empty_lost_found(e))
    {
        bail!(
            "{} is not empty (it holds {:?}): a volume is imported into an empty one (a new claim)",
            target.display(),
            found.file_name()
        );
    }
    std::fs::write(&marker, digest).with_context(|| format!("writing {}", marker.display()))?;
    // Directories and symlinks first, in the index's order (parents first); then the files, several
    // at once; then the hard links to them. (`index_problem` refused an index whose paths go
    // through a link, so no write below can leave the volume.)
    for entry in &index.entries {
        let path = target.join(&entry.path);
        match &entry.kind {
            EntryKind::Dir => std::fs::create_dir_all(&path)
                .with_context(|| format!("creating directory {}", entry.path))?,
            EntryKind::Symlink { target: to } => {
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(to, &path)
                    .with_context(|| format!("creating symlink {}", entry.path))?;
            }
            EntryKind::HardLink { .. } | EntryKind::File { .. } => {}
        }
    }
    let slots = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
    let files = index.entries.iter().filter_map(|e| match &e.kind {
        EntryKind::File { size, chunks } => Some((e.path.as_str(), *size, chunks.as_slice())),
        _ => None,
    });
    let written: Vec<(u64, u64, u64)> = futures::stream::iter(files)
        .map(|(name, size, chunks)| {
            import_file(target, &store, (name, size, chunks), progress, &slots)
        })
        .buffer_unordered(FILES_IN_FLIGHT)
        .try_collect()
        .await?;
    for (chunks, bytes, stored) in written {
        moved.files += 1;
        moved.chunks += chunks;
        moved.chunks_transferred += chunks;
        moved.bytes += bytes;
        moved.bytes_transferred += bytes;
        moved.bytes_stored += stored;
    }
    // The small chunks, a pack at a time: one read of the part of each pack this volume uses.
    let mut packs: BTreeMap<&str, Vec<(&str, &ChunkRef)>> = BTreeMap::new();
    for entry in &index.entries {
        if let EntryKind::File { chunks, .. } = &entry.kind {
            for chunk in chunks {
                if let Some(p) = &chunk.packed {
                    packs
                        .entry(p.pack.as_str())
                        .or_default()
                        .push((entry.path.as_str(), chunk));
                }
            }
        }
    }
    moved.bytes_stored += futures::stream::iter(packs)
        .map(|(pack, chunks)| import_pack(target, store.as_ref(), pack, chunks, progress))
        .buffer_unordered(PACKS_IN_FLIGHT)
        .try_fold(0u64, |sum, stored| async move { Ok(sum + stored) })
        .await?;
    for entry in &index.entries {
        if let EntryKind::HardLink { to } = &entry.kind {
            let path = target.join(&entry.path);
            let _ = std::fs::remove_file(&path);
            std::fs::hard_link(target.join(to), &path)
                .with_context(|| format!("linking {} to {to}", entry.path))?;
        }
    }
    std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    // Owners, modes and times, deepest first: writing into a directory changes its time.
    for entry in index.entries.iter().rev() {
        let path = target.join(&entry.path);
        std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))
            .with_context(|| format!("setting the owner of {}", entry.path))?;
        if matches!(
            entry.kind,
            EntryKind::Symlink { .. } | EntryKind::HardLink { .. }
        ) {
            continue;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
            .with_context(|| format!("setting the mode of {}", entry.path))?;
        let mtime =
            UNIX_EPOCH + Duration::from_nanos(u64::try_from(entry.mtime_ns).unwrap_or_default());
        File::open(&path)
            .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
            .with_context(|| format!("setting the time of {}", entry.path))?;
    }
    Ok(moved)
}

/// The file an import keeps at the volume's root while it writes, holding the index digest.
const IMPORT_MARKER: &str = ".multicluster-import-in-progress";

/// Removes everything under `dir` but `lost+found` (never following a symlink).
fn clear(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {} from an interrupted import", path.display()))?;
    }
    Ok(())
}

/// An empty `lost+found` directory, as mkfs leaves in a new volume.
fn is_empty_lost_found(entry: &std::fs::DirEntry) -> bool {
    entry.file_name() == "lost+found"
        && entry.file_type().is_ok_and(|t| t.is_dir())
        && std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none())
}

/// Writes one file of the index: its length first (what no chunk covers stays a hole), then its
/// chunks, each taking a slot before it is downloaded. Returns its chunks, bytes and stored bytes.
async fn import_file(
    target: &Path,
    store: &Arc<dyn ObjectStore>,
    (name, size, chunks): (&str, u64, &[ChunkRef]),
    progress: &Arc<Progress>,
    slots: &Arc<Semaphore>,
) -> anyhow::Result<(u64, u64, u64)> {
    let file = File::create(target.join(name)).with_context(|| format!("creating file {name}"))?;
    file.set_len(size)?;
    let file = Arc::new(file);
    // Its chunks of their own here; those in packs go with their packs (`import_pack`).
    let own = chunks.iter().filter(|c| c.packed.is_none()).cloned();
    let stored = futures::stream::iter(own)
        .map(|chunk| {
            let (store, file, progress) = (store.clone(), file.clone(), progress.clone());
            async move {
                let _slot = slots.acquire().await?;
                let stored = import_chunk(store.as_ref(), file, name, chunk.clone()).await?;
                progress.add_done(u64::from(chunk.len));
                anyhow::Ok(stored)
            }
        })
        .buffer_unordered(CHUNKS_IN_FLIGHT)
        .try_fold(0u64, |sum, stored| async move { Ok(sum + stored) })
        .await?;
    let bytes: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
    // The holes, which no chunk covers, are done too.
    progress.add_done(size.saturating_sub(bytes));
    Ok((chunks.len() as u64, bytes, stored))
}

/// Reads the span of pack `id` that `chunks` (each with its file's name) occupy, then checks and
/// writes each; returns the stored bytes read. The files exist already, at their sizes.
async fn import_pack(
    target: &Path,
    store: &dyn ObjectStore,
    id: &str,
    chunks: Vec<(&str, &ChunkRef)>,
    progress: &Arc<Progress>,
) -> anyhow::Result<u64> {
    let span = |c: &ChunkRef| {
        c.packed
            .as_ref()
            .map(|p| (p.at, p.at.saturating_add(u64::from(p.stored))))
            .unwrap_or_default()
    };
    let start = chunks.iter().map(|(_, c)| span(c).0).min().unwrap_or(0);
    let end = chunks.iter().map(|(_, c)| span(c).1).max().unwrap_or(0);
    let (first_file, first) = chunks[0];
    let what = |name: &str, c: &ChunkRef| {
        format!(
            "file {name}: its chunk at offset {} ({} bytes, {}, in pack {id})",
            c.offset, c.len, c.digest
        )
    };
    if end - start > (PACK_TARGET as u64) * 4 {
        bail!(
            "{}: the index places chunks over {} MiB of the pack, more than a pack holds",
            what(first_file, first),
            (end - start) >> 20
        );
    }
    let bytes = store
        .get_range(&StorePath::from(pack_key(id)), start..end)
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                anyhow!("{} is missing from the location", what(first_file, first))
            }
            e => anyhow!(e).context(format!("reading {}", what(first_file, first))),
        })?;
    let jobs: Vec<(PathBuf, String, ChunkRef)> = chunks
        .iter()
        .map(|(name, c)| (target.join(name), what(name, c), (*c).clone()))
        .collect();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let mut stored = 0u64;
        for (path, what, chunk) in jobs {
            let (at, until) = span(&chunk);
            let part = usize::try_from(at - start)
                .ok()
                .zip(usize::try_from(until - start).ok())
                .and_then(|(a, b)| bytes.get(a..b))
                .ok_or_else(|| anyhow!("{what} is corrupt: the pack is shorter"))?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            check_and_write(&file, part, &chunk, &what)?;
            stored += part.len() as u64;
            progress.add_done(u64::from(chunk.len));
        }
        anyhow::Ok(stored)
    })
    .await?
}

/// Downloads, checks and writes one chunk; returns its stored (compressed) size.
async fn import_chunk(
    store: &dyn ObjectStore,
    file: Arc<File>,
    name: &str,
    chunk: ChunkRef,
) -> anyhow::Result<u64> {
    let what = format!(
        "file {name}: its chunk at offset {} ({} bytes, {})",
        chunk.offset, chunk.len, chunk.digest
    );
    let bytes = store
        .get(&StorePath::from(chunk_key(&chunk.digest)))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                anyhow!("{what} is missing from the location")
            }
            e => anyhow!(e).context(format!("reading {what}")),
        })?
        .bytes()
        .await
        .with_context(|| what.clone())?;
    let stored = bytes.len() as u64;
    tokio::task::spawn_blocking(move || check_and_write(&file, &bytes, &chunk, &what)).await??;
    Ok(stored)
}

/// Decompresses `stored`, checks it is `chunk` (length and digest) and writes it into `file` at its
/// offset; `what` names the file and chunk in the error.
fn check_and_write(file: &File, stored: &[u8], chunk: &ChunkRef, what: &str) -> anyhow::Result<()> {
    let data = zstd::bulk::decompress(stored, CHUNK_MAX as usize)
        .map_err(|e| anyhow!("{what} is corrupt: {e}"))?;
    if data.len() != chunk.len as usize || sha256_hex(&data) != chunk.digest {
        bail!("{what} is corrupt: its content does not have that digest");
    }
    write_skipping_holes(file, &data, chunk.offset).with_context(|| format!("writing {what}"))
}

/// Writes `data` at `offset` but its zero blocks: the file was sized first, so they read back as
/// zeros and a sparse file stays sparse (a chunk around a hole holds some of its zeros).
fn write_skipping_holes(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let end = (at + HOLE_BLOCK).min(data.len());
        if is_hole(&data[at..end]) {
            at = end;
            continue;
        }
        let mut run_end = end;
        while run_end < data.len() {
            let next = (run_end + HOLE_BLOCK).min(data.len());
            if is_hole(&data[run_end..next]) {
                break;
            }
            run_end = next;
        }
        file.write_all_at(&data[at..run_end], offset + at as u64)?;
        at = run_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A volume with what a database and its tools leave: nested directories, many small files, a
    /// large file, a sparse file, a symlink, a hard link, odd modes and old times.
    fn volume(root: &Path) {
        let dir = root.join("db/tables");
        std::fs::create_dir_all(&dir).expect("dirs");
        for i in 0..50 {
            std::fs::write(
                dir.join(format!("t{i}")),
                format!("row {i}\n").repeat(i + 1),
            )
            .expect("small");
        }
        let mut large = File::create(root.join("db/large")).expect("large");
        let mut seed = 7u64;
        let bytes: Vec<u8> = (0..6 << 20)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        large.write_all(&bytes).expect("write");
        let sparse = File::create(root.join("sparse")).expect("sparse");
        sparse.set_len(64 << 20).expect("len");
        sparse.write_all_at(b"head", 0).expect("head");
        sparse.write_all_at(b"tail", (64 << 20) - 4).expect("tail");
        std::os::unix::fs::symlink("db/large", root.join("link")).expect("symlink");
        std::fs::hard_link(root.join("db/tables/t3"), root.join("hard")).expect("hard link");
        std::fs::set_permissions(
            root.join("db/tables/t1"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("mode");
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::open(root.join("db/tables/t2"))
            .expect("open")
            .set_times(FileTimes::new().set_modified(old))
            .expect("time");
    }

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).expect("store"))
    }

    #[tokio::test]
    async fn a_volume_comes_back_byte_for_byte_with_links_modes_times_and_holes_and_unchanged_chunks_move_once()
     {
        let (source, location, target) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        volume(source.path());
        let first = export(source.path(), store(location.path()), &Arc::default(), None)
            .await
            .expect("export");
        assert_eq!(
            first.files, 52,
            "50 small, the large and the sparse file (the hard link is no file of its own): {first:?}"
        );
        assert_eq!(
            first.bytes_transferred, first.bytes,
            "a new location gets every chunk once"
        );
        assert!(
            first.bytes_stored < 7 << 20,
            "the 64 MiB sparse file costs next to nothing: {first:?}"
        );
        let objects = |kind: &str| {
            std::fs::read_dir(location.path().join("data").join(kind))
                .map(|d| {
                    d.flatten()
                        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
                        .count()
                })
                .unwrap_or(0)
        };
        assert_eq!(objects("packs"), 1, "the 50 small files are one object");
        assert!(
            objects("chunks") <= 8,
            "{} chunk objects",
            objects("chunks")
        );

        let back = import(
            target.path(),
            store(location.path()),
            &first.index_digest,
            &Arc::default(),
        )
        .await
        .expect("import");
        assert_eq!(back.bytes, first.bytes);
        for path in ["db/large", "db/tables/t7", "sparse", "hard"] {
            assert_eq!(
                std::fs::read(target.path().join(path)).expect("read"),
                std::fs::read(source.path().join(path)).expect("read"),
                "{path}"
            );
        }
        assert_eq!(
            std::fs::read_link(target.path().join("link")).expect("link"),
            Path::new("db/large")
        );
        let meta = |root: &Path, p: &str| std::fs::symlink_metadata(root.join(p)).expect("meta");
        assert_eq!(
            meta(target.path(), "hard").ino(),
            meta(target.path(), "db/tables/t3").ino(),
            "still one file"
        );
        assert_eq!(meta(target.path(), "db/tables/t1").mode() & 0o7777, 0o600);
        assert_eq!(meta(target.path(), "db/tables/t2").mtime(), 1_000_000_000);
        assert_eq!(
            meta(target.path(), "db").mtime(),
            meta(source.path(), "db").mtime(),
            "a directory keeps its own time"
        );
        let sparse = meta(target.path(), "sparse");
        assert_eq!(sparse.len(), 64 << 20);
        assert!(
            sparse.blocks() * 512 < 1 << 20,
            "the hole stays a hole: {} blocks",
            sparse.blocks()
        );

        // One byte changed in the large file: only the chunk around it moves.
        let large = std::fs::OpenOptions::new()
            .write(true)
            .open(source.path().join("db/large"))
            .expect("open");
        large.write_all_at(b"X", 3 << 20).expect("write");
        let parent = read_index(store(location.path()).as_ref(), &first.index_digest)
            .await
            .expect("index");
        let second = export(
            source.path(),
            store(location.path()),
            &Arc::default(),
            Some(&parent),
        )
        .await
        .expect("export again");
        assert_ne!(second.index_digest, first.index_digest);
        assert!(
            second.chunks_transferred <= 2 && second.bytes_transferred <= u64::from(CHUNK_MAX) * 2,
            "{second:?}"
        );
        assert!(
            second.chunks_transferred == 1 && second.bytes_transferred < (6 << 20) / 2,
            "one chunk, not the 6 MiB file: {second:?} after {first:?}"
        );
    }

    #[tokio::test]
    async fn with_its_parent_an_export_reads_only_files_whose_size_or_time_changed() {
        let (source, location) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        volume(source.path());
        // Everything written an hour ago but `recent`, written last before the parent was cut.
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for dir in ["db/tables", "db", ""] {
            for entry in std::fs::read_dir(source.path().join(dir))
                .expect("dir")
                .flatten()
            {
                if entry.file_type().expect("type").is_file() {
                    File::open(entry.path())
                        .and_then(|f| f.set_times(FileTimes::new().set_modified(hour_ago)))
                        .expect("time");
                }
            }
        }
        std::fs::write(source.path().join("recent"), "v1").expect("write");
        let first = export(source.path(), store(location.path()), &Arc::default(), None)
            .await
            .expect("export");
        let parent = read_index(store(location.path()).as_ref(), &first.index_digest)
            .await
            .expect("parent index");
        let keep_time = |path: &Path, write: &dyn Fn(&Path)| {
            let mtime = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .expect("mtime");
            write(path);
            File::open(path)
                .and_then(|f| f.set_times(FileTimes::new().set_modified(mtime)))
                .expect("time");
        };
        // Same size, same time, other bytes: what the quick check cannot see, and why it reads
        // nothing here (as rsync would not).
        keep_time(&source.path().join("db/tables/t9"), &|p| {
            std::fs::write(p, "ROW 9\n".repeat(10)).expect("write")
        });
        // The same for the file written last before the parent: it may have been written again
        // within the clock's tick, so it is read again, and its change moves.
        keep_time(&source.path().join("recent"), &|p| {
            std::fs::write(p, "v2").expect("write")
        });
        // A new time: read again, and only its new chunk moves.
        std::fs::write(source.path().join("db/tables/t8"), "row 8 changed\n").expect("write");
        let progress = Arc::new(Progress::default());
        let second = export(
            source.path(),
            store(location.path()),
            &progress,
            Some(&parent),
        )
        .await
        .expect("export with its parent");
        assert_eq!(second.files, first.files);
        assert_eq!(
            (second.chunks_transferred, second.bytes_transferred),
            (2, 14 + 2),
            "only t8's and recent's new content: {second:?}"
        );
        let line = progress.line();
        assert_eq!(
            line.bytes_done, line.bytes_total,
            "unchanged files count as done"
        );
        let index = read_index(store(location.path()).as_ref(), &second.index_digest)
            .await
            .expect("index");
        let chunks_of = |index: &VolumeIndex, name: &str| {
            index
                .entries
                .iter()
                .find(|e| e.path == name)
                .map(|e| e.kind.clone())
                .expect("listed")
        };
        assert_eq!(
            chunks_of(&index, "db/tables/t9"),
            chunks_of(&parent, "db/tables/t9")
        );
        assert_ne!(chunks_of(&index, "recent"), chunks_of(&parent, "recent"));
        assert_ne!(
            chunks_of(&index, "db/tables/t8"),
            chunks_of(&parent, "db/tables/t8")
        );
        assert_eq!(
            chunks_of(&index, "db/large"),
            chunks_of(&parent, "db/large")
        );
    }

    #[tokio::test]
    async fn an_import_started_again_replaces_what_its_interrupted_run_wrote_and_reports_every_byte()
     {
        let (source, location, target) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        volume(source.path());
        let moved = export(source.path(), store(location.path()), &Arc::default(), None)
            .await
            .expect("export");
        // What an evicted run left: its marker, a half-written file, an empty lost+found.
        std::fs::write(target.path().join(IMPORT_MARKER), &moved.index_digest).expect("marker");
        std::fs::create_dir_all(target.path().join("db")).expect("dir");
        std::fs::write(target.path().join("db/large"), b"half").expect("partial");
        std::fs::create_dir(target.path().join("lost+found")).expect("lost+found");
        let progress = Arc::new(Progress::default());
        import(
            target.path(),
            store(location.path()),
            &moved.index_digest,
            &progress,
        )
        .await
        .expect("an interrupted import of the same index starts again");
        assert!(!target.path().join(IMPORT_MARKER).exists());
        assert_eq!(
            std::fs::read(target.path().join("db/large")).expect("read"),
            std::fs::read(source.path().join("db/large")).expect("read")
        );
        let line = progress.line();
        assert_eq!(line.bytes_done, line.bytes_total, "{line:?}");
        // Another index's leftovers are not ours to remove.
        let other = tempfile::tempdir().expect("tmp");
        std::fs::write(other.path().join(IMPORT_MARKER), "another-index").expect("marker");
        let err = import(
            other.path(),
            store(location.path()),
            &moved.index_digest,
            &Arc::default(),
        )
        .await
        .expect_err("not ours");
        assert!(format!("{err:#}").contains("is not empty"), "{err:#}");
    }

    #[tokio::test]
    async fn a_corrupt_or_missing_chunk_fails_the_import_naming_the_file() {
        let (source, location) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        std::fs::write(source.path().join("a"), b"alpha").expect("write");
        std::fs::write(source.path().join("b"), b"bravo").expect("write");
        // Over PACK_BELOW: an object of its own.
        let c: Vec<u8> = (0..300u32 << 10)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(source.path().join("c"), &c).expect("write");
        let moved = export(source.path(), store(location.path()), &Arc::default(), None)
            .await
            .expect("export");
        let index = read_index(store(location.path()).as_ref(), &moved.index_digest)
            .await
            .expect("index");
        let chunk_of = |name: &str| match &index
            .entries
            .iter()
            .find(|e| e.path == name)
            .expect("entry")
            .kind
        {
            EntryKind::File { chunks, .. } => chunks[0].clone(),
            other => panic!("{other:?}"),
        };
        let targets = tempfile::tempdir().expect("tmp");
        let import_into = |dir: &str| {
            let (target, store, digest) = (
                targets.path().join(dir),
                store(location.path()),
                moved.index_digest.clone(),
            );
            async move {
                format!(
                    "{:#}",
                    import(&target, store, &digest, &Arc::default())
                        .await
                        .expect_err("must fail")
                )
            }
        };
        let (a, b) = (chunk_of("a"), chunk_of("b"));
        let packed = b.packed.clone().expect("a small file is packed");
        assert_eq!(
            a.packed.as_ref().map(|p| &p.pack),
            Some(&packed.pack),
            "one pack"
        );
        assert!(chunk_of("c").packed.is_none());
        // A flipped byte in b's part of the pack.
        let pack = location.path().join(pack_key(&packed.pack));
        let good = std::fs::read(&pack).expect("pack");
        let mut bad = good.clone();
        bad[(packed.at + u64::from(packed.stored) - 1) as usize] ^= 0xff;
        std::fs::write(&pack, &bad).expect("corrupt");
        let err = import_into("flipped").await;
        assert!(
            err.contains("file b: its chunk at offset 0") && err.contains("is corrupt"),
            "{err}"
        );
        std::fs::remove_file(&pack).expect("remove");
        let err = import_into("no-pack").await;
        assert!(
            err.contains("file a")
                && err.contains("in pack")
                && err.contains("missing from the location"),
            "{err}"
        );
        std::fs::write(&pack, &good).expect("mend");
        // c's chunk compressed again from other bytes: only the digest can tell.
        let own = location.path().join(chunk_key(&chunk_of("c").digest));
        let mut other = c.clone();
        other[7] ^= 1;
        std::fs::write(&own, zstd::bulk::compress(&other, 3).expect("zstd")).expect("corrupt");
        let err = import_into("other").await;
        assert!(
            err.contains("file c: its chunk at offset 0") && err.contains("is corrupt"),
            "{err}"
        );
        std::fs::remove_file(&own).expect("remove");
        let err = import_into("no-chunk").await;
        assert!(
            err.contains("file c") && err.contains("missing from the location"),
            "{err}"
        );
        let target = tempfile::tempdir().expect("tmp");
        let err = format!(
            "{:#}",
            import(
                &target.path().join("third"),
                store(location.path()),
                &"0".repeat(64),
                &Arc::default()
            )
            .await
            .expect_err("no index")
        );
        assert!(err.contains("is not in the location"), "{err}");
        // Never into a directory that holds something already (a symlink there could lead
        // writes out of the volume).
        let occupied = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink("/etc", occupied.path().join("db")).expect("symlink");
        let err = format!(
            "{:#}",
            import(
                occupied.path(),
                store(location.path()),
                &moved.index_digest,
                &Arc::default()
            )
            .await
            .expect_err("not empty")
        );
        assert!(err.contains("is not empty"), "{err}");
    }
}
