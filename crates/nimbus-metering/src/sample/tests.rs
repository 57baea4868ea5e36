use super::*;

/// A stat line for `pid` with the fields metering reads; the rest are zeros.
fn stat_line(pid: i32, comm: &str, state: char, ppid: i32, pgrp: i32, times: [u64; 4]) -> String {
    with_rss(pid, comm, state, ppid, pgrp, times, 100)
}

/// [`stat_line`] with `rss` resident pages.
fn with_rss(
    pid: i32,
    comm: &str,
    state: char,
    ppid: i32,
    pgrp: i32,
    times: [u64; 4],
    rss: u64,
) -> String {
    let [utime, stime, cutime, cstime] = times;
    format!(
        "{pid} ({comm}) {state} {ppid} {pgrp} {pgrp} 0 -1 4194304 100 0 0 0 \
         {utime} {stime} {cutime} {cstime} 20 0 1 0 98765 1000 {rss} 18446744073709551615"
    )
}

fn stat(pid: i32, state: char, ppid: i32, pgrp: i32, ticks: u64) -> ProcStat {
    ProcStat {
        pid,
        state,
        ppid,
        pgrp,
        utime: ticks,
        stime: 0,
        cutime: 0,
        cstime: 0,
        start_time: 1,
        rss_pages: 0,
    }
}

#[test]
fn parse_stat_fields() {
    let real = "4242 (sh) R 4000 4242 4000 34816 4242 4194304 119 0 0 0 \
                150 7 3 2 20 0 1 0 123456 2600960 220 18446744073709551615 1 1 0 0 0 0";
    type Fields = (i32, char, i32, i32, u64, u64, u64);
    let cases: &[(String, Option<Fields>)] = &[
        // (text, Some((pid, state, ppid, pgrp, cpu ticks, start time, resident pages)))
        (
            real.to_string(),
            Some((4242, 'R', 4000, 4242, 162, 123456, 220)),
        ),
        (
            stat_line(7, "my (odd) app", 'S', 1, 7, [1, 2, 3, 4]),
            Some((7, 'S', 1, 7, 10, 98765, 100)),
        ), // parentheses and spaces in the name
        (
            stat_line(9, ")", 'Z', 1, 9, [0, 0, 0, 0]),
            Some((9, 'Z', 1, 9, 0, 98765, 100)),
        ), // a name that is just `)`
        (
            stat_line(9, "x", 'S', 1, 9, [5, 0, 0, 0]).replace(" 0 0 20", " -1 0 20"),
            Some((9, 'S', 1, 9, 5, 98765, 100)),
        ), // a negative cutime counts as 0
        (String::new(), None),                               // empty
        ("12 (sh) S 1 12 12 0 -1 0".into(), None),           // truncated before field 14
        ("12 sh S 1 12 12 0 -1 0 0 0 0 0 1 1".into(), None), // no parentheses
        (real.replace("150", "x"), None),                    // utime not a number
        (real.replace(" 220 ", " x "), None),                // rss not a number
        (
            real.replace(" 220 18446744073709551615 1 1 0 0 0 0", ""),
            None,
        ), // truncated before rss
    ];
    for (text, expected) in cases {
        let got = parse_stat(text).map(|s| {
            (
                s.pid,
                s.state,
                s.ppid,
                s.pgrp,
                s.cpu_ticks(),
                s.start_time,
                s.rss_pages,
            )
        });
        assert_eq!(got, *expected, "{text:?}");
    }
}

#[test]
fn parse_small_files() {
    let cpu_stat: &[(&str, Option<u64>)] = &[
        (
            "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n\
             nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
            Some(1_500_000),
        ),
        ("user_usec 5\nusage_usec 7\n", Some(7)), // not necessarily first
        ("usage_usec_total 5\n", None),           // a longer key is not the key
        ("usage_usec x\n", None),
        ("", None),
    ];
    for (text, expected) in cpu_stat {
        assert_eq!(
            parse_cpu_stat_usage_usec(text),
            *expected,
            "cpu.stat {text:?}"
        );
    }

    let memory: &[(&str, Option<u64>)] = &[
        ("104857600\n", Some(104_857_600)),
        ("0", Some(0)),
        ("max\n", None),
        ("", None),
    ];
    for (text, expected) in memory {
        assert_eq!(
            parse_memory_current(text),
            *expected,
            "memory.current {text:?}"
        );
    }

    let cgroup: &[(&str, Option<&str>)] = &[
        (
            "0::/system.slice/nimbus.service\n",
            Some("/system.slice/nimbus.service"),
        ),
        ("12:memory:/docker/abc\n0::/\n", Some("/")), // hybrid v1 + v2
        ("12:memory:/docker/abc\n", None),            // v1 only
        ("", None),
    ];
    for (text, expected) in cgroup {
        assert_eq!(parse_proc_cgroup_v2(text), *expected, "cgroup {text:?}");
    }

    let smaps_rollup: &[(&str, Option<u64>)] = &[
        (
            "55d0c0a00000-7ffd1b5fe000 ---p 00000000 00:00 0  [rollup]\n\
             Rss:                3968 kB\nPss:                1234 kB\nPss_Anon:  800 kB\n",
            Some(1234 * 1024),
        ),
        ("Pss_Anon: 800 kB\nPss: 0 kB\n", Some(0)), // a longer key is not the key
        ("Pss: 12 pages\n", None),
        ("Rss: 3968 kB\n", None),
        ("", None),
    ];
    for (text, expected) in smaps_rollup {
        assert_eq!(
            parse_smaps_rollup_pss(text),
            *expected,
            "smaps_rollup {text:?}"
        );
    }

    let status: &[(&str, Option<u64>)] = &[
        (
            "Name:\tpython3\nVmPeak:\t  30000 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 9000 kB\n",
            Some(20480 * 1024),
        ),
        ("Name:\tkworker/0:1\nState:\tI (idle)\n", None), // a kernel thread has none
        ("VmRSS:\t1 MB\n", None),
        ("", None),
    ];
    for (text, expected) in status {
        assert_eq!(parse_status_vm_rss(text), *expected, "status {text:?}");
    }
}

#[test]
fn group_and_tree_members() {
    let stats = &[
        stat(1, 'S', 0, 1, 0),
        stat(100, 'S', 1, 100, 0),   // leader of group 100
        stat(101, 'R', 100, 100, 0), // its child
        stat(102, 'Z', 100, 100, 0), // a zombie child: not counted
        stat(103, 'S', 101, 100, 0), // grandchild
        stat(104, 'S', 101, 200, 0), // grandchild that moved to its own group
        stat(90, 'S', 104, 200, 0),  // great-grandchild with a lower pid (wrap-around)
        stat(300, 'S', 1, 300, 0),   // unrelated
    ];
    let cases: &[(&str, i32, Vec<i32>)] = &[
        ("group", 100, vec![100, 101, 103]),
        ("group", 200, vec![104, 90]),
        ("group", 999, vec![]),
        ("tree", 100, vec![90, 100, 101, 103, 104]),
        ("tree", 104, vec![90, 104]),
        ("tree", 102, vec![]), // a zombie root is gone
        ("tree", 999, vec![]),
    ];
    for (kind, id, expected) in cases {
        let got = match *kind {
            "group" => group_members(stats, *id),
            _ => tree_members(stats, *id),
        };
        assert_eq!(got, *expected, "{kind} {id}");
    }
}

#[test]
fn ticks_become_micros() {
    let cases = &[
        (0, 100, 0),
        (1, 100, 10_000),
        (150, 100, 1_500_000),
        (3, 250, 12_000),
        (5, 0, 5_000_000), // a bogus rate of 0 is treated as 1
        (u64::MAX, 1, u64::MAX),
    ];
    for (ticks, rate, micros) in cases {
        assert_eq!(
            ticks_to_micros(*ticks, *rate),
            *micros,
            "{ticks} at {rate}/s"
        );
    }
}

#[test]
fn snapshot_of_a_fake_proc_tree() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let procs = [
        with_rss(10, "sh", 'S', 1, 10, [100, 0, 50, 0], 3),
        with_rss(11, "app", 'R', 10, 10, [0, 200, 0, 0], 5),
        with_rss(12, "worker", 'R', 11, 10, [1, 0, 0, 0], 2),
        // A zombie member: its time is in its parent's once reaped; it counts for nothing.
        with_rss(13, "done", 'Z', 10, 10, [40, 0, 0, 0], 0),
        with_rss(20, "other", 'R', 1, 20, [999, 0, 0, 0], 7),
    ];
    for stat_text in &procs {
        let pid = stat_text.split(' ').next().unwrap_or_default();
        let p = dir.path().join(pid);
        std::fs::create_dir(&p)?;
        std::fs::write(p.join("stat"), stat_text)?;
    }
    std::fs::create_dir(dir.path().join("self"))?; // not a pid: ignored
    std::fs::create_dir(dir.path().join("30"))?; // no stat file: ignored

    let snapshot = ProcSnapshot::read_at(dir.path())?;
    assert_eq!(snapshot.stats().len(), 5);
    let ticks = snapshot.ticks_per_second;
    let page = snapshot.page_size;

    let group = snapshot.process_group(10);
    let mut pids = group.pids.clone();
    pids.sort_unstable();
    assert_eq!(pids, vec![10, 11, 12]);
    assert_eq!(group.cpu_micros, ticks_to_micros(351, ticks));
    assert_eq!(group.rss_bytes, 10 * page);

    let tree = snapshot.process_tree(11);
    assert_eq!(tree.pids, vec![11, 12]);
    assert_eq!(tree.cpu_micros, ticks_to_micros(201, ticks));
    assert_eq!(tree.rss_bytes, 7 * page);
    assert_eq!(snapshot.process_group(42), ProcessSample::default());

    // With each member's share of the pages they have in common, several members count that
    // instead of their RSS; a lone process stays at its RSS.
    let pss_kib = [(10, 2), (11, 3), (12, 1), (20, 1)];
    for (pid, kib) in pss_kib {
        let rollup = format!("Rss: 999 kB\nPss: {kib} kB\n");
        std::fs::write(
            dir.path().join(pid.to_string()).join("smaps_rollup"),
            rollup,
        )?;
    }
    let snapshot = ProcSnapshot::read_at(dir.path())?;
    assert_eq!(snapshot.process_group(10).rss_bytes, 6 * 1024);
    assert_eq!(snapshot.process_tree(11).rss_bytes, 4 * 1024);
    assert_eq!(snapshot.process_group(20).rss_bytes, 7 * page);
    // One member unreadable: the RSS sum, not a partial PSS one.
    std::fs::remove_file(dir.path().join("12/smaps_rollup"))?;
    assert_eq!(snapshot.process_group(10).rss_bytes, 10 * page);
    Ok(())
}

#[test]
fn cgroup_v2_files() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    assert!(matches!(
        read_cgroup_v2(dir.path()),
        Err(SampleError::Io { .. })
    ));
    std::fs::write(
        dir.path().join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\n",
    )?;
    std::fs::write(dir.path().join("memory.current"), "4096\n")?;
    assert_eq!(
        read_cgroup_v2(dir.path())?,
        CgroupSample {
            cpu_micros: 2_500,
            memory_bytes: 4_096,
        }
    );
    std::fs::write(dir.path().join("memory.current"), "lots\n")?;
    let err = read_cgroup_v2(dir.path())
        .map(|_| ())
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("memory.current: not a byte count")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_live_process_has_a_resident_size_and_a_gone_one_none() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = child.id();
    assert!(resident_bytes(pid).is_some_and(|bytes| bytes > 0));
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert_eq!(resident_bytes(pid), None);
}

#[test]
fn this_kernels_smaps_rollup_gives_a_pss() {
    let text =
        std::fs::read_to_string("/proc/self/smaps_rollup").expect("smaps_rollup (Linux 4.14+)");
    assert!(
        parse_smaps_rollup_pss(&text).is_some_and(|bytes| bytes > 0),
        "{text}"
    );
}
