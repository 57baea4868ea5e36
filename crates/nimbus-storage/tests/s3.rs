//! End to end with a real S3 client: `serve` runs in-process on 127.0.0.1:0 over a temp dir, and
//! boto3 (the AWS SDK for Python, `tests/s3_client.py`) drives it; curl fetches presigned URLs.
//! The test then checks the object events and the files left on disk.

use std::error::Error;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nimbus_storage::{
    serve, AccessKeys, ErrorKind, ObjectEvent, ObjectEventKind, Storage, StorageError,
};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

type TestResult = Result<(), Box<dyn Error>>;

const ACCESS_KEY: &str = "NIMBUSTESTKEY0000001";
const SECRET_KEY: &str = "nimbus-test-secret-key-0000000000000000";
/// Bounds the whole boto3 script (it moves about 40 MiB over loopback).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_drives_the_s3_api() -> TestResult {
    let Some(python) = python_with_boto3().await else {
        eprintln!(
            "\n\n!!!!! SKIPPED boto3_drives_the_s3_api: python3 with boto3 is not available and \
             `pip install boto3` failed. Install boto3 to run this test. !!!!!\n"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("storage");
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let storage = Storage::open(&root, Some(events_tx)).await?;
    let keys = AccessKeys::from_pairs([(ACCESS_KEY.to_owned(), SECRET_KEY.to_owned())]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, storage.clone(), keys, async {
        let _ = stopped.await;
    }));

    // 1. The boto3 script: every S3 operation, asserting as it goes.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3_client.py");
    let output = timeout(
        SCRIPT_TIMEOUT,
        Command::new(&python)
            .arg(&script)
            .env("NIMBUS_S3_ENDPOINT", &endpoint)
            .env("NIMBUS_S3_ACCESS_KEY", ACCESS_KEY)
            .env("NIMBUS_S3_SECRET_KEY", SECRET_KEY)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the boto3 script failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let urls: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    let url = |name: &str| {
        urls[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("no {name} url"))
    };

    // 2. Presigned URLs with curl: the signature covers the path, and an altered one fails.
    let presigned = url("presigned")?;
    assert_eq!(
        curl(&presigned, dir.path()).await?,
        (200, b"hello presigned".to_vec())
    );
    let (status, _) = curl(&url("presigned_bad")?, dir.path()).await?;
    assert_eq!(status, 403, "a tampered presigned URL must be refused");
    let (status, _) = curl(&url("presigned_other_key")?, dir.path()).await?;
    assert_eq!(status, 403, "a presigned URL is for one key only");
    let (status, _) = curl(&format!("{endpoint}/photos/shared/report.txt"), dir.path()).await?;
    assert_eq!(status, 403, "unsigned requests are refused");

    // 3. Events: one per created or deleted object, naming bucket and key.
    let mut events = Vec::new();
    while let Ok(event) = events_rx.try_recv() {
        events.push(event);
    }
    let hello: Vec<&ObjectEvent> = events
        .iter()
        .filter(|e| e.bucket == "photos" && e.key == "hello.txt")
        .collect();
    let kinds: Vec<ObjectEventKind> = hello.iter().map(|e| e.kind).collect();
    use ObjectEventKind::{Created, Deleted};
    assert_eq!(kinds, [Created, Created, Deleted], "{hello:#?}");
    assert_eq!(hello[0].size, 11);
    assert_eq!(hello[0].etag, "5eb63bbbe01eeed093cb22bb8f5acdc3"); // md5("hello world")
    let big = events
        .iter()
        .find(|e| e.key == "big/file.bin" && e.kind == Created)
        .ok_or("no event for the multipart upload")?;
    assert_eq!(big.size, 10 * 1024 * 1024 + 1024);
    assert!(big.etag.ends_with("-3"), "{big:?}");
    for key in ["a/1.txt", "a/b/3.txt", "../escape", "dir/sub/ü ber+%.txt"] {
        for kind in [Created, Deleted] {
            assert!(
                events
                    .iter()
                    .any(|e| e.bucket == "docs" && e.key == key && e.kind == kind),
                "no {kind:?} event for docs/{key}"
            );
        }
    }
    assert!(
        events
            .iter()
            .any(|e| e.key == "copy/c.txt" && e.kind == Created),
        "a copy is a created object"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.key == "evil" || e.key == "small.bin"),
        "refused or aborted writes send no event"
    );

    // 4. The REST-facing functions see the same buckets, with typed errors.
    let buckets = storage.list_buckets().await?;
    assert_eq!(
        buckets.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        ["photos"]
    );
    match storage.delete_bucket("photos").await {
        Err(e @ StorageError::BucketNotEmpty(_)) => assert_eq!(e.kind(), ErrorKind::Conflict),
        other => panic!("expected BucketNotEmpty, got {other:?}"),
    }

    // 5. Nothing escaped the bucket dirs, and no temp file or orphan blob is left over.
    assert_eq!(dir_names(&root)?, ["buckets", "tmp"]);
    assert_eq!(dir_names(&root.join("tmp"))?, Vec::<String>::new());
    assert_eq!(dir_names(&root.join("buckets"))?, ["photos"]);
    let photos = root.join("buckets/photos");
    assert_eq!(
        dir_names(&photos.join("_uploads"))?,
        Vec::<String>::new(),
        "completed and aborted uploads are removed"
    );
    // big/file.bin, managed.bin, shared/report.txt: one blob each.
    assert_eq!(dir_names(&photos.join("_blobs"))?.len(), 3);

    let _ = stop.send(());
    timeout(STEP_TIMEOUT, server).await???;
    Ok(())
}

/// `python3` if it can import boto3, after trying `pip install boto3` once.
async fn python_with_boto3() -> Option<String> {
    let python = "python3".to_owned();
    let has_boto3 = || async {
        Command::new("python3")
            .args(["-c", "import boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    };
    if has_boto3().await {
        return Some(python);
    }
    eprintln!("boto3 is missing; trying `python3 -m pip install boto3`");
    let installed = timeout(
        SCRIPT_TIMEOUT,
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "boto3"])
            .kill_on_drop(true)
            .status(),
    )
    .await;
    if !matches!(installed, Ok(Ok(status)) if status.success()) {
        eprintln!("`pip install boto3` failed: {installed:?}");
    }
    has_boto3().await.then_some(python)
}

/// GETs `url` with curl; returns the status code and the body.
async fn curl(url: &str, scratch: &Path) -> Result<(u16, Vec<u8>), Box<dyn Error>> {
    let out = scratch.join("curl.out");
    let output = timeout(
        STEP_TIMEOUT,
        Command::new("curl")
            .args(["--silent", "--max-time", "20", "--output"])
            .arg(&out)
            .args(["--write-out", "%{http_code}", url])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let status = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok((status, std::fs::read(&out).unwrap_or_default()))
}

fn dir_names(dir: &Path) -> Result<Vec<String>, Box<dyn Error>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}
