//! Metering, metrics and logs through the real binary: CPU-seconds and egress bytes billed as
//! used, nothing accrued at zero, usage kept across a restart without double counting,
//! `/metrics` parsed by a real Prometheus (OpenMetrics) parser, `logs -f` following, events.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{eventually, Server};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Sample every 200 ms so usage lands in the store quickly.
const METER: &[&str] = &[
    "--meter-interval",
    "0.2",
    "--scale-stable-window",
    "2",
    "--scale-panic-window",
    "1",
    "--scale-tick",
    "0.25",
    "--scale-down-delay",
    "0",
];

async fn usage_of(server: &Server, service: &str) -> Value {
    let body = server
        .api_ok(&format!("/v1/usage?service={service}&since=1h&by=service"))
        .await;
    body["total"]["usage"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_burn_is_billed_and_survives_a_restart() {
    let mut server = Server::start_with(METER).await;
    server.deploy("burn", &["--min-instances", "1"]).await;
    let host = Server::host("burn");
    let before = usage_of(&server, "burn").await["cpu_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    // 2 s of CPU time, however long that takes on a busy machine.
    let reply = server.get(&host, "/burn?ms=2000").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("true"), "{reply:?}");
    let billed = eventually("the burn is metered", Duration::from_secs(20), async || {
        let cpu = usage_of(&server, "burn").await["cpu_seconds"].as_f64()?;
        (cpu - before >= 1.8).then_some(cpu - before)
    })
    .await;
    // Let one more sample land, then check the total is not still growing past the burn.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let billed_after = usage_of(&server, "burn").await["cpu_seconds"]
        .as_f64()
        .unwrap_or(0.0)
        - before;
    // ±10%, plus up to 10 ms of tick rounding in the app's own stop condition.
    assert!(
        (1.8..=2.21).contains(&billed_after),
        "2 s of CPU billed as {billed_after:.3} s (first seen {billed:.3})"
    );

    // A restart neither loses nor double-counts what was metered.
    let cpu_before_restart = usage_of(&server, "burn").await["cpu_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    server.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let cpu_after_restart = usage_of(&server, "burn").await["cpu_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        cpu_after_restart >= cpu_before_restart - 0.01
            && cpu_after_restart <= cpu_before_restart + 0.15,
        "usage across a restart: {cpu_before_restart:.3} → {cpu_after_restart:.3}"
    );

    // The CLI shows it with a cost.
    let out = server.cli_ok(&["usage", "--service", "burn"]).await;
    assert!(
        out.stdout.contains("burn") && out.stdout.contains("TOTAL"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_is_the_exact_bytes_sent() {
    let server = Server::start_with(METER).await;
    server.deploy("bytes", &["--min-instances", "1"]).await;
    let host = Server::host("bytes");
    for _ in 0..5 {
        let reply = server.get(&host, "/bytes?n=12345").await;
        assert_eq!(reply.body.len(), 12345);
    }
    eventually("egress metered", Duration::from_secs(10), async || {
        let usage = usage_of(&server, "bytes").await;
        (usage["egress_bytes"] == 5 * 12345 && usage["requests"] == 5).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_at_zero_accrues_nothing() {
    let server = Server::start_with(METER).await;
    server
        .deploy(
            "nap",
            &["--min-instances", "0", "--scale-to-zero-after", "1"],
        )
        .await;
    eventually("nap at zero", Duration::from_secs(30), async || {
        (server.instances("nap").await.is_empty() && server.live_app_processes(Some("nap")) == 0)
            .then_some(())
    })
    .await;
    // Let the last samples of the stopped instance land.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = usage_of(&server, "nap").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = usage_of(&server, "nap").await;
    assert_eq!(before, after, "nothing accrues at zero");
}

/// Parses OpenMetrics text with the Python `prometheus_client` parser; returns family names.
fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
for family in parse(sys.stdin.read()):\n    print(family.name)\n";
    let run = |input: &str| -> std::io::Result<std::process::Output> {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())?;
        child.wait_with_output()
    };
    let mut output = run(text).expect("run python3");
    if String::from_utf8_lossy(&output.stderr).contains("No module named") {
        let installed = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "-q", "prometheus_client"])
            .status()
            .expect("run pip");
        assert!(installed.success(), "pip install prometheus_client failed");
        output = run(text).expect("run python3");
    }
    assert!(
        output.status.success(),
        "prometheus_client rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_requests() {
    let server = Server::start_with(METER).await;
    server.deploy("metrics", &["--min-instances", "1"]).await;
    let host = Server::host("metrics");
    for _ in 0..3 {
        assert_eq!(server.get(&host, "/").await.status, 200);
    }
    // Loopback needs no token.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // A request is counted when the gateway has sent its body's end, which can be a moment
    // after the client has read it.
    let (text, line) = eventually("3 requests counted", Duration::from_secs(5), async || {
        let text = http
            .get(format!("{}/metrics", server.api))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("nimbus_requests_total")
                    && l.contains("service=\"metrics\"")
                    && l.contains("status=\"200\"")
            })?
            .to_string();
        line.ends_with(" 3").then_some((text, line))
    })
    .await;
    let families = parse_with_prometheus_client(&text);
    for family in [
        "nimbus_requests",
        "nimbus_request_duration_seconds",
        "nimbus_instances",
        "nimbus_inflight_requests",
        "nimbus_queued_requests",
        "nimbus_cold_starts",
        "nimbus_cold_start_seconds",
    ] {
        assert!(
            families.iter().any(|f| f == family),
            "{family} missing from {families:?}"
        );
    }
    assert!(line.starts_with("nimbus_requests_total{"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_a_new_line_quickly() {
    let server = Server::start_with(METER).await;
    server.deploy("chatty", &["--min-instances", "1"]).await;
    let mut follow = tokio::process::Command::new(common::nimbus_bin())
        .args(["logs", "chatty", "-f", "--grep", "marker-"])
        .env("NIMBUS_API", &server.api)
        .env("NIMBUS_TOKEN", &server.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nimbus logs -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = Instant::now();
    let reply = server
        .get(&Server::host("chatty"), "/log?msg=marker-42")
        .await;
    assert_eq!(reply.status, 200);
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("marker-42") {
                return Some(written.elapsed());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("logs -f never showed the line");
    // The follow loop polls every 250 ms; allow for a loaded machine.
    assert!(seen < Duration::from_secs(2), "took {seen:?}");
    let _ = follow.kill().await;

    let events = server
        .api_ok("/v1/namespaces/default/services/chatty/events")
        .await;
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "deploy")),
        "{events}"
    );
}
