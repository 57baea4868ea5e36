use super::*;

use Outcome::{Failure as F, Success as S};

#[test]
fn ejection_backoff_and_probe() {
    let policy = OutlierPolicy {
        consecutive: 3,
        base: Duration::from_millis(1000),
    };
    // (outcome, at ms, ejected until (if this ejects), ejected right after?)
    let steps: &[(Outcome, u64, Option<u64>, bool)] = &[
        (F, 0, None, false),           // 1 of 3
        (F, 10, None, false),          // 2 of 3
        (S, 20, None, false),          // a success resets the count
        (F, 30, None, false),          // 1
        (F, 40, None, false),          // 2
        (F, 50, Some(1050), true),     // 3: out for the base
        (F, 60, None, true),           // admitted before: no change while out
        (F, 1100, Some(3100), true),   // back, probe fails: out for 2× at once
        (F, 3200, Some(7200), true),   // 4×
        (F, 7300, Some(15300), true),  // 8×
        (F, 15400, Some(25400), true), // capped at 10×
        (S, 25500, None, false),       // probe succeeds: all clear
        (F, 25600, None, false),       // counting from 1 again
    ];
    let mut state = OutlierState::default();
    for (i, (outcome, at, ejects, out)) in steps.iter().enumerate() {
        assert_eq!(state.record(&policy, *outcome, *at), *ejects, "step {i}");
        assert_eq!(state.is_ejected(*at + 1), *out, "step {i}");
    }
}

#[test]
fn off_never_ejects() {
    let policy = OutlierPolicy {
        consecutive: 0,
        base: Duration::from_secs(1),
    };
    let mut state = OutlierState::default();
    for at in 0..100 {
        assert_eq!(state.record(&policy, Outcome::Failure, at), None);
    }
    assert!(!state.is_ejected(100));
}

#[test]
fn active_health_thresholds() {
    let check = ActiveCheck {
        path: "/healthz".into(),
        interval: Duration::from_secs(1),
        unhealthy_after: 3,
        healthy_after: 2,
    };
    // (check passed?, state change)
    let steps: &[(bool, Option<bool>)] = &[
        (false, None),        // 1 of 3
        (false, None),        // 2 of 3
        (true, None),         // a pass resets the streak
        (false, None),        // 1
        (false, None),        // 2
        (false, Some(false)), // 3: unhealthy
        (false, None),        // stays out
        (true, None),         // 1 of 2
        (false, None),        // a failure resets
        (true, None),         // 1
        (true, Some(true)),   // 2: healthy again
    ];
    let mut state = HealthState::default();
    for (i, (passed, change)) in steps.iter().enumerate() {
        assert_eq!(state.record(&check, *passed), *change, "step {i}");
    }
    assert!(state.healthy);
}
