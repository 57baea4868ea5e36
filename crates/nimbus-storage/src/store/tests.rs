//! Storage on a real temp dir: atomic replacement under concurrency, crash leftovers, directory
//! pruning, failed bodies. Every wait is bounded.

use std::time::Duration;

use futures_util::stream;
use tokio::sync::mpsc;

use super::*;
use crate::error::ErrorKind;
use crate::listing::MAX_KEYS;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

fn body(chunks: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, BodyError>> {
    stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
}

async fn put(storage: &Storage, bucket: &str, key: &str, data: &[u8]) -> ObjectRecord {
    storage
        .put_object(
            bucket,
            key,
            body(vec![data.to_vec()]),
            Some(data.len() as u64),
            ObjectMeta::default(),
        )
        .await
        .unwrap()
}

async fn read(storage: &Storage, bucket: &str, key: &str) -> (ObjectRecord, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let (record, mut file) = storage.open_object(bucket, key).await.unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).await.unwrap();
    (record, data)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn all_keys() -> ListQuery {
    ListQuery {
        max_keys: MAX_KEYS,
        ..ListQuery::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overwrites_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), None).await.unwrap();
    storage.create_bucket("race").await.unwrap();
    const LEN: usize = 256 * 1024;
    let mut tasks = Vec::new();
    for writer in 0..4u8 {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5u8 {
                let byte = writer * 16 + round;
                // Several chunks, so a reader could catch a half-written file if writes were not atomic.
                let chunks = (0..8).map(|_| vec![byte; LEN / 8]).collect();
                storage
                    .put_object(
                        "race",
                        "same/key",
                        body(chunks),
                        Some(LEN as u64),
                        ObjectMeta::default(),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    put(&storage, "race", "same/key", &[0; LEN]).await;
    let reader = {
        let storage = storage.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                let (record, data) = read(&storage, "race", "same/key").await;
                assert_eq!(data.len(), LEN);
                assert!(
                    data.iter().all(|b| *b == data[0]),
                    "a mixed object was visible"
                );
                assert_eq!(record.etag, multipart::hex(&Md5::checksum(&data)));
            }
        })
    };
    bounded(async {
        for task in tasks {
            task.await.unwrap();
        }
        reader.await.unwrap();
    })
    .await;
    // Every replaced blob was removed: one object, one blob, nothing in tmp/.
    let bucket = dir.path().join("buckets/race");
    assert_eq!(names(&bucket.join(layout::BLOBS_DIR)).len(), 1);
    assert!(names(&dir.path().join(layout::TMP_DIR)).is_empty());
}

#[tokio::test]
async fn open_sweeps_what_a_crash_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), None).await.unwrap();
    storage.create_bucket("box").await.unwrap();
    let kept = put(&storage, "box", "kept.txt", b"kept").await;
    drop(storage);
    // A crash after the blob rename but before the sidecar rename, and a half-written temp file.
    let blobs = dir.path().join("buckets/box").join(layout::BLOBS_DIR);
    std::fs::write(blobs.join(layout::new_id()), b"orphan").unwrap();
    std::fs::write(dir.path().join("tmp").join(layout::new_id()), b"half").unwrap();
    std::fs::create_dir(dir.path().join("tmp").join(layout::new_id())).unwrap();

    let storage = Storage::open(dir.path(), None).await.unwrap();
    assert_eq!(names(&blobs), [kept.blob]);
    assert!(names(&dir.path().join("tmp")).is_empty());
    assert_eq!(read(&storage, "box", "kept.txt").await.1, b"kept");
}

#[tokio::test]
async fn a_blob_without_its_sidecar_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), None).await.unwrap();
    storage.create_bucket("box").await.unwrap();
    let blobs = dir.path().join("buckets/box").join(layout::BLOBS_DIR);
    std::fs::write(blobs.join(layout::new_id()), b"uncommitted").unwrap();
    let (page, records) = storage.list_objects("box", &all_keys()).await.unwrap();
    assert!(page.objects.is_empty() && records.is_empty());
    // And the bucket counts as empty.
    storage.delete_bucket("box").await.unwrap();
}

#[tokio::test]
async fn keys_nest_and_deletes_prune_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let storage = Storage::open(dir.path(), Some(events_tx)).await.unwrap();
    storage.create_bucket("box").await.unwrap();
    put(&storage, "box", "a", b"file a").await;
    put(&storage, "box", "a/b", b"file a/b").await;
    put(&storage, "box", "a/b/c/d", b"deep").await;
    assert_eq!(read(&storage, "box", "a").await.1, b"file a");
    assert_eq!(read(&storage, "box", "a/b").await.1, b"file a/b");
    let (page, _) = storage.list_objects("box", &all_keys()).await.unwrap();
    assert_eq!(page.objects, ["a", "a/b", "a/b/c/d"]);

    for key in ["a/b/c/d", "a/b", "a"] {
        assert!(storage.delete_object("box", key).await.unwrap().is_some());
    }
    assert_eq!(storage.delete_object("box", "a").await.unwrap(), None);
    let bucket = dir.path().join("buckets/box");
    assert_eq!(names(&bucket), ["_blobs", "_bucket.json", "_uploads"]);
    assert!(names(&bucket.join(layout::BLOBS_DIR)).is_empty());

    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        kinds.push((event.key, event.kind));
    }
    use ObjectEventKind::{Created, Deleted};
    let expected = [
        ("a", Created),
        ("a/b", Created),
        ("a/b/c/d", Created),
        ("a/b/c/d", Deleted),
        ("a/b", Deleted),
        ("a", Deleted),
    ];
    assert_eq!(kinds, expected.map(|(k, kind)| (k.to_owned(), kind)));
}

#[tokio::test]
async fn failed_bodies_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let storage = Storage::open(dir.path(), Some(events_tx)).await.unwrap();
    storage.create_bucket("box").await.unwrap();
    put(&storage, "box", "k", b"original").await;
    let _ = events.try_recv();

    // The client disconnects halfway.
    let broken = stream::iter(vec![
        Ok(Bytes::from_static(b"new ")),
        Err(BodyError::from("connection reset")),
    ]);
    let err = storage
        .put_object("box", "k", broken, None, ObjectMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Body(_)), "{err:?}");
    // Fewer bytes than Content-Length promised.
    let err = storage
        .put_object(
            "box",
            "k",
            body(vec![b"short".to_vec()]),
            Some(100),
            ObjectMeta::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::IncompleteBody {
                expected: 100,
                received: 5
            }
        ),
        "{err:?}"
    );

    assert_eq!(read(&storage, "box", "k").await.1, b"original");
    assert!(names(&dir.path().join("tmp")).is_empty());
    assert!(events.try_recv().is_err(), "a failed put sends no event");
}

#[tokio::test]
async fn bucket_management_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), None).await.unwrap();
    let created = storage.create_bucket("photos").await.unwrap();
    assert_eq!(created.name, "photos");
    assert_eq!(storage.bucket("photos").await.unwrap(), created);

    let cases: Vec<(StorageError, ErrorKind, &str)> = vec![
        (
            storage.create_bucket("photos").await.unwrap_err(),
            ErrorKind::Conflict,
            "bucket \"photos\" already exists",
        ),
        (
            storage.create_bucket("Photos").await.unwrap_err(),
            ErrorKind::Invalid,
            "invalid bucket name \"Photos\": may contain only lowercase letters, digits, '.' and '-' (found 'P')",
        ),
        (
            storage.create_bucket("..").await.unwrap_err(),
            ErrorKind::Invalid,
            "invalid bucket name \"..\": must be 3 to 63 characters long, not 2",
        ),
        (
            storage.delete_bucket("nope").await.unwrap_err(),
            ErrorKind::NotFound,
            "bucket \"nope\" does not exist",
        ),
        (
            storage.bucket("nope").await.unwrap_err(),
            ErrorKind::NotFound,
            "bucket \"nope\" does not exist",
        ),
    ];
    for (err, kind, message) in cases {
        assert_eq!((err.kind(), err.to_string().as_str()), (kind, message));
    }

    put(&storage, "photos", "cat.jpg", b"meow").await;
    let err = storage.delete_bucket("photos").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        "bucket \"photos\" is not empty; delete its objects first"
    );

    // Unfinished uploads do not keep a bucket alive.
    storage
        .create_upload("photos", "big", ObjectMeta::default())
        .await
        .unwrap();
    storage.delete_object("photos", "cat.jpg").await.unwrap();
    storage.delete_bucket("photos").await.unwrap();
    assert!(storage.list_buckets().await.unwrap().is_empty());
    assert!(names(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn a_sidecar_cannot_point_outside_the_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), None).await.unwrap();
    storage.create_bucket("box").await.unwrap();
    put(&storage, "box", "k", b"data").await;
    let sidecar = dir.path().join("buckets/box/mk");
    let edited = std::fs::read_to_string(&sidecar)
        .unwrap()
        .replace("\"blob\": \"", "\"blob\": \"../../../../etc/passwd#");
    std::fs::write(&sidecar, edited).unwrap();
    let err = storage.open_object("box", "k").await.unwrap_err();
    assert!(
        matches!(err, StorageError::CorruptMetadata { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Internal);
}
