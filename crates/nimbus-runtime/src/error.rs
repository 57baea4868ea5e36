//! Errors of the driver and of the readiness probe. Messages say what failed and where.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A spec field would be unsafe as a path component or is otherwise unusable.
    #[error("invalid instance spec: {field} {reason}")]
    InvalidSpec { field: &'static str, reason: String },

    /// `start` was called with an id the driver already tracks.
    #[error("instance {0} is already running; pick a new instance id")]
    AlreadyRunning(String),

    /// `wait` was called with an id the driver does not know (never started, stopped, or forgotten).
    #[error("unknown instance {0}")]
    UnknownInstance(String),

    /// `sh -c COMMAND` could not be spawned.
    #[error("cannot spawn instance {id}: {source}")]
    Spawn {
        id: String,
        #[source]
        source: io::Error,
    },

    /// A file or directory under the data dir could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Signalling a process group failed for a reason other than "no such process".
    #[error("cannot send {signal} to process group {pgid}: {source}")]
    Signal {
        pgid: i32,
        signal: &'static str,
        #[source]
        source: nix::errno::Errno,
    },

    /// Binding a probe socket to find a free port failed.
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),

    /// The runtime a spec needs is not available on this server (e.g. Docker is not running).
    #[error("the {runtime} runtime is not available: {reason}")]
    Unavailable {
        runtime: &'static str,
        reason: String,
    },

    /// The process driver spawns background tasks, so it needs a tokio runtime.
    #[error("the process driver must be created inside a tokio runtime")]
    NoRuntime,
}

/// Why an instance was not found ready.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing answered with a 2xx/3xx/4xx status in time.
    #[error(
        "instance did not answer GET http://127.0.0.1:{port}{path} within {timeout:?} \
         ({attempts} attempts; last: {last_error})"
    )]
    Timeout {
        port: u16,
        path: String,
        timeout: Duration,
        attempts: u32,
        last_error: String,
    },

    /// The health path is not an absolute path.
    #[error("invalid health path {0:?}: it must start with '/'")]
    InvalidPath(String),
}
