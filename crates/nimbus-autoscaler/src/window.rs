//! A bounded window of concurrency samples, one bucket per second.
//!
//! The gateway (or reconciler) samples each version's demand, in-flight plus queued requests,
//! about once a second and [`SampleWindow::record`]s it. The decider asks for the average over
//! the last N seconds ([`SampleWindow::average`]). Memory is fixed: one bucket per second of the
//! longest window (the stable window), reused as a ring.
//!
//! # Averaging rules
//! - Several samples in the same second are averaged into that second's bucket.
//! - A second with no sample inside the window counts as **zero demand** (the caller is expected
//!   to record every second, so a gap means nobody was sampling a busy version, which is rare,
//!   or that the version was idle).
//! - Before the window has filled (a version that just started), the average is taken over the
//!   seconds since the first sample only, so a fresh version is not under-counted.
//! - The current second counts only once it has a sample: deciding at 10.2 s, before that
//!   second's sample arrived, averages the window ending at second 9 rather than counting
//!   second 10 as a spurious zero.

use std::time::Duration;

/// One second (by default) of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    /// Which bucket this is: `timestamp / bucket_width`.
    index: u64,
    sum: f64,
    count: u32,
}

impl Bucket {
    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / f64::from(self.count)
        }
    }
}

/// A ring of per-second demand buckets covering the stable window.
///
/// Timestamps are [`Duration`]s since an arbitrary monotonic origin chosen by the caller (for
/// example `tokio::time::Instant` at server start), the same clock the decider is given.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleWindow {
    bucket_width: Duration,
    /// Ring storage; `None` = never written.
    buckets: Vec<Option<Bucket>>,
    /// Index of the first bucket ever recorded (the window may not be full yet).
    first_index: Option<u64>,
    /// Index of the newest bucket recorded; older-than-the-ring samples are dropped.
    newest_index: Option<u64>,
    /// Time of the first sample ever recorded.
    first_sample: Option<Duration>,
    /// Time of the most recent sample with non-zero demand.
    last_nonzero: Option<Duration>,
}

// === impl SampleWindow ===

impl SampleWindow {
    /// The bucket width [`SampleWindow::new`] uses.
    pub const DEFAULT_BUCKET: Duration = Duration::from_secs(1);

    /// A window able to average over up to `span` (round up to whole seconds, at least one).
    ///
    /// Give it the stable window: `SampleWindow::new(config.stable_window)`.
    pub fn new(span: Duration) -> Self {
        Self::with_bucket(span, Self::DEFAULT_BUCKET)
    }

    /// A window with a custom bucket width (a zero width is treated as 1 ms).
    pub fn with_bucket(span: Duration, bucket_width: Duration) -> Self {
        let bucket_width = bucket_width.max(Duration::from_millis(1));
        let len = buckets_in(span, bucket_width).max(1);
        Self {
            bucket_width,
            buckets: vec![None; usize::try_from(len).unwrap_or(usize::MAX).min(MAX_BUCKETS)],
            first_index: None,
            newest_index: None,
            first_sample: None,
            last_nonzero: None,
        }
    }

    /// The longest span this window can average over.
    pub fn span(&self) -> Duration {
        self.bucket_width
            .saturating_mul(u32::try_from(self.buckets.len()).unwrap_or(u32::MAX))
    }

    /// Records one demand sample (in-flight + queued requests) taken at `now`.
    ///
    /// Negative values count as 0 and NaN is ignored. A sample older than the whole window
    /// (relative to the newest one) is dropped; samples may otherwise arrive out of order.
    pub fn record(&mut self, now: Duration, value: f64) {
        if value.is_nan() {
            return;
        }
        let value = value.max(0.0);
        let index = self.index_of(now);
        let len = self.buckets.len() as u64;
        if let Some(newest) = self.newest_index {
            if index + len <= newest {
                return;
            }
        }
        let slot = self.slot(index);
        match &mut self.buckets[slot] {
            Some(bucket) if bucket.index == index => {
                bucket.sum += value;
                bucket.count = bucket.count.saturating_add(1);
            }
            other => {
                *other = Some(Bucket {
                    index,
                    sum: value,
                    count: 1,
                })
            }
        }
        self.newest_index = Some(self.newest_index.map_or(index, |n| n.max(index)));
        self.first_index = Some(self.first_index.map_or(index, |f| f.min(index)));
        self.first_sample = Some(self.first_sample.map_or(now, |f| f.min(now)));
        if value > 0.0 {
            self.last_nonzero = Some(self.last_nonzero.map_or(now, |l| l.max(now)));
        }
    }

    /// Average demand over the last `span` ending at `now` (see the module docs for the rules).
    ///
    /// `span` is capped at [`SampleWindow::span`]; a zero span means one bucket. Returns 0 when
    /// nothing has been recorded yet.
    pub fn average(&self, now: Duration, span: Duration) -> f64 {
        let Some(first) = self.first_index else {
            return 0.0;
        };
        let mut end = self.index_of(now);
        // The current bucket counts only once it has a sample.
        if self.bucket(end).is_none() && end > first {
            end -= 1;
        }
        if end < first {
            return 0.0;
        }
        let n = buckets_in(span, self.bucket_width).clamp(1, self.buckets.len() as u64);
        let start = (end + 1).saturating_sub(n).max(first);
        let sum: f64 = (start..=end)
            .filter_map(|i| self.bucket(i))
            .map(Bucket::mean)
            .sum();
        sum / (end - start + 1) as f64
    }

    /// When the most recent non-zero sample was recorded.
    pub fn last_nonzero(&self) -> Option<Duration> {
        self.last_nonzero
    }

    /// When the first sample was recorded.
    pub fn first_sample(&self) -> Option<Duration> {
        self.first_sample
    }

    /// How long demand has been zero at `now`: since the last non-zero sample, or since the first
    /// sample if demand was never seen. `None` when nothing has been recorded.
    pub fn idle_for(&self, now: Duration) -> Option<Duration> {
        self.last_nonzero
            .or(self.first_sample)
            .map(|since| now.saturating_sub(since))
    }

    fn index_of(&self, t: Duration) -> u64 {
        u64::try_from(t.as_nanos() / self.bucket_width.as_nanos()).unwrap_or(u64::MAX)
    }

    fn slot(&self, index: u64) -> usize {
        // The remainder is < buckets.len(), which is a usize.
        usize::try_from(index % self.buckets.len() as u64).unwrap_or(0)
    }

    fn bucket(&self, index: u64) -> Option<&Bucket> {
        self.buckets[self.slot(index)]
            .as_ref()
            .filter(|b| b.index == index)
    }
}

/// Caps memory for absurd spans (a day of one-second buckets).
const MAX_BUCKETS: usize = 86_400;

/// How many buckets of `width` cover `span`, rounded up.
fn buckets_in(span: Duration, width: Duration) -> u64 {
    let n = span.as_nanos().div_ceil(width.as_nanos());
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Samples as (second, value).
    type Samples = &'static [(u64, f64)];

    #[test]
    fn averages() {
        // (samples as (second, value), now, span, expected average)
        let cases: &[(Samples, u64, u64, f64)] = &[
            (&[], 10, 6, 0.0),                                      // nothing recorded
            (&[(0, 6.0)], 0, 6, 6.0),                               // one sample, fresh window
            (&[(0, 6.0), (1, 0.0)], 1, 6, 3.0),                     // not full yet: over 2 s
            (&[(0, 6.0), (5, 6.0)], 5, 6, 2.0),                     // gaps count as zero
            (&[(0, 6.0), (5, 6.0)], 6, 6, 2.0), // current second not yet sampled
            (&[(0, 9.0), (6, 3.0)], 6, 6, 0.5), // second 0 fell out of the window
            (&[(3, 2.0), (3, 4.0)], 3, 6, 3.0), // two samples in one second: mean
            (&[(0, 1.0), (100, 1.0)], 100, 60, 1.0 / 60.0), // ring reused after wrap
            (&[(0, 5.0)], 200, 60, 0.0),        // long ago
            (&[(0, 60.0), (59, 0.0)], 59, 600, 1.0), // span capped at the ring size
            (&[(10, -3.0), (11, f64::NAN), (11, 1.0)], 11, 6, 0.5), // negative = 0, NaN ignored
        ];
        for (samples, now, span, expected) in cases {
            let mut w = SampleWindow::new(s(60));
            for (t, v) in *samples {
                w.record(s(*t), *v);
            }
            let got = w.average(s(*now), s(*span));
            assert!(
                (got - expected).abs() < 1e-9,
                "{samples:?} @{now} over {span}: {got}"
            );
        }
    }

    #[test]
    fn stale_samples_are_dropped_and_idle_time_tracked() {
        let mut w = SampleWindow::new(s(10));
        assert_eq!(w.idle_for(s(5)), None);
        w.record(s(100), 0.0);
        assert_eq!(w.idle_for(s(130)), Some(s(30))); // never busy: idle since first sample
        w.record(s(101), 2.0);
        w.record(s(50), 99.0); // older than the ring: dropped
        assert_eq!(w.average(s(101), s(10)), 1.0);
        assert_eq!(w.last_nonzero(), Some(s(101)));
        assert_eq!(w.idle_for(s(131)), Some(s(30)));
        assert_eq!(w.span(), s(10));
    }
}
