//! [`DockerDriver`]: the [`Driver`] that runs each instance as a container `nimbus-{id}`.
//!
//! Data-dir layout (shared with the process driver, which never touches `docker/`):
//! - `DATA/logs/{namespace}/{service}/{version}/{id}.log` (+ `.log.1` after a rotation)
//! - `DATA/docker/{id}.cursor`: time of the last log entry copied into the log file.
//!
//! Tasks: each tracked instance has a log follower (copies the engine's output into the log
//! file, rotating it as the process driver does) and an exit watcher (the engine's `wait`), which
//! lets the follower copy the last lines before it publishes the exit on a `watch` channel. `wait`
//! and `stop` both listen to that channel.
//!
//! An instance stays in the table until `stop` is called for it; an exited container stays in the
//! engine until then too, so its exit code and logs remain. Dropping the driver aborts its tasks
//! (saving each follower's cursor) and leaves the containers running: that is what a server crash
//! looks like, and the next run's [`Driver::adopt`] picks them up by their labels.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use nimbus_runtime::{
    check_component, logs, Driver, DriverError, ExitStatus, InstanceInfo, InstanceSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::container::{
    container_name, create_body, exit_status, info_from_labels, stop_timeout_secs, LABEL_DATA,
};
use crate::error::{status_code, DockerError};
use crate::timestamp::{split_entry, LogTimestamp};
use crate::volume::summary_name;

#[cfg(test)]
mod tests;

/// Where the engine listens unless `DOCKER_HOST` or the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Seconds the engine client waits for a reply's headers (streams are not cut by it).
const ENGINE_TIMEOUT_SECS: u64 = 120;
/// How long the exit watcher lets the follower copy the last lines.
const FOLLOWER_DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `stop` waits for the watcher after the engine says the container stopped.
const AFTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// A follower saves its cursor at most this often (and when it ends or is aborted).
const CURSOR_SAVE_EVERY: Duration = Duration::from_millis(100);
/// Pause before the exit watcher asks the engine again after a broken connection.
const WAIT_RETRY: Duration = Duration::from_secs(1);
/// How often a container log's growth is marked in its time index (`logs --since`).
const MARK_EVERY: Duration = Duration::from_secs(1);

/// Tunables of the docker driver; [`Default`] is what the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The engine's unix socket; `None` = `DOCKER_HOST` (`unix://…`) or [`DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
    /// How long `connect` waits for the engine to answer.
    pub connect_timeout: Duration,
    /// A log file above this size is rotated (copy to `.1`, truncate), as the process driver
    /// does. Also caps the engine's own copy of each container's output.
    pub log_cap_bytes: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: None,
            connect_timeout: Duration::from_secs(5),
            log_cap_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Runs instances as containers on the local Docker Engine.
#[derive(Debug)]
pub struct DockerDriver {
    docker: Docker,
    /// Canonical, so `./data` and `/abs/data` label containers the same way.
    data_dir: PathBuf,
    /// The `nimbus.data` label of everything this driver creates.
    data_label: String,
    config: DockerConfig,
    instances: Mutex<HashMap<String, Arc<Tracked>>>,
    /// Ids between the start of `start` and their entry in `instances`.
    starting: Mutex<HashSet<String>>,
}

/// One container the driver knows about.
#[derive(Debug)]
struct Tracked {
    info: InstanceInfo,
    log_path: PathBuf,
    /// `None` while running; set once by the exit watcher.
    exit: watch::Receiver<Option<ExitStatus>>,
    watcher: AbortHandle,
    follower: AbortHandle,
}

// === impl DockerDriver ===

impl DockerDriver {
    /// Connects to the engine (see [`DockerConfig::socket`]) and keeps files under `data_dir`.
    /// Fails with "Docker is not running: …" when the socket is missing or does not answer.
    pub async fn connect(data_dir: &Path) -> Result<Self, DriverError> {
        Self::connect_with(data_dir, DockerConfig::default()).await
    }

    /// [`Self::connect`] with explicit tunables.
    pub async fn connect_with(data_dir: &Path, config: DockerConfig) -> Result<Self, DriverError> {
        for dir in [data_dir.join("logs"), data_dir.join("docker")] {
            std::fs::create_dir_all(&dir).map_err(|source| DriverError::Io {
                action: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let data_dir = std::fs::canonicalize(data_dir).map_err(|source| DriverError::Io {
            action: "resolve the data dir",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let docker_host = std::env::var("DOCKER_HOST").ok();
        let socket = resolve_socket(config.socket.as_deref(), docker_host.as_deref());
        let socket = socket.map_err(|error| DriverError::Io {
            action: "connect to Docker at",
            path: PathBuf::from(docker_host.unwrap_or_default()),
            source: io::Error::other(error),
        })?;
        let docker = connect_engine(&socket, config.connect_timeout)
            .await
            .map_err(|error| DriverError::Io {
                action: "connect to Docker at",
                path: socket.clone(),
                source: io::Error::other(error),
            })?;
        tracing::info!(socket = %socket.display(), data = %data_dir.display(), "Connected to Docker.");
        Ok(Self {
            docker,
            data_label: data_dir.to_string_lossy().into_owned(),
            data_dir,
            config,
            instances: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
        })
    }

    /// The (canonical) data dir this driver keeps its logs in and labels containers with.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the log of an instance lives (whether or not it runs): the process driver's layout.
    pub fn log_path_for(&self, namespace: &str, service: &str, version: &str, id: &str) -> PathBuf {
        nimbus_runtime::instance_log_path(&self.data_dir, namespace, service, version, id)
    }

    /// The instances this driver tracks (started or adopted, until stopped), sorted by id.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let mut infos: Vec<InstanceInfo> = self.table().values().map(|t| t.info.clone()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        infos
    }

    pub(crate) fn engine(&self) -> &Docker {
        &self.docker
    }

    pub(crate) fn data_label(&self) -> &str {
        &self.data_label
    }

    /// The engine's label filter for everything this driver owns.
    pub(crate) fn data_filter(&self) -> HashMap<&'static str, Vec<String>> {
        HashMap::from([("label", vec![format!("{LABEL_DATA}={}", self.data_label)])])
    }

    fn cursor_path(&self, id: &str) -> PathBuf {
        self.data_dir.join("docker").join(format!("{id}.cursor"))
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Tracked>>> {
        lock(&self.instances)
    }

    /// Claims `id` for one `start` at a time; released when the guard drops.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>, DriverError> {
        let table = self.table();
        let mut starting = lock(&self.starting);
        if table.contains_key(id) || !starting.insert(id.to_owned()) {
            return Err(DriverError::AlreadyRunning(id.to_owned()));
        }
        Ok(Reservation {
            starting: &self.starting,
            id: id.to_owned(),
        })
    }

    /// Creates the container; a leftover of the same name (a previous run's, never adopted) is
    /// removed first unless it still runs.
    async fn create(
        &self,
        id: &str,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<(), DriverError> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let mut removed_leftover = false;
        loop {
            match self
                .docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if status_code(&error) == Some(409) && !removed_leftover => {
                    let running = self
                        .docker
                        .inspect_container(name, None)
                        .await
                        .ok()
                        .and_then(|c| c.state)
                        .and_then(|s| s.running)
                        .unwrap_or(false);
                    if running {
                        return Err(DriverError::AlreadyRunning(id.to_owned()));
                    }
                    tracing::info!(
                        container = name,
                        "Removing a leftover container of the same name."
                    );
                    self.remove_container(name)
                        .await
                        .map_err(|error| spawn_error(id, error))?;
                    removed_leftover = true;
                }
                Err(error) => {
                    return Err(spawn_error(
                        id,
                        DockerError::api(format!("create container {name}"))(error),
                    ))
                }
            }
        }
    }

    /// Removes a container whatever its state; a missing one is fine.
    async fn remove_container(&self, name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone already, or the engine is removing it right now.
            Err(error) if matches!(status_code(&error), Some(404 | 409)) => Ok(()),
            Err(error) => Err(DockerError::api(format!("remove container {name}"))(error)),
        }
    }

    /// When the container started (Unix seconds) and the host pid of its main process (the
    /// leader of its process group, which metering samples from `/proc`).
    async fn started(&self, name: &str) -> (Option<u64>, Option<u32>) {
        let Some(state) = self
            .docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
        else {
            return (None, None);
        };
        let pid = state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let started = state
            .started_at
            .as_deref()
            .and_then(LogTimestamp::parse_rfc3339)
            .and_then(|t| u64::try_from(t.secs()).ok());
        (started, pid)
    }

    /// Starts the log follower and the exit watcher of a running container.
    fn track(&self, info: InstanceInfo, resume: Option<LogTimestamp>) -> Arc<Tracked> {
        let container = container_name(&info.id);
        let log_path = self.log_path_for(&info.namespace, &info.service, &info.version, &info.id);
        let follower = tokio::spawn(follow_logs(LogCopy {
            docker: self.docker.clone(),
            container: container.clone(),
            log_path: log_path.clone(),
            cursor_path: self.cursor_path(&info.id),
            resume,
            cap: self.config.log_cap_bytes,
        }));
        let follower_abort = follower.abort_handle();
        let (tx, exit) = watch::channel(None);
        let watcher = tokio::spawn(watch_exit(
            self.docker.clone(),
            container,
            info.id.clone(),
            follower,
            log_path.clone(),
            tx,
        ))
        .abort_handle();
        Arc::new(Tracked {
            info,
            log_path,
            exit,
            watcher,
            follower: follower_abort,
        })
    }

    /// Cursor files whose container is gone are leftovers.
    fn remove_stale_cursors(&self, keep: &HashSet<String>) {
        let dir = self.data_dir.join("docker");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path
                .extension()
                .is_some_and(|e| e == "cursor" || e == "tmp");
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if ours && !keep.contains(id) {
                remove_file(&path);
            }
        }
    }
}

impl Drop for DockerDriver {
    fn drop(&mut self) {
        for tracked in self.table().values() {
            tracked.watcher.abort();
            tracked.follower.abort();
        }
    }
}

#[async_trait::async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError> {
        let container = crate::container::validate(spec)?;
        let _reservation = self.reserve(&spec.id)?;
        let id = spec.id.as_str();
        if !self
            .image_exists(&container.image)
            .await
            .map_err(|error| spawn_error(id, error))?
        {
            return Err(spawn_error(
                id,
                DockerError::ImageMissing(container.image.clone()),
            ));
        }
        for mount in &container.volumes {
            self.our_volume(&mount.name)
                .await
                .map_err(|error| spawn_error(id, error))?;
        }
        let name = container_name(id);
        let body = create_body(spec, container, &self.data_label, self.config.log_cap_bytes);
        self.create(id, &name, body).await?;
        if let Err(error) = self.docker.start_container(&name, None).await {
            if let Err(error) = self.remove_container(&name).await {
                tracing::warn!(%error, container = %name, "Cannot remove a container that did not start.");
            }
            return Err(spawn_error(
                id,
                DockerError::api(format!("start container {name}"))(error),
            ));
        }
        let (started_at, pid) = self.started(&name).await;
        let started_at = started_at.unwrap_or_else(unix_now);
        // A fresh container: its log starts at the beginning, not at an old cursor.
        remove_file(&self.cursor_path(id));
        let info = InstanceInfo {
            id: id.to_owned(),
            namespace: spec.namespace.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            port: spec.port,
            pid,
            started_at,
        };
        let tracked = self.track(info.clone(), None);
        tracing::info!(
            instance = id,
            container = %name,
            image = %container.image,
            port = spec.port,
            log = %tracked.log_path.display(),
            "Container started."
        );
        self.table().insert(id.to_owned(), tracked);
        Ok(info)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError> {
        let mut exit = self
            .table()
            .get(id)
            .map(|t| t.exit.clone())
            .ok_or_else(|| DriverError::UnknownInstance(id.to_owned()))?;
        let status = match exit.wait_for(Option::is_some).await {
            Ok(exited) => (*exited).clone().unwrap_or(ExitStatus::Unknown),
            // The watcher was aborted: only when the driver is dropped.
            Err(_) => ExitStatus::Unknown,
        };
        Ok(status)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DriverError> {
        if check_component("id", id).is_err() {
            return Ok(()); // never a container of ours
        }
        let name = container_name(id);
        let tracked = self.table().get(id).cloned();
        let stop_error = |error: DockerError| DriverError::Io {
            action: "stop container",
            path: PathBuf::from(&name),
            source: io::Error::other(error),
        };
        tracing::info!(instance = id, container = %name, ?grace, "Stopping container.");
        // SIGTERM (or the image's stop signal), SIGKILL after the timeout.
        let options = StopContainerOptionsBuilder::new()
            .t(stop_timeout_secs(grace))
            .build();
        match self.docker.stop_container(&name, Some(options)).await {
            Ok(()) => {}
            // Not running, or not there at all: nothing to stop.
            Err(error) if matches!(status_code(&error), Some(304 | 404)) => {}
            Err(error) => return Err(stop_error(DockerError::api(format!("stop {name}"))(error))),
        }
        if let Some(tracked) = &tracked {
            // The watcher lets the follower copy the last lines before it reports the exit.
            let mut exit = tracked.exit.clone();
            let _ = tokio::time::timeout(AFTER_STOP_TIMEOUT, exit.wait_for(Option::is_some)).await;
            tracked.follower.abort();
        }
        self.remove_container(&name).await.map_err(stop_error)?;
        remove_file(&self.cursor_path(id));
        if let Some(tracked) = tracked {
            let mut table = self.table();
            if table.get(id).is_some_and(|t| Arc::ptr_eq(t, &tracked)) {
                table.remove(id);
            }
        }
        Ok(())
    }

    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError> {
        let filters = self.data_filter();
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|error| DriverError::Io {
                action: "list the Docker containers of",
                path: self.data_dir.clone(),
                source: io::Error::other(DockerError::api("list containers")(error)),
            })?;
        let mut adopted = Vec::new();
        let mut keep = HashSet::new();
        for summary in containers {
            let name = summary_name(summary.names.as_deref());
            let created = summary
                .created
                .and_then(|c| u64::try_from(c).ok())
                .unwrap_or(0);
            let info = summary
                .labels
                .as_ref()
                .and_then(|labels| info_from_labels(labels, created))
                .filter(|info| container_name(&info.id) == name);
            let running = summary.state == Some(ContainerSummaryStateEnum::RUNNING);
            match info {
                Some(info) if self.table().contains_key(&info.id) => {
                    keep.insert(info.id);
                }
                Some(mut info) if running => {
                    let (started_at, pid) = self.started(&name).await;
                    if let Some(started_at) = started_at {
                        info.started_at = started_at;
                    }
                    info.pid = pid;
                    let resume = read_cursor(&self.cursor_path(&info.id));
                    tracing::info!(instance = %info.id, container = %name, ?resume, "Adopted container.");
                    keep.insert(info.id.clone());
                    adopted.push(info.clone());
                    let tracked = self.track(info.clone(), resume);
                    self.table().insert(info.id, tracked);
                }
                _ => {
                    // Exited, or not ours to run again: clean up what the previous run left.
                    let target = summary.id.clone().unwrap_or(name.clone());
                    tracing::info!(container = %name, state = ?summary.state, "Removing a leftover container.");
                    self.remove_container(&target)
                        .await
                        .map_err(|error| DriverError::Io {
                            action: "remove leftover container",
                            path: PathBuf::from(&name),
                            source: io::Error::other(error),
                        })?;
                }
            }
        }
        self.remove_stale_cursors(&keep);
        Ok(adopted)
    }

    fn log_path(&self, id: &str) -> Option<PathBuf> {
        self.table().get(id).map(|t| t.log_path.clone())
    }
}

/// A claim on an instance id while `start` runs.
struct Reservation<'a> {
    starting: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(self.starting).remove(&self.id);
    }
}

// === connecting ===

/// The socket to use: the configured one, else `DOCKER_HOST` when it is `unix://…`, else the
/// default. Any other `DOCKER_HOST` is refused rather than silently ignored.
pub fn resolve_socket(
    configured: Option<&Path>,
    docker_host: Option<&str>,
) -> Result<PathBuf, DockerError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(DockerError::UnsupportedHost(host.to_owned())),
        },
    }
}

/// A client that has answered a ping and agreed on an API version (older engines speak older
/// versions; bollard's default is newer than Debian's engine).
async fn connect_engine(socket: &Path, timeout: Duration) -> Result<Docker, DockerError> {
    let not_running = |detail: String| DockerError::NotRunning { detail };
    if !socket.exists() {
        return Err(not_running(format!("no socket at {}", socket.display())));
    }
    let path = socket
        .to_str()
        .ok_or_else(|| not_running(format!("socket path {} is not UTF-8", socket.display())))?;
    let docker = Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        .map_err(|error| not_running(error.to_string()))?;
    match tokio::time::timeout(timeout, docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(not_running(error.to_string())),
        Err(_) => return Err(not_running(format!("no answer within {timeout:?}"))),
    }
    match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(error)) => Err(DockerError::api("agree on an API version")(error)),
        Err(_) => Err(not_running(format!("no version answer within {timeout:?}"))),
    }
}

// === tasks ===

/// What a log follower needs.
struct LogCopy {
    docker: Docker,
    container: String,
    log_path: PathBuf,
    cursor_path: PathBuf,
    /// The last entry a previous follower copied; older entries are skipped.
    resume: Option<LogTimestamp>,
    cap: u64,
}

/// Copies the container's output into its log file until the engine ends the stream (the
/// container stopped) or the task is aborted.
async fn follow_logs(job: LogCopy) {
    let mut file = match open_log(&job.log_path).await {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, path = %job.log_path.display(), "Cannot open the container log file.");
            return;
        }
    };
    let mut size = file.metadata().await.map_or(0, |m| m.len());
    let mut cursor = Cursor::new(job.cursor_path, job.resume);
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(job.resume.map_or(0, LogTimestamp::since_param))
        .build();
    let mut stream = job.docker.logs(&job.container, Some(options));
    // The time index gets the log's size about once a second while it grows, and once more when
    // output pauses, so `logs --since` finds where a time's lines start to within a second.
    let mut marker = logs::Marker::default();
    let mut marked_at = Instant::now();
    loop {
        let item = match tokio::time::timeout(MARK_EVERY, stream.next()).await {
            Ok(Some(item)) => Some(item),
            Ok(None) => break,
            Err(_) => None, // quiet for a second
        };
        if marked_at.elapsed() >= MARK_EVERY || item.is_none() {
            // A few bytes appended to a local file, at most once a second.
            if let Err(error) = marker.mark(&job.log_path, logs::unix_ms(), size) {
                tracing::debug!(%error, path = %job.log_path.display(), "Cannot mark the log's time index.");
            }
            marked_at = Instant::now();
        }
        let Some(item) = item else {
            continue;
        };
        let entry = match item {
            Ok(output) => output.into_bytes(),
            Err(error) => {
                tracing::debug!(%error, container = %job.container, "Log stream ended.");
                break;
            }
        };
        let (time, text) = match split_entry(&entry) {
            Some((time, _)) if cursor.is_copied(time) => continue,
            Some((time, text)) => (Some(time), text),
            None => (None, &entry[..]),
        };
        // On disk first, then the cursor: a crash may repeat a line, never lose one.
        if let Err(error) = write_flushed(&mut file, text).await {
            tracing::warn!(%error, path = %job.log_path.display(), "Cannot write the container log.");
            break;
        }
        if let Some(time) = time {
            cursor.advance(time);
        }
        size += text.len() as u64;
        if size > job.cap {
            let path = job.log_path.clone();
            let cap = job.cap;
            match tokio::task::spawn_blocking(move || logs::rotate_if_over(&path, cap)).await {
                Ok(Ok(rotated)) => {
                    if rotated {
                        marker = logs::Marker::default();
                    }
                    size = file.metadata().await.map_or(0, |m| m.len());
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, path = %job.log_path.display(), "Cannot rotate log.")
                }
                Err(_) => {}
            }
        }
        cursor.save_if_due();
    }
    // `cursor` saves itself when dropped, here or when the task is aborted.
}

async fn open_log(path: &Path) -> io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

async fn write_flushed(file: &mut tokio::fs::File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes).await?;
    file.flush().await
}

/// Waits for the container's exit, lets the follower finish, then publishes how it ended.
async fn watch_exit(
    docker: Docker,
    container: String,
    id: String,
    follower: JoinHandle<()>,
    log_path: PathBuf,
    tx: watch::Sender<Option<ExitStatus>>,
) {
    let code = wait_for_exit(&docker, &container).await;
    let follower_abort = follower.abort_handle();
    if tokio::time::timeout(FOLLOWER_DRAIN_TIMEOUT, follower)
        .await
        .is_err()
    {
        follower_abort.abort();
    }
    let oom_killed = match docker.inspect_container(&container, None).await {
        Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
        Err(_) => false,
    };
    if oom_killed {
        let note = "[nimbus] Out of memory: the kernel killed a process of this container \
                    (it reached its memory limit).\n";
        let path = log_path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            logs::open_append(&path).and_then(|mut f| f.write_all(note.as_bytes()))
        })
        .await;
    }
    let status = code.map_or(ExitStatus::Unknown, |code| exit_status(code, oom_killed));
    tracing::info!(instance = %id, ?status, "Container exited.");
    tx.send_replace(Some(status));
}

/// The container's exit code, or `None` when it vanished without one. Survives a broken
/// connection by asking again.
async fn wait_for_exit(docker: &Docker, container: &str) -> Option<i64> {
    loop {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let reply = docker.wait_container(container, Some(options)).next().await;
        match reply {
            Some(Ok(response)) => return Some(response.status_code),
            Some(Err(EngineError::DockerContainerWaitError { code, .. })) => return Some(code),
            Some(Err(error)) if DockerError::is_not_found(&error) => return None,
            other => {
                tracing::debug!(
                    ?other,
                    container,
                    "Waiting for the container failed; asking again."
                );
                match docker.inspect_container(container, None).await {
                    Ok(info) => {
                        let state = info.state.unwrap_or_default();
                        if state.running != Some(true) {
                            return state.exit_code;
                        }
                    }
                    Err(error) if DockerError::is_not_found(&error) => return None,
                    Err(_) => {}
                }
                tokio::time::sleep(WAIT_RETRY).await;
            }
        }
    }
}

/// The follower's position, saved to disk at most every [`CURSOR_SAVE_EVERY`] and on drop.
struct Cursor {
    path: PathBuf,
    /// Where the previous follower stopped: entries up to it are already in the file.
    resume: Option<LogTimestamp>,
    copied: Option<LogTimestamp>,
    saved: Option<LogTimestamp>,
    last_save: Option<Instant>,
}

// === impl Cursor ===

impl Cursor {
    fn new(path: PathBuf, resume: Option<LogTimestamp>) -> Self {
        Self {
            path,
            resume,
            copied: resume,
            saved: resume,
            last_save: None,
        }
    }

    /// Only the resume point counts, not this follower's progress: the engine merges stdout and
    /// stderr as its copiers write them, so an entry may arrive after a newer one of the other
    /// stream, and it is still new.
    fn is_copied(&self, time: LogTimestamp) -> bool {
        self.resume.is_some_and(|resume| time <= resume)
    }

    fn advance(&mut self, time: LogTimestamp) {
        if self.copied.is_none_or(|copied| time > copied) {
            self.copied = Some(time);
        }
    }

    fn save_if_due(&mut self) {
        if self
            .last_save
            .is_none_or(|at| at.elapsed() >= CURSOR_SAVE_EVERY)
        {
            self.save();
        }
    }

    fn save(&mut self) {
        let Some(copied) = self.copied.filter(|c| Some(*c) != self.saved) else {
            return;
        };
        // Write-then-rename: a torn cursor would make the next follower copy everything again.
        let tmp = self.path.with_extension("tmp");
        let result = std::fs::write(&tmp, copied.to_cursor())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match result {
            Ok(()) => {
                self.saved = Some(copied);
                self.last_save = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "Cannot save the log cursor.")
            }
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.save();
    }
}

// === helpers ===

fn read_cursor(path: &Path) -> Option<LogTimestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    LogTimestamp::from_cursor(&text)
}

fn remove_file(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %path.display(), "Cannot remove file.");
        }
    }
}

/// `start` failures carry the engine's reason in the process driver's "cannot spawn" shape.
fn spawn_error(id: &str, error: DockerError) -> DriverError {
    DriverError::Spawn {
        id: id.to_owned(),
        source: io::Error::other(error),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
