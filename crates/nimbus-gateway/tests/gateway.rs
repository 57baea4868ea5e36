//! Black-box tests: real upstream servers and a real gateway on 127.0.0.1:0.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use nimbus_gateway::HostRoute;
use nimbus_model::traffic::MatchSource;
use nimbus_model::{RouteRule, RuleMatch, TrafficPolicy, TrafficTarget};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn split(targets: &[(&str, u32)]) -> TrafficPolicy {
    TrafficPolicy {
        split: targets
            .iter()
            .map(|(v, p)| TrafficTarget {
                version: v.to_string(),
                percent: *p,
            })
            .collect(),
        rules: Vec::new(),
    }
}

fn rule(source: MatchSource, name: &str, value: &str, version: &str) -> RouteRule {
    RouteRule {
        matcher: RuleMatch {
            source,
            name: name.into(),
            value: value.into(),
        },
        version: version.into(),
    }
}

#[tokio::test]
async fn routes_by_host_ignoring_port_case_and_trailing_dot() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let svc_a = service(
        "a",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![a.endpoint()])],
    );
    let svc_b = service(
        "b",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![b.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![
        ("a--default.nimbus.localhost", HostRoute::Service(svc_a)),
        ("www.b.example", HostRoute::Service(svc_b)),
    ]))
    .await;
    let cases = &[
        ("a--default.nimbus.localhost", "a"),      // exact
        ("a--default.nimbus.localhost:8080", "a"), // port stripped
        ("A--Default.Nimbus.LOCALHOST", "a"),      // case folded
        ("www.b.example", "b"),                    // custom domain
        ("WWW.B.example.:80", "b"),                // dot, port and case
    ];
    for (host, want) in cases {
        let reply = gw.get(host, "/hello?x=1").await;
        assert_eq!(reply.upstream(), *want, "{host}");
        assert_eq!(reply.json()["path"], "/hello");
        assert_eq!(reply.json()["query"], "x=1");
    }
}

#[tokio::test]
async fn unknown_host_is_404_json() {
    let gw = TestGateway::start(table(vec![])).await;
    let reply = gw.get("Nope.Example:81", "/").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-request-id").len(), 32);
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {
            "code": "unknown_host",
            "message": "no service is bound to host \"nope.example\"",
            "field": "host",
        }})
    );
}

#[tokio::test]
async fn missing_version_or_empty_split_is_503_json() {
    // A version with no ready instance is held by its gate (see tests/admission.rs); these are
    // not in the table at all.
    let svc = service(
        "hello",
        split(&[("v1", 50), ("v2", 50)]),
        vec![], // neither v1 nor v2 is in the map
    );
    let empty = service("empty", TrafficPolicy::default(), vec![]);
    let gw = TestGateway::start(table(vec![
        ("hello.example", HostRoute::Service(svc)),
        ("empty.example", HostRoute::Service(empty)),
    ]))
    .await;
    for host in ["hello.example", "empty.example"]
        .into_iter()
        .cycle()
        .take(10)
    {
        let reply = gw
            .send(gw.request(host, "/").header("x-request-id", "rid-503"))
            .await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.header("x-request-id"), "rid-503");
        let json = reply.json();
        assert_eq!(json["error"]["code"], "no_ready_instance");
        assert!(json["error"]["field"].is_null());
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(host.trim_end_matches(".example")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn round_robin_across_endpoints() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let svc = service(
        "hello",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![a.endpoint(), b.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc))])).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(gw.get("hello.example", "/").await.upstream());
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
}

/// (host, path, extra header, expected upstream)
type Case = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
);

#[tokio::test]
async fn rules_and_version_test_host() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let mut policy = TrafficPolicy::single("v1");
    policy.rules = vec![
        rule(MatchSource::Query, "env", "beta", "v2"),
        rule(MatchSource::Header, "x-canary", "1", "v2"),
    ];
    let svc = service(
        "hello",
        policy,
        vec![("v1", vec![v1.endpoint()]), ("v2", vec![v2.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![
        (
            "hello--default.nimbus.localhost",
            HostRoute::Service(svc.clone()),
        ),
        (
            "v2--hello--default.nimbus.localhost",
            HostRoute::Version {
                service: svc,
                version: "v2".into(),
            },
        ),
    ]))
    .await;
    let host = "hello--default.nimbus.localhost";
    let v2 = "v2--hello--default.nimbus.localhost";
    let v2_port = "v2--hello--default.nimbus.localhost:9";
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (host, "/", None, "v1"),                      // split
        (host, "/?env=beta", None, "v2"),             // query rule
        (host, "/?a=b&env=beta", None, "v2"),         // query rule, not first
        (host, "/?env=prod", None, "v1"),             // query rule misses
        (host, "/", Some(("x-canary", "1")), "v2"),   // header rule
        (host, "/", Some(("x-canary", "0")), "v1"),   // header rule misses
        (v2, "/", None, "v2"),                        // version test host
        (v2_port, "/?env=x", None, "v2"),             // … with a port
    ];
    for (host, path, header, want) in cases {
        let mut req = gw.request(host, path);
        if let Some((k, v)) = header {
            req = req.header(*k, *v);
        }
        assert_eq!(
            gw.send(req).await.upstream(),
            *want,
            "{host} {path} {header:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_90_10_over_1000_requests() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let svc = service(
        "hello",
        split(&[("v1", 90), ("v2", 10)]),
        vec![("v1", vec![v1.endpoint()]), ("v2", vec![v2.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc))])).await;
    let mut v1_count = 0;
    for _ in 0..1000 {
        if gw.get("hello.example", "/").await.upstream() == "v1" {
            v1_count += 1;
        }
    }
    assert!((850..=950).contains(&v1_count), "v1 got {v1_count} of 1000");
}

#[tokio::test]
async fn response_body_streams_and_inflight_is_held_until_done() {
    let up = Upstream::start("s").await;
    let endpoint = up.endpoint();
    let svc = service(
        "s",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![endpoint.clone()])],
    );
    let gw = TestGateway::start(table(vec![("s.example", HostRoute::Service(svc))])).await;

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let req = http::Request::get(format!("http://{}/stream", gw.addr))
        .header("host", "s.example")
        .body(Empty::new())
        .unwrap();
    let response = within(client.request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    assert!(
        !up.sent_last(),
        "the first chunk arrived before the last was sent"
    );
    assert_eq!(
        endpoint.inflight(),
        1,
        "a streaming body counts as in flight"
    );

    up.release();
    let rest = within(body.collect()).await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"last\n");
    eventually("inflight back to 0", || endpoint.inflight() == 0).await;
}

#[tokio::test]
async fn request_body_streams() {
    let up = Upstream::start("e").await;
    let svc = service(
        "e",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![up.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("e.example", HostRoute::Service(svc))])).await;

    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let req = http::Request::post("/echo")
        .header("host", "e.example")
        .body(StreamBody::new(stream))
        .unwrap();
    tx.send(Bytes::from_static(b"ping-1")).await.unwrap();
    let response = within(sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The echo of chunk 1 comes back while the request body is still open.
    let echoed = within(body.frame())
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&echoed[..], b"ping-1");
    tx.send(Bytes::from_static(b"ping-2")).await.unwrap();
    drop(tx);
    let rest = within(body.collect()).await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"ping-2");
}

#[tokio::test]
async fn websocket_echo_through_gateway() {
    let ws_addr = ws_echo_upstream().await;
    let endpoint = Arc::new(nimbus_gateway::Endpoint::new("ws-1".into(), ws_addr));
    let svc = service(
        "ws",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![endpoint.clone()])],
    );
    let gw = TestGateway::start(table(vec![("chat.example", HostRoute::Service(svc))])).await;

    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, response) = within(tokio_tungstenite::client_async("ws://chat.example/ws", tcp))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    for i in 0..3 {
        let text = format!("hello {i}");
        within(ws.send(Message::text(text.clone()))).await.unwrap();
        let echoed = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    within(ws.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), [1u8, 2, 3]);
    assert_eq!(endpoint.inflight(), 1, "an open tunnel counts as in flight");

    within(ws.close(None)).await.unwrap();
    drop(ws);
    eventually("tunnel closed", || endpoint.inflight() == 0).await;
}

#[tokio::test]
async fn forwarded_headers_and_request_id() {
    let up = Upstream::start("h").await;
    let svc = service(
        "h",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![up.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("h.example", HostRoute::Service(svc))])).await;

    // The client's id and forwarding chain are kept and extended.
    let reply = gw
        .send(
            gw.request("H.example:8080", "/")
                .header("x-request-id", "client-id-42")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-forwarded-proto", "https")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "secret")
                .header("proxy-authorization", "Basic Zm9v")
                .header("x-end-to-end", "yes"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), "client-id-42");
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-request-id"], "client-id-42");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "H.example:8080");
    assert_eq!(seen["host"], "H.example:8080");
    assert_eq!(seen["x-end-to-end"], "yes");
    assert!(seen.get("x-hop").is_none(), "named by Connection: {seen}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen}");

    // Without one, an id is generated and returned to both sides.
    let reply = gw.get("h.example", "/").await;
    let id = reply.header("x-request-id").to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let seen = &reply.json()["headers"];
    assert_eq!(seen["x-request-id"], id.as_str());
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    let other = gw.get("h.example", "/").await;
    assert_ne!(other.header("x-request-id"), id, "ids are unique");
}

#[tokio::test]
async fn swap_takes_effect_for_the_next_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let svc = |up: &Upstream| {
        service(
            "hello",
            TrafficPolicy::single("v1"),
            vec![("v1", vec![up.endpoint()])],
        )
    };
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc(&a)))])).await;
    assert_eq!(gw.get("hello.example", "/").await.upstream(), "a");
    assert_eq!(gw.gateway.table().len(), 1);

    gw.gateway
        .swap(table(vec![("hello.example", HostRoute::Service(svc(&b)))]));
    assert_eq!(gw.get("hello.example", "/").await.upstream(), "b");

    gw.gateway.swap(table(vec![]));
    assert!(gw.gateway.table().is_empty());
    assert_eq!(gw.get("hello.example", "/").await.status, 404);
}

#[tokio::test]
async fn inflight_returns_to_zero_after_responses() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let svc = service(
        "hello",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![ea.clone(), eb.clone()])],
    );
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc))])).await;
    for _ in 0..10 {
        assert_eq!(gw.get("hello.example", "/").await.status, 200);
    }
    eventually("inflight back to 0", || {
        ea.inflight() == 0 && eb.inflight() == 0
    })
    .await;
}

#[tokio::test]
async fn dead_upstream_is_502() {
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }; // dropped: nothing listens there any more
    let endpoint = Arc::new(nimbus_gateway::Endpoint::new("gone-1".into(), dead));
    let svc = service(
        "hello",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![endpoint.clone()])],
    );
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc))])).await;
    let reply = gw.get("hello.example", "/").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.headers.contains_key("x-request-id"));
    assert_eq!(reply.json()["error"]["code"], "upstream_unavailable");
    assert_eq!(endpoint.inflight(), 0);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::start("slow").await;
    let endpoint = up.endpoint();
    let svc = service_with(
        "hello",
        TrafficPolicy::single("v1"),
        vec![version(
            "v1",
            vec![endpoint.clone()],
            Duration::from_millis(200),
        )],
    );
    let gw = TestGateway::start(table(vec![("hello.example", HostRoute::Service(svc))])).await;
    let started = std::time::Instant::now();
    let reply = gw.get("hello.example", "/slow").await;
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
    assert!(reply.headers.contains_key("x-request-id"));
    assert_eq!(endpoint.inflight(), 0);
}

#[tokio::test]
async fn h2c_routes_by_authority() {
    let up = Upstream::start("h2").await;
    let svc = service(
        "h2",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![up.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("h2.example", HostRoute::Service(svc))])).await;

    let response = h2_get(gw.addr, "http://H2.example:8443/over-h2").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["upstream"], "h2");
    assert_eq!(json["path"], "/over-h2");
    assert_eq!(json["headers"]["host"], "H2.example:8443");
    assert_eq!(json["headers"]["x-forwarded-host"], "H2.example:8443");
}

/// `GET uri` over a new HTTP/2 (prior knowledge) connection to the gateway at `addr`.
async fn h2_get(addr: std::net::SocketAddr, uri: &str) -> http::Response<hyper::body::Incoming> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(uri)
        .version(http::Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .expect("a request");
    within(sender.send_request(req)).await.expect("h2 response")
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let up = Upstream::start("a").await;
    let svc = service(
        "a",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![up.endpoint()])],
    );
    let gw = TestGateway::start(table(vec![("a.example", HostRoute::Service(svc))])).await;
    assert_eq!(gw.get("a.example", "/").await.upstream(), "a");
    let addr = gw.addr;
    gw.shutdown().await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// A hand-written HTTP/1.1 instance, to send responses of every framing (and misbehave) exactly
/// as written. Returns its address and the count of connections it accepted.
async fn raw_upstream() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the raw upstream");
    let addr = listener.local_addr().expect("its address");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 1024];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let mut line = head.split_whitespace();
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let (reply, close): (&[u8], bool) = match (method, path) {
                        ("HEAD", "/length") => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
                        (_, "/length") => (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false),
                        (_, "/chunked") => (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
                            false,
                        ),
                        (_, "/trailers") => (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\ncontent-length: 99\r\n\r\n",
                            false,
                        ),
                        (_, "/close") => (b"HTTP/1.1 200 OK\r\n\r\nuntil close", true),
                        // Closes a kept-alive connection right after answering, as an instance's
                        // idle timeout or a restart would.
                        (_, "/then-close") => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
                        (_, "/hints") => (
                            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                            false,
                        ),
                        _ => (b"garbage\r\n\r\n", true),
                    };
                    if stream.write_all(reply).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A gateway serving `raw.example` from one [`raw_upstream`] instance: the gateway, that
/// instance's endpoint and the count of connections it accepted.
async fn raw_gateway() -> (
    TestGateway,
    Arc<nimbus_gateway::Endpoint>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let (addr, accepted) = raw_upstream().await;
    let endpoint = Arc::new(nimbus_gateway::Endpoint::new("raw-1".into(), addr));
    let svc = service(
        "raw",
        TrafficPolicy::single("v1"),
        vec![("v1", vec![endpoint.clone()])],
    );
    let gw = TestGateway::start(table(vec![("raw.example", HostRoute::Service(svc))])).await;
    (gw, endpoint, accepted)
}

#[tokio::test]
async fn kept_upstream_connection_handles_every_framing_and_reconnects() {
    use std::sync::atomic::Ordering::SeqCst;
    let (gw, endpoint, accepted) = raw_gateway().await;
    let body = |reply: &Reply| String::from_utf8_lossy(&reply.body).to_string();

    // Sequential requests from one client connection reuse one instance connection.
    for _ in 0..3 {
        let reply = gw.get("raw.example", "/length").await;
        assert_eq!((reply.status, body(&reply).as_str()), (200, "hello"));
    }
    assert_eq!(accepted.load(SeqCst), 1, "the kept connection is reused");

    // The instance closes the kept connection after a response: the next request is sent
    // again on a fresh connection instead of failing.
    let reply = gw.get("raw.example", "/then-close").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "ok"));
    let reply = gw.get("raw.example", "/length").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "hello"));
    assert_eq!(accepted.load(SeqCst), 2);

    // Chunked (with an extension and a trailer), close-delimited, HEAD and 1xx interim
    // responses all arrive whole.
    let reply = gw.get("raw.example", "/chunked").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "hello world"));
    let reply = gw.get("raw.example", "/close").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "until close"));
    let reply = gw
        .send(gw.request("raw.example", "/length").method("HEAD"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), "5");
    assert!(reply.body.is_empty());
    let reply = gw.get("raw.example", "/hints").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "ok"));

    // A response that is not HTTP is a 502 with the usual JSON error, and the next request
    // still gets through.
    let reply = gw.get("raw.example", "/garbage").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["code"], "upstream_error");
    let reply = gw.get("raw.example", "/length").await;
    assert_eq!((reply.status, body(&reply).as_str()), (200, "hello"));
    eventually("in flight back to 0", || endpoint.inflight() == 0).await;
}

#[tokio::test]
async fn trailers_after_a_chunked_body_reach_http1_and_h2_clients() {
    let (gw, endpoint, _) = raw_gateway().await;

    // HTTP/1.1: the fields follow the last chunk (those only a head may carry are left out),
    // and the connection carries the next response.
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET /trailers HTTP/1.1\r\nhost: raw.example\r\n\r\nGET /length HTTP/1.1\r\nhost: raw.example\r\n\r\n")
        .await;
    let reply = client.response(false).await;
    assert_eq!((reply.0, reply.2.as_slice()), (200, b"hello".as_slice()));
    assert_eq!(raw_header(&reply, "transfer-encoding"), Some("chunked"));
    assert_eq!(raw_header(&reply, "trailer"), Some("x-checksum"));
    assert_eq!(
        client.trailers,
        [("x-checksum".to_string(), "abc".to_string())]
    );
    let reply = client.response(false).await;
    assert_eq!((reply.0, reply.2.as_slice()), (200, b"hello".as_slice()));
    assert!(client.trailers.is_empty());

    // HTTP/2: a trailers frame ends the stream.
    let response = h2_get(gw.addr, "http://raw.example/trailers").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["trailer"], "x-checksum");
    let collected = within(response.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("a trailers frame");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(b"abc".as_slice())
    );
    assert_eq!(trailers.len(), 1, "{trailers:?}");
    assert_eq!(collected.to_bytes(), "hello");
    eventually("in flight back to 0", || endpoint.inflight() == 0).await;
}

/// A client speaking HTTP/1.1 by hand over one TCP connection, to send exactly the bytes a
/// test needs (pipelined requests, `HEAD`, `Connection: close`, HTTP/1.0, garbage).
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The trailer fields (names lowercase) after the last chunked body read.
    trailers: Vec<(String, String)>,
}

/// Status, headers (names lowercase) and the decoded body of one response.
type RawReply = (u16, Vec<(String, String)>, Vec<u8>);

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        RawClient {
            stream,
            buf: Vec::new(),
            trailers: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        within(self.stream.write_all(bytes)).await.expect("write");
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = within(self.stream.read(&mut chunk)).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `head_request`: it has no body whatever its headers say.
    async fn response(&mut self, head_request: bool) -> RawReply {
        let (len, status, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).expect("a response") {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).to_string();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                break (len, parsed.code.expect("a status"), headers);
            }
            assert!(self.fill().await, "closed before a whole response head");
        };
        self.buf.drain(..len);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        self.trailers.clear();
        if head_request {
        } else if let Some(length) = header("content-length") {
            let length: usize = length.parse().expect("a length");
            while self.buf.len() < length {
                assert!(self.fill().await, "closed inside a body");
            }
            body = self.buf.drain(..length).collect();
        } else if header("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break at;
                    }
                    assert!(self.fill().await, "closed inside a chunk size");
                };
                let size_line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
                let size = usize::from_str_radix(size_line.trim(), 16).expect("a chunk size");
                if size == 0 {
                    self.buf.drain(..line_end + 2);
                    self.read_trailers().await;
                    break;
                }
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.fill().await, "closed inside a chunk");
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
            }
        }
        (status, headers, body)
    }

    /// The trailer section after a last chunk: field lines up to an empty line.
    async fn read_trailers(&mut self) {
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(self.fill().await, "closed inside the trailers");
            };
            let line: Vec<u8> = self.buf.drain(..line_end + 2).take(line_end).collect();
            if line.is_empty() {
                return;
            }
            let line = String::from_utf8_lossy(&line).to_string();
            let (name, value) = line.split_once(':').expect("a trailer field");
            self.trailers
                .push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }

    /// True when the server closes the connection with nothing more to read.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn raw_header<'a>(reply: &'a RawReply, name: &str) -> Option<&'a str> {
    reply
        .1
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn client_connections_pipeline_head_close_and_hand_off_to_hyper() {
    let up = Upstream::start("a").await;
    let (raw_addr, _) = raw_upstream().await;
    let raw = Arc::new(nimbus_gateway::Endpoint::new("raw-1".into(), raw_addr));
    let gw = TestGateway::start(table(vec![
        (
            "a.example",
            HostRoute::Service(service(
                "a",
                TrafficPolicy::single("v1"),
                vec![("v1", vec![up.endpoint()])],
            )),
        ),
        (
            "raw.example",
            HostRoute::Service(service(
                "raw",
                TrafficPolicy::single("v1"),
                vec![("v1", vec![raw])],
            )),
        ),
    ]))
    .await;
    let path_of = |reply: &RawReply| {
        let json: serde_json::Value = serde_json::from_slice(&reply.2).expect("JSON");
        json["path"].as_str().unwrap_or_default().to_string()
    };

    // Two requests in one write: two responses, in order.
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET /one HTTP/1.1\r\nHost: a.example\r\n\r\nGET /two HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await;
    let one = client.response(false).await;
    let two = client.response(false).await;
    assert_eq!((one.0, path_of(&one)), (200, "/one".to_string()));
    assert_eq!((two.0, path_of(&two)), (200, "/two".to_string()));

    // HEAD keeps its length and sends no body; a chunked instance response goes out chunked.
    client
        .send(b"HEAD /length HTTP/1.1\r\nHost: raw.example\r\n\r\n")
        .await;
    let head = client.response(true).await;
    assert_eq!(
        (head.0, raw_header(&head, "content-length")),
        (200, Some("5"))
    );
    client
        .send(b"GET /chunked HTTP/1.1\r\nHost: raw.example\r\n\r\n")
        .await;
    let chunked = client.response(false).await;
    assert_eq!(raw_header(&chunked, "transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.2, b"hello world");

    // A request with a body on the same connection: hyper serves it and the rest.
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let echoed = client.response(false).await;
    assert_eq!((echoed.0, echoed.2.as_slice()), (200, b"hello".as_slice()));
    client
        .send(b"GET /three HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await;
    let three = client.response(false).await;
    assert_eq!(path_of(&three), "/three");

    // `Connection: close`: answered, said so, and closed.
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET /bye HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
        .await;
    let bye = client.response(false).await;
    assert_eq!(
        (bye.0, raw_header(&bye, "connection")),
        (200, Some("close"))
    );
    assert!(client.closed().await, "still open after Connection: close");

    // HTTP/1.0 (hyper's) and an error the gateway writes itself (a date, a length, JSON).
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET /old HTTP/1.0\r\nHost: a.example\r\n\r\n")
        .await;
    let old = client.response(false).await;
    assert_eq!((old.0, path_of(&old)), (200, "/old".to_string()));
    let mut client = RawClient::connect(gw.addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: nobody.example\r\n\r\n")
        .await;
    let unknown = client.response(false).await;
    assert_eq!(unknown.0, 404);
    assert!(raw_header(&unknown, "date").is_some(), "{unknown:?}");
    let json: serde_json::Value = serde_json::from_slice(&unknown.2).expect("JSON");
    assert_eq!(json["error"]["code"], "unknown_host");

    // A request line that is not HTTP: 400, then closed.
    let mut client = RawClient::connect(gw.addr).await;
    client.send(b"NOT HTTP AT ALL\r\n\r\n").await;
    let bad = client.response(false).await;
    assert_eq!(bad.0, 400);
    assert!(
        client.closed().await,
        "still open after a malformed request"
    );
}
