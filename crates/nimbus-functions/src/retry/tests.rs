use std::time::Duration;

use super::*;

fn policy(max_attempts: u32, base_ms: u64, max_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_base: Duration::from_millis(base_ms),
        backoff_max: Duration::from_millis(max_ms),
    }
}

#[test]
fn decisions() {
    let ms = |n| RetryDecision::RetryIn(Duration::from_millis(n));
    // (policy, attempts made so far, decision)
    let cases: &[(RetryPolicy, u32, RetryDecision)] = &[
        (RetryPolicy::default(), 1, ms(1_000)), // first failure: wait the base
        (RetryPolicy::default(), 2, ms(2_000)), // second: doubled
        (RetryPolicy::default(), 3, RetryDecision::DeadLetter), // 1 try + 2 retries, done
        (RetryPolicy::default(), 4, RetryDecision::DeadLetter), // past the end (lease races)
        (policy(1, 1_000, 5_000), 1, RetryDecision::DeadLetter), // no retries at all
        (policy(5, 1_000, 5_000), 3, ms(4_000)),
        (policy(5, 1_000, 5_000), 4, ms(5_000)), // 8 s capped at 5 s
        (policy(10, 100, 60_000), 9, ms(25_600)), // 100 ms × 2^8
        (policy(3, 0, 0), 1, ms(0)),             // retry at once
        (policy(3, 1_000, 5_000), 0, ms(1_000)), // no attempt counted (defensive): the base
    ];
    for (i, (p, attempts, expected)) in cases.iter().enumerate() {
        assert_eq!(
            p.after_failure(*attempts),
            *expected,
            "case {i}: {p:?} after {attempts}"
        );
    }
}

#[test]
fn backoff_never_overflows() {
    let p = policy(10, u64::MAX / 2, u64::MAX);
    assert_eq!(p.backoff(40), Duration::from_millis(u64::MAX));
    let p = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::MAX,
        backoff_max: Duration::MAX,
    };
    assert_eq!(p.backoff(9), Duration::MAX);
}

#[test]
fn validation() {
    let cases: &[(RetryPolicy, Option<&str>)] = &[
        (RetryPolicy::default(), None),
        (policy(1, 0, 0), None),
        (policy(10, 1, 1), None),
        (
            policy(0, 1_000, 5_000),
            Some("max attempts 0 is out of range 1-10"),
        ),
        (policy(11, 1_000, 5_000), Some("max attempts 11")),
        (
            policy(3, 6_000, 5_000),
            Some("the backoff base 6s is longer than"),
        ),
    ];
    for (p, expected) in cases {
        let got = p.validate().err().map(|e| e.to_string());
        match (expected, got) {
            (None, None) => {}
            (Some(prefix), Some(message)) => assert!(message.starts_with(prefix), "{message}"),
            (expected, got) => panic!("{p:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn json_in_milliseconds() {
    let json = serde_json::to_value(RetryPolicy::default()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"max_attempts": 3, "backoff_base": 1000, "backoff_max": 300000})
    );
    let back: RetryPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back, RetryPolicy::default());
}
