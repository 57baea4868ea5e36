//! A small test language: `Upstream::start("a")` runs a real hyper instance on 127.0.0.1:0,
//! `service(..)` builds a route, `TestGate::new(..)` a version gate whose activator calls are
//! counted, `TestGateway::start(table)` runs a real gateway, and `get(..)` sends a request with a
//! chosen `Host`.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test scaffolding: a failed unwrap fails the test

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nimbus_gateway::{
    Endpoint, GateLimits, Gateway, GatewayConfig, HostRoute, RouteTable, ServiceRoute, VersionGate,
    VersionRoute,
};
use nimbus_model::TrafficPolicy;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);
/// An upstream serves at most this many connections (keeps its accept loop bounded).
const MAX_CONNECTIONS: usize = 1024;

/// Fails the test if `fut` takes longer than [`STEP`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("step timed out")
}

/// Polls `cond` every 10 ms, at most 300 times.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held: {what}");
}

// === Upstream ===

/// A real HTTP/1.1 instance. Routes:
/// - `/stream`: sends `first\n`, waits for [`Upstream::release`], then sends `last\n`;
/// - `/echo`: streams the request body back;
/// - `/slow`: answers after 3 s;
/// - `/busy`: answers `busy` after 30 ms, counting how many `/busy` requests overlap;
/// - anything else: JSON `{"upstream", "method", "path", "query", "headers"}`.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    release: Arc<Notify>,
    sent_last: Arc<AtomicBool>,
    busy: Arc<Busy>,
}

/// Overlap bookkeeping for `/busy`.
#[derive(Default)]
struct Busy {
    active: AtomicUsize,
    max_active: AtomicUsize,
    hits: AtomicUsize,
    /// Every request's path, in arrival order.
    paths: std::sync::Mutex<Vec<String>>,
}

/// What each upstream connection's handler shares.
#[derive(Clone)]
struct UpstreamState {
    name: String,
    release: Arc<Notify>,
    sent_last: Arc<AtomicBool>,
    busy: Arc<Busy>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let sent_last = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(Busy::default());
        let state = UpstreamState {
            name: name.to_string(),
            release: release.clone(),
            sent_last: sent_last.clone(),
            busy: busy.clone(),
        };
        tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(state, req).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            release,
            sent_last,
            busy,
        }
    }

    /// An endpoint for this upstream, named after it.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(self.name.clone(), self.addr))
    }

    /// Lets a `/stream` response send its last chunk.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// True once a `/stream` response has sent its last chunk.
    pub fn sent_last(&self) -> bool {
        self.sent_last.load(Ordering::SeqCst)
    }

    /// The most `/busy` requests this upstream ever served at once.
    pub fn max_active(&self) -> usize {
        self.busy.max_active.load(Ordering::SeqCst)
    }

    /// `/busy` requests served.
    pub fn hits(&self) -> usize {
        self.busy.hits.load(Ordering::SeqCst)
    }

    /// The paths of all requests so far, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.busy.paths.lock().unwrap().clone()
    }
}

async fn respond(state: UpstreamState, req: Request<Incoming>) -> Response<TestBody> {
    let UpstreamState {
        name,
        release,
        sent_last,
        busy,
    } = state;
    busy.paths
        .lock()
        .unwrap()
        .push(req.uri().path().to_string());
    match req.uri().path() {
        "/busy" => {
            let now = busy.active.fetch_add(1, Ordering::SeqCst) + 1;
            busy.max_active.fetch_max(now, Ordering::SeqCst);
            busy.hits.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            busy.active.fetch_sub(1, Ordering::SeqCst);
            Response::new(full("busy"))
        }
        "/stream" => {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first\n")).await;
                release.notified().await;
                sent_last.store(true, Ordering::SeqCst);
                let _ = tx.send(Bytes::from_static(b"last\n")).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        "/echo" => Response::new(req.into_body().map_err(Into::into).boxed()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("slow"))
        }
        _ => {
            let headers: BTreeMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = serde_json::json!({
                "upstream": name,
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "query": req.uri().query(),
                "headers": headers,
            });
            let mut response = Response::new(full(body.to_string()));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A WebSocket echo instance (tokio-tungstenite).
pub async fn ws_echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                for _ in 0..1000 {
                    match ws.next().await {
                        Some(Ok(msg)) if msg.is_text() || msg.is_binary() => {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(msg)) if msg.is_close() => return,
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

// === routes ===

/// A version gate of `hello` in `default` whose activator calls are counted.
pub struct TestGate {
    pub gate: Arc<VersionGate>,
    colds: Arc<AtomicUsize>,
}

impl TestGate {
    pub fn new(version: &str, endpoints: Vec<Arc<Endpoint>>, limits: GateLimits) -> TestGate {
        let colds = Arc::new(AtomicUsize::new(0));
        let counter = colds.clone();
        let gate = VersionGate::new(
            "default".into(),
            "hello".into(),
            version.into(),
            Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
            Arc::new(|| {}),
        );
        gate.update(endpoints, limits);
        TestGate { gate, colds }
    }

    /// How often the activator hook was called.
    pub fn colds(&self) -> usize {
        self.colds.load(Ordering::SeqCst)
    }

    /// A route for this gate's version.
    pub fn route(&self) -> Arc<VersionRoute> {
        Arc::new(VersionRoute::new(self.gate.clone()))
    }
}

/// Limits for tests: `concurrency` per instance, `queue_depth` places, `timeout`.
pub fn limits(concurrency: u32, queue_depth: usize, timeout: Duration) -> GateLimits {
    GateLimits {
        concurrency,
        queue_depth,
        timeout,
    }
}

/// A version of `hello` in `default` with the given endpoints and timeout, at concurrency 1000
/// with 100 queue places (so tests that do not care about admission never queue).
pub fn version(name: &str, endpoints: Vec<Arc<Endpoint>>, timeout: Duration) -> Arc<VersionRoute> {
    TestGate::new(name, endpoints, limits(1000, 100, timeout)).route()
}

/// Service `name` with `policy` and versions (5 s timeout each).
pub fn service(
    name: &str,
    policy: TrafficPolicy,
    versions: Vec<(&str, Vec<Arc<Endpoint>>)>,
) -> Arc<ServiceRoute> {
    service_with(
        name,
        policy,
        versions
            .into_iter()
            .map(|(v, eps)| version(v, eps, Duration::from_secs(5)))
            .collect(),
    )
}

pub fn service_with(
    name: &str,
    policy: TrafficPolicy,
    versions: Vec<Arc<VersionRoute>>,
) -> Arc<ServiceRoute> {
    Arc::new(ServiceRoute {
        namespace: "default".into(),
        name: name.into(),
        policy,
        versions: versions
            .into_iter()
            .map(|v| (v.version.clone(), v))
            .collect(),
        gateway: Default::default(),
    })
}

/// A table binding each host to its service.
pub fn table(bindings: Vec<(&str, HostRoute)>) -> RouteTable {
    let mut table = RouteTable::default();
    for (host, route) in bindings {
        table.insert(host.into(), route);
    }
    table
}

// === gateway ===

pub struct TestGateway {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response read to the end.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl TestGateway {
    pub async fn start(table: RouteTable) -> TestGateway {
        let gateway = Gateway::new(GatewayConfig::default());
        gateway.swap(table);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(gateway.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        TestGateway {
            gateway,
            addr,
            shutdown: Some(tx),
            served,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A request through the gateway with `Host: host`.
    pub fn request(&self, host: &str, path: &str) -> http::request::Builder {
        Request::get(format!("http://{}{path}", self.addr)).header("host", host)
    }

    pub async fn send(&self, req: http::request::Builder) -> Reply {
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let response = within(self.client.request(req)).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = within(body.collect()).await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(self.request(host, path)).await
    }

    /// `GET path` with `Host: host` in a task of its own, read to the end.
    pub fn spawn_get(&self, host: &str, path: &str) -> tokio::task::JoinHandle<Reply> {
        let req = self
            .request(host, path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let client = self.client.clone();
        tokio::spawn(async move {
            let response = within(client.request(req)).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = within(body.collect()).await.unwrap().to_bytes();
            Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            }
        })
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within(&mut self.served).await.unwrap()
    }
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `upstream` field of the mock upstream's JSON.
    pub fn upstream(&self) -> String {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        self.json()["upstream"].as_str().unwrap().to_string()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}
