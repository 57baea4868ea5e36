use std::time::Duration;

use nimbus_runtime::VolumeMount;

use super::*;

fn spec() -> InstanceSpec {
    InstanceSpec {
        id: "hello-v1-abc".into(),
        namespace: "default".into(),
        service: "hello".into(),
        version: "v1".into(),
        command: String::new(),
        env: BTreeMap::from([
            ("GREETING".to_owned(), "hi".to_owned()),
            ("PORT".to_owned(), "1".to_owned()), // reserved: the driver's value wins
        ]),
        port: 8123,
        container: Some(ContainerSpec {
            image: "nimbus/hello:v1".into(),
            ..ContainerSpec::default()
        }),
    }
}

fn with(change: impl FnOnce(&mut InstanceSpec)) -> InstanceSpec {
    let mut spec = spec();
    change(&mut spec);
    spec
}

fn with_container(change: impl FnOnce(&mut ContainerSpec)) -> InstanceSpec {
    with(|s| {
        if let Some(c) = s.container.as_mut() {
            change(c);
        }
    })
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        path: path.into(),
    }
}

#[test]
fn validates_specs() {
    let cases: Vec<(&str, InstanceSpec, Option<&str>)> = vec![
        ("plain", spec(), None),
        (
            "no container",
            with(|s| s.container = None),
            Some("container"),
        ),
        (
            "empty image",
            with_container(|c| c.image = " ".into()),
            Some("container.image"),
        ),
        (
            "image with space",
            with_container(|c| c.image = "a b".into()),
            Some("container.image"),
        ),
        ("port 0", with(|s| s.port = 0), Some("port")),
        ("id with slash", with(|s| s.id = "a/b".into()), Some("id")),
        (
            "dot service",
            with(|s| s.service = ".x".into()),
            Some("service"),
        ),
        ("half a core", with_container(|c| c.cpu = Some(0.5)), None),
        (
            "zero cores",
            with_container(|c| c.cpu = Some(0.0)),
            Some("container.cpu"),
        ),
        (
            "NaN cores",
            with_container(|c| c.cpu = Some(f64::NAN)),
            Some("container.cpu"),
        ),
        (
            "inf cores",
            with_container(|c| c.cpu = Some(f64::INFINITY)),
            Some("container.cpu"),
        ),
        (
            "64 MiB",
            with_container(|c| c.memory_bytes = Some(64 << 20)),
            None,
        ),
        (
            "1 MiB",
            with_container(|c| c.memory_bytes = Some(1 << 20)),
            Some("container.memory_bytes"),
        ),
        (
            "huge memory",
            with_container(|c| c.memory_bytes = Some(u64::MAX)),
            Some("container.memory_bytes"),
        ),
        (
            "tmp 0",
            with_container(|c| c.tmp_size_bytes = 0),
            Some("container.tmp_size_bytes"),
        ),
        (
            "volume",
            with_container(|c| c.volumes = vec![mount("data", "/data")]),
            None,
        ),
        (
            "nested under /tmp",
            with_container(|c| c.volumes = vec![mount("data", "/tmp/x")]),
            None,
        ),
        (
            "relative path",
            with_container(|c| c.volumes = vec![mount("data", "data")]),
            Some("container.volumes"),
        ),
        (
            "root",
            with_container(|c| c.volumes = vec![mount("data", "/")]),
            Some("container.volumes"),
        ),
        (
            "tmp itself",
            with_container(|c| c.volumes = vec![mount("data", "/tmp/")]),
            Some("container.volumes"),
        ),
        (
            "dotdot",
            with_container(|c| c.volumes = vec![mount("data", "/a/../b")]),
            Some("container.volumes"),
        ),
        (
            "colon",
            with_container(|c| c.volumes = vec![mount("data", "/a:b")]),
            Some("container.volumes"),
        ),
        (
            "bad name",
            with_container(|c| c.volumes = vec![mount("-x", "/data")]),
            Some("container.volumes"),
        ),
        (
            "same path twice",
            with_container(|c| c.volumes = vec![mount("a", "/data"), mount("b", "/data/")]),
            Some("container.volumes"),
        ),
    ];
    for (name, spec, bad_field) in cases {
        match (validate(&spec), bad_field) {
            (Ok(_), None) => {}
            (Err(DriverError::InvalidSpec { field, .. }), Some(expected)) => {
                assert_eq!(field, expected, "{name}")
            }
            (got, _) => panic!("{name}: expected {bad_field:?}, got {got:?}"),
        }
    }
}

#[test]
fn env_puts_identity_last_and_winning() {
    let env = env(&spec());
    let expected = [
        "GREETING=hi",
        "NIMBUS_INSTANCE=hello-v1-abc",
        "NIMBUS_NAMESPACE=default",
        "NIMBUS_SERVICE=hello",
        "NIMBUS_VERSION=v1",
        "PORT=8123",
    ];
    assert_eq!(env, expected);
}

#[test]
fn create_body_sets_limits_network_labels_and_mounts() {
    let spec = with_container(|c| {
        c.cpu = Some(0.5);
        c.memory_bytes = Some(64 << 20);
        c.tmp_size_bytes = 1 << 20;
        c.volumes = vec![mount("data", "/data")];
    });
    let container = validate(&spec).expect("valid");
    let body = create_body(&spec, container, "/srv/nimbus", 10 << 20);
    assert_eq!(body.image.as_deref(), Some("nimbus/hello:v1"));
    assert_eq!(body.entrypoint, None, "no command: the image's entrypoint");
    let host = body.host_config.expect("host config");
    assert_eq!(host.network_mode.as_deref(), Some("host"));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.memory_swap, Some(64 << 20));
    let tmpfs = host.tmpfs.expect("tmpfs");
    assert!(tmpfs["/tmp"].ends_with("size=1048576"), "{tmpfs:?}");
    let mounts = host.mounts.expect("mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].source.as_deref(), Some("nimbus-vol-data"));
    assert_eq!(mounts[0].target.as_deref(), Some("/data"));
    let labels = body.labels.expect("labels");
    assert_eq!(labels[LABEL_DATA], "/srv/nimbus");
    assert_eq!(labels[LABEL_PORT], "8123");
    assert_eq!(
        info_from_labels(&labels, 7),
        Some(InstanceInfo {
            id: "hello-v1-abc".into(),
            namespace: "default".into(),
            service: "hello".into(),
            version: "v1".into(),
            port: 8123,
            pid: None,
            started_at: 7,
        })
    );
}

#[test]
fn create_body_runs_a_command_through_sh() {
    let spec = with(|s| s.command = "echo hi; sleep 1".into());
    let container = validate(&spec).expect("valid");
    let body = create_body(&spec, container, "/d", 1 << 20);
    assert_eq!(
        body.entrypoint,
        Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hi; sleep 1".into()
        ])
    );
    assert_eq!(
        body.cmd,
        Some(Vec::new()),
        "the image's CMD must not be appended"
    );
    let host = body.host_config.expect("host config");
    assert_eq!(host.nano_cpus, None, "no limit unless asked");
    assert_eq!(host.memory, None);
    assert_eq!(host.mounts, None);
}

#[test]
fn info_from_labels_rejects_incomplete_or_unsafe_labels() {
    let good = labels(&spec(), "/d");
    let cases: &[(&str, Option<&str>, bool)] = &[
        (LABEL_INSTANCE, Some("ok-id"), true),
        (LABEL_INSTANCE, None, false),
        (LABEL_INSTANCE, Some("../x"), false),
        (LABEL_PORT, Some("0"), false),
        (LABEL_PORT, Some("70000"), false),
        (LABEL_PORT, Some("http"), false),
        (LABEL_SERVICE, Some(""), false),
        (LABEL_VERSION, None, false),
    ];
    for (key, value, ok) in cases {
        let mut labels = good.clone();
        match value {
            Some(v) => labels.insert((*key).to_owned(), (*v).to_owned()),
            None => labels.remove(*key),
        };
        assert_eq!(
            info_from_labels(&labels, 0).is_some(),
            *ok,
            "{key}={value:?}"
        );
    }
}

#[test]
fn exit_statuses() {
    let cases = &[
        (0, false, ExitStatus::Code(0)),
        (3, false, ExitStatus::Code(3)),
        (137, false, ExitStatus::Code(137)), // a kill we cannot attribute: reported as is
        (137, true, ExitStatus::Signal(9)),  // the OOM killer
        (0, true, ExitStatus::Code(0)),      // a child was OOM-killed; the main process went on
        (i64::MAX, false, ExitStatus::Unknown),
    ];
    for (code, oom, expected) in cases {
        assert_eq!(exit_status(*code, *oom), *expected, "{code} oom={oom}");
    }
}

#[test]
fn conversions() {
    assert_eq!(nano_cpus(0.5), 500_000_000);
    assert_eq!(nano_cpus(2.0), 2_000_000_000);
    assert_eq!(nano_cpus(0.001), 1_000_000);
    let cases = &[
        (Duration::ZERO, 0),
        (Duration::from_millis(1), 1),
        (Duration::from_secs(10), 10),
        (Duration::from_millis(10_500), 11),
    ];
    for (grace, secs) in cases {
        assert_eq!(stop_timeout_secs(*grace), *secs, "{grace:?}");
    }
}

#[test]
fn volume_names() {
    let cases = &[
        ("data", true),
        ("my-data_1.x", true),
        ("9lives", true),
        ("", false),
        ("-x", false),
        (".x", false),
        ("a/b", false),
        ("a b", false),
        (&"x".repeat(64), false),
    ];
    for (name, ok) in cases {
        assert_eq!(check_volume_name(name).is_ok(), *ok, "{name:?}");
    }
}
