//! The web console in a real browser: `nimbus server` serves `/console`, and
//! `tests/console/console.mjs` drives it in Debian's Chromium (playwright-core) as a person
//! would. This test deploys what the script expects, runs it, and checks through the API that
//! what the page saved (and refused) is what the server has.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium`) and the script's npm packages
//! (`npm ci --prefix crates/nimbus/tests/console`); scripts/test.sh installs both.
//! `NIMBUS_CONSOLE_SCREENSHOTS=DIR` keeps the screenshots in DIR (the test's own dir is removed
//! when it passes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, write_file, Server};
use serde_json::{json, Value};

/// The whole browser session: sign-in, five views, two saves, three deploys, four deletes, three
/// invocations.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

const CHROMIUM: &str = "/usr/bin/chromium";

/// A function the script invokes: echoes its event, or fails on `{"fail": ...}`.
const ECHO_HANDLER: &str = r#"def main(event, context):
    if event.get("fail"):
        raise ValueError("bad input: " + str(event["fail"]))
    return {"echo": event}
"#;

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Fails early, saying how to install what the browser test needs.
fn check_prerequisites() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh does it)"
    );
    let playwright = script_dir().join("node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "{} is missing: npm ci --prefix crates/nimbus/tests/console (scripts/test.sh does it)",
        playwright.display()
    );
}

/// `GET url` without a token: the console's files are public.
async fn get_public(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let resp = http.get(url).send().await.expect("GET console file");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("console file body");
    (status, headers, body)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Runs console.mjs against the server; returns its JSON summary (the last stdout line).
async fn run_browser_script(server: &Server, out_dir: &Path) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script_dir().join("console.mjs"))
        .env("CONSOLE_URL", format!("{}/console", server.api))
        .env("NIMBUS_TOKEN", &server.token)
        .env("OUT_DIR", out_dir)
        .current_dir(script_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("run node console.mjs: {e} (is node installed?)"),
        Err(_) => panic!(
            "console.mjs did not finish within {SCRIPT_TIMEOUT:?}\n{}",
            server.diagnostics()
        ),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    assert!(
        output.status.success() && summary["ok"] == true,
        "console.mjs failed ({}):\nsummary: {summary:#}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        output.status,
        server.diagnostics()
    );
    summary
}

/// The split of `service` as `[(version, percent)]`, from `GET .../traffic`.
async fn split_of(server: &Server, service: &str) -> Vec<(String, u64)> {
    let policy = server
        .api_ok(&format!(
            "/v1/namespaces/default/services/{service}/traffic"
        ))
        .await;
    let mut split: Vec<(String, u64)> = policy["split"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["version"].as_str().unwrap_or_default().to_string(),
                t["percent"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    split.sort();
    split
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    check_prerequisites();
    // Metering samples every 200 ms, so the requests below show in Usage within a second.
    let server = Server::start_with(&["--meter-interval", "0.2"]).await;

    // The page and its files are public, typed, never cached stale, and locked to this origin.
    let files = [
        ("/console", "text/html", "Admin token"),
        ("/console/", "text/html", "admin.token"),
        ("/console/app.js", "text/javascript", "Authorization"),
        ("/console/app.css", "text/css", ".topbar"),
    ];
    for (path, content_type, marker) in files {
        let (status, headers, body) = get_public(&format!("{}{path}", server.api)).await;
        assert_eq!(status, 200, "GET {path}");
        assert!(
            header(&headers, "content-type").starts_with(content_type),
            "{path}: {headers:?}"
        );
        assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}");
        assert_eq!(
            header(&headers, "content-security-policy"),
            "default-src 'self'",
            "{path}"
        );
        assert!(body.contains(marker), "{path} lacks {marker:?}");
    }
    // The data behind it is not public.
    let (status, _) = server
        .api_get_with_auth("/v1/namespaces/default/services", None)
        .await;
    assert_eq!(status, 401);

    // What the script expects: web v1 and v2 (v2 taking all traffic), and function echo.
    server.deploy("web", &[]).await;
    server.deploy("web", &["--env", "GREETING=two"]).await;
    let names: Vec<Value> = server
        .versions("web")
        .await
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(names, [json!("v1"), json!("v2")]);
    assert_eq!(split_of(&server, "web").await, [("v2".to_string(), 100)]);
    server.deploy("scratch", &[]).await;
    server.deploy("scratch", &["--env", "GREETING=two"]).await;
    let code = server.root.join("echo");
    std::fs::create_dir_all(&code).expect("function code dir");
    write_file(&code, "index.py", ECHO_HANDLER);
    let code_text = code.display().to_string();
    server
        .cli_ok(&[
            "fn",
            "deploy",
            "echo",
            "--runtime",
            "python3",
            "--handler",
            "index.main",
            "--code",
            &code_text,
        ])
        .await;
    server
        .cli_ok(&["fn", "trigger", "add", "echo", "--cron", "0 9 * * 1-5"])
        .await;

    // Requests the Usage view must show (and price).
    for _ in 0..3 {
        let reply = server.get(&Server::host("web"), "/").await;
        assert_eq!(reply.version(), "v2");
    }
    eventually(
        "web's requests metered",
        Duration::from_secs(20),
        async || {
            let usage = server
                .api_ok("/v1/usage?service=web&since=1h&by=service")
                .await;
            (usage["total"]["usage"]["requests"].as_u64()? >= 3).then_some(())
        },
    )
    .await;

    let out_dir = std::env::var_os("NIMBUS_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| server.root.join("screenshots"));
    std::fs::create_dir_all(&out_dir).expect("screenshot dir");
    let summary = run_browser_script(&server, &out_dir).await;

    // The script went through every step and saw the API's refusal of the bad split.
    let steps = summary["steps"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 14, "{summary:#}");
    assert_eq!(steps.last(), Some(&json!("sign out")), "{summary:#}");
    let refusal = summary["trafficError"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("percentages must sum to exactly 100, got 110"),
        "{summary:#}"
    );
    assert_eq!(summary["browserErrors"], json!([]), "{summary:#}");
    let usage_cells = summary["usageWeb"].as_array().map_or(0, Vec::len);
    assert_eq!(usage_cells, 7, "{summary:#}");

    // The good save reached the server, and the refused one changed nothing.
    assert_eq!(
        split_of(&server, "web").await,
        [("v1".to_string(), 30), ("v2".to_string(), 70)]
    );
    let versions = server.versions("web").await;
    let traffic: Vec<u64> = versions
        .iter()
        .map(|v| v["traffic"].as_u64().unwrap_or_default())
        .collect();
    assert_eq!(traffic, [30, 70, 0], "{versions:?}");

    // v3 came from v2 (its command, its GREETING replaced) with what the form set, and the
    // refused deploy stored nothing.
    let (v2, v3) = (&versions[1]["spec"], &versions[2]["spec"]);
    assert_eq!(v3["command"], v2["command"], "{versions:?}");
    assert_eq!(v3["env"]["GREETING"], "three", "{versions:?}");
    assert_eq!(v3["concurrency"], 5, "{versions:?}");
    assert_eq!(v3["min_instances"], v2["min_instances"], "{versions:?}");
    let refusal = summary["deployError"].as_str().unwrap_or_default();
    assert!(refusal.contains("field: min_instances"), "{summary:#}");

    // The delete of scratch reached the server.
    let (status, reply) = server
        .api_get("/v1/namespaces/default/services/scratch")
        .await;
    assert_eq!(status, 404, "{reply}");

    // The screenshots are real PNG images of the pages.
    for name in ["services", "service", "functions", "usage"] {
        let path = out_dir.join(format!("{name}.png"));
        let png =
            std::fs::read(&path).unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
        assert!(png.len() > 10_000, "{} is nearly empty", path.display());
    }
}
