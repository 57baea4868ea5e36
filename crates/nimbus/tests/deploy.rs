//! Deploying versions: reaching them, their env, test URLs, spec files, the version limit,
//! crashing versions and logs.

mod common;

use std::time::Duration;

use common::{error_of, eventually, items, sample_command, write_file, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_reachable_by_default_domain_with_env_and_port() {
    let server = Server::start().await;
    let out = server
        .deploy("hello", &["--env", "GREETING=hi", "--env", "COLOR=blue"])
        .await;
    assert!(
        out.stdout
            .contains("http://hello--default.nimbus.localhost"),
        "deploy should print the URL:\n{out}"
    );

    let host = Server::host("hello");
    let reply = server.get(&host, "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.starts_with("hi from hello v1 ("),
        "greeting should name service and version: {:?}",
        reply.body
    );
    // A Host header with the port, as browsers send it, reaches the same service.
    let with_port = format!(
        "{host}:{}",
        server.gateway.rsplit(':').next().unwrap_or("80")
    );
    assert_eq!(server.get(&with_port, "/").await.version(), "v1");

    let env = server.get(&host, "/env").await.json();
    assert_eq!(env["NIMBUS_SERVICE"], "hello", "{env}");
    assert_eq!(env["NIMBUS_VERSION"], "v1", "{env}");
    assert_eq!(env["NIMBUS_NAMESPACE"], "default", "{env}");
    assert_eq!(env["GREETING"], "hi", "{env}");
    let instance = env["NIMBUS_INSTANCE"].as_str().unwrap_or_default();
    assert!(!instance.is_empty(), "NIMBUS_INSTANCE missing: {env}");
    let port: u16 = env["PORT"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("PORT missing or not a port: {env}"));

    // The instance the API lists is the one that answered, on the port it was given.
    let instances = server.instances("hello").await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["id"], instance, "{instances:?}");
    assert_eq!(instances[0]["port"], port, "{instances:?}");
    assert_eq!(instances[0]["state"], "ready", "{instances:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_version_is_reachable_only_by_its_test_url() {
    let server = Server::start().await;
    server.deploy("web", &[]).await;
    let out = server.deploy("web", &["--no-traffic"]).await;
    assert!(
        out.stdout.contains("v2--web--default.nimbus.localhost"),
        "a --no-traffic deploy should print the version's test URL:\n{out}"
    );

    let host = Server::host("web");
    for _ in 0..20 {
        assert_eq!(server.get(&host, "/").await.version(), "v1");
    }
    let v2 = server.get(&Server::version_host("v2", "web"), "/").await;
    assert_eq!(v2.version(), "v2");
    let v1 = server.get(&Server::version_host("v1", "web"), "/").await;
    assert_eq!(v1.version(), "v1");

    let versions = server
        .cli_ok(&["-o", "json", "versions", "web"])
        .await
        .json();
    let versions = items(&versions, "versions");
    let traffic: Vec<(String, i64)> = versions
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["traffic"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(traffic, [("v1".into(), 100), ("v2".into(), 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_services_versions_and_instances() {
    let server = Server::start().await;
    server.deploy("listed", &[]).await;

    let services = server.cli_ok(&["services"]).await;
    assert!(services.stdout.contains("listed"), "{services}");

    let show = server
        .cli_ok(&["-o", "json", "service", "show", "listed"])
        .await
        .json();
    assert_eq!(show["name"], "listed", "{show}");
    assert!(
        show["url"]
            .as_str()
            .is_some_and(|u| u.contains("listed--default.nimbus.localhost")),
        "{show}"
    );
    assert!(show["domains"].is_array(), "{show}");
    assert_eq!(
        show["traffic"],
        json!([{"version": "v1", "percent": 100}]),
        "{show}"
    );

    let versions = server
        .cli_ok(&["-o", "json", "versions", "listed"])
        .await
        .json();
    let versions = items(&versions, "versions");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["name"], "v1");
    assert_eq!(versions[0]["status"], "ready");
    assert_eq!(versions[0]["traffic"], 100);
    assert!(versions[0]["url"]
        .as_str()
        .is_some_and(|u| u.contains("v1--listed--default")));

    let instances = server.cli_ok(&["instances", "listed"]).await;
    assert!(instances.stdout.contains("listed"), "{instances}");
    let ids = server.live_instances(Some("listed"));
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.iter().next().cloned().unwrap_or_default();
    assert!(
        instances.stdout.contains(&id),
        "instance {id} not listed:\n{instances}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_from_spec_file() {
    let server = Server::start().await;
    let dir = server.root.join("work");
    let spec = format!(
        r#"service = "tomlsvc"
namespace = "staging"
command = "{}"
min_instances = 1
max_instances = 3
concurrency = 20
timeout_secs = 60
health_path = "/"

[env]
GREETING = "howdy"
"#,
        sample_command().replace('\\', "\\\\").replace('"', "\\\"")
    );
    write_file(&dir, "nimbus.toml", &spec);
    let out = server.cli_in(&dir, &["deploy", "-f", "nimbus.toml"]).await;
    assert!(out.success(), "deploy -f failed:\n{out}");
    assert!(
        out.stdout.contains("tomlsvc--staging.nimbus.localhost"),
        "{out}"
    );

    let reply = server.get("tomlsvc--staging.nimbus.localhost", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("howdy from tomlsvc v1"), "{reply:?}");
    let env = server
        .get("tomlsvc--staging.nimbus.localhost", "/env")
        .await
        .json();
    assert_eq!(env["NIMBUS_NAMESPACE"], "staging", "{env}");

    let version = server
        .api_ok("/v1/namespaces/staging/services/tomlsvc/versions/v1")
        .await;
    let spec = &version["spec"];
    assert_eq!(spec["min_instances"], 1, "{version}");
    assert_eq!(spec["max_instances"], 3, "{version}");
    assert_eq!(spec["concurrency"], 20, "{version}");
    assert_eq!(spec["timeout_secs"], 60, "{version}");
    assert_eq!(spec["env"]["GREETING"], "howdy", "{version}");

    // A [gateway] table the server would refuse is refused before the version is deployed.
    let good = std::fs::read_to_string(dir.join("nimbus.toml")).expect("read nimbus.toml");
    for (table, code) in [
        ("rate_per_ip = \"lots\"", "invalid_rate"),
        ("access = [\"deny pth=/admin\"]", "invalid_access_rule"),
        ("lb = \"fastest\"", "invalid_lb"),
    ] {
        write_file(&dir, "bad.toml", &format!("{good}\n[gateway]\n{table}\n"));
        let out = server.cli_in(&dir, &["deploy", "-f", "bad.toml"]).await;
        assert!(!out.success(), "{table}: {out}");
        assert!(out.stderr.contains(code), "{table}: {out}");
    }
    let versions = server
        .api_ok("/v1/namespaces/staging/services/tomlsvc/versions")
        .await;
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "no version from the refused files: {versions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_without_a_command_is_the_latest_version_with_its_changes() {
    let server = Server::start().await;
    let host = Server::host("web");
    // Nothing to start from yet: the first deploy needs something to run.
    let out = server.cli(&["deploy", "web", "--env", "GREETING=hi"]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("no version to start from") && out.stderr.contains("missing_command"),
        "{out}"
    );
    assert_eq!(
        server
            .api_get("/v1/namespaces/default/services/web")
            .await
            .0,
        404
    );

    let v1 = server
        .deploy(
            "web",
            &["--env", "GREETING=hi", "--env", "OLD=1", "--timeout", "60"],
        )
        .await;
    assert!(v1.success(), "{v1}");
    server
        .cli_ok(&[
            "deploy",
            "web",
            "--env",
            "GREETING=howdy",
            "--remove-env",
            "OLD",
        ])
        .await;
    eventually(
        "v2 takes the traffic",
        Duration::from_secs(10),
        async || {
            let reply = server.get(&host, "/").await;
            reply.body.starts_with("howdy from web v2").then_some(())
        },
    )
    .await;
    let spec = |version: &'static str| {
        let server = &server;
        async move {
            let path = format!("/v1/namespaces/default/services/web/versions/{version}");
            server.api_get(&path).await.1["spec"].clone()
        }
    };
    let (first, second) = (spec("v1").await, spec("v2").await);
    assert_eq!(second["command"], first["command"]);
    assert_eq!(second["timeout_secs"], 60);
    assert_eq!(second["env"], json!({"GREETING": "howdy"}));

    // --from names the version to start from, with a new command too.
    let command = format!("GREETING=again {}", sample_command());
    server
        .cli_ok(&["deploy", "web", "--from", "v1", "--command", &command])
        .await;
    let third = spec("v3").await;
    assert_eq!(third["env"], json!({"GREETING": "hi", "OLD": "1"}));
    assert_eq!(third["command"], json!(command));

    // Bad input names its field and creates nothing.
    let refused = [
        (json!({"from": "v9"}), 404, "version_not_found", "from"),
        (
            json!({"from": "latest", "remove_env": ["NOPE"]}),
            400,
            "invalid_env",
            "remove_env",
        ),
        (
            json!({"remove_env": ["OLD"], "command": "x"}),
            400,
            "invalid_env",
            "remove_env",
        ),
        (
            json!({"from": "latest", "port": 70000}),
            400,
            "invalid_port",
            "port",
        ),
    ];
    for (body, status, code, field) in refused {
        let (got, answer) = server
            .api_post("/v1/namespaces/default/services/web/versions", &body)
            .await;
        let err = error_of(&answer);
        assert_eq!(
            (got, &err["code"], &err["field"]),
            (status, &json!(code), &json!(field)),
            "{body}"
        );
    }
    assert_eq!(server.versions("web").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_port_runs_one_instance_and_a_version_that_needs_it_too_fails_clearly() {
    let server = Server::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    // A second instance would die on its bind: asking for two is refused, creating nothing.
    let command = sample_command();
    let out = server
        .cli(&[
            "deploy",
            "fixed",
            "--command",
            &command,
            "--port",
            &port,
            "--min-instances",
            "2",
        ])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("invalid_min_instances"), "{out}");
    assert!(out.stderr.contains("fixed --port"), "{out}");
    let (status, _) = server
        .api_get("/v1/namespaces/default/services/fixed")
        .await;
    assert_eq!(status, 404);

    // A ceiling above one is lowered to it, so the status never shows an instance it cannot run.
    server
        .deploy(
            "fixed",
            &[
                "--port",
                &port,
                "--min-instances",
                "1",
                "--max-instances",
                "5",
            ],
        )
        .await;
    let (status, version) = server
        .api_get("/v1/namespaces/default/services/fixed/versions/v1")
        .await;
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["spec"]["max_instances"], 1, "{version}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.instances("fixed").await.len(), 1);
    let (status, events) = server
        .api_get("/v1/namespaces/default/services/fixed/events")
        .await;
    assert_eq!(status, 200, "{events}");
    assert!(
        events.to_string().contains("version v1 created"),
        "{events}"
    );
    assert!(!events.to_string().contains("crash"), "{events}");

    // A new version on the same port cannot start beside v1: it fails at once, saying why,
    // and v1 keeps the traffic (its probe never reaches v1's process and calls it ready).
    let out = server.cli(&["deploy", "fixed", "--env", "X=1"]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stdout
            .contains(&format!("port {port} is held by instance fixed-v1-")),
        "{out}"
    );
    let reply = server.get(&Server::host("fixed"), "/").await;
    assert!(reply.body.contains("from fixed v1"), "{}", reply.body);

    // A port held by a server Nimbus does not run is taken to be that server: a version whose
    // command only waits fronts it (as bench/gateway fronts its backend).
    let outside = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut backend = std::process::Command::new(common::sample_app_path())
        .env("PORT", outside.to_string())
        .env("NIMBUS_SERVICE", "outside")
        .spawn()
        .expect("start a server outside Nimbus");
    let outside = outside.to_string();
    server
        .cli_ok(&[
            "deploy",
            "front",
            "--command",
            "exec sleep 600",
            "--port",
            &outside,
            "--min-instances",
            "1",
        ])
        .await;
    // Other services may front the same server (bench/gateway's thousand services do).
    server
        .cli_ok(&[
            "deploy",
            "front2",
            "--command",
            "exec sleep 600",
            "--port",
            &outside,
        ])
        .await;
    let reply = server.get(&Server::host("front"), "/").await;
    let second = server.get(&Server::host("front2"), "/").await;
    let _ = backend.kill();
    let _ = backend.wait();
    assert!(reply.body.contains("from outside"), "{}", reply.body);
    assert!(second.body.contains("from outside"), "{}", second.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_the_wrong_port_is_told_which_port_it_listens_on() {
    let server = Server::start_with(&["--startup-timeout", "8s"]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // The app ignores the $PORT it is given and serves on a port of its own choosing.
    let command = format!("PORT={port} exec {}", sample_command());
    let started = std::time::Instant::now();
    let out = server
        .cli(&["deploy", "stubborn", "--command", &command])
        .await;
    assert!(!out.success(), "{out}");
    let hint = format!("it listens on port {port} but not on $PORT");
    // Said while the deploy still waited, and again as the reason it failed.
    assert!(
        out.stderr
            .contains(&format!("stubborn v1 is not ready yet: {hint}")),
        "{out}"
    );
    assert!(out.stdout.contains("did not become ready"), "{out}");
    assert!(
        out.stdout.contains(&format!("deploy with --port {port}")),
        "{out}"
    );
    assert!(started.elapsed() >= Duration::from_secs(8), "{out}");
    // What the hint says works.
    server
        .cli_ok(&[
            "deploy",
            "stubborn",
            "--command",
            &command,
            "--port",
            &port.to_string(),
        ])
        .await;
    let reply = server.get(&Server::host("stubborn"), "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleventh_version_is_refused_naming_deletable_versions() {
    let server = Server::start().await;
    let command = sample_command();
    server.deploy("many", &[]).await;
    for _ in 2..=10 {
        server
            .api_deploy("many", json!({"command": command, "no_traffic": true}))
            .await;
    }
    let names: Vec<String> = server
        .versions("many")
        .await
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("v{i}")).collect();
    assert_eq!(names, expected);

    let (status, body) = server
        .api_post(
            "/v1/namespaces/default/services/many/versions",
            &json!({"command": command, "no_traffic": true}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let err = common::error_of(&body);
    assert_eq!(err["code"], "version_limit", "{body}");
    let message = err["message"].as_str().unwrap_or_default();
    let named: std::collections::BTreeSet<&str> = message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 1 && w.starts_with('v') && w[1..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    for i in 2..=10 {
        let v = format!("v{i}");
        assert!(
            named.contains(v.as_str()),
            "{v} is deletable but not named: {message}"
        );
    }
    assert!(!named.contains("v11"), "{message}");
    assert_eq!(server.versions("many").await.len(), 10);

    // The CLI says the same and fails.
    let out = server
        .cli(&["deploy", "many", "--command", &command, "--no-traffic"])
        .await;
    assert!(!out.success(), "11th deploy via CLI should fail:\n{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("v2"),
        "CLI should name deletable versions:\n{out}"
    );

    // Deleting one makes room.
    server.cli_ok(&["version", "delete", "many", "v2"]).await;
    let reply = server
        .api_deploy("many", json!({"command": command, "no_traffic": true}))
        .await;
    assert_eq!(reply["version"]["name"], "v11", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_version_is_failed_with_last_log_lines() {
    let server = Server::start().await;
    let out = server
        .cli(&[
            "deploy",
            "crash",
            "--command",
            &sample_command(),
            "--env",
            "FAIL_START=1",
        ])
        .await;
    assert!(
        !out.success(),
        "deploy of a crashing app should exit non-zero:\n{out}"
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "deploy should say why it failed:\n{out}"
    );

    let versions = server
        .cli_ok(&["-o", "json", "versions", "crash"])
        .await
        .json();
    let versions = items(&versions, "versions");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["status"], "failed", "{:?}", versions[0]);
    if let Some(lines) = versions[0].get("last_log_lines") {
        let last = lines
            .as_array()
            .and_then(|l| l.last())
            .cloned()
            .unwrap_or_default();
        assert!(
            last.to_string().contains("FAIL_START"),
            "CLI last_log_lines: {lines}"
        );
    }

    let version = server
        .api_ok("/v1/namespaces/default/services/crash/versions/v1")
        .await;
    assert_eq!(version["status"], "failed", "{version}");
    assert!(
        version["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{version}"
    );
    let last = version["last_log_lines"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .unwrap_or_default();
    assert!(last.contains("FAIL_START"), "last log line: {version}");

    // A request for it is answered at once with why, not held until the 300 s timeout.
    let reply = server.get(&Server::version_host("v1", "crash"), "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    let body = reply.json();
    let error = error_of(&body);
    assert_eq!(error["code"], "version_failing", "{body}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("keep failing") && message.contains("nimbus logs crash --version v1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_the_apps_output() {
    let server = Server::start().await;
    server.deploy("chatty", &[]).await;
    let line = eventually(
        "`nimbus logs` shows the listening line",
        Duration::from_secs(15),
        async || {
            let out = server.cli(&["logs", "chatty"]).await;
            (out.success() && out.stdout.contains("listening on 127.0.0.1:")).then_some(out.stdout)
        },
    )
    .await;
    assert!(!line.is_empty());
    let out = server.cli_ok(&["logs", "chatty", "--version", "v1"]).await;
    assert!(out.stdout.contains("listening on 127.0.0.1:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_since_shows_only_the_lines_of_that_last_stretch() {
    let server = Server::start().await;
    server.deploy("since", &[]).await;
    let host = Server::host("since");
    assert_eq!(server.get(&host, "/log?msg=early-line").await.status, 200);
    // Marks are made every 2 s: wait out a few, so the early line is well before the window.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(server.get(&host, "/log?msg=late-line").await.status, 200);
    let out = eventually(
        "`logs --since 4s` shows the late line",
        Duration::from_secs(3),
        async || {
            let out = server.cli(&["logs", "since", "--since", "4s"]).await;
            (out.success() && out.stdout.contains("late-line")).then_some(out)
        },
    )
    .await;
    assert!(!out.stdout.contains("early-line"), "{out}");
    assert!(!out.stdout.contains("listening on"), "{out}");
    let out = server.cli_ok(&["logs", "since", "--since", "1h"]).await;
    for line in ["listening on", "early-line", "late-line"] {
        assert!(out.stdout.contains(line), "{line}: {out}");
    }
    let out = server
        .cli(&["logs", "since", "--since", "ten minutes"])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("invalid_since"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_shows_lines_written_later() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let server = Server::start().await;
    server.deploy("follow", &[]).await;
    let mut child = tokio::process::Command::new(common::nimbus_bin())
        .args(["logs", "follow", "-f"])
        .env("NIMBUS_API", &server.api)
        .env("NIMBUS_TOKEN", &server.token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nimbus logs -f");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();

    // A second version writes its own listening line after `-f` started.
    server.deploy("follow", &["--no-traffic"]).await;
    let port = server
        .get(&Server::version_host("v2", "follow"), "/env")
        .await
        .json()["PORT"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let wanted = format!("listening on 127.0.0.1:{port}");
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            match lines.next_line().await {
                Ok(Some(line)) if line.contains(&wanted) => return Ok(line),
                Ok(Some(line)) => seen.push(line),
                _ => break,
            }
        }
        Err(seen)
    })
    .await;
    let _ = child.kill().await;
    match found {
        Ok(Ok(_)) => {}
        Ok(Err(seen)) => panic!("`logs -f` ended without {wanted:?}; saw {seen:?}"),
        Err(_) => panic!("`logs -f` did not show {wanted:?} within 20s"),
    }
}
