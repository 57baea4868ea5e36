//! The process driver: each instance is `sh -c COMMAND` in its own process group, logging to a
//! file it owns, recorded in a pid file so the next server run can re-adopt it.
//!
//! Data-dir layout:
//! - `DATA/logs/{namespace}/{service}/{version}/{id}.log` (+ `.log.1` after a rotation)
//! - `DATA/run/{id}.json`: [`InstanceInfo`] + pgid + leader start time, while the instance lives.
//!
//! Tasks and state: one table `id → Tracked`. Each tracked instance has exactly one watcher task
//! that owns the exit: for our own child it awaits the tokio `Child` (so it is reaped, never a
//! zombie); for an adopted process, which is not our child, it polls `/proc` every
//! [`ProcessConfig::adopted_poll`]. The watcher publishes the exit on a `watch` channel, which is
//! what `wait` and `stop` both listen to, so they never race for the child. One more task rotates
//! logs every [`ProcessConfig::rotate_every`].
//!
//! An instance stays in the table until `stop` is called for it, or until
//! [`ProcessConfig::forget_exited_after`] has passed since it exited (so `log_path` still works
//! for a crash report, but a crashed instance nobody stops does not stay forever).
//!
//! Dropping the driver aborts its tasks but leaves the instances running: that is what a server
//! crash looks like, and the next run's [`Driver::adopt`] picks them up.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::pidfile::{self, PidRecord};
use crate::{logs, proc, Driver, DriverError, ExitStatus, InstanceInfo, InstanceSpec};

#[cfg(test)]
mod tests;

/// How long `stop` waits for the reaper after SIGKILL, and for the group to empty.
const AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables of the process driver; [`Default`] is what the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// A log file above this size is rotated, so an instance keeps at most ~2× this on disk.
    pub log_cap_bytes: u64,
    /// How often the rotation task checks log sizes.
    pub rotate_every: Duration,
    /// How often `wait` checks whether an adopted (not our child) process is still alive.
    pub adopted_poll: Duration,
    /// An exited instance nobody stopped is forgotten this long after its exit.
    pub forget_exited_after: Duration,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            log_cap_bytes: 10 * 1024 * 1024,
            rotate_every: Duration::from_secs(2),
            adopted_poll: Duration::from_millis(150),
            forget_exited_after: Duration::from_secs(600),
        }
    }
}

/// The embedded default runtime: instances are local process groups.
#[derive(Debug)]
pub struct ProcessDriver {
    data_dir: PathBuf,
    config: ProcessConfig,
    instances: Mutex<HashMap<String, Arc<Tracked>>>,
    /// The log rotation task, aborted on drop.
    rotator: Mutex<Option<AbortHandle>>,
}

/// One instance the driver knows about.
#[derive(Debug)]
struct Tracked {
    info: InstanceInfo,
    pgid: i32,
    start_time: u64,
    log_path: PathBuf,
    pid_path: PathBuf,
    /// `None` while running; set once by the watcher task.
    exit: watch::Receiver<Option<Exited>>,
    /// The watcher task (reaper or poller), aborted when the driver is dropped.
    watcher: AbortHandle,
}

#[derive(Debug, Clone)]
struct Exited {
    status: ExitStatus,
    at: Instant,
}

// === impl ProcessDriver ===

impl ProcessDriver {
    /// A driver with the default [`ProcessConfig`], keeping its files under `data_dir`.
    /// Must be called inside a tokio runtime (it spawns the log rotation task).
    pub fn new(data_dir: &Path) -> Result<Arc<Self>, DriverError> {
        Self::with_config(data_dir, ProcessConfig::default())
    }

    /// A driver with explicit tunables (tests use a tiny log cap).
    pub fn with_config(data_dir: &Path, config: ProcessConfig) -> Result<Arc<Self>, DriverError> {
        tokio::runtime::Handle::try_current().map_err(|_| DriverError::NoRuntime)?;
        for dir in [data_dir.join("logs"), data_dir.join("run")] {
            std::fs::create_dir_all(&dir).map_err(|source| DriverError::Io {
                action: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let driver = Arc::new(Self {
            data_dir: data_dir.to_path_buf(),
            config,
            instances: Mutex::new(HashMap::new()),
            rotator: Mutex::new(None),
        });
        let rotator = tokio::spawn(rotate_logs(Arc::downgrade(&driver))).abort_handle();
        *lock(&driver.rotator) = Some(rotator);
        Ok(driver)
    }

    /// The data dir this driver keeps its logs and pid files in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the log of an instance lives (whether or not it runs).
    pub fn log_path_for(&self, namespace: &str, service: &str, version: &str, id: &str) -> PathBuf {
        instance_log_path(&self.data_dir, namespace, service, version, id)
    }

    fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    fn pid_path(&self, id: &str) -> PathBuf {
        self.run_dir().join(format!("{id}.json"))
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Tracked>>> {
        lock(&self.instances)
    }

    /// Spawns the child and its reaper; called with the table locked so an id starts only once.
    fn spawn_instance(&self, spec: &InstanceSpec) -> Result<Arc<Tracked>, DriverError> {
        let log_path = self.log_path_for(&spec.namespace, &spec.service, &spec.version, &spec.id);
        let pid_path = self.pid_path(&spec.id);
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| DriverError::Io {
                action,
                path,
                source,
            }
        };
        // A leftover pid file of a live instance means a previous run still has it.
        if let Ok(Some(old)) = pidfile::read(&pid_path) {
            if old
                .info
                .pid
                .is_some_and(|pid| proc::is_alive(pid as i32, old.start_time))
            {
                return Err(DriverError::AlreadyRunning(spec.id.clone()));
            }
        }
        let stdout = logs::open_append(&log_path).map_err(io_err("open log file", &log_path))?;
        let stderr = stdout
            .try_clone()
            .map_err(io_err("open log file", &log_path))?;

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(shell_script(&spec.command))
            .envs(&spec.env)
            .env("PORT", spec.port.to_string())
            .env("NIMBUS_NAMESPACE", &spec.namespace)
            .env("NIMBUS_SERVICE", &spec.service)
            .env("NIMBUS_VERSION", &spec.version)
            .env("NIMBUS_INSTANCE", &spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        let spawn_err = |source| DriverError::Spawn {
            id: spec.id.clone(),
            source,
        };
        let child = command.spawn().map_err(spawn_err)?;
        let Some(pid) = child.id() else {
            return Err(spawn_err(std::io::Error::other("the child has no pid")));
        };
        let pgid = pid as i32;
        // Not yet reaped, so /proc/PID exists even if it already exited.
        let Some(start_time) = proc::start_time(pgid) else {
            abandon(child, pgid);
            return Err(spawn_err(std::io::Error::other(
                "cannot read the child's start time from /proc",
            )));
        };
        let info = InstanceInfo {
            id: spec.id.clone(),
            namespace: spec.namespace.clone(),
            service: spec.service.clone(),
            version: spec.version.clone(),
            port: spec.port,
            pid: Some(pid),
            started_at: unix_now(),
        };
        let record = PidRecord {
            info: info.clone(),
            pgid,
            start_time,
        };
        if let Err(error) = pidfile::write(&pid_path, &record) {
            // Without a pid file a crash would orphan it for good; do not run it at all.
            if let Err(error) = proc::signal_group(pgid, start_time, Signal::SIGKILL) {
                tracing::warn!(%error, instance = %spec.id, "Cannot kill an instance without a pid file.");
            }
            abandon(child, pgid);
            return Err(error);
        }

        let (tx, exit) = watch::channel(None);
        let watcher =
            tokio::spawn(reap_child(child, record.clone(), pid_path.clone(), tx)).abort_handle();
        tracing::info!(instance = %spec.id, pid, port = spec.port, log = %log_path.display(), "Instance started.");
        Ok(Arc::new(Tracked {
            info,
            pgid,
            start_time,
            log_path,
            pid_path,
            exit,
            watcher,
        }))
    }

    /// Starts tracking a verified survivor of a previous run.
    fn track_adopted(&self, record: PidRecord, pid_path: PathBuf) -> Arc<Tracked> {
        let info = record.info.clone();
        let log_path = self.log_path_for(&info.namespace, &info.service, &info.version, &info.id);
        let (tx, exit) = watch::channel(None);
        let watcher = tokio::spawn(watch_adopted(
            record.clone(),
            pid_path.clone(),
            tx,
            self.config.adopted_poll,
        ))
        .abort_handle();
        Arc::new(Tracked {
            info,
            pgid: record.pgid,
            start_time: record.start_time,
            log_path,
            pid_path,
            exit,
            watcher,
        })
    }

    /// TERM, wait up to `grace` for the leader, KILL the group, wait until it is gone.
    async fn stop_tracked(&self, t: &Tracked, grace: Duration) -> Result<(), DriverError> {
        let mut exit = t.exit.clone();
        if exit.borrow().is_none() {
            tracing::info!(instance = %t.info.id, pgid = t.pgid, ?grace, "Stopping instance.");
            proc::signal_group(t.pgid, t.start_time, Signal::SIGTERM)?;
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                tracing::warn!(instance = %t.info.id, ?grace, "Instance ignored SIGTERM; killing it.");
            }
        }
        // Also when the leader is gone: `sh -c` may have left children in the group.
        proc::signal_group(t.pgid, t.start_time, Signal::SIGKILL)?;
        let _ = tokio::time::timeout(AFTER_KILL_TIMEOUT, exit.wait_for(Option::is_some)).await;
        if !proc::wait_group_gone(t.pgid, t.start_time, AFTER_KILL_TIMEOUT).await {
            tracing::warn!(instance = %t.info.id, pgid = t.pgid, "Process group survived SIGKILL.");
        }
        pidfile::remove(&t.pid_path);
        Ok(())
    }

    /// `stop` for an id not in the table: a pid file may still name a live process of a previous
    /// run that was never adopted.
    async fn stop_untracked(&self, id: &str, grace: Duration) -> Result<(), DriverError> {
        if check_component("id", id).is_err() {
            return Ok(());
        }
        let pid_path = self.pid_path(id);
        match pidfile::read(&pid_path) {
            Ok(Some(record)) if verifiable(&record) => {
                kill_verified(&record, grace).await?;
                pidfile::remove(&pid_path);
            }
            Ok(_) => pidfile::remove(&pid_path),
            Err(_) => {}
        }
        Ok(())
    }
}

impl Drop for ProcessDriver {
    fn drop(&mut self) {
        if let Some(rotator) = lock(&self.rotator).take() {
            rotator.abort();
        }
        for tracked in self.table().values() {
            tracked.watcher.abort();
        }
    }
}

#[async_trait::async_trait]
impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError> {
        validate(spec)?;
        let mut table = self.table();
        if table.contains_key(&spec.id) {
            return Err(DriverError::AlreadyRunning(spec.id.clone()));
        }
        let tracked = self.spawn_instance(spec)?;
        let info = tracked.info.clone();
        table.insert(spec.id.clone(), tracked);
        Ok(info)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError> {
        let mut exit = self
            .table()
            .get(id)
            .map(|t| t.exit.clone())
            .ok_or_else(|| DriverError::UnknownInstance(id.to_owned()))?;
        let status = match exit.wait_for(Option::is_some).await {
            Ok(exited) => exited
                .as_ref()
                .map_or(ExitStatus::Unknown, |e| e.status.clone()),
            // The watcher was aborted: only when the driver is dropped.
            Err(_) => ExitStatus::Unknown,
        };
        Ok(status)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DriverError> {
        let tracked = self.table().get(id).cloned();
        let Some(tracked) = tracked else {
            return self.stop_untracked(id, grace).await;
        };
        self.stop_tracked(&tracked, grace).await?;
        let mut table = self.table();
        if table.get(id).is_some_and(|t| Arc::ptr_eq(t, &tracked)) {
            table.remove(id);
        }
        Ok(())
    }

    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError> {
        let mut adopted = Vec::new();
        for path in pidfile::list(&self.run_dir())? {
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if self.table().contains_key(&id) {
                continue;
            }
            let record = match pidfile::read(&path) {
                Ok(Some(record)) if record.info.id == id && verifiable(&record) => record,
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "Removing an unverifiable pid file.");
                    pidfile::remove(&path);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "Cannot read pid file.");
                    continue;
                }
            };
            if proc::is_alive(record.pgid, record.start_time) {
                tracing::info!(instance = %id, pid = record.pgid, "Adopted instance.");
                adopted.push(record.info.clone());
                let tracked = self.track_adopted(record, path);
                self.table().insert(id, tracked);
            } else {
                // Dead, or the pid now belongs to someone else: clean up what is provably ours.
                tracing::info!(instance = %id, pid = record.pgid, "Cleaning up a dead instance.");
                kill_verified(&record, Duration::ZERO).await?;
                pidfile::remove(&path);
            }
        }
        Ok(adopted)
    }

    fn log_path(&self, id: &str) -> Option<PathBuf> {
        self.table().get(id).map(|t| t.log_path.clone())
    }
}

// === tasks ===

/// Owns our child: reaps it, kills what it left in its group, removes the pid file, publishes.
async fn reap_child(
    mut child: Child,
    record: PidRecord,
    pid_path: PathBuf,
    tx: watch::Sender<Option<Exited>>,
) {
    let status = match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(signal)) => ExitStatus::Signal(signal),
            (None, None) => ExitStatus::Unknown,
        },
        Err(error) => {
            tracing::warn!(%error, instance = %record.info.id, "Cannot wait for instance.");
            ExitStatus::Unknown
        }
    };
    finish(&record, &pid_path, status, &tx);
}

/// Watches a process that is not our child by polling `/proc`.
async fn watch_adopted(
    record: PidRecord,
    pid_path: PathBuf,
    tx: watch::Sender<Option<Exited>>,
    every: Duration,
) {
    while proc::is_alive(record.pgid, record.start_time) {
        tokio::time::sleep(every).await;
    }
    finish(&record, &pid_path, ExitStatus::Unknown, &tx);
}

/// After the leader exited: the group dies with it, the pid file goes, and waiters learn.
fn finish(
    record: &PidRecord,
    pid_path: &Path,
    status: ExitStatus,
    tx: &watch::Sender<Option<Exited>>,
) {
    if let Err(error) = proc::signal_group(record.pgid, record.start_time, Signal::SIGKILL) {
        tracing::warn!(%error, instance = %record.info.id, "Cannot kill what the instance left.");
    }
    pidfile::remove(pid_path);
    tracing::info!(instance = %record.info.id, ?status, "Instance exited.");
    tx.send_replace(Some(Exited {
        status,
        at: Instant::now(),
    }));
}

/// Every [`ProcessConfig::rotate_every`]: rotate oversized logs of running instances, mark the
/// others' growth in their time index, and forget instances that exited long ago. Ends when the
/// driver is gone.
async fn rotate_logs(driver: Weak<ProcessDriver>) {
    let mut markers: HashMap<PathBuf, logs::Marker> = HashMap::new();
    loop {
        let Some(every) = driver.upgrade().map(|d| d.config.rotate_every) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(d) = driver.upgrade() else {
            return;
        };
        let cap = d.config.log_cap_bytes;
        let forget_after = d.config.forget_exited_after;
        let mut paths = Vec::new();
        d.table().retain(|_, t| match t.exit.borrow().as_ref() {
            None => {
                paths.push(t.log_path.clone());
                true
            }
            Some(exited) => exited.at.elapsed() < forget_after,
        });
        drop(d);
        // Markers of instances no longer running go; new ones start empty.
        let mut kept: HashMap<PathBuf, logs::Marker> = paths
            .into_iter()
            .map(|path| {
                let marker = markers.remove(&path).unwrap_or_default();
                (path, marker)
            })
            .collect();
        markers = tokio::task::spawn_blocking(move || {
            for (path, marker) in &mut kept {
                match marker.upkeep(path, cap) {
                    Ok(true) => tracing::debug!(path = %path.display(), "Rotated log."),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, path = %path.display(), "Cannot rotate or mark log.")
                    }
                }
            }
            kept
        })
        .await
        .unwrap_or_default();
    }
}

// === helpers ===

/// Kills a previous run's group that is verified ours: TERM, up to `grace` for the leader, KILL.
async fn kill_verified(record: &PidRecord, grace: Duration) -> Result<(), DriverError> {
    let (pgid, start_time) = (record.pgid, record.start_time);
    if !proc::group_has_members(pgid, start_time) {
        return Ok(());
    }
    if !grace.is_zero() {
        proc::signal_group(pgid, start_time, Signal::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while proc::is_alive(pgid, start_time) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    proc::signal_group(pgid, start_time, Signal::SIGKILL)?;
    if !proc::wait_group_gone(pgid, start_time, AFTER_KILL_TIMEOUT).await {
        tracing::warn!(instance = %record.info.id, pgid, "Process group survived SIGKILL.");
    }
    Ok(())
}

/// A record we can act on: the leader's pid is its group id, as `process_group(0)` makes it.
/// The script `sh -c` runs for `command`: a plain command (no shell syntax beyond words and
/// quotes) is prefixed with `exec`, so the app replaces the shell instead of running as its child
/// (one process per instance, and one fork less on every cold start). Anything else runs as given.
pub(crate) fn shell_script(command: &str) -> String {
    let trimmed = command.trim();
    let first = trimmed.split_whitespace().next().unwrap_or("");
    let syntax = trimmed.chars().any(|c| {
        matches!(
            c,
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' | '$' | '\n' | '#' | '*' | '?' | '['
        )
    });
    // `VAR=x app` and shell keywords/builtins do not work (or mean something else) after `exec`.
    const KEYWORDS: &[&str] = &[
        "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
        "{", "}", "!", "exec", "cd", "export", "set", "unset", "eval", ".", "source", "exit",
        "return", "trap", "ulimit", "umask", "wait", "readonly", "local", "alias",
    ];
    if trimmed.is_empty() || syntax || first.contains('=') || KEYWORDS.contains(&first) {
        command.to_string()
    } else {
        format!("exec {trimmed}")
    }
}

fn verifiable(record: &PidRecord) -> bool {
    record.info.pid.is_some_and(|pid| pid as i32 == record.pgid)
        && record.pgid > 1
        && check_component("id", &record.info.id).is_ok()
}

/// Lets tokio reap a child we gave up on, so it does not stay a zombie.
fn abandon(mut child: Child, pgid: i32) {
    tokio::spawn(async move {
        if let Err(error) = child.wait().await {
            tracing::warn!(%error, pgid, "Cannot reap an abandoned child.");
        }
    });
}

/// Checks that every spec field used in a path is a safe single path component.
fn validate(spec: &InstanceSpec) -> Result<(), DriverError> {
    check_component("id", &spec.id)?;
    check_component("namespace", &spec.namespace)?;
    check_component("service", &spec.service)?;
    check_component("version", &spec.version)?;
    if spec.command.trim().is_empty() {
        return Err(DriverError::InvalidSpec {
            field: "command",
            reason: "must not be empty".into(),
        });
    }
    if spec.port == 0 {
        return Err(DriverError::InvalidSpec {
            field: "port",
            reason: "must not be 0 (use pick_free_port)".into(),
        });
    }
    Ok(())
}

/// `[A-Za-z0-9._-]{1,128}`, not starting with `.`: safe as a path component (and a container
/// name). Every driver checks ids and names with it.
pub fn check_component(field: &'static str, value: &str) -> Result<(), DriverError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > 128 {
        "must be at most 128 characters"
    } else if value.starts_with('.') {
        "must not start with '.'"
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only contain letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(DriverError::InvalidSpec {
        field,
        reason: format!("{reason} (got {value:?})"),
    })
}

/// `DATA/logs/NS/SERVICE/VERSION/ID.log`: where every driver keeps an instance's log, so
/// `nimbus logs` reads them all the same way.
pub fn instance_log_path(
    data_dir: &Path,
    namespace: &str,
    service: &str,
    version: &str,
    id: &str,
) -> PathBuf {
    data_dir
        .join("logs")
        .join(namespace)
        .join(service)
        .join(version)
        .join(format!("{id}.log"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
