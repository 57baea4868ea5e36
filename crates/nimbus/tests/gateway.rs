//! The gateway as a client sees it: host routing, custom domains, unknown hosts, forwarded
//! headers, streaming and WebSockets.

mod common;

use std::time::{Duration, Instant};

use common::{error_of, eventually, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_404_json() {
    let server = Server::start().await;
    for host in [
        "nope.example.com",
        "ghost--default.nimbus.localhost",
        "v1--ghost--default.nimbus.localhost",
    ] {
        let reply = server.get(host, "/").await;
        assert_eq!(reply.status, 404, "{host}: {reply:?}");
        let body = reply.json();
        assert_eq!(body["error"]["code"], "unknown_host", "{host}: {body}");
        assert!(body["error"]["message"].is_string(), "{host}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domain_routes_conflicts_and_is_removed() {
    let server = Server::start().await;
    server.deploy("alpha", &[]).await;
    server.deploy("bravo", &[]).await;
    let domain = "www.example.test";

    server.cli_ok(&["domains", "add", "alpha", domain]).await;
    let reply = server.get(domain, "/").await;
    assert_eq!(
        reply.who(),
        Some(("alpha".into(), "v1".into())),
        "{reply:?}"
    );
    // Case and port in Host do not matter.
    let reply = server.get("WWW.Example.Test:8000", "/").await;
    assert_eq!(
        reply.who(),
        Some(("alpha".into(), "v1".into())),
        "{reply:?}"
    );

    let listed = server.cli_ok(&["domains"]).await;
    assert!(listed.stdout.contains(domain), "{listed}");
    let show = server
        .cli_ok(&["-o", "json", "service", "show", "alpha"])
        .await
        .json();
    assert_eq!(show["domains"], json!([domain]), "{show}");

    // The same host for another service: 409 naming the owner, and nothing changes.
    let (status, body) = server
        .api_post(
            "/v1/domains",
            &json!({"host": domain, "namespace": "default", "service": "bravo"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let err = error_of(&body);
    assert!(
        err["message"].as_str().is_some_and(|m| m.contains("alpha")),
        "409 should name the owner: {body}"
    );
    let out = server.cli(&["domains", "add", "bravo", domain]).await;
    assert!(!out.success(), "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("alpha"),
        "{out}"
    );
    assert_eq!(
        server.get(domain, "/").await.who(),
        Some(("alpha".into(), "v1".into()))
    );

    server.cli_ok(&["domains", "remove", domain]).await;
    let reply = server.get(domain, "/").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "unknown_host");
    let show = server
        .cli_ok(&["-o", "json", "service", "show", "alpha"])
        .await
        .json();
    assert_eq!(show["domains"], json!([]), "{show}");

    // Freed, it can go to the other service.
    server.cli_ok(&["domains", "add", "bravo", domain]).await;
    assert_eq!(
        server.get(domain, "/").await.who(),
        Some(("bravo".into(), "v1".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_gets_one_json_line_per_request_and_keeps_them_at_shutdown() {
    let dir = std::env::temp_dir().join(format!("nimbus-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("access.log");
    let mut server = Server::start_with(&["--access-log", &path.to_string_lossy()]).await;
    server.deploy("logged", &[]).await;
    let host = Server::host("logged");
    let read_lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    };
    let mut ids = Vec::new();
    for path in ["/", "/headers", "/nope"] {
        let reply = server
            .get_with(&host, path, &[("x-request-id", &format!("log-{path}"))])
            .await;
        ids.push(
            reply.headers["x-request-id"]
                .to_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    // Lines reach the file within about a second of the request, not only at shutdown.
    let lines = eventually(
        "the access log has the three requests",
        Duration::from_secs(10),
        async || {
            let lines = read_lines();
            ids.iter()
                .all(|id| lines.iter().any(|l| l["request_id"] == id.as_str()))
                .then_some(lines)
        },
    )
    .await;
    let first = lines
        .iter()
        .find(|l| l["request_id"] == "log-/")
        .expect("the first request's line");
    assert_eq!(first["service"], "logged", "{first}");
    assert_eq!(first["namespace"], "default", "{first}");
    assert_eq!(first["version"], "v1", "{first}");
    assert_eq!(first["host"], host, "{first}");
    assert_eq!(first["method"], "GET", "{first}");
    assert_eq!(first["path"], "/", "{first}");
    assert_eq!(first["status"], 200, "{first}");
    assert!(
        first["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{first}"
    );
    assert!(first["bytes"].as_u64().is_some_and(|b| b > 0), "{first}");
    assert!(first["duration_ms"].as_f64().is_some(), "{first}");
    assert!(first["upstream_ms"].as_f64().is_some(), "{first}");
    assert!(first["time_ms"].as_u64().is_some(), "{first}");

    // A request just before a graceful stop is in the file once the server has exited.
    server
        .get_with(&host, "/", &[("x-request-id", "log-last")])
        .await;
    assert!(server.sigterm().await.success());
    assert!(
        read_lines().iter().any(|l| l["request_id"] == "log-last"),
        "the last line is written at shutdown"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_access_log_that_logrotate_moved_away() {
    let dir = std::env::temp_dir().join(format!("nimbus-access-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let mut server = Server::start_with(&["--access-log", &path.to_string_lossy()]).await;
    server.deploy("rotated", &[]).await;
    let host = Server::host("rotated");
    let ids_in = |file: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|line| line["request_id"].as_str().map(str::to_string))
            .collect()
    };
    server
        .get_with(&host, "/", &[("x-request-id", "before-rotation")])
        .await;
    eventually(
        "the first line is in the file",
        Duration::from_secs(10),
        async || {
            ids_in(&path)
                .contains(&"before-rotation".to_string())
                .then_some(())
        },
    )
    .await;

    // logrotate: move the file, then `kill -HUP`. The server lives on and starts a new file.
    std::fs::rename(&path, &rotated).expect("rotate the log");
    server.sighup();
    let mut sent = vec!["before-rotation".to_string()];
    let attempts = std::sync::Mutex::new(0);
    eventually(
        "lines after the SIGHUP land in a new file at the old path",
        Duration::from_secs(15),
        async || {
            let id = {
                let mut n = attempts.lock().unwrap();
                *n += 1;
                format!("after-rotation-{n}")
            };
            let reply = server.get_with(&host, "/", &[("x-request-id", &id)]).await;
            assert_eq!(reply.status, 200, "the server still serves after SIGHUP");
            tokio::time::sleep(Duration::from_millis(200)).await;
            (!ids_in(&path).is_empty()).then_some(())
        },
    )
    .await;
    let after = *attempts.lock().unwrap();
    sent.extend((1..=after).map(|n| format!("after-rotation-{n}")));
    assert!(server.sigterm().await.success());

    let old = ids_in(&rotated);
    let new = ids_in(&path);
    assert!(old.contains(&"before-rotation".to_string()), "{old:?}");
    assert!(!new.contains(&"before-rotation".to_string()), "{new:?}");
    for id in &sent {
        assert_eq!(
            old.iter()
                .chain(&new)
                .filter(|logged| *logged == id)
                .count(),
            1,
            "{id} is logged exactly once across both files: old {old:?}, new {new:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_nobody_reads_never_stops_traffic() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    // The access log is a FIFO whose reader is open but stalled (a hung `tail`, a full pipe to
    // a log shipper): the pipe fills after 64 KiB of lines. Requests must still be answered.
    let dir = std::env::temp_dir().join(format!("nimbus-access-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO's read end");
    let server = Server::start_with(&["--access-log", &fifo.to_string_lossy()]).await;
    server.deploy("piped", &["--min-instances", "1"]).await;
    let host = Server::host("piped");
    const REQUESTS: usize = 1500; // about 500 KB of lines, eight pipes' worth
    let answered = tokio::time::timeout(Duration::from_secs(120), async {
        for n in 0..REQUESTS {
            let id = format!("fifo-{n}");
            let reply = server.get_with(&host, "/", &[("x-request-id", &id)]).await;
            assert_eq!(reply.status, 200, "request {n}: {reply:?}");
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "requests stopped being answered while the access log's pipe was full"
    );

    // Once the reader catches up, every line arrives, in order.
    // The read end is non-blocking: a read with nothing in the pipe returns at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while Instant::now() < deadline && text.iter().filter(|b| **b == b'\n').count() < REQUESTS {
        match reader.read(&mut chunk) {
            Ok(n) if n > 0 => text.extend_from_slice(&chunk[..n]),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let lines = String::from_utf8_lossy(&text);
    let ids: Vec<String> = lines
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            line["request_id"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let expected: Vec<String> = (0..REQUESTS).map(|n| format!("fifo-{n}")).collect();
    assert_eq!(ids, expected, "every request's line, in order");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id_reach_the_app() {
    let server = Server::start().await;
    server.deploy("hdr", &[]).await;
    let host = Server::host("hdr");

    let seen = server.get(&host, "/headers").await.json();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert!(
        seen["x-forwarded-host"]
            .as_str()
            .is_some_and(|h| h.starts_with(&host)),
        "{seen}"
    );
    let id = seen["x-request-id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "gateway should add x-request-id: {seen}");
    let again = server.get(&host, "/headers").await.json();
    assert_ne!(
        again["x-request-id"], seen["x-request-id"],
        "request ids should differ"
    );

    let seen = server
        .get_with(&host, "/headers", &[("x-request-id", "abc-123")])
        .await
        .json();
    assert_eq!(
        seen["x-request-id"], "abc-123",
        "a client's request id is kept: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_incrementally() {
    let server = Server::start().await;
    server.deploy("streamer", &[]).await;
    let host = Server::host("streamer");
    // Warm up the route so the measurement is about streaming, not the first connection.
    assert_eq!(server.get(&host, "/").await.status, 200);

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut resp = client
        .get(format!(
            "http://{}/stream?chunks=5&delay_ms=300",
            server.gateway
        ))
        .header(reqwest::header::HOST, &host)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    let mut first = None;
    for _ in 0..100 {
        match resp.chunk().await.expect("read chunk") {
            Some(chunk) => {
                if first.is_none() && !chunk.is_empty() {
                    first = Some(started.elapsed());
                }
                body.push_str(&String::from_utf8_lossy(&chunk));
            }
            None => break,
        }
    }
    let total = started.elapsed();
    let first = first.expect("no data at all");
    assert_eq!(
        body, "chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n",
        "whole body should arrive"
    );
    assert!(
        first < Duration::from_millis(1000),
        "first chunk after {first:?}; the gateway should not buffer the body"
    );
    assert!(
        total >= Duration::from_millis(1200),
        "whole body in {total:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_gateway() {
    let server = Server::start().await;
    server.deploy("sock", &[]).await;
    let host = Server::host("sock");

    let mut request = format!("ws://{}/ws", server.gateway)
        .into_client_request()
        .expect("ws request");
    request
        .headers_mut()
        .insert("host", host.parse().expect("host header value"));
    let tcp = tokio::net::TcpStream::connect(&server.gateway)
        .await
        .expect("connect to gateway");
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, tcp),
    )
    .await
    .expect("handshake timed out")
    .expect("websocket handshake through the gateway");
    assert_eq!(response.status(), 101);

    for i in 0..5 {
        let text = format!("ping {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo timed out")
            .expect("stream ended")
            .expect("read");
        assert_eq!(echo, Message::text(text));
    }
    let payload = vec![0u8, 1, 2, 255];
    ws.send(Message::binary(payload.clone()))
        .await
        .expect("send binary");
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo timed out")
        .expect("stream ended")
        .expect("read");
    assert_eq!(echo, Message::binary(payload));
    ws.close(None).await.expect("close");
}

/// The gateway runs on threads of its own: with one worker thread, an API write stuck on a
/// locked store (SQLite waits up to 5 s for the lock, on the control plane's thread) holds up
/// no traffic — requests are answered while the write still waits, and the write lands once
/// the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_while_the_control_plane_waits_on_the_store() {
    let server = Server::start_with(&["--worker-threads", "1"]).await;
    server.deploy("steady", &[]).await;
    let host = Server::host("steady");
    server.wait_served_by(&host, "/", "v1").await;

    // Another process holding the write lock, as a backup or a stray sqlite3 shell might.
    let db = rusqlite::Connection::open(server.data.join("nimbus.db")).expect("open the store");
    db.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the store's write lock");
    let domain =
        json!({"host": "steady.example.test", "namespace": "default", "service": "steady"});
    let write = server.api_post("/v1/domains", &domain);
    tokio::pin!(write);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut write).await;
    assert!(
        early.is_err(),
        "the write should wait for the lock: {early:?}"
    );

    for _ in 0..20 {
        let reply = server.get(&host, "/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.version(), "v1", "{reply:?}");
    }
    let still = tokio::time::timeout(Duration::from_millis(10), &mut write).await;
    assert!(
        still.is_err(),
        "the gateway's requests were answered only after the write gave up: {still:?}"
    );

    db.execute_batch("COMMIT").expect("release the lock");
    let (status, body) = write.await;
    assert_eq!(status, 201, "{body}");
    let reply = server.get("steady.example.test", "/").await;
    assert_eq!(reply.version(), "v1", "{reply:?}");
}
