use chrono::{FixedOffset, TimeZone, Utc};

use super::*;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("a valid UTC time")
}

fn sched(id: i64, cron: &str, min: u32, duration_secs: Option<u64>) -> Schedule {
    Schedule {
        id,
        cron: cron.into(),
        min,
        max: None,
        version: None,
        duration_secs,
    }
}

const HOUR: u64 = 3600;

/// (schedules, version, now, lookback in days, expected (id, started_at)); times "MM-DD hh:mm:ss"
/// in 2025, UTC.
type Row<'a> = (
    Vec<&'a Schedule>,
    &'static str,
    &'static str,
    u64,
    Option<(i64, &'static str)>,
);

/// "03-03 09:00:00" → 2025-03-03T09:00:00Z.
fn t(s: &str) -> DateTime<Utc> {
    let n = |range: std::ops::Range<usize>| -> u32 {
        s.get(range)
            .and_then(|p| p.parse().ok())
            .expect("MM-DD hh:mm:ss")
    };
    at(2025, n(0..2), n(3..5), n(6..8), n(9..11), n(12..14))
}

#[test]
fn active_schedules() {
    // 2025-03-03 is a Monday; 2025-03-08 a Saturday.
    let office = sched(1, "0 9 * * 1-5", 5, Some(9 * HOUR)); // weekdays 9:00-18:00
    let morning = sched(2, "0 9 * * MON-FRI", 5, None); // until something else fires
    let evening = sched(3, "0 18 * * MON-FRI", 0, None);
    let long = sched(4, "0 9 * * *", 3, Some(8 * HOUR));
    let lunch = sched(5, "0 12 * * *", 8, Some(HOUR));
    let open = sched(6, "0 9 * * *", 4, None);
    let v2 = Schedule {
        version: Some("v2".into()),
        ..sched(7, "0 9 * * *", 9, None)
    };
    let sec2 = sched(8, "*/2 * * * * *", 2, Some(1));
    let monthly = sched(9, "0 0 1 * *", 2, None);
    let twin = sched(10, "0 9 * * *", 6, Some(HOUR));
    let broken = sched(11, "not a cron", 1, None);
    let lb = 32; // DEFAULT_LOOKBACK

    #[rustfmt::skip]
    let cases: Vec<Row<'_>> = vec![
        (vec![&office], "v1", "03-03 10:00:00", lb, Some((1, "03-03 09:00:00"))), // Monday 10:00
        (vec![&office], "v1", "03-08 10:00:00", lb, None), // Saturday: Friday's ended at 18:00
        (vec![&office], "v1", "03-03 09:00:00", lb, Some((1, "03-03 09:00:00"))), // fire instant counts
        (vec![&office], "v1", "03-03 18:00:00", lb, None), // the end instant does not
        (vec![&morning, &evening], "v1", "03-03 10:00:00", lb, Some((2, "03-03 09:00:00"))), // paired: morning
        (vec![&morning, &evening], "v1", "03-08 10:00:00", lb, Some((3, "03-07 18:00:00"))), // weekend: Friday 18:00
        (vec![&long, &lunch], "v1", "03-03 12:30:00", lb, Some((5, "03-03 12:00:00"))), // overlap: latest start wins
        (vec![&long, &lunch], "v1", "03-03 13:30:00", lb, Some((4, "03-03 09:00:00"))), // lunch over: long again
        (vec![&long, &lunch], "v1", "03-03 17:00:00", lb, None), // both expired
        (vec![&open, &lunch], "v1", "03-03 11:00:00", lb, Some((6, "03-03 09:00:00"))), // open-ended, alone so far
        (vec![&open, &lunch], "v1", "03-03 14:00:00", lb, None), // open-ended ended by lunch's fire
        (vec![&v2], "v1", "03-03 10:00:00", lb, None), // another version's rule
        (vec![&v2], "v2", "03-03 10:00:00", lb, Some((7, "03-03 09:00:00"))), // its own version
        (vec![&sec2], "v1", "03-03 10:00:10", lb, Some((8, "03-03 10:00:10"))), // per-second cron, just fired
        (vec![&sec2], "v1", "03-03 10:00:11", lb, None), // its 1 s is over
        (vec![&monthly], "v1", "03-20 00:00:00", lb, Some((9, "03-01 00:00:00"))), // monthly, within 32 days
        (vec![&monthly], "v1", "03-20 00:00:00", 8, None), // last fire older than the lookback
        (vec![&long, &twin], "v1", "03-03 09:30:00", lb, Some((10, "03-03 09:00:00"))), // same start: higher id
        (vec![&broken], "v1", "03-03 09:30:00", lb, None), // unparsable: skipped
        (vec![], "v1", "03-03 09:30:00", lb, None), // no schedules
    ];
    assert_eq!(DEFAULT_LOOKBACK, Duration::from_secs(lb * 24 * HOUR));
    for (i, (schedules, version, now, days, expected)) in cases.into_iter().enumerate() {
        let schedules: Vec<Schedule> = schedules.into_iter().cloned().collect();
        let lookback = Duration::from_secs(days * 24 * HOUR);
        let got = active(&schedules, version, &t(now), lookback).map(|a| (a.id, a.started_at));
        let expected = expected.map(|(id, start)| (id, t(start)));
        assert_eq!(got, expected, "row {i}: {version} at {now}");
    }
}

#[test]
fn active_reports_end_and_uses_the_callers_time_zone() {
    let office = Schedule {
        max: Some(7),
        ..sched(1, "0 9 * * 1-5", 5, Some(9 * HOUR))
    };
    // 09:30 in UTC+8 is 01:30 UTC: the rule fires at 09:00 local.
    let tz = FixedOffset::east_opt(8 * 3600).expect("a valid offset");
    let now = tz
        .with_ymd_and_hms(2025, 3, 3, 9, 30, 0)
        .single()
        .expect("a valid local time");
    let a = active(&[office], "v1", &now, DEFAULT_LOOKBACK);
    assert_eq!(
        a,
        Some(ActiveSchedule {
            id: 1,
            min: 5,
            max: Some(7),
            started_at: at(2025, 3, 3, 1, 0, 0),
            ends_at: Some(at(2025, 3, 3, 10, 0, 0)),
        })
    );
}

#[test]
fn cron_parsing() {
    // (expression, Ok or the exact error message)
    let cases: &[(&str, Result<(), &str>)] = &[
        ("0 9 * * 1-5", Ok(())),      // 5 fields
        ("0 9 * * MON-FRI", Ok(())),  // day names
        ("*/2 * * * * *", Ok(())),    // 6 fields, seconds first
        ("  */5 * * * *  ", Ok(())),  // surrounding blanks
        ("@daily", Ok(())),           // nickname
        ("", Err("cron expression is empty")),
        ("   ", Err("cron expression is empty")),
        ("* * * *", Err("cron expression `* * * *` has 4 fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)")),
        ("0 0 9 * * 1 2025", Err("cron expression `0 0 9 * * 1 2025` has 7 fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)")),
    ];
    for (expr, expected) in cases {
        let got = parse_cron(expr).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned), "{expr:?}");
    }

    // Invalid fields are named, with croner's reason and what the field allows.
    let invalid: &[(&str, &str)] = &[
        ("61 * * * *", "minute field `61`: Number out of bounds. (allowed 0-59)"),
        ("* 24 * * *", "hour field `24`: Number out of bounds. (allowed 0-23)"),
        ("* * 0 * *", "day-of-month field `0`: Number out of bounds. (allowed 1-31, L, W)"),
        ("* * * 13 *", "month field `13`: Number out of bounds. (allowed 1-12 or JAN-DEC)"),
        ("*/0 * * * *", "minute field `*/0`: Step cannot be zero. (allowed 0-59)"),
        ("60 * * * * *", "second field `60`: Number out of bounds. (allowed 0-59)"),
        ("* * * * xyz", "day-of-week field `xyz`: contains illegal character 'X' in part 'XYZ' (allowed 0-7 or SUN-SAT, L, #)"),
    ];
    for (expr, reason) in invalid {
        let err = parse_cron(expr).expect_err(expr);
        assert_eq!(
            err,
            ScheduleError::InvalidCron {
                expr: (*expr).into(),
                reason: (*reason).into()
            }
        );
        assert_eq!(
            err.to_string(),
            format!("cron expression `{expr}` is invalid: {reason}")
        );
    }
}

#[test]
fn validation() {
    type Change = fn(&mut Schedule);
    // (change to a valid schedule, expected)
    #[rustfmt::skip]
    let cases: &[(Change, Result<(), ScheduleError>)] = &[
        (|_| {}, Ok(())), // min 5, max 10, 1 h, weekdays 9:00
        (|s| (s.min, s.max) = (0, None), Ok(())), // min 0, the version's max
        (|s| (s.min, s.max) = (50, Some(50)), Ok(())), // the top of the range
        (|s| (s.min, s.max) = (51, None), Err(ScheduleError::Min(51))), // above 50
        (|s| (s.min, s.max) = (0, Some(0)), Err(ScheduleError::Max(0))), // max below 1
        (|s| s.max = Some(51), Err(ScheduleError::Max(51))), // max above 50
        (|s| s.min = 11, Err(ScheduleError::MinAboveMax { min: 11, max: 10 })), // crossed
        (|s| s.duration_secs = Some(0), Err(ScheduleError::ZeroDuration)), // over before it starts
        (|s| s.cron = "* * *".into(), Err(ScheduleError::FieldCount { expr: "* * *".into(), fields: 3 })),
    ];
    for (change, expected) in cases {
        let mut schedule = Schedule {
            max: Some(10),
            ..sched(1, "0 9 * * 1-5", 5, Some(HOUR))
        };
        change(&mut schedule);
        assert_eq!(validate(&schedule), *expected, "{schedule:?}");
    }
    assert_eq!(
        ScheduleError::Min(51).to_string(),
        "schedule min 51 is out of range 0-50"
    );
}

#[test]
fn bounds() {
    let active = |min, max| ActiveSchedule {
        id: 1,
        min,
        max,
        started_at: at(2025, 3, 3, 9, 0, 0),
        ends_at: None,
    };
    let b = |min, max, min_s, max_s| Bounds {
        min,
        max,
        min_from_schedule: min_s,
        max_from_schedule: max_s,
    };
    // (version min, version max, active schedule, expected bounds)
    let cases = [
        (0, 10, None, b(0, 10, false, false)), // no schedule: the version's
        (0, 10, Some(active(5, None)), b(5, 10, true, false)), // min raised, version's max kept
        (0, 10, Some(active(5, Some(8))), b(5, 8, true, true)), // both replaced
        (2, 10, Some(active(0, Some(3))), b(0, 3, true, true)), // a schedule may lower both
        (0, 10, Some(active(20, None)), b(20, 20, true, true)), // max raised to the schedule's min
        (0, 60, Some(active(70, None)), b(50, 50, true, false)), // both capped at 50
    ];
    for (vmin, vmax, a, expected) in cases {
        assert_eq!(effective_bounds(vmin, vmax, a.as_ref()), expected, "{a:?}");
    }
}

#[test]
fn serde_shape() {
    let json = r#"{"id": 3, "cron": "0 9 * * 1-5", "min": 2}"#;
    let s: Schedule = serde_json::from_str(json).expect("deserializes");
    assert_eq!(s, sched(3, "0 9 * * 1-5", 2, None));
    let a = ActiveSchedule {
        id: 3,
        min: 2,
        max: None,
        started_at: at(2025, 3, 3, 9, 0, 0),
        ends_at: None,
    };
    let text = serde_json::to_string(&a).expect("serializes");
    assert_eq!(
        text,
        r#"{"id":3,"min":2,"max":null,"started_at":"2025-03-03T09:00:00Z","ends_at":null}"#
    );
}
