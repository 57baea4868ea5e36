//! What the API needs from a container engine ([`ContainerEngine`]: images, builds, volumes), whether
//! one is available ([`Containers`]), and the routes that use it directly: `POST /v1/images/pull`
//! and the `/v1/volumes` routes. Builds are in [`crate::builds`].
//!
//! The API never starts containers; instances are the reconciler's. The binary implements the
//! trait over the Docker driver, so this crate does not depend on an engine client.
//!
//! Long operations (pull, build) answer `application/x-ndjson`: one JSON object per line as the
//! engine reports progress (`{"line": "…"}`), then one final `{"result": …}` or `{"error": …}`
//! line. Errors found before the stream starts are ordinary JSON errors with their status.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use nimbus_model::spec::{validate_image, validate_volume_name};
use nimbus_model::{Runtime, VersionSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, StrictJson};
use crate::ApiState;

/// Where an engine sends output lines as they happen.
pub type LineSink = mpsc::UnboundedSender<String>;

/// How long a pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The engine's id, `sha256:…`.
    pub image_id: String,
    /// Wall time of the build.
    pub duration: Duration,
}

/// One tag of an image this server built, with the image's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedImage {
    /// e.g. `nimbus/default/web:b3`.
    pub tag: String,
    /// The engine's id, `sha256:…`.
    pub id: String,
}

/// A build that produced no image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFailure {
    pub error: ApiError,
    /// The step that failed (`Step 3/4 : RUN make`), when the engine said.
    pub failing_step: Option<String>,
}

/// A volume as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// RFC 3339, as the engine reports it.
    pub created_at: Option<String>,
    /// Containers (running or stopped) that mount it.
    pub used_by: Vec<String>,
}

/// The engine operations behind the API's container routes. Errors are already in the API's
/// shape (the implementation decides the status and code).
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Whether the image is present locally.
    async fn image_exists(&self, image: &str) -> Result<bool, ApiError>;
    /// Makes the image present, sending progress lines; `true` when it was downloaded.
    async fn pull(&self, image: &str, progress: LineSink) -> Result<bool, ApiError>;
    /// Builds `context` into an image tagged `tag`, sending each output line as it happens.
    /// `dockerfile` is relative to the context (default `Dockerfile`).
    async fn build(
        &self,
        context: &Path,
        dockerfile: Option<&Path>,
        tag: &str,
        output: LineSink,
    ) -> Result<BuiltImage, BuildFailure>;
    /// Every tag of the images this server built, with its image's id.
    async fn built_images(&self) -> Result<Vec<TaggedImage>, ApiError>;
    /// Removes an image tag: `false` (and nothing changed) while a container uses the image.
    async fn remove_image(&self, image: &str) -> Result<bool, ApiError>;
    async fn create_volume(&self, name: &str) -> Result<VolumeInfo, ApiError>;
    /// This server's volumes, sorted by name.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ApiError>;
    /// Refused (409) while a container mounts it.
    async fn delete_volume(&self, name: &str) -> Result<(), ApiError>;
}

/// The container engine, or why there is none.
#[derive(Clone)]
pub enum Containers {
    Available(Arc<dyn ContainerEngine>),
    /// The reason, e.g. "Docker is not running: start it with `dockerd` …".
    Unavailable(Arc<str>),
}

// === impl Containers ===

impl Containers {
    /// The engine, or a 503 `docker_unavailable` that says how to start Docker.
    pub fn get(&self) -> Result<&Arc<dyn ContainerEngine>, ApiError> {
        match self {
            Containers::Available(engine) => Ok(engine),
            Containers::Unavailable(reason) => Err(unavailable(reason)),
        }
    }
}

/// The error of every container operation on a server without Docker.
pub fn unavailable(reason: &str) -> ApiError {
    let mut message = reason.to_string();
    if !message.contains("dockerd") {
        message.push_str("; start Docker with `dockerd` (or `scripts/docker-up.sh`)");
    }
    message.push_str(
        ", then try again: the server connects to it when next asked, no restart needed. \
         Process versions (--command) work without it.",
    );
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "docker_unavailable",
        message,
        Some("image"),
    )
}

/// Checks what a container version needs from the engine before it is stored: Docker is there,
/// the CPU limit fits this machine, the image is present and every volume exists.
pub async fn check_container_version(state: &ApiState, spec: &VersionSpec) -> Result<(), ApiError> {
    if spec.runtime() != Runtime::Container {
        return Ok(());
    }
    let engine = state.containers.get()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_cpu_fits(spec.cpu, cores)?;
    if let Some(image) = &spec.image {
        if !engine.image_exists(image).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "image_not_found",
                format!(
                    "image {image} is not present locally: `nimbus deploy SERVICE --image {image}` pulls it, or build one with --source DIR"
                ),
                Some("image"),
            ));
        }
    }
    if !spec.volumes.is_empty() {
        let existing = engine.list_volumes().await?;
        for mount in &spec.volumes {
            if !existing.iter().any(|v| v.name == mount.name) {
                return Err(volume_not_found(&mount.name, "volumes"));
            }
        }
    }
    Ok(())
}

/// A CPU limit above the machine's cores is refused by the engine at start; say so at deploy.
pub fn check_cpu_fits(cpu: Option<f64>, cores: usize) -> Result<(), ApiError> {
    match cpu {
        Some(cpu) if cpu > cores as f64 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_cpu",
            format!("cpu {cpu} is more than the {cores} cores of this machine"),
            Some("cpu"),
        )),
        _ => Ok(()),
    }
}

fn volume_not_found(name: &str, field: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "volume_not_found",
        format!("volume {name} does not exist: create it with `nimbus volumes create {name}`"),
        Some(field),
    )
}

// === NDJSON ===

/// A streamed answer: each value sent on the returned channel becomes one line.
pub fn ndjson() -> (mpsc::UnboundedSender<Value>, Response) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let value = rx.recv().await?;
        let mut line = serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    let response = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response();
    (tx, response)
}

/// The final line of a failed stream: the error in the one error shape.
pub fn error_line(error: &ApiError) -> Value {
    json!({"error": {"code": error.code, "message": error.message, "field": error.field}})
}

// === routes ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    pub image: String,
}

/// `POST /v1/images/pull`: makes an image present, streaming progress.
pub async fn pull(
    State(state): State<ApiState>,
    StrictJson(body): StrictJson<PullBody>,
) -> Result<Response, ApiError> {
    let image = body.image.trim().to_string();
    validate_image(&image)?;
    let engine = state.containers.get()?.clone();
    let (tx, response) = ndjson();
    if engine.image_exists(&image).await? {
        let _ = tx.send(json!({"result": {"image": image, "pulled": false}}));
        return Ok(response);
    }
    tokio::spawn(async move {
        let _ = tx.send(json!({"line": format!("pulling {image}")}));
        let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<String>();
        let forward = async {
            while let Some(line) = lines_rx.recv().await {
                let _ = tx.send(json!({"line": line}));
            }
        };
        let pull = tokio::time::timeout(PULL_TIMEOUT, engine.pull(&image, lines_tx));
        let (pulled, ()) = tokio::join!(pull, forward);
        let last = match pulled {
            Ok(Ok(pulled)) => json!({"result": {"image": image, "pulled": pulled}}),
            Ok(Err(error)) => error_line(&error),
            Err(_) => error_line(&ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "pull_timeout",
                format!(
                    "pulling {image} took more than {} minutes",
                    PULL_TIMEOUT.as_secs() / 60
                ),
                Some("image"),
            )),
        };
        let _ = tx.send(last);
    });
    Ok(response)
}

/// A volume with the versions that mount it (`NS/SERVICE/VERSION`).
#[derive(Debug, Serialize)]
pub struct VolumeView {
    #[serde(flatten)]
    pub info: VolumeInfo,
    pub versions: Vec<String>,
}

/// Versions (any state) whose spec mounts `name`.
fn versions_mounting(state: &ApiState, name: &str) -> Result<Vec<String>, ApiError> {
    let desired = state.store.snapshot()?;
    Ok(desired
        .versions
        .iter()
        .filter(|v| v.spec.volumes.iter().any(|m| m.name == name))
        .map(|v| format!("{}/{}/{}", v.namespace, v.service, v.name))
        .collect())
}

pub async fn list_volumes(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let volumes = state.containers.get()?.list_volumes().await?;
    let mut views = Vec::with_capacity(volumes.len());
    for info in volumes {
        let versions = versions_mounting(&state, &info.name)?;
        views.push(VolumeView { info, versions });
    }
    Ok(Json(json!({"volumes": views})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeBody {
    pub name: String,
}

pub async fn create_volume(
    State(state): State<ApiState>,
    StrictJson(body): StrictJson<VolumeBody>,
) -> Result<impl IntoResponse, ApiError> {
    validate_volume_name(&body.name).map_err(|e| ApiError::from(e).with_field("name"))?;
    let info = state.containers.get()?.create_volume(&body.name).await?;
    let view = VolumeView {
        info,
        versions: Vec::new(),
    };
    Ok((StatusCode::CREATED, Json(json!(view))))
}

/// Refused while a version (running or not) or a container mounts it.
pub async fn delete_volume(
    State(state): State<ApiState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    validate_volume_name(&name).map_err(|e| ApiError::from(e).with_field("name"))?;
    let engine = state.containers.get()?;
    if !engine.list_volumes().await?.iter().any(|v| v.name == name) {
        return Err(volume_not_found(&name, "name"));
    }
    let versions = versions_mounting(&state, &name)?;
    if !versions.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "volume_in_use",
            format!(
                "volume {name} is mounted by {}: delete those versions (or their services) first",
                versions.join(", ")
            ),
            Some("name"),
        ));
    }
    engine.delete_volume(&name).await?;
    Ok(Json(json!({"deleted": name})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_must_fit_the_machine() {
        let cases = [
            (None, 2, true),       // no limit
            (Some(0.5), 2, true),  // half a core
            (Some(2.0), 2, true),  // all of them
            (Some(2.5), 2, false), // more than there are
        ];
        for (cpu, cores, ok) in cases {
            assert_eq!(check_cpu_fits(cpu, cores).is_ok(), ok, "{cpu:?} on {cores}");
        }
    }

    #[test]
    fn unavailable_says_how_to_start_docker() {
        let error = Containers::Unavailable("Docker is not running: no socket".into())
            .get()
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "docker_unavailable");
        assert!(error.message.contains("`dockerd`"), "{}", error.message);
        assert!(
            error.message.contains("scripts/docker-up.sh"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("no restart needed"),
            "{}",
            error.message
        );
    }
}
