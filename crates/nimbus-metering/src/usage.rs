//! The measured quantities, in exact integer base units, and the conversions into them.
//!
//! Every quantity is an integer so sums never drift: CPU in microseconds, memory × time in
//! MiB·milliseconds, time in milliseconds, traffic in bytes. "GB" in Nimbus always means GiB
//! (2^30 bytes), so 1 GB-second = 1024 MiB × 1000 ms = [`MIB_MS_PER_GB_SECOND`] MiB·ms.

use std::ops::{Add, AddAssign};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// MiB·ms in one GB-second (GB = GiB = 1024 MiB).
pub const MIB_MS_PER_GB_SECOND: u64 = 1024 * 1000;
/// Bytes in one GB (GiB).
pub const BYTES_PER_GB: u64 = 1 << 30;
const BYTES_PER_MIB: u128 = 1 << 20;

/// Usage of one key (instance, version, service, …) over some time, in exact base units.
/// Addition saturates instead of overflowing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time, microseconds (user + system, all processes of the instance).
    pub cpu_micros: u64,
    /// Configured memory size × running time, MiB·ms.
    pub memory_allocated_mib_ms: u64,
    /// Resident memory × running time, MiB·ms.
    pub memory_used_mib_ms: u64,
    /// Running time of instances, ms.
    pub instance_ms: u64,
    /// Requests the gateway forwarded.
    pub requests: u64,
    /// Response bytes the gateway sent to clients.
    pub egress_bytes: u64,
    /// Request bytes the gateway received from clients.
    pub ingress_bytes: u64,
    /// Build time, ms.
    pub build_ms: u64,
    /// Function invocations: duration rounded up to 1 ms × memory size, MiB·ms
    /// (see [`function_mib_ms`]).
    pub function_mib_ms: u64,
}

impl Usage {
    /// Whether nothing at all was used.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_micros as f64 / 1e6
    }

    pub fn memory_allocated_gb_seconds(&self) -> f64 {
        self.memory_allocated_mib_ms as f64 / MIB_MS_PER_GB_SECOND as f64
    }

    pub fn memory_used_gb_seconds(&self) -> f64 {
        self.memory_used_mib_ms as f64 / MIB_MS_PER_GB_SECOND as f64
    }

    pub fn instance_seconds(&self) -> f64 {
        self.instance_ms as f64 / 1e3
    }

    pub fn egress_gb(&self) -> f64 {
        self.egress_bytes as f64 / BYTES_PER_GB as f64
    }

    pub fn build_seconds(&self) -> f64 {
        self.build_ms as f64 / 1e3
    }

    pub fn function_gb_seconds(&self) -> f64 {
        self.function_mib_ms as f64 / MIB_MS_PER_GB_SECOND as f64
    }
}

impl AddAssign<&Usage> for Usage {
    fn add_assign(&mut self, other: &Usage) {
        self.cpu_micros = self.cpu_micros.saturating_add(other.cpu_micros);
        self.memory_allocated_mib_ms = self
            .memory_allocated_mib_ms
            .saturating_add(other.memory_allocated_mib_ms);
        self.memory_used_mib_ms = self
            .memory_used_mib_ms
            .saturating_add(other.memory_used_mib_ms);
        self.instance_ms = self.instance_ms.saturating_add(other.instance_ms);
        self.requests = self.requests.saturating_add(other.requests);
        self.egress_bytes = self.egress_bytes.saturating_add(other.egress_bytes);
        self.ingress_bytes = self.ingress_bytes.saturating_add(other.ingress_bytes);
        self.build_ms = self.build_ms.saturating_add(other.build_ms);
        self.function_mib_ms = self.function_mib_ms.saturating_add(other.function_mib_ms);
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        *self += &other;
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(mut self, other: Usage) -> Usage {
        self += &other;
        self
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), Add::add)
    }
}

/// GB-s of one function invocation, as MiB·ms: the duration rounded **up** to a whole
/// millisecond, times the memory size in MiB. (GB-s = this / 1 024 000, i.e. ms/1000 × MiB/1024.)
/// A zero duration bills nothing.
pub fn function_mib_ms(duration: Duration, memory_mib: u64) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    saturate(ms.saturating_mul(u128::from(memory_mib)))
}

/// Resident memory over an interval by the trapezoid rule: (rss at start + rss at end) / 2 ×
/// elapsed, as MiB·ms rounded to the nearest (halves up).
pub fn trapezoid_mib_ms(rss_start_bytes: u64, rss_end_bytes: u64, elapsed_ms: u64) -> u64 {
    let byte_ms_x2 = (u128::from(rss_start_bytes) + u128::from(rss_end_bytes))
        .saturating_mul(u128::from(elapsed_ms));
    saturate(div_round_half_up(byte_ms_x2, 2 * BYTES_PER_MIB))
}

/// `n / d` rounded to the nearest integer, halves up. `d` must not be zero.
pub(crate) fn div_round_half_up(n: u128, d: u128) -> u128 {
    let q = n / d;
    if (n % d).saturating_mul(2) >= d {
        q + 1
    } else {
        q
    }
}

pub(crate) fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
