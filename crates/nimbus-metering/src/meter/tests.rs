use super::*;

const MIB: u64 = 1 << 20;

fn key(version: &str) -> UsageKey {
    UsageKey::new("default", "web", version)
}

/// A sample of instance `i1` of version `v1`, 256 MiB configured.
fn sample(incarnation: &str, at_ms: u64, cpu_micros: u64, rss_mib: u64) -> Sample {
    Sample {
        instance: "i1".into(),
        key: key("v1"),
        incarnation: incarnation.into(),
        at_ms,
        cpu_micros,
        rss_bytes: rss_mib * MIB,
        memory_limit_mib: 256,
    }
}

fn rows_total(rows: &[Rollup]) -> Usage {
    rows.iter().map(|r| r.usage).sum()
}

#[test]
fn interval_usage_cases() {
    let base = sample("p1", 10_000, 5_000_000, 100);
    /// (cpu µs, allocated MiB·ms, used MiB·ms, instance ms)
    type Deltas = Option<(u64, u64, u64, u64)>;
    let cases: &[(&str, Sample, Deltas)] = &[
        // (what, next sample, Some((cpu µs, allocated MiB·ms, used MiB·ms, instance ms)))
        (
            "steady",
            sample("p1", 15_000, 6_000_000, 100),
            Some((1_000_000, 256 * 5_000, 100 * 5_000, 5_000)),
        ),
        (
            "rss ramp: trapezoid",
            sample("p1", 15_000, 5_000_000, 200),
            Some((0, 256 * 5_000, 150 * 5_000, 5_000)),
        ),
        (
            "counter went down: 0, never negative",
            sample("p1", 15_000, 4_000_000, 100),
            Some((0, 256 * 5_000, 100 * 5_000, 5_000)),
        ),
        (
            "clock stepped back: empty interval",
            sample("p1", 9_000, 5_500_000, 100),
            Some((500_000, 0, 0, 0)),
        ),
        ("new incarnation", sample("p2", 15_000, 10, 100), None),
        (
            "other key",
            Sample {
                key: key("v2"),
                ..sample("p1", 15_000, 6_000_000, 100)
            },
            None,
        ),
        (
            "other instance",
            Sample {
                instance: "i2".into(),
                ..sample("p1", 15_000, 6_000_000, 100)
            },
            None,
        ),
    ];
    for (what, next, expected) in cases {
        let got = interval_usage(&base, next).map(|u| {
            (
                u.cpu_micros,
                u.memory_allocated_mib_ms,
                u.memory_used_mib_ms,
                u.instance_ms,
            )
        });
        assert_eq!(got, *expected, "{what}");
    }
}

#[test]
fn samples_become_minute_rows() {
    let mut meter = Meter::new();
    // Minute 0: first sample counts the CPU used before it, then one 30 s interval.
    meter.record(sample("p1", 10_000, 2_000_000, 100));
    meter.record(sample("p1", 40_000, 5_000_000, 100));
    // Minute 1: an interval that started in minute 0 lands in minute 1, its end.
    meter.record(sample("p1", 70_000, 6_000_000, 100));

    let flush = meter.flush(65_000); // in minute 1: closes minute 0, minute 1 stays open
    assert_eq!(flush.next_minute, 1);
    let interval = |cpu_micros, ms| Usage {
        cpu_micros,
        memory_allocated_mib_ms: 256 * ms,
        memory_used_mib_ms: 100 * ms,
        instance_ms: ms,
        ..Usage::default()
    };
    assert_eq!(
        flush.rows,
        vec![
            Rollup {
                key: key("v1"),
                minute: 0,
                usage: interval(5_000_000, 30_000),
            },
            Rollup {
                key: key("v1"),
                minute: 1,
                usage: interval(1_000_000, 30_000),
            },
        ]
    );
    // The baseline is the latest sample: the rows include everything up to it.
    assert_eq!(flush.baselines, vec![sample("p1", 70_000, 6_000_000, 100)]);
    assert_eq!(meter.open_usage().len(), 1);

    // Nothing changed: an empty checkpoint, also after minute 1 closes.
    assert_eq!(
        meter.flush(66_000),
        Flush {
            next_minute: 1,
            ..Flush::default()
        }
    );
    assert_eq!(
        meter.flush(120_000),
        Flush {
            next_minute: 2,
            ..Flush::default()
        }
    );
    assert!(meter.open_usage().is_empty());

    // The next sample lands in minute 2 and is a delta from the last one.
    meter.record(sample("p1", 125_000, 6_500_000, 100));
    let flush = meter.flush(125_001);
    assert_eq!(flush.rows.len(), 1);
    assert_eq!(flush.rows[0].minute, 2);
    assert_eq!(flush.rows[0].usage, interval(500_000, 55_000));
}

#[test]
fn open_minutes_are_rewritten_with_growing_totals() {
    let mut meter = Meter::new();
    meter.add_requests(&key("v1"), 1_000, 1, 10, 1);
    let first = meter.flush(2_000);
    meter.add_requests(&key("v1"), 3_000, 2, 20, 2);
    let second = meter.flush(4_000);
    let requests = |f: &Flush| {
        f.rows
            .iter()
            .map(|r| (r.minute, r.usage.requests))
            .collect::<Vec<_>>()
    };
    // Each checkpoint carries the minute's total so far, to replace the stored row.
    assert_eq!(requests(&first), vec![(0, 1)]);
    assert_eq!(requests(&second), vec![(0, 3)]);
}

#[test]
fn counter_resets_never_go_negative_or_double_count() {
    // (incarnation, CPU counter µs) in time order, 10 s apart; and the CPU that must be billed.
    type Readings = &'static [(&'static str, u64)];
    let cases: &[(&str, Readings, u64)] = &[
        ("steady", &[("p1", 1), ("p1", 5), ("p1", 9)], 9),
        // The process was replaced: the new one's counter starts near 0 and all of it is new.
        (
            "restart",
            &[("p1", 1), ("p1", 9), ("p2", 2), ("p2", 7)],
            9 + 7,
        ),
        // Same process, counter dropped (a member exited unreaped): no negative, no re-count.
        ("drop", &[("p1", 1), ("p1", 9), ("p1", 4), ("p1", 6)], 9 + 2),
        // Back to an old pid with a lower counter: a new incarnation, counted from 0.
        ("aba", &[("p1", 5), ("p2", 3), ("p1", 1)], 5 + 3 + 1),
        ("single", &[("p1", 42)], 42),
    ];
    for (what, readings, expected) in cases {
        let mut meter = Meter::new();
        for (i, (incarnation, cpu)) in readings.iter().enumerate() {
            meter.record(sample(incarnation, i as u64 * 10_000, *cpu, 1));
        }
        let flush = meter.flush(u64::MAX);
        assert_eq!(rows_total(&flush.rows).cpu_micros, *expected, "{what}");
    }
}

#[test]
fn gateway_builds_and_functions() {
    let mut meter = Meter::new();
    meter.add_requests(&key("v1"), 1_000, 3, 300, 30);
    meter.add_requests(&key("v1"), 59_999, 1, 100, 10);
    meter.add_requests(&key("v2"), 60_000, 2, 20, 2);
    meter.add_requests(&key("v2"), 61_000, 0, 0, 0); // nothing: no row
    meter.add_build(&key("v1"), 2_000, Duration::from_millis(95_500));
    meter.add_function(&key("v2"), 62_000, Duration::from_micros(10_001), 128);

    let flush = meter.flush(180_000);
    let expected = vec![
        Rollup {
            key: key("v1"),
            minute: 0,
            usage: Usage {
                requests: 4,
                egress_bytes: 400,
                ingress_bytes: 40,
                build_ms: 95_500,
                ..Usage::default()
            },
        },
        Rollup {
            key: key("v2"),
            minute: 1,
            usage: Usage {
                requests: 3, // 2 through the gateway, 1 invocation
                egress_bytes: 20,
                ingress_bytes: 2,
                function_mib_ms: 11 * 128, // 10.001 ms → 11 ms
                ..Usage::default()
            },
        },
    ];
    assert_eq!(flush.rows, expected);
    assert!(flush.baselines.is_empty());
}

#[test]
fn late_contributions_move_to_the_first_open_minute() {
    let mut meter = Meter::new();
    meter.add_requests(&key("v1"), 5_000, 1, 0, 0);
    let first = meter.flush(130_000); // closes minutes 0 and 1
    assert_eq!(first.rows.len(), 1);
    // A call stamped in the closed minute 0 arrives late: it goes to minute 2, not minute 0.
    meter.add_requests(&key("v1"), 5_000, 7, 0, 0);
    meter.record(sample("p1", 10_000, 1_000, 1));
    let second = meter.flush(200_000);
    let minutes: Vec<u64> = second.rows.iter().map(|r| r.minute).collect();
    assert_eq!(minutes, vec![2]);
    assert_eq!(second.rows[0].usage.requests, 7);
    assert_eq!(second.rows[0].usage.cpu_micros, 1_000);
}

#[test]
fn idle_means_no_rows() {
    let mut meter = Meter::new();
    let flush = meter.flush(10 * MINUTE_MS);
    assert_eq!(
        flush,
        Flush {
            next_minute: 10,
            ..Flush::default()
        }
    );
    assert!(meter.open_usage().is_empty());
}

#[test]
fn forget_drops_state_and_reports_it_once() {
    let mut meter = Meter::new();
    meter.record(sample("p1", 1_000, 500, 1));
    meter.forget("i1");
    meter.forget("never-seen");
    assert!(meter.tracked_instances().is_empty());
    // Its usage so far still counts.
    assert_eq!(
        meter.open_usage().get(&key("v1")).map(|u| u.cpu_micros),
        Some(500)
    );
    let flush = meter.flush(60_000);
    assert_eq!(flush.forgotten, vec!["i1".to_string()]);
    assert_eq!(rows_total(&flush.rows).cpu_micros, 500);
    assert!(flush.baselines.is_empty());
    assert!(meter.flush(120_000).forgotten.is_empty());
    // Seen again: a fresh start.
    meter.record(sample("p1", 130_000, 800, 1));
    assert_eq!(rows_total(&meter.flush(180_000).rows).cpu_micros, 800);
}

/// What the store keeps: rows replaced by (key, minute), the latest baseline per instance, and
/// the first open minute.
#[derive(Default)]
struct FakeStore {
    rows: BTreeMap<(UsageKey, u64), Usage>,
    baselines: BTreeMap<String, Sample>,
    next_minute: u64,
}

impl FakeStore {
    fn commit(&mut self, flush: Flush) {
        for instance in &flush.forgotten {
            self.baselines.remove(instance);
        }
        for b in flush.baselines {
            self.baselines.insert(b.instance.clone(), b);
        }
        for row in flush.rows {
            self.rows.insert((row.key, row.minute), row.usage);
        }
        self.next_minute = flush.next_minute;
    }

    fn load_state(&self) -> MeterState {
        MeterState {
            next_minute: self.next_minute,
            baselines: self.baselines.values().cloned().collect(),
            open_rows: self
                .rows
                .iter()
                .filter(|((_, minute), _)| *minute >= self.next_minute)
                .map(|((key, minute), usage)| Rollup {
                    key: key.clone(),
                    minute: *minute,
                    usage: *usage,
                })
                .collect(),
        }
    }

    fn total(&self) -> Usage {
        self.rows.values().copied().sum()
    }
}

/// Runs readings every 10 s (plus one request each) through a meter that "crashes" (is dropped
/// without flushing) just before reading `crash_at` and resumes from the store; flushes after
/// every `flush_every`th reading. Returns the store's total.
fn run_with_crash(readings: &[u64], crash_at: usize, flush_every: usize) -> Usage {
    let mut store = FakeStore::default();
    let mut meter = Meter::new();
    for (i, cpu) in readings.iter().enumerate() {
        let at_ms = 5_000 + i as u64 * 10_000;
        if i == crash_at {
            meter = Meter::resume(store.load_state());
        }
        meter.record(sample("p1", at_ms, *cpu, 64));
        meter.add_requests(&key("v1"), at_ms, 1, 100, 10);
        if i % flush_every == flush_every - 1 {
            store.commit(meter.flush(at_ms + 1));
        }
    }
    store.commit(meter.flush(u64::MAX));
    store.total()
}

#[test]
fn restart_neither_double_counts_nor_leaves_a_gap() {
    // A process burning 1 CPU-s every 10 s for 6 minutes, sampled every 10 s.
    let readings: Vec<u64> = (1..=36).map(|i| i * 1_000_000).collect();
    let uninterrupted = run_with_crash(&readings, usize::MAX, 6);
    assert_eq!(uninterrupted.cpu_micros, 36_000_000);
    assert_eq!(uninterrupted.instance_ms, 35 * 10_000);
    assert_eq!(uninterrupted.requests, 36);
    for crash_at in [1, 5, 6, 7, 13, 20, 35] {
        for flush_every in [1, 3, 6, 50] {
            let total = run_with_crash(&readings, crash_at, flush_every);
            let what = format!("crash before reading {crash_at}, flush every {flush_every}");
            // Never counted twice; the CPU counter always survives.
            assert_eq!(total.cpu_micros, uninterrupted.cpu_micros, "{what}");
            // Requests since the last flush are lost, nothing else.
            let flushed_before_crash = crash_at / flush_every * flush_every;
            let lost = (crash_at - flushed_before_crash) as u64;
            assert_eq!(total.requests, uninterrupted.requests - lost, "{what}");
            if flushed_before_crash > 0 {
                // A baseline was persisted: running time and memory continue with no gap.
                assert_eq!(total.instance_ms, uninterrupted.instance_ms, "{what}");
                assert_eq!(
                    total.memory_used_mib_ms, uninterrupted.memory_used_mib_ms,
                    "{what}"
                );
            } else {
                // Nothing was ever persisted: the intervals up to the first reading after the
                // crash are not metered (that reading has nothing to diff against).
                let gap = crash_at as u64 * 10_000;
                assert_eq!(total.instance_ms, uninterrupted.instance_ms - gap, "{what}");
            }
        }
    }
}

#[test]
fn resume_continues_from_the_baseline_and_open_minutes() {
    let open_row = Rollup {
        key: key("v1"),
        minute: 2,
        usage: Usage {
            requests: 5,
            ..Usage::default()
        },
    };
    let closed_row = Rollup {
        minute: 1,
        ..open_row.clone()
    };
    let mut meter = Meter::resume(MeterState {
        next_minute: 2,
        baselines: vec![sample("p1", 130_000, 7_000_000, 64)],
        open_rows: vec![closed_row, open_row],
    });
    assert_eq!(meter.tracked_instances(), vec!["i1".to_string()]);
    assert_eq!(meter.next_minute(), 2);
    // Same process, 40 s later: only the increase, and the whole 40 s of running time, added
    // to the restored open minute.
    meter.record(sample("p1", 170_000, 9_000_000, 64));
    let flush = meter.flush(180_000);
    assert_eq!(flush.rows.len(), 1);
    assert_eq!(flush.rows[0].minute, 2);
    let usage = flush.rows[0].usage;
    assert_eq!(usage.requests, 5);
    assert_eq!(usage.cpu_micros, 2_000_000);
    assert_eq!(usage.instance_ms, 40_000);
    assert_eq!(usage.memory_used_mib_ms, 64 * 40_000);
}
