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

/// Bytes in a mebibyte (`Mi`).
pub const MIB: u64 = 1024 * 1024;
/// `/tmp` of a container is a tmpfs of this size unless the version says otherwise (as in SCF).
pub const DEFAULT_TMP_SIZE_BYTES: u64 = 512 * MIB;
/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * MIB;
/// The smallest `/tmp` a container may ask for.
pub const MIN_TMP_SIZE_BYTES: u64 = MIB;
/// CPU limits are in cores, from a hundredth of a core (Docker's smallest) up.
pub const MIN_CPU: f64 = 0.01;
pub const MAX_CPU: f64 = 1024.0;
/// Most volumes one version may mount.
pub const MAX_VOLUMES: usize = 16;

/// Env names the engine sets itself; a user may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "PORT",
    "NIMBUS_SERVICE",
    "NIMBUS_VERSION",
    "NIMBUS_INSTANCE",
    "NIMBUS_NAMESPACE",
];

/// What a deploy asks for; every field but `command` (or `image`) may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionInput {
    /// For a process: what to run. For a container: replaces the image's entrypoint and command
    /// (run with `/bin/sh -c`); absent = the image's own.
    pub command: Option<String>,
    /// Run as a container of this (local) image instead of a process.
    #[serde(default)]
    pub image: Option<String>,
    /// Container CPU limit in cores (`0.5`).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Container memory limit: `256Mi`, `1Gi` or a number of bytes.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Size of the container's `/tmp` tmpfs (default 512Mi).
    #[serde(default)]
    pub tmp_size: Option<ByteSize>,
    /// Named volumes mounted into the container.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
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
    /// Seconds a min-0 version waits to scale to zero once its stable window saw no request.
    pub scale_to_zero_after_secs: Option<u64>,
    /// Requests the version may queue while all slots are busy; default 10× total capacity.
    pub queue_depth: Option<u32>,
}

/// A validated version spec with every default filled in.
///
/// Fields added after the first release have serde defaults, so specs stored by an older Nimbus
/// still load (as process versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSpec {
    /// A process: run with `sh -c` in the server's working directory. A container: empty = the
    /// image's own entrypoint, else run with `/bin/sh -c` instead of it.
    pub command: String,
    /// The container image; `None` = a process version.
    #[serde(default)]
    pub image: Option<String>,
    /// Container CPU limit in cores; `None` = no limit.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Container memory limit in bytes; `None` = no limit.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Size of the container's `/tmp` tmpfs; `None` for processes.
    #[serde(default)]
    pub tmp_size_bytes: Option<u64>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// The build the image came from, when it was built from source.
    #[serde(default)]
    pub build: Option<BuildInfo>,
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

/// A named volume (`nimbus volumes create NAME`) mounted at an absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub path: String,
}

/// Where a version's image came from when Nimbus built it (metering bills build time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The build's id within its service, e.g. `b3`.
    pub id: String,
    /// Wall time of the build, in milliseconds.
    pub duration_ms: u64,
}

/// Which runtime runs a version's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A process group on the host (the embedded default).
    Process,
    /// A container on the local Docker Engine.
    Container,
}

/// A size as a deploy gives it: a number of bytes, or text such as `256Mi`, `1Gi`, `512M`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    /// The size in bytes, or why the text is not a size.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSize::Bytes(n) => Ok(*n),
            ByteSize::Text(text) => parse_bytes(text),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"256Mi\" or \"1Gi\", or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize::Bytes)
                    .map_err(|_| E::custom(format!("a size cannot be negative (got {v})")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                Ok(ByteSize::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses a size: plain bytes (`1048576`), binary units `Ki Mi Gi Ti` (×1024ⁿ), or decimal
/// units `k K M G T` (×1000ⁿ, as Kubernetes). A fraction is allowed with a unit (`1.5Gi`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("size {text:?} cannot be negative"));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "m" | "mi" | "MB" | "MiB" | "GB" | "GiB" | "g" | "gi" | "KB" | "KiB" | "kb" => {
            let hint = match unit.to_ascii_lowercase().chars().next() {
                Some('g') => "Gi",
                Some('k') => "Ki",
                _ => "Mi",
            };
            return Err(format!(
                "size {text:?} has an ambiguous unit {unit:?}: write {number}{hint} (binary) or a number of bytes"
            ));
        }
        other => {
            return Err(format!(
                "size {text:?} has an unknown unit {other:?}: use Ki, Mi, Gi, Ti (or k, M, G, T), e.g. 256Mi"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!("size {text:?} needs a number, e.g. 256Mi"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("size {text:?} is too large"));
    }
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() && multiplier > 1 => {
            let bytes = value * multiplier as f64;
            if bytes >= u64::MAX as f64 {
                Err(format!("size {text:?} is too large"))
            } else {
                Ok(bytes.floor() as u64)
            }
        }
        Ok(_) => Err(format!(
            "size {text:?} is a fraction of a byte: give a unit (e.g. 1.5Gi) or whole bytes"
        )),
        Err(_) => Err(format!(
            "size {text:?} is not a number with a unit, e.g. 256Mi"
        )),
    }
}

/// Parses `NAME:/path`, the `--volume` syntax.
pub fn parse_volume(text: &str) -> Result<VolumeMount, String> {
    match text.split_once(':') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(VolumeMount {
            name: name.to_string(),
            path: path.to_string(),
        }),
        _ => Err(format!(
            "{text:?} should look like NAME:/path (a volume from `nimbus volumes create NAME`)"
        )),
    }
}

/// Volume names as Docker allows them, shorter: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn validate_volume_name(name: &str) -> Result<(), ModelError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::invalid(
            "invalid_volume",
            "volumes",
            format!(
                "volume name {name:?} must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
            ),
        ))
    }
}

/// A mount path: absolute, not `/`, `/tmp` (the tmpfs) or under `/proc`, `/sys`, `/dev`; no `..`.
fn validate_mount_path(path: &str) -> Result<(), ModelError> {
    let trimmed = path.trim_end_matches('/');
    let reserved = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|r| trimmed == *r || trimmed.starts_with(&format!("{r}/")));
    let reason = if !path.starts_with('/') {
        "must be an absolute path"
    } else if trimmed.is_empty() {
        "must not be /"
    } else if trimmed == "/tmp" {
        "must not be /tmp, which is the container's tmpfs (see tmp_size)"
    } else if reserved {
        "must not be under /proc, /sys or /dev"
    } else if path.split('/').any(|part| part == "..") {
        "must not contain '..'"
    } else if path.chars().any(|c| c.is_control() || c == ',' || c == ':') {
        "must not contain control characters, ',' or ':'"
    } else {
        return Ok(());
    };
    Err(ModelError::invalid(
        "invalid_volume",
        "volumes",
        format!("mount path {path:?} {reason}"),
    ))
}

/// Checks an image reference as Docker parses one (`[host[:port]/]path[:tag][@digest]`; the
/// path lowercase), so a bad one is refused with what is wrong instead of the engine's message.
pub fn validate_image(image: &str) -> Result<(), ModelError> {
    image_reference_problem(image).map_or(Ok(()), |reason| {
        Err(ModelError::invalid(
            "invalid_image",
            "image",
            format!("image {image:?} {reason} (e.g. nginx:1.27 or nimbus/hello:b1)"),
        ))
    })
}

/// What is wrong with an image reference, if anything (the grammar of Docker's `reference`
/// package).
fn image_reference_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("must not be empty".into());
    }
    if image.len() > 255 {
        return Some("must be at most 255 characters".into());
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces".into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return Some(format!(
                "has an invalid digest {digest:?} (e.g. sha256: and 64 hex digits)"
            ));
        }
    }
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let valid = tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Some(format!(
                "has an invalid tag {tag:?} (letters, digits, '_', '.' and '-', at most 128)"
            ));
        }
    }
    // A first component with '.' or ':', `localhost`, or capitals is a registry host.
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        if first.contains(['.', ':']) || first == "localhost" || first != first.to_lowercase() {
            components.remove(0);
            let (host, port) = first.split_once(':').unwrap_or((first, ""));
            let host_ok = !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            let port_ok = !first.contains(':')
                || (!port.is_empty() && port.chars().all(|c| c.is_ascii_digit()));
            if !host_ok || !port_ok {
                return Some(format!("has an invalid registry {first:?}"));
            }
        }
    }
    for component in components {
        if let Some(c) = component.chars().find(char::is_ascii_uppercase) {
            return Some(format!("must be lowercase before its tag (found '{c}')"));
        }
        let valid = valid_path_component(component);
        if !valid {
            return Some(format!(
                "has an invalid name part {component:?} (lowercase letters and digits, \
                 separated by '.', '_' or '-')"
            ));
        }
    }
    None
}

/// `[a-z0-9]+` runs joined by one separator each: `.`, `_`, `__` or any number of `-`.
fn valid_path_component(component: &str) -> bool {
    let mut separator = String::new();
    let mut seen_alphanumeric = false;
    for c in component.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            let joined = separator.is_empty()
                || matches!(separator.as_str(), "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !joined {
                return false;
            }
            separator.clear();
            seen_alphanumeric = true;
        } else if "._-".contains(c) && seen_alphanumeric {
            separator.push(c);
        } else {
            return false;
        }
    }
    seen_alphanumeric && separator.is_empty()
}

/// "cpu is not supported by the process runtime" for a field only containers have.
fn process_unsupported(field: &str, what: &str) -> ModelError {
    ModelError::invalid(
        "unsupported_by_runtime",
        field,
        format!(
            "{what} is not supported by the process runtime; deploy an image (--image or --source) to use it"
        ),
    )
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
        let image = self.image.as_deref().map(str::trim);
        if command.is_empty() && image.is_none() {
            return Err(ModelError::invalid(
                "missing_command",
                "command",
                "a version needs a command to run (e.g. --command \"python3 app.py\") or an image (--image, --source)",
            ));
        }
        let container = self.resolve_container()?;
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
        if port.is_some() && min_instances > 1 {
            return Err(ModelError::invalid(
                "invalid_min_instances",
                "min_instances",
                format!(
                    "min instances {min_instances} cannot share one fixed port: a fixed --port runs \
                     one instance at a time on this machine; leave --port out so each instance \
                     gets its own $PORT"
                ),
            ));
        }
        // A ceiling, so a fixed port lowers it rather than refusing it: the default (and a
        // version deployed before this rule) still means "as many as the port allows".
        let max_instances = if port.is_some() { 1 } else { max_instances };
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
            image: container.image,
            cpu: container.cpu,
            memory_bytes: container.memory_bytes,
            tmp_size_bytes: container.tmp_size_bytes,
            volumes: container.volumes,
            build: None,
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
    /// The input that resolves back to this spec (its build and function parts aside): where a
    /// deploy `from` this version starts.
    pub fn to_input(&self) -> VersionInput {
        VersionInput {
            command: (!self.command.is_empty()).then(|| self.command.clone()),
            image: self.image.clone(),
            cpu: self.cpu,
            memory: self.memory_bytes.map(ByteSize::Bytes),
            tmp_size: self.tmp_size_bytes.map(ByteSize::Bytes),
            volumes: self.volumes.clone(),
            env: self.env.clone(),
            port: self.port.map(u32::from),
            health_path: Some(self.health_path.clone()),
            min_instances: Some(self.min_instances),
            max_instances: Some(self.max_instances),
            concurrency: Some(self.concurrency),
            timeout_secs: Some(self.timeout_secs),
            scaling: ScalingInput {
                target_utilization: Some(self.target_utilization),
                scale_to_zero_after_secs: Some(self.scale_to_zero_after_secs),
                queue_depth: self.queue_depth,
            },
        }
    }
}

impl VersionInput {
    /// A deploy `from` a version, as Cloud Run builds a revision from the last one: what this
    /// input gives replaces `base`'s, what it leaves out is kept. `env` entries are added or
    /// replaced and `remove_env` names dropped (each must be set on `base`, named `from` in the
    /// error). Moving a process to an image starts from the image's own entrypoint rather than
    /// the process's command.
    pub fn over(
        self,
        base: VersionInput,
        from: &str,
        remove_env: &[String],
    ) -> Result<VersionInput, ModelError> {
        let mut env = base.env;
        for key in remove_env {
            if self.env.contains_key(key) {
                return Err(ModelError::invalid(
                    "invalid_env",
                    "remove_env",
                    format!("{key} is both set (env) and removed (remove_env)"),
                ));
            }
            if env.remove(key).is_none() {
                return Err(ModelError::invalid(
                    "invalid_env",
                    "remove_env",
                    format!("{key} is not set on {from}, so it cannot be removed"),
                ));
            }
        }
        env.extend(self.env);
        let process_to_image = base.image.is_none() && self.image.is_some();
        let command = match (self.command, process_to_image) {
            (Some(command), _) => Some(command),
            (None, true) => None,
            (None, false) => base.command,
        };
        Ok(VersionInput {
            command,
            image: self.image.or(base.image),
            cpu: self.cpu.or(base.cpu),
            memory: self.memory.or(base.memory),
            tmp_size: self.tmp_size.or(base.tmp_size),
            volumes: if self.volumes.is_empty() {
                base.volumes
            } else {
                self.volumes
            },
            env,
            port: self.port.or(base.port),
            health_path: self.health_path.or(base.health_path),
            min_instances: self.min_instances.or(base.min_instances),
            max_instances: self.max_instances.or(base.max_instances),
            concurrency: self.concurrency.or(base.concurrency),
            timeout_secs: self.timeout_secs.or(base.timeout_secs),
            scaling: ScalingInput {
                target_utilization: self
                    .scaling
                    .target_utilization
                    .or(base.scaling.target_utilization),
                scale_to_zero_after_secs: self
                    .scaling
                    .scale_to_zero_after_secs
                    .or(base.scaling.scale_to_zero_after_secs),
                queue_depth: self.scaling.queue_depth.or(base.scaling.queue_depth),
            },
        })
    }
}

/// The container part of a resolved input; all `None`/empty for a process.
struct ContainerFields {
    image: Option<String>,
    cpu: Option<f64>,
    memory_bytes: Option<u64>,
    tmp_size_bytes: Option<u64>,
    volumes: Vec<VolumeMount>,
}

impl VersionInput {
    /// Checks the container fields; a process may not have any of them.
    fn resolve_container(&self) -> Result<ContainerFields, ModelError> {
        let Some(image) = self.image.as_deref().map(str::trim) else {
            let unsupported = [
                ("cpu", "a CPU limit (cpu)", self.cpu.is_some()),
                ("memory", "a memory limit (memory)", self.memory.is_some()),
                (
                    "tmp_size",
                    "a /tmp size (tmp_size)",
                    self.tmp_size.is_some(),
                ),
                ("volumes", "mounting volumes", !self.volumes.is_empty()),
            ];
            if let Some((field, what, _)) = unsupported.iter().find(|(_, _, given)| *given) {
                return Err(process_unsupported(field, what));
            }
            return Ok(ContainerFields {
                image: None,
                cpu: None,
                memory_bytes: None,
                tmp_size_bytes: None,
                volumes: Vec::new(),
            });
        };
        validate_image(image)?;
        if let Some(cpu) = self.cpu {
            if !(cpu.is_finite() && (MIN_CPU..=MAX_CPU).contains(&cpu)) {
                return Err(ModelError::invalid(
                    "invalid_cpu",
                    "cpu",
                    format!("cpu {cpu} must be a number of cores from {MIN_CPU} to {MAX_CPU} (e.g. 0.5)"),
                ));
            }
        }
        let size = |field: &'static str, code: &'static str, value: &ByteSize, min: u64| {
            let bytes = value
                .bytes()
                .map_err(|reason| ModelError::invalid(code, field, reason))?;
            if bytes < min || i64::try_from(bytes).is_err() {
                return Err(ModelError::invalid(
                    code,
                    field,
                    format!("{field} {bytes} bytes must be at least {} MiB", min / MIB),
                ));
            }
            Ok(bytes)
        };
        let memory_bytes = self
            .memory
            .as_ref()
            .map(|m| size("memory", "invalid_memory", m, MIN_MEMORY_BYTES))
            .transpose()?;
        let tmp_size_bytes = match &self.tmp_size {
            Some(t) => size("tmp_size", "invalid_tmp_size", t, MIN_TMP_SIZE_BYTES)?,
            None => DEFAULT_TMP_SIZE_BYTES,
        };
        if self.volumes.len() > MAX_VOLUMES {
            return Err(ModelError::invalid(
                "invalid_volume",
                "volumes",
                format!("at most {MAX_VOLUMES} volumes per version"),
            ));
        }
        let mut paths = std::collections::BTreeSet::new();
        for mount in &self.volumes {
            validate_volume_name(&mount.name)?;
            validate_mount_path(&mount.path)?;
            let path = mount.path.trim_end_matches('/');
            if !paths.insert(path) {
                return Err(ModelError::invalid(
                    "invalid_volume",
                    "volumes",
                    format!("two volumes are mounted at {path}"),
                ));
            }
        }
        Ok(ContainerFields {
            image: Some(image.to_string()),
            cpu: self.cpu,
            memory_bytes,
            tmp_size_bytes: Some(tmp_size_bytes),
            volumes: self.volumes.clone(),
        })
    }
}

impl VersionSpec {
    /// Which runtime runs this version: a container when it has an image.
    pub fn runtime(&self) -> Runtime {
        if self.image.is_some() {
            Runtime::Container
        } else {
            Runtime::Process
        }
    }

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
        let mut input = self.to_input();
        input.min_instances = update.min_instances.or(input.min_instances);
        input.max_instances = update.max_instances.or(input.max_instances);
        input.concurrency = update.concurrency.or(input.concurrency);
        let scaling = &mut input.scaling;
        scaling.target_utilization = update.target_utilization.or(scaling.target_utilization);
        scaling.scale_to_zero_after_secs = update
            .scale_to_zero_after_secs
            .or(scaling.scale_to_zero_after_secs);
        scaling.queue_depth = update.queue_depth.or(scaling.queue_depth);
        let mut spec = input.resolve()?;
        spec.build = self.build.clone();
        // A function scaled is still that function.
        spec.function = self.function.clone();
        Ok(spec)
    }

    /// Whether `next` may follow this spec as a later version of `name`: a name is a service or
    /// a function for its whole life (they share names in a namespace), never a mix whose
    /// traffic split sends invocations to a web server or requests to a handler.
    pub fn check_same_kind(&self, next: &VersionSpec, name: &str) -> Result<(), ModelError> {
        match (self.function.is_some(), next.function.is_some()) {
            (true, false) => Err(ModelError::conflict(
                "is_a_function",
                "service",
                format!(
                    "{name} is a function: deploy its new versions with `nimbus fn deploy`, \
                     or give the service another name"
                ),
            )),
            (false, true) => Err(ModelError::conflict(
                "is_a_service",
                "function",
                format!(
                    "{name} is a service, and functions share names with services: give the \
                     function another name (or delete the service first)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// True when `other` differs from `self` in scaling fields only.
    pub fn same_except_scaling(&self, other: &VersionSpec) -> bool {
        self.command == other.command
            && self.image == other.image
            && self.cpu == other.cpu
            && self.memory_bytes == other.memory_bytes
            && self.tmp_size_bytes == other.tmp_size_bytes
            && self.volumes == other.volumes
            && self.build == other.build
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

    /// A function's part of a spec, for tests that need a function version.
    fn function_part() -> crate::function::FunctionSpec {
        crate::function::FunctionSpec {
            runtime: "python3".into(),
            handler: "index.main".into(),
            code_dir: "/srv/fn".into(),
            memory_mb: 128,
            timeout_ms: 3000,
        }
    }

    #[test]
    fn a_name_stays_a_service_or_a_function() {
        let service = input().resolve().unwrap();
        let mut function = service.clone();
        function.function = Some(function_part());
        // (existing, next) → the refusal's code and field, if any
        let cases = [
            (&service, &service, None),
            (&function, &function, None),
            (&function, &service, Some(("is_a_function", "service"))),
            (&service, &function, Some(("is_a_service", "function"))),
        ];
        for (existing, next, refused) in cases {
            let got = existing.check_same_kind(next, "hello").err();
            assert_eq!(
                got.as_ref()
                    .map(|e| (e.code, e.field.as_deref().unwrap_or(""))),
                refused,
                "{got:?}"
            );
            if let Some(error) = got {
                assert_eq!(error.kind, crate::ErrorKind::Conflict);
                assert!(error.message.starts_with("hello is a "), "{error}");
            }
        }
    }

    #[test]
    fn a_fixed_port_caps_instances_at_one() {
        for max in [None, Some(1), Some(10)] {
            let mut i = input();
            i.port = Some(8080);
            i.max_instances = max;
            let spec = i.resolve().unwrap();
            assert_eq!(spec.max_instances, 1, "max {max:?}");
        }
        let mut i = input();
        i.port = Some(8080);
        i.min_instances = Some(3);
        let error = i.resolve().unwrap_err();
        assert_eq!(error.field.as_deref(), Some("min_instances"));
        assert!(error.message.contains("fixed --port"), "{}", error.message);
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
            (
                "port with one instance",
                |i| {
                    i.port = Some(8080);
                    i.min_instances = Some(1);
                },
                None,
            ),
            (
                "port with two instances",
                |i| {
                    i.port = Some(8080);
                    i.min_instances = Some(2);
                },
                Some("invalid_min_instances"),
            ),
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

    #[test]
    fn sizes() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("1048576", Ok(1 << 20)), // plain bytes
            ("256Mi", Ok(256 << 20)),
            ("1Gi", Ok(1 << 30)),
            ("1.5Gi", Ok(3 << 29)), // a fraction with a unit
            ("64Ki", Ok(64 << 10)),
            ("2Ti", Ok(2 << 40)),
            ("512M", Ok(512_000_000)), // decimal, as Kubernetes
            ("1k", Ok(1000)),
            ("1G", Ok(1_000_000_000)),
            (" 8Mi ", Ok(8 << 20)), // surrounding space
            ("100B", Ok(100)),
            ("256m", Err("ambiguous")), // Docker's m: say Mi
            ("1GB", Err("ambiguous")),
            ("256Xi", Err("unknown unit")),
            ("Mi", Err("needs a number")),
            ("", Err("needs a number")),
            ("1.5", Err("fraction of a byte")),
            ("-1Mi", Err("negative")),
            ("99999999999Ti", Err("too large")),
            ("1..5Mi", Err("not a number")),
        ];
        for (text, expected) in cases {
            match (parse_bytes(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text:?}: {got}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
        // JSON takes a number or a string; negative numbers are refused.
        let size: ByteSize = serde_json::from_str("268435456").unwrap();
        assert_eq!(size.bytes(), Ok(256 << 20));
        let size: ByteSize = serde_json::from_str("\"256Mi\"").unwrap();
        assert_eq!(size.bytes(), Ok(256 << 20));
        assert!(serde_json::from_str::<ByteSize>("-5").is_err());
        assert!(serde_json::from_str::<ByteSize>("true").is_err());
    }

    #[test]
    fn volume_flags() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("data:/data", Some(("data", "/data"))),
            ("cache:/var/cache/app", Some(("cache", "/var/cache/app"))),
            ("data", None),   // no path
            (":/data", None), // no name
            ("data:", None),  // empty path
            // Only the first ':' splits; the path check refuses the rest later.
            ("a:/b:c", Some(("a", "/b:c"))),
        ];
        for (text, expected) in cases {
            let got = parse_volume(text).ok();
            let got = got.as_ref().map(|m| (m.name.as_str(), m.path.as_str()));
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    fn image_input() -> VersionInput {
        VersionInput {
            image: Some("nimbus/hello:b1".into()),
            ..Default::default()
        }
    }

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn runtime_choice_and_container_defaults() {
        let process = input().resolve().unwrap();
        assert_eq!(process.runtime(), Runtime::Process);
        assert_eq!(process.tmp_size_bytes, None, "no tmpfs for a process");

        let container = image_input().resolve().unwrap();
        assert_eq!(container.runtime(), Runtime::Container);
        assert_eq!(container.command, "", "the image's own entrypoint");
        assert_eq!(container.tmp_size_bytes, Some(DEFAULT_TMP_SIZE_BYTES));
        assert_eq!((container.cpu, container.memory_bytes), (None, None));

        // An image with a command override.
        let mut i = image_input();
        i.command = Some("  ./serve --port $PORT ".into());
        assert_eq!(i.resolve().unwrap().command, "./serve --port $PORT");

        // A spec stored before containers existed still loads, as a process version.
        let old = r#"{"command":"python3 app.py","env":{},"port":null,"health_path":"/",
            "min_instances":0,"max_instances":10,"concurrency":80,"timeout_secs":300}"#;
        let old: VersionSpec = serde_json::from_str(old).unwrap();
        assert_eq!(old.runtime(), Runtime::Process);
        assert_eq!((old.image, old.build, old.volumes), (None, None, vec![]));
    }

    #[test]
    fn container_fields() {
        type Edit = fn(&mut VersionInput);
        type Case = (&'static str, Edit, Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            // Processes refuse container-only fields, naming the field.
            (
                "process cpu",
                |i| {
                    i.image = None;
                    i.command = Some("x".into());
                    i.cpu = Some(0.5)
                },
                Some(("unsupported_by_runtime", "cpu")),
            ),
            (
                "process memory",
                |i| {
                    i.image = None;
                    i.command = Some("x".into());
                    i.memory = Some(ByteSize::Text("256Mi".into()))
                },
                Some(("unsupported_by_runtime", "memory")),
            ),
            (
                "process tmp",
                |i| {
                    i.image = None;
                    i.command = Some("x".into());
                    i.tmp_size = Some(ByteSize::Bytes(1 << 30))
                },
                Some(("unsupported_by_runtime", "tmp_size")),
            ),
            (
                "process volume",
                |i| {
                    i.image = None;
                    i.command = Some("x".into());
                    i.volumes = vec![mount("data", "/data")]
                },
                Some(("unsupported_by_runtime", "volumes")),
            ),
            ("cpu half", |i| i.cpu = Some(0.5), None),
            ("cpu 0", |i| i.cpu = Some(0.0), Some(("invalid_cpu", "cpu"))),
            (
                "cpu NaN",
                |i| i.cpu = Some(f64::NAN),
                Some(("invalid_cpu", "cpu")),
            ),
            ("cpu min", |i| i.cpu = Some(0.01), None),
            (
                "cpu huge",
                |i| i.cpu = Some(5000.0),
                Some(("invalid_cpu", "cpu")),
            ),
            (
                "memory 256Mi",
                |i| i.memory = Some(ByteSize::Text("256Mi".into())),
                None,
            ),
            (
                "memory 1Mi",
                |i| i.memory = Some(ByteSize::Text("1Mi".into())),
                Some(("invalid_memory", "memory")),
            ),
            (
                "memory junk",
                |i| i.memory = Some(ByteSize::Text("lots".into())),
                Some(("invalid_memory", "memory")),
            ),
            (
                "tmp 8Mi",
                |i| i.tmp_size = Some(ByteSize::Text("8Mi".into())),
                None,
            ),
            (
                "tmp 0",
                |i| i.tmp_size = Some(ByteSize::Bytes(0)),
                Some(("invalid_tmp_size", "tmp_size")),
            ),
            (
                "image blank",
                |i| i.image = Some("  ".into()),
                Some(("invalid_image", "image")),
            ),
            (
                "image space",
                |i| i.image = Some("a b".into()),
                Some(("invalid_image", "image")),
            ),
            (
                "image flag-like",
                |i| i.image = Some("--rm".into()),
                Some(("invalid_image", "image")),
            ),
            (
                "image registry port",
                |i| i.image = Some("localhost:5000/a/b:1".into()),
                None,
            ),
            (
                "volume ok",
                |i| i.volumes = vec![mount("data", "/data")],
                None,
            ),
            (
                "volume bad name",
                |i| i.volumes = vec![mount("-x", "/data")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "volume relative",
                |i| i.volumes = vec![mount("data", "data")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "volume at /tmp",
                |i| i.volumes = vec![mount("data", "/tmp/")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "volume at /",
                |i| i.volumes = vec![mount("data", "/")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "volume under /proc",
                |i| i.volumes = vec![mount("data", "/proc/x")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "volume /process is fine",
                |i| i.volumes = vec![mount("data", "/process")],
                None,
            ),
            (
                "volume dotdot",
                |i| i.volumes = vec![mount("data", "/a/../etc")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "two at one path",
                |i| i.volumes = vec![mount("a", "/data"), mount("b", "/data/")],
                Some(("invalid_volume", "volumes")),
            ),
            (
                "one volume at two paths",
                |i| i.volumes = vec![mount("a", "/x"), mount("a", "/y")],
                None,
            ),
        ];
        for (label, edit, expected) in cases {
            let mut i = image_input();
            edit(&mut i);
            match (i.resolve(), expected) {
                (Ok(_), None) => {}
                (Err(e), Some((code, field))) => {
                    assert_eq!(
                        (e.code, e.field.as_deref()),
                        (*code, Some(*field)),
                        "{label}: {e}"
                    )
                }
                (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
            }
        }
        let mut i = input();
        i.cpu = Some(0.5);
        let message = i.resolve().unwrap_err().message;
        assert!(
            message.contains("not supported by the process runtime"),
            "{message}"
        );
    }

    #[test]
    fn container_changes_are_new_versions() {
        let base = image_input().resolve().unwrap();
        let mut scaled = base.clone();
        scaled.max_instances = 3;
        assert!(base.same_except_scaling(&scaled));
        type Edit = fn(&mut VersionSpec);
        let edits: &[(&str, Edit)] = &[
            ("image", |s| s.image = Some("other:1".into())),
            ("cpu", |s| s.cpu = Some(1.0)),
            ("memory", |s| s.memory_bytes = Some(64 << 20)),
            ("tmp", |s| s.tmp_size_bytes = Some(8 << 20)),
            ("volumes", |s| s.volumes = vec![mount("d", "/d")]),
            ("build", |s| {
                s.build = Some(BuildInfo {
                    id: "b2".into(),
                    duration_ms: 5,
                })
            }),
        ];
        for (label, edit) in edits {
            let mut other = base.clone();
            edit(&mut other);
            assert!(!base.same_except_scaling(&other), "{label}");
        }
        // Scaling in place keeps the container fields and the build.
        let mut built = base.clone();
        built.memory_bytes = Some(64 << 20);
        built.build = Some(BuildInfo {
            id: "b1".into(),
            duration_ms: 1200,
        });
        let update = ScalingUpdate {
            max_instances: Some(2),
            ..Default::default()
        };
        let updated = built.apply_scaling(&update).unwrap();
        assert_eq!(updated.max_instances, 2);
        assert!(built.same_except_scaling(&updated));

        // A function keeps its function part: scaling it does not make it a plain service.
        let mut function = input().resolve().unwrap();
        function.function = Some(function_part());
        let updated = function.apply_scaling(&update).unwrap();
        assert_eq!(updated.function, function.function);
        assert!(function.same_except_scaling(&updated));
    }

    #[test]
    fn a_spec_round_trips_through_its_input() {
        let mut fixed = input();
        fixed.port = Some(8081);
        fixed.min_instances = Some(1);
        let mut scaled = input();
        scaled.env = BTreeMap::from([("A".into(), "1".into())]);
        scaled.min_instances = Some(2);
        scaled.scaling.queue_depth = Some(7);
        scaled.scaling.target_utilization = Some(0.5);
        let mut container = image_input();
        container.cpu = Some(0.5);
        container.memory = Some(ByteSize::Text("256Mi".into()));
        container.volumes = vec![mount("data", "/data")];
        for original in [input(), fixed, scaled, image_input(), container] {
            let spec = original.resolve().unwrap();
            assert_eq!(spec.to_input().resolve().unwrap(), spec, "{original:?}");
        }
    }

    #[test]
    fn a_deploy_from_a_version_keeps_what_it_does_not_change() {
        let mut base = input();
        base.env = BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]);
        base.port = Some(8081);
        base.min_instances = Some(1);
        let base = base.resolve().unwrap().to_input();
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let names = |keys: &[&str]| -> Vec<String> { keys.iter().map(|k| k.to_string()).collect() };

        // (case, changes, remove_env, then: command, image, env, port, min instances)
        type Then<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            &'a [(&'a str, &'a str)],
            Option<u32>,
            u32,
        );
        let cases: Vec<(&str, VersionInput, Vec<String>, Then<'_>)> = vec![
            (
                "nothing changed: a redeploy",
                VersionInput::default(),
                vec![],
                (
                    Some("python3 app.py"),
                    None,
                    &[("A", "1"), ("B", "2")],
                    Some(8081),
                    1,
                ),
            ),
            (
                "env added, replaced and removed",
                VersionInput {
                    env: env(&[("B", "two"), ("C", "3")]),
                    ..Default::default()
                },
                names(&["A"]),
                (
                    Some("python3 app.py"),
                    None,
                    &[("B", "two"), ("C", "3")],
                    Some(8081),
                    1,
                ),
            ),
            (
                "a new command and scaling",
                VersionInput {
                    command: Some("python3 app2.py".into()),
                    min_instances: Some(0),
                    ..Default::default()
                },
                vec![],
                (
                    Some("python3 app2.py"),
                    None,
                    &[("A", "1"), ("B", "2")],
                    Some(8081),
                    0,
                ),
            ),
            (
                "a process moved to an image runs the image's entrypoint",
                image_input(),
                vec![],
                (
                    None,
                    Some("nimbus/hello:b1"),
                    &[("A", "1"), ("B", "2")],
                    Some(8081),
                    1,
                ),
            ),
        ];
        for (case, changes, remove, then) in cases {
            let (command, image, want_env, port, min) = then;
            let got = changes
                .over(base.clone(), "v1", &remove)
                .unwrap()
                .resolve()
                .unwrap();
            assert_eq!(
                (got.command.as_str(), got.image.as_deref(), &got.env),
                (command.unwrap_or(""), image, &env(want_env)),
                "{case}"
            );
            assert_eq!(
                (got.port.map(u32::from), got.min_instances),
                (port, min),
                "{case}"
            );
        }

        let refused: [(&str, VersionInput, Vec<String>, &str); 2] = [
            (
                "NOPE is not set on v1",
                VersionInput::default(),
                names(&["NOPE"]),
                "unknown",
            ),
            (
                "A is both set (env) and removed (remove_env)",
                VersionInput {
                    env: env(&[("A", "9")]),
                    ..Default::default()
                },
                names(&["A"]),
                "both",
            ),
        ];
        for (message, changes, remove, case) in refused {
            let e = changes.over(base.clone(), "v1", &remove).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("invalid_env", Some("remove_env")),
                "{case}"
            );
            assert!(e.message.contains(message), "{case}: {}", e.message);
        }
    }

    #[test]
    fn image_references() {
        let cases: &[(&str, Option<&str>)] = &[
            ("nginx", None),
            ("nginx:1.27", None),
            ("library/nginx:1.27-alpine", None),
            ("nimbus/default/web:b3", None),
            ("localhost:5000/a/b:1", None),
            ("registry.example.com/team/app_v2:latest", None),
            ("my-registry.local:8443/x/y", None),
            ("a__b/c--d/e.f", None),
            (
                "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                None,
            ),
            ("Registry.Example.com/app", None), // capitals in a registry host are allowed
            ("UPPER:case", Some("lowercase before its tag (found 'U')")),
            ("team/MyApp", Some("lowercase before its tag (found 'M')")),
            ("nginx:", Some("invalid tag \"\"")),
            ("nginx:-1", Some("invalid tag")),
            ("nginx:a/b", Some("invalid registry \"nginx:a\"")),
            ("-rm", Some("invalid name part")),
            ("a..b", Some("invalid name part")),
            ("a___b", Some("invalid name part")),
            ("a/", Some("invalid name part \"\"")),
            ("app.", Some("invalid name part")),
            ("localhost:port/a", Some("invalid registry")),
            ("bad_host.com/a", Some("invalid registry")),
            ("busybox@sha256:abc", Some("invalid digest")),
            ("a b", Some("spaces")),
            ("", Some("empty")),
        ];
        for (image, want) in cases {
            let got = image_reference_problem(image);
            match (want, &got) {
                (None, None) => {}
                (Some(want), Some(got)) if got.contains(want) => {}
                _ => panic!("{image:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
