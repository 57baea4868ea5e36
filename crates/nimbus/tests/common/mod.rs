//! Black-box harness: runs the real `nimbus` binary as a server in its own process group on a
//! temp data dir with ports picked by the kernel, and talks to it only over loopback HTTP, the
//! WebSocket protocol and the CLI.
//!
//! # Layout
//! - [`Server`]: start, restart, SIGTERM, kill -9; the REST API (`api_get`, …), the CLI (`cli`),
//!   the gateway (`get`, `get_with`), and the live instance processes it owns (`live_instances`).
//! - [`sample_app_path`]: the `nimbus-sample-app` binary, built once if it is missing.
//! - [`eventually`]: bounded polling instead of fixed sleeps.
//!
//! Every server gets a unique `NIMBUS_TEST_RUN` marker in its environment. Instances inherit it,
//! so `/proc/*/environ` tells which live processes a test started (orphan checks), and the
//! [`Drop`] guard kills whatever is left, by pid, even when the test fails.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long `nimbus server` may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a CLI command may run (deploys wait for instances to get ready).
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Grace between SIGTERM and SIGKILL when a test is done with its server.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Per-request timeout of the HTTP clients.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nimbus` binary under test.
pub fn nimbus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nimbus"))
}

/// The sample app binary, next to `nimbus` in `target/<profile>/`, brought up to date with the
/// same profile once per test binary (`cargo test -p nimbus` does not build it, and a stale one
/// would test the previous app; an up-to-date build costs a moment).
pub fn sample_app_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let nimbus = nimbus_bin();
        let profile_dir = nimbus.parent().expect("nimbus binary has a parent dir");
        let app = profile_dir.join("nimbus-sample-app");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug");
        let target_dir = profile_dir.parent().expect("profile dir has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "nimbus-sample-app",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().expect("run cargo build -p nimbus-sample-app");
        assert!(status.success(), "cargo build -p nimbus-sample-app failed");
        assert!(app.exists(), "sample app not found at {}", app.display());
        app
    })
}

/// `--command` value that runs the sample app (shell-quoted for `sh -c`).
pub fn sample_command() -> String {
    format!("'{}'", sample_app_path().display())
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique, readable id for one test server: `<pid>-<counter>-<nanos>`.
fn unique_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:09}", std::process::id())
}

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout parsed as JSON (for `-o json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("CLI stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// An HTTP answer read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// `(service, version)` from the sample app's `GREETING from SERVICE VERSION (INSTANCE)`.
    pub fn who(&self) -> Option<(String, String)> {
        who(&self.body)
    }

    /// The version that answered `GET /`, panicking with the reply when it is not the sample app.
    pub fn version(&self) -> String {
        match (self.status, self.who()) {
            (200, Some((_, version))) => version,
            _ => panic!("not a sample app greeting: {self:?}"),
        }
    }
}

/// Parses `GREETING from SERVICE VERSION (INSTANCE)`.
pub fn who(body: &str) -> Option<(String, String)> {
    let mut words = body.split_whitespace().skip_while(|w| *w != "from").skip(1);
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

/// A live process that a test server started (its environ carries the server's marker).
#[derive(Debug, Clone)]
pub struct LiveProcess {
    pub pid: u32,
    /// `NIMBUS_INSTANCE`, when set.
    pub instance: Option<String>,
    /// `NIMBUS_SERVICE`, when set.
    pub service: Option<String>,
    pub comm: String,
}

/// Live (non-zombie) processes whose environment contains `NIMBUS_TEST_RUN=<marker>`.
pub fn processes_with_marker(marker: &str) -> Vec<LiveProcess> {
    let needle = format!("NIMBUS_TEST_RUN={marker}");
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A zombie has an empty environ, so it never matches.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&needle) {
            continue;
        }
        let get = |key: &str| {
            vars.iter()
                .find_map(|v| v.strip_prefix(key).map(str::to_string))
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        found.push(LiveProcess {
            pid,
            instance: get("NIMBUS_INSTANCE="),
            service: get("NIMBUS_SERVICE="),
            comm,
        });
    }
    found
}

/// One `nimbus server` under test, with its own data dir and marker. Killed on drop.
pub struct Server {
    /// The test's private dir: `data/`, `work/`, `server.stderr.log`.
    pub root: PathBuf,
    pub data: PathBuf,
    /// Unique value of `NIMBUS_TEST_RUN` in the server's (and so its instances') environment.
    pub marker: String,
    /// `http://127.0.0.1:PORT` of the REST API.
    pub api: String,
    /// `127.0.0.1:PORT` of the gateway.
    pub gateway: String,
    /// `http://127.0.0.1:PORT` of the S3 endpoint, when started with `--s3`.
    pub s3: Option<String>,
    /// `127.0.0.1:PORT` of the HTTPS gateway, when started with `--https`.
    pub https: Option<String>,
    pub token: String,
    child: Option<Child>,
    /// Extra `nimbus server` flags, kept across restarts.
    extra_args: Vec<String>,
    /// Extra environment of `nimbus server` (e.g. `DOCKER_HOST`), kept across restarts.
    extra_env: Vec<(String, String)>,
    starts: u32,
    stderr_path: PathBuf,
    http: reqwest::Client,
}

/// Where `spawn` found the listeners.
struct Ready {
    api: String,
    gateway: String,
    s3: Option<String>,
    https: Option<String>,
}

impl Server {
    /// Starts a server on a fresh temp data dir and waits for its ready line.
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Like [`Server::start`], with extra `nimbus server` flags (e.g. short autoscaler windows).
    pub async fn start_with(extra_args: &[&str]) -> Server {
        Self::start_with_env(extra_args, &[]).await
    }

    /// Like [`Server::start_with`], with extra environment variables for the server.
    pub async fn start_with_env(extra_args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        let marker = unique_id();
        let root = std::env::temp_dir().join(format!("nimbus-test-{marker}"));
        let data = root.join("data");
        std::fs::create_dir_all(root.join("work")).expect("create test dir");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("build HTTP client");
        let mut server = Server {
            stderr_path: root.join("server.stderr.log"),
            root,
            data,
            marker,
            api: String::new(),
            gateway: String::new(),
            s3: None,
            https: None,
            token: String::new(),
            child: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts: 0,
            http,
        };
        server.spawn().await;
        server
    }

    /// Starts the server again on the same data dir (after `sigterm` or `kill9`; a running
    /// server is stopped with SIGTERM first). Ports change.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.sigterm().await;
        }
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open server stderr log");
        writeln!(log, "===== nimbus server start #{} =====", self.starts).expect("write log");
        let mut cmd = Command::new(nimbus_bin());
        cmd.arg("server")
            .arg("--data")
            .arg(&self.data)
            .args(["--api", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(&self.extra_args)
            .env("NIMBUS_TEST_RUN", &self.marker)
            .env("NO_COLOR", "1") // plain server logs in the stderr file
            .env("TZ", "UTC") // scaling schedules run in the server's time zone
            // The function runtime shims of this checkout, wherever the target dir is.
            .env(
                "NIMBUS_RUNTIMES_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes"),
            )
            .env_remove("NIMBUS_API")
            .env_remove("NIMBUS_TOKEN")
            .env_remove("NIMBUS_DATA")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.root.join("work"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn nimbus server");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // Read the ready line on a thread; keep draining stdout after it.
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Some(Ok(line)) = lines.next() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match tokio::time::timeout(READY_TIMEOUT, rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => self.fail("nimbus server closed stdout without a ready line"),
            Err(_) => self.fail(&format!("no ready line within {READY_TIMEOUT:?}")),
        };
        let ready = match parse_ready(&line) {
            Some(ready) => ready,
            None => self.fail(&format!("unexpected first stdout line: {line:?}")),
        };
        self.api = ready.api;
        self.gateway = ready.gateway;
        self.s3 = ready.s3;
        self.https = ready.https;
        let token_path = self.data.join("admin.token");
        self.token = match std::fs::read_to_string(&token_path) {
            Ok(token) => token.trim().to_string(),
            Err(e) => self.fail(&format!("cannot read {}: {e}", token_path.display())),
        };
    }

    /// Panics with the server's stderr attached.
    fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}", self.diagnostics())
    }

    /// The server's stderr (last lines) and where the data dir is, for failure messages.
    pub fn diagnostics(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(150)..].join("\n");
        format!(
            "--- nimbus server stderr (last 150 lines of {}) ---\n{tail}\n--- data dir: {} ---",
            self.stderr_path.display(),
            self.data.display()
        )
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGHUP (logrotate's `postrotate`), without waiting for anything.
    pub fn sighup(&self) {
        let pid = self.pid().expect("server is running");
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit.
    pub async fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid().expect("server is running");
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        match self.wait_exit(STOP_GRACE).await {
            Some(status) => status,
            None => self.fail(&format!(
                "server did not exit within {STOP_GRACE:?} of SIGTERM"
            )),
        }
    }

    /// Kills the server process alone with SIGKILL, leaving its instances running.
    pub async fn kill9(&mut self) -> ExitStatus {
        let pid = self.pid().expect("server is running");
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        match self.wait_exit(Duration::from_secs(10)).await {
            Some(status) => status,
            None => self.fail("server did not die after SIGKILL"),
        }
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // === REST API ===

    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.diagnostics()));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        self.api_call(reqwest::Method::GET, path, None).await
    }

    pub async fn api_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.api_call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn api_put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.api_call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn api_delete(&self, path: &str) -> (u16, Value) {
        self.api_call(reqwest::Method::DELETE, path, None).await
    }

    /// A request to the API with a chosen `Authorization` header (or none).
    pub async fn api_get_with_auth(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.api));
        if let Some(auth) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET` on the API that must answer 200; returns the body.
    pub async fn api_ok(&self, path: &str) -> Value {
        let (status, body) = self.api_get(path).await;
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        body
    }

    /// The `Version` objects of a service in namespace `default`, oldest first.
    pub async fn versions(&self, service: &str) -> Vec<Value> {
        let body = self
            .api_ok(&format!(
                "/v1/namespaces/default/services/{service}/versions"
            ))
            .await;
        body["versions"].as_array().cloned().unwrap_or_default()
    }

    /// The `Instance` objects of a service in namespace `default`.
    pub async fn instances(&self, service: &str) -> Vec<Value> {
        let body = self
            .api_ok(&format!(
                "/v1/instances?namespace=default&service={service}"
            ))
            .await;
        body["instances"].as_array().cloned().unwrap_or_default()
    }

    /// Deploys through the API without waiting; panics unless 201. Returns the body.
    pub async fn api_deploy(&self, service: &str, body: Value) -> Value {
        let (status, reply) = self
            .api_post(
                &format!("/v1/namespaces/default/services/{service}/versions"),
                &body,
            )
            .await;
        assert_eq!(status, 201, "deploy {service}: {reply}");
        reply
    }

    /// Waits until `version` of `service` reports status `ready`.
    pub async fn wait_ready(&self, service: &str, version: &str) {
        eventually(
            &format!("{service} {version} ready"),
            Duration::from_secs(60),
            async || {
                let versions = self.versions(service).await;
                versions
                    .iter()
                    .any(|v| v["name"] == version && v["status"] == "ready")
                    .then_some(())
            },
        )
        .await
    }

    // === CLI ===

    /// Runs `nimbus ARGS` with `NIMBUS_API` and `NIMBUS_TOKEN` set, in the test's work dir.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_in(&self.root.join("work"), args).await
    }

    /// Runs `nimbus ARGS` in `dir`.
    pub async fn cli_in(&self, dir: &Path, args: &[&str]) -> CliOutput {
        let mut cmd = tokio::process::Command::new(nimbus_bin());
        cmd.args(args)
            .env("NIMBUS_API", &self.api)
            .env("NIMBUS_TOKEN", &self.token)
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(CLI_TIMEOUT, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("run nimbus {args:?}: {e}"),
            Err(_) => self.fail(&format!(
                "nimbus {args:?} did not finish within {CLI_TIMEOUT:?}"
            )),
        };
        CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a CLI command that must succeed.
    pub async fn cli_ok(&self, args: &[&str]) -> CliOutput {
        let out = self.cli(args).await;
        if !out.success() {
            self.fail(&format!("nimbus {args:?} failed:\n{out}"));
        }
        out
    }

    /// `nimbus deploy SERVICE --command <sample app> EXTRA...`, which must succeed.
    pub async fn deploy(&self, service: &str, extra: &[&str]) -> CliOutput {
        let command = sample_command();
        let mut args = vec!["deploy", service, "--command", command.as_str()];
        args.extend_from_slice(extra);
        self.cli_ok(&args).await
    }

    /// Sets the split with `nimbus traffic SERVICE --to-versions SPEC`.
    pub async fn set_split(&self, service: &str, spec: &str) {
        self.cli_ok(&["traffic", service, "--to-versions", spec])
            .await;
    }

    // === Gateway ===

    /// `GET path` through the gateway with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.get_with(host, path, &[]).await
    }

    /// `GET path` through the gateway with `Host: host` and extra headers.
    pub async fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        match self.try_get_with(host, path, headers).await {
            Ok(reply) => reply,
            Err(e) => self.fail(&format!("GET http://{host}{path} via gateway: {e}")),
        }
    }

    /// Like [`Server::get_with`], returning transport errors.
    pub async fn try_get_with(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .http
            .get(format!("http://{}{path}", self.gateway))
            .header(reqwest::header::HOST, host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Polls the gateway until `GET path` on `host` is answered by `version`.
    pub async fn wait_served_by(&self, host: &str, path: &str, version: &str) {
        eventually(
            &format!("{host}{path} served by {version}"),
            Duration::from_secs(30),
            async || {
                let reply = self.try_get_with(host, path, &[]).await.ok()?;
                (reply.status == 200 && reply.who().is_some_and(|(_, v)| v == version))
                    .then_some(())
            },
        )
        .await
    }

    // === Processes ===

    /// Live processes this server (or an earlier run on the same data dir) started.
    pub fn live_processes(&self) -> Vec<LiveProcess> {
        processes_with_marker(&self.marker)
            .into_iter()
            .filter(|p| Some(p.pid) != self.pid())
            .collect()
    }

    /// Distinct `NIMBUS_INSTANCE` ids among live processes, optionally for one service.
    pub fn live_instances(&self, service: Option<&str>) -> BTreeSet<String> {
        self.live_processes()
            .into_iter()
            .filter(|p| service.is_none() || p.service.as_deref() == service)
            .filter_map(|p| p.instance)
            .collect()
    }

    /// Number of live sample app processes (one per instance, whatever `sh -c` does).
    pub fn live_app_processes(&self, service: Option<&str>) -> usize {
        self.live_processes()
            .into_iter()
            .filter(|p| p.instance.is_some() && p.comm.starts_with("nimbus-sample"))
            .filter(|p| service.is_none() || p.service.as_deref() == service)
            .count()
    }

    /// Generated default host of a service in namespace `default`.
    pub fn host(service: &str) -> String {
        format!("{service}--default.nimbus.localhost")
    }

    /// Generated test host of a version in namespace `default`.
    pub fn version_host(version: &str, service: &str) -> String {
        format!("{version}--{service}--default.nimbus.localhost")
    }
}

fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix("nimbus ready: ")?;
    let mut api = None;
    let mut gateway = None;
    let mut s3 = None;
    let mut https = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("api=") {
            api = Some(v.trim_end_matches('/').to_string());
        } else if let Some(v) = part.strip_prefix("s3=") {
            s3 = Some(v.trim_end_matches('/').to_string());
        } else if let Some(v) = part.strip_prefix("https=") {
            https = Some(
                v.trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_string(),
            );
        } else if let Some(v) = part.strip_prefix("gateway=") {
            gateway = Some(
                v.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
    }
    Some(Ready {
        api: api?,
        gateway: gateway?,
        s3,
        https,
    })
}

// === impl Drop for Server ===

impl Drop for Server {
    /// SIGTERM, then SIGKILL of the server's process group after a grace period, then SIGKILL of
    /// any process still carrying the marker. Keeps the test dir when the test failed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            if rx.recv_timeout(STOP_GRACE).is_err() {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = rx.recv_timeout(Duration::from_secs(5));
            }
        }
        let leftovers = processes_with_marker(&self.marker);
        for p in &leftovers {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
            if !leftovers.is_empty() {
                eprintln!("killed leftover processes: {leftovers:?}");
            }
            eprintln!("test dir kept: {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = File::create(&path).expect("create file");
    file.write_all(text.as_bytes()).expect("write file");
    path
}

/// The `error` object of an API error body, checked for the documented shape
/// `{"error": {"code", "message", "field"}}`.
pub fn error_of(body: &Value) -> &serde_json::Map<String, Value> {
    let err = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        err.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty()),
        "error without code: {body}"
    );
    assert!(
        err.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    assert!(err.contains_key("field"), "error without field: {body}");
    err
}

/// Items of a CLI `-o json` listing that may be a bare array or `{"<key>": [...]}`.
pub fn items(value: &Value, key: &str) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| panic!("no {key:?} list in {value}")),
        _ => panic!("not a list: {value}"),
    }
}
