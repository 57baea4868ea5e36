//! Live status the reconciler publishes and the API reports: instance states and version health.

use serde::{Deserialize, Serialize};

/// Lifecycle of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Spawned, not yet answering its health path.
    Starting,
    /// Receiving traffic.
    Ready,
    /// Out of the route table, finishing in-flight requests before it is stopped.
    Draining,
    /// Exited unexpectedly; waiting out a backoff before a restart.
    Crashed,
}

/// Health of a version as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Instances are starting and none is ready yet.
    Deploying,
    /// At least one instance is ready.
    Ready,
    /// Instances keep crashing or never become ready.
    Failed,
    /// No instance is wanted (scaled to zero).
    Idle,
}

/// One running (or restarting) instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub state: InstanceState,
    pub port: u16,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Unix seconds.
    pub started_at: u64,
    /// Requests the gateway has in flight on this instance now.
    #[serde(default)]
    pub inflight: u32,
}

/// A version's health plus, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStatus {
    pub namespace: String,
    pub service: String,
    pub version: String,
    pub state: VersionState,
    pub ready_instances: u32,
    pub desired_instances: u32,
    /// Set when `state` is `failed`: what went wrong.
    pub reason: Option<String>,
    /// Last lines the failing instance wrote, newest last.
    pub last_log_lines: Vec<String>,
    /// Why the autoscaler chose `desired_instances` (`stable`, `panic`, `schedule`, `min`,
    /// `max`, `zero`, `activator`, `initial`).
    #[serde(default)]
    pub scaling_reason: Option<String>,
    /// Requests in flight on the version's instances now.
    #[serde(default)]
    pub inflight: u32,
    /// Requests waiting for a free slot (or a cold start) now.
    #[serde(default)]
    pub queued: u32,
    /// Cold starts since the server started: instances started while requests were held.
    #[serde(default)]
    pub cold_starts: u64,
    /// Spawn → ready of the latest cold start, in milliseconds.
    #[serde(default)]
    pub last_cold_start_ms: Option<u64>,
}

/// Everything the reconciler knows about running things, published as one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub instances: Vec<InstanceStatus>,
    pub versions: Vec<VersionStatus>,
}

impl RuntimeStatus {
    pub fn version(&self, namespace: &str, service: &str, version: &str) -> Option<&VersionStatus> {
        self.versions
            .iter()
            .find(|v| v.namespace == namespace && v.service == service && v.version == version)
    }
}
