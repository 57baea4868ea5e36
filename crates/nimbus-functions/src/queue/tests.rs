//! The queue against real SQLite files in a temp dir. Restarts are simulated by dropping the
//! queue and opening the same file again, as a killed server would.

use serde_json::json;

use super::*;
use crate::invoke::ErrorKind;

const LEASE: Duration = Duration::from_secs(60);
const T0: u64 = 1_700_000_000_000;

fn new_invocation(function: &str, event: Value) -> NewInvocation {
    NewInvocation {
        namespace: "default".into(),
        function: function.into(),
        qualifier: None,
        source: "api".into(),
        event,
        callback_url: None,
        retry: RetryPolicy::default(),
    }
}

fn failure(message: &str) -> FunctionError {
    FunctionError {
        kind: ErrorKind::Handler,
        error_type: "ValueError".into(),
        message: message.into(),
        traceback: vec!["Traceback (most recent call last):".into()],
    }
}

fn open(dir: &tempfile::TempDir) -> InvocationQueue {
    InvocationQueue::open(&dir.path().join("nimbus.db")).unwrap()
}

#[test]
fn enqueue_claim_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let id = queue
        .enqueue(&new_invocation("resize", json!({"key": "a.png"})), T0)
        .unwrap();
    assert!(id.starts_with("inv-") && id.len() == 20, "{id}");

    let pending = queue.get(&id).unwrap().unwrap();
    assert_eq!(pending.status, InvocationStatus::Pending);
    assert_eq!((pending.attempts, pending.next_at_ms), (0, Some(T0)));

    let claim = queue.claim_next(T0 + 5, LEASE).unwrap().unwrap();
    assert_eq!(claim.invocation.id, id);
    assert_eq!(claim.invocation.status, InvocationStatus::Running);
    assert_eq!(claim.invocation.attempts, 1);
    assert_eq!(claim.invocation.event, json!({"key": "a.png"}));
    assert_eq!(claim.invocation.lease_until_ms, Some(T0 + 5 + 60_000));
    // Nothing else is due.
    assert!(queue.claim_next(T0 + 5, LEASE).unwrap().is_none());

    let done = queue
        .complete(&claim, Some("v2"), Ok(&json!({"ok": true})), T0 + 100)
        .unwrap();
    assert_eq!(done, Completion::Succeeded);
    let finished = queue.get(&id).unwrap().unwrap();
    assert_eq!(finished.status, InvocationStatus::Succeeded);
    assert_eq!(finished.result, Some(json!({"ok": true})));
    assert_eq!(finished.version.as_deref(), Some("v2"));
    assert_eq!(finished.finished_at_ms, Some(T0 + 100));
    assert_eq!((finished.next_at_ms, finished.lease_until_ms), (None, None));
    // A second completion of the same claim changes nothing.
    assert_eq!(
        queue
            .complete(&claim, None, Err(&failure("late")), T0 + 200)
            .unwrap(),
        Completion::Stale
    );
    assert_eq!(queue.get(&id).unwrap().unwrap(), finished);
}

#[test]
fn failing_invocation_retries_then_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let id = queue
        .enqueue(&new_invocation("flaky", json!(1)), T0)
        .unwrap();

    // (claim at, expected completion)
    let steps: &[(u64, Completion)] = &[
        (
            T0,
            Completion::Retrying {
                next_at_ms: T0 + 10 + 1_000,
            },
        ),
        (
            T0 + 1_010,
            Completion::Retrying {
                next_at_ms: T0 + 1_020 + 2_000,
            },
        ),
        (T0 + 3_020, Completion::DeadLettered),
    ];
    for (i, (at, expected)) in steps.iter().enumerate() {
        // Not claimable before it is due.
        if i > 0 {
            assert!(
                queue.claim_next(at - 1, LEASE).unwrap().is_none(),
                "step {i}"
            );
        }
        let claim = queue.claim_next(*at, LEASE).unwrap().unwrap();
        assert_eq!(claim.invocation.attempts, i as u32 + 1);
        let got = queue
            .complete(
                &claim,
                Some("v1"),
                Err(&failure(&format!("try {i}"))),
                at + 10,
            )
            .unwrap();
        assert_eq!(got, *expected, "step {i}");
    }
    let dead = queue.get(&id).unwrap().unwrap();
    assert_eq!(dead.status, InvocationStatus::Dead);
    assert_eq!(dead.attempts, 3);
    assert_eq!(
        dead.error.as_ref().map(|e| e.message.as_str()),
        Some("try 2")
    );
    assert_eq!(dead.finished_at_ms, Some(T0 + 3_030));
    // Dead is final.
    assert!(queue.claim_next(T0 + 1_000_000, LEASE).unwrap().is_none());
}

#[test]
fn success_after_a_retry_keeps_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let id = queue
        .enqueue(&new_invocation("f", json!(null)), T0)
        .unwrap();
    let first = queue.claim_next(T0, LEASE).unwrap().unwrap();
    queue
        .complete(&first, None, Err(&failure("once")), T0)
        .unwrap();
    let second = queue.claim_next(T0 + 1_000, LEASE).unwrap().unwrap();
    queue
        .complete(&second, None, Ok(&json!(2)), T0 + 1_000)
        .unwrap();
    let inv = queue.get(&id).unwrap().unwrap();
    assert_eq!(inv.status, InvocationStatus::Succeeded);
    assert_eq!((inv.attempts, inv.result), (2, Some(json!(2))));
    assert_eq!(inv.error.map(|e| e.message), Some("once".into()));
}

#[test]
fn claims_in_due_order() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let a = queue
        .enqueue(&new_invocation("f", json!("a")), T0 + 2)
        .unwrap();
    let b = queue
        .enqueue(&new_invocation("f", json!("b")), T0 + 1)
        .unwrap();
    let c = queue
        .enqueue(&new_invocation("f", json!("c")), T0 + 3)
        .unwrap();
    let order: Vec<String> = (0..3)
        .map(|_| {
            queue
                .claim_next(T0 + 10, LEASE)
                .unwrap()
                .unwrap()
                .invocation
                .id
        })
        .collect();
    assert_eq!(order, vec![b, a, c]);
}

#[test]
fn accepted_invocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let queue = open(&dir);
        queue
            .enqueue(&new_invocation("f", json!({"n": 1})), T0)
            .unwrap()
        // Dropped without any shutdown step, as kill -9 would.
    };
    let queue = open(&dir);
    let claim = queue.claim_next(T0 + 1, LEASE).unwrap().unwrap();
    assert_eq!(claim.invocation.id, id);
    assert_eq!(claim.invocation.event, json!({"n": 1}));
}

#[test]
fn a_crashed_servers_claims_return_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (id, old_claim) = {
        let queue = open(&dir);
        let id = queue.enqueue(&new_invocation("f", json!(1)), T0).unwrap();
        let claim = queue.claim_next(T0, LEASE).unwrap().unwrap();
        (id, claim)
        // The server dies mid-attempt.
    };
    let queue = open(&dir);
    assert_eq!(queue.recover_running(T0 + 500).unwrap(), 1);
    let back = queue.get(&id).unwrap().unwrap();
    assert_eq!(back.status, InvocationStatus::Pending);
    // The lost attempt is not counted: it runs again as attempt 1.
    assert_eq!((back.attempts, back.next_at_ms), (0, Some(T0 + 500)));
    let claim = queue.claim_next(T0 + 500, LEASE).unwrap().unwrap();
    assert_eq!(claim.invocation.attempts, 1);
    // The dead server's claim is outdated.
    assert_eq!(
        queue
            .complete(&old_claim, None, Ok(&json!(0)), T0 + 600)
            .unwrap(),
        Completion::Stale
    );
    assert_eq!(
        queue
            .complete(&claim, None, Ok(&json!(1)), T0 + 600)
            .unwrap(),
        Completion::Succeeded
    );
}

#[test]
fn lapsed_leases_are_reclaimed_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let id = queue.enqueue(&new_invocation("f", json!(1)), T0).unwrap();
    let lease = Duration::from_secs(10);
    let stuck = queue.claim_next(T0, lease).unwrap().unwrap();
    // (now, claimable?)
    let cases: &[(u64, bool)] = &[
        (T0 + 9_999, false), // lease still held
        (T0 + 10_000, true), // lease lapsed at its end
    ];
    let mut fresh = None;
    for (now, claimable) in cases {
        let got = queue.claim_next(*now, lease).unwrap();
        assert_eq!(got.is_some(), *claimable, "at {now}");
        fresh = fresh.or(got);
    }
    let fresh = fresh.unwrap();
    assert_eq!(fresh.invocation.id, id);
    assert_eq!(
        fresh.invocation.attempts, 1,
        "the lapsed attempt is not counted"
    );
    // The stuck worker finishes late: ignored; the new claim's result counts.
    assert_eq!(
        queue
            .complete(&stuck, None, Ok(&json!("old")), T0 + 11_000)
            .unwrap(),
        Completion::Stale
    );
    queue
        .complete(&fresh, None, Ok(&json!("new")), T0 + 11_000)
        .unwrap();
    assert_eq!(queue.get(&id).unwrap().unwrap().result, Some(json!("new")));
}

#[test]
fn listing_by_function_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let a1 = queue.enqueue(&new_invocation("a", json!(1)), T0).unwrap();
    let a2 = queue
        .enqueue(&new_invocation("a", json!(2)), T0 + 1)
        .unwrap();
    let b1 = queue
        .enqueue(&new_invocation("b", json!(3)), T0 + 2)
        .unwrap();
    // a1 goes to the dead-letter list at once (1 attempt).
    let mut one_try = new_invocation("a", json!(4));
    one_try.retry.max_attempts = 1;
    let a3 = queue.enqueue(&one_try, T0 + 3).unwrap();
    let mut claim = queue.claim_next(T0 + 10, LEASE).unwrap().unwrap();
    while claim.invocation.id != a3 {
        queue
            .complete(&claim, None, Ok(&json!("ok")), T0 + 10)
            .unwrap();
        claim = queue.claim_next(T0 + 10, LEASE).unwrap().unwrap();
    }
    queue
        .complete(&claim, None, Err(&failure("x")), T0 + 10)
        .unwrap();

    let ids =
        |function: Option<&str>, status: Option<InvocationStatus>, limit: u32| -> Vec<String> {
            let filter = ListFilter {
                namespace: Some("default".into()),
                function: function.map(str::to_owned),
                status,
                limit,
            };
            queue
                .list(&filter)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect()
        };
    // (function, status, limit, expected ids newest first)
    type Case<'a> = (
        Option<&'a str>,
        Option<InvocationStatus>,
        u32,
        Vec<&'a String>,
    );
    let cases: Vec<Case<'_>> = vec![
        (Some("a"), None, 100, vec![&a3, &a2, &a1]),
        (Some("a"), Some(InvocationStatus::Dead), 100, vec![&a3]),
        (
            Some("a"),
            Some(InvocationStatus::Succeeded),
            100,
            vec![&a2, &a1],
        ),
        (Some("b"), None, 100, vec![&b1]),
        (None, None, 2, vec![&a3, &b1]), // limit
        (Some("c"), None, 100, vec![]),
    ];
    for (function, status, limit, expected) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(
            ids(function, status, limit),
            expected,
            "{function:?} {status:?}"
        );
    }
    let other_ns = ListFilter {
        namespace: Some("other".into()),
        ..ListFilter::default()
    };
    assert!(queue.list(&other_ns).unwrap().is_empty());
    assert!(queue.get("inv-0000000000000000").unwrap().is_none());
}

#[test]
fn timer_fires_are_enqueued_once() {
    let dir = tempfile::tempdir().unwrap();
    let fire = |queue: &InvocationQueue, at: u64| {
        queue
            .enqueue_timer_fire("t1", at, &new_invocation("tick", json!({"at": at})), at + 5)
            .unwrap()
    };
    {
        let queue = open(&dir);
        assert_eq!(queue.timer_last_fired("t1").unwrap(), None);
        assert!(fire(&queue, T0).is_some());
        assert!(fire(&queue, T0).is_none(), "the same fire twice");
        assert!(fire(&queue, T0 - 60_000).is_none(), "an older fire");
        assert_eq!(queue.timer_last_fired("t1").unwrap(), Some(T0));
    }
    // After a restart the record is still there.
    let queue = open(&dir);
    assert!(fire(&queue, T0).is_none());
    assert!(fire(&queue, T0 + 60_000).is_some());
    let all = queue.list(&ListFilter::default()).unwrap();
    assert_eq!(all.len(), 2);
    queue.forget_timer("t1").unwrap();
    assert_eq!(queue.timer_last_fired("t1").unwrap(), None);
}

#[test]
fn next_due_purge_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    assert_eq!(queue.next_due_ms().unwrap(), None);
    let done = queue.enqueue(&new_invocation("f", json!(1)), T0).unwrap();
    let claim = queue.claim_next(T0, LEASE).unwrap().unwrap();
    queue
        .complete(&claim, None, Ok(&json!(1)), T0 + 10)
        .unwrap();
    let waiting = queue
        .enqueue(&new_invocation("f", json!(2)), T0 + 20)
        .unwrap();
    assert_eq!(queue.next_due_ms().unwrap(), Some(T0 + 20));
    // Only finished rows older than the cutoff go.
    assert_eq!(queue.purge_finished(T0 + 10).unwrap(), 0);
    assert_eq!(queue.purge_finished(T0 + 11).unwrap(), 1);
    assert!(queue.get(&done).unwrap().is_none());
    assert!(queue.get(&waiting).unwrap().is_some());
    assert_eq!(queue.delete_function("default", "f").unwrap(), 1);
    assert_eq!(queue.next_due_ms().unwrap(), None);
}

#[test]
fn invalid_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&dir);
    let mut bad = new_invocation("f", json!(1));
    bad.retry.max_attempts = 0;
    assert!(matches!(
        queue.enqueue(&bad, T0),
        Err(QueueError::Policy(_))
    ));
}

#[test]
fn statuses() {
    let cases: &[(&str, Option<InvocationStatus>)] = &[
        ("pending", Some(InvocationStatus::Pending)),
        ("running", Some(InvocationStatus::Running)),
        ("succeeded", Some(InvocationStatus::Succeeded)),
        ("dead", Some(InvocationStatus::Dead)),
        ("failed", Some(InvocationStatus::Dead)), // the CLI's word for the dead-letter list
        ("done", None),
    ];
    for (text, expected) in cases {
        assert_eq!(InvocationStatus::parse(text), *expected, "{text}");
    }
}

#[test]
fn shares_the_file_with_other_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE services (name TEXT); PRAGMA user_version = 7;")
            .unwrap();
    }
    let queue = InvocationQueue::open(&path).unwrap();
    queue.enqueue(&new_invocation("f", json!(1)), T0).unwrap();
    drop(queue);
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7, "the store's migration counter is untouched");
}
