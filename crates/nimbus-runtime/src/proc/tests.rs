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

#[tokio::test]
async fn a_group_has_members_while_running_and_none_as_a_zombie_or_once_reaped() {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let pgid = child.id() as i32;
    let started = start_time(pgid).expect("the leader's start time");
    assert!(group_has_members(pgid, started), "running");
    assert!(
        !group_has_members(pgid, started + 1),
        "another start time: not ours"
    );

    signal_group(pgid, started, Signal::SIGKILL).expect("kill the group");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stat(pgid).is_some_and(|s| s.is_running()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Unreaped: the kernel still knows the zombie, so only the scan can say "no members".
    assert!(
        group_may_have_members(pgid),
        "a zombie is still in the group"
    );
    assert!(
        !group_has_members(pgid, started),
        "a zombie is not a member"
    );

    child.wait().expect("reap");
    assert!(
        !group_may_have_members(pgid),
        "reaped: the kernel knows no member"
    );
    assert!(!group_has_members(pgid, started), "reaped");
}
