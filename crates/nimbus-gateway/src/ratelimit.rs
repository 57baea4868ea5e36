//! Rate limits: token buckets for a whole service ([`TokenBucket`]) and per client
//! ([`KeyedLimiter`]), with rates written as `100/s` or `6000/m`.
//!
//! Everything here is pure: the caller passes the time as milliseconds since any fixed origin
//! (e.g. `Instant::now() - start` of the gateway), so tests control the clock. A refused request
//! gets the time until a token is back, for the `Retry-After` header of the 429.
//!
//! Tokens are counted in integers with no rounding drift: one token is `period_ms` units, a
//! bucket gains `count` units per millisecond and holds at most `burst` tokens.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// A rate: `count` requests per period, e.g. `100/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    period_ms: u64,
}

/// Why a rate or burst was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not `COUNT/UNIT`.
    #[error("rate {0:?} must look like COUNT/UNIT, e.g. 100/s, 6000/m or 10/h")]
    Format(String),
    /// The count is not a whole number from 1 to [`MAX_COUNT`].
    #[error("rate count {0:?} must be a whole number from 1 to 1000000000")]
    Count(String),
    /// The unit is not one of s, m, h.
    #[error("rate unit {0:?} must be s, m or h (or second, minute, hour)")]
    Unit(String),
    /// A burst of 0 would refuse every request.
    #[error("burst must be a whole number from 1 to 1000000000")]
    Burst,
}

/// The largest count of a rate or a burst: far above any real limit, small enough that the
/// token arithmetic cannot overflow.
pub const MAX_COUNT: u32 = 1_000_000_000;

/// A rate and the burst a bucket may hold, e.g. `--rate 100/s --burst 200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    rate: Rate,
    burst: u32,
}

/// The state of one token bucket under some [`Quota`]: 16 bytes, so a limiter can keep many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left, in units of 1/`period_ms` token.
    level: u64,
    /// When `level` was last brought up to date.
    updated_ms: u64,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through; `remaining` whole tokens are left.
    Allowed { remaining: u32 },
    /// Refuse it with 429; a token is back in `retry_after_ms` milliseconds.
    Limited { retry_after_ms: u64 },
}

/// One bucket with its quota: the limit of a whole service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    quota: Quota,
    bucket: Bucket,
}

/// A token bucket per key (e.g. per client IP) in bounded memory: at most `max_keys` buckets.
///
/// A bucket that has refilled to the burst is the same as no bucket, so those are dropped first
/// when room is needed (and by [`KeyedLimiter::sweep`]). If every bucket is still partly used,
/// the least recently used eighth is dropped: those clients start again with a full burst,
/// which errs on letting traffic through rather than refusing clients never seen before.
#[derive(Debug, Clone)]
pub struct KeyedLimiter<K> {
    quota: Quota,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

// === impl Rate ===

impl Rate {
    /// `count` requests per `period_ms` milliseconds; `None` when either is 0 or the count is
    /// above [`MAX_COUNT`].
    pub fn new(count: u32, period_ms: u64) -> Option<Self> {
        let valid = (1..=MAX_COUNT).contains(&count) && (1..=HOUR_MS).contains(&period_ms);
        valid.then_some(Self { count, period_ms })
    }

    /// Requests per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }
}

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;

impl FromStr for Rate {
    type Err = RateError;

    /// `COUNT/UNIT` with unit `s`, `m` or `h` (also `sec`, `second`, `min`, `minute`, `hour`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| RateError::Format(text.to_string()))?;
        let count = count.trim();
        let parsed: u32 = count
            .parse()
            .map_err(|_| RateError::Count(count.to_string()))?;
        if !(1..=MAX_COUNT).contains(&parsed) {
            return Err(RateError::Count(count.to_string()));
        }
        let period_ms = match unit.trim() {
            "s" | "sec" | "second" => SECOND_MS,
            "m" | "min" | "minute" => MINUTE_MS,
            "h" | "hour" => HOUR_MS,
            other => return Err(RateError::Unit(other.to_string())),
        };
        Ok(Self {
            count: parsed,
            period_ms,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period_ms {
            SECOND_MS => write!(f, "{}/s", self.count),
            MINUTE_MS => write!(f, "{}/m", self.count),
            HOUR_MS => write!(f, "{}/h", self.count),
            ms => write!(f, "{}/{ms}ms", self.count),
        }
    }
}

// === impl Quota ===

impl Quota {
    /// A rate with an explicit burst (the most requests let through at once after a pause).
    pub fn new(rate: Rate, burst: u32) -> Result<Self, RateError> {
        if !(1..=MAX_COUNT).contains(&burst) {
            return Err(RateError::Burst);
        }
        Ok(Self { rate, burst })
    }

    /// A rate whose burst is one period's worth, e.g. 100 for `100/s`.
    pub fn per_period(rate: Rate) -> Self {
        Self {
            rate,
            burst: rate.count,
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Units in one token.
    fn token(&self) -> u64 {
        self.rate.period_ms
    }

    /// Units in a full bucket.
    fn capacity(&self) -> u64 {
        u64::from(self.burst) * self.rate.period_ms
    }

    /// A bucket holding the whole burst at `now_ms`.
    pub fn full_bucket(&self, now_ms: u64) -> Bucket {
        Bucket {
            level: self.capacity(),
            updated_ms: now_ms,
        }
    }

    /// Adds the tokens earned since the bucket was last updated. A clock that went backwards
    /// earns nothing.
    fn refill(&self, bucket: &mut Bucket, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(bucket.updated_ms);
        let earned = elapsed.saturating_mul(u64::from(self.rate.count));
        bucket.level = bucket.level.saturating_add(earned).min(self.capacity());
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
    }

    /// Takes one token for a request at `now_ms`, if there is one.
    pub fn take(&self, bucket: &mut Bucket, now_ms: u64) -> Verdict {
        self.refill(bucket, now_ms);
        if let Some(level) = bucket.level.checked_sub(self.token()) {
            bucket.level = level;
            // At most `burst` ≤ MAX_COUNT, so it fits.
            let remaining = u32::try_from(level / self.token()).unwrap_or(u32::MAX);
            return Verdict::Allowed { remaining };
        }
        let missing = self.token() - bucket.level;
        Verdict::Limited {
            retry_after_ms: missing.div_ceil(u64::from(self.rate.count)),
        }
    }

    /// True when the bucket would be full at `now_ms`: it is then the same as a new one.
    pub fn is_full(&self, bucket: &Bucket, now_ms: u64) -> bool {
        let mut refilled = *bucket;
        self.refill(&mut refilled, now_ms);
        refilled.level >= self.capacity()
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} burst {}", self.rate, self.burst)
    }
}

// === impl Verdict ===

impl Verdict {
    /// True for [`Verdict::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }

    /// The `Retry-After` value in whole seconds, rounded up and at least 1 (the header has no
    /// fractions, and 0 would invite an immediate retry); `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Verdict::Allowed { .. } => None,
            Verdict::Limited { retry_after_ms } => Some(retry_after_ms.div_ceil(1_000).max(1)),
        }
    }
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(quota: Quota, now_ms: u64) -> Self {
        Self {
            quota,
            bucket: quota.full_bucket(now_ms),
        }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one token for a request at `now_ms`, if there is one.
    pub fn take(&mut self, now_ms: u64) -> Verdict {
        self.quota.take(&mut self.bucket, now_ms)
    }
}

// === impl KeyedLimiter ===

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter that keeps at most `max_keys` buckets (at least 1).
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        Self {
            quota,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes one token from `key`'s bucket for a request at `now_ms`, if there is one. A key
    /// seen for the first time starts with a full bucket.
    pub fn take(&mut self, key: &K, now_ms: u64) -> Verdict {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return self.quota.take(bucket, now_ms);
        }
        if self.buckets.len() >= self.max_keys {
            self.make_room(now_ms);
        }
        let mut bucket = self.quota.full_bucket(now_ms);
        let verdict = self.quota.take(&mut bucket, now_ms);
        self.buckets.insert(key.clone(), bucket);
        verdict
    }

    /// Drops the buckets that have refilled to the burst (idle keys); returns how many. Call it
    /// now and then (e.g. every few seconds) so memory follows the active clients.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.buckets.len();
        let quota = self.quota;
        self.buckets
            .retain(|_, bucket| !quota.is_full(bucket, now_ms));
        before - self.buckets.len()
    }

    /// Frees at least one slot: the idle buckets, else the least recently used eighth, so the
    /// O(n) scan is paid once per n/8 new keys.
    fn make_room(&mut self, now_ms: u64) {
        if self.sweep(now_ms) > 0 {
            return;
        }
        let evict = (self.buckets.len() / 8).max(1);
        let mut updated: Vec<u64> = self.buckets.values().map(|b| b.updated_ms).collect();
        let (_, cutoff, _) = updated.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        // Everything older than the cutoff goes, then only as many ties at it as needed.
        let older = updated.iter().filter(|&&at| at < cutoff).count();
        let mut ties = evict - older;
        self.buckets.retain(|_, bucket| {
            if bucket.updated_ms < cutoff {
                return false;
            }
            let drop = ties > 0 && bucket.updated_ms == cutoff;
            ties -= usize::from(drop);
            !drop
        });
    }
}

/// The key a client IP is limited under: IPv4 addresses (also IPv4-mapped IPv6) as they are,
/// IPv6 addresses by their /64, since one host usually holds a whole /64 and could otherwise
/// step around a per-address limit.
pub fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

#[cfg(test)]
mod tests;
