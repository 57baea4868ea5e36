//! Nimbus autoscaler math: how many instances a version should run, and which scheduled-scaling
//! rule is in force.
//!
//! This crate is pure. It never sleeps, reads a clock, spawns a task or touches the store: the
//! caller (the reconciler's scaling loop) records demand samples, passes `now`, keeps the
//! returned state and applies the decision. That keeps every rule testable with synthetic traces.
//!
//! # Layout
//! - [`window`]: [`SampleWindow`], a bounded ring of per-second demand samples with window
//!   averages.
//! - [`decider`]: the Knative-KPA-style [`decide`] function (stable and panic windows, scale-down
//!   rate, scale to zero, min/max clamps) with its [`ScalingConfig`] and [`DeciderState`].
//! - [`schedule`]: cron-driven [`Schedule`]s, [`active`](schedule::active) to find the one in
//!   force and [`effective_bounds`] to turn it into the decider's [`Bounds`].
//!
//! # Use
//! ```
//! use std::time::Duration;
//! use nimbus_autoscaler::{decide, DeciderState, Reason, ScalingConfig};
//!
//! let config = ScalingConfig { concurrency: 10, max: 20, ..ScalingConfig::default() };
//! let mut window = config.window();
//! let mut state = DeciderState::default();
//! let mut current = 1;
//! for second in 0..10u64 {
//!     let now = Duration::from_secs(second);
//!     window.record(now, 35.0); // in-flight + queued requests, sampled each second
//!     if second % 2 == 0 {
//!         let (decision, next) = decide(&config, config.bounds(None), &window, &state, now, current);
//!         state = next;
//!         current = decision.desired;
//!     }
//! }
//! assert_eq!(current, 5); // 35 requests / (10 × 0.7) per instance
//! ```

#![forbid(unsafe_code)]

pub mod decider;
mod millis;
pub mod schedule;
pub mod window;

pub use decider::{decide, Bounds, ConfigError, DeciderState, Decision, Reason, ScalingConfig};
pub use schedule::{effective_bounds, parse_cron, ActiveSchedule, Schedule, ScheduleError};
pub use window::SampleWindow;
