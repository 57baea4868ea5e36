//! Pure translation between Nimbus and the engine: a checked [`InstanceSpec`] becomes a container
//! config (limits, env, labels, mounts), and a container's labels become an [`InstanceInfo`] again.
//! No I/O here.

use std::collections::{BTreeMap, HashMap, HashSet};

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, RestartPolicy,
    RestartPolicyNameEnum,
};
use nimbus_runtime::{
    check_component, ContainerSpec, DriverError, ExitStatus, InstanceInfo, InstanceSpec,
};

#[cfg(test)]
mod tests;

pub const LABEL_SERVICE: &str = "nimbus.service";
pub const LABEL_VERSION: &str = "nimbus.version";
pub const LABEL_INSTANCE: &str = "nimbus.instance";
pub const LABEL_NAMESPACE: &str = "nimbus.namespace";
pub const LABEL_PORT: &str = "nimbus.port";
/// The server's data dir: which Nimbus owns the container (or volume).
pub const LABEL_DATA: &str = "nimbus.data";
/// On volumes: the user's name of the volume.
pub const LABEL_VOLUME: &str = "nimbus.volume";

/// The engine refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// A sanity cap: more cores than any machine Nimbus runs on.
const MAX_CPU_CORES: f64 = 1024.0;

/// The container of an instance: `nimbus-{id}`.
pub fn container_name(id: &str) -> String {
    format!("nimbus-{id}")
}

/// The engine's name of a user volume: `nimbus-vol-{name}`.
pub fn engine_volume_name(name: &str) -> String {
    format!("nimbus-vol-{name}")
}

/// Checks everything the engine or a path would choke on; returns the container part.
pub fn validate(spec: &InstanceSpec) -> Result<&ContainerSpec, DriverError> {
    check_component("id", &spec.id)?;
    check_component("namespace", &spec.namespace)?;
    check_component("service", &spec.service)?;
    check_component("version", &spec.version)?;
    if spec.port == 0 {
        return Err(invalid("port", "must not be 0 (use pick_free_port)"));
    }
    let Some(container) = spec.container.as_ref() else {
        return Err(invalid(
            "container",
            "the docker driver needs an image to run",
        ));
    };
    if container.image.trim().is_empty() || container.image.chars().any(char::is_whitespace) {
        return Err(invalid(
            "container.image",
            format!("must be an image reference (got {:?})", container.image),
        ));
    }
    if let Some(cpu) = container.cpu {
        if !cpu.is_finite() || cpu <= 0.0 || cpu > MAX_CPU_CORES {
            return Err(invalid(
                "container.cpu",
                format!(
                    "must be a number of cores above 0 and at most {MAX_CPU_CORES} (got {cpu})"
                ),
            ));
        }
    }
    if let Some(memory) = container.memory_bytes {
        if memory < MIN_MEMORY_BYTES || i64::try_from(memory).is_err() {
            return Err(invalid(
                "container.memory_bytes",
                format!("must be at least 6 MiB (got {memory} bytes)"),
            ));
        }
    }
    if container.tmp_size_bytes == 0 || i64::try_from(container.tmp_size_bytes).is_err() {
        return Err(invalid("container.tmp_size_bytes", "must be above 0"));
    }
    let mut paths = HashSet::new();
    for mount in &container.volumes {
        check_volume_name(&mount.name).map_err(|reason| invalid("container.volumes", reason))?;
        check_mount_path(&mount.path).map_err(|reason| invalid("container.volumes", reason))?;
        if !paths.insert(mount.path.trim_end_matches('/')) {
            return Err(invalid(
                "container.volumes",
                format!("two volumes are mounted at {}", mount.path),
            ));
        }
    }
    Ok(container)
}

/// The engine's config for a checked spec. `data_label` is the owning server's data dir;
/// `log_cap_bytes` caps the engine's own copy of the output.
pub fn create_body(
    spec: &InstanceSpec,
    container: &ContainerSpec,
    data_label: &str,
    log_cap_bytes: u64,
) -> ContainerCreateBody {
    let (entrypoint, cmd) = if spec.command.trim().is_empty() {
        (None, None) // the image's own
    } else {
        (
            Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                spec.command.clone(),
            ]),
            Some(Vec::new()),
        )
    };
    let mounts = container
        .volumes
        .iter()
        .map(|mount| Mount {
            target: Some(mount.path.clone()),
            source: Some(engine_volume_name(&mount.name)),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Mount::default()
        })
        .collect::<Vec<_>>();
    let memory = container.memory_bytes.and_then(|m| i64::try_from(m).ok());
    let host_config = HostConfig {
        network_mode: Some("host".to_owned()),
        nano_cpus: container.cpu.map(nano_cpus),
        memory,
        // Equal to `memory`: no swap on top of the limit.
        memory_swap: memory,
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            format!(
                "rw,nosuid,nodev,mode=1777,size={}",
                container.tmp_size_bytes
            ),
        )])),
        mounts: (!mounts.is_empty()).then_some(mounts),
        // The reconciler decides about restarts, not the engine.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), log_cap_bytes.max(1024).to_string()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }),
        ..HostConfig::default()
    };
    ContainerCreateBody {
        image: Some(container.image.clone()),
        entrypoint,
        cmd,
        env: Some(env(spec)),
        labels: Some(labels(spec, data_label)),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// `KEY=VALUE` pairs: the user's env, then `PORT` and the `NIMBUS_*` identity, which win.
pub fn env(spec: &InstanceSpec) -> Vec<String> {
    let mut env: BTreeMap<&str, String> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    env.insert("PORT", spec.port.to_string());
    env.insert("NIMBUS_NAMESPACE", spec.namespace.clone());
    env.insert("NIMBUS_SERVICE", spec.service.clone());
    env.insert("NIMBUS_VERSION", spec.version.clone());
    env.insert("NIMBUS_INSTANCE", spec.id.clone());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The labels that make a container findable and re-adoptable.
pub fn labels(spec: &InstanceSpec, data_label: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_SERVICE.to_owned(), spec.service.clone()),
        (LABEL_VERSION.to_owned(), spec.version.clone()),
        (LABEL_INSTANCE.to_owned(), spec.id.clone()),
        (LABEL_NAMESPACE.to_owned(), spec.namespace.clone()),
        (LABEL_PORT.to_owned(), spec.port.to_string()),
        (LABEL_DATA.to_owned(), data_label.to_owned()),
    ])
}

/// An instance described by a container's labels; `None` unless they are complete and sane.
pub fn info_from_labels(labels: &HashMap<String, String>, started_at: u64) -> Option<InstanceInfo> {
    let get = |key| labels.get(key).filter(|v| !v.is_empty()).cloned();
    let info = InstanceInfo {
        id: get(LABEL_INSTANCE)?,
        namespace: get(LABEL_NAMESPACE)?,
        service: get(LABEL_SERVICE)?,
        version: get(LABEL_VERSION)?,
        port: get(LABEL_PORT)?.parse().ok().filter(|p| *p != 0)?,
        pid: None,
        started_at,
    };
    let sane = [
        ("id", &info.id),
        ("namespace", &info.namespace),
        ("service", &info.service),
        ("version", &info.version),
    ]
    .into_iter()
    .all(|(field, value)| check_component(field, value).is_ok());
    sane.then_some(info)
}

/// Docker's `NanoCpus`: billionths of a core.
pub fn nano_cpus(cores: f64) -> i64 {
    (cores * 1e9).round() as i64
}

/// How a container ended. The engine reports a signal death as `128 + signal` but cannot tell it
/// from a program exiting with that code, except for the OOM killer's SIGKILL, which it flags.
/// (The flag is also set when the OOM killer hit another process of the container; then the main
/// process's own code stands.)
pub fn exit_status(code: i64, oom_killed: bool) -> ExitStatus {
    if oom_killed && code == 137 {
        return ExitStatus::Signal(9);
    }
    match i32::try_from(code) {
        Ok(code) => ExitStatus::Code(code),
        Err(_) => ExitStatus::Unknown,
    }
}

/// The engine's stop timeout `t`: whole seconds, rounded up.
pub fn stop_timeout_secs(grace: std::time::Duration) -> i32 {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Volume names as Docker allows them, shorter: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "volume name {name:?} must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// An absolute path, not `/`, not `/tmp` (the tmpfs), without `..` or odd characters.
fn check_mount_path(path: &str) -> Result<(), String> {
    let trimmed = path.trim_end_matches('/');
    let reason = if !path.starts_with('/') {
        "must be an absolute path"
    } else if trimmed.is_empty() {
        "must not be /"
    } else if trimmed == "/tmp" {
        "must not be /tmp, which is the container's tmpfs"
    } else if path.split('/').any(|part| part == "..") {
        "must not contain '..'"
    } else if path.chars().any(|c| c.is_control() || c == ',' || c == ':') {
        "must not contain control characters, ',' or ':'"
    } else {
        return Ok(());
    };
    Err(format!("mount path {path:?} {reason}"))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DriverError {
    DriverError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}
