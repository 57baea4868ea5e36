use chrono::{FixedOffset, TimeZone, Utc};

use super::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn due_fires_rule() {
    // (cron, last fired, now, expected fire)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        // Every 5 minutes, last fired 12:00.
        (
            "*/5 * * * *",
            "2025-01-01T12:00:00Z",
            "2025-01-01T12:04:59Z",
            None,
        ), // not yet
        (
            "*/5 * * * *",
            "2025-01-01T12:00:00Z",
            "2025-01-01T12:05:00Z",
            Some("2025-01-01T12:05:00Z"),
        ), // on the tick
        (
            "*/5 * * * *",
            "2025-01-01T12:00:00Z",
            "2025-01-01T12:05:00.700Z",
            Some("2025-01-01T12:05:00Z"),
        ), // a little late
        (
            "*/5 * * * *",
            "2025-01-01T12:05:00Z",
            "2025-01-01T12:06:00Z",
            None,
        ), // already fired
        // Down from 12:01 to 12:31: six ticks missed, one fire for the latest (12:30).
        (
            "*/5 * * * *",
            "2025-01-01T12:00:00Z",
            "2025-01-01T12:31:00Z",
            Some("2025-01-01T12:30:00Z"),
        ),
        // ... and once recorded, nothing more until 12:35.
        (
            "*/5 * * * *",
            "2025-01-01T12:30:00Z",
            "2025-01-01T12:31:00Z",
            None,
        ),
        // A new trigger created at 12:02 (last fired = creation): no fire for 12:00.
        (
            "*/5 * * * *",
            "2025-01-01T12:02:00Z",
            "2025-01-01T12:03:00Z",
            None,
        ),
        // The clock went back: nothing.
        (
            "*/5 * * * *",
            "2025-01-01T12:30:00Z",
            "2025-01-01T12:10:00Z",
            None,
        ),
        // 6 fields: every 10 seconds.
        (
            "*/10 * * * * *",
            "2025-01-01T12:00:00Z",
            "2025-01-01T12:00:25Z",
            Some("2025-01-01T12:00:20Z"),
        ),
        // Daily at 03:00, server down over two nights: fires once for the latest night.
        (
            "0 3 * * *",
            "2025-01-01T03:00:00Z",
            "2025-01-03T09:00:00Z",
            Some("2025-01-03T03:00:00Z"),
        ),
        (
            "@hourly",
            "2025-01-01T03:00:00Z",
            "2025-01-01T04:00:00Z",
            Some("2025-01-01T04:00:00Z"),
        ),
    ];
    for (expr, last, now, expected) in cases {
        let cron = parse_cron(expr).unwrap();
        let got = due_fires(&cron, utc(last), &utc(now));
        assert_eq!(got, expected.map(utc), "{expr} last={last} now={now}");
    }
}

#[test]
fn evaluated_in_the_callers_time_zone() {
    // 09:00 every day, at UTC+2: 07:00 UTC.
    let cron = parse_cron("0 9 * * *").unwrap();
    let zone = FixedOffset::east_opt(2 * 3600).unwrap();
    let now = zone.with_ymd_and_hms(2025, 6, 1, 9, 0, 30).unwrap();
    let got = due_fires(&cron, utc("2025-05-31T07:00:00Z"), &now);
    assert_eq!(got, Some(utc("2025-06-01T07:00:00Z")));
    let in_utc = due_fires(&cron, utc("2025-05-31T09:00:00Z"), &now.with_timezone(&Utc));
    assert_eq!(in_utc, None, "09:00 UTC has not come yet at 07:00:30 UTC");
}

#[test]
fn next_fires() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "*/5 * * * *",
            "2025-01-01T12:03:10Z",
            "2025-01-01T12:05:00Z",
        ),
        (
            "*/5 * * * *",
            "2025-01-01T12:05:00Z",
            "2025-01-01T12:10:00Z",
        ), // strictly after
        ("0 0 1 1 *", "2025-03-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ];
    for (expr, now, expected) in cases {
        let cron = parse_cron(expr).unwrap();
        assert_eq!(
            next_fire(&cron, &utc(now)),
            Some(utc(expected)),
            "{expr} {now}"
        );
    }
}

#[test]
fn bad_expressions() {
    let cases: &[(&str, &str)] = &[
        ("", "cron expression is empty"),
        ("* * *", "has 3 fields"),
        ("61 * * * *", "minute field `61`"),
    ];
    for (expr, expected) in cases {
        let err = parse_cron(expr).unwrap_err().to_string();
        assert!(err.contains(expected), "{expr}: {err}");
    }
    // Sanity for the helper above.
    assert_eq!(
        utc("2025-01-01T00:00:00Z"),
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
    );
}
