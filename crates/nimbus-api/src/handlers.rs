//! One function per route. Each validates, writes the store once, pokes the reconciler.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nimbus_model::domains::validate_custom_domain;
use nimbus_model::names::validate_name;
use nimbus_model::{
    BuildInfo, ByteSize, RequestView, ScalingInput, ScalingUpdate, TrafficPolicy, VersionInput,
    VolumeMount, DEFAULT_NAMESPACE,
};
use nimbus_store::{Deployed, StoreError, VersionRecord};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, StrictJson, StrictQuery};
use crate::views::Urls;
use crate::ApiState;

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// How long a delete waits for the reconciler to stop the instances it removed.
const STOP_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn urls(state: &ApiState) -> Urls<'_> {
    Urls {
        base_domain: &state.base_domain,
        gateway_port: state.gateway_port,
    }
}

pub(crate) fn to_json<T: serde::Serialize>(value: T) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such API route; see GET /v1/openapi.json",
        Some("path"),
    )
}

/// A route that exists, asked with a method it does not take (axum's own 405 has no body).
pub async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}; see GET /v1/openapi.json"),
        Some("method"),
    )
}

pub async fn list_namespaces(State(state): State<ApiState>) -> ApiResult {
    Ok(Json(json!({"namespaces": state.store.list_namespaces()?})))
}

pub async fn list_services(State(state): State<ApiState>, Path(ns): Path<String>) -> ApiResult {
    let services = state.store.list_services(Some(&ns))?;
    let urls = urls(&state);
    let views: Vec<_> = services.iter().map(|s| urls.service(s)).collect();
    Ok(Json(json!({"services": to_json(views)?.0})))
}

pub async fn get_service(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    let record = state.store.get_service(&ns, &service)?;
    to_json(urls(&state).service(&record))
}

pub async fn delete_service(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    state.store.delete_service(&ns, &service)?;
    crate::builds::forget_service(&state, &ns, &service);
    state.changed();
    // A function's pending async invocations go with it.
    if let Err(error) = state.functions.queue().delete_function(&ns, &service) {
        tracing::warn!(%error, "Could not drop the deleted function's invocations.");
    }
    wait_until_stopped(&state, |i| i.namespace == ns && i.service == service).await;
    state.collect_images.notify_one();
    Ok(Json(json!({"deleted": service})))
}

/// Waits (bounded) until the reconciler reports no instance matching `gone`, so a caller that
/// deletes something can rely on its processes being gone when the call returns.
async fn wait_until_stopped(
    state: &ApiState,
    gone: impl Fn(&nimbus_model::status::InstanceStatus) -> bool,
) {
    let mut rx = state.status.clone();
    let done =
        tokio::time::timeout(STOP_WAIT, rx.wait_for(|s| !s.instances.iter().any(&gone))).await;
    if done.is_err() {
        tracing::warn!("Instances still stopping after {}s.", STOP_WAIT.as_secs());
    }
}

/// The deploy body: a version input plus `no_traffic`. Spelled out (not flattened) so unknown
/// fields are rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    pub command: Option<String>,
    /// A container image present locally (see `POST /v1/images/pull`).
    pub image: Option<String>,
    /// A successful build of this service (`b3`): its image, and the build on the version.
    pub build: Option<String>,
    pub cpu: Option<f64>,
    pub memory: Option<ByteSize>,
    pub tmp_size: Option<ByteSize>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub port: Option<u32>,
    pub health_path: Option<String>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub target_utilization: Option<f64>,
    pub scale_to_zero_after_secs: Option<u64>,
    pub queue_depth: Option<u32>,
    #[serde(default)]
    pub no_traffic: bool,
    /// Create a new version even when only scaling changed.
    #[serde(default)]
    pub new_version: bool,
    /// Start from this version's settings (`latest`, or a name such as `v3`): the fields given
    /// replace its, the rest are kept, as Cloud Run builds a revision from the last one.
    pub from: Option<String>,
    /// Environment variables of the `from` version to drop.
    #[serde(default)]
    pub remove_env: Vec<String>,
}

pub async fn deploy(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictJson(body): StrictJson<DeployBody>,
) -> ApiResult<impl IntoResponse> {
    validate_name("namespace", &ns)?;
    validate_name("service", &service)?;
    let build = match &body.build {
        Some(id) => Some(built_image(
            &state,
            &ns,
            &service,
            id,
            body.image.as_deref(),
        )?),
        None => None,
    };
    let changes = VersionInput {
        command: body.command,
        image: body
            .image
            .or_else(|| build.as_ref().map(|b| b.image.clone())),
        cpu: body.cpu,
        memory: body.memory,
        tmp_size: body.tmp_size,
        volumes: body.volumes,
        env: body.env,
        port: body.port,
        health_path: body.health_path,
        min_instances: body.min_instances,
        max_instances: body.max_instances,
        concurrency: body.concurrency,
        timeout_secs: body.timeout_secs,
        scaling: ScalingInput {
            target_utilization: body.target_utilization,
            scale_to_zero_after_secs: body.scale_to_zero_after_secs,
            queue_depth: body.queue_depth,
        },
    };
    let (input, kept_build) = match &body.from {
        None if !body.remove_env.is_empty() => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_env",
                "remove_env drops variables of the version a deploy starts from: give from \
                 (e.g. \"latest\") too",
                Some("remove_env"),
            ));
        }
        None => (changes, None),
        Some(from) => {
            let base = deploy_base(&state, &ns, &service, from)?;
            // The same image keeps the build it came from (its metering, its image GC).
            let kept_build = changes
                .image
                .is_none()
                .then(|| base.spec.build.clone())
                .flatten();
            let input = changes.over(base.spec.to_input(), &base.name, &body.remove_env)?;
            (input, kept_build)
        }
    };
    let mut spec = input.resolve()?;
    spec.build = build
        .map(|b| BuildInfo {
            id: b.id,
            duration_ms: b.duration_ms.unwrap_or(0),
        })
        .or(kept_build);
    crate::containers::check_container_version(&state, &spec).await?;
    let deployed =
        state
            .store
            .deploy_version(&ns, &service, &spec, body.no_traffic, body.new_version)?;
    state.changed();
    let (svc, version, created) = match deployed {
        Deployed::Created(svc, version) => (svc, version, true),
        Deployed::ScalingUpdated(svc, version) => (svc, version, false),
    };
    let status = state.status.borrow().clone();
    let urls = urls(&state);
    let body = json!({
        "service": to_json(urls.service(&svc))?.0,
        "version": to_json(urls.version(&version, &svc, &status))?.0,
        "created": created,
    });
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(body)))
}

/// The version a deploy `from` starts with: `latest` (the newest) or a version name.
fn deploy_base(
    state: &ApiState,
    ns: &str,
    service: &str,
    from: &str,
) -> Result<VersionRecord, ApiError> {
    let newest = match state.store.get_service(ns, service) {
        Ok(svc) => svc.versions.last().cloned(),
        Err(StoreError::Rejected(e)) if e.code == "service_not_found" => None,
        Err(e) => return Err(e.into()),
    };
    let name = if from == "latest" {
        newest.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_command",
                format!(
                    "service {service} has no version to start from yet: its first deploy needs \
                     a command to run (e.g. --command \"python3 app.py\") or an image (--image, \
                     --source)"
                ),
                Some("command"),
            )
        })?
    } else {
        validate_name("from", from)?;
        from.to_string()
    };
    let base = match state.store.get_version(ns, service, &name) {
        Ok(base) => base,
        Err(StoreError::Rejected(e)) if e.code.ends_with("_not_found") => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "version_not_found",
                format!("service {service} has no version {name} to start from"),
                Some("from"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if base.spec.function.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "is_a_function",
            format!("{service} is a function: deploy its new versions with `nimbus fn deploy`"),
            Some("from"),
        ));
    }
    Ok(base)
}

/// The record of a successful build named by a deploy; its image must match `image` if given.
fn built_image(
    state: &ApiState,
    ns: &str,
    service: &str,
    id: &str,
    image: Option<&str>,
) -> Result<crate::builds::BuildRecord, ApiError> {
    let record = crate::builds::load(state, ns, service, id)?;
    if record.status != crate::builds::BuildStatus::Succeeded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "build_not_succeeded",
            format!(
                "build {} of {service} is {}, not succeeded: only a successful build can be deployed",
                record.id,
                json!(record.status).as_str().unwrap_or("unfinished")
            ),
            Some("build"),
        ));
    }
    if image.is_some_and(|image| image != record.image) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_build",
            format!(
                "build {} made image {}; leave out image or give that one",
                record.id, record.image
            ),
            Some("image"),
        ));
    }
    Ok(record)
}

pub async fn update_scaling(
    State(state): State<ApiState>,
    Path((ns, service, version)): Path<(String, String, String)>,
    StrictJson(update): StrictJson<ScalingUpdate>,
) -> ApiResult {
    let record = state
        .store
        .update_scaling(&ns, &service, &version, &update)?;
    state.changed();
    let svc = state.store.get_service(&ns, &service)?;
    let status = state.status.borrow().clone();
    to_json(urls(&state).version(&record, &svc, &status))
}

pub async fn list_versions(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    let svc = state.store.get_service(&ns, &service)?;
    let versions = state.store.list_versions(&ns, &service)?;
    let status = state.status.borrow().clone();
    let urls = urls(&state);
    let views: Vec<_> = versions
        .iter()
        .map(|v| urls.version(v, &svc, &status))
        .collect();
    Ok(Json(json!({"versions": to_json(views)?.0})))
}

pub async fn get_version(
    State(state): State<ApiState>,
    Path((ns, service, version)): Path<(String, String, String)>,
) -> ApiResult {
    let svc = state.store.get_service(&ns, &service)?;
    let record = state.store.get_version(&ns, &service, &version)?;
    let status = state.status.borrow().clone();
    to_json(urls(&state).version(&record, &svc, &status))
}

pub async fn delete_version(
    State(state): State<ApiState>,
    Path((ns, service, version)): Path<(String, String, String)>,
) -> ApiResult {
    state.store.delete_version(&ns, &service, &version)?;
    state.changed();
    wait_until_stopped(&state, |i| {
        i.namespace == ns && i.service == service && i.version == version
    })
    .await;
    state.collect_images.notify_one();
    Ok(Json(json!({"deleted": version})))
}

pub async fn get_traffic(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    to_json(state.store.get_service(&ns, &service)?.traffic)
}

pub async fn set_traffic(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictJson(policy): StrictJson<TrafficPolicy>,
) -> ApiResult {
    let record = state.store.set_traffic(&ns, &service, &policy)?;
    state.changed_and_routed().await;
    to_json(urls(&state).service(&record))
}

pub async fn get_gateway(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    to_json(state.store.gateway_policy(&ns, &service)?)
}

/// Replaces the service's gateway policy. The spec is compiled exactly as the gateway will
/// compile it, so a stored policy always takes effect; a bad one changes nothing.
pub async fn set_gateway(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictJson(spec): StrictJson<nimbus_model::GatewaySpec>,
) -> ApiResult {
    spec.validate()?;
    nimbus_gateway::ServicePolicy::compile(&spec).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
            Some(e.field()),
        )
    })?;
    let stored = state.store.set_gateway_policy(&ns, &service, &spec)?;
    state.changed_and_routed().await;
    to_json(stored)
}

/// A certificate to add: the host it serves (`www.example.com` or `*.example.com`) and the
/// PEM chain and key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertBody {
    pub host: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Checks a certificate host: a domain name, or `*.` and one.
fn cert_host(host: &str) -> Result<String, ApiError> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !labels_ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_host",
            format!("{host:?} is not a host name (e.g. www.example.com or *.example.com)"),
            Some("host"),
        ));
    }
    Ok(host)
}

pub async fn add_cert(
    State(state): State<ApiState>,
    StrictJson(body): StrictJson<CertBody>,
) -> ApiResult<impl IntoResponse> {
    let host = cert_host(&body.host)?;
    nimbus_gateway::tls::certified_key(body.cert_pem.as_bytes(), body.key_pem.as_bytes()).map_err(
        |e| {
            let field = match e {
                nimbus_gateway::tls::TlsError::Key(_)
                | nimbus_gateway::tls::TlsError::KeyType(_)
                | nimbus_gateway::tls::TlsError::Mismatch => "key_pem",
                _ => "cert_pem",
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_certificate",
                e.to_string(),
                Some(field),
            )
        },
    )?;
    let record = state
        .store
        .put_certificate(&host, &body.cert_pem, &body.key_pem)?;
    state.changed_and_routed().await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"host": record.host, "created_at": record.created_at})),
    ))
}

pub async fn list_certs(State(state): State<ApiState>) -> ApiResult {
    let certs: Vec<Value> = state
        .store
        .list_certificates()?
        .into_iter()
        .map(|c| json!({"host": c.host, "created_at": c.created_at}))
        .collect();
    Ok(Json(json!({"certs": certs})))
}

pub async fn remove_cert(State(state): State<ApiState>, Path(host): Path<String>) -> ApiResult {
    let host = cert_host(&host)?;
    state.store.remove_certificate(&host)?;
    state.changed_and_routed().await;
    Ok(Json(json!({"deleted": host})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

pub async fn explain_traffic(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictJson(body): StrictJson<ExplainBody>,
) -> ApiResult {
    let svc = state.store.get_service(&ns, &service)?;
    let mut headers = HeaderMap::new();
    for (name, value) in &body.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("{name:?} is not a valid header name"),
                Some("headers"),
            )
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                format!("{value:?} is not a valid header value"),
                Some("headers"),
            )
        })?;
        headers.append(name, value);
    }
    let without_fragment = body.url.split('#').next().unwrap_or_default();
    let query = without_fragment.split_once('?').map(|(_, q)| q);
    let req = RequestView {
        query,
        headers: &headers,
    };
    let steps = svc.traffic.explain(&req);
    // A rule decides deterministically; the split is a weighted draw, reported as such.
    let rule = svc
        .traffic
        .rules
        .iter()
        .position(|r| r.matcher.matches(&req));
    let version = rule.map(|i| svc.traffic.rules[i].version.clone());
    Ok(Json(json!({
        "version": version,
        "rule": rule.map(|i| i + 1),
        "split": svc.traffic.split,
        "steps": steps,
    })))
}

#[derive(Debug, Deserialize)]
pub struct InstanceQuery {
    pub namespace: Option<String>,
    pub service: Option<String>,
}

pub async fn list_instances(
    State(state): State<ApiState>,
    StrictQuery(q): StrictQuery<InstanceQuery>,
) -> ApiResult {
    let status = state.status.borrow().clone();
    let instances: Vec<_> = status
        .instances
        .iter()
        .filter(|i| q.namespace.as_deref().is_none_or(|ns| i.namespace == ns))
        .filter(|i| q.service.as_deref().is_none_or(|s| i.service == s))
        .collect();
    Ok(Json(json!({"instances": to_json(instances)?.0})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainBody {
    pub host: String,
    pub namespace: Option<String>,
    pub service: String,
}

pub async fn list_domains(State(state): State<ApiState>) -> ApiResult {
    Ok(Json(
        json!({"domains": to_json(state.store.list_domains()?)?.0}),
    ))
}

pub async fn add_domain(
    State(state): State<ApiState>,
    StrictJson(body): StrictJson<DomainBody>,
) -> ApiResult<impl IntoResponse> {
    let host = validate_custom_domain(&body.host, &state.base_domain)?;
    let ns = body.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let record = state.store.add_domain(&host, ns, &body.service)?;
    state.changed_and_routed().await;
    Ok((StatusCode::CREATED, to_json(record)?))
}

pub async fn remove_domain(State(state): State<ApiState>, Path(host): Path<String>) -> ApiResult {
    let host = nimbus_model::domains::normalize_host(&host);
    let removed = state.store.remove_domain(&host)?;
    state.changed_and_routed().await;
    Ok(Json(json!({"deleted": removed.host})))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub limit: Option<u32>,
    /// Only events with a larger id (what `nimbus events -f` polls with).
    pub after: Option<i64>,
}

pub async fn events(
    State(state): State<ApiState>,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> ApiResult {
    let events = state
        .store
        .list_events(None, q.limit.unwrap_or(100).min(1000), q.after)?;
    Ok(Json(json!({"events": to_json(events)?.0})))
}

pub async fn service_events(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<EventsQuery>,
) -> ApiResult {
    let events = state.store.list_events(
        Some((&ns, &service)),
        q.limit.unwrap_or(100).min(1000),
        q.after,
    )?;
    Ok(Json(json!({"events": to_json(events)?.0})))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    pub version: Option<String>,
    pub instance: Option<String>,
    /// At most this many lines per instance, the newest (default 100, or 10,000 with `since`).
    pub tail: Option<usize>,
    /// Only lines written in this last stretch of time (`30s`, `10m`, `2h`), to within the
    /// logs' time marks (a second or two).
    pub since: Option<String>,
    pub cursor: Option<String>,
}

/// Most instance log files read in one call; the newest are kept.
const MAX_LOG_FILES: usize = 50;
/// Most bytes read from one file per call when following.
const MAX_FOLLOW_BYTES: usize = 1 << 20;
/// Most lines per instance in one answer.
const MAX_TAIL: usize = 10_000;
/// Most bytes read from one file (and its rotated copy) for `since`: the newest are kept.
const MAX_SINCE_BYTES: usize = 4 << 20;

pub async fn logs(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<LogsQuery>,
) -> ApiResult {
    for (field, name) in [
        ("namespace", Some(&ns)),
        ("service", Some(&service)),
        ("version", q.version.as_ref()),
    ] {
        if let Some(name) = name {
            validate_name(field, name)?;
        }
    }
    if let Some(instance) = &q.instance {
        if instance.contains('/') || instance.contains("..") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_name",
                "instance id is not valid",
                Some("instance"),
            ));
        }
    }
    let dir = state.logs_dir.join(&ns).join(&service);
    let files = log_files(&dir, q.version.as_deref(), q.instance.as_deref());
    let cursor = parse_cursor(q.cursor.as_deref());
    let since_ms = match &q.since {
        Some(text) => {
            let secs = parse_since_secs(text)?;
            Some(nimbus_runtime::logs::unix_ms().saturating_sub(secs.saturating_mul(1000)))
        }
        None => None,
    };
    let default_tail = if since_ms.is_some() { MAX_TAIL } else { 100 };
    let tail = q.tail.unwrap_or(default_tail).min(MAX_TAIL);
    let mut lines = Vec::new();
    let mut next_cursor = Vec::new();
    for (version, instance, path) in files {
        let offset = cursor.get(&instance).copied();
        let (new_lines, end) = match offset {
            Some(offset) => nimbus_runtime::read_from(&path, offset, MAX_FOLLOW_BYTES)
                .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?,
            None => {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let lines = match since_ms {
                    Some(since) => {
                        nimbus_runtime::logs::lines_since(&path, since, tail, MAX_SINCE_BYTES)
                    }
                    None => nimbus_runtime::tail_lines(&path, tail),
                };
                (lines, size)
            }
        };
        for line in new_lines {
            lines.push(json!({"instance": instance, "version": version, "line": line}));
        }
        next_cursor.push(format!("{instance}:{end}"));
    }
    Ok(Json(
        json!({"lines": lines, "cursor": next_cursor.join(",")}),
    ))
}

fn parse_cursor(cursor: Option<&str>) -> BTreeMap<String, u64> {
    cursor
        .unwrap_or_default()
        .split(',')
        .filter_map(|part| {
            let (id, offset) = part.rsplit_once(':')?;
            Some((id.to_string(), offset.parse().ok()?))
        })
        .collect()
}

/// `(version, instance, path)` of current log files under `DATA/logs/NS/SERVICE`, oldest first.
fn log_files(
    dir: &FsPath,
    version: Option<&str>,
    instance: Option<&str>,
) -> Vec<(String, String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(versions) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    for vdir in versions.flatten() {
        let vname = vdir.file_name().to_string_lossy().into_owned();
        if version.is_some_and(|v| v != vname) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(vdir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".log") else {
                continue;
            };
            if instance.is_some_and(|i| i != id) {
                continue;
            }
            let modified = file.metadata().and_then(|m| m.modified()).ok();
            found.push((modified, vname.clone(), id.to_string(), file.path()));
        }
    }
    found.sort_by_key(|entry| entry.0);
    let skip = found.len().saturating_sub(MAX_LOG_FILES);
    found
        .into_iter()
        .skip(skip)
        .map(|(_, v, i, p)| (v, i, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors() {
        let c = parse_cursor(Some("a-v1-1:10,b-v2-2:0,broken,c:x"));
        assert_eq!(c.get("a-v1-1"), Some(&10));
        assert_eq!(c.get("b-v2-2"), Some(&0));
        assert_eq!(c.len(), 2);
        assert!(parse_cursor(None).is_empty());
    }
}

/// A new scheduled scaling policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    pub cron: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    /// Only this version; absent = every version of the service.
    pub version: Option<String>,
    /// Active this long after each fire; absent = until another schedule fires.
    pub duration_secs: Option<u64>,
}

/// The field a schedule error is about.
fn schedule_error(e: nimbus_autoscaler::ScheduleError) -> ApiError {
    use nimbus_autoscaler::ScheduleError as E;
    let field = match &e {
        E::EmptyCron | E::FieldCount { .. } | E::InvalidCron { .. } => "cron",
        E::Min(_) | E::MinAboveMax { .. } => "min_instances",
        E::Max(_) => "max_instances",
        E::ZeroDuration => "duration_secs",
    };
    let message = match &e {
        E::EmptyCron | E::FieldCount { .. } | E::InvalidCron { .. } => format!(
            "{e}; times are in the server's time zone, e.g. \"0 9 * * 1-5\" for 09:00 on weekdays"
        ),
        _ => e.to_string(),
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_schedule",
        message,
        Some(field),
    )
}

pub async fn add_schedule(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
    StrictJson(body): StrictJson<ScheduleBody>,
) -> ApiResult<impl IntoResponse> {
    let schedule = nimbus_autoscaler::Schedule {
        id: 0,
        cron: body.cron.trim().to_string(),
        min: body.min_instances,
        max: body.max_instances,
        version: body.version.clone(),
        duration_secs: body.duration_secs,
    };
    nimbus_autoscaler::schedule::validate(&schedule).map_err(schedule_error)?;
    let record = state.store.add_schedule(
        &ns,
        &service,
        &nimbus_store::NewSchedule {
            version: body.version,
            cron: schedule.cron,
            min_instances: body.min_instances,
            max_instances: body.max_instances,
            duration_secs: body.duration_secs,
        },
    )?;
    state.changed();
    Ok((StatusCode::CREATED, to_json(record)?))
}

pub async fn list_schedules(
    State(state): State<ApiState>,
    Path((ns, service)): Path<(String, String)>,
) -> ApiResult {
    let schedules = state.store.list_schedules(&ns, &service)?;
    Ok(Json(json!({"schedules": to_json(schedules)?.0})))
}

pub async fn remove_schedule(
    State(state): State<ApiState>,
    Path((ns, service, id)): Path<(String, String, String)>,
) -> ApiResult {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_schedule_id",
            format!("schedule id {id:?} is not a number; `nimbus scaling schedule list SERVICE` shows the ids"),
            Some("id"),
        )
    })?;
    state.store.remove_schedule(&ns, &service, id)?;
    state.changed();
    Ok(Json(json!({"deleted": id})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    /// How far back: `30m`, `24h`, `7d` (default `24h`).
    pub since: Option<String>,
    /// `service` (default), `version` or `day`.
    pub by: Option<String>,
}

/// `30m`, `24h`, `7d`, `90s` → minutes (rounded up, at least 1).
pub fn parse_since(text: &str) -> Result<u64, ApiError> {
    Ok(parse_since_secs(text)?.div_ceil(60))
}

/// `30m`, `24h`, `7d`, `90s` → seconds (1 s to 400 days).
pub fn parse_since_secs(text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            format!("since {text:?} is not a duration like 30m, 24h or 7d"),
            Some("since"),
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(invalid()),
    };
    if seconds == 0 || seconds > 400 * 86_400 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_since",
            format!("since {text:?} must be between 1s and 400d"),
            Some("since"),
        ));
    }
    Ok(seconds)
}

/// Quantities in the units a person reads, next to the exact integer ones.
fn usage_json(u: &nimbus_metering::Usage) -> Value {
    json!({
        "cpu_seconds": u.cpu_seconds(),
        "memory_used_gb_seconds": u.memory_used_gb_seconds(),
        "memory_allocated_gb_seconds": u.memory_allocated_gb_seconds(),
        "instance_seconds": u.instance_seconds(),
        "requests": u.requests,
        "egress_bytes": u.egress_bytes,
        "ingress_bytes": u.ingress_bytes,
        "build_seconds": u.build_seconds(),
        "function_gb_seconds": u.function_gb_seconds(),
        "exact": u,
    })
}

pub async fn usage(
    State(state): State<ApiState>,
    StrictQuery(q): StrictQuery<UsageQuery>,
) -> ApiResult {
    use nimbus_metering::{bill_gross, bill_month, calendar, minute_of, GroupBy, UsageFilter};
    let by = match q.by.as_deref().unwrap_or("service") {
        "service" => GroupBy::Service,
        "version" => GroupBy::Version,
        "day" => GroupBy::Day,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_group",
                format!("cannot group usage by {other:?}; use service, version or day"),
                Some("by"),
            ))
        }
    };
    let since_minutes = parse_since(q.since.as_deref().unwrap_or("24h"))?;
    let now_minute = minute_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let from_minute = now_minute.saturating_sub(since_minutes) + 1;
    let filter = UsageFilter {
        namespace: q.namespace.clone(),
        service: q.service.clone(),
        version: q.version.clone(),
        from_minute,
        until_minute: None,
    };
    let internal = |e: nimbus_metering::UsageStoreError| ApiError::internal(e.to_string());
    let groups = state.usage.usage_by(&filter, by).map_err(internal)?;
    let total = state.usage.usage_total(&filter).map_err(internal)?;
    // The free tier is monthly: count what this month used before the window.
    let month_start = calendar::month_start_minute(from_minute);
    let earlier = state
        .usage
        .usage_total(&UsageFilter {
            from_minute: month_start,
            until_minute: Some(from_minute),
            ..filter.clone()
        })
        .map_err(internal)?;
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "namespace": g.namespace,
                "service": g.service,
                "version": g.version,
                "day": g.day,
                "usage": usage_json(&g.usage),
                "cost": bill_gross(&state.prices, &g.usage),
            })
        })
        .collect();
    Ok(Json(json!({
        "since_minutes": since_minutes,
        "by": by,
        "groups": groups,
        "total": {
            "usage": usage_json(&total),
            "cost": bill_month(&state.prices, &earlier, &total),
        },
    })))
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn since_durations() {
        let ok = [
            ("30m", 30),
            ("24h", 1440),
            ("7d", 10_080),
            ("90s", 2),
            ("1s", 1),
        ];
        for (text, minutes) in ok {
            assert_eq!(parse_since(text).ok(), Some(minutes), "{text}");
        }
        for bad in ["", "h", "24", "24x", "-1h", "0m", "1000d", "1.5h"] {
            let e = parse_since(bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("since"), "{bad}");
        }
    }
}

// === Object storage: access keys and buckets ===

fn storage_error(e: nimbus_storage::StorageError, field: &str) -> ApiError {
    use nimbus_storage::ErrorKind;
    let (status, code) = match e.kind() {
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid_bucket"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "bucket_not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "bucket_conflict"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, e.to_string(), Some(field))
}

/// Random characters from `alphabet`.
fn random_text(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// `POST /v1/keys`: a new S3 access key; the secret is in this answer only.
pub async fn create_key(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let id = format!("NIMBUS{}", random_text(14, UPPER));
    let secret = random_text(40, SECRET);
    let record = state.store.add_access_key(&id, &secret)?;
    state.s3_keys.insert(id.clone(), secret.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "access_key": record.id,
            "secret_key": secret,
            "created_at": record.created_at,
            "endpoint": state.s3_endpoint,
            "note": "the secret is shown only now; store it safely",
        })),
    ))
}

pub async fn list_keys(State(state): State<ApiState>) -> ApiResult {
    let keys = state.store.list_access_keys()?;
    Ok(Json(json!({"keys": to_json(keys)?.0})))
}

pub async fn delete_key(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    state.store.remove_access_key(&id)?;
    state.s3_keys.remove(&id);
    Ok(Json(json!({"deleted": id})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketBody {
    pub name: String,
}

fn bucket_json(b: &nimbus_storage::BucketInfo) -> Value {
    let created = b
        .created
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"name": b.name, "created_at": created})
}

pub async fn create_bucket(
    State(state): State<ApiState>,
    StrictJson(body): StrictJson<BucketBody>,
) -> ApiResult<impl IntoResponse> {
    let bucket = state
        .storage
        .create_bucket(&body.name)
        .await
        .map_err(|e| storage_error(e, "name"))?;
    Ok((StatusCode::CREATED, Json(bucket_json(&bucket))))
}

pub async fn list_buckets(State(state): State<ApiState>) -> ApiResult {
    let buckets = state
        .storage
        .list_buckets()
        .await
        .map_err(|e| storage_error(e, "name"))?;
    let buckets: Vec<Value> = buckets.iter().map(bucket_json).collect();
    Ok(Json(json!({"buckets": buckets})))
}

pub async fn delete_bucket(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    state
        .storage
        .delete_bucket(&name)
        .await
        .map_err(|e| storage_error(e, "name"))?;
    Ok(Json(json!({"deleted": name})))
}
