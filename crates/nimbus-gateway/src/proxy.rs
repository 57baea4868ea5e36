//! The life of one request, as phases:
//!
//! 1. **identify**: the host (URI authority for HTTP/2 and absolute-form, else `Host`) and the
//!    request id (the client's `x-request-id` if sane, else 32 random hex characters);
//! 2. **choose**: [`RouteTable::choose`](crate::RouteTable::choose) on the current table snapshot
//!    picks service and version (pure); failures become JSON errors (404 unknown host, 503 empty
//!    split or version not in the table);
//! 3. **admit**: [`VersionGate::admit`](crate::VersionGate::admit) gives a [`Permit`]: a slot on
//!    the least-outstanding instance below the version's concurrency, at once if one is free,
//!    else after waiting in the version's FIFO queue. With no ready instance the activator hook
//!    is called and the request is held until one is ready. Queue full → 503 `queue_full` with
//!    `Retry-After: 1`; no slot before the deadline → 504 `queue_timeout`;
//! 4. **rewrite**: drop hop-by-hop headers (but keep `Connection`/`Upgrade` on an upgrade), add
//!    `x-forwarded-for`/`-proto`/`-host` and `x-request-id`, point the URI at the instance;
//! 5. **forward**: send on the pooled client until the permit's deadline (arrival + the
//!    version's timeout, so time spent queued counts) for the response headers (502 on connect
//!    failure, 504 `upstream_timeout` past the deadline);
//! 6. **respond**: stream the instance's body back, holding the permit (the instance slot and its
//!    in-flight count) until the body ends; on `101 Switching Protocols` join both upgraded
//!    sockets in a tunnel task that holds the permit until either side closes. Dropping the
//!    permit hands the slot to the next queued request.
//!
//! ```text
//! client ─▶ identify ─▶ choose ──▶ admit ──────────────────────────▶ rewrite ─▶ forward ─▶ respond
//!                         │ 404/503   │ free slot: now                                  │ 502/504
//!                         ▼           │ busy: FIFO queue ─▶ slot freed ─┘                 ▼
//!                       error         │ no instance: on_cold(), held ─▶ instance ready ─┘
//!                                     └ queue full 503 / deadline passed 504
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use nimbus_model::domains::host_key;
use nimbus_model::RequestView;
use rand::RngExt;
use tracing::{debug, warn, Instrument};

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use nimbus_model::gateway::UpstreamProtocol;

use crate::balance::Algorithm;
use crate::body::{BodyShared, GatewayBody, RequestBody, UpstreamBody};
use crate::chooser::PickHint;
use crate::error::{BoxError, GatewayError};
use crate::gate::{Permit, Pick};
use crate::observe::{no_name, Pending, RequestRecord};
use crate::outlier::Outcome;
use crate::policy::{Refusal, ServicePolicy};
use crate::route::{Choice, Endpoint, VersionRoute, AFFINITY_COOKIE};
use crate::server::Gateway;
use crate::timer::ConnTimer;
use crate::upstream::{ConnUpstream, UpstreamError};

/// What the gateway keeps per client connection.
pub(crate) struct Conn {
    pub client: SocketAddr,
    /// The client's IP as a header value, made once.
    pub client_ip: HeaderValue,
    /// The upstream connection this client connection keeps (HTTP/1.x clients).
    pub upstream: ConnUpstream,
}

impl Conn {
    pub(crate) fn new(client: SocketAddr) -> Self {
        Self {
            client,
            client_ip: client_ip_header(client),
            upstream: ConnUpstream::default(),
        }
    }
}

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// A client-supplied request id longer than this is replaced by a generated one.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Hop-by-hop headers (RFC 9110 §7.6.1) besides `Proxy-*`, `Connection` and `Upgrade`.
/// `Trailer` is not one: it announces trailer fields, which the gateway passes on.
const HOP_BY_HOP: [HeaderName; 3] = [KEEP_ALIVE, header::TE, header::TRANSFER_ENCODING];

/// The client's request as the proxy takes it: hyper's body, or none (the gateway's own
/// HTTP/1.1 loop serves only requests without one).
pub(crate) type ClientRequest = Request<Option<Incoming>>;

/// Serves one request; never fails (errors become JSON responses).
pub(crate) async fn handle(
    gateway: &Gateway,
    conn: &Conn,
    scheme: &'static str,
    req: ClientRequest,
    timer: Option<&mut ConnTimer<'_>>,
) -> Response<GatewayBody> {
    let tls = scheme == "https";
    let proto = if tls { "https" } else { gateway.config().proto };
    let raw_host = raw_host(&req);
    let host = raw_host
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(host_key)
        .unwrap_or_default();
    let request_id = request_id(req.headers());
    let started = std::time::Instant::now();
    let mut record = gateway.config().observer.as_ref().map(|_| RequestRecord {
        at_ms: unix_ms(),
        host: no_name(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        namespace: no_name(),
        service: no_name(),
        version: no_name(),
        instance: None,
        status: 0,
        bytes_out: 0,
        bytes_in: req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        duration: std::time::Duration::ZERO,
        upstream: None,
        request_id: request_id.clone(),
    });
    // No per-request span: wrapping the request's future in one costs a copy of it per layer;
    // debug events carry the host and request id instead.
    let response = if let (false, Some(port)) = (tls, gateway.config().redirect_https) {
        redirect_to_https(&req, &host, port, &request_id)
    } else {
        match proxy(
            gateway,
            conn,
            proto,
            req,
            &host,
            raw_host.as_ref(),
            &request_id,
            record.as_mut(),
            timer,
        )
        .await
        {
            Ok(response) => response,
            Err(error) => {
                if let Some(record) = record.as_mut().filter(|r| r.host.is_empty()) {
                    record.host = Arc::from(&*host);
                }
                debug!(%host, ?request_id, %error, code = error.code(), "Request failed.");
                error.to_response(&request_id)
            }
        }
    };
    let (Some(observer), Some(mut record)) = (gateway.config().observer.clone(), record) else {
        return response;
    };
    record.status = response.status().as_u16();
    let pending = Pending {
        observer,
        record,
        started,
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.observed(Some(pending)))
}

/// `308 Permanent Redirect` to the same host and path over HTTPS on `port`.
fn redirect_to_https(
    req: &ClientRequest,
    host: &str,
    port: u16,
    request_id: &HeaderValue,
) -> Response<GatewayBody> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    response
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    gateway: &Gateway,
    conn: &Conn,
    proto: &'static str,
    req: ClientRequest,
    host: &str,
    raw_host: Option<&HeaderValue>,
    request_id: &HeaderValue,
    mut record: Option<&mut RequestRecord>,
    mut timer: Option<&mut ConnTimer<'_>>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let client = conn.client;
    // Phase 2: choose. The table guard is dropped before any await.
    let Choice {
        host: table_host,
        service,
        version,
        set_affinity,
        ..
    } = {
        let view = RequestView {
            query: req.uri().query(),
            headers: req.headers(),
        };
        let roll = rand::rng().random_range(0..100u32);
        gateway.routes().load().choose(host, &view, roll)?
    };
    if let Some(record) = record.as_deref_mut() {
        record.host = table_host;
        let [namespace, service, version] = version.names();
        record.namespace = Arc::clone(namespace);
        record.service = Arc::clone(service);
        record.version = Arc::clone(version);
    }

    // Phase 2b: the service's policy: access rules (403), rate limits (429), body size (413).
    let policy = &service.gateway;
    if policy.has_checks() {
        policy
            .admit(client.ip(), req.uri().path(), req.headers())
            .map_err(|refusal| refused(&service.name, refusal))?;
    }
    let content_length = content_length(req.headers());
    if let (Some(limit), Some(length)) = (policy.max_body, content_length) {
        if length > limit {
            return Err(GatewayError::PayloadTooLarge {
                service: service.name.clone(),
                limit,
            });
        }
    }
    let hint = pick_hint(policy, client, req.headers());

    // Phase 3: admit. The permit holds the instance slot until the response is done.
    let not_admitted = |source| {
        GatewayError::not_admitted(
            &version.namespace,
            &version.service,
            &version.version,
            source,
        )
    };
    let mut permit = version
        .gate
        .admit_with(Pick { hint, avoid: None })
        .await
        .map_err(not_admitted)?;

    // Phase 4: rewrite.
    let upgrade = is_upgrade(&req);
    let (mut parts, body) = req.into_parts();
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let forwarded_by = Forwarded {
        client_ip: &conn.client_ip,
        proto,
        raw_host,
        request_id,
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let upstream_version = match policy.upstream {
        UpstreamProtocol::H2c => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
    };
    parts.version = upstream_version;
    let empty_body = body.as_ref().is_none_or(Body::is_end_stream);
    // Requests without a body go over the upstream connections the client's connection keeps,
    // driven inline (see `upstream`). Upgrades, h2c and requests with a body use the pooled
    // client.
    let kept = (!upgrade && empty_body && policy.upstream == UpstreamProtocol::Http1)
        .then_some(&conn.upstream);
    if kept.is_none() {
        // HTTP/2 lets `TE: trailers` through (RFC 9113 §8.2.2), and gRPC servers look for it:
        // the client reads trailers, and so does the gateway, which passes them on.
        let te_trailers = upstream_version == Version::HTTP_2 && accepts_trailers(&parts.headers);
        // The kept connection applies the same rewrite as it writes the head, in one pass.
        forwarded_by.rewrite(&mut parts.headers, upgrade);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    // A retry needs the request again: keep its head (and a way to get an unsent body back)
    // only when the version has another instance to retry on. A request on the kept
    // connection has no body and is still there after the first try.
    let may_retry = permit.has_alternatives() && !upgrade;
    let idempotent = is_idempotent(&parts.method);
    let retry_head = (may_retry && kept.is_none())
        .then(|| Box::new((parts.method.clone(), parts.headers.clone())));
    let needs_shared =
        !empty_body && (may_retry || (policy.max_body.is_some() && content_length.is_none()));
    let shared = needs_shared.then(|| Arc::new(BodyShared::default()));
    let limit_body = |body: RequestBody| match policy.max_body {
        Some(limit) => body.limit(limit),
        None => body,
    };
    let mut body = limit_body(body.map_or_else(RequestBody::empty, RequestBody::new));
    if let Some(shared) = &shared {
        body = body.shared(Arc::clone(shared));
    }
    if kept.is_none() {
        // The pooled client wants the absolute URI; the kept connection sends the path.
        parts.uri = upstream_uri(permit.endpoint(), &path);
    }
    let mut upstream_req = Some(Request::from_parts(parts, body));

    // Phase 5: forward, within what is left of the request's time (and the TTFB timeout).
    let forwarded = std::time::Instant::now();
    let attempt = Attempt {
        gateway,
        kept,
        forwarded_by: &forwarded_by,
        policy,
        version: &version,
        shared: shared.as_deref(),
    };
    let mut sent = attempt
        .send(&permit, &mut upstream_req, timer.as_deref_mut())
        .await;
    let retry = match &sent {
        Err(GatewayError::UpstreamUnavailable { .. }) => may_retry,
        Err(GatewayError::UpstreamFailed { .. }) => may_retry && idempotent && empty_body,
        Ok(response) => {
            may_retry
                && idempotent
                && empty_body
                && matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
                )
        }
        Err(_) => false,
    };
    if retry {
        // One retry on another ready instance, with the same request (the kept connection's
        // have no body), or its head and the body back unsent (or none at all).
        if upstream_req.is_none() {
            let body = if empty_body {
                Some(RequestBody::empty())
            } else {
                shared
                    .as_ref()
                    .and_then(|s| s.take_returned())
                    .map(|b| limit_body(RequestBody::new(b)))
            };
            if let (Some(body), Some(head)) = (body, retry_head) {
                let (method, headers) = *head;
                let mut retry_req = Request::new(body);
                *retry_req.method_mut() = method;
                *retry_req.headers_mut() = headers;
                *retry_req.version_mut() = upstream_version;
                upstream_req = Some(retry_req);
            }
        }
        let failed = Arc::clone(permit.endpoint());
        if upstream_req.is_some() && version.gate.has_other(&failed) {
            debug!(
                ?request_id,
                instance = %failed.instance,
                "Retrying on another instance."
            );
            drop(sent);
            drop(permit);
            // Boxed: the rare path's futures stay out of every request's state.
            permit = Box::pin(version.gate.admit_with(Pick {
                hint,
                avoid: Some(failed),
            }))
            .await
            .map_err(not_admitted)?;
            if let (None, Some(req)) = (kept, upstream_req.as_mut()) {
                *req.uri_mut() = upstream_uri(permit.endpoint(), &path);
            }
            let attempt = Attempt {
                shared: None,
                ..attempt
            };
            sent = Box::pin(attempt.send(&permit, &mut upstream_req, timer)).await;
        }
    }
    drop(upstream_req);
    let endpoint = permit.endpoint();
    if let Some(record) = record {
        record.instance = Some(Arc::clone(endpoint.name()));
        record.upstream = Some(forwarded.elapsed());
    }
    let mut response = sent?;
    debug!(
        ?request_id,
        service = %version.service,
        version = %version.version,
        instance = %endpoint.instance,
        status = response.status().as_u16(),
        "Instance responded."
    );

    // Phase 6: respond.
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(client_upgrade), UpstreamBody::Pooled(_)) = (client_upgrade, response.body()) {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = policy
                .ws_idle_timeout
                .unwrap_or_else(|| version.gate.limits().timeout);
            tokio::spawn(
                tunnel(client_upgrade, upstream_upgrade, permit, idle)
                    .instrument(tracing::debug_span!("tunnel", %host, ?request_id)),
            );
            let (mut parts, _empty) = response.into_parts();
            parts.headers.insert(X_REQUEST_ID, request_id.clone());
            return Ok(Response::from_parts(parts, GatewayBody::empty()));
        }
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    if set_affinity {
        let cookie = format!(
            "{AFFINITY_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            version.version
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            parts.headers.append(header::SET_COOKIE, value);
        }
    }
    Ok(Response::from_parts(
        parts,
        GatewayBody::upstream(body, Some(permit)),
    ))
}

/// What one attempt to send a request upstream needs besides the permit and the request.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    gateway: &'a Gateway,
    /// The client connection's kept upstream connection, for requests it carries.
    kept: Option<&'a ConnUpstream>,
    /// The forwarding headers the kept connection adds as it writes the head.
    forwarded_by: &'a Forwarded<'a>,
    policy: &'a ServicePolicy,
    version: &'a VersionRoute,
    shared: Option<&'a BodyShared>,
}

impl Attempt<'_> {
    /// Sends `req` to the permit's instance and records the outcome for outlier ejection. The
    /// kept connection sends a borrowed request (it stays in `req` for a retry); the pooled
    /// client takes it. The request is borrowed through `&mut Option`, not moved in, so it is
    /// stored once in the caller's future rather than again in this one's.
    /// `timer`: the client connection's, when it has one (the gateway's own HTTP/1.1 loop).
    async fn send(
        self,
        permit: &Permit,
        req: &mut Option<Request<RequestBody>>,
        timer: Option<&mut ConnTimer<'_>>,
    ) -> Result<Response<UpstreamBody>, GatewayError> {
        let endpoint = permit.endpoint();
        debug!(instance = %endpoint.instance, addr = %endpoint.addr, "Forwarding request.");
        let deadline = permit.deadline();
        let (until, ttfb) = match self.policy.ttfb_timeout {
            Some(ttfb) if tokio::time::Instant::now() + ttfb < deadline => {
                (tokio::time::Instant::now() + ttfb, Some(ttfb))
            }
            _ => (deadline, None),
        };
        let exchanged = match (self.kept, req.as_ref()) {
            (Some(kept), Some(request)) => {
                let exchange = kept.send(endpoint, request, self.forwarded_by);
                let exchanged = match timer {
                    Some(timer) => timer.within(until, exchange).await,
                    None => tokio::time::timeout_at(until, exchange).await.ok(),
                };
                exchanged.map(|result| match result {
                    Ok(response) => Ok(response.map(UpstreamBody::Kept)),
                    Err(error) => Err((
                        matches!(error, UpstreamError::Connect(_)),
                        BoxError::from(error),
                    )),
                })
            }
            _ => {
                let Some(request) = req.take() else {
                    return Err(GatewayError::UpstreamFailed {
                        instance: endpoint.instance.clone(),
                        source: "no request to send".into(),
                    });
                };
                let client = match self.policy.upstream {
                    UpstreamProtocol::H2c => self.gateway.h2c_client(),
                    UpstreamProtocol::Http1 => self.gateway.client(),
                };
                match tokio::time::timeout_at(until, client.request(request)).await {
                    Ok(Ok(response)) => Some(Ok(response.map(UpstreamBody::Pooled))),
                    Ok(Err(error)) => Some(Err((error.is_connect(), BoxError::from(error)))),
                    Err(_elapsed) => None,
                }
            }
        };
        let result = match exchanged {
            None => Err(match ttfb {
                Some(timeout) => GatewayError::UpstreamTtfbTimeout {
                    instance: endpoint.instance.clone(),
                    timeout,
                },
                None => GatewayError::UpstreamTimeout {
                    instance: endpoint.instance.clone(),
                    timeout: self.version.gate.limits().timeout,
                },
            }),
            Some(Err((true, source))) => Err(GatewayError::UpstreamUnavailable {
                instance: endpoint.instance.clone(),
                source,
            }),
            Some(Err(_)) if self.shared.is_some_and(BodyShared::too_large) => {
                return Err(GatewayError::PayloadTooLarge {
                    service: self.version.service.clone(),
                    limit: self.policy.max_body.unwrap_or_default(),
                });
            }
            Some(Err((false, source))) => Err(GatewayError::UpstreamFailed {
                instance: endpoint.instance.clone(),
                source,
            }),
            Some(Ok(response)) => Ok(response),
        };
        let outcome = match &result {
            Ok(response) if !response.status().is_server_error() => Outcome::Success,
            _ => Outcome::Failure,
        };
        if endpoint.record(&self.policy.outlier, outcome) {
            warn!(
                instance = %endpoint.instance,
                after = self.policy.outlier.consecutive,
                "Instance ejected after consecutive failures."
            );
        }
        result
    }
}

/// `http://INSTANCE_ADDR/path?query`.
fn upstream_uri(endpoint: &Endpoint, path: &http::uri::PathAndQuery) -> Uri {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(endpoint.authority().clone());
    uri.path_and_query = Some(path.clone());
    Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The error for a request the service's policy refused.
fn refused(service: &str, refusal: Refusal) -> GatewayError {
    match refusal {
        Refusal::Denied { rule } => GatewayError::Forbidden {
            service: service.to_string(),
            rule,
        },
        Refusal::Limited {
            per_ip,
            retry_after_secs,
        } => GatewayError::RateLimited {
            service: service.to_string(),
            per_ip,
            retry_after_secs,
        },
    }
}

/// The balancing inputs of a request: its hash key (hash algorithms only) and random draws
/// (`least-request` only), so the default costs nothing.
fn pick_hint(policy: &ServicePolicy, client: SocketAddr, headers: &HeaderMap) -> PickHint {
    match &policy.algorithm {
        Some(Algorithm::Hash(on)) => PickHint {
            hash: on.hash(client.ip(), headers),
            draws: 0,
        },
        Some(Algorithm::LeastRequest) => PickHint {
            hash: None,
            draws: rand::rng().random(),
        },
        _ => PickHint::default(),
    }
}

/// `content-length`, when present and a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Methods a retry may repeat (RFC 9110 §9.2.2).
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Joins the client's and the instance's upgraded connections until either side closes both
/// ways, or until no byte has moved either way for `idle` (a busy tunnel is never cut). The
/// tunnel holds its instance slot (the permit) for as long as it is open.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    permit: Permit,
    idle: std::time::Duration,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(%error, "Upgrade failed.");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let started = tokio::time::Instant::now();
    // Milliseconds after `started` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let pumps = async {
        tokio::join!(
            pump(&mut client_read, &mut upstream_write, &last, started),
            pump(&mut upstream_read, &mut client_write, &last, started),
        )
    };
    let watchdog = async {
        loop {
            let quiet_since = started + std::time::Duration::from_millis(last.load(Relaxed));
            if tokio::time::Instant::now() >= quiet_since + idle {
                return;
            }
            tokio::time::sleep_until(quiet_since + idle).await;
        }
    };
    tokio::select! {
        (to_upstream, to_client) = pumps => debug!(to_upstream, to_client, "Tunnel closed."),
        () = watchdog => debug!(idle_secs = idle.as_secs_f64(), "Tunnel idle; closed."),
    }
    drop(permit);
}

/// Copies one direction of a tunnel until end of stream or error, then shuts the writer down;
/// returns the bytes copied. Each copied chunk marks the tunnel as active.
async fn pump<R, W>(
    read: &mut R,
    write: &mut W,
    last: &AtomicU64,
    started: tokio::time::Instant,
) -> u64
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        copied += n as u64;
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Relaxed);
    }
    let _ = write.shutdown().await;
    copied
}

/// The host as the client sent it: the URI authority (HTTP/2, absolute-form) or `Host`.
fn raw_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(authority) = req.uri().authority() {
        if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            return Some(value);
        }
    }
    req.headers().get(header::HOST).cloned()
}

/// The client's request id when it is sane, else a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            id.clone()
        }
        _ => generate_request_id(),
    }
}

/// 32 lowercase hex characters from the thread-local RNG.
pub(crate) fn generate_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n: u128 = rand::rng().random();
    let mut buf = [0u8; 32];
    for slot in buf.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A few header names, on the stack (hop-by-hop lists are short; no allocation per message).
pub(crate) type HeaderNames = smallvec::SmallVec<[HeaderName; 4]>;

/// Whether `name` is a hop-by-hop header by itself (not counting those `Connection` names). On
/// an upgrade, `Connection` and `Upgrade` are end-to-end for this hop.
pub(crate) fn is_hop_by_hop(name: &HeaderName, upgrade: bool) -> bool {
    HOP_BY_HOP.contains(name)
        || name.as_str().starts_with("proxy-")
        || (!upgrade && (name == header::CONNECTION || name == header::UPGRADE))
}

/// The headers the `Connection` header names as hop-by-hop (its `keep-alive` and `close`
/// options are not names); usually none.
pub(crate) fn connection_named(headers: &HeaderMap, upgrade: bool) -> HeaderNames {
    let mut named = HeaderNames::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let token = token.trim();
        if token.is_empty()
            || token.eq_ignore_ascii_case("keep-alive")
            || token.eq_ignore_ascii_case("close")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if !(upgrade && name == header::UPGRADE) && headers.contains_key(&name) {
                named.push(name);
            }
        }
    }
    named
}

/// Whether the client's `TE` header accepts trailer fields (`TE: trailers`, RFC 9110 §10.1.4).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| item.split(';').next())
        .any(|coding| coding.trim().eq_ignore_ascii_case("trailers"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. On an upgrade,
/// `Connection` and `Upgrade` are end-to-end for this hop and stay.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names: most messages carry no hop-by-hop header, or only
    // `Connection: keep-alive`, and a scan is cheaper than a hashed remove per fixed name.
    let mut doomed: HeaderNames = headers
        .keys()
        .filter(|n| is_hop_by_hop(n, upgrade))
        .cloned()
        .collect();
    doomed.extend(connection_named(headers, upgrade));
    for name in doomed {
        headers.remove(name);
    }
}

/// The client's IP as a header value, made once per connection.
pub(crate) fn client_ip_header(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&client.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// What the gateway adds to a request it forwards: `x-forwarded-for` (appended to), `-proto`,
/// `-host` and `x-request-id` (replaced), and `Host` when the client sent none (HTTP/2 clients
/// send `:authority`; HTTP/1.1 instances expect `Host`).
pub(crate) struct Forwarded<'a> {
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    pub raw_host: Option<&'a HeaderValue>,
    pub request_id: &'a HeaderValue,
}

impl Forwarded<'_> {
    /// Rewrites `headers` for the upstream: hop-by-hop headers out, forwarding headers in.
    pub(crate) fn rewrite(&self, headers: &mut HeaderMap, upgrade: bool) {
        strip_hop_by_hop(headers, upgrade);
        add_forwarded(
            headers,
            self.client_ip,
            self.proto,
            self.raw_host,
            self.request_id,
        );
        if let Some(raw_host) = self.raw_host {
            headers
                .entry(header::HOST)
                .or_insert_with(|| raw_host.clone());
        }
    }
}

/// Adds `x-forwarded-*` and `x-request-id`. The client IP is appended to any `x-forwarded-for`
/// already present; proto and host are the gateway's view and replace client-sent values.
fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    raw_host: Option<&HeaderValue>,
    request_id: &HeaderValue,
) {
    if headers.contains_key(&X_FORWARDED_FOR) {
        let mut forwarded = BytesMut::new();
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            forwarded.put_slice(prior.as_bytes());
            forwarded.put_slice(b", ");
        }
        forwarded.put_slice(client_ip.as_bytes());
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded)) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    } else {
        headers.insert(X_FORWARDED_FOR, client_ip.clone());
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match raw_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header name/value pairs, as literals.
    type Pairs = &'static [(&'static str, &'static str)];

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn te_accepts_trailers() {
        let cases: &[(Pairs, bool)] = &[
            (&[], false),
            (&[("te", "trailers")], true),
            (&[("te", "gzip;q=0.5, Trailers")], true),
            (&[("te", "gzip"), ("te", "trailers;q=1")], true),
            (&[("te", "gzip, deflate")], false),
            (&[("te", "x-trailers")], false),
        ];
        for (pairs, want) in cases {
            assert_eq!(accepts_trailers(&headers(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn hop_by_hop() {
        // (request headers, upgrade?, headers that must remain, headers that must go)
        let cases: &[(Pairs, bool, &[&str], &[&str])] = &[
            (
                &[
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-a", "1"),
                ],
                false,
                &["x-a"],
                &["connection", "keep-alive"],
            ), // plain keep-alive
            (
                &[
                    ("connection", "close, x-secret"),
                    ("x-secret", "s"),
                    ("x-b", "2"),
                ],
                false,
                &["x-b"],
                &["connection", "x-secret"],
            ), // header named by Connection
            (
                &[
                    ("te", "trailers"),
                    ("trailer", "x"),
                    ("transfer-encoding", "chunked"),
                ],
                false,
                &["trailer"],
                &["te", "transfer-encoding"],
            ), // fixed list; `Trailer` is end-to-end
            (
                &[
                    ("proxy-authorization", "x"),
                    ("proxy-connection", "y"),
                    ("x-c", "3"),
                ],
                false,
                &["x-c"],
                &["proxy-authorization", "proxy-connection"],
            ), // Proxy-*
            (
                &[
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                    ("keep-alive", "1"),
                ],
                true,
                &["connection", "upgrade"],
                &["keep-alive"],
            ), // upgrade keeps Connection and Upgrade
            (&[("upgrade", "websocket")], false, &[], &["upgrade"]), // Upgrade without upgrade intent
        ];
        for (input, upgrade, keep, gone) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in *input {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            strip_hop_by_hop(&mut map, *upgrade);
            for k in *keep {
                assert!(map.contains_key(*k), "{input:?}: {k} should stay");
            }
            for k in *gone {
                assert!(!map.contains_key(*k), "{input:?}: {k} should go");
            }
        }
    }

    #[test]
    fn forwarded_for_appends() {
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let id = HeaderValue::from_static("abc");
        let cases: &[(Pairs, &str)] = &[
            (&[], "10.1.2.3"),                                        // first hop
            (&[("x-forwarded-for", "1.1.1.1")], "1.1.1.1, 10.1.2.3"), // appended
            (
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2"),
                ],
                "1.1.1.1, 2.2.2.2, 10.1.2.3",
            ), // several lines folded
        ];
        for (input, want) in cases {
            let mut map = headers(input);
            let host = HeaderValue::from_static("Example.com:8080");
            add_forwarded(
                &mut map,
                &client_ip_header(client),
                "http",
                Some(&host),
                &id,
            );
            assert_eq!(map.get_all(&X_FORWARDED_FOR).iter().count(), 1, "{input:?}");
            assert_eq!(map[&X_FORWARDED_FOR], *want, "{input:?}");
            assert_eq!(map[&X_FORWARDED_PROTO], "http");
            assert_eq!(map[&X_FORWARDED_HOST], "Example.com:8080");
            assert_eq!(map[&X_REQUEST_ID], "abc");
        }
    }

    #[test]
    fn request_ids() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("client-id-1"), Some("client-id-1")), // kept
            (None, None),                               // generated
            (Some(""), None),                           // empty → generated
            (Some("has space"), None),                  // not a token → generated
            (Some(long.as_str()), None),                // too long → generated
        ];
        for (given, kept) in cases {
            let mut map = HeaderMap::new();
            if let Some(given) = given {
                map.insert(X_REQUEST_ID, HeaderValue::from_str(given).unwrap());
            }
            let id = request_id(&map);
            match kept {
                Some(want) => assert_eq!(id, *want),
                None => {
                    let id = id.to_str().unwrap();
                    assert_eq!(id.len(), 32, "{given:?}");
                    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                }
            }
        }
        assert_ne!(generate_request_id(), generate_request_id());
    }

    #[test]
    fn upgrade_detection() {
        let cases: &[(Pairs, Version, bool)] = &[
            (
                &[("connection", "Upgrade"), ("upgrade", "websocket")],
                Version::HTTP_11,
                true,
            ),
            (
                &[("connection", "keep-alive, upgrade"), ("upgrade", "h2c")],
                Version::HTTP_11,
                true,
            ),
            (&[("upgrade", "websocket")], Version::HTTP_11, false), // no Connection token
            (&[("connection", "upgrade")], Version::HTTP_11, false), // no Upgrade header
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                Version::HTTP_10,
                false,
            ),
        ];
        for (input, version, want) in cases {
            let mut req = Request::new(());
            *req.headers_mut() = headers(input);
            *req.version_mut() = *version;
            assert_eq!(is_upgrade(&req), *want, "{input:?} {version:?}");
        }
    }
}
