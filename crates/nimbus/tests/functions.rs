//! Functions through the real binary: python and node handlers, concurrency 1 (one instance per
//! in-flight call), structured handler errors, timeouts, async invocations with retries and the
//! dead-letter list, memory limits, kill -9 safety, timer and storage triggers, weighted aliases
//! and GB-s.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, write_file, Server};
use futures_util::future::join_all;
use serde_json::{json, Value};

const FAST: &[&str] = &[
    "--scale-stable-window",
    "3",
    "--scale-panic-window",
    "1",
    "--scale-tick",
    "0.25",
    "--scale-down-delay",
    "1",
    "--meter-interval",
    "0.2",
];

const PY_HANDLER: &str = r#"import os, time

def main(event, context):
    if event.get("fail"):
        raise ValueError("bad input: " + str(event["fail"]))
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "echo": event,
        "pid": os.getpid(),
        "request_id": context.request_id,
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": context.get_remaining_time_in_millis() > 0,
    }
"#;

const NODE_HANDLER: &str = r#"exports.main = async (event, context) => {
  return { echo: event, pid: process.pid, request_id: context.requestId || context.request_id };
};
"#;

fn code_dir(server: &Server, name: &str, file: &str, text: &str) -> PathBuf {
    let dir = server.root.join(name);
    std::fs::create_dir_all(&dir).expect("code dir");
    write_file(&dir, file, text);
    dir
}

async fn deploy_py(server: &Server, name: &str, extra: &[&str]) -> PathBuf {
    deploy_py_code(server, name, PY_HANDLER, extra).await
}

/// Deploys `code` as `index.py` with handler `index.main`.
async fn deploy_py_code(server: &Server, name: &str, code: &str, extra: &[&str]) -> PathBuf {
    let dir = code_dir(server, name, "index.py", code);
    let dir_text = dir.display().to_string();
    let mut args = vec![
        "fn",
        "deploy",
        name,
        "--runtime",
        "python3",
        "--handler",
        "index.main",
        "--code",
        &dir_text,
    ];
    args.extend_from_slice(extra);
    server.cli_ok(&args).await;
    dir
}

async fn invoke(server: &Server, name: &str, event: Value, query: &str) -> (u16, Value) {
    server
        .api_post(
            &format!("/v1/namespaces/default/functions/{name}/invoke{query}"),
            &event,
        )
        .await
}

async fn invoke_async(server: &Server, name: &str, event: Value) -> String {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let resp = http
        .post(format!(
            "{}/v1/namespaces/default/functions/{name}/invoke",
            server.api
        ))
        .bearer_auth(&server.token)
        .header("x-nimbus-invocation-type", "async")
        .json(&event)
        .send()
        .await
        .expect("async invoke");
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.expect("json");
    body["id"].as_str().expect("id").to_string()
}

async fn invocation(server: &Server, id: &str) -> Value {
    server.api_ok(&format!("/v1/invocations/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_handlers_answer_sync() {
    let server = Server::start_with(FAST).await;
    deploy_py(&server, "pyfn", &["--memory", "256Mi"]).await;
    let (status, answer) = invoke(&server, "pyfn", json!({"hello": "world"}), "").await;
    assert_eq!(status, 200, "{answer}");
    let result = &answer["result"];
    assert_eq!(result["echo"]["hello"], "world", "{answer}");
    assert_eq!(result["function"], "pyfn");
    assert_eq!(result["memory"], 256);
    assert_eq!(result["remaining_ok"], true);
    assert_eq!(result["request_id"], answer["request_id"]);
    // Warm: the same process answers again.
    let (_, again) = invoke(&server, "pyfn", json!({}), "").await;
    assert_eq!(
        again["result"]["pid"], result["pid"],
        "warm call reuses the process"
    );
    // The CLI prints the result.
    let out = server
        .cli_ok(&["fn", "invoke", "pyfn", "--data", r#"{"n": 7}"#])
        .await;
    assert!(out.stdout.contains("\"n\": 7"), "{out}");

    let dir = code_dir(&server, "nodefn", "index.js", NODE_HANDLER);
    let dir_text = dir.display().to_string();
    server
        .cli_ok(&[
            "fn",
            "deploy",
            "nodefn",
            "--runtime",
            "node",
            "--handler",
            "index.main",
            "--code",
            &dir_text,
        ])
        .await;
    let (status, answer) = invoke(&server, "nodefn", json!({"x": 1}), "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["echo"]["x"], 1, "{answer}");

    // Bad deploys are refused with the field named, nothing created.
    let out = server
        .cli(&[
            "fn",
            "deploy",
            "bad",
            "--runtime",
            "cobol",
            "--handler",
            "index.main",
            "--code",
            &dir_text,
        ])
        .await;
    assert!(!out.success() && out.stderr.contains("runtime"), "{out}");
    let out = server
        .cli(&[
            "fn",
            "deploy",
            "bad",
            "--runtime",
            "python3",
            "--handler",
            "index.main",
            "--code",
            &dir_text,
            "--memory",
            "9Gi",
        ])
        .await;
    assert!(!out.success() && out.stderr.contains("memory"), "{out}");
    let (status, body) = server.api_get("/v1/namespaces/default/functions/bad").await;
    assert_eq!(status, 404);
    // Nothing of that name exists: the answer speaks of functions, not services.
    assert_eq!(body["error"]["code"], "function_not_found", "{body}");
    assert_eq!(body["error"]["field"], "function", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_instances_and_errors_are_structured() {
    let server = Server::start_with(FAST).await;
    deploy_py(&server, "slowfn", &["--timeout", "10s"]).await;
    let calls = (0..5).map(|_| invoke(&server, "slowfn", json!({"sleep": 1.5}), ""));
    let answers = join_all(calls).await;
    let pids: BTreeSet<String> = answers
        .iter()
        .map(|(status, a)| {
            assert_eq!(*status, 200, "{a}");
            a["result"]["pid"].to_string()
        })
        .collect();
    assert_eq!(
        pids.len(),
        5,
        "5 concurrent slow calls ran on 5 instances: {pids:?}"
    );

    // A handler exception is the handler's error, with its traceback.
    let (status, answer) = invoke(&server, "slowfn", json!({"fail": "boom"}), "").await;
    assert_eq!(status, 200, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["kind"], "handler", "{answer}");
    assert_eq!(error["type"], "ValueError", "{answer}");
    assert!(error["message"]
        .as_str()
        .is_some_and(|m| m.contains("boom")));
    assert!(
        error["traceback"].as_array().is_some_and(|t| !t.is_empty()),
        "{answer}"
    );
    let out = server
        .cli(&["fn", "invoke", "slowfn", "--data", r#"{"fail": "boom"}"#])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("ValueError"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_a_service_or_a_function_never_both() {
    let server = Server::start().await;
    let dir = deploy_py(&server, "greet", &[]).await;
    server.deploy("web", &[]).await;

    // A service version on a function's name is refused, and the function is untouched.
    let command = common::sample_command();
    let out = server
        .cli(&["deploy", "greet", "--command", &command])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("is_a_function"), "{out}");
    assert!(out.stderr.contains("nimbus fn deploy"), "{out}");
    // And a function version on a service's name.
    let dir = dir.display().to_string();
    let out = server
        .cli(&[
            "fn",
            "deploy",
            "web",
            "--runtime",
            "python3",
            "--handler",
            "index.main",
            "--code",
            &dir,
        ])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("is_a_service"), "{out}");

    assert_eq!(server.versions("greet").await.len(), 1);
    assert_eq!(server.versions("web").await.len(), 1);
    let (status, answer) = invoke(&server, "greet", json!({"n": 1}), "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["echo"]["n"], 1, "{answer}");
    let (status, body) = server
        .api_post(
            "/v1/namespaces/default/functions/web/versions",
            &json!({"runtime": "python3", "handler": "index.main", "code_dir": dir}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let error = common::error_of(&body);
    assert_eq!(error["code"], "is_a_service", "{body}");
    assert_eq!(error["field"], "function", "{body}");
    let out = server.cli_ok(&["fn", "list"]).await;
    assert!(!out.stdout.contains("web"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_a_clear_error_and_the_function_keeps_working() {
    let server = Server::start_with(FAST).await;
    deploy_py(&server, "stuck", &["--timeout", "1s"]).await;
    let (status, answer) = invoke(&server, "stuck", json!({"sleep": 5}), "").await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["code"], "function_timeout", "{answer}");
    assert_eq!(answer["error"]["kind"], "timeout", "{answer}");
    // The stuck instance is replaced; the next call is served.
    let (status, answer) = invoke(&server, "stuck", json!({"ok": 1}), "").await;
    assert_eq!(status, 200, "{answer}");
}

/// Holds `mib` MiB (written, so resident) for the rest of the call; keeps what earlier calls
/// held, so a fresh instance shows as `held: 0`.
const MEMORY_HOG: &str = r#"import time
held = []

def main(event, context):
    mib = event.get("mib", 0)
    if mib:
        held.append(b"x" * (mib * 1024 * 1024))
        time.sleep(3)
    return {"held": len(held)}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_over_its_memory_is_stopped_with_a_clear_error() {
    let server = Server::start_with(FAST).await;
    deploy_py_code(
        &server,
        "hog",
        MEMORY_HOG,
        &["--memory", "64Mi", "--timeout", "20s"],
    )
    .await;
    // Within its memory: served, and the instance keeps what it holds.
    let (status, answer) = invoke(&server, "hog", json!({"mib": 8}), "").await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!({"held": 1})),
        "{answer}"
    );

    // 200 MiB in a 64 MiB function: stopped well before its 3-s sleep ends.
    let started = std::time::Instant::now();
    let (status, answer) = invoke(&server, "hog", json!({"mib": 200}), "").await;
    assert_eq!(status, 200, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["kind"], "memory", "{answer}");
    assert_eq!(error["type"], "MemoryLimitExceeded", "{answer}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("more than its memory of 64 MiB")),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{answer}");

    // The instance was replaced: the next call starts from nothing held.
    let (status, answer) = invoke(&server, "hog", json!({}), "").await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!({"held": 0})),
        "{answer}"
    );
    // One instance at most: a call queued behind the one that goes over memory waits for the
    // replacement instead of being handed the instance being killed.
    server.cli_ok(&["scale", "hog", "--max", "1"]).await;
    let (over, queued) = tokio::join!(invoke(&server, "hog", json!({"mib": 200}), ""), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        invoke(&server, "hog", json!({}), "").await
    });
    assert_eq!(over.1["error"]["kind"], "memory", "{}", over.1);
    assert_eq!(
        (queued.0, &queued.1["result"]),
        (200, &json!({"held": 0})),
        "{}",
        queued.1
    );

    // Scaling it in place keeps it a function with its memory (it once made it a plain service).
    server.cli_ok(&["scale", "hog", "--max", "5"]).await;
    let (status, answer) = invoke(&server, "hog", json!({"mib": 200}), "").await;
    assert_eq!(
        (status, &answer["error"]["kind"]),
        (200, &json!("memory")),
        "{answer}"
    );
    let out = server
        .cli(&["fn", "invoke", "hog", "--data", r#"{"mib": 200}"#])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("MemoryLimitExceeded"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_invocations_retry_dead_letter_and_survive_kill_9() {
    let mut server = Server::start_with(FAST).await;
    deploy_py(&server, "worker", &["--timeout", "5s"]).await;

    let ok = invoke_async(&server, "worker", json!({"job": 1})).await;
    let done = eventually(
        "async invocation succeeded",
        Duration::from_secs(20),
        async || {
            let inv = invocation(&server, &ok).await;
            (inv["status"] == "succeeded").then_some(inv)
        },
    )
    .await;
    assert_eq!(done["result"]["echo"]["job"], 1, "{done}");

    let failing = invoke_async(&server, "worker", json!({"fail": "always"})).await;
    let dead = eventually(
        "dead-lettered after 3 attempts",
        Duration::from_secs(30),
        async || {
            let inv = invocation(&server, &failing).await;
            (inv["status"] == "dead").then_some(inv)
        },
    )
    .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    let out = server
        .cli_ok(&["fn", "invocations", "worker", "--status", "failed"])
        .await;
    assert!(out.stdout.contains(&failing), "{out}");

    // Accepted invocations survive a kill -9 of the server.
    let mut ids = Vec::new();
    for job in 0..5 {
        ids.push(invoke_async(&server, "worker", json!({"sleep": 0.5, "job": job})).await);
    }
    server.kill9().await;
    server.restart().await;
    for id in &ids {
        eventually(
            "invocation done after kill -9",
            Duration::from_secs(40),
            async || (invocation(&server, id).await["status"] == "succeeded").then_some(()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_and_storage_triggers_deliver_cloudevents() {
    let server = Server::start_with(&[FAST, &["--s3", "127.0.0.1:0"]].concat()).await;
    deploy_py(&server, "ticker", &[]).await;
    server
        .cli_ok(&["fn", "trigger", "add", "ticker", "--cron", "*/2 * * * * *"])
        .await;
    let timer = eventually("the timer fired", Duration::from_secs(15), async || {
        let list = server
            .api_ok("/v1/namespaces/default/functions/ticker/invocations?status=succeeded")
            .await;
        list["invocations"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(
        timer["result"]["echo"]["type"], "com.nimbus.timer.fired",
        "{timer}"
    );
    assert_eq!(timer["result"]["echo"]["specversion"], "1.0");

    deploy_py(&server, "onupload", &[]).await;
    server.cli_ok(&["bucket", "create", "uploads"]).await;
    // A bad bucket name is refused, naming it and the field, and adds nothing.
    let out = server
        .cli(&["fn", "trigger", "add", "onupload", "--bucket", "up"])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("invalid bucket name \"up\""), "{out}");
    assert!(out.stderr.contains("field bucket"), "{out}");
    let triggers = server
        .api_ok("/v1/namespaces/default/functions/onupload/triggers")
        .await;
    assert_eq!(triggers["triggers"], json!([]), "{triggers}");
    server
        .cli_ok(&[
            "fn", "trigger", "add", "onupload", "--bucket", "uploads", "--events", "created",
        ])
        .await;
    let shown = server.cli_ok(&["fn", "show", "onupload"]).await;
    assert!(
        shown
            .stdout
            .contains("storage, bucket uploads, events created"),
        "{shown}"
    );
    assert!(shown.stdout.contains("handler index.main"), "{shown}");
    let shown = server
        .cli_ok(&["-o", "json", "fn", "show", "onupload"])
        .await
        .json();
    assert_eq!(
        shown["triggers"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    let listed = server.cli_ok(&["fn", "trigger", "list", "onupload"]).await;
    assert!(
        listed
            .stdout
            .contains("storage, bucket uploads, events created"),
        "{listed}"
    );
    let key = server
        .cli_ok(&["-o", "json", "keys", "create"])
        .await
        .json();
    let endpoint = server.s3.clone().expect("s3");
    let script = format!(
        "import boto3\nfrom botocore.config import Config\n\
s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{}', aws_secret_access_key='{}', region_name='us-east-1', config=Config(s3={{'addressing_style': 'path'}}))\n\
s3.put_object(Bucket='uploads', Key='in/report.csv', Body=b'a,b')\n",
        key["access_key"].as_str().unwrap_or_default(),
        key["secret_key"].as_str().unwrap_or_default()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event = eventually(
        "the storage trigger fired",
        Duration::from_secs(15),
        async || {
            let list = server
                .api_ok("/v1/namespaces/default/functions/onupload/invocations?status=succeeded")
                .await;
            list["invocations"].as_array()?.first().cloned()
        },
    )
    .await;
    let cloud = &event["result"]["echo"];
    assert_eq!(
        cloud["type"], "com.nimbus.storage.object.created",
        "{event}"
    );
    assert_eq!(cloud["data"]["bucket"], "uploads");
    assert_eq!(cloud["data"]["key"], "in/report.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_split_and_function_gb_seconds() {
    let server = Server::start_with(FAST).await;
    let dir = deploy_py(&server, "split", &["--memory", "256Mi"]).await;
    // v2: same code, new env, so a new version.
    let dir_text = dir.display().to_string();
    server
        .cli_ok(&[
            "fn",
            "deploy",
            "split",
            "--runtime",
            "python3",
            "--handler",
            "index.main",
            "--code",
            &dir_text,
            "--memory",
            "256Mi",
            "--env",
            "V=2",
        ])
        .await;
    server
        .cli_ok(&["fn", "alias", "set", "split", "live", "v1=90,v2=10"])
        .await;
    let out = server
        .cli(&["fn", "alias", "set", "split", "live", "v1=90,v9=10"])
        .await;
    assert!(!out.success(), "unknown version refused: {out}");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut billed_mib_ms = 0u64;
    for _ in 0..1000 {
        let (status, answer) = invoke(&server, "split", json!({}), "?qualifier=live").await;
        assert_eq!(status, 200, "{answer}");
        *counts
            .entry(answer["version"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let ms = answer["duration_ms"].as_f64().unwrap_or(0.0);
        billed_mib_ms += (ms.ceil() as u64) * 256;
    }
    let v1 = counts.get("v1").copied().unwrap_or(0);
    assert!((850..=950).contains(&v1), "alias 90/10 gave {counts:?}");

    // GB-s: each invocation's duration rounded up to 1 ms, times 256 MiB.
    eventually(
        "function GB-s metered",
        Duration::from_secs(10),
        async || {
            let usage = server
                .api_ok("/v1/usage?service=split&since=1h&by=service")
                .await;
            let metered = usage["total"]["usage"]["exact"]["function_mib_ms"].as_u64()?;
            // Each invocation is also a billed request, as in Cloud Run functions and SCF.
            let requests = usage["total"]["usage"]["requests"].as_u64()?;
            // A duration that lands exactly on a millisecond can round one way here and the other
            // there (f64 vs Duration); allow one ms per call.
            (metered.abs_diff(billed_mib_ms) <= 1000 * 256 && requests >= 1000).then_some(())
        },
    )
    .await;
}

#[allow(dead_code)]
fn unused(_: &Path) {}
