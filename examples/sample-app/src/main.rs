//! The sample app Nimbus's tests and quick start deploy: a tiny HTTP/1.1 server on
//! `127.0.0.1:$PORT` that reports who it is and what it received.
//!
//! # Routes
//! - `GET /`: `hello from SERVICE VERSION (INSTANCE)`; `$GREETING` replaces `hello`.
//! - `GET /env`: `PORT`, `GREETING` and every `NIMBUS_*` variable as a JSON object.
//! - `GET /headers`: the request headers it received as a JSON object (lowercase names).
//! - `GET /stream?chunks=N&delay_ms=M`: `N` lines `chunk i`, `M` ms apart (defaults 5 and 100).
//! - `GET /slow?ms=N`: answers `slow N inflight=K instance=ID` after `N` ms, where `K` is how many
//!   requests (this one included) this process was serving when it arrived: tests check a
//!   concurrency limit of 1 by never seeing `K` above 1.
//! - `GET /ws`: WebSocket echo.
//! - `GET /burn?ms=N`: burns `N` ms of CPU time on one thread, then answers `burned N true`
//!   (metering tests).
//! - `GET /bytes?n=N`: answers exactly `N` bytes of `x` (egress tests).
//! - `GET /log?msg=TEXT`: prints `TEXT` on stdout (log tests), answers `logged`.
//! - `POST /upload`: reads the request body and answers `got N bytes` (body limit tests).
//! - `GET /proto`: the HTTP version the request arrived with, e.g. `HTTP/2.0`.
//! - `GET /trailers`: `ok` followed by trailer fields, as a gRPC server ends a call:
//!   `grpc-status: 0` and `x-te` with the `TE` header the request came with (`none` without one).
//!   HTTP/2 always carries them; over HTTP/1.1 they are sent only to a client asking with
//!   `TE: trailers`. Over HTTP/2 a `set-cookie` trailer comes too, which no trailer may carry:
//!   a proxy has to drop it.
//!
//! With `H2C=1` it also speaks HTTP/2 without TLS (prior knowledge), like a gRPC server.
//!
//! With `FAIL_START=1` it refuses to start (exit 1), so tests can watch a crashing version. It
//! prints `listening on 127.0.0.1:PORT` once bound and exits promptly on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Longest `/slow` or `/stream` delay honoured, so a typo cannot park a connection for hours.
const MAX_DELAY_MS: u64 = 60_000;
/// Most `/stream` chunks sent.
const MAX_CHUNKS: u64 = 10_000;

/// Requests this process is serving now (all routes), for `/slow`'s overlap report.
static INFLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one request in [`INFLIGHT`] for as long as it lives.
struct InflightCount(usize);

impl InflightCount {
    fn enter() -> Self {
        Self(INFLIGHT.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

impl Drop for InflightCount {
    fn drop(&mut self) {
        INFLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn main() -> ExitCode {
    if std::env::var("FAIL_START").is_ok_and(|v| v == "1") {
        eprintln!("sample app refusing to start: FAIL_START is set");
        return ExitCode::FAILURE;
    }
    let port = match std::env::var("PORT").map(|p| p.parse::<u16>()) {
        Ok(Ok(port)) => port,
        Ok(Err(err)) => {
            eprintln!("sample app: PORT is not a port number: {err}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("sample app: PORT is not set; run it as `PORT=8080 nimbus-sample-app`");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sample app: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(SocketAddr::from(([127, 0, 0, 1], port)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sample app: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections until SIGTERM or SIGINT.
async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        eprintln!("sample app: accept failed: {err}");
                        continue;
                    }
                };
                let h2c = std::env::var("H2C").is_ok_and(|v| v == "1");
                tokio::spawn(async move {
                    let result = if h2c {
                        hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(handle))
                        .await
                    } else {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service_fn(handle))
                            .with_upgrades()
                            .await
                            .map_err(Into::into)
                    };
                    if let Err(err) = result {
                        eprintln!("sample app: connection error: {err}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    println!("sample app stopping");
    Ok(())
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let count = InflightCount::enter();
    if req.method() == Method::POST && req.uri().path() == "/upload" {
        let got = match req.into_body().collect().await {
            Ok(body) => format!("got {} bytes\n", body.to_bytes().len()),
            Err(err) => format!("body failed: {err}\n"),
        };
        return Ok(text(StatusCode::OK, got));
    }
    if req.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        ));
    }
    let query = parse_query(req.uri().query());
    let number = |name: &str, default: u64| {
        query
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let response = match req.uri().path() {
        "/" => text(StatusCode::OK, greeting()),
        "/env" => json(&env_report()),
        "/headers" => json(&headers_report(&req)),
        "/proto" => text(StatusCode::OK, format!("{:?}\n", req.version())),
        "/trailers" => with_trailers(req.headers().get(hyper::header::TE)),
        "/stream" => stream(
            number("chunks", 5).min(MAX_CHUNKS),
            number("delay_ms", 100).min(MAX_DELAY_MS),
        ),
        "/slow" => {
            let ms = number("ms", 1000).min(MAX_DELAY_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let instance = std::env::var("NIMBUS_INSTANCE").unwrap_or_else(|_| "?".into());
            text(
                StatusCode::OK,
                format!("slow {ms} inflight={} instance={instance}\n", count.0),
            )
        }
        "/ws" => websocket(req),
        "/burn" => {
            let ms = number("ms", 1000).min(MAX_DELAY_MS);
            // On a blocking thread so the busy loop does not stall the server's other requests.
            // Burns `ms` of this thread's CPU time (not wall time: on a busy machine the same
            // CPU takes longer), so metering tests know exactly what should be billed.
            let burned = tokio::task::spawn_blocking(move || {
                let Some(start) = thread_cpu_ms() else {
                    return false;
                };
                let mut spins = 0u64;
                loop {
                    for _ in 0..100_000 {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    match thread_cpu_ms() {
                        Some(now) if now.saturating_sub(start) >= ms => return true,
                        Some(_) => {}
                        None => return false,
                    }
                }
            })
            .await
            .unwrap_or(false);
            text(StatusCode::OK, format!("burned {ms} {burned}\n"))
        }
        "/bytes" => {
            let n = number("n", 1024).min(64 << 20) as usize;
            text(StatusCode::OK, "x".repeat(n))
        }
        "/log" => {
            let msg = query.get("msg").copied().unwrap_or("log line");
            println!("{msg}");
            let _ = std::io::stdout().flush();
            text(StatusCode::OK, "logged\n".into())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/stat`, in ms
/// (clock ticks of 10 ms, the Linux default `USER_HZ`).
fn thread_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// `hello from SERVICE VERSION (INSTANCE)`, with `$GREETING` in place of `hello` when set.
fn greeting() -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "?".into());
    let hello = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
    format!(
        "{hello} from {} {} ({})\n",
        var("NIMBUS_SERVICE"),
        var("NIMBUS_VERSION"),
        var("NIMBUS_INSTANCE")
    )
}

fn env_report() -> serde_json::Value {
    let vars: serde_json::Map<String, serde_json::Value> = std::env::vars()
        .filter(|(k, _)| k == "PORT" || k == "GREETING" || k.starts_with("NIMBUS_"))
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::Value::Object(vars)
}

/// Request headers by lowercase name; repeated headers are joined with `, `.
fn headers_report(req: &Request<Incoming>) -> serde_json::Value {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        seen.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    serde_json::json!(seen)
}

/// A chunked body: `chunk 1` … `chunk N`, one line each, `delay_ms` apart.
fn stream(chunks: u64, delay_ms: u64) -> Response<Body> {
    let lines = futures_util::stream::unfold(1u64, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 1 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `ok`, then the trailer fields `grpc-status: 0` and `x-te` (the request's `TE`, or `none`),
/// and `set-cookie`, which hyper's HTTP/1.1 encoder leaves out but HTTP/2 sends.
fn with_trailers(te: Option<&HeaderValue>) -> Response<Body> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert(
        hyper::header::SET_COOKIE,
        HeaderValue::from_static("from-trailer=1"),
    );
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert(
        "x-te",
        te.cloned().unwrap_or(HeaderValue::from_static("none")),
    );
    let frames = [
        Frame::data(Bytes::from_static(b"ok\n")),
        Frame::trailers(trailers),
    ];
    let body = futures_util::stream::iter(frames.map(Ok::<_, Infallible>));
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers the upgrade with 101 and echoes every text and binary message on the new socket.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let wants_ws = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).filter(|_| wants_ws) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade\n".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                eprintln!("sample app: websocket upgrade failed: {err}");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

fn parse_query(query: Option<&str>) -> BTreeMap<&str, &str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
