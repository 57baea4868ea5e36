//! Function routes: deploy (a version whose command starts the runtime shim), list/show/delete,
//! sync and async invoke, invocations, weighted aliases and triggers. Functions are services
//! underneath: same versions, traffic, autoscaler and gateway.

use std::path::Path as FsPath;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use http::{HeaderMap, StatusCode};
use nimbus_functions::{
    FunctionError, Invocation, InvocationQueue, InvocationStatus, ListFilter, NewInvocation,
    RetryPolicy, Runtime, StorageTrigger,
};
use nimbus_model::function::{parse_memory_mb, parse_timeout_ms, FunctionSpec};
use nimbus_model::names::validate_name;
use nimbus_model::VersionInput;
use nimbus_store::{Deployed, NewTrigger, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, StrictJson, StrictQuery};
use crate::ApiState;

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Header that makes an invoke asynchronous (`async`), as SCF's `X-Scf-Invocation-Type`.
pub const INVOCATION_TYPE: &str = "x-nimbus-invocation-type";
/// Most bytes of an event.
pub const MAX_EVENT_BYTES: usize = 6 << 20;

/// A finished sync invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub request_id: String,
    pub version: String,
    pub duration: Duration,
    pub outcome: Result<Value, FunctionError>,
}

/// What the server provides for functions (the API never runs code itself).
#[async_trait::async_trait]
pub trait FunctionEngine: Send + Sync {
    /// The shell line that starts `runtime`'s shim for `handler` in `code_dir`.
    fn launch_line(
        &self,
        runtime: Runtime,
        handler: &str,
        code_dir: &FsPath,
    ) -> Result<String, String>;
    /// Runs one invocation now (admitted through the version's gate like any request).
    async fn invoke(
        &self,
        namespace: &str,
        function: &str,
        qualifier: Option<&str>,
        event: Bytes,
    ) -> Result<Invoked, ApiError>;
    /// The durable async queue.
    fn queue(&self) -> &InvocationQueue;
    /// Wakes the async worker after an enqueue.
    fn wake(&self);
}

fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message, Some(field))
}

fn queue_error(e: nimbus_functions::QueueError) -> ApiError {
    ApiError::internal(e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `nimbus fn deploy` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDeployBody {
    pub runtime: String,
    pub handler: String,
    /// Absolute path of the code folder on the server's machine.
    pub code_dir: String,
    pub memory: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    pub max_instances: Option<u32>,
    pub min_instances: Option<u32>,
    #[serde(default)]
    pub no_traffic: bool,
}

/// Checks a deploy and turns it into a version input plus the function's own settings.
pub fn function_version(
    engine: &dyn FunctionEngine,
    name: &str,
    body: &FunctionDeployBody,
) -> Result<(VersionInput, FunctionSpec), ApiError> {
    let runtime: Runtime = body
        .runtime
        .parse()
        .map_err(|e: nimbus_functions::HandlerError| {
            invalid("invalid_runtime", "runtime", e.to_string())
        })?;
    nimbus_functions::handler::validate(runtime, &body.handler)
        .map_err(|e| invalid("invalid_handler", "handler", e.to_string()))?;
    let code_dir = FsPath::new(&body.code_dir);
    if !code_dir.is_absolute() || !code_dir.is_dir() {
        return Err(invalid(
            "invalid_code_dir",
            "code_dir",
            format!(
                "code folder {:?} is not an existing absolute directory",
                body.code_dir
            ),
        ));
    }
    let memory_mb = match &body.memory {
        Some(m) => parse_memory_mb(m)?,
        None => nimbus_model::function::DEFAULT_MEMORY_MB,
    };
    let timeout_ms = match &body.timeout {
        Some(t) => parse_timeout_ms(t)?,
        None => nimbus_model::function::DEFAULT_TIMEOUT_MS,
    };
    let command = engine
        .launch_line(runtime, &body.handler, code_dir)
        .map_err(|e| invalid("invalid_handler", "handler", e))?;
    let mut env = body.env.clone();
    env.insert("NIMBUS_FUNCTION".into(), name.to_string());
    env.insert("NIMBUS_MEMORY_MB".into(), memory_mb.to_string());
    let input = VersionInput {
        command: Some(command),
        env,
        port: None,
        health_path: Some(nimbus_functions::invoke::HEALTH_PATH.to_string()),
        min_instances: body.min_instances,
        max_instances: body.max_instances.or(Some(20)),
        concurrency: Some(1),
        // The gate's budget covers waiting for a free (or cold) instance too.
        timeout_secs: Some(timeout_ms.div_ceil(1000) + 60),
        scaling: nimbus_model::ScalingInput {
            // One in-flight invocation per instance, so aim each instance at one.
            target_utilization: Some(1.0),
            ..Default::default()
        },
        ..VersionInput::default()
    };
    let spec = FunctionSpec {
        runtime: runtime.to_string(),
        handler: body.handler.clone(),
        code_dir: body.code_dir.clone(),
        memory_mb,
        timeout_ms,
    };
    Ok((input, spec))
}

pub async fn deploy_function(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    StrictJson(body): StrictJson<FunctionDeployBody>,
) -> ApiResult<impl IntoResponse> {
    validate_name("namespace", &ns)?;
    validate_name("function", &name)?;
    let (input, function) = function_version(state.functions.as_ref(), &name, &body)?;
    let mut spec = input.resolve()?;
    spec.function = Some(function);
    let deployed = state
        .store
        .deploy_version(&ns, &name, &spec, body.no_traffic, false)?;
    state.changed();
    let (svc, version) = match deployed {
        Deployed::Created(svc, version) | Deployed::ScalingUpdated(svc, version) => (svc, version),
    };
    let status = state.status.borrow().clone();
    let urls = crate::handlers::urls(&state);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "function": crate::handlers::to_json(urls.service(&svc))?.0,
            "version": crate::handlers::to_json(urls.version(&version, &svc, &status))?.0,
        })),
    ))
}

/// A function: its service view plus the newest version's function settings.
fn function_view(state: &ApiState, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    // No service of that name is no function of that name: the caller answers in a function's
    // terms (`function_not_found`), not a service's.
    let svc = match state.store.get_service(ns, name) {
        Ok(svc) => svc,
        Err(StoreError::Rejected(e)) if e.code == "service_not_found" => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let versions = state.store.list_versions(ns, name)?;
    let Some(function) = versions.iter().rev().find_map(|v| v.spec.function.clone()) else {
        return Ok(None);
    };
    let urls = crate::handlers::urls(state);
    let mut view = crate::handlers::to_json(urls.service(&svc))?.0;
    view["function"] = json!(function);
    view["aliases"] = crate::handlers::to_json(state.store.list_aliases(ns, name)?)?.0;
    view["triggers"] = crate::handlers::to_json(state.store.list_triggers(Some((ns, name)))?)?.0;
    Ok(Some(view))
}

fn not_a_function(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "function_not_found",
        format!("there is no function {name}; `nimbus fn list` shows them"),
        Some("function"),
    )
}

pub async fn list_functions(State(state): State<ApiState>, Path(ns): Path<String>) -> ApiResult {
    let mut functions = Vec::new();
    for svc in state.store.list_services(Some(&ns))? {
        if let Some(view) = function_view(&state, &ns, &svc.name)? {
            functions.push(view);
        }
    }
    Ok(Json(json!({"functions": functions})))
}

pub async fn get_function(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    function_view(&state, &ns, &name)?
        .map(Json)
        .ok_or_else(|| not_a_function(&name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeQuery {
    /// A version (`v2`) or alias (`live`); default: the function's traffic split.
    pub qualifier: Option<String>,
    /// Async only: POSTed the result or error when the invocation ends.
    pub callback: Option<String>,
}

pub async fn invoke(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    if function_view(&state, &ns, &name)?.is_none() {
        return Err(not_a_function(&name));
    }
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            format!(
                "the event is {} bytes; the limit is {MAX_EVENT_BYTES}",
                body.len()
            ),
            Some("event"),
        ));
    }
    let event: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            invalid(
                "invalid_event",
                "event",
                format!("the event is not JSON: {e}"),
            )
        })?
    };
    let asynchronous = headers
        .get(INVOCATION_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("async") || v.eq_ignore_ascii_case("event"));
    if asynchronous {
        if let Some(url) = &q.callback {
            if !url.starts_with("http://") {
                return Err(invalid(
                    "invalid_callback",
                    "callback",
                    "the callback must be an http:// URL",
                ));
            }
        }
        let id = state
            .functions
            .queue()
            .enqueue(
                &NewInvocation {
                    namespace: ns.clone(),
                    function: name.clone(),
                    qualifier: q.qualifier.clone(),
                    source: "api".into(),
                    event,
                    callback_url: q.callback.clone(),
                    retry: RetryPolicy::default(),
                },
                now_ms(),
            )
            .map_err(queue_error)?;
        state.functions.wake();
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "status": "pending"})),
        )
            .into_response());
    }
    let event = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
    let invoked = state
        .functions
        .invoke(&ns, &name, q.qualifier.as_deref(), event)
        .await?;
    let base = json!({
        "request_id": invoked.request_id,
        "version": invoked.version,
        "duration_ms": invoked.duration.as_secs_f64() * 1000.0,
    });
    let mut answer = base;
    let status = match invoked.outcome {
        Ok(result) => {
            answer["result"] = result;
            StatusCode::OK
        }
        Err(error) if error.kind == nimbus_functions::ErrorKind::Timeout => {
            // A timeout is the platform's answer: the one error shape, plus the function's view.
            let mut shaped = json!(error);
            shaped["code"] = json!("function_timeout");
            shaped["field"] = Value::Null;
            answer["error"] = shaped;
            StatusCode::GATEWAY_TIMEOUT
        }
        Err(error) => {
            answer["error"] = json!(error);
            StatusCode::OK
        }
    };
    Ok((status, Json(answer)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationsQuery {
    /// `pending`, `running`, `succeeded`, `failed` (dead-lettered).
    pub status: Option<String>,
    pub limit: Option<u32>,
}

pub async fn list_invocations(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    StrictQuery(q): StrictQuery<InvocationsQuery>,
) -> ApiResult {
    let status = match &q.status {
        Some(s) => Some(InvocationStatus::parse(s).ok_or_else(|| {
            invalid(
                "invalid_status",
                "status",
                format!("unknown status {s:?}; use pending, running, succeeded or failed"),
            )
        })?),
        None => None,
    };
    let invocations: Vec<Invocation> = state
        .functions
        .queue()
        .list(&ListFilter {
            namespace: Some(ns),
            function: Some(name),
            status,
            limit: q.limit.unwrap_or(100),
        })
        .map_err(queue_error)?;
    Ok(Json(json!({"invocations": invocations})))
}

pub async fn get_invocation(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    match state.functions.queue().get(&id).map_err(queue_error)? {
        Some(invocation) => Ok(Json(json!(invocation))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invocation_not_found",
            format!("there is no invocation {id}"),
            Some("id"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// `v1=90,v2=10`
    pub split: String,
}

pub async fn set_alias(
    State(state): State<ApiState>,
    Path((ns, name, alias)): Path<(String, String, String)>,
    StrictJson(body): StrictJson<AliasBody>,
) -> ApiResult {
    if function_view(&state, &ns, &name)?.is_none() {
        return Err(not_a_function(&name));
    }
    validate_name("alias", &alias)?;
    if alias.starts_with('v') && alias[1..].chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "invalid_alias",
            "alias",
            format!("alias {alias:?} looks like a version name; pick another (e.g. live)"),
        ));
    }
    let split = nimbus_model::traffic::parse_split(&body.split)?;
    let record = state.store.set_alias(&ns, &name, &alias, &split)?;
    Ok(Json(json!(record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Timer: a cron expression (server's time zone).
    pub cron: Option<String>,
    /// Storage: the bucket and `created,deleted`.
    pub bucket: Option<String>,
    pub events: Option<String>,
    pub prefix: Option<String>,
}

pub async fn add_trigger(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    StrictJson(body): StrictJson<TriggerBody>,
) -> ApiResult<impl IntoResponse> {
    if function_view(&state, &ns, &name)?.is_none() {
        return Err(not_a_function(&name));
    }
    let trigger = match (&body.cron, &body.bucket) {
        (Some(cron), None) => {
            nimbus_functions::parse_cron(cron)
                .map_err(|e| invalid("invalid_cron", "cron", e.to_string()))?;
            NewTrigger {
                kind: "timer".into(),
                cron: Some(cron.trim().to_string()),
                ..NewTrigger::default()
            }
        }
        (None, Some(bucket)) => {
            let events = body.events.clone().unwrap_or_else(|| "created".into());
            StorageTrigger::new(bucket, &events, body.prefix.as_deref())
                .map_err(|e| invalid("invalid_trigger", "events", e.to_string()))?;
            nimbus_storage::validate_bucket_name(bucket).map_err(|e| {
                invalid(
                    "invalid_trigger",
                    "bucket",
                    format!("invalid bucket name {bucket:?}: {e}"),
                )
            })?;
            NewTrigger {
                kind: "storage".into(),
                bucket: Some(bucket.clone()),
                events: Some(events),
                prefix: body.prefix.clone(),
                ..NewTrigger::default()
            }
        }
        _ => {
            return Err(invalid(
                "invalid_trigger",
                "cron",
                "give either `cron` (a timer) or `bucket` (object storage events)",
            ))
        }
    };
    let record = state.store.add_trigger(&ns, &name, &trigger)?;
    Ok((StatusCode::CREATED, Json(json!(record))))
}

pub async fn list_triggers(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult {
    let triggers = state.store.list_triggers(Some((&ns, &name)))?;
    Ok(Json(json!({"triggers": triggers})))
}

pub async fn remove_trigger(
    State(state): State<ApiState>,
    Path((ns, name, id)): Path<(String, String, String)>,
) -> ApiResult {
    let id: i64 = id.parse().map_err(|_| {
        invalid(
            "invalid_trigger_id",
            "id",
            format!("trigger id {id:?} is not a number"),
        )
    })?;
    state.store.remove_trigger(&ns, &name, id)?;
    let _ = state.functions.queue().forget_timer(&id.to_string());
    Ok(Json(json!({"deleted": id})))
}
