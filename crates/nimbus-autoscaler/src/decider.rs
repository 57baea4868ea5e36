//! The KPA-style decider: observed demand in, desired instance count out.
//!
//! This is Knative's Pod Autoscaler math, per version:
//!
//! - **Target.** Each instance is aimed at `concurrency × target_utilization` requests
//!   (56 for the default 80 × 0.7). The target is never below [`MIN_TARGET`]. For `concurrency = 1`
//!   the target is 0.7, so one request in flight wants `ceil(1 / 0.7) = 2` instances: the second
//!   one is headroom for the next request. That is what Knative does and we keep it; lower the
//!   utilization to 1.0 for "exactly one instance per request".
//! - **Two windows.** `desired_stable = ceil(stable average / target)` over the stable window
//!   (60 s) and `desired_panic = ceil(panic average / target)` over the panic window (6 s).
//! - **Panic.** When the panic-window demand reaches `panic_threshold × current × target` (twice
//!   the capacity we run), the decider panics: it follows the short window and never scales down.
//!   It leaves panic only once a whole stable window has passed without the condition being true
//!   at any decision, so a burst does not make the count flap.
//! - **Scale-down delay.** Scale-up follows the recommendation at once. Scale-down goes only to
//!   the highest count asked for during the last `scale_down_delay` (30 s), where each moment
//!   asks for the larger of its stable and panic counts. This is Knative's `scale-down-delay`
//!   (the Kubernetes HPA's stabilization window), plus the panic window so that bursts which
//!   return within the delay keep their instances. Without it, load that wobbles around an
//!   instance boundary adds and removes an instance every period, and bursts at twice the
//!   average re-enter panic after every stable window.
//! - **Scale-down rate.** Outside panic, one decision removes at most `1 - 1 / max_scale_down_rate`
//!   of the instances (half by default): `desired ≥ ceil(current / rate)`. Scale-up is unlimited.
//! - **Scale to zero.** With `min = 0`, a version goes to 0 only when both windows are empty and
//!   no demand was seen for `stable_window + scale_to_zero_grace` (the grace starts once the stable
//!   window has emptied, as in Knative; 90 s by default). Until then the floor is 1 instance.
//!   The last step to 0 also obeys the scale-down rate (8 → 4 → 2 → 1 → 0).
//! - **Bounds.** The result is clamped to [`Bounds`]: the version's `min`/`max`, or those of an
//!   active schedule (see [`crate::schedule::effective_bounds`]).
//!
//! [`decide`] is pure: the caller owns a [`SampleWindow`] and a [`DeciderState`], passes `now`
//! and the current instance count, and stores the state it gets back. Call it every
//! [`ScalingConfig::tick`] (2 s); sample demand about every second.
//!
//! `current` should be the instances the supervisor runs or is starting, not only the ready ones,
//! so a slow start does not make the decider ask again for what is already on its way.

use std::{fmt, time::Duration};

use nimbus_model::spec::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_INSTANCES, DEFAULT_MIN_INSTANCES, MAX_CONCURRENCY,
    MAX_INSTANCES_LIMIT,
};
use serde::{Deserialize, Serialize};

use crate::{
    schedule::{effective_bounds, ActiveSchedule},
    window::SampleWindow,
};

/// Default share of `concurrency` each instance is aimed at (Knative's 70 %).
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// The smallest per-instance target, whatever the config says.
pub const MIN_TARGET: f64 = 0.01;

/// Per-version autoscaling knobs, with Knative's defaults.
///
/// Durations (de)serialize as whole milliseconds under a `_ms` name:
/// `{"concurrency": 80, "stable_window_ms": 60000, …}`; missing fields take their default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// The per-instance hard limit on concurrent requests, 1–1000.
    pub concurrency: u32,
    /// Share of `concurrency` each instance is aimed at, in (0, 1].
    pub target_utilization: f64,
    /// Window for the normal (stable) average: 60 s.
    #[serde(rename = "stable_window_ms", with = "crate::millis")]
    pub stable_window: Duration,
    /// Window for the burst (panic) average: 6 s, 10 % of the stable window.
    #[serde(rename = "panic_window_ms", with = "crate::millis")]
    pub panic_window: Duration,
    /// Panic when panic-window demand ≥ this × current capacity: 2.0.
    pub panic_threshold: f64,
    /// Extra idle time after the stable window empties before scaling to zero: 30 s.
    #[serde(rename = "scale_to_zero_grace_ms", with = "crate::millis")]
    pub scale_to_zero_grace: Duration,
    /// One decision keeps at least `current / rate` instances: 2.0 (at most halves).
    pub max_scale_down_rate: f64,
    /// Scale down only to the highest recommendation of this long ago until now: 30 s.
    /// Zero disables it (Knative's default).
    #[serde(rename = "scale_down_delay_ms", with = "crate::millis")]
    pub scale_down_delay: Duration,
    /// Fewest instances, 0–50.
    pub min: u32,
    /// Most instances, 1–50.
    pub max: u32,
    /// How often the caller should run [`decide`]: 2 s. Not used by the math.
    #[serde(rename = "tick_ms", with = "crate::millis")]
    pub tick: Duration,
}

/// A [`ScalingConfig`] field that is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("concurrency {0} is out of range 1-{MAX_CONCURRENCY}")]
    Concurrency(u32),
    #[error("target utilization {0} is out of range (0, 1]")]
    TargetUtilization(f64),
    #[error("stable window {0:?} is too short; use at least 1s")]
    StableWindow(Duration),
    #[error("panic window {panic:?} must be between 1s and the stable window ({stable:?})")]
    PanicWindow { panic: Duration, stable: Duration },
    #[error("panic threshold {0} must be a number of at least 1.0")]
    PanicThreshold(f64),
    #[error("max scale-down rate {0} must be a number above 1.0 (1.0 would never scale down)")]
    ScaleDownRate(f64),
    #[error("min instances {0} is out of range 0-{MAX_INSTANCES_LIMIT}")]
    Min(u32),
    #[error("max instances {0} is out of range 1-{MAX_INSTANCES_LIMIT}")]
    Max(u32),
    #[error("min instances {min} is above max instances {max}")]
    MinAboveMax { min: u32, max: u32 },
    #[error("tick must be longer than zero")]
    Tick,
}

/// The instance range one decision must respect, after any schedule is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
    /// `min` comes from an active schedule (a clamp to it reports [`Reason::Schedule`]).
    pub min_from_schedule: bool,
    /// `max` comes from an active schedule (a clamp to it reports [`Reason::Schedule`]).
    pub max_from_schedule: bool,
}

/// Why [`decide`] chose its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The stable-window average (possibly slowed by the scale-down rate).
    Stable,
    /// Panic mode: following the panic window, never scaling down.
    Panic,
    /// Clamped to a bound set by an active schedule.
    Schedule,
    /// Clamped up to the version's `min`.
    Min,
    /// Clamped down to the version's `max`.
    Max,
    /// Scaled to (or staying at) zero: no demand for long enough.
    Zero,
}

/// One decision, with the numbers behind it (for status and logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Instances the version should have.
    pub desired: u32,
    pub reason: Reason,
    /// The decider is in panic mode after this decision.
    pub panic: bool,
    /// Average demand over the stable window.
    pub stable_demand: f64,
    /// Average demand over the panic window.
    pub panic_demand: f64,
    /// Requests each instance is aimed at.
    pub target: f64,
}

/// What the decider remembers between decisions. Start from `DeciderState::default()`.
///
/// Times are on the caller's monotonic clock and serialize as milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeciderState {
    /// When the current panic began; `None` = not panicking.
    #[serde(rename = "panic_since_ms", with = "crate::millis::option")]
    pub panic_since: Option<Duration>,
    /// The last decision at which the panic condition held.
    #[serde(rename = "last_panic_trigger_ms", with = "crate::millis::option")]
    pub last_panic_trigger: Option<Duration>,
    /// The highest count desired during the current panic (panic never goes below it).
    pub panic_max: u32,
    /// Stable-window recommendations of the last `scale_down_delay`, oldest first (at most
    /// [`MAX_RECOMMENDATIONS`]).
    pub recent: Vec<Recommendation>,
}

/// One past stable-window recommendation, kept for the scale-down delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    #[serde(rename = "at_ms", with = "crate::millis")]
    pub at: Duration,
    pub desired: u32,
}

/// Caps [`DeciderState::recent`] even if the caller decides far more often than every tick.
pub const MAX_RECOMMENDATIONS: usize = 256;

// === impl ScalingConfig ===

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
            max_scale_down_rate: 2.0,
            scale_down_delay: Duration::from_secs(30),
            min: DEFAULT_MIN_INSTANCES,
            max: DEFAULT_MAX_INSTANCES,
            tick: Duration::from_secs(2),
        }
    }
}

impl ScalingConfig {
    /// Requests each instance is aimed at: `concurrency × target_utilization`, at least
    /// [`MIN_TARGET`].
    pub fn target(&self) -> f64 {
        let t = f64::from(self.concurrency) * self.target_utilization;
        if t.is_finite() {
            t.max(MIN_TARGET)
        } else {
            MIN_TARGET
        }
    }

    /// Checks every field; the first broken rule is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(ConfigError::Concurrency(self.concurrency));
        }
        let u = self.target_utilization;
        if !(u > 0.0 && u <= 1.0) {
            return Err(ConfigError::TargetUtilization(u));
        }
        let second = Duration::from_secs(1);
        if self.stable_window < second {
            return Err(ConfigError::StableWindow(self.stable_window));
        }
        if self.panic_window < second || self.panic_window > self.stable_window {
            return Err(ConfigError::PanicWindow {
                panic: self.panic_window,
                stable: self.stable_window,
            });
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold >= 1.0) {
            return Err(ConfigError::PanicThreshold(self.panic_threshold));
        }
        if !(self.max_scale_down_rate.is_finite() && self.max_scale_down_rate > 1.0) {
            return Err(ConfigError::ScaleDownRate(self.max_scale_down_rate));
        }
        if self.min > MAX_INSTANCES_LIMIT {
            return Err(ConfigError::Min(self.min));
        }
        if !(1..=MAX_INSTANCES_LIMIT).contains(&self.max) {
            return Err(ConfigError::Max(self.max));
        }
        if self.min > self.max {
            return Err(ConfigError::MinAboveMax {
                min: self.min,
                max: self.max,
            });
        }
        if self.tick.is_zero() {
            return Err(ConfigError::Tick);
        }
        Ok(())
    }

    /// The bounds for one decision: this version's `min`/`max`, replaced by `active`'s if any.
    pub fn bounds(&self, active: Option<&ActiveSchedule>) -> Bounds {
        effective_bounds(self.min, self.max, active)
    }

    /// An empty sample window sized for this config's stable window.
    pub fn window(&self) -> SampleWindow {
        SampleWindow::new(self.stable_window)
    }
}

// === impl Bounds ===

impl Bounds {
    /// Bounds straight from the version (no schedule).
    pub fn new(min: u32, max: u32) -> Self {
        Self {
            min,
            max,
            min_from_schedule: false,
            max_from_schedule: false,
        }
    }

    /// Either bound comes from a schedule.
    pub fn from_schedule(&self) -> bool {
        self.min_from_schedule || self.max_from_schedule
    }
}

// === impl Reason ===

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Stable => "stable",
            Reason::Panic => "panic",
            Reason::Schedule => "schedule",
            Reason::Min => "min",
            Reason::Max => "max",
            Reason::Zero => "zero",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl DeciderState ===

impl DeciderState {
    /// The decider is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic_since.is_some()
    }

    /// Remembers `desired` at `now`, forgets what is older than `delay`, and returns the highest
    /// recommendation left (including this one).
    fn remember(&mut self, now: Duration, desired: u32, delay: Duration) -> u32 {
        self.recent
            .retain(|r| r.at <= now && now.saturating_sub(r.at) <= delay);
        if delay.is_zero() {
            self.recent.clear();
        } else {
            self.recent.push(Recommendation { at: now, desired });
            let excess = self.recent.len().saturating_sub(MAX_RECOMMENDATIONS);
            self.recent.drain(..excess);
        }
        self.recent
            .iter()
            .map(|r| r.desired)
            .fold(desired, u32::max)
    }
}

/// Decides how many instances a version should have at `now` (see the module docs).
///
/// `window` holds the version's demand samples, `state` is what the previous call returned
/// (`DeciderState::default()` the first time), `current` is how many instances the version runs
/// or is starting. Returns the decision and the state to pass next time. Never panics.
pub fn decide(
    config: &ScalingConfig,
    bounds: Bounds,
    window: &SampleWindow,
    state: &DeciderState,
    now: Duration,
    current: u32,
) -> (Decision, DeciderState) {
    let target = config.target();
    let stable_demand = window.average(now, config.stable_window);
    let panic_demand = window.average(now, config.panic_window);
    let desired_stable = instances_for(stable_demand, target);
    let desired_panic = instances_for(panic_demand, target);
    let mut next = state.clone();

    // Enter, stay in or leave panic.
    let capacity = f64::from(current) * target;
    let over_threshold = current > 0 && panic_demand >= config.panic_threshold * capacity;
    if over_threshold {
        if next.panic_since.is_none() {
            next.panic_since = Some(now);
            next.panic_max = 0;
        }
        next.last_panic_trigger = Some(now);
    } else if next.in_panic() {
        let calm_since = next.last_panic_trigger.or(next.panic_since).unwrap_or(now);
        if now.saturating_sub(calm_since) >= config.stable_window {
            next.panic_since = None;
            next.last_panic_trigger = None;
            next.panic_max = 0;
        }
    }
    let panic = next.in_panic();

    // What the windows ask for, before the delay, the rate limit and the bounds.
    let recommended = if panic {
        // Follow the burst; never scale down while panicking.
        desired_panic.max(current).max(next.panic_max)
    } else if current == 0 && (stable_demand > 0.0 || panic_demand > 0.0) {
        // From zero, any demand wakes the version up.
        desired_stable.max(desired_panic).max(1)
    } else {
        desired_stable
    };
    // Scale-down guard: remember what the busiest recent moment needed, panic window included
    // (never used to scale up). Leaving panic then steps down gently, and bursts that come back
    // within the delay keep their capacity instead of re-entering panic each time.
    let delayed = next.remember(now, recommended.max(desired_panic), config.scale_down_delay);

    let (mut desired, mut reason) = if panic {
        (recommended, Reason::Panic)
    } else if recommended >= current && recommended > 0 {
        (recommended, Reason::Stable)
    } else {
        let floor = scale_down_floor(current, config.max_scale_down_rate);
        let d = delayed.min(current).max(floor);
        if desired_stable == 0 && d <= 1 {
            let idle_enough = window.idle_for(now).is_some_and(|idle| {
                idle >= config
                    .stable_window
                    .saturating_add(config.scale_to_zero_grace)
            });
            let no_demand = stable_demand == 0.0 && panic_demand == 0.0;
            if bounds.min == 0 && no_demand && (current == 0 || idle_enough) {
                (0, Reason::Zero)
            } else if bounds.min == 0 {
                // Recent traffic: keep one instance warm until the grace is over.
                (1, Reason::Stable)
            } else {
                // The clamp below raises it to `min` and says so.
                (0, Reason::Stable)
            }
        } else {
            (d, Reason::Stable)
        }
    };

    if desired < bounds.min {
        desired = bounds.min;
        reason = if bounds.min_from_schedule {
            Reason::Schedule
        } else {
            Reason::Min
        };
    }
    if desired > bounds.max {
        desired = bounds.max;
        reason = if bounds.max_from_schedule {
            Reason::Schedule
        } else {
            Reason::Max
        };
    }
    if panic {
        next.panic_max = next.panic_max.max(desired);
    }

    let decision = Decision {
        desired,
        reason,
        panic,
        stable_demand,
        panic_demand,
        target,
    };
    (decision, next)
}

/// `ceil(demand / target)` as an instance count (saturating; 0 for no demand).
///
/// A hair below an integer counts as that integer, so rounding noise in an average of 35.0 on
/// a target of 7.0 does not ask for a sixth instance.
fn instances_for(demand: f64, target: f64) -> u32 {
    let n = (demand / target - 1e-9).ceil();
    if n.is_nan() || n <= 0.0 {
        0
    } else if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range and integral: the cast is exact.
        n as u32
    }
}

/// The fewest instances one scale-down may leave: `ceil(current / rate)`.
fn scale_down_floor(current: u32, rate: f64) -> u32 {
    let rate = if rate.is_finite() && rate > 1.0 {
        rate
    } else {
        1.0
    };
    instances_for(f64::from(current), rate)
}

#[cfg(test)]
mod tests;
