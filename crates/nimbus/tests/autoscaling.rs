//! Autoscaling through the real binary: scale to zero and back, one cold start per burst, the
//! per-instance concurrency limit, scale up under load and back down without errors, the queue
//! limit, max instances, and scheduled minimums. The server runs with short windows so each test
//! takes seconds, not minutes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{eventually, Server};
use futures_util::future::join_all;
use serde_json::Value;

/// Stable window 3 s, panic window 1 s, a decision every 250 ms, scale down after 1 s.
const FAST: &[&str] = &[
    "--scale-stable-window",
    "3",
    "--scale-panic-window",
    "1",
    "--scale-tick",
    "0.25",
    "--scale-down-delay",
    "1",
];

async fn version(server: &Server, service: &str, name: &str) -> Value {
    server
        .versions(service)
        .await
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{service} has no version {name}"))
}

/// Instances of `service` the server reports (starting, ready or draining).
async fn instance_count(server: &Server, service: &str) -> usize {
    server.instances(service).await.len()
}

async fn events(server: &Server, service: &str) -> Vec<Value> {
    let body = server
        .api_ok(&format!(
            "/v1/namespaces/default/services/{service}/events?limit=1000"
        ))
        .await;
    body["events"].as_array().cloned().unwrap_or_default()
}

fn count_kind(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

/// `slow N inflight=K instance=ID` → (K, ID).
fn slow_report(body: &str) -> Option<(usize, String)> {
    let mut inflight = None;
    let mut instance = None;
    for word in body.split_whitespace() {
        if let Some(k) = word.strip_prefix("inflight=") {
            inflight = k.parse().ok();
        }
        if let Some(id) = word.strip_prefix("instance=") {
            instance = Some(id.to_string());
        }
    }
    Some((inflight?, instance?))
}

async fn wait_scaled_to_zero(server: &Server, service: &str) {
    eventually(
        &format!("{service} scaled to zero"),
        Duration::from_secs(30),
        async || {
            let v = version(server, service, "v1").await;
            let idle = v["status"] == "idle" && v["desired_instances"] == 0;
            (idle
                && instance_count(server, service).await == 0
                && server.live_app_processes(Some(service)) == 0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_service_scales_to_zero_and_the_next_request_cold_starts() {
    let server = Server::start_with(FAST).await;
    server
        .deploy(
            "idle",
            &["--min-instances", "0", "--scale-to-zero-after", "1"],
        )
        .await;
    let host = Server::host("idle");
    assert_eq!(server.get(&host, "/").await.status, 200);

    wait_scaled_to_zero(&server, "idle").await;
    let v = version(&server, "idle", "v1").await;
    assert_eq!(v["scaling_reason"], "zero", "{v}");

    // The activator holds the request while an instance starts; the caller just gets an answer.
    let reply = server.get(&host, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.version(), "v1");
    let v = version(&server, "idle", "v1").await;
    assert_eq!(v["cold_starts"], 1, "{v}");
    assert!(v["last_cold_start_ms"].as_u64().is_some(), "{v}");

    let events = events(&server, "idle").await;
    assert_eq!(count_kind(&events, "cold_start"), 1, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "scale"
                && e["message"].as_str().is_some_and(|m| m.contains("→ 0"))),
        "a scale-to-zero decision is in the timeline: {events:?}"
    );
    // And the CLI shows the same timeline.
    let out = server.cli_ok(&["events", "idle"]).await;
    assert!(out.stdout.contains("cold_start"), "{out}");
    assert!(out.stdout.contains("scale"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_listens_fails_its_deploy_instead_of_scaling_to_zero() {
    let mut args = FAST.to_vec();
    args.extend(["--startup-timeout", "6s"]);
    let server = Server::start_with(&args).await;
    // Idle windows far shorter than the startup deadline: the one starting instance must be
    // kept until it is ready or has failed, not scaled away with the deploy reported "idle".
    let started = Instant::now();
    let out = server
        .cli(&[
            "deploy",
            "mute",
            "--command",
            "echo starting; exec sleep 600",
            "--scale-to-zero-after",
            "1",
        ])
        .await;
    assert!(!out.success(), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(6), "{out}");
    assert!(out.stdout.contains("did not become ready"), "{out}");
    assert!(out.stdout.contains("PORT="), "{out}");
    assert!(out.stdout.contains("starting"), "the last log lines: {out}");
    let v = version(&server, "mute", "v1").await;
    assert_eq!(v["status"], "failed", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_first_requests_shares_one_cold_start() {
    let server = Server::start_with(FAST).await;
    server
        .deploy(
            "burst",
            &[
                "--min-instances",
                "0",
                "--concurrency",
                "80",
                "--scale-to-zero-after",
                "1",
            ],
        )
        .await;
    wait_scaled_to_zero(&server, "burst").await;
    let before = count_kind(&events(&server, "burst").await, "cold_start");

    let host = Server::host("burst");
    let replies = join_all((0..20).map(|_| server.try_get_with(&host, "/slow?ms=300", &[]))).await;
    let mut instances = BTreeSet::new();
    for reply in &replies {
        let reply = reply.as_ref().expect("request failed");
        assert_eq!(reply.status, 200, "{reply:?}");
        let (_, instance) = slow_report(&reply.body).expect("slow report");
        instances.insert(instance);
    }
    assert_eq!(
        instances.len(),
        1,
        "one instance served the burst: {instances:?}"
    );
    let after = count_kind(&events(&server, "burst").await, "cold_start");
    assert_eq!(after - before, 1, "one cold start for the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_never_overlaps_and_max_is_respected() {
    let server = Server::start_with(FAST).await;
    server
        .deploy(
            "single",
            &[
                "--min-instances",
                "1",
                "--max-instances",
                "3",
                "--concurrency",
                "1",
            ],
        )
        .await;
    let host = Server::host("single");
    let watching = Arc::new(AtomicBool::new(true));
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (watching, most) = (watching.clone(), most.clone());
        let api = server.api.clone();
        let token = server.token.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while watching.load(Ordering::SeqCst) {
                let url = format!("{api}/v1/instances?namespace=default&service=single");
                if let Ok(resp) = http.get(&url).bearer_auth(&token).send().await {
                    if let Ok(body) = resp.json::<Value>().await {
                        let n = body["instances"]
                            .as_array()
                            .map_or(0, |a| a.iter().filter(|i| i["state"] != "draining").count());
                        most.fetch_max(n, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // 12 requests at once on a version of at most 3 single-request instances: each instance
    // gets one at a time, the rest wait in the queue.
    let replies = join_all((0..12).map(|_| server.try_get_with(&host, "/slow?ms=300", &[]))).await;
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.await;
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    for reply in &replies {
        let reply = reply.as_ref().expect("request failed");
        assert_eq!(reply.status, 200, "{reply:?}");
        let (inflight, instance) = slow_report(&reply.body).expect("slow report");
        assert_eq!(
            inflight, 1,
            "an instance got two requests at once: {}",
            reply.body
        );
        *per_instance.entry(instance).or_default() += 1;
    }
    assert!(
        per_instance.len() <= 3,
        "more instances than max: {per_instance:?}"
    );
    assert!(
        most.load(Ordering::SeqCst) <= 3,
        "saw {} instances, max is 3",
        most.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_scales_up_then_back_down_without_errors() {
    let server = Server::start_with(FAST).await;
    // Capacity of one instance: 2 requests; target 1.4.
    server
        .deploy(
            "load",
            &[
                "--min-instances",
                "1",
                "--max-instances",
                "4",
                "--concurrency",
                "2",
            ],
        )
        .await;
    let host = Server::host("load");
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(6);
    // 8 clients in a loop = 4x one instance's capacity, for 6 s (bounded: 200 requests each).
    let clients = (0..8).map(|_| {
        let (failures, served) = (failures.clone(), served.clone());
        let server = &server;
        let host = host.clone();
        async move {
            for _ in 0..200 {
                if Instant::now() >= stop_at {
                    break;
                }
                match server.try_get_with(&host, "/slow?ms=100", &[]).await {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::SeqCst),
                    _ => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }
    });
    let watch = async {
        while Instant::now() < stop_at {
            let n = instance_count(&server, "load").await;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::join!(join_all(clients), watch);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "failed requests under load"
    );
    assert!(served.load(Ordering::SeqCst) > 50, "load actually ran");
    let most = most.load(Ordering::SeqCst);
    assert!(most >= 3, "scaled to only {most} instances under 4x load");
    assert!(most <= 4, "exceeded max instances: {most}");

    // Load stops: back to min (1), and no request fails while instances drain.
    let during_scale_down = async {
        let mut failed = 0;
        for _ in 0..40 {
            if server
                .try_get_with(&host, "/", &[])
                .await
                .map(|r| r.status)
                .unwrap_or(0)
                != 200
            {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        failed
    };
    let settle = eventually(
        "load back to one instance",
        Duration::from_secs(30),
        async || {
            let v = version(&server, "load", "v1").await;
            (v["desired_instances"] == 1 && instance_count(&server, "load").await == 1)
                .then_some(())
        },
    );
    let (failed, ()) = tokio::join!(during_scale_down, settle);
    assert_eq!(failed, 0, "requests failed during scale-down");
    let events = events(&server, "load").await;
    assert!(count_kind(&events, "scale") >= 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gets_503_with_retry_after() {
    let server = Server::start_with(FAST).await;
    server
        .deploy(
            "queue",
            &[
                "--min-instances",
                "1",
                "--max-instances",
                "1",
                "--concurrency",
                "1",
                "--queue-depth",
                "1",
            ],
        )
        .await;
    let host = Server::host("queue");
    let replies = join_all((0..4).map(|_| server.try_get_with(&host, "/slow?ms=1000", &[]))).await;
    let mut ok = 0;
    let mut rejected = 0;
    for reply in &replies {
        let reply = reply.as_ref().expect("request failed");
        match reply.status {
            200 => ok += 1,
            503 => {
                rejected += 1;
                assert!(reply.headers.contains_key("retry-after"), "{reply:?}");
                assert_eq!(reply.json()["error"]["code"], "queue_full", "{reply:?}");
            }
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    }
    assert_eq!(
        (ok, rejected),
        (2, 2),
        "one served, one queued, two rejected"
    );
}

/// `S M H * * *` a few seconds from now, in UTC (the test server runs with TZ=UTC).
fn cron_in(seconds: u64) -> String {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + seconds;
    let day = at % 86_400;
    format!("{} {} {} * * *", day % 60, (day / 60) % 60, day / 3600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_raises_min_at_its_time() {
    let server = Server::start_with(FAST).await;
    server
        .deploy("sched", &["--min-instances", "1", "--max-instances", "5"])
        .await;

    // Bad input is refused with the field named, and nothing is stored.
    let (status, body) = server
        .api_post(
            "/v1/namespaces/default/services/sched/schedules",
            &serde_json::json!({"cron": "61 * * * *", "min_instances": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "cron", "{body}");
    let out = server
        .cli(&[
            "scaling",
            "schedule",
            "add",
            "sched",
            "--cron",
            "* * * * *",
            "--min",
            "9",
            "--max",
            "2",
        ])
        .await;
    assert!(!out.success(), "min above max must be refused: {out}");
    let listed = server
        .api_ok("/v1/namespaces/default/services/sched/schedules")
        .await;
    assert_eq!(
        listed["schedules"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    let cron = cron_in(4);
    server
        .cli_ok(&[
            "scaling",
            "schedule",
            "add",
            "sched",
            "--cron",
            &cron,
            "--min",
            "3",
            "--duration",
            "600",
        ])
        .await;
    let out = server
        .cli_ok(&["scaling", "schedule", "list", "sched"])
        .await;
    assert!(out.stdout.contains(&cron), "{out}");

    // Before its time nothing changes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        version(&server, "sched", "v1").await["desired_instances"],
        1
    );

    eventually(
        "schedule raises the minimum to 3",
        Duration::from_secs(20),
        async || {
            let v = version(&server, "sched", "v1").await;
            (v["desired_instances"] == 3
                && v["scaling_reason"] == "schedule"
                && v["ready_instances"] == 3)
                .then_some(())
        },
    )
    .await;

    // Survives a restart: stored in SQLite.
    let mut server = server;
    server.restart().await;
    let listed = server
        .api_ok("/v1/namespaces/default/services/sched/schedules")
        .await;
    let schedules = listed["schedules"].as_array().cloned().unwrap_or_default();
    assert_eq!(schedules.len(), 1, "{listed}");
    let id = schedules[0]["id"].to_string();
    eventually(
        "schedule still applies after restart",
        Duration::from_secs(20),
        async || {
            let v = version(&server, "sched", "v1").await;
            (v["desired_instances"] == 3).then_some(())
        },
    )
    .await;

    // Removing it gives the version its own bounds back.
    server
        .cli_ok(&["scaling", "schedule", "remove", "sched", &id])
        .await;
    eventually(
        "back to the version's own scaling",
        Duration::from_secs(20),
        async || {
            let v = version(&server, "sched", "v1").await;
            (v["scaling_reason"] != "schedule").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_changes_bounds_without_a_new_version() {
    let server = Server::start_with(FAST).await;
    server.deploy("knobs", &["--min-instances", "1"]).await;
    server
        .cli_ok(&["scale", "knobs", "--min", "2", "--max", "3"])
        .await;
    let versions = server.versions("knobs").await;
    assert_eq!(versions.len(), 1, "no new version: {versions:?}");
    assert_eq!(versions[0]["spec"]["min_instances"], 2);
    eventually("two instances ready", Duration::from_secs(20), async || {
        let v = version(&server, "knobs", "v1").await;
        (v["ready_instances"] == 2).then_some(())
    })
    .await;
    let out = server.cli_ok(&["service", "show", "knobs"]).await;
    assert!(
        out.stdout.contains("v1: 2 ready / 2 desired (min)"),
        "service show has desired vs actual and the reason:\n{out}"
    );
    let out = server.cli_ok(&["instances", "knobs"]).await;
    assert!(out.stdout.contains("INFLIGHT"), "{out}");
    let out = server
        .cli(&["scale", "knobs", "--min", "9", "--max", "3"])
        .await;
    assert!(!out.success(), "min above max refused: {out}");
    let v = version(&server, "knobs", "v1").await;
    assert_eq!(v["spec"]["min_instances"], 2, "nothing applied: {v}");
}
