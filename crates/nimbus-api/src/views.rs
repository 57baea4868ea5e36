//! The JSON shapes the API returns (see docs/api.md).

use nimbus_model::domains::{service_host, version_host};
use nimbus_model::status::{RuntimeStatus, VersionState};
use nimbus_model::{RouteRule, TrafficTarget, VersionSpec};
use nimbus_store::{ServiceRecord, VersionRecord};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub domains: Vec<String>,
    pub traffic: Vec<TrafficTarget>,
    pub rules: Vec<RouteRule>,
    pub versions: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub namespace: String,
    pub service: String,
    pub name: String,
    pub url: String,
    pub status: VersionState,
    /// Percent of the split this version gets.
    pub traffic: u32,
    /// Deployed to take all traffic, which it will as soon as it is ready.
    pub pending_traffic: bool,
    pub ready_instances: u32,
    pub desired_instances: u32,
    pub reason: Option<String>,
    pub last_log_lines: Vec<String>,
    /// Why the autoscaler wants `desired_instances` (stable, panic, schedule, min, max, zero,
    /// activator, initial).
    pub scaling_reason: Option<String>,
    /// Requests in flight and waiting for a slot now.
    pub inflight: u32,
    pub queued: u32,
    /// Cold starts since the server started, and the latest one's spawn → ready time.
    pub cold_starts: u64,
    pub last_cold_start_ms: Option<u64>,
    pub spec: VersionSpec,
    pub created_at: i64,
}

/// Builds URLs for generated hosts on the gateway's port.
pub struct Urls<'a> {
    pub base_domain: &'a str,
    pub gateway_port: u16,
}

impl Urls<'_> {
    fn url(&self, host: &str) -> String {
        if self.gateway_port == 80 {
            format!("http://{host}")
        } else {
            format!("http://{host}:{}", self.gateway_port)
        }
    }

    pub fn service(&self, s: &ServiceRecord) -> ServiceView {
        ServiceView {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            url: self.url(&service_host(&s.name, &s.namespace, self.base_domain)),
            domains: s.domains.clone(),
            traffic: s.traffic.split.clone(),
            rules: s.traffic.rules.clone(),
            versions: s.versions.clone(),
            created_at: s.created_at,
        }
    }

    pub fn version(
        &self,
        v: &VersionRecord,
        service: &ServiceRecord,
        status: &RuntimeStatus,
    ) -> VersionView {
        let live = status.version(&v.namespace, &v.service, &v.name);
        VersionView {
            namespace: v.namespace.clone(),
            service: v.service.clone(),
            name: v.name.clone(),
            url: self.url(&version_host(
                &v.name,
                &v.service,
                &v.namespace,
                self.base_domain,
            )),
            // Not yet seen by the reconciler: it is about to start.
            status: live.map_or(VersionState::Deploying, |l| l.state),
            traffic: service.traffic.percent_of(&v.name),
            pending_traffic: v.promote_pending,
            ready_instances: live.map_or(0, |l| l.ready_instances),
            desired_instances: live.map_or(v.spec.steady_instances(), |l| l.desired_instances),
            reason: live.and_then(|l| l.reason.clone()),
            last_log_lines: live.map(|l| l.last_log_lines.clone()).unwrap_or_default(),
            scaling_reason: live.and_then(|l| l.scaling_reason.clone()),
            inflight: live.map_or(0, |l| l.inflight),
            queued: live.map_or(0, |l| l.queued),
            cold_starts: live.map_or(0, |l| l.cold_starts),
            last_cold_start_ms: live.and_then(|l| l.last_cold_start_ms),
            spec: v.spec.clone(),
            created_at: v.created_at,
        }
    }
}
