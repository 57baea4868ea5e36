//! The route table the reconciler builds and the pure choice made on it for every request:
//! host → service (or pinned version) → version by traffic policy. The instance is not chosen
//! here: the version's [`VersionGate`] admits the request to one (see [`crate::gate`]).
//!
//! Nothing here does I/O. [`RouteTable::choose`] is the whole routing decision; the proxy only
//! normalises the host, rolls the dice, and asks the chosen version's gate for a slot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::uri::Authority;
use nimbus_model::domains::normalize_host;
use nimbus_model::{Decision, RequestView, TrafficPolicy};

use crate::error::GatewayError;
use crate::gate::VersionGate;
use crate::outlier::{Outcome, OutlierPolicy, OutlierState};
use crate::policy::ServicePolicy;

/// One ready instance of a version. The reconciler keeps the same `Arc` across table rebuilds,
/// so [`Endpoint::inflight`] stays meaningful while tables are swapped.
#[derive(Debug)]
pub struct Endpoint {
    /// Instance id, e.g. `hello-v1-3f9a2c`.
    pub instance: String,
    /// Where the instance listens, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// Requests in flight to this instance, counting streaming bodies and upgraded sockets until
    /// they finish. The gate limits it, the drainer waits for it to reach 0; the proxy maintains
    /// it through the [`InflightGuard`] inside each [`crate::gate::Permit`].
    inflight: AtomicUsize,
    /// `addr` as a URI authority, built once instead of per request.
    authority: Authority,
    /// `instance`, shared with request records.
    name: Arc<str>,
    /// Share of requests under `weighted` balancing (instances of one version are the same
    /// size today, so the reconciler gives each the same weight).
    weight: u32,
    /// Ejected (passive health) until this [`crate::policy::now_ms`]; 0 when never ejected. Read
    /// by the gate on every pick, so it is an atomic next to the full record below.
    ejected_until: AtomicU64,
    /// True while `outlier` holds failures, so a success costs one atomic load.
    failing: AtomicBool,
    /// Never chosen again: its instance is being killed (a function over its memory or
    /// timeout), so a queued request must wait for another rather than be handed to it.
    retired: AtomicBool,
    outlier: Mutex<OutlierState>,
}

/// Holds one unit of [`Endpoint::inflight`] and gives it back when dropped, wherever the request
/// ends: an error response, the end of a streamed body, or a closed tunnel.
#[derive(Debug)]
pub struct InflightGuard {
    endpoint: Arc<Endpoint>,
    /// Already given back (by [`InflightGuard::release`]); the drop then does nothing.
    released: bool,
}

/// One version of a service in a table. Its names are copied from the gate for routing and
/// errors; everything that must outlive a table swap (ready instances, limits, queue, counts)
/// lives in the shared [`VersionGate`].
#[derive(Debug)]
pub struct VersionRoute {
    pub namespace: String,
    pub service: String,
    pub version: String,
    /// Admission to the version's instances. The reconciler keeps one per version and puts the
    /// same `Arc` into every table it builds.
    pub gate: Arc<VersionGate>,
    /// `namespace`, `service` and `version`, shared with request records.
    names: [Arc<str>; 3],
}

/// A service: its traffic policy and its versions by name.
#[derive(Debug)]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    pub policy: TrafficPolicy,
    pub versions: HashMap<String, Arc<VersionRoute>>,
    /// The service's gateway policy (balancing, affinity, limits, access rules). The
    /// reconciler keeps the same `Arc` while the spec is unchanged, so rate-limit buckets
    /// survive table swaps.
    pub gateway: Arc<ServicePolicy>,
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
    /// Keyed by normalised host; the key is shared with each request's record. Hashed with
    /// foldhash (seeded per table): a lookup per request, and the keys are the operator's.
    hosts: HashMap<Arc<str>, HostRoute, foldhash::fast::RandomState>,
}

/// The outcome of [`RouteTable::choose`]: which version one request goes to. The instance comes
/// from `version.gate.admit()`.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The normalised host, as the table holds it.
    pub host: Arc<str>,
    pub service: Arc<ServiceRoute>,
    pub version: Arc<VersionRoute>,
    /// Index of the traffic rule that matched; `None` when the split or a version host decided.
    pub rule: Option<usize>,
    /// Session affinity is on and the request's cookie does not name this version yet: the
    /// response sets [`AFFINITY_COOKIE`].
    pub set_affinity: bool,
}

/// The cookie that pins a client to a version under `--affinity cookie`. It is host-only (no
/// `Domain`), so each service host has its own.
pub const AFFINITY_COOKIE: &str = "nimbus-version";

/// Where an affinity-enabled service sends a request: a matching traffic rule first (gray
/// release rules stay authoritative); else the version the affinity cookie names while it still
/// has a share of the split; else the split. Returns the decision and whether it came from the
/// cookie. Pure, like [`TrafficPolicy::evaluate`].
pub fn evaluate_with_affinity<'a>(
    policy: &'a TrafficPolicy,
    req: &RequestView<'_>,
    roll: u32,
    cookie: Option<&str>,
) -> Option<(Decision<'a>, bool)> {
    if let Some((i, rule)) = policy
        .rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.matcher.matches(req))
    {
        let decision = Decision {
            version: &rule.version,
            rule: Some(i),
        };
        return Some((decision, false));
    }
    if let Some(name) = cookie {
        if let Some(target) = policy
            .split
            .iter()
            .find(|t| t.percent > 0 && t.version == name)
        {
            let decision = Decision {
                version: &target.version,
                rule: None,
            };
            return Some((decision, true));
        }
    }
    policy.evaluate(req, roll).map(|d| (d, false))
}

// === impl Endpoint ===

impl Endpoint {
    pub fn new(instance: String, addr: SocketAddr) -> Self {
        // A socket address always prints as a valid authority (`1.2.3.4:80`, `[::1]:80`).
        #[allow(clippy::expect_used)]
        let authority = Authority::try_from(addr.to_string())
            .expect("a socket address is a valid URI authority");
        let name = Arc::from(instance.as_str());
        Self {
            instance,
            addr,
            inflight: AtomicUsize::new(0),
            authority,
            name,
            weight: 1,
            ejected_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            outlier: Mutex::new(OutlierState::default()),
        }
    }

    /// Takes it out of every gate's choice for good, at once: its instance is being stopped
    /// without drain, before the next route table would leave it out.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// True once [`retire`](Self::retire)d.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// The same endpoint with a `weighted` balancing weight (at least 1).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Its `weighted` balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// True while passive health keeps it out of the gate's choice.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && crate::policy::now_ms() < until
    }

    /// Records how a request to it went; returns true when this ejects it.
    pub fn record(&self, policy: &OutlierPolicy, outcome: Outcome) -> bool {
        if outcome == Outcome::Success && !self.failing.load(Ordering::Relaxed) {
            return false;
        }
        let mut state = self.outlier.lock().unwrap_or_else(PoisonError::into_inner);
        let ejected = state.record(policy, outcome, crate::policy::now_ms());
        self.failing
            .store(*state != OutlierState::default(), Ordering::Relaxed);
        if let Some(until) = ejected {
            self.ejected_until.store(until, Ordering::Relaxed);
        } else if outcome == Outcome::Success {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
        ejected.is_some()
    }

    /// `addr` as a URI authority.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The instance id, shared (no allocation to hand out).
    pub fn name(&self) -> &Arc<str> {
        &self.name
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
            released: false,
        }
    }
}

// === impl InflightGuard ===

impl InflightGuard {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Gives the unit back now rather than at drop, so the gate can free a slot under its lock.
    pub(crate) fn release(&mut self) {
        if !std::mem::replace(&mut self.released, true) {
            self.endpoint.inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.release();
    }
}

// === impl VersionRoute ===

impl VersionRoute {
    /// The version `gate` admits to, named as the gate is.
    pub fn new(gate: Arc<VersionGate>) -> Self {
        Self {
            namespace: gate.namespace().to_string(),
            service: gate.service().to_string(),
            version: gate.version().to_string(),
            names: [
                Arc::from(gate.namespace()),
                Arc::from(gate.service()),
                Arc::from(gate.version()),
            ],
            gate,
        }
    }

    /// Namespace, service and version names, shared (no allocation to hand out).
    pub fn names(&self) -> &[Arc<str>; 3] {
        &self.names
    }
}

// === impl RouteTable ===

impl RouteTable {
    /// Binds `host` (normalised here, so `Example.COM:80` binds `example.com`). A later insert for
    /// the same host replaces the earlier one.
    pub fn insert(&mut self, host: String, route: HostRoute) {
        self.hosts.insert(Arc::from(normalize_host(&host)), route);
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
        self.hosts.keys().map(|host| &**host)
    }

    /// Picks the version for a request to the normalised `host`. `roll` is a uniform dice roll in
    /// `0..100` for the percent split. Pure: it changes nothing.
    ///
    /// # Errors
    /// [`GatewayError::UnknownHost`] when nothing is bound to `host`;
    /// [`GatewayError::NoReadyInstance`] when the split is empty or names a version missing
    /// from the table. A version that is in the table but has no ready instance is chosen: its
    /// gate holds the request until one is ready (the activator).
    pub fn choose(
        &self,
        host: &str,
        req: &RequestView<'_>,
        roll: u32,
    ) -> Result<Choice, GatewayError> {
        let (host, route) =
            self.hosts
                .get_key_value(host)
                .ok_or_else(|| GatewayError::UnknownHost {
                    host: host.to_string(),
                })?;
        let mut set_affinity = false;
        let (service, version_name, rule) = match route {
            HostRoute::Service(service) => {
                let none = || GatewayError::NoReadyInstance {
                    service: service.name.clone(),
                    namespace: service.namespace.clone(),
                    version: None,
                };
                if service.gateway.affinity {
                    let cookie = crate::balance::cookie_value(req.headers, AFFINITY_COOKIE);
                    let (decision, pinned) =
                        evaluate_with_affinity(&service.policy, req, roll, cookie)
                            .ok_or_else(none)?;
                    set_affinity = !pinned && cookie != Some(decision.version);
                    (service, decision.version, decision.rule)
                } else {
                    let decision = service.policy.evaluate(req, roll).ok_or_else(none)?;
                    (service, decision.version, decision.rule)
                }
            }
            HostRoute::Version { service, version } => (service, version.as_str(), None),
        };
        let no_ready = || GatewayError::NoReadyInstance {
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            version: Some(version_name.to_string()),
        };
        let version = service.versions.get(version_name).ok_or_else(no_ready)?;
        Ok(Choice {
            host: Arc::clone(host),
            service: Arc::clone(service),
            version: Arc::clone(version),
            rule,
            set_affinity,
        })
    }
}

#[cfg(test)]
mod tests;
