use super::*;

#[test]
fn function_gb_seconds_round_duration_up_to_a_millisecond() {
    let cases: &[(Duration, u64, u64)] = &[
        // (duration, memory MiB, expected MiB·ms)
        (Duration::ZERO, 128, 0),                             // nothing ran
        (Duration::from_nanos(1), 128, 128),                  // 1 ns bills a whole ms
        (Duration::from_micros(999), 128, 128),               // just under 1 ms
        (Duration::from_millis(1), 128, 128),                 // exactly 1 ms
        (Duration::from_micros(1_001), 128, 256),             // just over 1 ms
        (Duration::from_millis(100), 1024, 102_400),          // 0.1 s × 1 GB = 0.1 GB-s
        (Duration::from_secs(1), 1024, MIB_MS_PER_GB_SECOND), // 1 GB-s exactly
        (Duration::from_millis(250), 0, 0),                   // zero memory
        (Duration::MAX, u64::MAX, u64::MAX),                  // saturates
    ];
    for (duration, mib, expected) in cases {
        assert_eq!(
            function_mib_ms(*duration, *mib),
            *expected,
            "{duration:?} × {mib} MiB"
        );
    }
}

#[test]
fn trapezoid_rounds_to_nearest_mib_ms() {
    const MIB: u64 = 1 << 20;
    let cases: &[(u64, u64, u64, u64)] = &[
        // (rss start, rss end, elapsed ms, expected MiB·ms)
        (0, 0, 1_000, 0),
        (MIB, MIB, 1_000, 1_000),                 // flat 1 MiB for 1 s
        (0, 2 * MIB, 1_000, 1_000),               // ramp 0 → 2 MiB averages 1 MiB
        (MIB, MIB, 0, 0),                         // no time passed
        (MIB / 2, 0, 1, 0),                       // 0.25 MiB·ms rounds down
        (MIB, 0, 1, 1),                           // 0.5 MiB·ms rounds half up
        (u64::MAX, u64::MAX, u64::MAX, u64::MAX), // saturates
    ];
    for (start, end, ms, expected) in cases {
        assert_eq!(
            trapezoid_mib_ms(*start, *end, *ms),
            *expected,
            "{start} → {end} over {ms} ms"
        );
    }
}

#[test]
fn addition_saturates_and_sums() {
    let one = Usage {
        cpu_micros: 1,
        requests: 2,
        egress_bytes: 3,
        ..Usage::default()
    };
    let total: Usage = [one, one, one].into_iter().sum();
    assert_eq!(total.cpu_micros, 3);
    assert_eq!(total.requests, 6);
    assert_eq!(total.egress_bytes, 9);

    let huge = Usage {
        cpu_micros: u64::MAX,
        ..Usage::default()
    };
    assert_eq!((huge + one).cpu_micros, u64::MAX);
    assert!(Usage::default().is_zero());
    assert!(!one.is_zero());
}

#[test]
fn display_conversions() {
    let u = Usage {
        cpu_micros: 1_500_000,
        memory_allocated_mib_ms: MIB_MS_PER_GB_SECOND * 2,
        egress_bytes: BYTES_PER_GB / 2,
        function_mib_ms: MIB_MS_PER_GB_SECOND / 4,
        ..Usage::default()
    };
    assert_eq!(u.cpu_seconds(), 1.5);
    assert_eq!(u.memory_allocated_gb_seconds(), 2.0);
    assert_eq!(u.egress_gb(), 0.5);
    assert_eq!(u.function_gb_seconds(), 0.25);
}
