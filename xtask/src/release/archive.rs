//! One archive per platform: the plugin, its kubectl completion helper, on Linux the hub server
//! (`kubectl multicluster local up` runs it as a process, found beside the plugin), `LICENSE` and
//! `README.md`, all at the top level (the krew manifest's `files` copy them from there).
//! Archives are reproducible: fixed modification time, owner root, entries in a fixed order.

use std::io::{Cursor, Write};

use anyhow::Context;
use flate2::{Compression, write::GzEncoder};

use super::platform::{HUB_SERVER_BIN, PLUGIN_BIN, Platform};

/// A file in an archive or image layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    pub bytes: Vec<u8>,
}

impl Entry {
    pub fn file(path: impl Into<String>, mode: u32, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            mode,
            bytes: bytes.into(),
        }
    }
}

/// What goes into every archive, whatever the platform.
#[derive(Debug, Clone)]
pub struct Contents<'a> {
    /// The plugin built for the archive's platform.
    pub plugin: &'a [u8],
    /// The hub server built for the archive's platform: Linux only, where the playground runs.
    pub hub_server: Option<&'a [u8]>,
    pub license: &'a [u8],
    pub readme: &'a [u8],
    /// `plugin/kubectl_complete-multicluster`, the shell script for Unix platforms.
    pub completion_helper_script: &'a [u8],
}

/// The completion helper on Windows: what the shell script does, as a batch file.
const COMPLETION_HELPER_CMD: &str = "@echo off\r\nkubectl-multicluster.exe __complete %*\r\n";

/// The entries of `platform`'s archive, in archive order.
pub fn entries(platform: &Platform, contents: &Contents<'_>) -> Vec<Entry> {
    let helper: &[u8] = if platform.is_windows() {
        COMPLETION_HELPER_CMD.as_bytes()
    } else {
        contents.completion_helper_script
    };
    let mut entries = vec![
        Entry::file(platform.executable(PLUGIN_BIN), 0o755, contents.plugin),
        Entry::file(platform.completion_helper(), 0o755, helper),
    ];
    if let Some(hub_server) = contents.hub_server {
        entries.push(Entry::file(
            platform.executable(HUB_SERVER_BIN),
            0o755,
            hub_server,
        ));
    }
    entries.push(Entry::file("LICENSE", 0o644, contents.license));
    entries.push(Entry::file("README.md", 0o644, contents.readme));
    entries
}

/// `platform`'s archive: its file name and bytes.
pub fn package(
    platform: &Platform,
    version: &str,
    contents: &Contents<'_>,
    mtime: u64,
) -> anyhow::Result<(String, Vec<u8>)> {
    let entries = entries(platform, contents);
    let bytes = if platform.is_windows() {
        zip(&entries)?
    } else {
        tar_gz(&entries, mtime)?
    };
    Ok((platform.archive_name(version), bytes))
}

/// A gzip-compressed tar of `entries`, owned by root, modified at `mtime` (seconds since the epoch).
pub fn tar_gz(entries: &[Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&tar(entries, mtime)?)?;
    Ok(gz.finish()?)
}

/// An uncompressed tar of `entries` (the image layer's `diff_id` is the digest of this).
/// A path ending in `/` is a directory.
pub fn tar(entries: &[Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(if entry.path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_size(entry.bytes.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        builder
            .append_data(&mut header, &entry.path, entry.bytes.as_slice())
            .with_context(|| format!("adding {} to the archive", entry.path))?;
    }
    Ok(builder.into_inner()?)
}

/// A zip of `entries` (deflated, Unix modes recorded, the zip format's earliest timestamp so that
/// the bytes depend on the contents only).
pub fn zip(entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for entry in entries {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(entry.mode);
        zip.start_file(entry.path.as_str(), options)
            .with_context(|| format!("adding {} to the archive", entry.path))?;
        zip.write_all(&entry.bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}
