//! Runs instances of user code: the runtime-neutral [`Driver`] trait the reconciler talks to, the
//! embedded [`ProcessDriver`] (one process group per instance, the default runtime), per-instance
//! log capture with rotation, and the HTTP readiness probe.
//!
//! A driver owns the lifecycle of the things it started: it spawns them, reports their exit, stops
//! them (the whole process group, never a stray pid), and after a server restart re-adopts the
//! instances the previous run left behind, verified by pid *and* process start time so a recycled
//! pid is never mistaken for ours. A driver never decides *how many* instances run or routes
//! traffic; that is the reconciler's and the gateway's job. The Docker driver (crate
//! `nimbus-docker`) implements the same trait, so nothing in the trait mentions processes, and
//! [`DriverRouter`] puts both behind one `Arc<dyn Driver>`.
//!
//! The process driver is Linux-only: it reads `/proc/PID/stat` to verify and enumerate processes.
//!
//! # Layout
//! - [`Driver`], [`InstanceSpec`], [`InstanceInfo`], [`ExitStatus`]: the runtime-neutral seam.
//! - [`error`]: [`DriverError`] and [`ProbeError`].
//! - [`router`]: [`DriverRouter`], which sends each instance to the process or container driver.
//! - [`process`]: [`ProcessDriver`], its data-dir layout (`logs/…`, `run/{id}.json`) and log rotation.
//! - [`logs`]: reading logs: [`tail_lines`], [`read_from`]; rotation itself ([`logs::rotate_if_over`]).
//! - [`probe`]: [`wait_ready`] (HTTP readiness) and [`pick_free_port`].
//! - [`listening`]: the TCP ports an instance's process group listens on (the wrong-port hint).
//! - `proc` (private): `/proc` parsing and verified group signalling.

#![forbid(unsafe_code)]

pub mod error;
pub mod listening;
pub mod logs;
pub mod probe;
pub mod process;
pub mod router;

mod pidfile;
mod proc;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::{DriverError, ProbeError};
pub use logs::{read_from, tail_lines};
pub use probe::{check_once, pick_free_port, wait_ready};
pub use process::{check_component, instance_log_path, ProcessConfig, ProcessDriver};
pub use router::DriverRouter;

/// What to run for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Chosen by the caller, e.g. `hello-v1-3f9a2c`; must be safe as a file name
    /// (`[A-Za-z0-9._-]`, not starting with `.`).
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub version: String,
    /// Run via `sh -c COMMAND` in the server's working directory.
    pub command: String,
    /// User env. The driver inherits the server's env, applies this on top, then sets `PORT`,
    /// `NIMBUS_SERVICE`, `NIMBUS_VERSION`, `NIMBUS_INSTANCE` and `NIMBUS_NAMESPACE` (these win).
    pub env: BTreeMap<String, String>,
    /// Chosen by the caller (see [`pick_free_port`]).
    pub port: u16,
    /// Container settings, for drivers that run images; `None` for the process driver.
    pub container: Option<ContainerSpec>,
}

/// What a container driver needs beyond [`InstanceSpec`]'s runtime-neutral fields.
///
/// For containers, [`InstanceSpec::command`] is optional: empty runs the image's own
/// entrypoint/command; otherwise it replaces them with `/bin/sh -c COMMAND`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Image reference, e.g. `nimbus/hello:v1` or `busybox:latest`. Must exist locally.
    pub image: String,
    /// CPU limit in cores (`0.5` = half a core); `None` = no limit.
    pub cpu: Option<f64>,
    /// Memory limit in bytes (swap included, so no swapping past it); `None` = no limit.
    pub memory_bytes: Option<u64>,
    /// Size cap of the tmpfs mounted at `/tmp`.
    pub tmp_size_bytes: u64,
    /// Named volumes to mount (created beforehand).
    pub volumes: Vec<VolumeMount>,
}

/// `/tmp` of a container is a tmpfs of this size unless the version says otherwise.
pub const DEFAULT_TMP_SIZE_BYTES: u64 = 512 * 1024 * 1024;

impl Default for ContainerSpec {
    fn default() -> Self {
        Self {
            image: String::new(),
            cpu: None,
            memory_bytes: None,
            tmp_size_bytes: DEFAULT_TMP_SIZE_BYTES,
            volumes: Vec::new(),
        }
    }
}

/// A named volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeMount {
    /// The user's volume name (`nimbus volumes create NAME`), not the engine's.
    pub name: String,
    /// Absolute path inside the container, e.g. `/data`.
    pub path: String,
}

/// A started or adopted instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstanceInfo {
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub port: u16,
    /// The process id, for drivers that have one.
    pub pid: Option<u32>,
    /// Unix seconds.
    pub started_at: u64,
}

/// How an instance ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ExitStatus {
    /// Exited on its own with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended, but the driver cannot tell how (e.g. an adopted process, which is not our child).
    Unknown,
}

/// Starts, watches and stops instances. Implementations must be cheap to share (`Arc<dyn Driver>`).
///
/// Contract, for every implementation:
/// - `start` returns once the instance is spawned, not once it is ready (see [`wait_ready`]).
/// - `wait` resolves when the instance exits, for started and adopted instances alike; it may be
///   called concurrently with `stop`.
/// - `stop` is idempotent: an unknown or already-dead id is `Ok`. When it returns, nothing of the
///   instance is left running.
/// - `adopt` is called once at start-up and returns the verified survivors of a previous run;
///   everything else the previous run left behind is cleaned up.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// A short name for logs and status, e.g. `"process"`.
    fn name(&self) -> &'static str;

    /// Spawns an instance; returns once it runs, not once it is ready.
    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError>;

    /// Resolves when the instance exits. [`DriverError::UnknownInstance`] if the driver does not
    /// know the id.
    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError>;

    /// Asks the instance to stop, and forces it after `grace`. Idempotent.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DriverError>;

    /// Re-attaches to the instances a previous run left that are still alive and verified ours;
    /// cleans up the rest.
    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError>;

    /// The current log file of an instance known to the driver.
    fn log_path(&self, id: &str) -> Option<PathBuf>;
}

/// Env names the driver sets itself (the same list as `nimbus_model::spec::RESERVED_ENV`).
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "NIMBUS_SERVICE",
    "NIMBUS_VERSION",
    "NIMBUS_INSTANCE",
    "NIMBUS_NAMESPACE",
];
