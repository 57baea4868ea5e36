//! The [`Meter`]: turns cumulative samples per instance, and counts from the gateway and the
//! builder, into per-minute [`Rollup`] rows keyed by (namespace, service, version). Pure: the
//! caller passes the time and persists each [`Flush`].
//!
//! # Deltas
//! Between two samples of the same instance *incarnation* (same process: pid and start time):
//! - CPU: the counter's increase. A counter that went down (a member exited unreaped) adds 0 and
//!   the lower value becomes the new base, so nothing is ever negative or counted twice.
//! - Memory used: resident memory by the **trapezoid** rule, (rss₀ + rss₁) / 2 × elapsed.
//! - Memory allocated: the configured size × elapsed. Instance time: elapsed.
//!
//! A sample of an unseen instance, or of a new incarnation (the process was replaced), adds the
//! whole CPU counter (all of that process's CPU is new to us) and no time: the time before the
//! first sample is not metered, so an instance loses at most one sample interval at each end.
//!
//! # Minutes
//! Each contribution lands in the minute of its end sample (or of the gateway call). A minute is
//! *open* until [`Meter::flush`] closes it (every minute before the current one); a closed minute
//! is final: later contributions stamped in it are moved to the first open minute.
//!
//! # Restart safety: every flush is a checkpoint
//! A [`Flush`] holds the current totals of every minute that changed (closed *and* open ones),
//! the latest sample of every instance sampled since the previous flush (its *baseline*), and the
//! first open minute. The store writes it in one transaction, replacing rows by
//! (namespace, service, version, minute), so writing a flush twice changes nothing. After a
//! restart, [`Meter::resume`] takes the persisted baselines and open minutes back, and every
//! instance continues from its baseline: the CPU, memory and running time of a process that kept
//! running across the restart are counted once and with no gap. Only gateway, build and function
//! counts since the last flush are lost on a crash, so flush on every sampling tick.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::usage::{function_mib_ms, trapezoid_mib_ms};
use crate::Usage;

#[cfg(test)]
mod tests;

/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60_000;

/// The minute (since the Unix epoch) a time in Unix milliseconds falls in.
pub fn minute_of(at_ms: u64) -> u64 {
    at_ms / MINUTE_MS
}

/// What usage is summed by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageKey {
    pub namespace: String,
    pub service: String,
    pub version: String,
}

impl UsageKey {
    pub fn new(namespace: &str, service: &str, version: &str) -> Self {
        UsageKey {
            namespace: namespace.into(),
            service: service.into(),
            version: version.into(),
        }
    }
}

/// One reading of an instance's cumulative counters. Also the persisted baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The instance id (unique for the life of the installation).
    pub instance: String,
    pub key: UsageKey,
    /// Changes whenever the instance's process is replaced, e.g. `"PID@START_TIME"` of the group
    /// leader. Counters restart from 0 with a new incarnation.
    pub incarnation: String,
    /// When the reading was taken, Unix milliseconds.
    pub at_ms: u64,
    /// Cumulative CPU time of the incarnation, microseconds.
    pub cpu_micros: u64,
    /// Resident memory at `at_ms`, bytes.
    pub rss_bytes: u64,
    /// The configured memory size, MiB (for allocated GB-s).
    pub memory_limit_mib: u64,
}

/// The usage of one key in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    pub key: UsageKey,
    /// Minutes since the Unix epoch ([`minute_of`]).
    pub minute: u64,
    pub usage: Usage,
}

/// A checkpoint from [`Meter::flush`]: persist it all in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flush {
    /// The first minute still open; every minute before it is final.
    pub next_minute: u64,
    /// The current totals of every minute that changed since the previous flush, ordered by
    /// key then minute. Replace stored rows with these (do not add).
    pub rows: Vec<Rollup>,
    /// The latest sample of every instance sampled since the previous flush: the rows include
    /// everything up to it.
    pub baselines: Vec<Sample>,
    /// Instances [`Meter::forget`] dropped: delete their baselines (before writing `baselines`).
    pub forgotten: Vec<String>,
}

/// What a restarted meter continues from: the persisted state of the last flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterState {
    /// [`Flush::next_minute`] of the last flush (0 when none).
    pub next_minute: u64,
    /// The latest baseline of every instance not forgotten.
    pub baselines: Vec<Sample>,
    /// The stored rows of minutes `>= next_minute`.
    pub open_rows: Vec<Rollup>,
}

/// The usage accumulated since the last flush (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    next_minute: u64,
    /// Totals of open minutes, and of minutes closed since the last flush.
    minutes: BTreeMap<(UsageKey, u64), Usage>,
    /// Minutes changed since the last flush.
    dirty_minutes: BTreeSet<(UsageKey, u64)>,
    /// Latest sample per instance.
    instances: BTreeMap<String, Sample>,
    /// Instances sampled since the last flush.
    dirty_instances: BTreeSet<String>,
    forgotten: Vec<String>,
}

/// The usage between two samples of an instance (see the module doc). `None` when `next` is a
/// different instance, key or incarnation: then [`first_sample_usage`] applies.
pub fn interval_usage(prev: &Sample, next: &Sample) -> Option<Usage> {
    if prev.instance != next.instance
        || prev.key != next.key
        || prev.incarnation != next.incarnation
    {
        return None;
    }
    // A clock stepping back makes the interval empty rather than negative.
    let elapsed_ms = next.at_ms.saturating_sub(prev.at_ms);
    Some(Usage {
        cpu_micros: next.cpu_micros.saturating_sub(prev.cpu_micros),
        memory_allocated_mib_ms: prev.memory_limit_mib.saturating_mul(elapsed_ms),
        memory_used_mib_ms: trapezoid_mib_ms(prev.rss_bytes, next.rss_bytes, elapsed_ms),
        instance_ms: elapsed_ms,
        ..Usage::default()
    })
}

/// The usage a sample adds when there is nothing to diff it against: the CPU counter.
pub fn first_sample_usage(sample: &Sample) -> Usage {
    Usage {
        cpu_micros: sample.cpu_micros,
        ..Usage::default()
    }
}

// === impl Meter ===

impl Meter {
    /// A meter with no history: every instance's first sample counts its whole CPU counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after a restart from the persisted state of the last flush
    /// ([`crate::store::UsageStore::load_state`]).
    pub fn resume(state: MeterState) -> Self {
        let next_minute = state.next_minute;
        Meter {
            next_minute,
            minutes: state
                .open_rows
                .into_iter()
                .filter(|row| row.minute >= next_minute)
                .map(|row| ((row.key, row.minute), row.usage))
                .collect(),
            instances: state
                .baselines
                .into_iter()
                .map(|b| (b.instance.clone(), b))
                .collect(),
            ..Self::default()
        }
    }

    /// The instances with state (sampled, or restored by [`Meter::resume`]). After a restart,
    /// [`Meter::forget`] those the driver did not adopt.
    pub fn tracked_instances(&self) -> Vec<String> {
        self.instances.keys().cloned().collect()
    }

    /// The first open minute.
    pub fn next_minute(&self) -> u64 {
        self.next_minute
    }

    /// Records one sample of an instance. Samples of one instance must come in time order.
    pub fn record(&mut self, sample: Sample) {
        let minute = self.open_minute(sample.at_ms);
        let usage = self
            .instances
            .get(&sample.instance)
            .and_then(|last| interval_usage(last, &sample))
            .unwrap_or_else(|| first_sample_usage(&sample));
        self.add(&sample.key, minute, &usage);
        self.dirty_instances.insert(sample.instance.clone());
        self.instances.insert(sample.instance.clone(), sample);
    }

    /// Requests the gateway forwarded for `key` and their bytes (egress: response bytes sent
    /// to clients; ingress: request bytes received).
    pub fn add_requests(
        &mut self,
        key: &UsageKey,
        at_ms: u64,
        requests: u64,
        egress_bytes: u64,
        ingress_bytes: u64,
    ) {
        let usage = Usage {
            requests,
            egress_bytes,
            ingress_bytes,
            ..Usage::default()
        };
        let minute = self.open_minute(at_ms);
        self.add(key, minute, &usage);
    }

    /// A finished build of `key`'s version that took `took`.
    pub fn add_build(&mut self, key: &UsageKey, at_ms: u64, took: Duration) {
        let usage = Usage {
            build_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            ..Usage::default()
        };
        let minute = self.open_minute(at_ms);
        self.add(key, minute, &usage);
    }

    /// One function invocation: `duration` rounded up to 1 ms × `memory_mib` (see
    /// [`function_mib_ms`]), and one request, as Cloud Run functions and SCF bill each
    /// invocation.
    pub fn add_function(
        &mut self,
        key: &UsageKey,
        at_ms: u64,
        duration: Duration,
        memory_mib: u64,
    ) {
        let usage = Usage {
            requests: 1,
            function_mib_ms: function_mib_ms(duration, memory_mib),
            ..Usage::default()
        };
        let minute = self.open_minute(at_ms);
        self.add(key, minute, &usage);
    }

    /// The instance stopped: drop its state (its usage so far stays) and delete its baseline
    /// at the next flush. A later sample of the same id starts afresh.
    pub fn forget(&mut self, instance: &str) {
        if self.instances.remove(instance).is_some() {
            self.dirty_instances.remove(instance);
            self.forgotten.push(instance.to_string());
        }
    }

    /// The usage in open minutes, summed per key (for live views and `/metrics`).
    pub fn open_usage(&self) -> BTreeMap<UsageKey, Usage> {
        let mut sums: BTreeMap<UsageKey, Usage> = BTreeMap::new();
        let open = self
            .minutes
            .iter()
            .filter(|((_, m), _)| *m >= self.next_minute);
        for ((key, _), usage) in open {
            *sums.entry(key.clone()).or_default() += usage;
        }
        sums
    }

    /// Closes every minute before `minute_of(now_ms)` and returns the checkpoint to persist
    /// (see the module doc). Nothing changed since the last flush gives an empty one.
    pub fn flush(&mut self, now_ms: u64) -> Flush {
        let close = minute_of(now_ms).max(self.next_minute);
        self.next_minute = close;

        let rows = std::mem::take(&mut self.dirty_minutes)
            .into_iter()
            .filter_map(|(key, minute)| {
                let usage = *self.minutes.get(&(key.clone(), minute))?;
                Some(Rollup { key, minute, usage })
            })
            .collect();
        // Closed minutes were written above for the last time.
        self.minutes.retain(|(_, minute), _| *minute >= close);

        let baselines = std::mem::take(&mut self.dirty_instances)
            .into_iter()
            .filter_map(|instance| self.instances.get(&instance).cloned())
            .collect();

        Flush {
            next_minute: close,
            rows,
            baselines,
            forgotten: std::mem::take(&mut self.forgotten),
        }
    }

    /// The minute a contribution at `at_ms` lands in: its own, or the first open one.
    fn open_minute(&self, at_ms: u64) -> u64 {
        minute_of(at_ms).max(self.next_minute)
    }

    fn add(&mut self, key: &UsageKey, minute: u64, usage: &Usage) {
        if usage.is_zero() {
            return;
        }
        *self.minutes.entry((key.clone(), minute)).or_default() += usage;
        self.dirty_minutes.insert((key.clone(), minute));
    }
}
