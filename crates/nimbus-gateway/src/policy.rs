//! A service's gateway policy, compiled from its stored [`GatewaySpec`] into what the proxy
//! checks per request: the balancing algorithm (run by each version's gate), session affinity,
//! access rules (403), rate limits (429 with `Retry-After`), the body limit (413), the
//! time-to-first-byte timeout (504), the WebSocket idle timeout, the upstream protocol and
//! outlier ejection.
//!
//! [`ServicePolicy::compile`] is where the spec's text fields are parsed, so the API runs it
//! before storing a spec and the reconciler after reading one. The default policy costs the
//! request path a few `Option` checks and nothing else. Rate-limit buckets live in the compiled
//! policy; the reconciler keeps one per service and rebuilds it only when the spec changes, so
//! table swaps do not refill them.

use std::net::IpAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use nimbus_model::gateway::{self, Affinity, UpstreamProtocol};
use nimbus_model::GatewaySpec;

use crate::access::{AccessError, AccessPolicy, AccessRequest, Action, Rule};
use crate::balance::{Algorithm, AlgorithmError};
use crate::outlier::{ActiveCheck, OutlierPolicy};
use crate::ratelimit::{client_key, KeyedLimiter, Quota, Rate, RateError, TokenBucket, Verdict};

/// Most client IPs a per-IP limiter tracks at once (16 bytes of state each, plus the map).
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// A compiled policy; see the module docs.
#[derive(Debug)]
pub struct ServicePolicy {
    spec: GatewaySpec,
    /// `None`: least outstanding requests.
    pub algorithm: Option<Algorithm>,
    pub affinity: bool,
    access: Option<AccessPolicy>,
    service_limit: Option<Mutex<TokenBucket>>,
    ip_limit: Option<Mutex<KeyedLimiter<IpAddr>>>,
    pub max_body: Option<u64>,
    pub ttfb_timeout: Option<Duration>,
    pub ws_idle_timeout: Option<Duration>,
    pub upstream: UpstreamProtocol,
    pub outlier: OutlierPolicy,
    /// Active health checks, run by the reconciler's watcher of each instance.
    pub active: Option<ActiveCheck>,
}

/// Why a spec does not compile: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
    #[error("{field}: {source}")]
    Rate {
        field: &'static str,
        source: RateError,
    },
    #[error("access rule {index} ({rule:?}): {source}")]
    Access {
        index: usize,
        rule: String,
        source: AccessError,
    },
}

/// Why a request was refused by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An access rule denied it (403); `rule` is its index, `None` for the default.
    Denied { rule: Option<usize> },
    /// A rate limit (service-wide or per IP) is exhausted (429).
    Limited { per_ip: bool, retry_after_secs: u64 },
}

/// Milliseconds since the first call in this process: the clock of rate limits and ejection.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

// === impl PolicyError ===

impl PolicyError {
    /// The spec field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            PolicyError::Algorithm(_) => "lb",
            PolicyError::Rate { field, .. } => field,
            PolicyError::Access { .. } => "access",
        }
    }

    /// A stable error code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Algorithm(_) => "invalid_lb",
            PolicyError::Rate { .. } => "invalid_rate",
            PolicyError::Access { .. } => "invalid_access_rule",
        }
    }
}

// === impl ServicePolicy ===

impl Default for ServicePolicy {
    fn default() -> Self {
        Self {
            spec: GatewaySpec::default(),
            algorithm: None,
            affinity: false,
            access: None,
            service_limit: None,
            ip_limit: None,
            max_body: None,
            ttfb_timeout: None,
            ws_idle_timeout: None,
            upstream: UpstreamProtocol::Http1,
            outlier: OutlierPolicy::default(),
            active: None,
        }
    }
}

impl ServicePolicy {
    /// Parses and checks a spec (numbers are checked by [`GatewaySpec::validate`]).
    pub fn compile(spec: &GatewaySpec) -> Result<Self, PolicyError> {
        let algorithm = match spec.lb.as_deref().map(str::trim) {
            None | Some("") | Some("least-outstanding") => None,
            Some(text) => Some(text.parse::<Algorithm>()?),
        };
        let quota = |rate: &Option<String>, burst: Option<u32>, field: &'static str| {
            let Some(rate) = rate else {
                return Ok(None);
            };
            let wrap = |source| PolicyError::Rate { field, source };
            let rate: Rate = rate.parse().map_err(wrap)?;
            match burst {
                None => Ok(Some(Quota::per_period(rate))),
                Some(burst) => Quota::new(rate, burst).map(Some).map_err(wrap),
            }
        };
        let now = now_ms();
        let service_limit =
            quota(&spec.rate, spec.burst, "rate")?.map(|q| Mutex::new(TokenBucket::new(q, now)));
        let ip_limit = quota(&spec.rate_per_ip, spec.burst_per_ip, "rate_per_ip")?
            .map(|q| Mutex::new(KeyedLimiter::new(q, MAX_TRACKED_CLIENTS)));
        let rules = spec
            .access
            .iter()
            .enumerate()
            .map(|(index, text)| {
                text.parse::<Rule>().map_err(|source| PolicyError::Access {
                    index: index + 1,
                    rule: text.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let access = (!rules.is_empty()).then(|| AccessPolicy::new(rules, Action::Allow));
        let defaults = OutlierPolicy::default();
        Ok(Self {
            spec: spec.clone(),
            algorithm,
            affinity: spec.affinity == Affinity::Cookie,
            access,
            service_limit,
            ip_limit,
            max_body: spec.max_body_bytes,
            ttfb_timeout: spec.ttfb_timeout_ms.map(Duration::from_millis),
            ws_idle_timeout: spec.ws_idle_timeout_secs.map(Duration::from_secs),
            upstream: spec.upstream_protocol,
            outlier: OutlierPolicy {
                consecutive: spec.eject_after.unwrap_or(defaults.consecutive),
                base: spec
                    .eject_for_ms
                    .map_or(defaults.base, Duration::from_millis),
            },
            active: spec.health_check_path.as_ref().map(|path| ActiveCheck {
                path: path.clone(),
                interval: Duration::from_millis(
                    spec.health_check_interval_ms
                        .unwrap_or(gateway::DEFAULT_HEALTH_CHECK_INTERVAL_MS),
                ),
                unhealthy_after: spec
                    .unhealthy_threshold
                    .unwrap_or(gateway::DEFAULT_UNHEALTHY_THRESHOLD),
                healthy_after: spec
                    .healthy_threshold
                    .unwrap_or(gateway::DEFAULT_HEALTHY_THRESHOLD),
            }),
        })
    }

    /// The spec this was compiled from.
    pub fn spec(&self) -> &GatewaySpec {
        &self.spec
    }

    /// True when [`admit`](Self::admit) can refuse anything.
    pub fn has_checks(&self) -> bool {
        self.access.is_some() || self.service_limit.is_some() || self.ip_limit.is_some()
    }

    /// Access rules, then the per-IP limit, then the service limit: a denied request takes no
    /// token, and a client over its own limit does not use up the service's.
    pub fn admit(&self, client: IpAddr, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(access) = &self.access {
            let decision = access.evaluate(&AccessRequest {
                client,
                path,
                headers,
            });
            if decision.action == Action::Deny {
                return Err(Refusal::Denied {
                    rule: decision.rule,
                });
            }
        }
        if self.service_limit.is_none() && self.ip_limit.is_none() {
            return Ok(());
        }
        let now = now_ms();
        if let Some(limiter) = &self.ip_limit {
            let verdict = limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(&client_key(client), now);
            refuse(verdict, true)?;
        }
        if let Some(bucket) = &self.service_limit {
            let verdict = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(now);
            refuse(verdict, false)?;
        }
        Ok(())
    }
}

fn refuse(verdict: Verdict, per_ip: bool) -> Result<(), Refusal> {
    match verdict.retry_after_secs() {
        None => Ok(()),
        Some(retry_after_secs) => Err(Refusal::Limited {
            per_ip,
            retry_after_secs,
        }),
    }
}

#[cfg(test)]
mod tests;
