use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

fn rate(text: &str) -> Rate {
    text.parse().expect(text)
}

fn quota(text: &str, burst: u32) -> Quota {
    Quota::new(rate(text), burst).expect("a valid burst")
}

#[test]
fn rates_parse_and_print() {
    let cases = &[
        ("100/s", 100, 1_000, "100/s"),
        ("6000/m", 6_000, 60_000, "6000/m"),
        ("10/h", 10, 3_600_000, "10/h"),
        ("1/s", 1, 1_000, "1/s"),
        (" 5 / min ", 5, 60_000, "5/m"), // spaces around the parts
        ("5/second", 5, 1_000, "5/s"),
        ("5/minute", 5, 60_000, "5/m"),
        ("5/hour", 5, 3_600_000, "5/h"),
        ("1000000000/s", 1_000_000_000, 1_000, "1000000000/s"), // the largest count
    ];
    for &(text, count, period_ms, printed) in cases {
        let parsed = rate(text);
        assert_eq!(
            (parsed.count(), parsed.period_ms()),
            (count, period_ms),
            "{text}"
        );
        assert_eq!(parsed.to_string(), printed, "{text}");
    }
}

#[test]
fn rate_errors() {
    let cases = &[
        ("", RateError::Format(String::new())),
        ("100", RateError::Format("100".into())),
        ("100 per second", RateError::Format("100 per second".into())),
        ("/s", RateError::Count(String::new())),
        ("0/s", RateError::Count("0".into())),
        ("-1/s", RateError::Count("-1".into())),
        ("1.5/s", RateError::Count("1.5".into())),
        ("1000000001/s", RateError::Count("1000000001".into())),
        ("99999999999/s", RateError::Count("99999999999".into())),
        ("100/", RateError::Unit(String::new())),
        ("100/d", RateError::Unit("d".into())),
        ("100/S", RateError::Unit("S".into())),
        ("100/s/m", RateError::Unit("s/m".into())),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<Rate>().as_ref(), Err(expected), "{text:?}");
    }
    // The messages say what to write.
    assert_eq!(
        RateError::Format("x".into()).to_string(),
        "rate \"x\" must look like COUNT/UNIT, e.g. 100/s, 6000/m or 10/h"
    );
}

#[test]
fn rate_and_quota_constructors() {
    assert_eq!(Rate::new(0, 1_000), None);
    assert_eq!(Rate::new(1, 0), None);
    assert_eq!(Rate::new(MAX_COUNT + 1, 1_000), None);
    assert_eq!(Rate::new(3, 1_000), Some(rate("3/s")));
    assert_eq!(Quota::new(rate("1/s"), 0), Err(RateError::Burst));
    assert_eq!(
        Quota::new(rate("1/s"), MAX_COUNT + 1),
        Err(RateError::Burst)
    );
    assert_eq!(Quota::per_period(rate("100/s")).burst(), 100);
    assert_eq!(quota("100/s", 200).to_string(), "100/s burst 200");
}

/// One step of a scripted run: a request at `at_ms` and what it should get.
struct Step {
    at_ms: u64,
    expected: Verdict,
}

fn allowed(at_ms: u64, remaining: u32) -> Step {
    Step {
        at_ms,
        expected: Verdict::Allowed { remaining },
    }
}

fn limited(at_ms: u64, retry_after_ms: u64) -> Step {
    Step {
        at_ms,
        expected: Verdict::Limited { retry_after_ms },
    }
}

#[test]
fn token_bucket_scripts() {
    let cases: Vec<(&str, Quota, Vec<Step>)> = vec![
        (
            "burst then refused, one token per 100 ms back",
            quota("10/s", 3),
            vec![
                allowed(0, 2),
                allowed(0, 1),
                allowed(0, 0),
                limited(0, 100),
                limited(40, 60),
                allowed(100, 0),
                limited(100, 100),
            ],
        ),
        (
            "a long pause refills only up to the burst",
            quota("10/s", 2),
            vec![
                allowed(0, 1),
                allowed(0, 0),
                allowed(60_000, 1),
                allowed(60_000, 0),
                limited(60_000, 100),
            ],
        ),
        (
            "6000/m is 100 per second without drift",
            quota("6000/m", 1),
            vec![
                allowed(0, 0),
                limited(0, 10),
                limited(9, 1),
                allowed(10, 0),
                allowed(20, 0),
            ],
        ),
        (
            "slow rates wait minutes",
            quota("2/h", 1),
            vec![
                allowed(0, 0),
                limited(0, 1_800_000),
                limited(1_799_999, 1),
                allowed(1_800_000, 0),
            ],
        ),
        (
            "fractional refill is kept between requests",
            quota("3/s", 2),
            // A token every 333⅓ ms: the thirds add up instead of being lost (the burst of 2
            // leaves room for them; a full bucket caps them).
            vec![
                allowed(0, 1),
                allowed(0, 0),
                limited(333, 1),
                allowed(334, 0),
                limited(666, 1),
                allowed(667, 0),
                allowed(1_000, 0),
            ],
        ),
        (
            "a clock that goes backwards earns nothing",
            quota("1/s", 1),
            vec![
                allowed(5_000, 0),
                limited(1_000, 1_000),
                limited(5_500, 500),
                allowed(6_000, 0),
            ],
        ),
        (
            "burst of one at a high rate",
            quota("1000/s", 1),
            vec![allowed(0, 0), limited(0, 1), allowed(1, 0), allowed(2, 0)],
        ),
    ];
    for (name, quota, steps) in cases {
        let mut bucket = TokenBucket::new(quota, 0);
        for (i, step) in steps.iter().enumerate() {
            assert_eq!(bucket.take(step.at_ms), step.expected, "{name}: step {i}");
        }
    }
}

#[test]
fn long_run_admits_the_rate() {
    // 100/s with burst 200, offered 1 request per ms for 10 s: 200 + 100 × 10 get through.
    let mut bucket = TokenBucket::new(quota("100/s", 200), 0);
    let admitted = (0..10_000)
        .filter(|ms| bucket.take(*ms).is_allowed())
        .count();
    assert_eq!(admitted, 200 + 1_000 - 1); // the last token is due at 10 000 ms
}

#[test]
fn retry_after_seconds() {
    let cases = &[
        (Verdict::Allowed { remaining: 3 }, None),
        (Verdict::Limited { retry_after_ms: 0 }, Some(1)), // never 0
        (Verdict::Limited { retry_after_ms: 1 }, Some(1)),
        (
            Verdict::Limited {
                retry_after_ms: 1_000,
            },
            Some(1),
        ),
        (
            Verdict::Limited {
                retry_after_ms: 1_001,
            },
            Some(2),
        ), // rounded up
        (
            Verdict::Limited {
                retry_after_ms: 1_800_000,
            },
            Some(1_800),
        ),
    ];
    for (verdict, expected) in cases {
        assert_eq!(verdict.retry_after_secs(), *expected, "{verdict:?}");
    }
}

#[test]
fn keyed_limiter_limits_each_key_alone() {
    let mut limiter = KeyedLimiter::new(quota("1/s", 2), 100);
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    assert!(limiter.take(&a, 0).is_allowed());
    assert!(limiter.take(&a, 0).is_allowed());
    assert_eq!(
        limiter.take(&a, 0),
        Verdict::Limited {
            retry_after_ms: 1_000
        }
    );
    // Another client still has its whole burst.
    assert_eq!(limiter.take(&b, 0), Verdict::Allowed { remaining: 1 });
    assert!(limiter.take(&a, 1_000).is_allowed());
    assert_eq!(limiter.len(), 2);
}

#[test]
fn keyed_limiter_sweeps_idle_keys() {
    let mut limiter = KeyedLimiter::new(quota("1/s", 2), 100);
    limiter.take(&1, 0);
    limiter.take(&2, 0);
    limiter.take(&2, 0);
    limiter.take(&3, 1_500);
    // At 1 s key 1 is full again (1 of 2 used), key 2 still misses one token, key 3 is fresh.
    assert_eq!(limiter.sweep(1_000), 1);
    assert_eq!(limiter.len(), 2);
    // At 2 s key 2 is full; key 3 used one token at 1.5 s and has only half of it back.
    assert_eq!(limiter.sweep(2_000), 1);
    assert_eq!(limiter.sweep(2_500), 1);
    assert!(limiter.is_empty());
}

#[test]
fn keyed_limiter_memory_is_bounded() {
    let max_keys = 64;
    let mut limiter = KeyedLimiter::new(quota("1/m", 1), max_keys);
    // 10,000 distinct clients within one minute: no bucket is idle, so the oldest go.
    for key in 0..10_000u32 {
        limiter.take(&key, u64::from(key));
        assert!(
            limiter.len() <= max_keys,
            "{} buckets after key {key}",
            limiter.len()
        );
    }
    // The most recent clients are still limited.
    assert!(!limiter.take(&9_999, 10_000).is_allowed());
    assert!(!limiter.take(&9_990, 10_000).is_allowed());
}

#[test]
fn keyed_limiter_prefers_dropping_idle_keys() {
    let mut limiter = KeyedLimiter::new(quota("1/s", 1), 2);
    limiter.take(&"busy", 900); // refills at 1.9 s
    limiter.take(&"idle", 0); // refills at 1 s
                              // At 1.5 s a third key needs room: the idle (full) one goes, the busy one stays limited.
    assert!(limiter.take(&"new", 1_500).is_allowed());
    assert_eq!(limiter.len(), 2);
    assert_eq!(
        limiter.take(&"busy", 1_500),
        Verdict::Limited {
            retry_after_ms: 400
        }
    );
}

#[test]
fn keyed_limiter_of_one_key() {
    let mut limiter = KeyedLimiter::new(quota("1/s", 1), 0); // 0 is raised to 1
    assert!(limiter.take(&"a", 0).is_allowed());
    assert!(limiter.take(&"b", 0).is_allowed()); // "a" is evicted to make room
    assert_eq!(limiter.len(), 1);
    assert!(!limiter.take(&"b", 0).is_allowed());
}

#[test]
fn client_keys() {
    let cases = &[
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        ),
        (
            IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), // mapped → IPv4
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        ),
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)), // → its /64
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0)),
        ),
        (
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ),
    ];
    for (client, expected) in cases {
        assert_eq!(client_key(*client), *expected, "{client}");
    }
}
