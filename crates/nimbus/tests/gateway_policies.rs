//! Gateway policies as a client sees them: load-balancing algorithms across instances, session
//! affinity, access rules (403), rate limits (429), body and header limits (413, 431), the
//! header read timeout (slowloris), the time-to-first-byte timeout (504), the WebSocket idle
//! timeout, outlier ejection and recovery, and the retry rule when an instance dies.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{error_of, eventually, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The instance id in the sample app's `hello from SERVICE VERSION (INSTANCE)`.
fn instance_of(body: &str) -> Option<String> {
    let start = body.find('(')? + 1;
    let end = body[start..].find(')')? + start;
    Some(body[start..end].to_string())
}

/// Deploys `service` with `n` instances and waits until all are ready.
async fn deploy_instances(server: &Server, service: &str, n: u32) {
    let n_text = n.to_string();
    server
        .deploy(
            service,
            &["--min-instances", &n_text, "--max-instances", &n_text],
        )
        .await;
    eventually(
        &format!("{n} ready instances of {service}"),
        Duration::from_secs(60),
        async || {
            let ready = server
                .instances(service)
                .await
                .iter()
                .filter(|i| i["state"] == "ready")
                .count();
            (ready == n as usize).then_some(())
        },
    )
    .await;
}

/// `GET /` `count` times, one after the other, counting answers per instance.
async fn spread(
    server: &Server,
    host: &str,
    headers: &[(&str, &str)],
    count: usize,
) -> BTreeMap<String, usize> {
    let mut per_instance = BTreeMap::new();
    for _ in 0..count {
        let reply = server.get_with(host, "/", headers).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let instance = instance_of(&reply.body).expect("a sample app greeting");
        *per_instance.entry(instance).or_insert(0) += 1;
    }
    per_instance
}

async fn gateway_set(server: &Server, service: &str, flags: &[&str]) {
    let mut args = vec!["gateway", "set", service];
    args.extend_from_slice(flags);
    server.cli_ok(&args).await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_algorithms_spread_and_hash_sticks() {
    let server = Server::start().await;
    deploy_instances(&server, "lb", 3).await;
    let host = Server::host("lb");

    // Sequential requests find every instance idle: the default least-outstanding choice
    // rotates ties, round-robin and weighted (equal weights) take turns.
    for lb in ["least-outstanding", "round-robin", "weighted"] {
        gateway_set(&server, "lb", &["--lb", lb]).await;
        let counts = spread(&server, &host, &[], 30).await;
        assert_eq!(counts.len(), 3, "{lb}: {counts:?}");
        assert!(counts.values().all(|&n| n == 10), "{lb}: {counts:?}");
    }

    // Power of two choices among idle instances: random, but over 60 requests every
    // instance is drawn.
    gateway_set(&server, "lb", &["--lb", "least-request"]).await;
    let counts = spread(&server, &host, &[], 60).await;
    assert_eq!(counts.len(), 3, "least-request: {counts:?}");

    // Consistent hashing on a header: one user always lands on one instance; many users spread.
    gateway_set(&server, "lb", &["--lb", "hash:header:x-user"]).await;
    for user in ["alice", "bob"] {
        let counts = spread(&server, &host, &[("x-user", user)], 10).await;
        assert_eq!(counts.len(), 1, "{user}: {counts:?}");
    }
    let mut owners = BTreeMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let counts = spread(&server, &host, &[("x-user", &user)], 1).await;
        for instance in counts.keys() {
            *owners.entry(instance.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(owners.len(), 3, "30 users over 3 instances: {owners:?}");

    // On the client IP: every request from this test comes from 127.0.0.1.
    gateway_set(&server, "lb", &["--lb", "hash:ip"]).await;
    let counts = spread(&server, &host, &[], 10).await;
    assert_eq!(counts.len(), 1, "hash:ip: {counts:?}");

    let show = server
        .cli_ok(&["-o", "json", "gateway", "show", "lb"])
        .await
        .json();
    assert_eq!(show["lb"], "hash:ip", "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_is_refused_and_changes_nothing() {
    let server = Server::start().await;
    server.deploy("strict", &[]).await;
    gateway_set(&server, "strict", &["--rate", "100/s"]).await;
    let path = "/v1/namespaces/default/services/strict/gateway";
    let cases = [
        (json!({"lb": "random"}), "lb"),
        (json!({"rate": "100/fortnight"}), "rate"),
        (json!({"access": ["allow ip=10.0.0.1/8"]}), "access"),
        (json!({"max_body_bytes": 0}), "max_body_bytes"),
        (json!({"lbb": "round-robin"}), "lbb"),
    ];
    for (body, field) in cases {
        let (status, answer) = server.api_put(path, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(error_of(&answer)["field"], field, "{body}: {answer}");
    }
    let (status, missing) = server
        .api_put("/v1/namespaces/default/services/ghost/gateway", &json!({}))
        .await;
    assert_eq!(status, 404, "{missing}");
    let out = server
        .cli(&["gateway", "set", "strict", "--lb", "random"])
        .await;
    assert!(!out.success(), "{out}");
    let (_, policy) = server.api_get(path).await;
    assert_eq!(
        policy,
        json!({"rate": "100/s", "affinity": "none", "upstream_protocol": "http1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_cookie_pins_a_version_while_it_takes_traffic() {
    let server = Server::start().await;
    server.deploy("sticky", &[]).await;
    server.deploy("sticky", &["--no-traffic"]).await;
    server.wait_ready("sticky", "v2").await;
    server.set_split("sticky", "v1=50,v2=50").await;
    gateway_set(&server, "sticky", &["--affinity", "cookie"]).await;
    let host = Server::host("sticky");

    let first = server.get(&host, "/").await;
    let version = first.version();
    let cookie = first
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no affinity cookie: {first:?}"))
        .to_string();
    assert!(
        cookie.starts_with(&format!("nimbus-version={version};")),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    for _ in 0..20 {
        let reply = server.get_with(&host, "/", &[("cookie", &pair)]).await;
        assert_eq!(reply.version(), version, "{reply:?}");
        assert!(reply.headers.get("set-cookie").is_none(), "{reply:?}");
    }

    // Once its version takes no traffic, the cookie no longer pins.
    let other = if version == "v1" { "v2" } else { "v1" };
    server
        .set_split("sticky", &format!("{other}=100,{version}=0"))
        .await;
    eventually(
        "the cookie stops pinning",
        Duration::from_secs(10),
        async || {
            let reply = server.get_with(&host, "/", &[("cookie", &pair)]).await;
            (reply.version() == other).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_rate_limits_and_size_limits() {
    let server = Server::start_with(&["--max-header-size", "8Ki"]).await;
    server.deploy("guarded", &[]).await;
    let host = Server::host("guarded");
    gateway_set(
        &server,
        "guarded",
        &[
            "--deny",
            "path=/admin",
            "--allow",
            "all",
            "--max-body",
            "1Ki",
            "--rate-per-ip",
            "8/h",
            "--burst-per-ip",
            "8",
        ],
    )
    .await;
    let http = client();
    let url = |path: &str| format!("http://{}{path}", server.gateway);

    // 403 from the rule, in the one error shape; it takes no token.
    let denied = server.get(&host, "/admin/users").await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.json()["error"]["code"], "forbidden", "{denied:?}");
    let allowed = server.get(&host, "/").await; // token 1
    assert_eq!(allowed.status, 200, "{allowed:?}");

    // 413: by content-length before anything is sent, and for a chunked body past the cap.
    let small = http
        .post(url("/upload"))
        .header("host", &host)
        .body(vec![b'x'; 1000])
        .send()
        .await
        .expect("small upload"); // token 2
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap_or_default(), "got 1000 bytes\n");
    let big = http
        .post(url("/upload"))
        .header("host", &host)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("big upload"); // token 3
    assert_eq!(big.status(), 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'y'; 512])).collect();
    let chunked = http
        .post(url("/upload"))
        .header("host", &host)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("chunked upload"); // token 4
    assert_eq!(chunked.status(), 413);
    let body: serde_json::Value = chunked.json().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    // 431: a request head bigger than --max-header-size, answered by the server itself.
    let huge = "h".repeat(10_000);
    let too_big = http
        .get(url("/"))
        .header("host", &host)
        .header("x-huge", huge)
        .send()
        .await
        .expect("huge header");
    assert_eq!(too_big.status(), 431);

    // 429 with Retry-After once the per-IP burst of 8 is spent.
    let mut limited = None;
    for _ in 0..10 {
        let reply = server.get(&host, "/").await;
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let limited = limited.expect("a 429 within 10 requests");
    assert_eq!(
        limited.json()["error"]["code"],
        "rate_limited",
        "{limited:?}"
    );
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry_after >= 1, "{limited:?}");

    // Lifting the limit takes effect without a restart.
    gateway_set(&server, "guarded", &["--rate-per-ip", "off"]).await;
    eventually("the limit is lifted", Duration::from_secs(10), async || {
        (server.get(&host, "/").await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_disconnected_and_ttfb_timeout_is_504() {
    let server = Server::start_with(&["--header-read-timeout", "1s"]).await;
    server.deploy("patient", &[]).await;
    let host = Server::host("patient");

    // Headers one byte every 200 ms: the connection is closed long before they are complete.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Padding: {}\r\n\r\n",
        "p".repeat(60)
    );
    let mut stream = tokio::net::TcpStream::connect(&server.gateway)
        .await
        .expect("connect");
    let mut closed = false;
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {} // an error response (408) before the close is fine
            Err(_) => {}    // nothing yet
        }
    }
    assert!(closed, "a slowloris connection was kept open");

    // An instance slower than the TTFB timeout: 504 with its own code; a fast one: 200.
    gateway_set(&server, "patient", &["--ttfb-timeout", "300ms"]).await;
    let slow = server.get(&host, "/slow?ms=3000").await;
    assert_eq!(slow.status, 504, "{slow:?}");
    assert_eq!(
        slow.json()["error"]["code"],
        "upstream_ttfb_timeout",
        "{slow:?}"
    );
    let fast = server.get(&host, "/slow?ms=10").await;
    assert_eq!(fast.status, 200, "{fast:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_lives_while_busy_and_closes_when_idle() {
    let server = Server::start().await;
    server.deploy("chat", &[]).await;
    gateway_set(&server, "chat", &["--ws-idle-timeout", "1s"]).await;
    let mut request = format!("ws://{}/ws", server.gateway)
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "host",
        Server::host("chat").parse().expect("host header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket handshake");

    // 3 s of traffic, a message every 250 ms: three idle timeouts long, never cut.
    for i in 0..12 {
        let text = format!("ping {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("stream open")
            .expect("message");
        assert_eq!(echoed.into_text().expect("text").as_str(), text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Then silence: the gateway closes the tunnel.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle tunnel was kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_instance_is_ejected_then_probed_back() {
    let server = Server::start().await;
    deploy_instances(&server, "eject", 2).await;
    let host = Server::host("eject");
    gateway_set(
        &server,
        "eject",
        &[
            "--lb",
            "round-robin",
            "--ttfb-timeout",
            "300ms",
            "--eject-after",
            "2",
            "--eject-for",
            "1s",
        ],
    )
    .await;
    let instances = server.instances("eject").await;
    let frozen = &instances[0];
    let pid = frozen["pid"].as_i64().expect("instance pid") as i32;
    let frozen_id = frozen["id"].as_str().expect("instance id").to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");

    // Round-robin sends every other request to the frozen instance until two of them time
    // out; from then on the healthy one takes everything.
    let mut failures = 0;
    for _ in 0..6 {
        let reply = server.get(&host, "/").await;
        if reply.status != 200 {
            assert_eq!(reply.status, 504, "{reply:?}");
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "ejected after 2 consecutive failures");
    let counts = spread(&server, &host, &[], 10).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert!(!counts.contains_key(&frozen_id), "{counts:?}");

    // Thawed, it gets traffic again once the ejection ends and its probe succeeds.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    eventually(
        "the thawed instance serves again",
        Duration::from_secs(20),
        async || {
            let counts = spread(&server, &host, &[], 4).await;
            counts.contains_key(&frozen_id).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_when_one_instance_dies() {
    let server = Server::start().await;
    deploy_instances(&server, "sturdy", 2).await;
    let host = Server::host("sturdy");
    gateway_set(&server, "sturdy", &["--lb", "round-robin"]).await;
    // Warm keep-alive connections to both.
    let counts = spread(&server, &host, &[], 4).await;
    assert_eq!(counts.len(), 2, "{counts:?}");

    let victim = &server.instances("sturdy").await[0];
    let pid = victim["pid"].as_i64().expect("instance pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    // Every request right after the death still succeeds: a failed connection (or a dead
    // pooled one, for a GET) is retried once on the other instance.
    for i in 0..30 {
        let reply = server.get(&host, "/").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_hung_instance_out_and_back() {
    let server = Server::start().await;
    deploy_instances(&server, "checked", 2).await;
    let host = Server::host("checked");
    gateway_set(
        &server,
        "checked",
        &[
            "--lb",
            "round-robin",
            "--health-check",
            "/",
            "--health-interval",
            "200ms",
            "--unhealthy-after",
            "2",
            "--healthy-after",
            "1",
        ],
    )
    .await;
    let instances = server.instances("checked").await;
    let pid = instances[0]["pid"].as_i64().expect("instance pid") as i32;
    let hung_id = instances[0]["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let events = async || {
        let (_, body) = server
            .api_get("/v1/namespaces/default/services/checked/events?limit=100")
            .await;
        common::items(&body, "events")
            .iter()
            .filter(|e| e["kind"] == "health")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };

    // Frozen: its checks time out, it leaves the rotation before any client request hits it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    eventually(
        "the hung instance is out",
        Duration::from_secs(20),
        async || {
            events()
                .await
                .iter()
                .any(|m| m.contains(&hung_id) && m.contains("out of rotation"))
                .then_some(())
        },
    )
    .await;
    let counts = spread(&server, &host, &[], 6).await;
    assert!(!counts.contains_key(&hung_id), "{counts:?}");

    // Thawed: one passed check brings it back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    eventually(
        "the instance is back",
        Duration::from_secs(20),
        async || {
            let counts = spread(&server, &host, &[], 4).await;
            counts.contains_key(&hung_id).then_some(())
        },
    )
    .await;
    assert!(
        events()
            .await
            .iter()
            .any(|m| m.contains("back in rotation")),
        "{:?}",
        events().await
    );
}
