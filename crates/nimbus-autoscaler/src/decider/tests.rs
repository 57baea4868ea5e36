use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};

use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// Concurrency 10 → target 7 per instance; max 50 so clamps don't get in the way.
fn config() -> ScalingConfig {
    ScalingConfig {
        concurrency: 10,
        min: 0,
        max: 50,
        ..ScalingConfig::default()
    }
}

/// One decision in a simulated trace.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    t: u64,
    desired: u32,
    reason: Reason,
    panic: bool,
}

/// Samples `demand(t)` every second for `secs` seconds and decides every tick (2 s). Instances
/// start instantly: `current` becomes the last decision.
fn simulate(
    config: &ScalingConfig,
    bounds: impl Fn(u64) -> Bounds,
    start: u32,
    secs: u64,
    demand: impl Fn(u64) -> f64,
) -> Vec<Step> {
    let mut window = config.window();
    let mut state = DeciderState::default();
    let mut current = start;
    let mut steps = Vec::new();
    for t in 0..secs {
        window.record(s(t), demand(t));
        if t % config.tick.as_secs() == 0 {
            let (d, next) = decide(config, bounds(t), &window, &state, s(t), current);
            assert_eq!(d.panic, next.in_panic(), "t={t}");
            state = next;
            current = d.desired;
            steps.push(Step {
                t,
                desired: d.desired,
                reason: d.reason,
                panic: d.panic,
            });
        }
    }
    steps
}

fn version_bounds(config: &ScalingConfig) -> impl Fn(u64) -> Bounds + '_ {
    move |_| config.bounds(None)
}

fn changes(steps: &[Step]) -> usize {
    steps
        .windows(2)
        .filter(|w| w[0].desired != w[1].desired)
        .count()
}

/// One decision removes at most half the instances; the last one may go to zero.
fn halves_at_most(before: u32, after: u32) -> bool {
    after >= before.div_ceil(2) || (before == 1 && after == 0)
}

fn last(steps: &[Step]) -> &Step {
    steps.last().expect("a non-empty trace")
}

/// Demand samples as (second, value).
type Samples = &'static [(u64, f64)];

#[test]
fn single_decisions() {
    let c = config();
    let schedule_min5 = Bounds {
        min: 5,
        max: 50,
        min_from_schedule: true,
        max_from_schedule: false,
    };
    // (samples as (second, demand), bounds, current, now, expected desired, expected reason)
    let cases: &[(Samples, Bounds, u32, u64, u32, Reason)] = &[
        (&[], Bounds::new(0, 50), 0, 0, 0, Reason::Zero), // nothing seen, nothing running
        (&[(0, 0.0)], Bounds::new(0, 50), 0, 0, 0, Reason::Zero), // idle and at zero: stay
        (&[(0, 1.0)], Bounds::new(0, 50), 0, 0, 1, Reason::Stable), // wake from zero
        (&[(0, 70.0)], Bounds::new(0, 50), 0, 0, 10, Reason::Stable), // wake straight to 70/7
        (&[(0, 35.0)], Bounds::new(0, 50), 5, 0, 5, Reason::Stable), // exactly on target
        (&[(0, 36.0)], Bounds::new(0, 50), 5, 0, 6, Reason::Stable), // just above target
        (&[(0, 7.0)], Bounds::new(0, 50), 10, 0, 5, Reason::Stable), // halve at most
        (&[(0, 70.0)], Bounds::new(0, 50), 2, 0, 10, Reason::Panic), // 70 ≥ 2 × 14: panic
        (&[(0, 7.0)], Bounds::new(3, 50), 1, 0, 3, Reason::Min), // raised to the version min
        (&[(0, 7.0)], schedule_min5, 1, 0, 5, Reason::Schedule), // raised by a schedule
        (&[(0, 7000.0)], Bounds::new(0, 50), 50, 0, 50, Reason::Max), // capped at 50
        (&[(0, 0.0)], Bounds::new(0, 50), 1, 0, 1, Reason::Stable), // idle too briefly for zero
        (&[(0, 0.0)], Bounds::new(0, 50), 1, 90, 0, Reason::Zero), // idle 60 s + 30 s grace
        (&[(0, 0.0)], Bounds::new(0, 50), 1, 89, 1, Reason::Stable), // one second short
        (&[(0, 0.0)], Bounds::new(1, 50), 1, 600, 1, Reason::Min), // min 1 keeps one
        (&[(0, 0.0)], Bounds::new(0, 50), 4, 600, 2, Reason::Stable), // even zero halves first
    ];
    for (samples, bounds, current, now, desired, reason) in cases {
        let mut w = c.window();
        for (t, v) in *samples {
            w.record(s(*t), *v);
        }
        let (d, _) = decide(&c, *bounds, &w, &DeciderState::default(), s(*now), *current);
        assert_eq!(
            (d.desired, d.reason),
            (*desired, *reason),
            "{samples:?} {bounds:?} current={current} now={now}"
        );
    }
}

#[test]
fn traces() {
    let c = config();
    let b = version_bounds(&c);

    // Steady load: 35 requests on 5 instances of target 7 stays at 5 the whole time.
    let steady = simulate(&c, &b, 5, 300, |_| 35.0);
    assert!(steady
        .iter()
        .all(|st| st.desired == 5 && st.reason == Reason::Stable));

    // Step up without panic: 14 → 21 requests (2 → 3 instances); 21 < 2 × 14 so no panic.
    let step = simulate(&c, &b, 2, 300, |t| if t < 100 { 14.0 } else { 21.0 });
    assert!(step
        .iter()
        .all(|st| !st.panic && (2..=3).contains(&st.desired)));
    assert_eq!(changes(&step), 1, "{step:?}");
    let first3 = step.iter().find(|st| st.desired == 3).map(|st| st.t);
    assert!(
        first3.is_some_and(|t| (100..=102).contains(&t)),
        "{first3:?}"
    );

    // Concurrency 1: target 0.7, so one request in flight keeps 2 instances (Knative's math).
    let c1 = ScalingConfig {
        concurrency: 1,
        ..config()
    };
    let one = simulate(&c1, version_bounds(&c1), 0, 120, |_| 1.0);
    assert_eq!(one[0].desired, 2);
    assert!(one.iter().all(|st| st.desired == 2), "{one:?}");

    // Clamp at 50: a huge burst asks for 50, and says the version max decided.
    let huge = simulate(&c, &b, 1, 60, |_| 10_000.0);
    assert_eq!(last(&huge).desired, 50);
    assert!(huge.iter().all(|st| st.desired <= 50));
    assert_eq!(last(&huge).reason, Reason::Max);

    // min > 0 never goes to zero, however long the silence.
    let floor = simulate(
        &ScalingConfig { min: 2, ..config() },
        |_| Bounds::new(2, 50),
        6,
        600,
        |t| if t < 30 { 40.0 } else { 0.0 },
    );
    assert!(floor.iter().all(|st| st.desired >= 2));
    assert_eq!(last(&floor).reason, Reason::Min);
}

#[test]
fn spike_panics_scales_fast_and_never_down_during_panic() {
    let c = config();
    // 1 instance at 7 requests; a 200-request spike from 60 s to 70 s; back to 7.
    let trace = simulate(&c, version_bounds(&c), 1, 400, |t| {
        if (60..70).contains(&t) {
            200.0
        } else {
            7.0
        }
    });
    assert!(trace
        .iter()
        .filter(|st| st.t < 60)
        .all(|st| st.desired == 1 && !st.panic));

    let entered = trace.iter().find(|st| st.panic).map(|st| st.t);
    assert!(
        entered.is_some_and(|t| (60..=62).contains(&t)),
        "{entered:?}"
    );
    // Reaches ceil(200 / 7) = 29 within a few seconds of the spike.
    let full = trace.iter().find(|st| st.desired >= 29).map(|st| st.t);
    assert!(full.is_some_and(|t| t <= 70), "{full:?}");

    // Never down while panicking; panic lasts a whole stable window after the last trigger.
    let in_panic: Vec<&Step> = trace.iter().filter(|st| st.panic).collect();
    assert!(in_panic.windows(2).all(|w| w[1].desired >= w[0].desired));
    assert!(in_panic.iter().all(|st| st.reason == Reason::Panic));
    let left = trace
        .iter()
        .skip_while(|st| !st.panic)
        .find(|st| !st.panic)
        .map(|st| st.t);
    // The last trigger is while the spike ramps up (before 70 s), so it leaves after 120 s.
    assert!(left.is_some_and(|t| (120..=132).contains(&t)), "{left:?}");
    // One panic episode only (no flapping in and out).
    let episodes = trace
        .windows(2)
        .filter(|w| !w[0].panic && w[1].panic)
        .count();
    assert_eq!(episodes, 1);

    // Afterwards it scales back down to 1, halving at most per decision.
    assert_eq!(last(&trace).desired, 1);
    for w in trace.windows(2) {
        assert!(halves_at_most(w[0].desired, w[1].desired), "{w:?}");
    }
}

#[test]
fn sawtooth_does_not_oscillate() {
    let c = config();
    type Demand = fn(u64) -> f64;
    // (demand, allowed desired range after warm-up, most changes of desired allowed)
    let cases: &[(Demand, std::ops::RangeInclusive<u32>, usize)] = &[
        // Ramp 10 → 70 over 25 s, drop, repeat (≈22 teeth). Mean 40 ≈ 5.7 instances; the 60 s
        // window is not a multiple of the period, so the average wobbles across the 6/7 line
        // once per tooth. The scale-down delay holds 7 instead of following each wobble.
        (|t| 10.0 + 2.5 * (t % 25) as f64, 6..=7, 1),
        // Square wave, 15 s of 70 then 15 s of nothing: bursts at twice the average capacity.
        // It panics once to 10 and stays there, rather than dropping to 5 after each stable
        // window and panicking again.
        (|t| if t % 30 < 15 { 70.0 } else { 0.0 }, 5..=10, 2),
    ];
    for (demand, range, max_changes) in cases {
        let trace = simulate(&c, version_bounds(&c), 5, 600, demand);
        let settled: Vec<Step> = trace.into_iter().filter(|st| st.t >= 60).collect();
        assert!(
            settled.iter().all(|st| range.contains(&st.desired)),
            "{range:?}: {settled:?}"
        );
        let n = changes(&settled);
        assert!(
            n <= *max_changes,
            "{n} changes over 270 decisions: {settled:?}"
        );
    }
}

#[test]
fn decays_to_zero_only_after_grace_halving_on_the_way() {
    let c = config();
    // 56 requests (8 instances) for a minute, then silence. Last busy sample at 59 s.
    let trace = simulate(&c, version_bounds(&c), 8, 400, |t| {
        if t < 60 {
            56.0
        } else {
            0.0
        }
    });
    assert!(trace
        .iter()
        .filter(|st| st.t < 60)
        .all(|st| st.desired == 8));
    for w in trace.windows(2) {
        assert!(halves_at_most(w[0].desired, w[1].desired), "{w:?}");
    }
    let zero = trace.iter().find(|st| st.desired == 0).map(|st| st.t);
    // Idle from 59 s; stable window 60 s + grace 30 s.
    assert!(zero.is_some_and(|t| (149..=152).contains(&t)), "{zero:?}");
    assert!(trace
        .iter()
        .filter(|st| st.t >= 60 && st.t < 149)
        .all(|st| st.desired >= 1));
    assert_eq!(last(&trace).desired, 0);
    assert_eq!(last(&trace).reason, Reason::Zero);
    // The way down passes through 4, 2 and 1.
    for n in [4, 2, 1] {
        assert!(
            trace.iter().any(|st| st.desired == n),
            "never {n}: {trace:?}"
        );
    }

    // With a 10 s stable window the average collapses faster than the scale-down rate allows,
    // so the rate decides: 8 → … → 4 → 2 → 1, then 0 once idle for 10 s + 5 s grace.
    let fast = ScalingConfig {
        stable_window: s(10),
        panic_window: s(2),
        scale_to_zero_grace: s(5),
        scale_down_delay: Duration::ZERO,
        ..config()
    };
    let trace = simulate(&fast, version_bounds(&fast), 8, 120, |t| {
        if t < 60 {
            56.0
        } else {
            0.0
        }
    });
    for w in trace.windows(2) {
        assert!(halves_at_most(w[0].desired, w[1].desired), "{w:?}");
    }
    let limited = trace
        .windows(2)
        .any(|w| w[1].desired == w[0].desired.div_ceil(2) && w[1].desired < w[0].desired);
    assert!(limited, "the scale-down rate never bound: {trace:?}");
    let zero = trace.iter().find(|st| st.desired == 0).map(|st| st.t);
    assert!(
        zero.is_some_and(|t| (74..=76).contains(&t)),
        "{zero:?}: {trace:?}"
    );
}

#[test]
fn schedule_raises_min() {
    use crate::schedule::{active, effective_bounds, Schedule};

    let c = ScalingConfig {
        max: 10,
        ..config()
    };
    // Every minute at :00 for 20 s, a schedule asks for at least 6 instances.
    let schedules = [Schedule {
        id: 1,
        cron: "0 * * * * *".into(),
        min: 6,
        max: None,
        version: None,
        duration_secs: Some(20),
    }];
    let origin = Utc.with_ymd_and_hms(2025, 3, 3, 10, 0, 30).single();
    let origin = origin.expect("a valid date");
    let bounds = |t: u64| {
        let now = origin + TimeDelta::seconds(i64::try_from(t).unwrap_or(0));
        let a = active(&schedules, "v1", &now, s(3600));
        effective_bounds(c.min, c.max, a.as_ref())
    };
    // Light load (1 instance's worth); the schedule is active during seconds 30–49 of the trace.
    let trace = simulate(&c, bounds, 1, 120, |_| 5.0);
    for st in &trace {
        let sched = (30..50).contains(&st.t) || (90..110).contains(&st.t);
        if sched {
            assert_eq!((st.desired, st.reason), (6, Reason::Schedule), "{st:?}");
        } else {
            assert!(st.desired < 6 && st.reason != Reason::Schedule, "{st:?}");
        }
    }
}

#[test]
fn panic_exits_only_after_a_calm_stable_window() {
    let c = config();
    let w = {
        let mut w = c.window();
        w.record(s(0), 70.0);
        w
    };
    // Enter panic at 0 s with 2 instances.
    let (d, st) = decide(&c, c.bounds(None), &w, &DeciderState::default(), s(0), 2);
    assert!(d.panic && st.panic_since == Some(s(0)) && st.panic_max == 10);
    // Calm (10 instances) but within a stable window of the trigger: still panicking, holds 10.
    let (d, st2) = decide(&c, c.bounds(None), &w, &st, s(59), 10);
    assert!(d.panic && d.desired == 10, "{d:?}");
    // A full stable window after the last trigger: back to stable, and the state is cleared.
    let (d, st3) = decide(&c, c.bounds(None), &w, &st2, s(60), 10);
    assert!(!d.panic, "{d:?}");
    assert!(!st3.in_panic() && st3.last_panic_trigger.is_none() && st3.panic_max == 0);
}

#[test]
fn config_validation() {
    type Change = fn(&mut ScalingConfig);
    // (change to the defaults, expected error)
    #[rustfmt::skip]
    let cases: &[(Change, ConfigError)] = &[
        (|c| c.concurrency = 0, ConfigError::Concurrency(0)), // below 1
        (|c| c.concurrency = 1001, ConfigError::Concurrency(1001)), // above 1000
        (|c| c.target_utilization = 0.0, ConfigError::TargetUtilization(0.0)), // nothing per instance
        (|c| c.target_utilization = 1.5, ConfigError::TargetUtilization(1.5)), // above the limit
        (|c| c.target_utilization = f64::NAN, ConfigError::TargetUtilization(f64::NAN)), // not a number
        (|c| c.stable_window = Duration::from_millis(500), ConfigError::StableWindow(Duration::from_millis(500))),
        (|c| c.panic_window = s(61), ConfigError::PanicWindow { panic: s(61), stable: s(60) }), // > stable
        (|c| c.panic_threshold = 0.5, ConfigError::PanicThreshold(0.5)), // would always panic
        (|c| c.max_scale_down_rate = 1.0, ConfigError::ScaleDownRate(1.0)), // would never scale down
        (|c| (c.min, c.max) = (51, 50), ConfigError::Min(51)), // above 50
        (|c| c.max = 0, ConfigError::Max(0)), // below 1
        (|c| (c.min, c.max) = (5, 4), ConfigError::MinAboveMax { min: 5, max: 4 }), // crossed
        (|c| c.tick = Duration::ZERO, ConfigError::Tick), // never decides
    ];
    assert_eq!(ScalingConfig::default().validate(), Ok(()));
    for (change, expected) in cases {
        let mut config = ScalingConfig::default();
        change(&mut config);
        let got = config.validate();
        // NaN != NaN, so compare the messages.
        let got = got.map_err(|e| e.to_string());
        assert_eq!(got, Err(expected.to_string()), "{config:?}");
    }
    assert_eq!(
        ConfigError::Concurrency(0).to_string(),
        "concurrency 0 is out of range 1-1000"
    );
}

#[test]
fn serde_shapes() {
    let json = serde_json::to_value(ScalingConfig::default()).expect("serializes");
    assert_eq!(json["stable_window_ms"], 60_000);
    assert_eq!(json["panic_window_ms"], 6_000);
    assert_eq!(json["concurrency"], 80);
    let partial: ScalingConfig =
        serde_json::from_str(r#"{"concurrency": 1, "scale_to_zero_grace_ms": 5000}"#)
            .expect("deserializes");
    assert_eq!(partial.scale_to_zero_grace, s(5));
    assert_eq!(partial.target(), 0.7);

    assert_eq!(
        serde_json::to_string(&Reason::Zero).expect("serializes"),
        "\"zero\""
    );
    assert_eq!(Reason::Schedule.to_string(), "schedule");

    let state = DeciderState {
        panic_since: Some(s(3)),
        last_panic_trigger: None,
        panic_max: 4,
        recent: vec![Recommendation {
            at: s(2),
            desired: 3,
        }],
    };
    let text = serde_json::to_string(&state).expect("serializes");
    assert_eq!(
        text,
        r#"{"panic_since_ms":3000,"last_panic_trigger_ms":null,"panic_max":4,"recent":[{"at_ms":2000,"desired":3}]}"#
    );
    let back: DeciderState = serde_json::from_str(&text).expect("deserializes");
    assert_eq!(back, state);
}
