//! Tests with real processes (`sh`, `sleep`, `python3`). Sleeps are `sleep 60` so a failed test
//! leaves nothing running for long; every wait is bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::CommandExt;

use super::*;
use crate::{pick_free_port, tail_lines, wait_ready};

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// Polls `cond` every 20 ms for at most `within`.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spec(id: &str, command: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        namespace: "default".into(),
        service: "hello".into(),
        version: "v1".into(),
        command: command.into(),
        env: BTreeMap::new(),
        port: pick_free_port().unwrap(),
        container: None,
    }
}

fn running(pid: i32) -> bool {
    proc::stat(pid).is_some_and(|s| s.is_running())
}

fn log_of(driver: &ProcessDriver, id: &str) -> String {
    std::fs::read_to_string(driver.log_path(id).unwrap()).unwrap_or_default()
}

fn fast_config() -> ProcessConfig {
    ProcessConfig {
        adopted_poll: Duration::from_millis(50),
        ..ProcessConfig::default()
    }
}

#[tokio::test]
async fn starts_http_server_and_probes_it() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        assert_eq!(driver.name(), "process");
        let spec = spec(
            "web-1",
            "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        );
        let info = driver.start(&spec).await.unwrap();
        assert_eq!(info.port, spec.port);
        assert!(info.pid.is_some());
        assert!(
            dir.path().join("run/web-1.json").exists(),
            "pid file before start returns"
        );
        assert_eq!(
            driver.log_path("web-1").unwrap(),
            dir.path().join("logs/default/hello/v1/web-1.log")
        );

        let took = wait_ready(spec.port, "/", Duration::from_secs(10)).await;
        assert!(took.is_ok(), "{took:?}\nlog:\n{}", log_of(&driver, "web-1"));

        driver.stop("web-1", Duration::from_secs(2)).await.unwrap();
        assert!(!running(info.pid.unwrap() as i32));
        assert!(!dir.path().join("run/web-1.json").exists());
        assert!(driver.log_path("web-1").is_none(), "forgotten after stop");
        // The request the probe made was logged by the server.
        assert!(log_of_path(&dir.path().join("logs/default/hello/v1/web-1.log")).contains("GET /"));
    })
    .await;
}

fn log_of_path(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn child_sees_port_and_nimbus_env() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        let mut spec = spec(
            "env-1",
            "echo \"port=$PORT ns=$NIMBUS_NAMESPACE svc=$NIMBUS_SERVICE ver=$NIMBUS_VERSION \
             inst=$NIMBUS_INSTANCE greeting=$GREETING\"; echo oops >&2",
        );
        spec.env.insert("GREETING".into(), "hi there".into());
        spec.env.insert("PORT".into(), "1".into()); // the driver's PORT wins
        driver.start(&spec).await.unwrap();
        assert_eq!(driver.wait("env-1").await.unwrap(), ExitStatus::Code(0));
        let log = log_of(&driver, "env-1");
        let expected = format!(
            "port={} ns=default svc=hello ver=v1 inst=env-1 greeting=hi there\noops\n",
            spec.port
        );
        assert_eq!(log, expected);
    })
    .await;
}

#[tokio::test]
async fn wait_reports_exit_code_and_signal() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        let cases = &[
            ("exit-3", "exit 3", ExitStatus::Code(3)),
            ("exit-0", "true", ExitStatus::Code(0)),
            ("killed", "kill -9 $$", ExitStatus::Signal(9)),
        ];
        for (id, command, expected) in cases {
            driver.start(&spec(id, command)).await.unwrap();
            assert_eq!(driver.wait(id).await.unwrap(), *expected, "{command}");
            // Waiting again still answers; the pid file is gone once the exit was seen.
            assert_eq!(driver.wait(id).await.unwrap(), *expected, "{command}");
            assert!(!dir.path().join(format!("run/{id}.json")).exists());
            // Stopping an exited instance is fine and forgets it.
            driver.stop(id, Duration::from_secs(1)).await.unwrap();
            assert!(matches!(
                driver.wait(id).await,
                Err(DriverError::UnknownInstance(_))
            ));
        }
    })
    .await;
}

#[tokio::test]
async fn stop_kills_the_whole_group() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        let info = driver
            .start(&spec("group-1", "sleep 60 & sleep 60; echo never"))
            .await
            .unwrap();
        let pgid = info.pid.unwrap() as i32;
        // sh + two sleeps.
        assert!(
            eventually(Duration::from_secs(5), || proc::group_members(pgid).len()
                >= 3)
            .await,
            "group never grew: {:?}",
            proc::group_members(pgid)
        );
        let members = proc::group_members(pgid);

        // `wait` and `stop` at the same time must not race for the child.
        let waiter = {
            let driver = driver.clone();
            tokio::spawn(async move { driver.wait("group-1").await })
        };
        driver
            .stop("group-1", Duration::from_secs(2))
            .await
            .unwrap();
        for pid in &members {
            assert!(!running(*pid), "pid {pid} of the group survived stop");
        }
        assert!(proc::group_members(pgid).is_empty());
        assert!(!dir.path().join("run/group-1.json").exists());
        let status = waiter.await.unwrap().unwrap();
        assert_eq!(status, ExitStatus::Signal(Signal::SIGTERM as i32));
        // Idempotent.
        driver
            .stop("group-1", Duration::from_secs(1))
            .await
            .unwrap();
        driver
            .stop("never-existed", Duration::from_secs(1))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn sigterm_ignoring_instance_is_killed_after_grace() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        let info = driver
            .start(&spec(
                "stubborn",
                "trap '' TERM; echo ready; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            ))
            .await
            .unwrap();
        assert!(eventually(Duration::from_secs(5), || log_of(&driver, "stubborn").contains("ready")).await);
        let grace = Duration::from_millis(300);
        let started = Instant::now();
        driver.stop("stubborn", grace).await.unwrap();
        let took = started.elapsed();
        assert!(took >= grace, "stopped before the grace ran out: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let pgid = info.pid.unwrap() as i32;
        assert!(!running(pgid));
        assert!(proc::group_members(pgid).is_empty());
    })
    .await;
}

#[tokio::test]
async fn adopts_instances_of_a_crashed_driver() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let a = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        let spec = spec("survivor", "sleep 60 & echo up; sleep 60");
        let info = a.start(&spec).await.unwrap();
        let pgid = info.pid.unwrap() as i32;
        assert!(
            eventually(Duration::from_secs(5), || proc::group_members(pgid).len()
                >= 2)
            .await
        );
        let members = proc::group_members(pgid);
        drop(a); // a crash: nothing is stopped
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(running(pgid), "dropping the driver must not kill instances");

        let b = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        let adopted = b.adopt().await.unwrap();
        assert_eq!(adopted, vec![info.clone()]);
        assert_eq!(b.log_path("survivor"), a_log_path(dir.path(), &spec));
        assert!(log_of(&b, "survivor").contains("up"));
        // Adopting twice does not track it twice.
        assert!(b.adopt().await.unwrap().is_empty());

        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait("survivor").await })
        };
        b.stop("survivor", Duration::from_secs(2)).await.unwrap();
        for pid in &members {
            assert!(!running(*pid), "pid {pid} survived");
        }
        assert!(!dir.path().join("run/survivor.json").exists());
        assert_eq!(waiter.await.unwrap().unwrap(), ExitStatus::Unknown);
    })
    .await;
}

fn a_log_path(data: &Path, spec: &InstanceSpec) -> Option<PathBuf> {
    Some(data.join(format!(
        "logs/{}/{}/{}/{}.log",
        spec.namespace, spec.service, spec.version, spec.id
    )))
}

#[tokio::test]
async fn adopted_instance_exit_is_seen_by_wait() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let a = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        let info = a.start(&spec("short", "sleep 0.5")).await.unwrap();
        drop(a);
        let b = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        assert_eq!(b.adopt().await.unwrap(), vec![info]);
        assert_eq!(b.wait("short").await.unwrap(), ExitStatus::Unknown);
        assert!(!dir.path().join("run/short.json").exists());
    })
    .await;
}

#[tokio::test]
async fn adopt_kills_leftovers_of_a_dead_leader() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let a = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        let info = a
            .start(&spec("orphaned", "sleep 60 & sleep 60"))
            .await
            .unwrap();
        let pgid = info.pid.unwrap() as i32;
        assert!(
            eventually(Duration::from_secs(5), || proc::group_members(pgid).len()
                >= 2)
            .await
        );
        let members = proc::group_members(pgid);
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Only the leader dies; its background sleep stays in the group.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL).unwrap();
        assert!(eventually(Duration::from_secs(5), || !running(pgid)).await);
        assert!(!proc::group_members(pgid).is_empty());

        let b = ProcessDriver::with_config(dir.path(), fast_config()).unwrap();
        assert!(b.adopt().await.unwrap().is_empty());
        for pid in &members {
            assert!(!running(*pid), "pid {pid} survived");
        }
        assert!(!dir.path().join("run/orphaned.json").exists());
    })
    .await;
}

fn write_record(data: &Path, id: &str, pid: u32, pgid: i32, start_time: u64) -> PathBuf {
    let path = data.join("run").join(format!("{id}.json"));
    let record = PidRecord {
        info: InstanceInfo {
            id: id.into(),
            namespace: "default".into(),
            service: "hello".into(),
            version: "v1".into(),
            port: 1234,
            pid: Some(pid),
            started_at: 0,
        },
        pgid,
        start_time,
    };
    pidfile::write(&path, &record).unwrap();
    path
}

#[tokio::test]
async fn adopt_removes_dead_and_junk_pid_files() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = done.id();
        done.wait().unwrap();
        let dead = write_record(dir.path(), "dead", dead_pid, dead_pid as i32, 1);
        let junk = dir.path().join("run/junk.json");
        std::fs::write(&junk, "not json").unwrap();
        let tmp = dir.path().join("run/half.json.tmp");
        std::fs::write(&tmp, "{").unwrap();

        assert!(driver.adopt().await.unwrap().is_empty());
        for path in [dead, junk, tmp] {
            assert!(!path.exists(), "{} was left", path.display());
        }
    })
    .await;
}

#[tokio::test]
async fn adopt_never_signals_a_foreign_process() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();

        // Our own test process, with a wrong start time.
        let me = std::process::id();
        let my_start = proc::start_time(me as i32).unwrap();
        let mine = write_record(dir.path(), "me", me, me as i32, my_start + 1);

        // A live group leader that is not ours (wrong start time) must not be killed.
        let mut foreign = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let fpid = foreign.id();
        let fstart = proc::start_time(fpid as i32).unwrap();
        let theirs = write_record(dir.path(), "foreign", fpid, fpid as i32, fstart + 1);
        // pid and pgid disagree: unverifiable, removed without signalling anyone.
        let odd = write_record(dir.path(), "odd", fpid, me as i32, fstart);

        assert!(driver.adopt().await.unwrap().is_empty());
        assert!(!mine.exists() && !theirs.exists() && !odd.exists());
        assert!(running(fpid as i32), "a foreign process was killed");
        // Stopping by that id does not touch it either.
        write_record(dir.path(), "foreign", fpid, fpid as i32, fstart + 1);
        driver
            .stop("foreign", Duration::from_millis(100))
            .await
            .unwrap();
        assert!(running(fpid as i32), "a foreign process was killed by stop");

        foreign.kill().unwrap();
        foreign.wait().unwrap();
    })
    .await;
}

#[tokio::test]
async fn stop_kills_an_unadopted_leftover_by_pid_file() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let a = ProcessDriver::new(dir.path()).unwrap();
        let info = a.start(&spec("left", "sleep 60")).await.unwrap();
        drop(a);
        let b = ProcessDriver::new(dir.path()).unwrap();
        b.stop("left", Duration::from_millis(500)).await.unwrap();
        let pgid = info.pid.unwrap() as i32;
        assert!(eventually(Duration::from_secs(2), || !running(pgid)).await);
        assert!(!dir.path().join("run/left.json").exists());
    })
    .await;
}

#[tokio::test]
async fn rotates_logs_above_the_cap() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let cap = 500;
        let config = ProcessConfig {
            log_cap_bytes: cap,
            rotate_every: Duration::from_millis(100),
            ..ProcessConfig::default()
        };
        let driver = ProcessDriver::with_config(dir.path(), config).unwrap();
        driver
            .start(&spec(
                "chatty",
                "i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.005; done",
            ))
            .await
            .unwrap();
        let path = driver.log_path("chatty").unwrap();
        let rotated = crate::logs::rotated_path(&path);
        assert!(
            eventually(Duration::from_secs(10), || rotated.exists()
                && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0))
            .await,
            "never rotated"
        );
        // Let a few more rotations happen while it keeps writing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let current = std::fs::read(&path).unwrap();
        assert!(!current.contains(&0), "O_APPEND: no hole after truncation");
        assert!(
            (current.len() as u64) < cap * 4,
            "current log is {} bytes",
            current.len()
        );
        let lines = tail_lines(&path, 30);
        assert_eq!(lines.len(), 30);
        let numbers: Vec<u32> = lines
            .iter()
            .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        driver.stop("chatty", Duration::from_secs(1)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn rejects_bad_specs_and_duplicates() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path()).unwrap();
        type Mutate = fn(&mut InstanceSpec);
        let cases: &[(&str, Mutate)] = &[
            ("id", |s| s.id = "../escape".into()),         // path traversal
            ("id", |s| s.id = String::new()),              // empty
            ("id", |s| s.id = ".hidden".into()),           // dot file
            ("namespace", |s| s.namespace = "a/b".into()), // slash
            ("version", |s| s.version = "v 1".into()),     // space
            ("command", |s| s.command = "  ".into()),      // blank command
            ("port", |s| s.port = 0),                      // no port
        ];
        for (field, mutate) in cases {
            let mut s = spec("ok-id", "true");
            mutate(&mut s);
            match driver.start(&s).await {
                Err(DriverError::InvalidSpec { field: f, .. }) => assert_eq!(f, *field),
                other => panic!("{field}: {other:?}"),
            }
        }

        driver.start(&spec("dup", "sleep 60")).await.unwrap();
        assert!(matches!(
            driver.start(&spec("dup", "sleep 60")).await,
            Err(DriverError::AlreadyRunning(_))
        ));
        driver.stop("dup", Duration::from_secs(1)).await.unwrap();

        assert!(matches!(
            driver.wait("nope").await,
            Err(DriverError::UnknownInstance(id)) if id == "nope"
        ));
        assert!(driver.log_path("nope").is_none());
    })
    .await;
}

#[test]
fn new_needs_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        ProcessDriver::new(dir.path()),
        Err(DriverError::NoRuntime)
    ));
}

#[test]
fn plain_commands_replace_the_shell() {
    let cases = [
        ("app", "exec app"),
        (
            "  /usr/bin/app --port 8080 ",
            "exec /usr/bin/app --port 8080",
        ),
        (
            "'/path with space/app' -v",
            "exec '/path with space/app' -v",
        ),
        ("python3 -m http.server", "exec python3 -m http.server"),
        // Shell syntax, assignments and keywords run as written.
        ("a && b", "a && b"),
        ("app; other", "app; other"),
        ("app | tee out", "app | tee out"),
        ("app > log", "app > log"),
        ("echo $PORT", "echo $PORT"),
        ("FOO=1 app", "FOO=1 app"),
        ("cd dir", "cd dir"),
        ("exec app", "exec app"),
        (
            "while true; do sleep 1; done",
            "while true; do sleep 1; done",
        ),
        ("ls *.txt", "ls *.txt"),
        ("app\nother", "app\nother"),
        ("", ""),
    ];
    for (command, expected) in cases {
        assert_eq!(super::shell_script(command), expected, "{command:?}");
    }
}
