use super::*;

#[test]
fn dates_of_days() {
    let cases = &[
        (0, "1970-01-01"),
        (31, "1970-02-01"),
        (59, "1970-03-01"), // 1970 is not a leap year
        (10_957, "2000-01-01"),
        (11_016, "2000-02-29"), // divisible by 400: leap
        (11_017, "2000-03-01"),
        (19_782, "2024-02-29"),
        (19_783, "2024-03-01"),
        (20_088, "2024-12-31"),
        (20_089, "2025-01-01"),
        (47_541, "2100-03-01"), // 2100 is not a leap year: 02-28 is the day before
    ];
    for (day, expected) in cases {
        assert_eq!(date_of_day(*day), *expected, "day {day}");
        let (y, m, d) = civil_from_days(*day);
        assert_eq!(days_from_civil(y, m, d), *day, "round trip {expected}");
    }
    assert_eq!(date_of_day(47_540), "2100-02-28");
}

#[test]
fn round_trip_every_day_for_three_centuries() {
    for day in 0..110_000 {
        let (y, m, d) = civil_from_days(day);
        assert!((1..=12).contains(&m) && (1..=31).contains(&d), "day {day}");
        assert_eq!(days_from_civil(y, m, d), day);
    }
}

#[test]
fn month_boundaries() {
    let minute = |day: u64, minute_of_day: u64| day * MINUTES_PER_DAY + minute_of_day;
    let cases = &[
        // (minute, month start, next month start)
        (0, 0, minute(31, 0)),
        (minute(19_782, 1_439), minute(19_754, 0), minute(19_783, 0)), // 2024-02-29 23:59
        (minute(19_783, 0), minute(19_783, 0), minute(19_814, 0)),     // 2024-03-01 00:00
        (minute(20_088, 5), minute(20_058, 0), minute(20_089, 0)),     // December → January
    ];
    for (at, start, next) in cases {
        assert_eq!(month_start_minute(*at), *start, "start of {at}");
        assert_eq!(next_month_start_minute(*at), *next, "next of {at}");
    }
}
