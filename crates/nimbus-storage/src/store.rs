//! [`Storage`]: buckets and objects as files under one root directory (see [`crate::layout`]).
//!
//! Every write follows the same steps, so a crash at any point leaves either the old object or
//! the new one visible, never a half-written one:
//! 1. stream the bytes into `tmp/ID`, hashing as they arrive, then fsync;
//! 2. rename the temp file to `BUCKET/_blobs/ID` and fsync that directory;
//! 3. write the sidecar to `tmp/`, fsync, rename it over `BUCKET/…/mSEGMENT` (the commit), fsync
//!    its directory;
//! 4. remove the blob the old sidecar named, and send the event.
//!
//! A crash between 2 and 3 (or 3 and 4) leaves an unreferenced blob; [`Storage::open`] removes
//! those and everything in `tmp/`.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use s3s::crypto::{Checksum, Md5};
use serde::Serialize;
use tokio::fs;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, RwLock};
use tracing::{debug, error, info, warn};

use crate::error::{BodyError, StorageError};
use crate::events::{EventSender, ObjectEvent, ObjectEventKind};
use crate::layout::{self, ObjectPath};
use crate::listing::{self, ListQuery, Page};
use crate::multipart::{self, StoredPart, MAX_PART_NUMBER};
use crate::names::validate_bucket_name;
use crate::object::{
    now_unix_ms, time_from_unix_ms, BucketRecord, ObjectMeta, ObjectRecord, UploadRecord,
};

mod files;
#[cfg(test)]
mod tests;

use files::{
    any_object, blob_path, create_dirs, create_new, exists, finish_file, no_such_key,
    prune_empty_dirs, read_json, read_record, remove_dir_quietly, remove_quietly, stored_parts,
    sweep, sync_dir, walk_keys, TempFile,
};

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Number of striped per-key locks; two keys rarely share one.
const KEY_LOCKS: usize = 64;
/// Attempts when a concurrent write moves a file between two of our steps (a delete prunes the
/// directory a sidecar goes into; an overwrite removes the blob a reader was about to open).
const ATTEMPTS: usize = 3;

/// Object storage rooted at one directory. Cheap to clone; every clone shares the locks and the
/// event sender. Open one `Storage` per root directory per process.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    events: Option<EventSender>,
    /// Bucket create/delete hold it for writing; object commits and deletes hold it for reading,
    /// so a bucket is never removed between its emptiness check and a commit into it.
    buckets: RwLock<()>,
    /// Serialises commits and deletes of one key, so an overwrite removes exactly the blob it
    /// replaced and a delete reports the object it removed.
    key_locks: Vec<Mutex<()>>,
}

/// A bucket as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created: SystemTime,
}

/// Bytes written to a temp file and fsynced, not yet part of any bucket.
struct TempBlob {
    file: TempFile,
    size: u64,
}

// === impl Storage ===

impl Storage {
    /// Opens (creating if needed) the storage under `root`, clears leftovers of an interrupted
    /// run (temp files, blobs no sidecar names) and sends object events to `events`. The sweep
    /// reads every sidecar once, so it takes longer the more objects there are.
    pub async fn open(root: impl Into<PathBuf>, events: Option<EventSender>) -> Result<Self> {
        let root = root.into();
        let buckets = root.join(layout::BUCKETS_DIR);
        let tmp = root.join(layout::TMP_DIR);
        for dir in [&buckets, &tmp] {
            fs::create_dir_all(dir)
                .await
                .map_err(StorageError::io("create directory", dir))?;
        }
        let swept = tokio::task::spawn_blocking(move || sweep(&buckets, &tmp))
            .await
            .map_err(|e| StorageError::io("sweep", &root)(io::Error::other(e)))??;
        if swept > 0 {
            info!(root = %root.display(), removed = swept, "Removed leftovers of an interrupted write.");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                events,
                buckets: RwLock::new(()),
                key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    // --- buckets ---

    /// Creates an empty bucket. The directory appears in one rename, already complete.
    pub async fn create_bucket(&self, name: &str) -> Result<BucketInfo> {
        let dir = self.bucket_dir(name)?;
        let _buckets = self.inner.buckets.write().await;
        if exists(&dir).await? {
            return Err(StorageError::BucketExists(name.to_owned()));
        }
        let staging = self.tmp_path();
        let created_unix_ms = now_unix_ms();
        for sub in [layout::BLOBS_DIR, layout::UPLOADS_DIR] {
            let path = staging.join(sub);
            fs::create_dir_all(&path)
                .await
                .map_err(StorageError::io("create directory", &path))?;
        }
        let staged = TempFile::new(staging.clone());
        self.write_json(
            &staging.join(layout::BUCKET_INFO_FILE),
            &BucketRecord { created_unix_ms },
        )
        .await?;
        sync_dir(&staging).await?;
        fs::rename(&staging, &dir)
            .await
            .map_err(StorageError::io("rename", &dir))?;
        staged.disarm();
        sync_dir(&self.buckets_root()).await?;
        info!(bucket = name, "Bucket created.");
        Ok(BucketInfo {
            name: name.to_owned(),
            created: time_from_unix_ms(created_unix_ms),
        })
    }

    /// All buckets, sorted by name.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let root = self.buckets_root();
        let mut entries = fs::read_dir(&root)
            .await
            .map_err(StorageError::io("read directory", &root))?;
        let mut buckets = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(StorageError::io("read directory", &root))?
        {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_bucket_name(&name).is_err() {
                continue;
            }
            buckets.push(self.bucket_info(&name, &entry.path()).await?);
        }
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(buckets)
    }

    /// One bucket, or [`StorageError::NoSuchBucket`].
    pub async fn bucket(&self, name: &str) -> Result<BucketInfo> {
        let dir = self.existing_bucket_dir(name).await?;
        self.bucket_info(name, &dir).await
    }

    /// Deletes a bucket that holds no objects (unfinished multipart uploads go with it).
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let dir = self.bucket_dir(name)?;
        let _buckets = self.inner.buckets.write().await;
        if !exists(&dir).await? {
            return Err(StorageError::NoSuchBucket(name.to_owned()));
        }
        let scan = dir.clone();
        let has_objects = tokio::task::spawn_blocking(move || any_object(&scan))
            .await
            .map_err(|e| StorageError::io("scan", &dir)(io::Error::other(e)))?
            .map_err(StorageError::io("scan", &dir))?;
        if has_objects {
            return Err(StorageError::BucketNotEmpty(name.to_owned()));
        }
        // Move it out of sight in one step, then remove it at leisure.
        let trash = self.tmp_path();
        fs::rename(&dir, &trash)
            .await
            .map_err(StorageError::io("rename", &dir))?;
        sync_dir(&self.buckets_root()).await?;
        if let Err(error) = fs::remove_dir_all(&trash).await {
            warn!(%error, path = %trash.display(), "Could not remove a deleted bucket's files; the next start will.");
        }
        info!(bucket = name, "Bucket deleted.");
        Ok(())
    }

    // --- objects (used by the S3 layer) ---

    /// Stores `body` as `bucket/key`, replacing any object there.
    pub(crate) async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: impl Stream<Item = Result<Bytes, BodyError>>,
        content_length: Option<u64>,
        meta: ObjectMeta,
    ) -> Result<ObjectRecord> {
        let path = ObjectPath::from_key(key)?;
        self.existing_bucket_dir(bucket).await?;
        let (blob, md5_hex) = self.write_temp_blob(body, content_length).await?;
        self.commit(bucket, key, &path, blob, md5_hex, meta).await
    }

    /// The object's record and its bytes, opened. The open file stays readable even if the
    /// object is replaced or deleted while it is being sent.
    pub(crate) async fn open_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectRecord, fs::File)> {
        let path = ObjectPath::from_key(key)?;
        let dir = self.existing_bucket_dir(bucket).await?;
        for _ in 0..ATTEMPTS {
            let record = self.record(bucket, key, &dir, &path).await?;
            let blob = blob_path(&dir, &record.blob);
            match fs::File::open(&blob).await {
                Ok(file) => return Ok((record, file)),
                // Replaced or deleted between reading the sidecar and opening the blob.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("open", blob)(e)),
            }
        }
        Err(no_such_key(bucket, key))
    }

    pub(crate) async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        let path = ObjectPath::from_key(key)?;
        let dir = self.existing_bucket_dir(bucket).await?;
        self.record(bucket, key, &dir, &path).await
    }

    /// Deletes `bucket/key`; `None` if there was no such object (not an error in S3).
    pub(crate) async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectRecord>> {
        let path = ObjectPath::from_key(key)?;
        let _buckets = self.inner.buckets.read().await;
        let dir = self.existing_bucket_dir(bucket).await?;
        let _key = self.key_lock(bucket, key).lock().await;
        let sidecar = dir.join(path.relative());
        let Some(record) = read_record(&sidecar).await? else {
            return Ok(None);
        };
        fs::remove_file(&sidecar)
            .await
            .map_err(StorageError::io("remove", &sidecar))?;
        if let Some(parent) = sidecar.parent() {
            sync_dir(parent).await?;
        }
        remove_quietly(&blob_path(&dir, &record.blob)).await;
        prune_empty_dirs(&dir, &path.dirs).await;
        debug!(bucket, key, "Object deleted.");
        self.emit(bucket, &record, ObjectEventKind::Deleted);
        Ok(Some(record))
    }

    /// One page of a listing, with the records of the page's objects.
    pub(crate) async fn list_objects(
        &self,
        bucket: &str,
        query: &ListQuery,
    ) -> Result<(Page, Vec<ObjectRecord>)> {
        let dir = self.existing_bucket_dir(bucket).await?;
        let Some(prefix_dirs) = layout::prefix_dirs(&query.prefix) else {
            return Ok((Page::default(), Vec::new()));
        };
        let start: PathBuf = prefix_dirs.iter().fold(dir.clone(), |p, d| p.join(d));
        let base = match query.prefix.rfind('/') {
            Some(end) => query.prefix[..=end].to_owned(),
            None => String::new(),
        };
        let walk_root = start.clone();
        let mut keys = tokio::task::spawn_blocking(move || walk_keys(&walk_root, &base))
            .await
            .map_err(|e| StorageError::io("list", &start)(io::Error::other(e)))?
            .map_err(StorageError::io("list", &start))?;
        keys.sort();
        let page = listing::page(&keys, query);
        let mut records = Vec::with_capacity(page.objects.len());
        for key in &page.objects {
            let path = ObjectPath::from_key(key)?;
            // A key deleted since the walk is simply left out.
            if let Some(record) = read_record(&dir.join(path.relative())).await? {
                records.push(record);
            }
        }
        Ok((page, records))
    }

    /// Copies `src_bucket/src_key` to `bucket/key`, with `meta` or else the source's metadata.
    pub(crate) async fn copy_object(
        &self,
        (src_bucket, src_key): (&str, &str),
        bucket: &str,
        key: &str,
        meta: Option<ObjectMeta>,
    ) -> Result<ObjectRecord> {
        let path = ObjectPath::from_key(key)?;
        self.existing_bucket_dir(bucket).await?;
        let (source, mut file) = self.open_object(src_bucket, src_key).await?;
        let tmp = TempFile::new(self.tmp_path());
        let mut out = create_new(&tmp.path).await?;
        let size = tokio::io::copy(&mut file, &mut out)
            .await
            .map_err(StorageError::io("copy", &tmp.path))?;
        finish_file(out, &tmp.path).await?;
        let blob = TempBlob { file: tmp, size };
        let meta = meta.unwrap_or(source.meta);
        self.commit(bucket, key, &path, blob, source.etag, meta)
            .await
    }

    // --- multipart uploads ---

    /// Starts a multipart upload and returns its id.
    pub(crate) async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
    ) -> Result<String> {
        ObjectPath::from_key(key)?;
        let dir = self.existing_bucket_dir(bucket).await?;
        let id = layout::new_id();
        let staging = self.tmp_path();
        fs::create_dir(&staging)
            .await
            .map_err(StorageError::io("create directory", &staging))?;
        let staged = TempFile::new(staging.clone());
        let record = UploadRecord {
            key: key.to_owned(),
            initiated_unix_ms: now_unix_ms(),
            meta,
        };
        self.write_json(&staging.join(layout::UPLOAD_INFO_FILE), &record)
            .await?;
        let uploads = dir.join(layout::UPLOADS_DIR);
        fs::create_dir_all(&uploads)
            .await
            .map_err(StorageError::io("create directory", &uploads))?;
        let target = uploads.join(&id);
        fs::rename(&staging, &target)
            .await
            .map_err(StorageError::io("rename", &target))?;
        staged.disarm();
        sync_dir(&uploads).await?;
        debug!(bucket, key, upload = %id, "Multipart upload started.");
        Ok(id)
    }

    /// Stores one part of an upload; returns its etag (md5 hex). A part uploaded again replaces
    /// the earlier one.
    pub(crate) async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: impl Stream<Item = Result<Bytes, BodyError>>,
        content_length: Option<u64>,
    ) -> Result<String> {
        let number = u16::try_from(part_number)
            .ok()
            .filter(|n| (1..=MAX_PART_NUMBER).contains(&i32::from(*n)))
            .ok_or(StorageError::InvalidPartNumber(part_number))?;
        let (upload_dir, _) = self.upload(bucket, key, upload_id).await?;
        let (blob, md5_hex) = self.write_temp_blob(body, content_length).await?;
        let name = layout::part_file_name(number, &md5_hex);
        let _part = self.key_lock(upload_id, &number.to_string()).lock().await;
        let target = upload_dir.join(&name);
        fs::rename(&blob.file.path, &target)
            .await
            .map_err(|e| match e.kind() {
                // Aborted or completed meanwhile.
                io::ErrorKind::NotFound => StorageError::NoSuchUpload(upload_id.to_owned()),
                _ => StorageError::io("rename", &target)(e),
            })?;
        blob.file.disarm();
        sync_dir(&upload_dir).await?;
        for (other, _) in stored_parts(&upload_dir)
            .await?
            .into_iter()
            .filter(|(_, (n, etag, _))| *n == number && *etag != md5_hex)
        {
            remove_quietly(&upload_dir.join(other)).await;
        }
        Ok(md5_hex)
    }

    /// Joins the listed parts into the object, in order, and ends the upload.
    pub(crate) async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<ObjectRecord> {
        let path = ObjectPath::from_key(key)?;
        let (upload_dir, upload) = self.upload(bucket, key, upload_id).await?;
        let files = stored_parts(&upload_dir).await?;
        let stored: BTreeMap<i32, StoredPart> = files
            .values()
            .map(|(n, etag, size)| {
                let part = StoredPart {
                    etag: etag.clone(),
                    size: *size,
                };
                (i32::from(*n), part)
            })
            .collect();
        multipart::check_parts(parts, &stored)?;
        // check_parts found every listed part, and part numbers fit in u16.
        let chosen: Vec<(u16, &StoredPart)> = parts
            .iter()
            .filter_map(|(n, _)| Some((u16::try_from(*n).ok()?, stored.get(n)?)))
            .collect();
        // Stored part etags are md5 hex by construction, so this holds.
        let etag = multipart::multipart_etag(chosen.iter().map(|(_, p)| p.etag.as_str()))
            .ok_or(StorageError::NoSuchUpload(upload_id.to_owned()))?;

        let tmp = TempFile::new(self.tmp_path());
        let mut out = create_new(&tmp.path).await?;
        let mut size = 0;
        for (number, part) in &chosen {
            let part = upload_dir.join(layout::part_file_name(*number, &part.etag));
            let mut input = fs::File::open(&part).await.map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StorageError::NoSuchUpload(upload_id.to_owned()),
                _ => StorageError::io("open", &part)(e),
            })?;
            size += tokio::io::copy(&mut input, &mut out)
                .await
                .map_err(StorageError::io("copy", &part))?;
        }
        finish_file(out, &tmp.path).await?;
        let blob = TempBlob { file: tmp, size };
        let record = self
            .commit(bucket, key, &path, blob, etag, upload.meta)
            .await?;
        if let Err(error) = fs::remove_dir_all(&upload_dir).await {
            warn!(%error, path = %upload_dir.display(), "Could not remove a completed upload's parts.");
        }
        debug!(
            bucket,
            key,
            upload = upload_id,
            parts = parts.len(),
            "Multipart upload completed."
        );
        Ok(record)
    }

    /// Drops an upload and its parts.
    pub(crate) async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
        let (upload_dir, _) = self.upload(bucket, key, upload_id).await?;
        // Move it out of sight first so a concurrent complete cannot see half the parts.
        let trash = self.tmp_path();
        fs::rename(&upload_dir, &trash)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StorageError::NoSuchUpload(upload_id.to_owned()),
                _ => StorageError::io("rename", &upload_dir)(e),
            })?;
        remove_dir_quietly(&trash).await;
        debug!(bucket, key, upload = upload_id, "Multipart upload aborted.");
        Ok(())
    }

    // --- helpers ---

    fn buckets_root(&self) -> PathBuf {
        self.inner.root.join(layout::BUCKETS_DIR)
    }

    /// A fresh path in `tmp/` (same filesystem as the buckets, so renames are atomic).
    fn tmp_path(&self) -> PathBuf {
        self.inner.root.join(layout::TMP_DIR).join(layout::new_id())
    }

    fn bucket_dir(&self, name: &str) -> Result<PathBuf> {
        validate_bucket_name(name).map_err(|reason| StorageError::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })?;
        Ok(self.buckets_root().join(name))
    }

    async fn existing_bucket_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.bucket_dir(name)?;
        if !exists(&dir).await? {
            return Err(StorageError::NoSuchBucket(name.to_owned()));
        }
        Ok(dir)
    }

    async fn bucket_info(&self, name: &str, dir: &Path) -> Result<BucketInfo> {
        let created = match read_json::<BucketRecord>(&dir.join(layout::BUCKET_INFO_FILE)).await {
            Ok(Some(record)) => time_from_unix_ms(record.created_unix_ms),
            // Written by hand or damaged: the directory's time is the best guess.
            _ => fs::metadata(dir)
                .await
                .and_then(|m| m.modified())
                .map_err(StorageError::io("stat", dir))?,
        };
        Ok(BucketInfo {
            name: name.to_owned(),
            created,
        })
    }

    async fn record(
        &self,
        bucket: &str,
        key: &str,
        dir: &Path,
        path: &ObjectPath,
    ) -> Result<ObjectRecord> {
        read_record(&dir.join(path.relative()))
            .await?
            .ok_or_else(|| no_such_key(bucket, key))
    }

    /// The directory and record of an upload of `bucket/key`.
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(PathBuf, UploadRecord)> {
        let no_such_upload = || StorageError::NoSuchUpload(upload_id.to_owned());
        if !layout::is_id(upload_id) {
            return Err(no_such_upload());
        }
        let dir = self
            .existing_bucket_dir(bucket)
            .await?
            .join(layout::UPLOADS_DIR)
            .join(upload_id);
        let record = read_json::<UploadRecord>(&dir.join(layout::UPLOAD_INFO_FILE))
            .await?
            .filter(|r| r.key == key)
            .ok_or_else(no_such_upload)?;
        Ok((dir, record))
    }

    fn key_lock(&self, bucket: &str, key: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (bucket, key).hash(&mut hasher);
        let slot = usize::try_from(hasher.finish() % KEY_LOCKS as u64).unwrap_or_default();
        &self.inner.key_locks[slot]
    }

    /// Streams `body` into a new temp file, fsynced; returns it with its md5 in hex.
    async fn write_temp_blob(
        &self,
        body: impl Stream<Item = Result<Bytes, BodyError>>,
        content_length: Option<u64>,
    ) -> Result<(TempBlob, String)> {
        let tmp = TempFile::new(self.tmp_path());
        let mut file = create_new(&tmp.path).await?;
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Body)?;
            md5.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(StorageError::io("write", &tmp.path))?;
        }
        if let Some(expected) = content_length.filter(|n| *n != size) {
            return Err(StorageError::IncompleteBody {
                expected,
                received: size,
            });
        }
        finish_file(file, &tmp.path).await?;
        Ok((
            TempBlob { file: tmp, size },
            multipart::hex(&md5.finalize()),
        ))
    }

    /// Moves a temp blob into the bucket and points the key's sidecar at it (steps 2–4 above).
    async fn commit(
        &self,
        bucket: &str,
        key: &str,
        path: &ObjectPath,
        blob: TempBlob,
        etag: String,
        meta: ObjectMeta,
    ) -> Result<ObjectRecord> {
        let _buckets = self.inner.buckets.read().await;
        let dir = self.existing_bucket_dir(bucket).await?;
        let blob_id = layout::new_id();
        let blobs = dir.join(layout::BLOBS_DIR);
        let target = blobs.join(&blob_id);
        fs::rename(&blob.file.path, &target)
            .await
            .map_err(StorageError::io("rename", &target))?;
        blob.file.disarm();
        let placed = TempFile::new(target);
        sync_dir(&blobs).await?;
        let record = ObjectRecord {
            key: key.to_owned(),
            size: blob.size,
            etag,
            last_modified_unix_ms: now_unix_ms(),
            blob: blob_id,
            meta,
        };

        let _key = self.key_lock(bucket, key).lock().await;
        let sidecar = dir.join(path.relative());
        let old = match read_record(&sidecar).await {
            Ok(old) => old,
            Err(error) => {
                warn!(%error, "Replacing an unreadable object record.");
                None
            }
        };
        self.place_sidecar(&dir, path, &record).await?;
        placed.disarm();
        if let Some(old) = old.filter(|o| o.blob != record.blob) {
            remove_quietly(&blob_path(&dir, &old.blob)).await;
        }
        debug!(bucket, key, size = record.size, "Object stored.");
        self.emit(bucket, &record, ObjectEventKind::Created);
        Ok(record)
    }

    /// Writes the sidecar to a temp file and renames it into place, creating the key's
    /// directories. A concurrent delete may prune a directory between the two; then try again.
    async fn place_sidecar(
        &self,
        dir: &Path,
        path: &ObjectPath,
        record: &ObjectRecord,
    ) -> Result<()> {
        let tmp = self.write_temp_json(record).await?;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let parent = match create_dirs(dir, &path.dirs).await {
                Ok(parent) => parent,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(StorageError::io("create directory", dir)(e)),
            };
            let target = parent.join(&path.file);
            match fs::rename(&tmp.path, &target).await {
                Ok(()) => {
                    tmp.disarm();
                    // The object is visible now; failing here would make the caller remove
                    // the blob it names. A failed directory fsync only risks the commit's
                    // durability, so say so loudly and go on.
                    if let Err(error) = sync_dir(&parent).await {
                        error!(%error, "Committed an object whose directory could not be synced.");
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => last_error = Some(e),
                Err(e) => return Err(StorageError::io("rename", target)(e)),
            }
        }
        Err(StorageError::io("place", dir.join(path.relative()))(
            last_error.unwrap_or_else(|| io::Error::other("directory kept disappearing")),
        ))
    }

    /// Writes `value` as JSON to `path` atomically (temp file, fsync, rename, fsync the dir).
    async fn write_json(&self, path: &Path, value: &impl Serialize) -> Result<()> {
        let tmp = self.write_temp_json(value).await?;
        fs::rename(&tmp.path, path)
            .await
            .map_err(StorageError::io("rename", path))?;
        tmp.disarm();
        match path.parent() {
            Some(parent) => sync_dir(parent).await,
            None => Ok(()),
        }
    }

    async fn write_temp_json(&self, value: &impl Serialize) -> Result<TempFile> {
        let tmp = TempFile::new(self.tmp_path());
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| StorageError::io("encode", &tmp.path)(io::Error::other(e)))?;
        let mut file = create_new(&tmp.path).await?;
        file.write_all(&bytes)
            .await
            .map_err(StorageError::io("write", &tmp.path))?;
        finish_file(file, &tmp.path).await?;
        Ok(tmp)
    }

    fn emit(&self, bucket: &str, record: &ObjectRecord, kind: ObjectEventKind) {
        let Some(events) = &self.inner.events else {
            return;
        };
        let event = ObjectEvent {
            bucket: bucket.to_owned(),
            key: record.key.clone(),
            size: record.size,
            etag: record.etag.clone(),
            kind,
            time: SystemTime::now(),
        };
        if events.send(event).is_err() {
            debug!("Object event dropped: nobody is listening.");
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}
