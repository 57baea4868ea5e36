//! Admission through a real gateway to real upstreams: per-instance concurrency, the FIFO queue
//! and its limits, least-outstanding choice, and the activator (requests held at zero instances).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use nimbus_gateway::{Endpoint, HostRoute};
use nimbus_model::TrafficPolicy;
use support::*;
use tokio::net::TcpStream;

const HOST: &str = "hello.example";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A gateway serving `hello.example` through `gate`'s version `v1`.
async fn gateway_for(gate: &TestGate) -> TestGateway {
    let svc = service_with("hello", TrafficPolicy::single("v1"), vec![gate.route()]);
    TestGateway::start(table(vec![(HOST, HostRoute::Service(svc))])).await
}

/// Waits until every endpoint and the gate are back to zero in flight and nothing is queued.
async fn settled(gate: &TestGate, endpoints: &[&Arc<Endpoint>]) {
    eventually("all requests finished", || {
        endpoints.iter().all(|e| e.inflight() == 0) && gate.gate.demand() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_never_overlaps() {
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let gate = TestGate::new("v1", vec![endpoint.clone()], limits(1, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let clients: Vec<_> = (0..20).map(|_| gw.spawn_get(HOST, "/busy")).collect();
    for client in clients {
        let reply = within(client).await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(&reply.body[..], b"busy");
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(
        up.max_active(),
        1,
        "an instance at concurrency 1 got two requests"
    );
    settled(&gate, &[&endpoint]).await;
    let stats = gate.gate.stats();
    assert_eq!((stats.rejected_queue_full, stats.timed_out), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_spreads_over_instances() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let gate = TestGate::new("v1", vec![ea.clone(), eb.clone()], limits(1, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;

    // A long request occupies `a`; the next one goes to the idle `b`, not in turn to `a`.
    let first = gw.spawn_get(HOST, "/stream");
    eventually("a busy", || ea.inflight() == 1).await;
    let second = gw.spawn_get(HOST, "/stream");
    eventually("b busy", || eb.inflight() == 1).await;
    assert_eq!(ea.inflight(), 1);
    a.release();
    b.release();
    for reply in [first, second] {
        assert_eq!(&within(reply).await.unwrap().body[..], b"first\nlast\n");
    }

    // Under a burst, both are used and neither ever serves two at once.
    let clients: Vec<_> = (0..10).map(|_| gw.spawn_get(HOST, "/busy")).collect();
    for client in clients {
        assert_eq!(within(client).await.unwrap().status, 200);
    }
    assert_eq!(a.hits() + b.hits(), 10);
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a {} b {}",
        a.hits(),
        b.hits()
    );
    assert_eq!((a.max_active(), b.max_active()), (1, 1));
    settled(&gate, &[&ea, &eb]).await;
}

#[tokio::test]
async fn queued_requests_are_served_in_arrival_order() {
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let gate = TestGate::new("v1", vec![endpoint.clone()], limits(1, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let held = gw.spawn_get(HOST, "/stream");
    eventually("slot taken", || endpoint.inflight() == 1).await;
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(gw.spawn_get(HOST, &format!("/order/{i}")));
        eventually("queued", || gate.gate.stats().queued == i + 1).await;
    }
    up.release();
    within(held).await.unwrap();
    for reply in queued {
        assert_eq!(within(reply).await.unwrap().status, 200);
    }
    // The only slot went to the queued requests one by one, oldest first.
    assert_eq!(
        up.paths(),
        ["/stream", "/order/0", "/order/1", "/order/2", "/order/3", "/order/4"]
    );
    settled(&gate, &[&endpoint]).await;
}

#[tokio::test]
async fn full_queue_is_503_with_retry_after() {
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let gate = TestGate::new("v1", vec![endpoint.clone()], limits(1, 1, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let held = gw.spawn_get(HOST, "/stream");
    eventually("slot taken", || endpoint.inflight() == 1).await;
    let queued = gw.spawn_get(HOST, "/");
    eventually("one queued", || gate.gate.stats().queued == 1).await;

    let reply = gw
        .send(gw.request(HOST, "/").header("x-request-id", "rid-full"))
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("x-request-id"), "rid-full");
    let json = reply.json();
    assert_eq!(json["error"]["code"], "queue_full");
    assert!(json["error"]["field"].is_null());
    assert!(
        json["error"]["message"].as_str().unwrap().contains("hello"),
        "{json}"
    );
    assert_eq!(gate.gate.stats().rejected_queue_full, 1);

    up.release();
    assert_eq!(within(held).await.unwrap().status, 200);
    assert_eq!(within(queued).await.unwrap().upstream(), "a");
    settled(&gate, &[&endpoint]).await;
}

#[tokio::test]
async fn held_request_times_out_with_504() {
    // Cold: no instance ever becomes ready.
    let cold = TestGate::new("v1", vec![], limits(1, 100, Duration::from_millis(300)));
    let gw = gateway_for(&cold).await;
    let started = Instant::now();
    let reply = gw.get(HOST, "/").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504);
    assert!(
        (Duration::from_millis(300)..Duration::from_secs(3)).contains(&took),
        "{took:?}"
    );
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(reply.headers.contains_key("x-request-id"));
    assert!(!reply.headers.contains_key("retry-after"));
    let json = reply.json();
    assert_eq!(json["error"]["code"], "queue_timeout");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no instance became ready"),
        "{json}"
    );
    assert_eq!(cold.gate.stats().timed_out, 1);
    assert_eq!(cold.gate.stats().queued, 0);
    assert_eq!(cold.colds(), 1);

    // Busy: the only slot stays taken.
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let busy = TestGate::new(
        "v1",
        vec![endpoint.clone()],
        limits(1, 100, Duration::from_millis(300)),
    );
    let gw = gateway_for(&busy).await;
    let held = gw.spawn_get(HOST, "/stream");
    eventually("slot taken", || endpoint.inflight() == 1).await;
    let reply = gw.get(HOST, "/").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"]["code"], "queue_timeout");
    assert_eq!(busy.gate.stats().timed_out, 1);
    assert_eq!(busy.colds(), 0);
    up.release();
    assert_eq!(within(held).await.unwrap().status, 200);
    settled(&busy, &[&endpoint]).await;
}

#[tokio::test]
async fn activator_holds_a_request_until_an_instance_is_ready() {
    let up = Upstream::start("a").await;
    let gate = TestGate::new("v1", vec![], limits(10, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let held = gw.spawn_get(HOST, "/");
    eventually("held", || gate.gate.stats().queued == 1).await;
    assert_eq!(gate.colds(), 1, "the activator was poked");
    assert_eq!(gate.gate.stats().cold_holds, 1);
    assert!(!held.is_finished());

    let endpoint = up.endpoint();
    let released = Instant::now();
    gate.gate
        .update(vec![endpoint.clone()], limits(10, 100, TIMEOUT));
    // Released inside update(), not by a timer: the slot is already taken when it returns.
    assert_eq!(gate.gate.stats().queued, 0);
    assert_eq!(endpoint.inflight(), 1);
    let reply = within(held).await.unwrap();
    let took = released.elapsed();
    assert_eq!(reply.upstream(), "a");
    assert!(took < Duration::from_millis(500), "released after {took:?}");
    let waits = gate.gate.take_cold_waits();
    assert_eq!(waits.len(), 1);
    settled(&gate, &[&endpoint]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_held_requests_all_succeed() {
    let up = Upstream::start("a").await;
    let gate = TestGate::new("v1", vec![], limits(20, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let clients: Vec<_> = (0..20).map(|_| gw.spawn_get(HOST, "/busy")).collect();
    eventually("all held", || gate.gate.stats().queued == 20).await;
    assert_eq!(gate.colds(), 20, "one poke per request; the callee dedups");

    let endpoint = up.endpoint();
    gate.gate
        .update(vec![endpoint.clone()], limits(20, 100, TIMEOUT));
    for client in clients {
        let reply = within(client).await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    assert_eq!(up.hits(), 20);
    assert!(up.max_active() <= 20, "{}", up.max_active());
    assert_eq!(gate.gate.take_cold_waits().len(), 20);
    settled(&gate, &[&endpoint]).await;
    assert_eq!(gate.gate.stats().cold_holds, 20);
}

#[tokio::test]
async fn removed_instance_finishes_its_request_and_gets_no_more() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let gate = TestGate::new("v1", vec![ea.clone(), eb.clone()], limits(10, 100, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let streaming = gw.spawn_get(HOST, "/stream");
    eventually("a streaming", || ea.inflight() == 1).await;

    gate.gate.update(vec![eb.clone()], limits(10, 100, TIMEOUT));
    for _ in 0..5 {
        assert_eq!(gw.get(HOST, "/").await.upstream(), "b");
    }
    assert_eq!(ea.inflight(), 1, "the drainer would still wait for a");
    a.release();
    let reply = within(streaming).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"first\nlast\n");
    settled(&gate, &[&ea, &eb]).await;
}

#[tokio::test]
async fn client_leaving_the_queue_frees_its_place() {
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let gate = TestGate::new("v1", vec![endpoint.clone()], limits(1, 1, TIMEOUT));
    let gw = gateway_for(&gate).await;
    let held = gw.spawn_get(HOST, "/stream");
    eventually("slot taken", || endpoint.inflight() == 1).await;

    // A client on its own connection queues, then hangs up.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", HOST)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let waiting = tokio::spawn(async move { sender.send_request(req).await });
    eventually("queued", || gate.gate.stats().queued == 1).await;
    waiting.abort();
    conn.abort();
    eventually("place freed", || gate.gate.stats().queued == 0).await;
    assert_eq!(gate.gate.stats().timed_out, 0);

    // The place is usable again rather than rejected.
    let queued = gw.spawn_get(HOST, "/");
    eventually("queued again", || gate.gate.stats().queued == 1).await;
    up.release();
    assert_eq!(within(held).await.unwrap().status, 200);
    assert_eq!(within(queued).await.unwrap().upstream(), "a");
    assert_eq!(gate.gate.stats().rejected_queue_full, 0);
    settled(&gate, &[&endpoint]).await;
}

#[tokio::test]
async fn queue_wait_counts_against_the_request_timeout() {
    // 600 ms budget; 400 ms of it spent queued behind `/stream`, leaving too little for `/slow`.
    let up = Upstream::start("a").await;
    let endpoint = up.endpoint();
    let gate = TestGate::new(
        "v1",
        vec![endpoint.clone()],
        limits(1, 100, Duration::from_millis(600)),
    );
    let gw = gateway_for(&gate).await;
    let held = gw.spawn_get(HOST, "/stream");
    eventually("slot taken", || endpoint.inflight() == 1).await;
    let started = Instant::now();
    let slow = gw.spawn_get(HOST, "/slow");
    eventually("queued", || gate.gate.stats().queued == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    up.release();
    assert_eq!(within(held).await.unwrap().status, 200);
    let reply = within(slow).await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"]["code"], "upstream_timeout");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    settled(&gate, &[&endpoint]).await;
}
