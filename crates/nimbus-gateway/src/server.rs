//! The [`Gateway`]: the current route table, the pooled upstream client, and the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use tokio_rustls::TlsAcceptor;

use crate::body::RequestBody;
use crate::h1::{Outcome, Rewind, Stop};
use crate::observe::RequestObserver;
use crate::route::RouteTable;
use crate::tls::CertResolver;

/// How long idle upstream connections stay pooled.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long open client connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Default [`GatewayConfig::max_header_bytes`]: 64 KiB, like HAProxy's `tune.bufsize` order.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Smallest request-head buffer hyper accepts.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`GatewayConfig::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default [`GatewayConfig::header_read_timeout`] (nginx's `client_header_timeout` is 60 s,
/// HAProxy's `timeout http-request` commonly 10 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream client: pooled keep-alive connections per instance address.
type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Static gateway settings.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The scheme clients used on the plain listener, sent upstream as `x-forwarded-proto`
    /// (`"http"`, or `"https"` behind a TLS-terminating proxy). The TLS listener always says
    /// `"https"`.
    pub proto: &'static str,
    /// Answer every request on the plain listener with a permanent redirect to HTTPS on this
    /// port (`--redirect-https`).
    pub redirect_https: Option<u16>,
    /// Told about every finished request (metrics, metering, access log).
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Largest request head (request line + headers) over HTTP/1.1, and header list over
    /// HTTP/2; a bigger one gets 431. At least 8 KiB.
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1.1 request (431 past it).
    pub max_headers: usize,
    /// How long a client may take to send a whole request head; a slower one (slowloris) is
    /// disconnected.
    pub header_read_timeout: Duration,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("proto", &self.proto)
            .field("redirect_https", &self.redirect_https)
            .field("observer", &self.observer.is_some())
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_headers", &self.max_headers)
            .field("header_read_timeout", &self.header_read_timeout)
            .finish()
    }
}

/// The HTTP front door. Share it as `Arc<Gateway>`: the reconciler calls [`Gateway::swap`] while
/// [`Gateway::serve`] runs.
pub struct Gateway {
    config: GatewayConfig,
    /// The current table. Each request loads one snapshot; swaps never block requests.
    routes: ArcSwap<RouteTable>,
    /// Keep-alive connections to instances, pooled per address.
    client: UpstreamClient,
    /// HTTP/2 with prior knowledge to instances of services with `upstream_protocol = h2c`.
    h2c_client: UpstreamClient,
    /// Certificates for [`Gateway::serve_tls`].
    tls: Arc<CertResolver>,
}

// === impl GatewayConfig ===

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            proto: "http",
            redirect_https: None,
            observer: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

// === impl Gateway ===

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let h2c_client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        Arc::new(Self {
            config,
            routes: ArcSwap::from_pointee(RouteTable::default()),
            client,
            h2c_client,
            tls: Arc::new(CertResolver::default()),
        })
    }

    /// Replaces the route table atomically; the next request sees the new one. Requests already
    /// routed finish against the endpoints they were given.
    pub fn swap(&self, table: RouteTable) {
        debug!(hosts = table.len(), "Route table swapped.");
        self.routes.store(Arc::new(table));
    }

    /// The current route table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub(crate) fn routes(&self) -> &ArcSwap<RouteTable> {
        &self.routes
    }

    pub(crate) fn client(&self) -> &UpstreamClient {
        &self.client
    }

    pub(crate) fn h2c_client(&self) -> &UpstreamClient {
        &self.h2c_client
    }

    /// The limits both HTTP/1.1 servers enforce: the gateway's own loop and hyper's.
    fn h1_limits(&self) -> crate::h1::Limits {
        crate::h1::Limits {
            max_header_bytes: self.config.max_header_bytes.max(MIN_MAX_HEADER_BYTES),
            max_headers: self.config.max_headers.max(1),
            header_read_timeout: self.config.header_read_timeout,
        }
    }

    /// The hyper connection settings: header size and count limits, header read timeout.
    fn connection_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let limits = self.h1_limits();
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(limits.max_header_bytes)
            .header_read_timeout(limits.header_read_timeout)
            // Small heads and bodies: one flattened `send` is cheaper than `writev`, which
            // goes through the VFS layer.
            .writev(false);
        if self.config.max_headers != DEFAULT_MAX_HEADERS {
            // hyper parses up to 100 headers into a stack array; any other count costs a
            // heap buffer filled on every request.
            builder.http1().max_headers(limits.max_headers);
        }
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        builder
    }

    /// Serves HTTP/1.1 (with upgrades) and h2c on `listener` until `shutdown` resolves; then stops
    /// accepting and gives open connections up to 5 s to finish their requests. Upgraded
    /// tunnels (WebSockets) are not drained: they live on as tasks until either side closes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// Like [`serve`](Self::serve), over TLS: certificates from [`Gateway::tls`] by SNI, ALPN
    /// `h2` and `http/1.1`, HTTP/2 or HTTP/1.1 to the client as negotiated.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = TlsAcceptor::from(crate::tls::server_config(self.tls.clone()));
        self.serve_with(listener, Some(acceptor), shutdown).await
    }

    async fn serve_with(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(addr = %local, scheme, "Gateway listening.");
        let builder = Arc::new(self.connection_builder());
        let stop = Stop::default();
        let connections = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        warn!(%error, "Accept failed.");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%error, "Could not set TCP_NODELAY.");
            }
            let span = tracing::debug_span!("accept", client.addr = %client, server.addr = %local);
            let served = Served {
                gateway: Arc::clone(&self),
                conn: Arc::new(crate::proxy::Conn::new(client)),
                scheme,
                builder: Arc::clone(&builder),
                stop: stop.clone(),
            };
            match &tls {
                None => {
                    connections.spawn(served.serve(stream, false).instrument(span));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    connections.spawn(
                        async move {
                            let handshake = tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await;
                            let stream = match handshake {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    debug!(%error, "TLS handshake failed.");
                                    return;
                                }
                                Err(_) => {
                                    debug!("TLS handshake timed out.");
                                    return;
                                }
                            };
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            served.serve(stream, h2).await;
                        }
                        .instrument(span),
                    );
                }
            }
        }
        drop(listener);
        info!(addr = %local, "Gateway draining connections.");
        stop.stop();
        connections.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
            .await
            .is_err()
        {
            warn!(addr = %local, "Connections still open after the drain timeout; closing them.");
        }
        Ok(())
    }

    /// The certificates the HTTPS listener serves, by SNI.
    pub fn tls(&self) -> &Arc<CertResolver> {
        &self.tls
    }
}

/// One accepted client connection and what serving it needs.
struct Served {
    gateway: Arc<Gateway>,
    conn: Arc<crate::proxy::Conn>,
    scheme: &'static str,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Cancelled when the listener shuts down: idle connections close, busy ones finish.
    stop: Stop,
}

impl Served {
    /// Serves the connection: HTTP/1.1 on the gateway's own loop (see `h1`) until a request
    /// needs hyper, then hyper (HTTP/1.1 with upgrades, or HTTP/2) for the rest of it. `h2`: the
    /// client negotiated HTTP/2 with ALPN, so hyper serves it from the start.
    async fn serve<IO>(self, mut io: IO, h2: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let prefix = if h2 {
            Bytes::new()
        } else {
            let limits = self.gateway.h1_limits();
            let outcome = crate::h1::serve(
                &mut io,
                &self.gateway,
                &self.conn,
                self.scheme,
                limits,
                &self.stop,
            )
            .await;
            match outcome {
                Outcome::Closed => return,
                Outcome::Handoff(prefix) => prefix,
            }
        };
        let Self {
            gateway,
            conn,
            scheme,
            builder,
            stop,
        } = self;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let gateway = Arc::clone(&gateway);
            let conn = Arc::clone(&conn);
            async move {
                let response =
                    crate::proxy::handle(&gateway, &conn, scheme, req.map(Some), None).await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(Rewind::new(io, prefix)), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop.token.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            debug!(%error, "Connection closed with an error.");
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("hosts", &self.routes.load().len())
            .finish_non_exhaustive()
    }
}
