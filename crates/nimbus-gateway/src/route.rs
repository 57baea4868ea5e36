//! The route table the reconciler builds and the pure choice made on it for every request:
//! host → service (or pinned version) → version by traffic policy → endpoint by round robin.
//!
//! Nothing here does I/O. [`RouteTable::choose`] is the whole routing decision; the proxy only
//! normalises the host, rolls the dice and forwards to what it returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use nimbus_model::domains::normalize_host;
use nimbus_model::{RequestView, TrafficPolicy};

use crate::error::GatewayError;

/// One ready instance of a version. The reconciler keeps the same `Arc` across table rebuilds,
/// so [`Endpoint::inflight`] stays meaningful while tables are swapped.
#[derive(Debug)]
pub struct Endpoint {
    /// Instance id, e.g. `hello-v1-3f9a2c`.
    pub instance: String,
    /// Where the instance listens, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// Requests in flight to this instance, counting streaming bodies and upgraded sockets until
    /// they finish. The autoscaler reads it; the proxy maintains it through [`InflightGuard`].
    inflight: AtomicUsize,
    /// `addr` as a URI authority, built once instead of per request.
    authority: Authority,
}

/// Holds one unit of [`Endpoint::inflight`] and gives it back when dropped, wherever the request
/// ends: an error response, the end of a streamed body, or a closed tunnel.
#[derive(Debug)]
pub struct InflightGuard {
    endpoint: Arc<Endpoint>,
}

/// One version of a service with its ready endpoints.
#[derive(Debug)]
pub struct VersionRoute {
    pub namespace: String,
    pub service: String,
    pub version: String,
    /// Ready instances; empty means requests get 503 `no_ready_instance`.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The version's request timeout: no response headers by then means 504.
    pub timeout: Duration,
    /// Round-robin position; a fresh table starts over, which is harmless.
    cursor: AtomicUsize,
}

/// A service: its traffic policy and its versions by name.
#[derive(Debug)]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    pub policy: TrafficPolicy,
    pub versions: HashMap<String, Arc<VersionRoute>>,
}

/// What a host is bound to.
#[derive(Debug, Clone)]
pub enum HostRoute {
    /// The default domain and custom domains: the service's traffic policy decides.
    Service(Arc<ServiceRoute>),
    /// A version test URL: always this version, whatever the policy says.
    Version {
        service: Arc<ServiceRoute>,
        version: String,
    },
}

/// An immutable snapshot of every binding, keyed by normalised host. Built by the reconciler and
/// handed to [`crate::Gateway::swap`]; never modified while it serves.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<String, HostRoute>,
}

/// The outcome of [`RouteTable::choose`]: where one request goes.
#[derive(Debug, Clone)]
pub struct Choice {
    pub service: Arc<ServiceRoute>,
    pub version: Arc<VersionRoute>,
    pub endpoint: Arc<Endpoint>,
    /// Index of the traffic rule that matched; `None` when the split or a version host decided.
    pub rule: Option<usize>,
}

// === impl Endpoint ===

impl Endpoint {
    pub fn new(instance: String, addr: SocketAddr) -> Self {
        // A socket address always prints as a valid authority (`1.2.3.4:80`, `[::1]:80`).
        #[allow(clippy::expect_used)]
        let authority = Authority::try_from(addr.to_string())
            .expect("a socket address is a valid URI authority");
        Self {
            instance,
            addr,
            inflight: AtomicUsize::new(0),
            authority,
        }
    }

    /// `addr` as a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Requests currently in flight to this instance.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Counts one more request in flight until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard {
            endpoint: Arc::clone(self),
        }
    }
}

// === impl InflightGuard ===

impl InflightGuard {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.endpoint.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl VersionRoute ===

impl VersionRoute {
    pub fn new(
        namespace: String,
        service: String,
        version: String,
        endpoints: Vec<Arc<Endpoint>>,
        timeout: Duration,
    ) -> Self {
        Self {
            namespace,
            service,
            version,
            endpoints,
            timeout,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next endpoint in round-robin order; `None` when no instance is ready.
    pub fn next_endpoint(&self) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.endpoints.get(i % self.endpoints.len())
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Binds `host` (normalised here, so `Example.COM:80` binds `example.com`). A later insert for
    /// the same host replaces the earlier one.
    pub fn insert(&mut self, host: String, route: HostRoute) {
        self.hosts.insert(normalize_host(&host), route);
    }

    /// Looks up an already normalised host (see [`normalize_host`]).
    pub fn get(&self, host: &str) -> Option<&HostRoute> {
        self.hosts.get(host)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The hosts bound in this table, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    /// Picks the endpoint for a request to the normalised `host`. `roll` is a uniform dice roll in
    /// `0..100` for the percent split. Advances the version's round-robin cursor and nothing else.
    pub fn choose(
        &self,
        host: &str,
        req: &RequestView<'_>,
        roll: u32,
    ) -> Result<Choice, GatewayError> {
        let route = self.get(host).ok_or_else(|| GatewayError::UnknownHost {
            host: host.to_string(),
        })?;
        let (service, version_name, rule) = match route {
            HostRoute::Service(service) => {
                let decision = service.policy.evaluate(req, roll).ok_or_else(|| {
                    GatewayError::NoReadyInstance {
                        service: service.name.clone(),
                        namespace: service.namespace.clone(),
                        version: None,
                    }
                })?;
                (service, decision.version, decision.rule)
            }
            HostRoute::Version { service, version } => (service, version.as_str(), None),
        };
        let no_ready = || GatewayError::NoReadyInstance {
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            version: Some(version_name.to_string()),
        };
        let version = service.versions.get(version_name).ok_or_else(no_ready)?;
        let endpoint = version.next_endpoint().ok_or_else(no_ready)?;
        Ok(Choice {
            service: Arc::clone(service),
            version: Arc::clone(version),
            endpoint: Arc::clone(endpoint),
            rule,
        })
    }
}

#[cfg(test)]
mod tests;
