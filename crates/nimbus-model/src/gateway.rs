//! A service's gateway policy as stored and sent over the API: load balancing, session affinity,
//! rate limits, access rules, size and time limits, upstream protocol and outlier ejection.
//!
//! This is data plus the checks that need no gateway types (numbers, sizes, durations). The
//! text fields (`lb`, `rate`, `access`) are parsed by `nimbus-gateway` (`ServicePolicy::compile`),
//! which the API runs before it stores a spec, so a stored spec always compiles.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Largest `max_body_bytes`: 4 GiB.
pub const MAX_BODY_LIMIT: u64 = 4 << 30;
/// Longest time-to-first-byte timeout: one hour, the longest version timeout.
pub const MAX_TTFB_TIMEOUT_MS: u64 = 3_600_000;
/// Longest WebSocket idle timeout: one day.
pub const MAX_WS_IDLE_SECS: u64 = 86_400;
/// Default consecutive failures (5xx or connect errors) that eject an instance (Envoy's 5).
pub const DEFAULT_EJECT_AFTER: u32 = 5;
/// Default first ejection; each ejection in a row doubles it, up to 10×.
pub const DEFAULT_EJECT_FOR_MS: u64 = 10_000;

/// Session affinity to a version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// Every request is routed on its own.
    #[default]
    None,
    /// The first response sets a cookie naming the version; later requests carrying it go to
    /// that version while it still takes traffic.
    Cookie,
}

/// How the gateway talks to a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge (gRPC-style apps).
    H2c,
}

/// A service's gateway policy. Every field is optional; an empty spec is the default behaviour
/// (least-outstanding balancing, no limits beyond the version's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    /// `round-robin`, `weighted`, `least-request`, `hash:ip`, `hash:header:NAME`,
    /// `hash:cookie:NAME`; absent (or `least-outstanding`): the fewest requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<String>,
    #[serde(default)]
    pub affinity: Affinity,
    /// Requests per period for the whole service, e.g. `100/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Tokens the service's bucket holds; default one period's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests per period for each client IP (IPv6 by /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_per_ip: Option<u32>,
    /// Access rules in order, `allow|deny [CONDITION ...]`; the first that matches decides, and
    /// a request no rule matches is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<String>,
    /// Largest request body; a bigger one gets 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Longest wait for an instance's response headers once the request is sent (504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_timeout_ms: Option<u64>,
    /// A WebSocket (or other upgraded connection) with no byte either way for this long is
    /// closed; default the version's request timeout. A busy one is never cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_idle_timeout_secs: Option<u64>,
    #[serde(default)]
    pub upstream_protocol: UpstreamProtocol,
    /// Consecutive failures that take an instance out of rotation; 0 turns ejection off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eject_after: Option<u32>,
    /// The first ejection's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eject_for_ms: Option<u64>,
    /// Active health checks: `GET` this path on every ready instance (a status below 500
    /// passes); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// Time between two checks of one instance (default 5 s); a check times out after the
    /// same time, at most 2 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_interval_ms: Option<u64>,
    /// Consecutive failed checks that take an instance out of rotation (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive passed checks that bring it back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

/// Default time between two active health checks of one instance.
pub const DEFAULT_HEALTH_CHECK_INTERVAL_MS: u64 = 5_000;
/// Default consecutive failed checks that take an instance out.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default consecutive passed checks that bring it back.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;

impl GatewaySpec {
    /// Checks the numeric fields; the text fields are checked by the gateway's compiler.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(bytes) = self.max_body_bytes {
            if !(1..=MAX_BODY_LIMIT).contains(&bytes) {
                return Err(ModelError::invalid(
                    "invalid_max_body",
                    "max_body_bytes",
                    format!("max body {bytes} bytes is out of range 1 byte to 4Gi"),
                ));
            }
        }
        if let Some(ms) = self.ttfb_timeout_ms {
            if !(1..=MAX_TTFB_TIMEOUT_MS).contains(&ms) {
                return Err(ModelError::invalid(
                    "invalid_ttfb_timeout",
                    "ttfb_timeout_ms",
                    format!("time-to-first-byte timeout {ms} ms is out of range 1 ms to 1h"),
                ));
            }
        }
        if let Some(secs) = self.ws_idle_timeout_secs {
            if !(1..=MAX_WS_IDLE_SECS).contains(&secs) {
                return Err(ModelError::invalid(
                    "invalid_ws_idle_timeout",
                    "ws_idle_timeout_secs",
                    format!("WebSocket idle timeout {secs}s is out of range 1s to 24h"),
                ));
            }
        }
        if let Some(ms) = self.eject_for_ms {
            if !(100..=3_600_000).contains(&ms) {
                return Err(ModelError::invalid(
                    "invalid_eject_for",
                    "eject_for_ms",
                    format!("ejection time {ms} ms is out of range 100 ms to 1h"),
                ));
            }
        }
        if self.eject_after.is_some_and(|n| n > 1000) {
            return Err(ModelError::invalid(
                "invalid_eject_after",
                "eject_after",
                "eject after must be 0 (off) to 1000 consecutive failures",
            ));
        }
        if let Some(path) = &self.health_check_path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ModelError::invalid(
                    "invalid_health_check",
                    "health_check_path",
                    format!("health check path {path:?} must start with / and contain no spaces"),
                ));
            }
        }
        if let Some(ms) = self.health_check_interval_ms {
            if !(100..=3_600_000).contains(&ms) {
                return Err(ModelError::invalid(
                    "invalid_health_check",
                    "health_check_interval_ms",
                    format!("health check interval {ms} ms is out of range 100 ms to 1h"),
                ));
            }
        }
        for (name, n) in [
            ("unhealthy_threshold", self.unhealthy_threshold),
            ("healthy_threshold", self.healthy_threshold),
        ] {
            if n.is_some_and(|n| !(1..=100).contains(&n)) {
                return Err(ModelError::invalid(
                    "invalid_health_check",
                    name,
                    format!("{name} must be 1 to 100 consecutive checks"),
                ));
            }
        }
        for (name, burst) in [("burst", self.burst), ("burst_per_ip", self.burst_per_ip)] {
            if burst == Some(0) {
                return Err(ModelError::invalid(
                    "invalid_burst",
                    name,
                    format!("{name} must be at least 1"),
                ));
            }
        }
        Ok(())
    }
}

/// Parses a size: bytes, or a number with `k`/`Ki`, `M`/`Mi`, `G`/`Gi` (decimal or binary), e.g.
/// `10Mi`, `512k`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, ModelError> {
    let text = text.trim();
    let bad = || {
        ModelError::invalid(
            "invalid_size",
            "size",
            format!("size {text:?} must be a number of bytes, optionally with k, Ki, M, Mi, G or Gi (e.g. 10Mi)"),
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "k" | "K" | "kB" | "KB" => 1_000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// Parses a duration into milliseconds: a number with `ms`, `s`, `m` or `h`, e.g. `30s`,
/// `250ms`, `2m`. A bare number is seconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, ModelError> {
    let text = text.trim();
    let bad = || {
        ModelError::invalid(
            "invalid_duration",
            "duration",
            format!("duration {text:?} must be a whole number with ms, s, m or h (e.g. 30s)"),
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("10Mi", Some(10 << 20)),
            ("512k", Some(512_000)),
            ("1048576", Some(1 << 20)),
            ("2 Gi", Some(2 << 30)), // space before the unit
            ("1KiB", Some(1024)),
            ("", None),                 // nothing
            ("Mi", None),               // no number
            ("10 furlongs", None),      // unknown unit
            ("-1", None),               // negative
            ("99999999999999Gi", None), // overflows
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("30s", Some(30_000)),
            ("250ms", Some(250)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("5", Some(5_000)), // bare number: seconds
            ("1.5s", None),     // no fractions
            ("s", None),
            ("10d", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration_ms(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn validation() {
        let ok = GatewaySpec::default();
        assert!(ok.validate().is_ok());
        let cases: Vec<(GatewaySpec, &str)> = vec![
            (
                GatewaySpec {
                    max_body_bytes: Some(0),
                    ..GatewaySpec::default()
                },
                "max_body_bytes",
            ),
            (
                GatewaySpec {
                    ttfb_timeout_ms: Some(MAX_TTFB_TIMEOUT_MS + 1),
                    ..GatewaySpec::default()
                },
                "ttfb_timeout_ms",
            ),
            (
                GatewaySpec {
                    ws_idle_timeout_secs: Some(0),
                    ..GatewaySpec::default()
                },
                "ws_idle_timeout_secs",
            ),
            (
                GatewaySpec {
                    burst_per_ip: Some(0),
                    ..GatewaySpec::default()
                },
                "burst_per_ip",
            ),
            (
                GatewaySpec {
                    eject_for_ms: Some(5),
                    ..GatewaySpec::default()
                },
                "eject_for_ms",
            ),
            (
                GatewaySpec {
                    health_check_path: Some("healthz".into()),
                    ..GatewaySpec::default()
                },
                "health_check_path",
            ),
            (
                GatewaySpec {
                    healthy_threshold: Some(0),
                    ..GatewaySpec::default()
                },
                "healthy_threshold",
            ),
        ];
        for (spec, field) in cases {
            let err = spec.validate().unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{spec:?}");
        }
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let spec: GatewaySpec = serde_json::from_str(
            r#"{"lb":"hash:ip","affinity":"cookie","rate":"100/s","burst":200,
                "access":["deny path=/admin"],"upstream_protocol":"h2c"}"#,
        )
        .unwrap();
        assert_eq!(spec.affinity, Affinity::Cookie);
        assert_eq!(spec.upstream_protocol, UpstreamProtocol::H2c);
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<GatewaySpec>(&text).unwrap(), spec);
        assert!(serde_json::from_str::<GatewaySpec>(r#"{"lbb":"x"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<GatewaySpec>("{}").unwrap(),
            GatewaySpec::default()
        );
    }
}
