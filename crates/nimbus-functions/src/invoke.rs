//! The engine's side of the invoke protocol: POST an event to one instance and classify what
//! comes back (see `docs/functions.md` for the protocol).
//!
//! [`InvokeClient::invoke`] never fails as a Rust `Result`: every way an invocation can end is an
//! [`InvokeOutcome`], so callers decide per case (answer the client, retry, recycle the
//! instance). [`classify`] is the pure half that reads a response.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// The path an instance serves invocations on.
pub const INVOKE_PATH: &str = "/invoke";
/// The path an instance answers 200 on once its handler is loaded.
pub const HEALTH_PATH: &str = "/healthz";

pub const HEADER_REQUEST_ID: &str = "x-nimbus-request-id";
pub const HEADER_FUNCTION: &str = "x-nimbus-function";
pub const HEADER_VERSION: &str = "x-nimbus-version";
pub const HEADER_MEMORY_MB: &str = "x-nimbus-memory-mb";
/// Unix milliseconds after which the engine no longer waits for the answer.
pub const HEADER_DEADLINE_MS: &str = "x-nimbus-deadline-ms";
/// Set to [`HANDLER_ERROR`] on a 200 answer whose body is the handler's exception.
pub const HEADER_ERROR: &str = "x-nimbus-error";
pub const HANDLER_ERROR: &str = "handler";

/// Largest result (or error) body read from an instance: 6 MiB, as Lambda's sync payload cap.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// Idle pooled connections to instances are closed after this. The shims never close idle
/// connections themselves, so the pool does not race a server-side close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a platform error body goes into its message.
const EXCERPT_BYTES: usize = 200;

/// One invocation to send.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRequest {
    pub request_id: String,
    pub function: String,
    pub version: String,
    pub memory_mb: u64,
    /// How long the engine waits; the instance sees it as `x-nimbus-deadline-ms` = now + this.
    pub timeout: Duration,
    /// The event, JSON text (checked by the caller; the shim answers 400 otherwise).
    pub event: Bytes,
}

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    /// The handler returned this JSON value.
    Ok(Value),
    /// The handler raised or threw.
    HandlerError(HandlerError),
    /// No complete answer within the request's timeout. The handler may still be running: the
    /// caller must stop (recycle) the instance, as it has concurrency 1.
    Timeout,
    /// Anything else: refused connection, instance died mid-call, non-200 answer, a body that
    /// is not JSON or is too large. The message says which.
    Platform(String),
    /// The instance's memory went over the function's: the engine stopped it mid-call.
    MemoryLimit { used_mib: u64, limit_mib: u64 },
}

/// A handler's exception as the shims report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerError {
    /// The exception's class: `ValueError`, `TypeError`, …
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    /// The stack as lines, the shim's own frames removed.
    #[serde(default)]
    pub traceback: Vec<String>,
}

/// Whose fault a failed invocation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The handler raised: the user's code.
    Handler,
    /// The handler did not answer within the function's timeout.
    Timeout,
    /// The engine or the instance (crash, refused connection, bad answer).
    Platform,
    /// The handler used more memory than the function has.
    Memory,
}

/// A failed invocation in one serializable shape: what the API returns in `{"error": …}` and
/// what the queue stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    pub kind: ErrorKind,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traceback: Vec<String>,
}

/// Why a callback could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("callback URL `{0}` is invalid: {1}")]
    InvalidUrl(String, String),
    #[error("callback URL `{0}` is not http:// (https callbacks are not supported)")]
    UnsupportedScheme(String),
    #[error("callback to {0} failed: {1}")]
    Failed(String, String),
    #[error("callback to {0} got no answer within {1:?}")]
    Timeout(String, Duration),
}

/// Sends invocations to instances over pooled keep-alive HTTP/1.1 connections. Cheap to clone
/// (the pool is shared).
#[derive(Clone, Debug)]
pub struct InvokeClient {
    client: Client<HttpConnector, Full<Bytes>>,
    max_response_bytes: usize,
}

// === impl InvokeOutcome ===

impl InvokeOutcome {
    /// The outcome as a result, failures in the common [`FunctionError`] shape. `timeout` is the
    /// one the request had, for the message.
    pub fn into_result(self, timeout: Duration) -> Result<Value, FunctionError> {
        match self {
            InvokeOutcome::Ok(value) => Ok(value),
            InvokeOutcome::HandlerError(e) => Err(FunctionError {
                kind: ErrorKind::Handler,
                error_type: e.error_type,
                message: e.message,
                traceback: e.traceback,
            }),
            InvokeOutcome::Timeout => Err(FunctionError {
                kind: ErrorKind::Timeout,
                error_type: "Timeout".into(),
                message: format!(
                    "the function did not finish within its timeout of {} ms",
                    timeout.as_millis()
                ),
                traceback: Vec::new(),
            }),
            InvokeOutcome::Platform(message) => Err(FunctionError {
                kind: ErrorKind::Platform,
                error_type: "PlatformError".into(),
                message,
                traceback: Vec::new(),
            }),
            InvokeOutcome::MemoryLimit {
                used_mib,
                limit_mib,
            } => Err(FunctionError {
                kind: ErrorKind::Memory,
                error_type: "MemoryLimitExceeded".into(),
                message: format!(
                    "the function used {used_mib} MiB, more than its memory of {limit_mib} MiB; \
                     its instance was stopped (raise it with --memory)"
                ),
                traceback: Vec::new(),
            }),
        }
    }
}

/// Whether an instance holding `resident_bytes` is over a function's `memory_mb`.
pub fn over_memory(resident_bytes: u64, memory_mb: u64) -> bool {
    resident_bytes > memory_mb.saturating_mul(1024 * 1024)
}

// === impl InvokeClient ===

impl Default for InvokeClient {
    fn default() -> Self {
        Self::new()
    }
}

impl InvokeClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Caps the result body read from an instance (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Sends `request` to the instance at `addr` and waits at most `request.timeout` for the
    /// whole answer. Dropping the returned future drops the connection.
    pub async fn invoke(&self, addr: SocketAddr, request: &InvokeRequest) -> InvokeOutcome {
        let http_request = match build_request(addr, request, unix_ms(SystemTime::now())) {
            Ok(r) => r,
            Err(message) => return InvokeOutcome::Platform(message),
        };
        let exchange = async {
            let response = self
                .client
                .request(http_request)
                .await
                .map_err(|e| format!("instance {addr} did not answer: {}", error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        format!(
                            "the function's answer is larger than {} bytes",
                            self.max_response_bytes
                        )
                    } else {
                        format!("reading the answer of instance {addr} failed: {e}")
                    }
                })?
                .to_bytes();
            Ok::<_, String>(classify(parts.status, &parts.headers, &body))
        };
        match tokio::time::timeout(request.timeout, exchange).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(message)) => InvokeOutcome::Platform(message),
            Err(_) => InvokeOutcome::Timeout,
        }
    }

    /// POSTs `body` (JSON) to an `http://` callback URL; `Ok` with the status it answered.
    pub async fn post_callback(
        &self,
        url: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<StatusCode, CallbackError> {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
            CallbackError::InvalidUrl(url.into(), e.to_string())
        })?;
        if uri.scheme_str() != Some("http") {
            return Err(CallbackError::UnsupportedScheme(url.into()));
        }
        if uri.host().is_none() {
            return Err(CallbackError::InvalidUrl(url.into(), "no host".into()));
        }
        let request = Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "nimbus-callback")
            .body(Full::new(body))
            .map_err(|e| CallbackError::InvalidUrl(url.into(), e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallbackError::Failed(url.into(), error_chain(&e)))?;
            let status = response.status();
            // Read (and drop) a bounded body so the connection can go back to the pool.
            let _ = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            Ok(status)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallbackError::Timeout(url.into(), timeout))?
    }
}

/// The HTTP request for one invocation; `now_ms` (unix ms) dates the deadline header.
pub fn build_request(
    addr: SocketAddr,
    request: &InvokeRequest,
    now_ms: u64,
) -> Result<Request<Full<Bytes>>, String> {
    let timeout_ms = u64::try_from(request.timeout.as_millis()).unwrap_or(u64::MAX);
    let deadline_ms = now_ms.saturating_add(timeout_ms);
    Request::post(format!("http://{addr}{INVOKE_PATH}"))
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(HEADER_REQUEST_ID, &request.request_id)
        .header(HEADER_FUNCTION, &request.function)
        .header(HEADER_VERSION, &request.version)
        .header(HEADER_MEMORY_MB, request.memory_mb)
        .header(HEADER_DEADLINE_MS, deadline_ms)
        .body(Full::new(request.event.clone()))
        .map_err(|e| format!("cannot build the invoke request: {e}"))
}

/// Reads an instance's answer: 200 is the result, 200 with `x-nimbus-error: handler` the
/// handler's exception, anything else (or a body that does not parse) a platform error.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> InvokeOutcome {
    if status != StatusCode::OK {
        let detail = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| excerpt(body));
        return InvokeOutcome::Platform(format!(
            "the instance answered HTTP {}: {detail}",
            status.as_u16()
        ));
    }
    let handler_error = headers
        .get(HEADER_ERROR)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(HANDLER_ERROR.as_bytes()));
    if handler_error {
        #[derive(Deserialize)]
        struct Envelope {
            error: HandlerError,
        }
        return match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) => InvokeOutcome::HandlerError(envelope.error),
            Err(e) => InvokeOutcome::Platform(format!(
                "the instance reported a handler error in an unreadable body ({e}): {}",
                excerpt(body)
            )),
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => InvokeOutcome::Ok(value),
        Err(e) => InvokeOutcome::Platform(format!(
            "the function's result is not JSON ({e}): {}",
            excerpt(body)
        )),
    }
}

fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > EXCERPT_BYTES {
        text.push('…');
    }
    if text.is_empty() {
        text.push_str("(empty body)");
    }
    text
}

/// An error with its sources, `outer: inner: innermost` (hyper's top-level messages are vague).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Milliseconds since the Unix epoch (0 for a clock before 1970).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
