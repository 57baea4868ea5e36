//! The fields of the API's answers (docs/api.md "Shapes") that the tables show. Missing fields
//! default, unknown ones are ignored, so a newer server still prints.

use nimbus_model::{RouteRule, TrafficTarget};
use serde::Deserialize;

/// `Service`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub domains: Vec<String>,
    pub traffic: Vec<TrafficTarget>,
    pub rules: Vec<RouteRule>,
    pub versions: Vec<String>,
    pub created_at: Option<u64>,
}

/// `Version`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VersionView {
    pub service: String,
    pub name: String,
    pub url: String,
    /// `deploying`, `ready`, `failed` or `idle`.
    pub status: String,
    pub traffic: u32,
    /// True while a deploy waits for this version to be ready before moving traffic to it.
    pub pending_traffic: bool,
    pub ready_instances: u32,
    pub desired_instances: u32,
    pub reason: Option<String>,
    pub last_log_lines: Vec<String>,
    /// Why the autoscaler wants `desired_instances`.
    pub scaling_reason: Option<String>,
    pub inflight: u32,
    pub queued: u32,
    pub cold_starts: u64,
    pub last_cold_start_ms: Option<u64>,
    pub created_at: Option<u64>,
}

/// `Instance`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct InstanceView {
    pub id: String,
    pub service: String,
    pub version: String,
    pub state: String,
    pub port: Option<u32>,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub started_at: Option<u64>,
    /// Requests in flight on it now.
    pub inflight: u32,
}

/// `Domain`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DomainView {
    pub host: String,
    pub namespace: String,
    pub service: String,
}

/// `Logs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LogsView {
    pub lines: Vec<LogLine>,
    /// Opaque; passed back as-is. Kept as JSON so a numeric cursor works too.
    pub cursor: Option<serde_json::Value>,
}

impl LogsView {
    /// The cursor as the query parameter to send back.
    pub fn cursor_param(&self) -> Option<String> {
        match &self.cursor {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

/// One line of `Logs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LogLine {
    pub instance: String,
    pub line: String,
}

/// `Explain`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ExplainView {
    pub version: Option<String>,
    /// 1-based; `None` when the split decides.
    pub rule: Option<usize>,
    pub steps: Vec<String>,
}
