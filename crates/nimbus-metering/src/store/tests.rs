use std::time::Duration;

use super::*;
use crate::Meter;

fn key(service: &str, version: &str) -> UsageKey {
    UsageKey::new("default", service, version)
}

fn sample(at_ms: u64, cpu_micros: u64) -> Sample {
    Sample {
        instance: "i1".into(),
        key: key("web", "v1"),
        incarnation: "100@5000".into(),
        at_ms,
        cpu_micros,
        rss_bytes: 64 << 20,
        memory_limit_mib: 128,
    }
}

fn usage(requests: u64) -> Usage {
    Usage {
        requests,
        egress_bytes: requests * 10,
        ..Usage::default()
    }
}

fn row(service: &str, version: &str, minute: u64, requests: u64) -> Rollup {
    Rollup {
        key: key(service, version),
        minute,
        usage: usage(requests),
    }
}

fn everything() -> UsageFilter {
    UsageFilter::default()
}

#[test]
fn commit_is_idempotent() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = UsageStore::open(&dir.path().join("nimbus.db"))?;
    let flush = Flush {
        next_minute: 3,
        rows: vec![row("web", "v1", 2, 5), row("web", "v1", 3, 1)],
        baselines: vec![sample(190_000, 1_000)],
        forgotten: vec![],
    };
    store.commit(&flush)?;
    store.commit(&flush)?; // a retry after an unclear error
    assert_eq!(store.usage_total(&everything())?, usage(6));

    // A later checkpoint replaces the open minute's row with its new total.
    store.commit(&Flush {
        next_minute: 3,
        rows: vec![row("web", "v1", 3, 4)],
        ..Flush::default()
    })?;
    assert_eq!(store.usage_total(&everything())?, usage(9));

    let state = store.load_state()?;
    assert_eq!(state.next_minute, 3);
    assert_eq!(state.baselines, vec![sample(190_000, 1_000)]);
    assert_eq!(state.open_rows, vec![row("web", "v1", 3, 4)]); // minute 2 is closed

    // The first open minute never moves back.
    store.commit(&Flush {
        next_minute: 1,
        ..Flush::default()
    })?;
    assert_eq!(store.load_state()?.next_minute, 3);

    // Forgetting deletes the baseline.
    store.commit(&Flush {
        next_minute: 3,
        forgotten: vec!["i1".into()],
        ..Flush::default()
    })?;
    assert!(store.load_state()?.baselines.is_empty());
    Ok(())
}

#[test]
fn restart_continues_without_double_counting() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nimbus.db");
    let web = key("web", "v1");

    // First run: samples every 10 s from t = 5 s, one request each, a checkpoint after each.
    {
        let store = UsageStore::open(&path)?;
        let mut meter = Meter::resume(store.load_state()?);
        for i in 0..9u64 {
            let at_ms = 5_000 + i * 10_000;
            meter.record(sample(at_ms, (i + 1) * 1_000_000));
            meter.add_requests(&web, at_ms, 1, 100, 10);
            store.commit(&meter.flush(at_ms + 1))?;
        }
        // Uncommitted work at the crash: lost with the process (requests only; the CPU
        // counter keeps it).
        meter.record(sample(95_000, 10_000_000));
        meter.add_requests(&web, 95_000, 1, 100, 10);
    } // crash: no final flush

    // Second run: reopen, resume, continue sampling the same process.
    let store = UsageStore::open(&path)?;
    let mut meter = Meter::resume(store.load_state()?);
    assert_eq!(meter.tracked_instances(), vec!["i1".to_string()]);
    for i in 10..18u64 {
        let at_ms = 5_000 + i * 10_000;
        meter.record(sample(at_ms, (i + 1) * 1_000_000));
        meter.add_requests(&web, at_ms, 1, 100, 10);
        store.commit(&meter.flush(at_ms + 1))?;
    }
    store.commit(&meter.flush(10 * 60_000))?;

    let total = store.usage_total(&everything())?;
    assert_eq!(
        total.cpu_micros, 18_000_000,
        "the counter's final value, counted once"
    );
    assert_eq!(
        total.instance_ms,
        17 * 10_000,
        "first to last sample, no gap"
    );
    assert_eq!(total.memory_allocated_mib_ms, 128 * 17 * 10_000);
    assert_eq!(total.memory_used_mib_ms, 64 * 17 * 10_000);
    assert_eq!(total.requests, 17, "only the uncommitted request was lost");

    // Per-minute rows: the 18 samples span minutes 0–2.
    let minutes: Vec<u64> = store
        .load_state()?
        .open_rows
        .iter()
        .map(|r| r.minute)
        .collect();
    assert!(
        minutes.is_empty(),
        "all minutes closed by the final flush: {minutes:?}"
    );
    Ok(())
}

#[test]
fn usage_by_service_version_and_day() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = UsageStore::open(&dir.path().join("nimbus.db"))?;
    let day = MINUTES_PER_DAY;
    let mut other_ns = row("web", "v1", 5, 1000);
    other_ns.key.namespace = "team".into();
    store.commit(&Flush {
        next_minute: 0,
        rows: vec![
            row("web", "v1", 5, 1),
            row("web", "v1", day - 1, 2), // last minute of day 0
            row("web", "v2", day, 4),     // first minute of day 1
            row("api", "v1", 10, 8),
            row("api", "v1", 2 * day + 3, 16),
            other_ns,
        ],
        ..Flush::default()
    })?;

    let requests = |groups: Vec<UsageGroup>| -> Vec<(String, u64)> {
        groups
            .into_iter()
            .map(|g| {
                let name = [g.namespace, g.service, g.version, g.day]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("/");
                (name, g.usage.requests)
            })
            .collect()
    };
    let default_ns = UsageFilter {
        namespace: Some("default".into()),
        ..UsageFilter::default()
    };
    type Groups = Vec<(&'static str, u64)>;
    let cases: Vec<(UsageFilter, GroupBy, Groups)> = vec![
        (
            default_ns.clone(),
            GroupBy::Service,
            vec![("default/api", 24), ("default/web", 7)],
        ),
        (
            default_ns.clone(),
            GroupBy::Version,
            vec![
                ("default/api/v1", 24),
                ("default/web/v1", 3),
                ("default/web/v2", 4),
            ],
        ),
        (
            default_ns.clone(),
            GroupBy::Day,
            vec![("1970-01-01", 11), ("1970-01-02", 4), ("1970-01-03", 16)],
        ),
        (
            everything(),
            GroupBy::Service,
            vec![("default/api", 24), ("default/web", 7), ("team/web", 1000)],
        ),
        // --service web --since minute 6: the row at minute 5 is out.
        (
            UsageFilter {
                service: Some("web".into()),
                from_minute: 6,
                ..default_ns.clone()
            },
            GroupBy::Version,
            vec![("default/web/v1", 2), ("default/web/v2", 4)],
        ),
        // A window [day, 2 day): only day 1.
        (
            UsageFilter {
                from_minute: day,
                until_minute: Some(2 * day),
                ..default_ns.clone()
            },
            GroupBy::Day,
            vec![("1970-01-02", 4)],
        ),
        (
            UsageFilter {
                version: Some("v9".into()),
                ..default_ns.clone()
            },
            GroupBy::Service,
            vec![],
        ),
    ];
    for (filter, group_by, expected) in cases {
        let expected: Vec<(String, u64)> = expected
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect();
        assert_eq!(
            requests(store.usage_by(&filter, group_by)?),
            expected,
            "{filter:?} by {group_by:?}"
        );
    }

    // JSON carries only the grouping's fields.
    let json = serde_json::to_value(store.usage_by(&default_ns, GroupBy::Day)?)?;
    assert_eq!(json[0]["day"], "1970-01-01");
    assert!(json[0].get("service").is_none());

    assert_eq!(store.prune_before(day)?, 4); // day 0, both namespaces
    assert_eq!(store.usage_total(&default_ns)?.requests, 20);
    Ok(())
}

#[test]
fn shares_the_server_database_file() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nimbus.db");
    // Another user of the file with its own tables and migrations counter.
    {
        let conn = Connection::open(&path)?;
        conn.execute_batch("CREATE TABLE services (name TEXT); PRAGMA user_version = 7;")?;
    }
    let store = UsageStore::open(&path)?;
    let mut meter = Meter::new();
    meter.add_function(&key("fn", "v1"), 0, Duration::from_millis(100), 128);
    store.commit(&meter.flush(60_000))?;
    drop(store);
    let store = UsageStore::open(&path)?; // reopening keeps the rows
    assert_eq!(store.usage_total(&everything())?.function_mib_ms, 12_800);

    let conn = Connection::open(&path)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(
        version, 7,
        "the server store's migrations counter is untouched"
    );
    Ok(())
}

#[test]
fn huge_values_clamp_instead_of_failing() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = UsageStore::open(&dir.path().join("nimbus.db"))?;
    let huge = Rollup {
        key: key("web", "v1"),
        minute: 1,
        usage: Usage {
            egress_bytes: u64::MAX,
            ..Usage::default()
        },
    };
    store.commit(&Flush {
        next_minute: 0,
        rows: vec![huge],
        ..Flush::default()
    })?;
    assert_eq!(
        store.usage_total(&everything())?.egress_bytes,
        i64::MAX.unsigned_abs()
    );
    Ok(())
}
