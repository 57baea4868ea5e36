//! A version's spec: what to run and within which limits. Versions are immutable once created.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ModelError;

pub const DEFAULT_HEALTH_PATH: &str = "/";
pub const DEFAULT_MIN_INSTANCES: u32 = 0;
pub const DEFAULT_MAX_INSTANCES: u32 = 10;
pub const MAX_INSTANCES_LIMIT: u32 = 50;
pub const DEFAULT_CONCURRENCY: u32 = 80;
pub const MAX_CONCURRENCY: u32 = 1000;
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Knative's default: aim each instance at 70% of its concurrency limit.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
/// Idle time before a `min_instances = 0` version scales to zero.
pub const DEFAULT_SCALE_TO_ZERO_AFTER_SECS: u64 = 30;
/// Most requests a version's queue may hold (the default is 10× its total capacity).
pub const MAX_QUEUE_DEPTH: u32 = 100_000;

/// Env names the engine sets itself; a user may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "NIMBUS_SERVICE",
    "NIMBUS_VERSION",
    "NIMBUS_INSTANCE",
    "NIMBUS_NAMESPACE",
];

/// What a deploy asks for; every field but `command` may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInput {
    pub command: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub port: Option<u32>,
    pub health_path: Option<String>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub scaling: ScalingInput,
}

/// Autoscaling knobs beyond min/max/concurrency; all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingInput {
    /// Fraction of `concurrency` each instance is aimed at, in (0, 1].
    pub target_utilization: Option<f64>,
    /// Idle seconds before a min-0 version scales to zero.
    pub scale_to_zero_after_secs: Option<u64>,
    /// Requests the version may queue while all slots are busy; default 10× total capacity.
    pub queue_depth: Option<u32>,
}

/// A validated version spec with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSpec {
    /// Run with `sh -c` in the server's working directory.
    pub command: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Fixed port the app listens on; `None` = the engine picks one per instance and passes `PORT`.
    pub port: Option<u16>,
    pub health_path: String,
    pub min_instances: u32,
    pub max_instances: u32,
    pub concurrency: u32,
    pub timeout_secs: u64,
    #[serde(default = "default_target_utilization")]
    pub target_utilization: f64,
    #[serde(default = "default_scale_to_zero_after")]
    pub scale_to_zero_after_secs: u64,
    /// `None`: 10× the capacity the version can reach (concurrency × max instances).
    #[serde(default)]
    pub queue_depth: Option<u32>,
    /// Set for function versions (`nimbus fn deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<crate::function::FunctionSpec>,
}

fn default_target_utilization() -> f64 {
    DEFAULT_TARGET_UTILIZATION
}

fn default_scale_to_zero_after() -> u64 {
    DEFAULT_SCALE_TO_ZERO_AFTER_SECS
}

/// A change of scaling only: applied to an existing version without creating a new one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingUpdate {
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    pub target_utilization: Option<f64>,
    pub scale_to_zero_after_secs: Option<u64>,
    pub queue_depth: Option<u32>,
}

impl VersionInput {
    /// Applies defaults and checks every field; the first broken rule is reported.
    pub fn resolve(&self) -> Result<VersionSpec, ModelError> {
        let command = self.command.as_deref().map(str::trim).unwrap_or("");
        if command.is_empty() {
            return Err(ModelError::invalid(
                "missing_command",
                "command",
                "a version needs a command to run (e.g. --command \"python3 app.py\")",
            ));
        }
        for key in self.env.keys() {
            validate_env_name(key)?;
        }
        let port = match self.port {
            None => None,
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => {
                return Err(ModelError::invalid(
                    "invalid_port",
                    "port",
                    format!("port {p} is out of range 1-65535"),
                ))
            }
        };
        let health_path = self
            .health_path
            .clone()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
        if !health_path.starts_with('/') || health_path.chars().any(|c| c.is_whitespace()) {
            return Err(ModelError::invalid(
                "invalid_health_path",
                "health_path",
                format!("health path {health_path:?} must start with '/' and contain no spaces"),
            ));
        }
        let min_instances = self.min_instances.unwrap_or(DEFAULT_MIN_INSTANCES);
        if min_instances > MAX_INSTANCES_LIMIT {
            return Err(ModelError::invalid(
                "invalid_min_instances",
                "min_instances",
                format!("min instances {min_instances} is out of range 0-{MAX_INSTANCES_LIMIT}"),
            ));
        }
        let max_instances = self.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if !(1..=MAX_INSTANCES_LIMIT).contains(&max_instances) {
            return Err(ModelError::invalid(
                "invalid_max_instances",
                "max_instances",
                format!("max instances {max_instances} is out of range 1-{MAX_INSTANCES_LIMIT}"),
            ));
        }
        if min_instances > max_instances {
            return Err(ModelError::invalid(
                "invalid_min_instances",
                "min_instances",
                format!("min instances {min_instances} is above max instances {max_instances}"),
            ));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(ModelError::invalid(
                "invalid_concurrency",
                "concurrency",
                format!("concurrency {concurrency} is out of range 1-{MAX_CONCURRENCY}"),
            ));
        }
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(ModelError::invalid(
                "invalid_timeout",
                "timeout_secs",
                format!("timeout {timeout_secs}s is out of range 1-{MAX_TIMEOUT_SECS}s"),
            ));
        }
        let spec = VersionSpec {
            command: command.to_string(),
            env: self.env.clone(),
            port,
            health_path,
            min_instances,
            max_instances,
            concurrency,
            timeout_secs,
            target_utilization: DEFAULT_TARGET_UTILIZATION,
            scale_to_zero_after_secs: DEFAULT_SCALE_TO_ZERO_AFTER_SECS,
            queue_depth: None,
            function: None,
        };
        spec.with_scaling(&self.scaling)
    }
}

impl VersionSpec {
    /// Instances this version keeps running without an autoscaler: `max(min, 1)`.
    pub fn steady_instances(&self) -> u32 {
        self.min_instances.max(1)
    }

    /// Applies the optional autoscaling knobs, checking each.
    pub fn with_scaling(mut self, input: &ScalingInput) -> Result<VersionSpec, ModelError> {
        if let Some(u) = input.target_utilization {
            if !(u > 0.0 && u <= 1.0) {
                return Err(ModelError::invalid(
                    "invalid_target_utilization",
                    "target_utilization",
                    format!("target utilization {u} must be above 0 and at most 1 (e.g. 0.7)"),
                ));
            }
            self.target_utilization = u;
        }
        if let Some(secs) = input.scale_to_zero_after_secs {
            if !(1..=86_400).contains(&secs) {
                return Err(ModelError::invalid(
                    "invalid_scale_to_zero_after",
                    "scale_to_zero_after_secs",
                    format!("scale-to-zero delay {secs}s is out of range 1-86400s"),
                ));
            }
            self.scale_to_zero_after_secs = secs;
        }
        if let Some(depth) = input.queue_depth {
            if !(1..=MAX_QUEUE_DEPTH).contains(&depth) {
                return Err(ModelError::invalid(
                    "invalid_queue_depth",
                    "queue_depth",
                    format!("queue depth {depth} is out of range 1-{MAX_QUEUE_DEPTH}"),
                ));
            }
            self.queue_depth = Some(depth);
        }
        Ok(self)
    }

    /// The spec with only its scaling changed; the rest of a version stays immutable.
    pub fn apply_scaling(&self, update: &ScalingUpdate) -> Result<VersionSpec, ModelError> {
        let input = VersionInput {
            command: Some(self.command.clone()),
            env: self.env.clone(),
            port: self.port.map(u32::from),
            health_path: Some(self.health_path.clone()),
            min_instances: update.min_instances.or(Some(self.min_instances)),
            max_instances: update.max_instances.or(Some(self.max_instances)),
            concurrency: update.concurrency.or(Some(self.concurrency)),
            timeout_secs: Some(self.timeout_secs),
            scaling: ScalingInput {
                target_utilization: update.target_utilization.or(Some(self.target_utilization)),
                scale_to_zero_after_secs: update
                    .scale_to_zero_after_secs
                    .or(Some(self.scale_to_zero_after_secs)),
                queue_depth: update.queue_depth.or(self.queue_depth),
            },
        };
        input.resolve()
    }

    /// True when `other` differs from `self` in scaling fields only.
    pub fn same_except_scaling(&self, other: &VersionSpec) -> bool {
        self.command == other.command
            && self.env == other.env
            && self.port == other.port
            && self.health_path == other.health_path
            && self.timeout_secs == other.timeout_secs
            && self.function == other.function
    }

    /// Queue depth in force for `instances` instances: the configured one, else 10× capacity
    /// (at least 10× one instance, so a cold version can hold a burst).
    pub fn effective_queue_depth(&self, instances: u32) -> usize {
        match self.queue_depth {
            Some(depth) => depth as usize,
            None => 10 * self.concurrency as usize * instances.max(1) as usize,
        }
    }
}

fn validate_env_name(key: &str) -> Result<(), ModelError> {
    let field = format!("env.{key}");
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ModelError::invalid(
            "invalid_env",
            field,
            format!("env name {key:?} must match [A-Za-z_][A-Za-z0-9_]*"),
        ));
    }
    if RESERVED_ENV.contains(&key) {
        return Err(ModelError::invalid(
            "reserved_env",
            field,
            format!("env {key} is set by the engine and cannot be overridden"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> VersionInput {
        VersionInput {
            command: Some("python3 app.py".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let spec = input().resolve().unwrap();
        assert_eq!(spec.health_path, "/");
        assert_eq!(spec.min_instances, 0);
        assert_eq!(spec.max_instances, 10);
        assert_eq!(spec.concurrency, 80);
        assert_eq!(spec.timeout_secs, 300);
        assert_eq!(spec.port, None);
        assert_eq!(spec.steady_instances(), 1);
    }

    #[test]
    fn scaling_knobs_and_updates() {
        let spec = input().resolve().unwrap();
        assert_eq!(spec.target_utilization, 0.7);
        assert_eq!(spec.scale_to_zero_after_secs, 30);
        assert_eq!(
            spec.effective_queue_depth(0),
            800,
            "10 x one instance when cold"
        );
        assert_eq!(spec.effective_queue_depth(3), 2400);

        type Knob = fn(&mut ScalingInput);
        let cases: &[(&str, Knob, Option<&str>)] = &[
            ("utilization 1", |k| k.target_utilization = Some(1.0), None),
            (
                "utilization 0",
                |k| k.target_utilization = Some(0.0),
                Some("invalid_target_utilization"),
            ),
            (
                "utilization 1.5",
                |k| k.target_utilization = Some(1.5),
                Some("invalid_target_utilization"),
            ),
            (
                "utilization NaN",
                |k| k.target_utilization = Some(f64::NAN),
                Some("invalid_target_utilization"),
            ),
            (
                "zero after 0",
                |k| k.scale_to_zero_after_secs = Some(0),
                Some("invalid_scale_to_zero_after"),
            ),
            (
                "zero after 2",
                |k| k.scale_to_zero_after_secs = Some(2),
                None,
            ),
            (
                "queue 0",
                |k| k.queue_depth = Some(0),
                Some("invalid_queue_depth"),
            ),
            ("queue 5", |k| k.queue_depth = Some(5), None),
        ];
        for (label, edit, expected) in cases {
            let mut knobs = ScalingInput::default();
            edit(&mut knobs);
            match (spec.clone().with_scaling(&knobs), expected) {
                (Ok(_), None) => {}
                (Err(e), Some(code)) => assert_eq!(e.code, *code, "{label}"),
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }

        let update = ScalingUpdate {
            min_instances: Some(2),
            max_instances: Some(5),
            ..Default::default()
        };
        let scaled = spec.apply_scaling(&update).unwrap();
        assert_eq!((scaled.min_instances, scaled.max_instances), (2, 5));
        assert!(spec.same_except_scaling(&scaled));
        let bad = ScalingUpdate {
            min_instances: Some(9),
            max_instances: Some(5),
            ..Default::default()
        };
        assert_eq!(
            spec.apply_scaling(&bad).unwrap_err().code,
            "invalid_min_instances"
        );
        let mut other = spec.clone();
        other.command = "other".into();
        assert!(!spec.same_except_scaling(&other));
    }

    #[test]
    fn limits() {
        type Edit = fn(&mut VersionInput);
        let cases: &[(&str, Edit, Option<&str>)] = &[
            ("min 0", |i| i.min_instances = Some(0), None),
            (
                "min 50 max 50",
                |i| {
                    i.min_instances = Some(50);
                    i.max_instances = Some(50)
                },
                None,
            ),
            (
                "min 51",
                |i| i.min_instances = Some(51),
                Some("invalid_min_instances"),
            ),
            (
                "min above max",
                |i| {
                    i.min_instances = Some(5);
                    i.max_instances = Some(4)
                },
                Some("invalid_min_instances"),
            ),
            (
                "max 0",
                |i| i.max_instances = Some(0),
                Some("invalid_max_instances"),
            ),
            ("max 1", |i| i.max_instances = Some(1), None),
            (
                "max 51",
                |i| i.max_instances = Some(51),
                Some("invalid_max_instances"),
            ),
            (
                "concurrency 0",
                |i| i.concurrency = Some(0),
                Some("invalid_concurrency"),
            ),
            ("concurrency 1", |i| i.concurrency = Some(1), None),
            ("concurrency 1000", |i| i.concurrency = Some(1000), None),
            (
                "concurrency 1001",
                |i| i.concurrency = Some(1001),
                Some("invalid_concurrency"),
            ),
            (
                "timeout 0",
                |i| i.timeout_secs = Some(0),
                Some("invalid_timeout"),
            ),
            (
                "timeout 3601",
                |i| i.timeout_secs = Some(3601),
                Some("invalid_timeout"),
            ),
            ("port 0", |i| i.port = Some(0), Some("invalid_port")),
            ("port 65536", |i| i.port = Some(65536), Some("invalid_port")),
            ("port 8080", |i| i.port = Some(8080), None),
            ("no command", |i| i.command = None, Some("missing_command")),
            (
                "blank command",
                |i| i.command = Some("  ".into()),
                Some("missing_command"),
            ),
            (
                "health no slash",
                |i| i.health_path = Some("healthz".into()),
                Some("invalid_health_path"),
            ),
            (
                "health ok",
                |i| i.health_path = Some("/healthz".into()),
                None,
            ),
            (
                "env ok",
                |i| {
                    i.env.insert("GREETING".into(), "hi".into());
                },
                None,
            ),
            (
                "env bad name",
                |i| {
                    i.env.insert("1X".into(), "".into());
                },
                Some("invalid_env"),
            ),
            (
                "env dash",
                |i| {
                    i.env.insert("A-B".into(), "".into());
                },
                Some("invalid_env"),
            ),
            (
                "env PORT",
                |i| {
                    i.env.insert("PORT".into(), "1".into());
                },
                Some("reserved_env"),
            ),
        ];
        for (label, edit, expected) in cases {
            let mut i = input();
            edit(&mut i);
            match (i.resolve(), expected) {
                (Ok(_), None) => {}
                (Err(e), Some(code)) => assert_eq!(e.code, *code, "{label}"),
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
    }
}
