//! Traffic policy through the gateway: percent splits, query and header rules, `--explain`, and
//! shifting traffic under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Server};
use serde_json::json;

/// Deploys `service` v1 (taking traffic) plus `extra` more versions with `--no-traffic`.
async fn service_with_versions(server: &Server, service: &str, extra: usize) {
    server.deploy(service, &[]).await;
    for _ in 0..extra {
        server.deploy(service, &["--no-traffic"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_90_10_holds_over_1000_requests() {
    let server = Server::start().await;
    service_with_versions(&server, "split", 1).await;
    server.set_split("split", "v1=90,v2=10").await;
    let host = Server::host("split");
    // The gateway picks up the new policy.
    server.wait_served_by(&host, "/", "v2").await;

    let total = 1000;
    let mut v1 = 0;
    let mut v2 = 0;
    for _ in 0..total / 4 {
        let replies = futures_util::future::join_all((0..4).map(|_| server.get(&host, "/"))).await;
        for reply in replies {
            match reply.version().as_str() {
                "v1" => v1 += 1,
                "v2" => v2 += 1,
                other => panic!("unexpected version {other}"),
            }
        }
    }
    assert_eq!(v1 + v2, total);
    let share = v1 as f64 / total as f64;
    assert!(
        (0.85..=0.95).contains(&share),
        "v1 got {v1} of {total} requests ({:.1}%), want 85-95%",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_header_rules_route_and_explain_names_the_rule() {
    let server = Server::start().await;
    service_with_versions(&server, "gray", 1).await;
    let host = Server::host("gray");

    server
        .cli_ok(&["traffic", "gray", "--route-query", "env=beta:v2"])
        .await;
    server
        .cli_ok(&["traffic", "gray", "--route-header", "x-canary=1:v2"])
        .await;
    let policy = server
        .api_ok("/v1/namespaces/default/services/gray/traffic")
        .await;
    assert_eq!(
        policy["rules"],
        json!([
            {"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v2"},
            {"match": {"source": "header", "name": "x-canary", "value": "1"}, "version": "v2"},
        ]),
        "{policy}"
    );
    assert_eq!(
        policy["split"],
        json!([{"version": "v1", "percent": 100}]),
        "{policy}"
    );

    server.wait_served_by(&host, "/?env=beta", "v2").await;
    for _ in 0..10 {
        assert_eq!(server.get(&host, "/?env=beta").await.version(), "v2");
        assert_eq!(server.get(&host, "/?x=1&env=beta").await.version(), "v2");
        assert_eq!(
            server
                .get_with(&host, "/", &[("x-canary", "1")])
                .await
                .version(),
            "v2"
        );
        // Not matching: the split (v1=100) decides.
        assert_eq!(server.get(&host, "/?env=alpha").await.version(), "v1");
        assert_eq!(server.get(&host, "/").await.version(), "v1");
        assert_eq!(
            server
                .get_with(&host, "/", &[("x-canary", "0")])
                .await
                .version(),
            "v1"
        );
    }

    // --explain names the rule that matches.
    let url = format!("http://{host}/?env=beta");
    let out = server.cli_ok(&["traffic", "gray", "--explain", &url]).await;
    assert!(out.stdout.contains("rule 1"), "{out}");
    assert!(out.stdout.contains("env=beta"), "{out}");
    assert!(out.stdout.contains("v2"), "{out}");
    let url = format!("http://{host}/");
    let out = server
        .cli_ok(&[
            "traffic",
            "gray",
            "--explain",
            &url,
            "-H", // as with curl, a space after the colon is fine
            "x-canary: 1",
        ])
        .await;
    assert!(out.stdout.contains("rule 2"), "{out}");
    assert!(out.stdout.contains("x-canary=1"), "{out}");
    let out = server.cli_ok(&["traffic", "gray", "--explain", &url]).await;
    assert!(
        out.stdout.contains("split"),
        "no rule matches, the split decides:\n{out}"
    );

    let (status, explain) = server
        .api_post(
            "/v1/namespaces/default/services/gray/traffic/explain",
            &json!({"url": format!("http://{host}/"), "headers": {"x-canary": "1"}}),
        )
        .await;
    assert_eq!(status, 200, "{explain}");
    assert_eq!(explain["version"], "v2", "{explain}");
    assert_eq!(explain["rule"], 2, "{explain}");

    // --clear-routes leaves only the split.
    server.cli_ok(&["traffic", "gray", "--clear-routes"]).await;
    server.wait_served_by(&host, "/?env=beta", "v1").await;
    assert_eq!(
        server
            .get_with(&host, "/", &[("x-canary", "1")])
            .await
            .version(),
        "v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_shift_under_load_fails_no_request() {
    let server = Arc::new(Server::start().await);
    service_with_versions(&server, "shift", 1).await;
    let host = Server::host("shift");

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let server = Arc::clone(&server);
        let stop = Arc::clone(&stop);
        let host = host.clone();
        clients.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            // Bounded by count and time, whatever the shifts do.
            for _ in 0..300 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                match server.try_get_with(&host, "/", &[]).await {
                    Ok(reply) if reply.status == 200 => match reply.who() {
                        Some((_, version)) => seen.push(version),
                        None => failures.push(format!("odd body: {:?}", reply.body)),
                    },
                    Ok(reply) => {
                        failures.push(format!("status {}: {:?}", reply.status, reply.body))
                    }
                    Err(e) => failures.push(format!("transport: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            (seen, failures)
        }));
    }

    tokio::time::sleep(Duration::from_millis(600)).await;
    server.set_split("shift", "v1=50,v2=50").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.set_split("shift", "v2=100").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);

    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for client in clients {
        let (s, f) = client.await.expect("client task");
        seen.extend(s);
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(seen.len() >= 100, "only {} requests completed", seen.len());
    assert!(seen.iter().any(|v| v == "v1"), "v1 never answered");
    assert!(seen.iter().any(|v| v == "v2"), "v2 never answered");

    // Once the shift has landed, v2 takes everything.
    server.wait_served_by(&host, "/", "v2").await;
    eventually(
        "v2 takes all traffic",
        Duration::from_secs(10),
        async || {
            for _ in 0..20 {
                if server.get(&host, "/").await.version() != "v2" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}
