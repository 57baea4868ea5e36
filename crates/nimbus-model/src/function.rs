//! What makes a version a function: its runtime, handler, code folder, memory size and timeout.
//! A function version is an ordinary version underneath (its command starts the runtime shim,
//! concurrency 1, health path `/healthz`); this records the function's own view of it.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Smallest and largest function memory sizes, MiB (SCF: 64 MiB – 3 GiB).
pub const MIN_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 3072;
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Longest function timeout, ms (SCF: 900 s).
pub const MAX_TIMEOUT_MS: u64 = 900_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;

/// A function version's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    /// `python3`, `node` or `binary`.
    pub runtime: String,
    /// `FILE.func`, e.g. `index.main`.
    pub handler: String,
    /// Absolute path of the code folder.
    pub code_dir: String,
    pub memory_mb: u64,
    pub timeout_ms: u64,
}

/// `128Mi`, `1Gi`, `512` (MiB), `256M` → MiB, within 64–3072.
pub fn parse_memory_mb(text: &str) -> Result<u64, ModelError> {
    let invalid = |why: &str| {
        ModelError::invalid(
            "invalid_memory",
            "memory",
            format!("memory {text:?} {why}; use e.g. 128Mi, 512Mi or 1Gi"),
        )
    };
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| invalid("is not a size"))?;
    let mb = match unit {
        "" | "Mi" | "M" | "MiB" | "MB" => n,
        "Gi" | "G" | "GiB" | "GB" => n.saturating_mul(1024),
        _ => return Err(invalid("has an unknown unit")),
    };
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) {
        return Err(invalid(&format!(
            "is out of range {MIN_MEMORY_MB}Mi-{MAX_MEMORY_MB}Mi"
        )));
    }
    Ok(mb)
}

/// `3s`, `500ms`, `2m`, `3` (seconds) → ms, within 1 ms – 900 s.
pub fn parse_timeout_ms(text: &str) -> Result<u64, ModelError> {
    let invalid = |why: &str| {
        ModelError::invalid(
            "invalid_timeout",
            "timeout",
            format!("timeout {text:?} {why}; use e.g. 3s, 500ms or 2m"),
        )
    };
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| invalid("is not a duration"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        _ => return Err(invalid("has an unknown unit")),
    };
    if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
        return Err(invalid("is out of range 1ms-900s"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let ok = [
            ("128Mi", 128),
            ("1Gi", 1024),
            ("512", 512),
            ("256M", 256),
            ("3Gi", 3072),
        ];
        for (text, mb) in ok {
            assert_eq!(parse_memory_mb(text).ok(), Some(mb), "{text}");
        }
        for bad in ["", "Mi", "32Mi", "4Gi", "12Ki", "1.5Gi", "-1Mi"] {
            let e = parse_memory_mb(bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("memory"), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        let ok = [
            ("3s", 3000),
            ("500ms", 500),
            ("2m", 120_000),
            ("3", 3000),
            ("900s", 900_000),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_timeout_ms(text).ok(), Some(ms), "{text}");
        }
        for bad in ["", "s", "0s", "901s", "1h", "1.5s"] {
            let e = parse_timeout_ms(bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("timeout"), "{bad}");
        }
    }
}
