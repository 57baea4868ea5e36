//! The Nimbus control API: REST under `/v1`, JSON in and out, bearer-token auth.
//!
//! Handlers parse input into model types, validate with `nimbus-model`, write the store in one
//! transaction and poke the reconciler. They never start or stop processes: the reconciler owns
//! that, and publishes what is running as a [`RuntimeStatus`] the handlers read.
//!
//! # Layout
//! - [`error`]: `ApiError`, the one JSON error shape, and the strict JSON body extractor.
//! - [`views`]: the JSON shapes of services and versions (docs/api.md).
//! - `handlers`: one function per route.
//! - [`containers`]: the [`ContainerEngine`] seam (images, builds, volumes), image pulls and the
//!   volume routes, NDJSON streaming.
//! - [`builds`]: builds from source: the upload, the streamed build, records and logs.
//! - [`openapi`]: the OpenAPI document served at `/v1/openapi.json`.

#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod builds;
pub mod containers;
pub mod error;
pub mod functions;
mod handlers;
pub mod images;
pub mod openapi;
pub mod views;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use nimbus_model::status::RuntimeStatus;
use nimbus_store::Store;
use tokio::sync::{watch, Notify};

pub use containers::{
    BuildFailure, BuiltImage, ContainerEngine, Containers, LineSink, TaggedImage, VolumeInfo,
};
pub use error::ApiError;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Store>,
    /// The admin bearer token.
    pub token: Arc<str>,
    pub base_domain: Arc<str>,
    /// Port of the gateway, used to build the URLs the API hands out.
    pub gateway_port: u16,
    /// Where instance logs live (`DATA/logs`).
    pub logs_dir: PathBuf,
    /// Where build records and logs live (`DATA/builds`).
    pub builds_dir: PathBuf,
    /// The container engine for images, builds and volumes, or why there is none.
    pub containers: Containers,
    /// Live status published by the reconciler.
    pub status: watch::Receiver<Arc<RuntimeStatus>>,
    /// Wakes the reconciler after a write.
    pub reconcile: Arc<Notify>,
    /// Tells a write when the reconciler has published routes that include it.
    pub tickets: Arc<ChangeTickets>,
    /// Wakes the image collector ([`images::run_collector`]) after a build or a delete.
    pub collect_images: Arc<Notify>,
    /// Renders the Prometheus text exposition for `GET /metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Metered usage (per-minute rollups) for `GET /v1/usage`.
    pub usage: Arc<nimbus_metering::UsageStore>,
    /// Unit prices for `GET /v1/usage`.
    pub prices: Arc<nimbus_metering::PriceSheet>,
    /// Object storage (buckets) and the S3 endpoint's access keys.
    pub storage: nimbus_storage::Storage,
    pub s3_keys: nimbus_storage::AccessKeys,
    /// The S3 endpoint's URL (`nimbus server --s3`), handed out with access keys; `None` when
    /// the server runs without one.
    pub s3_endpoint: Option<String>,
    /// Function invocation and the async queue.
    pub functions: Arc<dyn functions::FunctionEngine>,
}

impl ApiState {
    fn changed(&self) {
        self.reconcile.notify_one();
    }

    /// Wakes the reconciler after a write that changes routing (traffic, domains, gateway
    /// policy, certificates) and waits, at most [`ROUTE_WAIT`], until it has published routes
    /// that include the write: when the response arrives, the gateway already follows it.
    async fn changed_and_routed(&self) {
        let ticket = self.tickets.take();
        self.reconcile.notify_one();
        if !self.tickets.wait(ticket, ROUTE_WAIT).await {
            tracing::warn!(
                "The reconciler has not applied a routing change yet; answering anyway."
            );
        }
    }
}

/// Longest a routing change's response waits for the reconciler to publish it.
const ROUTE_WAIT: Duration = Duration::from_secs(5);

/// Read-your-writes for routing: each write takes a ticket after it commits; the reconciler
/// notes the newest ticket before it reads the store and, once it has published the routes built
/// from that read, marks the ticket (and all before it) applied.
#[derive(Debug)]
pub struct ChangeTickets {
    taken: AtomicU64,
    applied: watch::Sender<u64>,
}

impl Default for ChangeTickets {
    fn default() -> Self {
        Self {
            taken: AtomicU64::new(0),
            applied: watch::channel(0).0,
        }
    }
}

impl ChangeTickets {
    /// A ticket for a write that has just committed.
    pub fn take(&self) -> u64 {
        self.taken.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The newest ticket taken: a store read that starts now includes its write.
    pub fn latest(&self) -> u64 {
        self.taken.load(Ordering::SeqCst)
    }

    /// Routes built from a store read that started after `ticket` was taken are published.
    pub fn applied(&self, ticket: u64) {
        self.applied.send_if_modified(|applied| {
            let newer = *applied < ticket;
            if newer {
                *applied = ticket;
            }
            newer
        });
    }

    /// Waits until `ticket` is applied; false when `timeout` passes first.
    pub async fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let waited = tokio::time::timeout(timeout, applied.wait_for(|a| *a >= ticket)).await;
        matches!(waited, Ok(Ok(_)))
    }
}

/// The `/v1` router with auth applied to everything but `/v1/health`, `/metrics` (loopback) and
/// the web console's static files under `/console`.
pub fn router(state: ApiState) -> Router {
    let ns = "/v1/namespaces/{ns}/services";
    let protected = Router::new()
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1/namespaces", get(handlers::list_namespaces))
        .route(ns, get(handlers::list_services))
        .route(
            &format!("{ns}/{{service}}"),
            get(handlers::get_service).delete(handlers::delete_service),
        )
        .route(
            &format!("{ns}/{{service}}/versions"),
            get(handlers::list_versions).post(handlers::deploy),
        )
        .route(
            &format!("{ns}/{{service}}/versions/{{version}}"),
            get(handlers::get_version).delete(handlers::delete_version),
        )
        .route(
            &format!("{ns}/{{service}}/versions/{{version}}/scaling"),
            axum::routing::patch(handlers::update_scaling),
        )
        .route(
            &format!("{ns}/{{service}}/traffic"),
            get(handlers::get_traffic).put(handlers::set_traffic),
        )
        .route(
            &format!("{ns}/{{service}}/gateway"),
            get(handlers::get_gateway).put(handlers::set_gateway),
        )
        .route(
            &format!("{ns}/{{service}}/traffic/explain"),
            post(handlers::explain_traffic),
        )
        .route(
            &format!("{ns}/{{service}}/schedules"),
            get(handlers::list_schedules).post(handlers::add_schedule),
        )
        .route(
            &format!("{ns}/{{service}}/schedules/{{id}}"),
            axum::routing::delete(handlers::remove_schedule),
        )
        .route(&format!("{ns}/{{service}}/logs"), get(handlers::logs))
        .route(
            &format!("{ns}/{{service}}/events"),
            get(handlers::service_events),
        )
        .route(
            &format!("{ns}/{{service}}/builds"),
            get(builds::list).post(builds::start),
        )
        .route(
            &format!("{ns}/{{service}}/builds/{{build}}"),
            get(builds::get),
        )
        .route("/v1/images/pull", post(containers::pull))
        .route(
            "/v1/volumes",
            get(containers::list_volumes).post(containers::create_volume),
        )
        .route(
            "/v1/volumes/{name}",
            axum::routing::delete(containers::delete_volume),
        )
        .route("/v1/events", get(handlers::events))
        .route("/v1/usage", get(handlers::usage))
        .route(
            "/v1/namespaces/{ns}/functions",
            get(functions::list_functions),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}",
            get(functions::get_function).delete(handlers::delete_service),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/versions",
            post(functions::deploy_function),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/invoke",
            post(functions::invoke),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/invocations",
            get(functions::list_invocations),
        )
        .route("/v1/invocations/{id}", get(functions::get_invocation))
        .route(
            "/v1/namespaces/{ns}/functions/{name}/aliases/{alias}",
            axum::routing::put(functions::set_alias),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/triggers",
            get(functions::list_triggers).post(functions::add_trigger),
        )
        .route(
            "/v1/namespaces/{ns}/functions/{name}/triggers/{id}",
            axum::routing::delete(functions::remove_trigger),
        )
        .route(
            "/v1/keys",
            get(handlers::list_keys).post(handlers::create_key),
        )
        .route("/v1/keys/{id}", axum::routing::delete(handlers::delete_key))
        .route(
            "/v1/buckets",
            get(handlers::list_buckets).post(handlers::create_bucket),
        )
        .route(
            "/v1/buckets/{name}",
            axum::routing::delete(handlers::delete_bucket),
        )
        .route(
            "/v1/certs",
            get(handlers::list_certs).post(handlers::add_cert),
        )
        .route(
            "/v1/certs/{host}",
            axum::routing::delete(handlers::remove_cert),
        )
        .route("/v1/instances", get(handlers::list_instances))
        .route(
            "/v1/domains",
            get(handlers::list_domains).post(handlers::add_domain),
        )
        .route(
            "/v1/domains/{host}",
            axum::routing::delete(handlers::remove_domain),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(handlers::health))
        .route("/metrics", get(metrics))
        // The console's page and files: no token, since they hold no data; the page asks for
        // the token and sends it with each `/v1` call.
        .merge(nimbus_console::routes())
        .merge(protected)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

/// `GET /metrics`: open to loopback clients (a local Prometheus), token required otherwise.
async fn metrics(State(state): State<ApiState>, request: Request) -> Response {
    use axum::response::IntoResponse;
    let loopback = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let presented = bearer_token(request.headers());
    let authorized =
        presented.is_some_and(|t| constant_time_eq(t.as_bytes(), state.token.as_bytes()));
    if !loopback && !authorized {
        return ApiError::unauthorized(
            "/metrics is open to loopback clients only; others need `Authorization: Bearer TOKEN`",
        )
        .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (state.metrics)(),
    )
        .into_response()
}

/// The token of an `Authorization: Bearer TOKEN` header, if any.
fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let presented = bearer_token(request.headers());
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::unauthorized("the bearer token is not valid").into_response(),
        None => ApiError::unauthorized(
            "missing `Authorization: Bearer TOKEN`; the admin token is in DATA/admin.token",
        )
        .into_response(),
    }
}

/// Compares without an early exit so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_waits_for_the_pass_that_read_the_store_after_it() {
        let tickets = ChangeTickets::default();
        let short = Duration::from_millis(20);
        // A pass that noted the newest ticket before the write does not cover it.
        let before = tickets.latest();
        let write = tickets.take();
        tickets.applied(before);
        assert!(!tickets.wait(write, short).await, "an earlier pass");
        // The next pass does, and every write before it.
        let second = tickets.take();
        let pass = tickets.latest();
        tickets.applied(pass);
        assert!(tickets.wait(write, short).await);
        assert!(tickets.wait(second, short).await);
        // An older pass finishing late changes nothing.
        tickets.applied(before);
        assert!(tickets.wait(second, short).await);
        assert!(!tickets.wait(tickets.take(), short).await, "a newer write");
    }
}
