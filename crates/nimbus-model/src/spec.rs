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

/// Env names the engine sets itself; a user may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "NIMBUS_SERVICE",
    "NIMBUS_VERSION",
    "NIMBUS_INSTANCE",
    "NIMBUS_NAMESPACE",
];

/// What a deploy asks for; every field but `command` may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A validated version spec with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        Ok(VersionSpec {
            command: command.to_string(),
            env: self.env.clone(),
            port,
            health_path,
            min_instances,
            max_instances,
            concurrency,
            timeout_secs,
        })
    }
}

impl VersionSpec {
    /// Instances this version keeps running until the autoscaler exists: `max(min, 1)`.
    pub fn steady_instances(&self) -> u32 {
        self.min_instances.max(1)
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
