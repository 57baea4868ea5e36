//! Passive health: outlier ejection. Each instance counts its consecutive failures (a 5xx answer
//! or a failed connection); at the policy's threshold it is ejected (left out of the gate's
//! choice) for a backoff that doubles with each ejection in a row, up to [`MAX_FACTOR`] times the
//! base. When the backoff ends the instance takes requests again: one success clears its record,
//! one more failure ejects it again at once (the first request back is the probe).
//!
//! [`OutlierState::record`] is the whole decision, pure over the time passed in (milliseconds
//! since any fixed origin). The gate never ejects every instance of a version: with all of them
//! ejected it ignores ejection (as Envoy's panic threshold does) rather than refuse traffic.

use std::time::Duration;

/// The longest ejection, as a multiple of the base.
pub const MAX_FACTOR: u64 = 10;

/// When to eject and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject an instance; 0 turns ejection off.
    pub consecutive: u32,
    /// The first ejection's length.
    pub base: Duration,
}

/// One instance's failure record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutlierState {
    /// Failures since the last success.
    pub failures: u32,
    /// Ejections since the last success.
    pub ejections: u32,
    /// Ejected until this time (ms), if it ever was since the last success.
    pub ejected_until_ms: Option<u64>,
}

/// The outcome of one request to an instance, as ejection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer below 500 (or a 5xx the policy does not count).
    Success,
    /// A 5xx answer, a failed connection, or no answer at all.
    Failure,
}

// === impl OutlierPolicy ===

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive: nimbus_model::gateway::DEFAULT_EJECT_AFTER,
            base: Duration::from_millis(nimbus_model::gateway::DEFAULT_EJECT_FOR_MS),
        }
    }
}

// === impl OutlierState ===

impl OutlierState {
    /// Records an outcome at `now_ms`; returns the new ejection end when this outcome ejects
    /// the instance.
    pub fn record(&mut self, policy: &OutlierPolicy, outcome: Outcome, now_ms: u64) -> Option<u64> {
        match outcome {
            Outcome::Success => {
                *self = Self::default();
                None
            }
            Outcome::Failure => {
                if policy.consecutive == 0 {
                    return None;
                }
                if self.ejected_until_ms.is_some_and(|until| now_ms < until) {
                    // A request admitted before the ejection; it is out already.
                    return None;
                }
                self.failures = self.failures.saturating_add(1);
                // Back from an ejection and failing again: the probe failed, out at once.
                let probe_failed = self.ejections > 0;
                if !probe_failed && self.failures < policy.consecutive {
                    return None;
                }
                let factor = (1u64 << self.ejections.min(16)).min(MAX_FACTOR);
                let base = u64::try_from(policy.base.as_millis()).unwrap_or(u64::MAX);
                let until = now_ms.saturating_add(base.saturating_mul(factor));
                self.ejections = self.ejections.saturating_add(1);
                self.ejected_until_ms = Some(until);
                Some(until)
            }
        }
    }

    /// True while ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// Active health checks of a service's instances (run by the reconciler's watchers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    pub path: String,
    pub interval: Duration,
    /// Consecutive failures that take an instance out.
    pub unhealthy_after: u32,
    /// Consecutive passes that bring it back.
    pub healthy_after: u32,
}

/// One instance's active health: healthy until `unhealthy_after` failures in a row, then
/// unhealthy until `healthy_after` passes in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    pub healthy: bool,
    /// Checks in a row that disagree with `healthy`.
    streak: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
        }
    }
}

impl HealthState {
    /// Records one check; returns the new state when it changes.
    pub fn record(&mut self, check: &ActiveCheck, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            check.unhealthy_after
        } else {
            check.healthy_after
        };
        if self.streak < needed.max(1) {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

#[cfg(test)]
mod tests;
