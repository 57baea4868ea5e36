//! Retries of failed async invocations: how many attempts, and how long to wait before the next.
//!
//! Pure: the queue stores each invocation's policy and asks [`RetryPolicy::after_failure`] what
//! to do once an attempt failed. The wait doubles per failed attempt:
//! `backoff_base × 2^(attempts − 1)`, capped at `backoff_max`. With the defaults (3 attempts,
//! 1 s base) a failing invocation runs at t, t + 1 s, t + 3 s, then goes to the dead-letter list.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// How an async invocation is retried. Stored with each invocation when it is enqueued, so a
/// later change of the function's settings does not affect invocations already accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 3 = one try and two retries.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    #[serde(with = "millis")]
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "millis")]
    pub backoff_max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run it again after this wait.
    RetryIn(Duration),
    /// That was the last attempt: move it to the dead-letter list.
    DeadLetter,
}

/// A policy that cannot be accepted; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error("max attempts {0} is out of range 1-{MAX_ATTEMPTS_LIMIT} (1 = no retry)")]
    MaxAttempts(u32),
    #[error("the backoff base {base:?} is longer than the backoff max {max:?}")]
    BaseAboveMax { base: Duration, max: Duration },
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    /// 3 attempts (1 try + 2 retries), waits of 1 s then 2 s, never more than 5 min.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err(RetryPolicyError::MaxAttempts(self.max_attempts));
        }
        if self.backoff_base > self.backoff_max {
            return Err(RetryPolicyError::BaseAboveMax {
                base: self.backoff_base,
                max: self.backoff_max,
            });
        }
        Ok(())
    }

    /// The decision once attempt number `attempts_made` (1-based, the one that just failed) has
    /// failed.
    pub fn after_failure(&self, attempts_made: u32) -> RetryDecision {
        if attempts_made >= self.max_attempts {
            return RetryDecision::DeadLetter;
        }
        RetryDecision::RetryIn(self.backoff(attempts_made))
    }

    /// The wait after `attempts_made` failed attempts: base × 2^(attempts_made − 1), capped.
    pub fn backoff(&self, attempts_made: u32) -> Duration {
        let doublings = attempts_made.saturating_sub(1).min(31);
        self.backoff_base
            .checked_mul(1u32 << doublings)
            .unwrap_or(Duration::MAX)
            .min(self.backoff_max)
    }
}

/// Durations as whole milliseconds in JSON (`backoff_base: 1000`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
