use super::*;

#[test]
fn parse_stat_fields() {
    let cases = &[
        (
            "123 (sleep) S 1 123 123 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 100",
            Some(('S', 123, 98765)),
        ),
        // Command names may hold spaces and parentheses.
        (
            "77 (my (odd) app) R 1 70 70 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 1 1",
            Some(('R', 70, 42)),
        ),
        // Zombie.
        (
            "9 (sh) Z 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0",
            Some(('Z', 9, 7)),
        ),
        ("", None),                       // empty
        ("12 (sh) S 1 12", None),         // truncated before field 22
        ("12 sh S 1 12 12 0 -1 0", None), // no parentheses
    ];
    for (text, expected) in cases {
        let got = parse_stat(text).map(|s| (s.state, s.pgrp, s.start_time));
        assert_eq!(got, *expected, "{text:?}");
    }
}

#[test]
fn own_process_is_alive_and_own_group_is_never_ours() {
    let me = std::process::id() as i32;
    let st = stat(me).expect("own stat");
    assert!(st.is_running());
    assert!(is_alive(me, st.start_time));
    assert!(!is_alive(me, st.start_time + 1), "wrong start time");
    assert!(!group_is_ours(getpgrp().as_raw(), st.start_time));
    assert!(!group_is_ours(0, 0));
    assert!(!group_is_ours(1, 0));
}
