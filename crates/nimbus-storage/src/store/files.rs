//! File-level helpers for [`Storage`](super::Storage): temp files that clean up after
//! themselves, fsync of files and directories, JSON records, and the blocking directory walks
//! (key listing, emptiness, the startup sweep).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tokio::fs;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::error::StorageError;
use crate::layout::{self, Entry, ObjectPath};
use crate::object::ObjectRecord;

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A temp file that is removed when dropped, unless it was moved into place.
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    armed: bool,
}

// === impl TempFile ===

impl TempFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    /// The file was moved into place: keep it.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort and synchronous: one unlink. Leftovers are swept at the next open.
            let _ =
                std::fs::remove_file(&self.path).or_else(|_| std::fs::remove_dir_all(&self.path));
        }
    }
}

// === file helpers ===

pub(super) fn no_such_key(bucket: &str, key: &str) -> StorageError {
    StorageError::NoSuchKey {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    }
}

pub(super) fn blob_path(bucket_dir: &Path, blob: &str) -> PathBuf {
    bucket_dir.join(layout::BLOBS_DIR).join(blob)
}

pub(super) async fn exists(path: &Path) -> Result<bool> {
    fs::try_exists(path)
        .await
        .map_err(StorageError::io("stat", path))
}

pub(super) async fn create_new(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(StorageError::io("create", path))
}

/// Flushes and fsyncs a file we wrote, so a rename of it is durable with its content.
pub(super) async fn finish_file(mut file: fs::File, path: &Path) -> Result<()> {
    file.flush()
        .await
        .map_err(StorageError::io("write", path))?;
    file.sync_all()
        .await
        .map_err(StorageError::io("fsync", path))
}

/// Makes renames into `dir` durable.
pub(super) async fn sync_dir(dir: &Path) -> Result<()> {
    let handle = fs::File::open(dir)
        .await
        .map_err(StorageError::io("open", dir))?;
    handle
        .sync_all()
        .await
        .map_err(StorageError::io("fsync", dir))
}

/// Creates `base/dirs[0]/dirs[1]/…` one level at a time, syncing the parent of each directory
/// it creates; returns the innermost directory.
pub(super) async fn create_dirs(base: &Path, dirs: &[String]) -> io::Result<PathBuf> {
    let mut path = base.to_path_buf();
    for dir in dirs {
        let parent = path.clone();
        path.push(dir);
        match fs::create_dir(&path).await {
            Ok(()) => fs::File::open(&parent).await?.sync_all().await?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// Removes the key's now-empty directories, innermost first; stops at the first that is not
/// empty (another key lives there).
pub(super) async fn prune_empty_dirs(base: &Path, dirs: &[String]) {
    for depth in (1..=dirs.len()).rev() {
        let path: PathBuf = dirs[..depth]
            .iter()
            .fold(base.to_path_buf(), |p, d| p.join(d));
        if fs::remove_dir(&path).await.is_err() {
            break;
        }
    }
}

pub(super) async fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_file(path).await {
        if error.kind() != io::ErrorKind::NotFound {
            warn!(%error, path = %path.display(), "Could not remove a replaced file; the next start will.");
        }
    }
}

pub(super) async fn remove_dir_quietly(path: &Path) {
    if let Err(error) = fs::remove_dir_all(path).await {
        warn!(%error, path = %path.display(), "Could not remove a directory; the next start will.");
    }
}

/// Reads a JSON record; `None` if it does not exist.
pub(super) async fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(StorageError::io("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StorageError::CorruptMetadata {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads an object sidecar; `None` if it does not exist. The blob id it names must be one of
/// ours, so even a hand-edited sidecar cannot point outside `_blobs/`.
pub(super) async fn read_record(path: &Path) -> Result<Option<ObjectRecord>> {
    let record = read_json::<ObjectRecord>(path).await?;
    match record {
        Some(record) if !layout::is_id(&record.blob) => Err(StorageError::CorruptMetadata {
            path: path.to_path_buf(),
            source: serde::de::Error::custom(format!("invalid blob id {:?}", record.blob)),
        }),
        record => Ok(record),
    }
}

/// The parts stored in an upload directory: file name → (number, etag, size).
pub(super) async fn stored_parts(dir: &Path) -> Result<BTreeMap<String, (u16, String, u64)>> {
    let mut entries = fs::read_dir(dir)
        .await
        .map_err(StorageError::io("read directory", dir))?;
    let mut parts = BTreeMap::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(StorageError::io("read directory", dir))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((number, etag)) = layout::parse_part_file_name(&name) else {
            continue;
        };
        let size = entry
            .metadata()
            .await
            .map_err(StorageError::io("stat", entry.path()))?
            .len();
        parts.insert(name, (number, etag, size));
    }
    Ok(parts)
}

// === blocking walks (run on the blocking pool) ===

/// Every key stored under `dir`, where `base` is the key prefix `dir` stands for. Unsorted.
pub(super) fn walk_keys(dir: &Path, base: &str) -> io::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), base.to_owned())];
    while let Some((dir, base)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The prefix names a directory that does not exist, or a delete pruned it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let is_dir = entry.file_type()?.is_dir();
            match layout::parse_entry(&name) {
                Some(Entry::Dir(segment)) if is_dir => {
                    pending.push((entry.path(), format!("{base}{segment}/")));
                }
                Some(Entry::Object(segment)) if !is_dir => keys.push(format!("{base}{segment}")),
                _ => {}
            }
        }
    }
    Ok(keys)
}

/// Whether any object sidecar exists under the bucket directory.
pub(super) fn any_object(bucket_dir: &Path) -> io::Result<bool> {
    let mut pending = vec![bucket_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            match layout::parse_entry(&name) {
                Some(Entry::Dir(_)) if entry.file_type()?.is_dir() => pending.push(entry.path()),
                Some(Entry::Object(_)) => return Ok(true),
                _ => {}
            }
        }
    }
    Ok(false)
}

/// Empties `tmp/` and removes blobs that no sidecar names. Returns how many entries it removed.
pub(super) fn sweep(buckets: &Path, tmp: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp).map_err(StorageError::io("read directory", tmp))? {
        let path = entry
            .map_err(StorageError::io("read directory", tmp))?
            .path();
        let result = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        result.map_err(StorageError::io("remove", &path))?;
        removed += 1;
    }
    for entry in std::fs::read_dir(buckets).map_err(StorageError::io("read directory", buckets))? {
        let bucket = entry
            .map_err(StorageError::io("read directory", buckets))?
            .path();
        if !bucket.is_dir() {
            continue;
        }
        let referenced = match referenced_blobs(&bucket) {
            Ok(referenced) => referenced,
            // Keep every blob: an unreadable record is reported on access, not silently lost.
            Err(error) => {
                warn!(%error, bucket = %bucket.display(), "Skipping the blob sweep of a bucket.");
                continue;
            }
        };
        let blobs = bucket.join(layout::BLOBS_DIR);
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(StorageError::io("read directory", &blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(StorageError::io("remove", &path))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The blob ids the bucket's sidecars name.
pub(super) fn referenced_blobs(bucket_dir: &Path) -> Result<HashSet<String>> {
    let mut blobs = HashSet::new();
    for key in walk_keys(bucket_dir, "").map_err(StorageError::io("scan", bucket_dir))? {
        let path = ObjectPath::from_key(&key)?;
        let sidecar = bucket_dir.join(path.relative());
        let bytes = std::fs::read(&sidecar).map_err(StorageError::io("read", &sidecar))?;
        let record = serde_json::from_slice::<ObjectRecord>(&bytes).map_err(|source| {
            StorageError::CorruptMetadata {
                path: sidecar,
                source,
            }
        })?;
        blobs.insert(record.blob);
    }
    Ok(blobs)
}
