//! Scaffolding for tests against the real Docker Engine: `docker_test(|env| async { … })` gives a
//! test its own data dir and, whatever happens in it, removes every container and volume labelled
//! with that data dir afterwards. `env.test_image()` builds a tiny image FROM scratch with the
//! host's static busybox (no registry needed) whose entrypoint serves `/` with `busybox httpd` on
//! 127.0.0.1:$PORT.
//!
//! Without a reachable engine the tests FAIL, so CI cannot silently skip them; set
//! `NIMBUS_SKIP_DOCKER=1` to skip them on purpose.

#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::unwrap_used)] // test scaffolding: a failed unwrap fails the test

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use bollard::Docker;
use futures_util::FutureExt;
use nimbus_docker::container::LABEL_DATA;
use nimbus_docker::{resolve_socket, DockerDriver};
use nimbus_runtime::{ContainerSpec, InstanceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// No test may run longer than this (a build on a cold cache included).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The image every test runs; built once per test binary run and then cached by the engine.
pub const TEST_IMAGE: &str = "nimbus-test/httpd:v1";
/// Where Debian's `busybox-static` puts its binary (`scripts/docker-up.sh` installs it).
pub const BUSYBOX: &str = "/bin/busybox";

const ENTRYPOINT: &str = r#"#!/bin/sh
mkdir -p /www
echo "hello from $NIMBUS_INSTANCE" > /www/index.html
echo "serving on port $PORT"
exec httpd -f -p "127.0.0.1:$PORT" -h /www
"#;

/// A test's world: its data dir and a client of its own to inspect the engine.
#[derive(Clone)]
pub struct Env {
    pub data_dir: PathBuf,
    pub engine: Docker,
}

/// Runs `body` against the engine, then cleans up what it left. Skips only when
/// `NIMBUS_SKIP_DOCKER=1`.
pub async fn docker_test<F, Fut>(body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = TestResult>,
{
    if std::env::var("NIMBUS_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("NIMBUS_SKIP_DOCKER=1: skipping a test that needs Docker");
        return;
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let env = match Env::new(tmp.path()).await {
        Ok(env) => env,
        Err(error) => panic!(
            "these tests need a running Docker Engine (run scripts/docker-up.sh, or set \
             NIMBUS_SKIP_DOCKER=1 to skip them): {error}"
        ),
    };
    let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, body(env.clone())))
        .catch_unwind()
        .await;
    env.cleanup().await;
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => panic!("test failed: {error}"),
        Ok(Err(_)) => panic!("test timed out after {TEST_TIMEOUT:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// === impl Env ===

impl Env {
    async fn new(dir: &Path) -> TestResult<Self> {
        let data_dir = std::fs::canonicalize(dir)?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let socket = resolve_socket(None, docker_host.as_deref())?;
        let engine = Docker::connect_with_unix(
            socket.to_str().ok_or("socket path is not UTF-8")?,
            120,
            bollard::API_DEFAULT_VERSION,
        )?;
        tokio::time::timeout(Duration::from_secs(5), engine.ping()).await??;
        let engine = engine.negotiate_version().await?;
        Ok(Self { data_dir, engine })
    }

    /// A new driver on this test's data dir.
    pub async fn driver(&self) -> TestResult<DockerDriver> {
        Ok(DockerDriver::connect(&self.data_dir).await?)
    }

    pub fn data_label(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }

    /// Builds [`TEST_IMAGE`] (a cache hit after the first time).
    pub async fn test_image(&self, driver: &DockerDriver) -> TestResult {
        let context = self.data_dir.join("image-context");
        write_test_context(&context)?;
        driver.build(&context, None, TEST_IMAGE, |_| {}).await?;
        Ok(())
    }

    /// Removes an image a test built (best effort: a leftover only costs disk).
    pub async fn remove_image(&self, tag: &str) {
        let _ = self
            .engine
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }

    /// Names of the engine's containers (any state) with all these labels, ours or not.
    pub async fn containers_labelled(&self, labels: &[(&str, &str)]) -> TestResult<Vec<String>> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut names: Vec<String> = self
            .engine
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every container of this test's data dir.
    pub async fn our_containers(&self) -> TestResult<Vec<String>> {
        let label = self.data_label();
        self.containers_labelled(&[(LABEL_DATA, &label)]).await
    }

    /// Removes every container and volume labelled with this test's data dir.
    async fn cleanup(&self) {
        let filters =
            HashMap::from([("label", vec![format!("{LABEL_DATA}={}", self.data_label())])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        if let Ok(containers) = self.engine.list_containers(Some(options)).await {
            for id in containers.into_iter().filter_map(|c| c.id) {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = self.engine.remove_container(&id, Some(options)).await;
            }
        }
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        if let Ok(volumes) = self.engine.list_volumes(Some(options)).await {
            for volume in volumes.volumes.unwrap_or_default() {
                let options = RemoveVolumeOptionsBuilder::new().force(true).build();
                let _ = self.engine.remove_volume(&volume.name, Some(options)).await;
            }
        }
    }
}

/// The build context of [`TEST_IMAGE`].
pub fn write_test_context(dir: &Path) -> TestResult {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(BUSYBOX, dir.join("busybox")).map_err(|e| {
        format!("cannot copy {BUSYBOX} (install busybox-static: scripts/docker-up.sh): {e}")
    })?;
    std::fs::write(dir.join("entry.sh"), ENTRYPOINT)?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY entry.sh /entry.sh\n\
         ENTRYPOINT [\"/bin/sh\", \"/entry.sh\"]\n",
    )?;
    Ok(())
}

/// A unique instance id: tests run in parallel, and earlier runs may have left containers.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A spec running [`TEST_IMAGE`]; an empty `command` runs its httpd entrypoint.
pub fn spec(id: &str, command: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.to_owned(),
        namespace: "default".into(),
        service: "hello".into(),
        version: "v1".into(),
        command: command.to_owned(),
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        port: nimbus_runtime::pick_free_port().unwrap(),
        container: Some(ContainerSpec {
            image: TEST_IMAGE.into(),
            ..ContainerSpec::default()
        }),
    }
}

/// The body of `GET path` on 127.0.0.1:port (HTTP/1.0, so the server closes).
pub async fn http_get(port: u16, path: &str) -> TestResult<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {head}").into());
    }
    Ok(body.to_owned())
}

/// The log file's text ("" while it does not exist).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls the log file every 50 ms until it contains `needle`, for at most `within`.
pub async fn log_contains(path: &Path, needle: &str, within: Duration) -> bool {
    eventually(within, || read_log(path).contains(needle)).await
}

/// Polls `cond` every 50 ms for at most `within`.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
