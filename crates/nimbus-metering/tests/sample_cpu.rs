//! Samples a real CPU-burning process group and checks the sampled CPU time against the kernel's
//! own account of the child (`getrusage(RUSAGE_CHILDREN)` after it is reaped), so the test does
//! not depend on how much CPU a busy machine gives the child.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nimbus_metering::sample::{parse_proc_cgroup_v2, read_cgroup_v2, ProcSnapshot};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Kills the child's process group however the test ends.
struct Burner(Child);

impl Drop for Burner {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn children_cpu_micros() -> Result<u64, nix::Error> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let micros = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

/// Blocks the test thread (there is no async runtime here).
#[allow(clippy::disallowed_methods)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn burning_process_group_is_sampled_within_20_percent() -> Result<(), Box<dyn std::error::Error>> {
    let before = children_cpu_micros()?;
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .process_group(0)
        .spawn()?;
    let burner = Burner(child);
    let pgid = i32::try_from(burner.0.id())?;

    // Burn until the sampler sees ~1.5 CPU-s, bounded in wall time for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sampled;
    loop {
        pause(Duration::from_millis(100));
        sampled = ProcSnapshot::read()?.process_group(pgid);
        if sampled.cpu_micros >= 1_500_000 || Instant::now() >= deadline {
            break;
        }
    }
    // The process tree of the leader is the same process.
    let tree = ProcSnapshot::read()?.process_tree(pgid);
    assert_eq!(tree.pids, vec![pgid]);
    assert!(tree.cpu_micros >= sampled.cpu_micros);

    // Freeze the group so the last sample and the kernel's final account see the same CPU.
    killpg(Pid::from_raw(pgid), Signal::SIGSTOP)?;
    pause(Duration::from_millis(50));
    let sampled = ProcSnapshot::read()?.process_group(pgid);
    assert_eq!(sampled.pids, vec![pgid], "the group is the one shell");
    assert!(sampled.rss_bytes > 0, "a live shell has resident memory");

    drop(burner); // SIGKILL and reap: its CPU time moves into our RUSAGE_CHILDREN
    let actual = children_cpu_micros()? - before;

    assert!(
        sampled.cpu_micros >= 300_000,
        "the child barely ran ({} µs in 10 s); the check below would mean little",
        sampled.cpu_micros
    );
    let (low, high) = (actual * 8 / 10, actual * 12 / 10);
    assert!(
        (low..=high).contains(&sampled.cpu_micros),
        "sampled {} µs, kernel says {actual} µs",
        sampled.cpu_micros
    );

    // The group is gone: an empty sample, not an error.
    assert!(ProcSnapshot::read()?.process_group(pgid).pids.is_empty());
    Ok(())
}

#[test]
fn own_cgroup_v2_is_readable_when_present() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let Some(path) = parse_proc_cgroup_v2(&text) else {
        eprintln!("no cgroup v2 here; skipping");
        return Ok(());
    };
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    if !dir.join("cpu.stat").exists() || !dir.join("memory.current").exists() {
        eprintln!("cgroup v2 files not visible at {}; skipping", dir.display());
        return Ok(());
    }
    let sample = read_cgroup_v2(&dir)?;
    assert!(sample.cpu_micros > 0, "this test process has used CPU");
    assert!(sample.memory_bytes > 0, "this test process uses memory");
    Ok(())
}
