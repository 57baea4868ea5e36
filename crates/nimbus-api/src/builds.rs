//! Builds from source: `POST /v1/namespaces/{ns}/services/{service}/builds` takes the source
//! folder as a tar, builds it into `nimbus/{ns}/{service}:b{N}` and streams the output as NDJSON
//! while it happens; a deploy then names the build (`"build": "b3"`) to run its image. A failed
//! build leaves no image and no version, only its record and log.
//!
//! Records live next to the store, not in it: `DATA/builds/{ns}/{service}/b{N}.json` (id, status,
//! image, duration, failing step) and `b{N}.log` (the output, line by line, written as it comes).
//! The newest [`KEEP_BUILDS`] of a service are kept; deleting the service removes them. Their
//! images go with them once no version runs them ([`crate::images`]).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use http::StatusCode;
use nimbus_model::names::validate_name;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::containers::{error_line, ndjson};
use crate::error::{ApiError, StrictQuery};
use crate::ApiState;

/// Largest build context accepted (the tar as sent).
pub const MAX_CONTEXT_BYTES: u64 = 512 * 1024 * 1024;
/// Builds of one service kept on disk (records and logs).
pub const KEEP_BUILDS: usize = 20;
/// How long one build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Most log lines `GET …/builds/{id}` returns (the newest).
const MAX_LOG_LINES: usize = 10_000;

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Running,
    Succeeded,
    Failed,
}

/// One build of a service, as stored in `b{N}.json` and answered by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// `b{N}`, counting up per service.
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub status: BuildStatus,
    /// The tag the image gets: `nimbus/{ns}/{service}:{id}`.
    pub image: String,
    /// The engine's image id once built.
    pub image_id: Option<String>,
    /// The Dockerfile inside the context, when not `Dockerfile`.
    pub dockerfile: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    pub duration_ms: Option<u64>,
    /// For a failed build: the step that failed, as the builder printed it.
    pub failing_step: Option<String>,
    pub error: Option<String>,
}

/// A record with its log, for `GET …/builds/{id}`.
#[derive(Debug, Serialize)]
pub struct BuildView {
    #[serde(flatten)]
    pub record: BuildRecord,
    pub log: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct BuildQuery {
    /// Path of the Dockerfile inside the context.
    pub dockerfile: Option<String>,
}

/// The tag of a build's image.
pub fn image_tag(namespace: &str, service: &str, id: &str) -> String {
    format!("nimbus/{namespace}/{service}:{id}")
}

/// `b7` → 7.
pub fn build_number(id: &str) -> Option<u32> {
    let digits = id.strip_prefix('b')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A Dockerfile path inside the context: relative, plain components only.
pub fn check_dockerfile(path: &str) -> Result<PathBuf, ApiError> {
    let invalid = |reason: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_dockerfile",
            format!("dockerfile {path:?} {reason}"),
            Some("dockerfile"),
        )
    };
    if path.is_empty() || path.contains('\0') {
        return Err(invalid("must be a path inside the source folder"));
    }
    let parsed = Path::new(path);
    if !parsed
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(
            "must be relative to the source folder, without '..'",
        ));
    }
    Ok(parsed.to_path_buf())
}

fn service_dir(state: &ApiState, namespace: &str, service: &str) -> PathBuf {
    state.builds_dir.join(namespace).join(service)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn internal(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "{what}");
    ApiError::internal(format!("{what}: {error}"))
}

/// Files removed when dropped: the uploaded tar and the unpacked context.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// `POST …/builds`: receives the context, then builds it while streaming the output.
pub async fn start(
    State(state): State<ApiState>,
    UrlPath((ns, service)): UrlPath<(String, String)>,
    StrictQuery(query): StrictQuery<BuildQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    validate_name("namespace", &ns)?;
    validate_name("service", &service)?;
    let dockerfile = query
        .dockerfile
        .as_deref()
        .map(check_dockerfile)
        .transpose()?;
    let engine = state.containers.get()?.clone();

    // Receive and unpack the context before anything is recorded: bad input changes nothing.
    let scratch_dir = state.builds_dir.join(".incoming");
    tokio::fs::create_dir_all(&scratch_dir)
        .await
        .map_err(|e| internal("cannot create the builds directory", e))?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let tar_path = scratch_dir.join(format!("{unique}.tar"));
    let context = scratch_dir.join(unique);
    let scratch = Scratch(vec![tar_path.clone(), context.clone()]);
    receive(body, &tar_path).await?;
    unpack(&tar_path, &context).await?;
    let dockerfile_in_context =
        context.join(dockerfile.as_deref().unwrap_or(Path::new("Dockerfile")));
    if !dockerfile_in_context.is_file() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_dockerfile",
            format!(
                "the source folder has no {}: add one, or name it with --dockerfile",
                dockerfile
                    .as_deref()
                    .unwrap_or(Path::new("Dockerfile"))
                    .display()
            ),
            Some("dockerfile"),
        ));
    }

    let dir = service_dir(&state, &ns, &service);
    let (record, log_path) = allocate(&dir, &ns, &service, dockerfile.as_deref())
        .map_err(|e| internal("cannot record the build", e))?;
    tracing::info!(namespace = %ns, service = %service, build = %record.id, "Building from source.");
    let (tx, response) = ndjson();
    let _ = tx.send(json!({ "build": record }));
    let collect_images = state.collect_images.clone();
    tokio::spawn(async move {
        let _scratch = scratch; // removed when the build is over
        let record = run_build(
            engine.as_ref(),
            record,
            &context,
            dockerfile.as_deref(),
            &log_path,
            &tx,
        )
        .await;
        if let Err(error) = write_record(&dir, &record) {
            tracing::warn!(%error, build = %record.id, "Cannot save the build record.");
        }
        let last = match record.status {
            BuildStatus::Succeeded => json!({ "result": record }),
            _ => {
                let error = ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "build_failed",
                    record
                        .error
                        .clone()
                        .unwrap_or_else(|| "the build failed".into()),
                    Some("source"),
                );
                let mut line = error_line(&error);
                line["build"] = json!(record);
                line
            }
        };
        let _ = tx.send(last);
        prune(&dir, KEEP_BUILDS);
        // A pruned build's image may now be unneeded.
        collect_images.notify_one();
    });
    Ok(response)
}

/// Streams the request body into `path`, refusing more than [`MAX_CONTEXT_BYTES`].
async fn receive(body: Body, path: &Path) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| internal("cannot store the build context", e))?;
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("reading the build context failed: {e}"),
                Some("body"),
            )
        })?;
        total += chunk.len() as u64;
        if total > MAX_CONTEXT_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "context_too_large",
                format!(
                    "the source folder is larger than {} MiB as a tar",
                    MAX_CONTEXT_BYTES >> 20
                ),
                Some("body"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("cannot store the build context", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("cannot store the build context", e))?;
    if total == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_context",
            "the build context is empty: send the source folder as a tar",
            Some("body"),
        ));
    }
    Ok(())
}

/// Unpacks the tar into `dir` (the tar crate refuses entries that would land outside it).
async fn unpack(tar_path: &Path, dir: &Path) -> Result<(), ApiError> {
    let (tar_path, dir) = (tar_path.to_path_buf(), dir.to_path_buf());
    let unpacked = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let mut archive = tar::Archive::new(std::fs::File::open(&tar_path)?);
        archive.set_overwrite(true);
        archive.unpack(&dir)
    })
    .await
    .map_err(|e| internal("unpacking the build context failed", e))?;
    unpacked.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_context",
            format!("the build context is not a readable tar: {e}"),
            Some("body"),
        )
    })
}

/// The next `b{N}` of the service, claimed by creating its record (status `running`).
fn allocate(
    dir: &Path,
    namespace: &str,
    service: &str,
    dockerfile: Option<&Path>,
) -> std::io::Result<(BuildRecord, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    for _ in 0..100 {
        let next = numbered_records(dir).last().map_or(1, |(n, _)| n + 1);
        let id = format!("b{next}");
        let path = dir.join(format!("{id}.json"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                let record = BuildRecord {
                    image: image_tag(namespace, service, &id),
                    id: id.clone(),
                    namespace: namespace.to_string(),
                    service: service.to_string(),
                    status: BuildStatus::Running,
                    image_id: None,
                    dockerfile: dockerfile.map(|p| p.display().to_string()),
                    started_at: unix_now(),
                    duration_ms: None,
                    failing_step: None,
                    error: None,
                };
                file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
                return Ok((record, dir.join(format!("{id}.log"))));
            }
            // Another build took this number at the same moment.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no free build number after 100 tries",
    ))
}

/// Runs the engine's build, copying each line to the log file and the stream.
async fn run_build(
    engine: &dyn crate::containers::ContainerEngine,
    mut record: BuildRecord,
    context: &Path,
    dockerfile: Option<&Path>,
    log_path: &Path,
    tx: &mpsc::UnboundedSender<Value>,
) -> BuildRecord {
    let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<String>();
    let mut log = match std::fs::File::create(log_path) {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::warn!(%error, path = %log_path.display(), "Cannot write the build log.");
            None
        }
    };
    let forward = async {
        while let Some(line) = lines_rx.recv().await {
            if let Some(file) = log.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            let _ = tx.send(json!({ "line": line }));
        }
    };
    let started = std::time::Instant::now();
    let build = tokio::time::timeout(
        BUILD_TIMEOUT,
        engine.build(context, dockerfile, &record.image, lines_tx),
    );
    let (outcome, ()) = tokio::join!(build, forward);
    match outcome {
        Ok(Ok(built)) => {
            record.status = BuildStatus::Succeeded;
            record.image_id = Some(built.image_id);
            record.duration_ms = Some(built.duration.as_millis() as u64);
        }
        Ok(Err(failure)) => {
            record.status = BuildStatus::Failed;
            record.failing_step = failure.failing_step;
            if failure.error.code != "build_failed" {
                // A failed step is in the output already; other failures are not.
                let _ = tx.send(json!({ "line": format!("ERROR: {}", failure.error.message) }));
                if let Some(file) = log.as_mut() {
                    let _ = writeln!(file, "ERROR: {}", failure.error.message);
                }
            }
            record.error = Some(failure.error.message);
            record.duration_ms = Some(started.elapsed().as_millis() as u64);
        }
        Err(_) => {
            record.status = BuildStatus::Failed;
            let error = format!(
                "the build took more than {} minutes",
                BUILD_TIMEOUT.as_secs() / 60
            );
            if let Some(file) = log.as_mut() {
                let _ = writeln!(file, "ERROR: {error}");
            }
            record.error = Some(error);
            record.duration_ms = Some(started.elapsed().as_millis() as u64);
        }
    }
    tracing::info!(build = %record.id, status = ?record.status, ms = record.duration_ms, "Build finished.");
    record
}

/// Replaces a record (write, then rename).
fn write_record(dir: &Path, record: &BuildRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{}.json.tmp", record.id));
    std::fs::write(
        &tmp,
        serde_json::to_vec(record).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, dir.join(format!("{}.json", record.id)))
}

/// `(N, path)` of the `b{N}.json` records in `dir`, oldest first.
fn numbered_records(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let n = build_number(name.strip_suffix(".json")?)?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes all but the newest `keep` builds.
fn prune(dir: &Path, keep: usize) {
    let records = numbered_records(dir);
    let excess = records.len().saturating_sub(keep);
    for (_, path) in records.into_iter().take(excess) {
        let _ = std::fs::remove_file(path.with_extension("log"));
        let _ = std::fs::remove_file(&path);
    }
}

/// The record of build `id` (`latest` = the newest) of a service.
pub fn load(state: &ApiState, ns: &str, service: &str, id: &str) -> Result<BuildRecord, ApiError> {
    validate_name("namespace", ns)?;
    validate_name("service", service)?;
    let dir = service_dir(state, ns, service);
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "build_not_found",
            if id == "latest" {
                format!("service {service} has no build: deploy it with --source DIR")
            } else {
                format!("service {service} has no build {id:?}; `nimbus logs {service} --build` shows the latest")
            },
            Some("build"),
        )
    };
    let path = if id == "latest" {
        numbered_records(&dir)
            .pop()
            .map(|(_, path)| path)
            .ok_or_else(not_found)?
    } else {
        build_number(id).ok_or_else(not_found)?;
        dir.join(format!("{id}.json"))
    };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(internal("cannot read the build record", e)),
    };
    serde_json::from_slice(&text).map_err(|e| internal("the build record is damaged", e))
}

/// `GET …/builds`: the kept builds, oldest first.
pub async fn list(
    State(state): State<ApiState>,
    UrlPath((ns, service)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    validate_name("namespace", &ns)?;
    validate_name("service", &service)?;
    let records: Vec<BuildRecord> = numbered_records(&service_dir(&state, &ns, &service))
        .into_iter()
        .filter_map(|(_, path)| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
        .collect();
    Ok(Json(json!({ "builds": records })))
}

/// `GET …/builds/{build}`: one build (or `latest`) with its log.
pub async fn get(
    State(state): State<ApiState>,
    UrlPath((ns, service, build)): UrlPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = load(&state, &ns, &service, &build)?;
    let log_path = service_dir(&state, &ns, &service).join(format!("{}.log", record.id));
    let log = nimbus_runtime::tail_lines(&log_path, MAX_LOG_LINES);
    Ok(Json(json!(BuildView { record, log })))
}

/// At server start: removes contexts a previous run left in `.incoming` and marks builds it left
/// `running` as failed (the engine's build ended with that run's connection).
pub fn recover(builds_dir: &Path) {
    let _ = std::fs::remove_dir_all(builds_dir.join(".incoming"));
    let Ok(namespaces) = std::fs::read_dir(builds_dir) else {
        return;
    };
    for service_dir in namespaces
        .flatten()
        .filter_map(|ns| std::fs::read_dir(ns.path()).ok())
        .flatten()
        .flatten()
    {
        for (_, path) in numbered_records(&service_dir.path()) {
            let Some(mut record) = std::fs::read(&path)
                .ok()
                .and_then(|text| serde_json::from_slice::<BuildRecord>(&text).ok())
            else {
                continue;
            };
            if record.status == BuildStatus::Running {
                record.status = BuildStatus::Failed;
                record.error = Some("the server stopped during the build".to_string());
                if let Err(error) = write_record(&service_dir.path(), &record) {
                    tracing::warn!(%error, build = %record.id, "Cannot update an interrupted build.");
                }
            }
        }
    }
}

/// Forgets the builds of a deleted service.
pub fn forget_service(state: &ApiState, ns: &str, service: &str) {
    let dir = service_dir(state, ns, service);
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %dir.display(), "Cannot remove the builds of a deleted service.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids() {
        let cases = [
            ("b1", Some(1)),
            ("b42", Some(42)),
            ("b0", None),  // numbers start at 1
            ("b01", None), // one spelling per number
            ("b", None),
            ("x1", None),
            ("b1.json", None),
            ("latest", None),
        ];
        for (id, expected) in cases {
            assert_eq!(build_number(id), expected, "{id}");
        }
        assert_eq!(
            image_tag("default", "hello", "b3"),
            "nimbus/default/hello:b3"
        );
    }

    #[test]
    fn dockerfile_paths() {
        let cases = [
            ("Dockerfile", true),
            ("docker/prod.Dockerfile", true),
            ("./Dockerfile", true),
            ("../Dockerfile", false), // outside the context
            ("/etc/passwd", false),   // absolute
            ("a/../../b", false),
            ("", false),
        ];
        for (path, ok) in cases {
            assert_eq!(check_dockerfile(path).is_ok(), ok, "{path:?}");
        }
    }

    #[test]
    fn ids_count_up_and_old_builds_are_pruned() {
        let dir = std::env::temp_dir().join(format!("nimbus-builds-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for expected in 1..=5u32 {
            let (record, log) = allocate(&dir, "default", "hello", None).unwrap();
            assert_eq!(record.id, format!("b{expected}"));
            assert_eq!(record.status, BuildStatus::Running);
            std::fs::write(log, "line\n").unwrap();
        }
        prune(&dir, 2);
        let left: Vec<u32> = numbered_records(&dir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, [4, 5]);
        assert!(!dir.join("b1.log").exists());
        // Numbers keep counting after a prune.
        assert_eq!(allocate(&dir, "default", "hello", None).unwrap().0.id, "b6");

        // A build left running by a crashed server counts as failed after a restart.
        let root = dir
            .parent()
            .unwrap()
            .join(format!("nimbus-builds-root-{}", std::process::id()));
        let service = root.join("default/hello");
        std::fs::create_dir_all(root.join(".incoming/ctx")).unwrap();
        let (record, _) = allocate(&service, "default", "hello", None).unwrap();
        recover(&root);
        assert!(!root.join(".incoming").exists());
        let text = std::fs::read(service.join(format!("{}.json", record.id))).unwrap();
        let after: BuildRecord = serde_json::from_slice(&text).unwrap();
        assert_eq!(after.status, BuildStatus::Failed);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&root);
    }
}
