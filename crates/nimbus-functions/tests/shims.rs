//! The runtime shims as the engine runs them: each test writes a handler into a temp code dir,
//! starts the shim with the command line from `launch_command` (through `sh -c`, as the process
//! driver does), waits for `/healthz`, and invokes it with the real [`InvokeClient`].
//!
//! The Node tests need `node` on `PATH`; without it they fail, unless `NIMBUS_SKIP_NODE=1`.
//! Every wait is bounded; every instance is killed when its test ends (`kill_on_drop`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use nimbus_functions::handler::{launch_command, Runtime};
use nimbus_functions::invoke::{InvokeClient, InvokeOutcome, InvokeRequest, HEALTH_PATH};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Upper bound for any single test step (start, invoke, exit).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const INVOKE_TIMEOUT: Duration = Duration::from_secs(10);

const PYTHON_HANDLER: &str = r#"
import os
import time

def explode(detail):
    raise ValueError("boom: %s" % detail)

def main(event, context):
    action = (event or {}).get("action") if isinstance(event, dict) else None
    if action == "fail":
        explode(event.get("detail"))
    if action == "sleep":
        time.sleep(event["seconds"])
        return "woke up"
    if action == "nothing":
        return None
    return {
        "echo": event,
        "pid": os.getpid(),
        "request_id": context.request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"#;

const NODE_HANDLER: &str = r#"
function explode(detail) {
  throw new TypeError(`boom: ${detail}`);
}

exports.main = async (event, context) => {
  const action = event && typeof event === 'object' ? event.action : undefined;
  if (action === 'fail') explode(event.detail);
  if (action === 'sleep') {
    await new Promise((resolve) => setTimeout(resolve, event.seconds * 1000));
    return 'woke up';
  }
  if (action === 'nothing') return undefined;
  return {
    echo: event,
    pid: process.pid,
    request_id: context.requestId,
    function_name: context.functionName,
    function_version: context.functionVersion,
    memory_limit_in_mb: context.memoryLimitInMB,
    remaining_ms: context.getRemainingTimeInMillis(),
  };
};

// Plain function, plain value.
exports.syncMain = (event) => ({ sync: true, echo: event });

// Not async, but returns a promise.
exports.promiseMain = (event) =>
  new Promise((resolve) => setTimeout(() => resolve({ promised: true, echo: event }), 10));

exports.notAFunction = 42;
"#;

/// One runtime under test.
#[derive(Clone, Copy)]
struct Lang {
    runtime: Runtime,
    file: &'static str,
    source: &'static str,
    /// The exception type `explode` raises.
    error_type: &'static str,
}

const PYTHON: Lang = Lang {
    runtime: Runtime::Python3,
    file: "index.py",
    source: PYTHON_HANDLER,
    error_type: "ValueError",
};

const NODE: Lang = Lang {
    runtime: Runtime::Node,
    file: "index.js",
    source: NODE_HANDLER,
    error_type: "TypeError",
};

fn runtimes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runtimes")
        .canonicalize()
        .expect("the runtimes/ folder exists at the workspace root")
}

/// Whether the Node tests run: `node` must exist unless the run opts out explicitly.
fn node_available() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var("NIMBUS_SKIP_NODE").as_deref() == Ok("1"),
        "`node` is not on PATH: install it (apt-get install nodejs) or set NIMBUS_SKIP_NODE=1"
    );
    eprintln!("node not found; skipping (NIMBUS_SKIP_NODE=1)");
    false
}

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP_TIMEOUT:?}"))
}

/// A code dir with the handler file (and anything else written into it).
fn code_dir(lang: Lang) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(lang.file), lang.source).expect("write handler");
    dir
}

/// A started shim: killed when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

/// Spawns the shim for `handler` in `dir` the way the process driver would: `sh -c LINE` with
/// `PORT` set.
fn spawn(lang: Lang, handler: &str, dir: &Path, port: u16) -> (Child, PathBuf) {
    let command = launch_command(lang.runtime, handler, &runtimes_dir()).expect("valid handler");
    let line = command.shell_line_in(dir).expect("utf-8 path");
    let stderr_path = dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let child = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .env("PORT", port.to_string())
        .env("NIMBUS_SERVICE", "from-env")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh");
    (child, stderr_path)
}

/// Starts the shim and waits until `/healthz` answers (or the shim exits, which fails).
async fn start(lang: Lang, handler: &str, dir: &Path) -> Instance {
    let port = nimbus_runtime::pick_free_port().expect("free port");
    let (mut child, stderr_path) = spawn(lang, handler, dir, port);
    tokio::select! {
        ready = nimbus_runtime::wait_ready(port, HEALTH_PATH, STEP_TIMEOUT) => {
            if let Err(e) = ready {
                panic!("{handler} never got ready: {e}; stderr: {}", read(&stderr_path));
            }
        }
        status = child.wait() => {
            panic!("{handler} exited before it was ready ({status:?}); stderr: {}", read(&stderr_path));
        }
    }
    Instance {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        stderr_path,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn request(id: &str, event: Value, timeout: Duration) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        function: "thumbnail".into(),
        version: "v7".into(),
        memory_mb: 256,
        timeout,
        event: Bytes::from(event.to_string()),
    }
}

async fn invoke(client: &InvokeClient, instance: &Instance, req: &InvokeRequest) -> InvokeOutcome {
    bounded("invoke", client.invoke(instance.addr, req)).await
}

// === the scenarios, shared by both runtimes ===

/// Result round-trip, context fields, and a warm second call in the same process.
async fn round_trip_and_warm_reuse(lang: Lang) {
    let dir = code_dir(lang);
    let instance = start(lang, "index.main", dir.path()).await;
    let client = InvokeClient::new();
    let event =
        json!({"name": "cat.png", "sizes": [64, 128], "nested": {"ok": true}, "text": "héllo"});

    let first = invoke(
        &client,
        &instance,
        &request("req-1", event.clone(), INVOKE_TIMEOUT),
    )
    .await;
    let InvokeOutcome::Ok(first) = first else {
        panic!(
            "expected a result, got {first:?}; stderr: {}",
            read(&instance.stderr_path)
        );
    };
    assert_eq!(first["echo"], event, "the event round-trips");
    assert_eq!(first["request_id"], "req-1");
    assert_eq!(first["function_name"], "thumbnail");
    assert_eq!(first["function_version"], "v7");
    assert_eq!(first["memory_limit_in_mb"], 256);
    let remaining = first["remaining_ms"]
        .as_u64()
        .expect("remaining time is a number");
    assert!(
        remaining > 0 && remaining <= INVOKE_TIMEOUT.as_millis() as u64,
        "remaining {remaining} ms of {INVOKE_TIMEOUT:?}"
    );
    let pid = first["pid"].as_u64().expect("pid");
    assert_eq!(
        Some(pid as u32),
        instance.child.id(),
        "the shim itself runs the handler (exec)"
    );

    let second = invoke(
        &client,
        &instance,
        &request("req-2", json!([1, 2]), INVOKE_TIMEOUT),
    )
    .await;
    let InvokeOutcome::Ok(second) = second else {
        panic!("expected a result, got {second:?}");
    };
    assert_eq!(
        second["pid"], first["pid"],
        "a warm call reuses the process"
    );
    assert_eq!(second["request_id"], "req-2");
    assert_eq!(second["echo"], json!([1, 2]));

    // A handler that returns nothing gives JSON null.
    let nothing = invoke(
        &client,
        &instance,
        &request("req-3", json!({"action": "nothing"}), INVOKE_TIMEOUT),
    )
    .await;
    assert_eq!(nothing, InvokeOutcome::Ok(Value::Null));
}

/// A handler exception is a structured error with the traceback, told apart from platform
/// errors; the instance keeps serving afterwards.
async fn handler_exception(lang: Lang) {
    let dir = code_dir(lang);
    let instance = start(lang, "index.main", dir.path()).await;
    let client = InvokeClient::new();
    let outcome = invoke(
        &client,
        &instance,
        &request(
            "req-e",
            json!({"action": "fail", "detail": 7}),
            INVOKE_TIMEOUT,
        ),
    )
    .await;
    let InvokeOutcome::HandlerError(error) = outcome else {
        panic!("expected a handler error, got {outcome:?}");
    };
    assert_eq!(error.error_type, lang.error_type);
    assert_eq!(error.message, "boom: 7");
    let trace = error.traceback.join("\n");
    assert!(error.traceback.len() >= 3, "several lines: {trace}");
    assert!(trace.contains(lang.file), "names the handler file: {trace}");
    assert!(
        trace.contains("explode"),
        "names the raising function: {trace}"
    );
    assert!(
        !trace.contains("nimbus_shim"),
        "the shim's frames are hidden: {trace}"
    );

    let after = invoke(
        &client,
        &instance,
        &request("req-f", json!({"x": 1}), INVOKE_TIMEOUT),
    )
    .await;
    assert!(
        matches!(after, InvokeOutcome::Ok(_)),
        "still serving: {after:?}"
    );
}

/// A handler slower than the deadline is a timeout, not a hang.
async fn slow_handler_times_out(lang: Lang) {
    let dir = code_dir(lang);
    let instance = start(lang, "index.main", dir.path()).await;
    let client = InvokeClient::new();
    let slow = request(
        "req-s",
        json!({"action": "sleep", "seconds": 20}),
        Duration::from_millis(300),
    );
    let outcome = invoke(&client, &instance, &slow).await;
    assert_eq!(outcome, InvokeOutcome::Timeout);
}

/// Load problems end the shim with status 1 and a message that says what is wrong.
async fn load_errors(lang: Lang) {
    let dir = code_dir(lang);
    let broken = match lang.runtime {
        Runtime::Node => ("broken.js", "throw new Error('cannot load me');\n"),
        _ => ("broken.py", "def main(:\n"),
    };
    std::fs::write(dir.path().join(broken.0), broken.1).expect("write broken file");
    // (handler, expected text on stderr)
    let cases: &[(&str, &str)] = &[
        ("missing.main", "handler file"),
        ("index.nope", "handler function"),
        ("broken.main", "loading handler file"),
    ];
    for (handler, expected) in cases {
        let port = nimbus_runtime::pick_free_port().expect("free port");
        let (mut child, stderr_path) = spawn(lang, handler, dir.path(), port);
        let status = bounded("shim exit", child.wait()).await.expect("wait");
        let stderr = read(&stderr_path);
        assert_eq!(status.code(), Some(1), "{handler}: {stderr}");
        assert!(stderr.contains(expected), "{handler}: {stderr}");
    }
    // A syntax or load error comes with its traceback.
    let stderr = read(&dir.path().join("stderr.log"));
    let detail = match lang.runtime {
        Runtime::Node => "cannot load me",
        _ => "SyntaxError",
    };
    assert!(stderr.contains(detail), "{stderr}");
}

// === Python ===

#[tokio::test]
async fn python_round_trip_and_warm_reuse() {
    round_trip_and_warm_reuse(PYTHON).await;
}

#[tokio::test]
async fn python_handler_exception() {
    handler_exception(PYTHON).await;
}

#[tokio::test]
async fn python_slow_handler_times_out() {
    slow_handler_times_out(PYTHON).await;
}

#[tokio::test]
async fn python_load_errors() {
    load_errors(PYTHON).await;
}

#[tokio::test]
async fn python_rejects_a_result_that_is_not_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("app.py"),
        "def handler(event, context):\n    return {1, 2}\n",
    )
    .expect("write handler");
    let instance = start(PYTHON, "app.handler", dir.path()).await;
    let outcome = invoke(
        &InvokeClient::new(),
        &instance,
        &request("r", json!(null), INVOKE_TIMEOUT),
    )
    .await;
    assert!(
        matches!(&outcome, InvokeOutcome::HandlerError(e) if e.error_type == "TypeError"),
        "{outcome:?}"
    );
}

// === Node ===

#[tokio::test]
async fn node_round_trip_and_warm_reuse() {
    if node_available() {
        round_trip_and_warm_reuse(NODE).await;
    }
}

#[tokio::test]
async fn node_handler_exception() {
    if node_available() {
        handler_exception(NODE).await;
    }
}

#[tokio::test]
async fn node_slow_handler_times_out() {
    if node_available() {
        slow_handler_times_out(NODE).await;
    }
}

#[tokio::test]
async fn node_load_errors() {
    if node_available() {
        load_errors(NODE).await;
    }
}

#[tokio::test]
async fn node_sync_and_promise_handlers() {
    if !node_available() {
        return;
    }
    let dir = code_dir(NODE);
    // (handler, expected result for event {"n": 1})
    let cases: &[(&str, Value)] = &[
        ("index.syncMain", json!({"sync": true, "echo": {"n": 1}})),
        (
            "index.promiseMain",
            json!({"promised": true, "echo": {"n": 1}}),
        ),
    ];
    let client = InvokeClient::new();
    for (handler, expected) in cases {
        let instance = start(NODE, handler, dir.path()).await;
        let outcome = invoke(
            &client,
            &instance,
            &request("r", json!({"n": 1}), INVOKE_TIMEOUT),
        )
        .await;
        assert_eq!(outcome, InvokeOutcome::Ok(expected.clone()), "{handler}");
    }
    // An export that is not a function is a load error.
    let port = nimbus_runtime::pick_free_port().expect("free port");
    let (mut child, stderr_path) = spawn(NODE, "index.notAFunction", dir.path(), port);
    let status = bounded("shim exit", child.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(1));
    assert!(read(&stderr_path).contains("is not a function"));
}

#[tokio::test]
async fn node_es_module_handler() {
    if !node_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("app.mjs"),
        "export async function handler(event) { return { esm: true, echo: event }; }\n",
    )
    .expect("write handler");
    let instance = start(NODE, "app.handler", dir.path()).await;
    let outcome = invoke(
        &InvokeClient::new(),
        &instance,
        &request("r", json!("hi"), INVOKE_TIMEOUT),
    )
    .await;
    assert_eq!(
        outcome,
        InvokeOutcome::Ok(json!({"esm": true, "echo": "hi"}))
    );
}
