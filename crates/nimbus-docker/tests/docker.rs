//! Black-box tests of the docker driver against the real Docker Engine (see `support`): every
//! container listens on 127.0.0.1 with host networking, every wait is bounded, and each test
//! removes what it created even when it fails.

mod support;

use std::time::Duration;

use nimbus_docker::container::{LABEL_DATA, LABEL_INSTANCE, LABEL_SERVICE, LABEL_VERSION};
use nimbus_docker::{
    BuildError, DockerConfig, DockerDriver, DockerError, PullOutcome, RemoveOutcome,
};
use nimbus_runtime::{Driver, DriverError, ExitStatus, VolumeMount};
use support::*;

const LOG_WAIT: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn connect_without_docker_says_how_to_start_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = DockerConfig {
        socket: Some(dir.path().join("no-docker.sock")),
        ..DockerConfig::default()
    };
    let error = DockerDriver::connect_with(dir.path(), config)
        .await
        .err()
        .ok_or("connected to a socket that does not exist")?;
    let message = error.to_string();
    assert!(
        message
            .contains("Docker is not running: start it with `dockerd` (or `scripts/docker-up.sh`)"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn serves_http_with_limits_labels_and_logs() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        env.test_image(&driver).await?;
        let id = unique_id("web");
        let mut spec = spec(&id, "");
        if let Some(container) = spec.container.as_mut() {
            container.cpu = Some(0.5);
            container.memory_bytes = Some(64 << 20);
        }
        let info = driver.start(&spec).await?;
        assert_eq!((info.id.as_str(), info.port), (id.as_str(), spec.port));
        assert!(matches!(
            driver.start(&spec).await,
            Err(DriverError::AlreadyRunning(_))
        ));

        nimbus_runtime::wait_ready(spec.port, "/", Duration::from_secs(20)).await?;
        let body = http_get(spec.port, "/").await?;
        assert_eq!(body.trim(), format!("hello from {id}"));

        let log = driver.log_path(&id).ok_or("no log path")?;
        assert_eq!(
            log,
            env.data_dir.join(format!("logs/default/hello/v1/{id}.log"))
        );
        let serving = format!("serving on port {}", spec.port);
        assert!(
            log_contains(&log, &serving, LOG_WAIT).await,
            "log: {}",
            read_log(&log)
        );

        let inspect = env
            .engine
            .inspect_container(&format!("nimbus-{id}"), None)
            .await?;
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(labels.get(LABEL_SERVICE).map(String::as_str), Some("hello"));
        assert_eq!(labels.get(LABEL_VERSION).map(String::as_str), Some("v1"));
        assert_eq!(labels.get(LABEL_INSTANCE), Some(&id));
        assert_eq!(labels.get(LABEL_DATA), Some(&env.data_label()));
        let host = inspect.host_config.unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(driver.instances().len(), 1);

        driver.stop(&id, GRACE).await?;
        assert_eq!(
            env.our_containers().await?,
            Vec::<String>::new(),
            "stop leaves nothing"
        );
        assert_eq!(driver.log_path(&id), None);
        assert!(matches!(
            driver.wait(&id).await,
            Err(DriverError::UnknownInstance(_))
        ));
        driver.stop(&id, GRACE).await?; // idempotent
        driver.stop("never-started", GRACE).await?;
        assert!(read_log(&log).contains(&serving), "the log file stays");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn exit_code_and_last_lines_are_reported() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        env.test_image(&driver).await?;
        let id = unique_id("crash");
        driver
            .start(&spec(
                &id,
                "echo first; echo to-stderr >&2; echo last words; exit 3",
            ))
            .await?;
        let status = driver.wait(&id).await?;
        assert_eq!(status, ExitStatus::Code(3));
        // Copied before `wait` returned: a crash report can read them at once. (The engine keeps
        // the order within stdout, not between stdout and stderr.)
        let log = read_log(&driver.log_path(&id).ok_or("no log path")?);
        let mut lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("to-stderr")).count(),
            1,
            "{log}"
        );
        lines.retain(|l| *l != "to-stderr");
        assert_eq!(lines, ["first", "last words"], "{log}");
        driver.stop(&id, GRACE).await?;
        assert_eq!(env.our_containers().await?, Vec::<String>::new());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn memory_limit_is_visible_inside() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        env.test_image(&driver).await?;
        let id = unique_id("mem");
        // cgroup v2 first, then v1 (this machine's engine may use either).
        let mut spec = spec(
            &id,
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 60",
        );
        if let Some(container) = spec.container.as_mut() {
            container.memory_bytes = Some(64 << 20);
        }
        driver.start(&spec).await?;
        let log = driver.log_path(&id).ok_or("no log path")?;
        assert!(
            log_contains(&log, &(64u64 << 20).to_string(), LOG_WAIT).await,
            "log: {}",
            read_log(&log)
        );
        driver.stop(&id, Duration::ZERO).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn tmp_is_a_size_capped_tmpfs() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        env.test_image(&driver).await?;
        let id = unique_id("tmp");
        let mut spec = spec(
            &id,
            "dd if=/dev/zero of=/tmp/small bs=1024 count=256 2>/dev/null && echo SMALL-OK; \
             dd if=/dev/zero of=/tmp/big bs=1024 count=2048 2>/dev/null || echo BIG-FAILED; \
             echo DONE; sleep 60",
        );
        if let Some(container) = spec.container.as_mut() {
            container.tmp_size_bytes = 1 << 20;
        }
        driver.start(&spec).await?;
        let log = driver.log_path(&id).ok_or("no log path")?;
        assert!(
            log_contains(&log, "DONE", LOG_WAIT).await,
            "log: {}",
            read_log(&log)
        );
        let text = read_log(&log);
        assert!(
            text.contains("SMALL-OK"),
            "a write under the cap works: {text}"
        );
        assert!(
            text.contains("BIG-FAILED"),
            "a write over the cap fails: {text}"
        );
        driver.stop(&id, Duration::ZERO).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn volume_data_survives_a_new_container() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        env.test_image(&driver).await?;
        let name = unique_id("vol");
        let created = driver.create_volume(&name).await?;
        assert_eq!(created.engine_name, format!("nimbus-vol-{name}"));
        assert!(matches!(
            driver.create_volume(&name).await,
            Err(DockerError::VolumeExists(_))
        ));
        let mount = |spec: &mut nimbus_runtime::InstanceSpec| {
            if let Some(container) = spec.container.as_mut() {
                container.volumes = vec![VolumeMount {
                    name: name.clone(),
                    path: "/data".into(),
                }];
            }
        };

        let writer = unique_id("writer");
        let mut spec_a = spec(
            &writer,
            "echo persisted-$NIMBUS_INSTANCE > /data/file && echo wrote; sleep 60",
        );
        mount(&mut spec_a);
        driver.start(&spec_a).await?;
        let log_a = driver.log_path(&writer).ok_or("no log path")?;
        assert!(
            log_contains(&log_a, "wrote", LOG_WAIT).await,
            "log: {}",
            read_log(&log_a)
        );

        let listed = driver.list_volumes().await?;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name);
        assert_eq!(listed[0].used_by, vec![format!("nimbus-{writer}")]);
        match driver.delete_volume(&name).await {
            Err(DockerError::VolumeInUse { containers, .. }) => {
                assert_eq!(containers, vec![format!("nimbus-{writer}")])
            }
            other => panic!("expected VolumeInUse, got {other:?}"),
        }
        driver.stop(&writer, Duration::ZERO).await?;

        let reader = unique_id("reader");
        let mut spec_b = spec(&reader, "cat /data/file; sleep 60");
        mount(&mut spec_b);
        driver.start(&spec_b).await?;
        let log_b = driver.log_path(&reader).ok_or("no log path")?;
        let expected = format!("persisted-{writer}");
        assert!(
            log_contains(&log_b, &expected, LOG_WAIT).await,
            "log: {}",
            read_log(&log_b)
        );
        driver.stop(&reader, Duration::ZERO).await?;

        driver.delete_volume(&name).await?;
        assert!(driver.list_volumes().await?.is_empty());
        assert!(matches!(
            driver.delete_volume(&name).await,
            Err(DockerError::VolumeMissing(_))
        ));
        // A missing volume fails the start with a message saying how to create it.
        let error = driver
            .start(&spec_b)
            .await
            .err()
            .ok_or("started with a missing volume")?;
        assert!(
            error.to_string().contains("nimbus volumes create"),
            "{error}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn adopts_running_containers_after_a_restart() {
    docker_test(|env| async move {
        let first = env.driver().await?;
        env.test_image(&first).await?;
        let ticker = unique_id("ticker");
        let ticks =
            "i=0; while [ $i -lt 400 ]; do echo tick-$i; i=$((i+1)); sleep 0.05; done; sleep 60";
        let ticker_spec = spec(&ticker, ticks);
        let started = first.start(&ticker_spec).await?;
        let crasher = unique_id("crasher");
        first.start(&spec(&crasher, "echo bye; exit 3")).await?;
        assert_eq!(first.wait(&crasher).await?, ExitStatus::Code(3));
        let log = first.log_path(&ticker).ok_or("no log path")?;
        assert!(log_contains(&log, "tick-5\n", LOG_WAIT).await);

        // A server crash: the driver goes, the containers stay, the ticker keeps logging.
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = last_tick(&read_log(&log));

        let second = env.driver().await?;
        let adopted = second.adopt().await?;
        assert_eq!(
            adopted,
            vec![started.clone()],
            "only the running one comes back"
        );
        assert_eq!(
            env.our_containers().await?,
            vec![format!("nimbus-{ticker}")],
            "the exited container is removed"
        );
        assert!(
            second.adopt().await?.is_empty(),
            "adopting again adds nothing"
        );
        assert_eq!(second.log_path(&ticker), Some(log.clone()));

        let target = format!("tick-{}\n", before + 20);
        assert!(
            log_contains(&log, &target, LOG_WAIT).await,
            "log: {}",
            read_log(&log)
        );
        let text = read_log(&log);
        let numbers: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
            .collect();
        let expected: Vec<u32> = (0..numbers.len() as u32).collect();
        assert_eq!(numbers, expected, "every tick exactly once, in order");

        second.stop(&ticker, Duration::ZERO).await?;
        assert_eq!(env.our_containers().await?, Vec::<String>::new());
        let cursors = std::fs::read_dir(env.data_dir.join("docker"))?.count();
        assert_eq!(cursors, 0, "no cursor files left");
        Ok(())
    })
    .await;
}

fn last_tick(log: &str) -> u32 {
    log.lines()
        .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn builds_pulls_and_refuses_missing_images() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        let context = env.data_dir.join("ctx");
        write_test_context(&context)?;
        let mut lines = Vec::new();
        let outcome = driver
            .build(&context, None, TEST_IMAGE, |line| lines.push(line))
            .await?;
        assert!(outcome.image_id.starts_with("sha256:"), "{outcome:?}");
        assert!(lines.iter().any(|l| l.starts_with("Step 1/")), "{lines:?}");
        assert_eq!(outcome.log, lines.join("\n"));
        assert!(driver.image_exists(TEST_IMAGE).await?);

        // A Dockerfile outside the context is packed along with it.
        let outside = env.data_dir.join("elsewhere.Dockerfile");
        std::fs::write(&outside, "FROM scratch\nCOPY busybox /bin/busybox\n")?;
        let tag = format!("nimbus-test/outside:{}", unique_id("t"));
        driver.build(&context, Some(&outside), &tag, |_| {}).await?;
        assert!(driver.image_exists(&tag).await?);
        env.remove_image(&tag).await;

        // What `.dockerignore` excludes never reaches the engine; the Dockerfile always does.
        let ignoring = env.data_dir.join("ignoring");
        std::fs::create_dir_all(ignoring.join("node_modules"))?;
        std::fs::write(ignoring.join("app.txt"), "app")?;
        std::fs::write(ignoring.join("secret.env"), "TOKEN=x")?;
        std::fs::write(ignoring.join("node_modules/dep.js"), "dep")?;
        std::fs::write(
            ignoring.join(".dockerignore"),
            "secret.env\nnode_modules\nDockerfile\n",
        )?;
        std::fs::write(
            ignoring.join("Dockerfile"),
            format!(
                "FROM {TEST_IMAGE}\nCOPY . /ctx/\nRUN [\"/bin/sh\", \"-c\", \"test -e /ctx/app.txt \
                 && test ! -e /ctx/secret.env && test ! -e /ctx/node_modules\"]\n"
            ),
        )?;
        let tag = format!("nimbus-test/ignoring:{}", unique_id("t"));
        let outcome = driver.build(&ignoring, None, &tag, |_| {}).await?;

        // A built image carries the driver's label: it is listed as built (with its id),
        // refused removal while a container uses it, then removed.
        let built = driver.built_images().await?;
        assert!(
            built
                .iter()
                .any(|image| image.tag == tag && image.id == outcome.image_id),
            "{tag} ({}) not in {built:?}",
            outcome.image_id
        );
        let id = unique_id("user");
        let mut user = spec(&id, "sleep 30");
        user.container = Some(nimbus_runtime::ContainerSpec {
            image: tag.clone(),
            ..Default::default()
        });
        driver.start(&user).await?;
        assert_eq!(driver.remove_image(&tag).await?, RemoveOutcome::InUse);
        assert!(driver.image_exists(&tag).await?);
        driver.stop(&id, GRACE).await?;
        assert_eq!(driver.remove_image(&tag).await?, RemoveOutcome::Removed);
        assert!(!driver.image_exists(&tag).await?);
        assert_eq!(driver.remove_image(&tag).await?, RemoveOutcome::Missing);

        let mut progress = Vec::new();
        let pulled = driver.pull(TEST_IMAGE, |line| progress.push(line)).await?;
        assert_eq!(pulled, PullOutcome::AlreadyPresent);
        assert!(progress.is_empty());
        // Nothing listens on port 1: the pull fails at once, with no registry involved.
        let missing = "127.0.0.1:1/nimbus-none:v1";
        assert!(!driver.image_exists(missing).await?);
        let error = driver
            .pull(missing, |_| {})
            .await
            .err()
            .ok_or("pulled from nowhere")?;
        assert!(error.to_string().contains("nimbus-none"), "{error}");

        let error = driver
            .start(&nimbus_runtime::InstanceSpec {
                container: Some(nimbus_runtime::ContainerSpec {
                    image: missing.into(),
                    ..Default::default()
                }),
                ..spec(&unique_id("noimage"), "")
            })
            .await
            .err()
            .ok_or("started without an image")?;
        assert!(error.to_string().contains("not present locally"), "{error}");
        assert_eq!(env.our_containers().await?, Vec::<String>::new());
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_bad_dockerfile_fails_naming_the_step() {
    docker_test(|env| async move {
        let driver = env.driver().await?;
        let context = env.data_dir.join("bad");
        write_test_context(&context)?;
        let tag = format!("nimbus-test/bad:{}", unique_id("t"));

        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n",
        )?;
        let mut lines = Vec::new();
        match driver.build(&context, None, &tag, |l| lines.push(l)).await {
            Err(BuildError::StepFailed {
                failing_step,
                message,
                log,
            }) => {
                let step = failing_step.ok_or("no failing step")?;
                assert!(step.starts_with("Step 3/4 : RUN"), "{step}");
                assert!(message.contains("non-zero code"), "{message}");
                assert!(log.contains(&step), "{log}");
                assert!(lines.iter().any(|l| l.starts_with("ERROR:")), "{lines:?}");
            }
            other => panic!("expected StepFailed, got {other:?}"),
        }
        assert!(!driver.image_exists(&tag).await?);

        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nFROBNICATE everything\n",
        )?;
        match driver.build(&context, None, &tag, |_| {}).await {
            Err(BuildError::StepFailed { message, .. }) => {
                assert!(
                    message.to_lowercase().contains("unknown instruction"),
                    "{message}"
                )
            }
            other => panic!("expected StepFailed, got {other:?}"),
        }

        std::fs::remove_file(context.join("Dockerfile"))?;
        assert!(matches!(
            driver.build(&context, None, &tag, |_| {}).await,
            Err(BuildError::Context { .. })
        ));
        Ok(())
    })
    .await;
}
