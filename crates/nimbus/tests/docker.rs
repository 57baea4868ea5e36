//! The Docker runtime through the real binary: image and source deploys served by the gateway, a
//! failed build, a process/container split, limits, volumes, re-adoption after `kill -9`, scale to
//! zero, a server without Docker, and Docker started after the server. Containers use host
//! networking on loopback ports; test images are built locally FROM scratch with the host's static
//! busybox (no registry).
//!
//! Without a reachable Docker Engine these tests FAIL; `NIMBUS_SKIP_DOCKER=1` skips them loudly
//! (the convention of crates/nimbus-docker). Each test removes every container, volume and image
//! labelled with its data dir when it ends, passed or not.

mod common;

use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{error_of, eventually, Server};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// Built once per test run (then cached by the engine).
const IMAGE: &str = "nimbus-e2e/app:v1";
/// Debian's `busybox-static` (scripts/docker-up.sh installs it).
const BUSYBOX: &str = "/bin/busybox";
/// Short autoscaler windows, as in tests/autoscaling.rs.
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

/// Serves `/` (`hello from SERVICE VERSION (INSTANCE)`, what `common::who` parses) and facts
/// gathered at start: `/memory` (the cgroup's limit), `/tmp-fill` (`ok`/`full` after writing
/// FILL_MB MiB to /tmp) and `/first` (the first version that wrote $DATA_DIR/first). Traps
/// SIGTERM, so stopping takes milliseconds, not the engine's 10 s grace.
const ENTRYPOINT: &str = r#"#!/bin/sh
mkdir -p /www
echo "hello from $NIMBUS_SERVICE $NIMBUS_VERSION ($NIMBUS_INSTANCE)" > /www/index.html
cat /sys/fs/cgroup/memory.max > /www/memory 2>/dev/null ||
  cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /www/memory
if dd if=/dev/zero of=/tmp/fill bs=1048576 count="${FILL_MB:-0}" 2>/dev/null; then
  echo ok > /www/tmp-fill
else
  echo full > /www/tmp-fill
fi
rm -f /tmp/fill
if [ -n "$DATA_DIR" ]; then
  [ -f "$DATA_DIR/first" ] || echo "$NIMBUS_VERSION" > "$DATA_DIR/first"
  cp "$DATA_DIR/first" /www/first
fi
echo "serving on port $PORT"
httpd -f -p "127.0.0.1:$PORT" -h /www &
pid=$!
trap 'kill $pid; wait $pid; exit 0' TERM INT
wait $pid
"#;

// === Docker availability ===

/// False (with a loud message) only when `NIMBUS_SKIP_DOCKER=1`; panics when the engine is
/// unreachable otherwise, so CI cannot skip these tests by accident.
fn docker_enabled() -> bool {
    if std::env::var("NIMBUS_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("!!! NIMBUS_SKIP_DOCKER=1: SKIPPING a Docker runtime test !!!");
        return false;
    }
    if let Err(error) = ping_docker() {
        panic!(
            "these tests need a running Docker Engine (run scripts/docker-up.sh, or set \
             NIMBUS_SKIP_DOCKER=1 to skip them): {error}"
        );
    }
    true
}

fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => PathBuf::from(&host["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// `GET /_ping` on the engine's socket.
fn ping_docker() -> Result<(), String> {
    let socket = docker_socket();
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let timeout = Some(Duration::from_secs(5));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .and_then(|()| stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"))
        .map_err(|e| format!("cannot ping Docker: {e}"))?;
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("Docker answered the ping with {reply:?}"))
    }
}

/// Runs the `docker` CLI (tests only inspect and prepare with it; Nimbus itself uses the API).
async fn docker(args: &[&str]) -> String {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"));
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A build context: busybox, the entrypoint and a Dockerfile with `extra` steps.
fn write_context(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir).expect("create context dir");
    std::fs::copy(BUSYBOX, dir.join("busybox")).unwrap_or_else(|e| {
        panic!("cannot copy {BUSYBOX} (install busybox-static: scripts/docker-up.sh): {e}")
    });
    std::fs::write(dir.join("entry.sh"), ENTRYPOINT).expect("write entry.sh");
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             {extra}\
             COPY entry.sh /entry.sh\n\
             ENTRYPOINT [\"/bin/sh\", \"/entry.sh\"]\n"
        ),
    )
    .expect("write Dockerfile");
}

/// [`IMAGE`], built with the docker CLI once per test binary run.
async fn test_image() -> &'static str {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let dir = std::env::temp_dir().join(format!("nimbus-e2e-image-{}", std::process::id()));
            write_context(&dir, "");
            docker(&["build", "-q", "-t", IMAGE, &dir.to_string_lossy()]).await;
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    IMAGE
}

// === a server with container cleanup ===

/// A server whose containers and volumes are removed after it stops (fields drop in order).
struct DockerServer {
    server: Server,
    cleanup: Cleanup,
}

/// Removes every container and volume labelled `nimbus.data=<label>`.
struct Cleanup {
    label: String,
}

impl DockerServer {
    async fn start(flags: &[&str]) -> Self {
        Self::start_with_env(flags, &[]).await
    }

    async fn start_with_env(flags: &[&str], env: &[(&str, &str)]) -> Self {
        let server = Server::start_with_env(flags, env).await;
        let data = std::fs::canonicalize(&server.data).expect("data dir exists");
        Self {
            server,
            cleanup: Cleanup {
                label: format!("label=nimbus.data={}", data.display()),
            },
        }
    }

    /// Names of this server's containers; `all` includes stopped ones.
    async fn containers(&self, all: bool) -> Vec<String> {
        let mut args = vec![
            "ps",
            "--filter",
            &self.cleanup.label,
            "--format",
            "{{.Names}}",
        ];
        if all {
            args.insert(1, "-a");
        }
        let mut names: Vec<String> = docker(&args)
            .await
            .lines()
            .map(str::to_string)
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names
    }

    /// `GET path` on the service's generated host; the body when 200.
    async fn body(&self, service: &str, path: &str) -> String {
        let reply = self.get(&Server::host(service), path).await;
        assert_eq!(reply.status, 200, "GET {path} of {service}: {reply:?}");
        reply.body.trim().to_string()
    }

    async fn version(&self, service: &str, name: &str) -> Value {
        self.versions(service)
            .await
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{service} has no version {name}"))
    }
}

impl Deref for DockerServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for DockerServer {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let list = |args: &[&str]| -> Vec<String> {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        for id in list(&["ps", "-aq", "--filter", &self.label]) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &id])
                .output();
        }
        for name in list(&["volume", "ls", "-q", "--filter", &self.label]) {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", &name])
                .output();
        }
        // Images its builds left (a test that failed before its service was deleted).
        for id in list(&["images", "-q", "--filter", &self.label]) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &id])
                .output();
        }
    }
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_version_serves_with_its_limits() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let server = DockerServer::start(&["--meter-interval", "0.2"]).await;

    // Bad input is refused before anything is stored.
    let path = "/v1/namespaces/default/services/web/versions";
    let cases = [
        (
            json!({"command": "sleep 1", "memory": "256Mi"}),
            400,
            "unsupported_by_runtime",
            "memory",
        ),
        (
            json!({"command": "sleep 1", "cpu": 0.5}),
            400,
            "unsupported_by_runtime",
            "cpu",
        ),
        (
            json!({"image": image, "memory": "256m"}),
            400,
            "invalid_memory",
            "memory",
        ),
        (
            json!({"image": "nimbus-e2e/missing:v1"}),
            404,
            "image_not_found",
            "image",
        ),
        (
            json!({"image": image, "volumes": [{"name": "nope", "path": "/data"}]}),
            404,
            "volume_not_found",
            "volumes",
        ),
        (
            json!({"image": image, "cpu": 4096}),
            400,
            "invalid_cpu",
            "cpu",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, reply) = server.api_post(path, &body).await;
        assert_eq!(got, status, "{body}: {reply}");
        let error = error_of(&reply);
        assert_eq!(
            (error["code"].as_str(), error["field"].as_str()),
            (Some(code), Some(field)),
            "{body}"
        );
    }
    let (status, _) = server.api_get("/v1/namespaces/default/services/web").await;
    assert_eq!(status, 404, "no service was created by the refused deploys");
    let out = server
        .cli(&[
            "deploy",
            "web",
            "--command",
            "sleep 100",
            "--memory",
            "64Mi",
        ])
        .await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("not supported by the process runtime"),
        "{out}"
    );

    // An image with a 64 MiB memory limit and an 8 MiB /tmp that the app tries to fill.
    let out = server
        .cli_ok(&[
            "deploy",
            "web",
            "--image",
            image,
            "--memory",
            "64Mi",
            "--tmp-size",
            "8Mi",
            "--cpu",
            "0.5",
            "--env",
            "FILL_MB=16",
        ])
        .await;
    assert!(out.stdout.contains("web v1 is ready"), "{out}");
    let hello = server.body("web", "/").await;
    assert!(hello.starts_with("hello from web v1 (web-v1-"), "{hello}");
    assert_eq!(
        server.body("web", "/memory").await,
        (64u64 << 20).to_string()
    );
    assert_eq!(
        server.body("web", "/tmp-fill").await,
        "full",
        "/tmp is capped at 8 MiB"
    );
    let v1 = server.version("web", "v1").await;
    assert_eq!(v1["spec"]["image"], image, "{v1}");
    assert_eq!(v1["spec"]["memory_bytes"], 64 << 20, "{v1}");
    assert_eq!(v1["spec"]["tmp_size_bytes"], 8 << 20, "{v1}");
    let instances = server.instances("web").await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert!(
        instances[0]["pid"].as_u64().is_some_and(|p| p > 1),
        "a container reports its main process's host pid (metering samples it): {instances:?}"
    );
    assert_eq!(server.containers(false).await.len(), 1);
    // Containers are metered like processes: running time and resident memory from /proc.
    eventually(
        "the container is metered",
        Duration::from_secs(15),
        async || {
            let usage = server.api_ok("/v1/usage?service=web&since=1h").await;
            let total = &usage["total"]["usage"];
            (total["instance_seconds"].as_f64()? > 0.0
                && total["memory_used_gb_seconds"].as_f64()? > 0.0)
                .then_some(())
        },
    )
    .await;

    // The default /tmp (512 MiB) takes the same 16 MiB; container logs are in `nimbus logs`.
    server
        .cli_ok(&["deploy", "web", "--image", image, "--env", "FILL_MB=16"])
        .await;
    server.wait_served_by(&Server::host("web"), "/", "v2").await;
    assert_eq!(server.body("web", "/tmp-fill").await, "ok");
    let logs = server.cli_ok(&["logs", "web", "--version", "v2"]).await;
    assert!(logs.stdout.contains("serving on port"), "{logs}");
    // The container's log has time marks too: its line is in the last hour, not the last second
    // once a second has passed in quiet (the follower marks the pause).
    let logs = server
        .cli_ok(&["logs", "web", "--version", "v2", "--since", "1h"])
        .await;
    assert!(logs.stdout.contains("serving on port"), "{logs}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = server
        .cli_ok(&["logs", "web", "--version", "v2", "--since", "1s"])
        .await;
    assert!(!logs.stdout.contains("serving on port"), "{logs}");

    server.cli_ok(&["service", "delete", "web"]).await;
    assert_eq!(
        server.containers(true).await,
        Vec::<String>::new(),
        "nothing left"
    );
}

/// One stderr line of a running CLI and when it arrived.
type TimedLine = (Instant, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_build_streams_its_output_then_serves() {
    if !docker_enabled() {
        return;
    }
    let server = DockerServer::start(&[]).await;
    let context = server.root.join("work/app");
    // A unique step, so the engine's cache cannot skip it and its output must stream.
    let token = server.marker.replace('-', "");
    write_context(
        &context,
        &format!("RUN echo marker-one-{token} && sleep 2 && echo marker-two-{token}\n"),
    );

    let mut child = tokio::process::Command::new(common::nimbus_bin())
        .args(["deploy", "built", "--source", "app"])
        .env("NIMBUS_API", &server.api)
        .env("NIMBUS_TOKEN", &server.token)
        .current_dir(server.root.join("work"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nimbus deploy");
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut seen: Vec<TimedLine> = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push((Instant::now(), line));
        }
        seen
    });
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("deploy --source finished within 120 s")
        .expect("wait for nimbus deploy");
    let seen = reader.await.expect("stderr reader");
    let text: Vec<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
    assert!(status.success(), "deploy failed: {text:#?}");
    let at = |needle: &str| {
        seen.iter()
            .find(|(_, line)| line.starts_with(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no line with {needle:?} in {text:#?}"))
    };
    let (one, two) = (
        at(&format!("marker-one-{token}")),
        at(&format!("marker-two-{token}")),
    );
    let built = at("✓ built nimbus/default/built:b1");
    assert!(
        two.duration_since(one) >= Duration::from_millis(1500),
        "the build output arrived as it happened, not at the end: {text:#?}"
    );
    assert!(built >= two);
    assert!(
        text.iter()
            .any(|l| l.starts_with("Step 4/7 : RUN echo marker-one")),
        "{text:#?}"
    );

    let hello = server.body("built", "/").await;
    assert!(hello.starts_with("hello from built v1"), "{hello}");
    let v1 = server.version("built", "v1").await;
    assert_eq!(v1["spec"]["image"], "nimbus/default/built:b1", "{v1}");
    assert_eq!(v1["spec"]["build"]["id"], "b1", "{v1}");
    let ms = v1["spec"]["build"]["duration_ms"].as_u64().unwrap_or(0);
    assert!(ms >= 2000, "the build took over 2 s (sleep 2): {ms} ms");

    // The build log is kept.
    let log = server.cli_ok(&["logs", "built", "--build"]).await;
    assert!(
        log.stdout.contains("# build b1 of built: succeeded"),
        "{log}"
    );
    assert!(log.stdout.contains(&format!("marker-two-{token}")), "{log}");
    let builds = server
        .api_ok("/v1/namespaces/default/services/built/builds")
        .await;
    assert_eq!(builds["builds"][0]["status"], "succeeded", "{builds}");

    // The image says which server built it, so only that server ever collects it.
    let label = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"nimbus.data\"}}",
        "nimbus/default/built:b1",
    ])
    .await;
    assert_eq!(
        format!("label=nimbus.data={}", label.trim()),
        server.cleanup.label
    );

    // A second build of the same source (its layers cached): a second tag of the image.
    server.cli_ok(&["deploy", "built", "--source", "app"]).await;
    assert!(image_exists("nimbus/default/built:b2").await);

    // Another service runs the build by its short id (as `docker images` shows it), scaled to
    // zero so no container holds the image: deleting `built` drops its build records, but the
    // image stays, and `byid` still cold-starts from it.
    let id = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "nimbus/default/built:b1",
    ])
    .await;
    let short_id = &id.trim().trim_start_matches("sha256:")[..12];
    server
        .cli_ok(&[
            "deploy",
            "byid",
            "--image",
            short_id,
            "--min-instances",
            "0",
        ])
        .await;
    server.cli_ok(&["service", "delete", "built"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        image_exists("nimbus/default/built:b1").await,
        "the image byid names by id was collected"
    );
    let hello = server.body("byid", "/").await;
    assert!(hello.starts_with("hello from byid v1"), "{hello}");

    // Once nothing needs it, no image is left behind.
    server.cli_ok(&["service", "delete", "byid"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for tag in ["nimbus/default/built:b1", "nimbus/default/built:b2"] {
        while image_exists(tag).await {
            assert!(
                Instant::now() < deadline,
                "{tag} still there 30 s after the delete"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether the engine has `image` (asked with the docker CLI).
async fn image_exists(image: &str) -> bool {
    tokio::process::Command::new("docker")
        .args(["image", "inspect", image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("run docker image inspect: {e}"))
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_creates_no_version() {
    if !docker_enabled() {
        return;
    }
    let server = DockerServer::start(&[]).await;
    let work = server.root.join("work");
    write_context(&work.join("bad"), "RUN echo about-to-fail && exit 3\n");
    let out = server.cli(&["deploy", "broken", "--source", "bad"]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("about-to-fail"),
        "the output streamed: {out}"
    );
    assert!(
        out.stderr
            .contains("build failed at Step 4/7 : RUN echo about-to-fail && exit 3"),
        "the failing step is named: {out}"
    );
    assert!(out.stderr.contains("no version was created"), "{out}");
    let (status, _) = server
        .api_get("/v1/namespaces/default/services/broken")
        .await;
    assert_eq!(status, 404, "no service, no version");
    let log = server.cli_ok(&["logs", "broken", "--build"]).await;
    assert!(log.stdout.contains("failed"), "{log}");
    assert!(
        log.stdout
            .contains("# failed at: Step 4/7 : RUN echo about-to-fail"),
        "{log}"
    );

    // A service that exists keeps its versions; a Dockerfile that cannot parse fails too, and
    // so does a folder without one.
    test_image().await;
    server.cli_ok(&["deploy", "broken", "--image", IMAGE]).await;
    std::fs::create_dir_all(work.join("junk")).expect("mkdir");
    std::fs::write(
        work.join("junk/Dockerfile"),
        "FROM scratch\nNOTANINSTRUCTION x\n",
    )
    .expect("write");
    let out = server.cli(&["deploy", "broken", "--source", "junk"]).await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("build_failed"), "{out}");
    std::fs::create_dir_all(work.join("empty")).expect("mkdir");
    std::fs::write(work.join("empty/README"), "no Dockerfile here").expect("write");
    let out = server.cli(&["deploy", "broken", "--source", "empty"]).await;
    assert!(out.stderr.contains("missing_dockerfile"), "{out}");
    assert_eq!(server.versions("broken").await.len(), 1, "still only v1");

    // A body that is not a source folder, or a Dockerfile outside it, is refused up front.
    let builds = "/v1/namespaces/default/services/broken/builds";
    for (path, codes) in [
        (
            builds.to_string(),
            ["invalid_context", "missing_dockerfile"],
        ),
        (
            format!("{builds}?dockerfile=../Dockerfile"),
            ["invalid_dockerfile"; 2],
        ),
    ] {
        let (status, reply) = server.api_post(&path, &json!({"not": "a tar"})).await;
        assert_eq!(status, 400, "{path}: {reply}");
        let code = error_of(&reply)["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(codes.contains(&code.as_str()), "{path}: {reply}");
    }
    let builds = server
        .api_ok("/v1/namespaces/default/services/broken/builds")
        .await;
    let statuses: Vec<&str> = builds["builds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["status"].as_str())
        .collect();
    assert_eq!(statuses, ["failed", "failed"], "{builds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_and_container_versions_split_traffic() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let server = DockerServer::start(&[]).await;
    server.deploy("mix", &["--min-instances", "1"]).await; // v1: the sample app process
    server
        .cli_ok(&[
            "deploy",
            "mix",
            "--image",
            image,
            "--min-instances",
            "1",
            "--no-traffic",
        ])
        .await;
    server.wait_ready("mix", "v2").await;
    server.set_split("mix", "v1=50,v2=50").await;

    let host = Server::host("mix");
    let mut container = 0;
    let total = 240;
    for _ in 0..total {
        match server.get(&host, "/").await.version().as_str() {
            "v1" => {}
            "v2" => container += 1,
            other => panic!("answered by {other}"),
        }
    }
    let share = container as f64 / total as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "the container version got {container} of {total} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_outlives_versions_and_restarts() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let mut server = DockerServer::start(&[]).await;
    server.cli_ok(&["volumes", "create", "data"]).await;
    let out = server.cli(&["volumes", "create", "data"]).await;
    assert!(out.stderr.contains("volume_exists"), "{out}");
    let deploy = |env: &'static str| {
        [
            "deploy",
            "keep",
            "--image",
            image,
            "--volume",
            "data:/data",
            "--env",
            "DATA_DIR=/data",
            "--env",
            env,
        ]
    };
    server.cli_ok(&deploy("RUN=1")).await;
    assert_eq!(server.body("keep", "/first").await, "v1");

    server.cli_ok(&deploy("RUN=2")).await;
    server
        .wait_served_by(&Server::host("keep"), "/", "v2")
        .await;
    assert_eq!(
        server.body("keep", "/first").await,
        "v1",
        "v2 reads what v1 wrote"
    );

    let list = server.cli_ok(&["-o", "json", "volumes"]).await.json();
    let volume = &list["volumes"][0];
    assert_eq!(volume["name"], "data", "{list}");
    assert_eq!(
        volume["versions"],
        json!(["default/keep/v1", "default/keep/v2"]),
        "{list}"
    );

    // Refused while mounted, with the one error shape.
    let (status, reply) = server.api_delete("/v1/volumes/data").await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(error_of(&reply)["code"], "volume_in_use");

    // A graceful restart stops every container; the new instance finds the data.
    server.restart().await;
    assert_eq!(server.body("keep", "/first").await, "v1");

    server.cli_ok(&["service", "delete", "keep"]).await;
    server.cli_ok(&["volumes", "delete", "data"]).await;
    let list = server.cli_ok(&["-o", "json", "volumes"]).await.json();
    assert_eq!(list["volumes"], json!([]), "{list}");
    let (status, reply) = server.api_delete("/v1/volumes/data").await;
    assert_eq!(status, 404, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_readopts_containers_without_duplicates() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let mut server = DockerServer::start(&[]).await;
    server
        .cli_ok(&["deploy", "sturdy", "--image", image, "--min-instances", "2"])
        .await;
    eventually("2 ready instances", Duration::from_secs(60), async || {
        let ready = server.instances("sturdy").await;
        (ready.iter().filter(|i| i["state"] == "ready").count() == 2).then_some(())
    })
    .await;
    let before = server.containers(false).await;
    assert_eq!(before.len(), 2, "{before:?}");

    server.kill9().await;
    assert_eq!(
        server.containers(false).await,
        before,
        "containers outlive a crash"
    );
    server.restart().await;
    eventually(
        "the adopted instances are ready",
        Duration::from_secs(60),
        async || {
            let ready = server.instances("sturdy").await;
            (ready.iter().filter(|i| i["state"] == "ready").count() == 2).then_some(())
        },
    )
    .await;
    let adopted: Vec<String> = {
        let mut ids: Vec<String> = server
            .instances("sturdy")
            .await
            .iter()
            .filter_map(|i| i["id"].as_str().map(|id| format!("nimbus-{id}")))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(adopted, before, "the same containers, re-adopted");
    // Give the reconciler a few passes: nothing new starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.containers(true).await,
        before,
        "no duplicates, no leftovers"
    );
    let hello = server.body("sturdy", "/").await;
    assert!(hello.starts_with("hello from sturdy v1"), "{hello}");

    server.cli_ok(&["service", "delete", "sturdy"]).await;
    assert_eq!(server.containers(true).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_scale_to_zero_and_cold_start() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let server = DockerServer::start(FAST).await;
    server
        .cli_ok(&[
            "deploy",
            "nap",
            "--image",
            image,
            "--min-instances",
            "0",
            "--scale-to-zero-after",
            "1",
        ])
        .await;
    assert!(server
        .body("nap", "/")
        .await
        .starts_with("hello from nap v1"));

    eventually("nap at zero", Duration::from_secs(30), async || {
        let v = server.version("nap", "v1").await;
        let idle = v["status"] == "idle" && v["desired_instances"] == 0;
        (idle && server.instances("nap").await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        server.containers(true).await,
        Vec::<String>::new(),
        "no container at zero"
    );

    // The activator holds the request while a container starts.
    let hello = server.body("nap", "/").await;
    assert!(hello.starts_with("hello from nap v1"), "{hello}");
    let v = server.version("nap", "v1").await;
    assert_eq!(v["cold_starts"], 1, "{v}");
    assert_eq!(server.containers(false).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_on_the_wrong_port_is_told_which_port_it_listens_on() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    let server = DockerServer::start(&["--startup-timeout", "8s"]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // Like an image built to serve on a fixed port (nginx's 80, say), ignoring $PORT.
    let command = format!("mkdir -p /www && exec httpd -f -p 127.0.0.1:{port} -h /www");
    let out = server
        .cli(&["deploy", "fixed", "--image", image, "--command", &command])
        .await;
    assert!(!out.success(), "{out}");
    let hint = format!("it listens on port {port} but not on $PORT");
    assert!(
        out.stderr
            .contains(&format!("fixed v1 is not ready yet: {hint}")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("deploy with --port {port}")),
        "{out}"
    );
    // What the hint says works.
    let port_text = port.to_string();
    server
        .cli_ok(&[
            "deploy",
            "fixed",
            "--image",
            image,
            "--command",
            &command,
            "--port",
            &port_text,
        ])
        .await;
    let reply = server.get(&Server::host("fixed"), "/").await;
    assert_eq!(
        reply.status, 404,
        "httpd answers (an empty /www): {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_started_after_the_server_is_used_without_a_restart() {
    if !docker_enabled() {
        return;
    }
    let image = test_image().await;
    // The server looks for the engine at a socket that appears only later, as when `dockerd`
    // starts after `nimbus server`; a link to the running engine's socket stands in for that.
    let dir = std::env::temp_dir().join(format!("nimbus-late-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the socket's dir");
    let late_socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&late_socket);
    let docker_host = format!("unix://{}", late_socket.display());
    let mut server = DockerServer::start_with_env(&[], &[("DOCKER_HOST", &docker_host)]).await;

    let out = server.cli(&["deploy", "late", "--image", image]).await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("Docker is not running"), "{out}");
    assert!(out.stderr.contains("no restart needed"), "{out}");
    let (status, _) = server.api_get("/v1/namespaces/default/services/late").await;
    assert_eq!(status, 404, "nothing was created");

    let link_engine = || {
        std::os::unix::fs::symlink(docker_socket(), &late_socket).expect("link the engine's socket")
    };
    link_engine();
    // A failed connect is retried at most once a second.
    let deploy = ["deploy", "late", "--image", image, "--min-instances", "1"];
    eventually(
        "a deploy once Docker runs",
        Duration::from_secs(15),
        async || server.cli(&deploy).await.success().then_some(()),
    )
    .await;
    assert!(server
        .body("late", "/")
        .await
        .starts_with("hello from late v1"));
    assert_eq!(server.containers(false).await.len(), 1);
    let (status, reply) = server.api_get("/v1/volumes").await;
    assert_eq!(status, 200, "{reply}");

    // Restarted while Docker is away, the server keeps the container version and retries it;
    // when Docker is back the version runs again, with no second restart.
    server.sigterm().await;
    std::fs::remove_file(&late_socket).expect("unlink the engine's socket");
    server.restart().await;
    eventually(
        "the version failing without Docker",
        Duration::from_secs(20),
        async || {
            let v = server.version("late", "v1").await;
            v["reason"]
                .as_str()?
                .contains("not available")
                .then_some(())
        },
    )
    .await;
    link_engine();
    eventually(
        "the version ready again",
        Duration::from_secs(60),
        async || {
            let v = server.version("late", "v1").await;
            (v["status"] == "ready").then_some(())
        },
    )
    .await;
    assert!(server
        .body("late", "/")
        .await
        .starts_with("hello from late v1"));
    assert_eq!(server.containers(false).await.len(), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_docker_processes_work_and_containers_say_how_to_start_it() {
    // Needs no engine: the server is pointed at a socket that does not exist.
    let server = Server::start_with_env(
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/nimbus-test-docker.sock")],
    )
    .await;
    server.deploy("proc", &[]).await;
    assert_eq!(server.get(&Server::host("proc"), "/").await.version(), "v1");

    let out = server
        .cli(&["deploy", "box", "--image", "busybox:latest"])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("Docker is not running"), "{out}");
    assert!(out.stderr.contains("`dockerd`"), "{out}");
    assert!(out.stderr.contains("scripts/docker-up.sh"), "{out}");

    let (status, reply) = server
        .api_post(
            "/v1/namespaces/default/services/box/versions",
            &json!({"image": "busybox:latest"}),
        )
        .await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(error_of(&reply)["code"], "docker_unavailable");
    let (status, reply) = server.api_get("/v1/volumes").await;
    assert_eq!(status, 503, "{reply}");
    let (status, _) = server.api_get("/v1/namespaces/default/services/box").await;
    assert_eq!(status, 404, "nothing was created");
    assert_eq!(server.versions("proc").await.len(), 1);
}
