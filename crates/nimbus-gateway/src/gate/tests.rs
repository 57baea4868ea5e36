use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

fn endpoint(instance: &str, port: u16) -> Arc<Endpoint> {
    Arc::new(Endpoint::new(
        instance.to_string(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    ))
}

fn limits(concurrency: u32, queue_depth: usize) -> GateLimits {
    GateLimits {
        concurrency,
        queue_depth,
        timeout: Duration::from_secs(10),
    }
}

/// A gate whose `on_cold` calls are counted.
fn gate() -> (Arc<VersionGate>, Arc<AtomicUsize>) {
    let colds = Arc::new(AtomicUsize::new(0));
    let counter = colds.clone();
    let gate = VersionGate::new(
        "default".into(),
        "hello".into(),
        "v1".into(),
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        Arc::new(|| {}),
    );
    (gate, colds)
}

/// Yields to other tasks until `cond` holds (at most 1000 times).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held: {what}");
}

#[test]
fn pick_least_outstanding() {
    // (in flight per instance, limit, start, expected)
    #[rustfmt::skip]
    let cases: &[(&[usize], usize, usize, Option<usize>)] = &[
        (&[], 1, 0, None),                 // no instance
        (&[0], 1, 0, Some(0)),             // one idle
        (&[1], 1, 0, None),                // one at the limit
        (&[0, 0, 0], 1, 0, Some(0)),       // tie: first at start
        (&[0, 0, 0], 1, 1, Some(1)),       // tie: rotates with start
        (&[0, 0, 0], 1, 2, Some(2)),       // …
        (&[0, 0, 0], 1, 3, Some(0)),       // start wraps
        (&[0, 0, 0], 1, usize::MAX, Some(0)), // huge start wraps too (MAX % 3 == 0)
        (&[3, 1, 2], 5, 0, Some(1)),       // least outstanding wins over order
        (&[3, 1, 1], 5, 0, Some(1)),       // tie among the least: first from start
        (&[3, 1, 1], 5, 2, Some(2)),       // … from a later start
        (&[1, 1], 1, 0, None),             // all at the limit
        (&[2, 5, 4], 4, 0, Some(0)),       // over-limit instances are skipped
        (&[5, 4, 3], 4, 0, Some(2)),       // only one below the limit
        (&[4, 9, 4], 5, 1, Some(2)),       // tie, start past the first
    ];
    for (inflight, limit, start, want) in cases {
        assert_eq!(
            pick(inflight, *limit, *start),
            *want,
            "{inflight:?} limit {limit} start {start}"
        );
    }
}

#[tokio::test]
async fn free_slots_rotate_and_count() {
    let (gate, colds) = gate();
    let (a, b) = (endpoint("a", 1), endpoint("b", 2));
    gate.update(vec![a.clone(), b.clone()], limits(2, 10));
    let p1 = gate.admit().await.unwrap();
    let p2 = gate.admit().await.unwrap();
    let p3 = gate.admit().await.unwrap();
    let p4 = gate.admit().await.unwrap();
    let names: Vec<&str> = [&p1, &p2, &p3, &p4]
        .iter()
        .map(|p| p.endpoint().instance.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "a", "b"]);
    assert_eq!((a.inflight(), b.inflight()), (2, 2));
    assert_eq!(
        gate.stats(),
        GateStats {
            ready_endpoints: 2,
            inflight: 4,
            queued: 0,
            capacity: 4,
            ..GateStats::default()
        }
    );
    assert_eq!(gate.demand(), 4);
    drop((p1, p2, p3, p4));
    assert_eq!((a.inflight(), b.inflight()), (0, 0));
    assert_eq!(gate.demand(), 0);
    assert_eq!(colds.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn least_outstanding_after_a_slot_frees() {
    let (gate, _) = gate();
    let (a, b) = (endpoint("a", 1), endpoint("b", 2));
    gate.update(vec![a.clone(), b.clone()], limits(3, 10));
    let pa = gate.admit().await.unwrap(); // a
    let pb = gate.admit().await.unwrap(); // b
    let pa2 = gate.admit().await.unwrap(); // a (tie, rotation)
    drop(pb); // a = 2, b = 0
    let next = gate.admit().await.unwrap();
    assert_eq!(next.endpoint().instance, "b");
    let next2 = gate.admit().await.unwrap(); // a = 2, b = 1
    assert_eq!(next2.endpoint().instance, "b");
    drop((pa, pa2, next, next2));
    assert_eq!((a.inflight(), b.inflight()), (0, 0));
}

#[tokio::test]
async fn queue_is_fifo() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(1, 10));
    let first = gate.admit().await.unwrap();
    let (order_tx, mut order_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..5usize {
        let waiter = gate.clone();
        let order_tx = order_tx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = waiter.admit().await.unwrap();
            order_tx.send(i).unwrap();
            drop(permit);
        }));
        until("queued in order", || gate.stats().queued == i + 1).await;
    }
    assert_eq!(a.inflight(), 1);
    drop(first);
    for task in tasks {
        task.await.unwrap();
    }
    let mut order = Vec::new();
    while let Ok(i) = order_rx.try_recv() {
        order.push(i);
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(a.inflight(), 0);
    assert_eq!(gate.demand(), 0);
}

#[tokio::test]
async fn a_retired_instance_is_never_handed_a_queued_request() {
    let (gate, _) = gate();
    let (a, b) = (endpoint("a", 1), endpoint("b", 2));
    gate.update(vec![a.clone()], limits(1, 10));
    let held = gate.admit().await.unwrap();
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(|p| p.endpoint().instance.clone()) }
    });
    until("queued", || gate.stats().queued == 1).await;
    // Its instance is about to be killed: the slot it frees is not given to the waiter...
    a.retire();
    drop(held);
    assert_eq!((a.inflight(), gate.stats().queued), (0, 1));
    // ...even once it is the only instance and every instance is ejected-or-worse.
    gate.update(vec![a.clone()], limits(1, 10));
    assert_eq!(gate.stats().queued, 1);
    // A replacement takes it.
    gate.update(vec![a.clone(), b.clone()], limits(1, 10));
    assert_eq!(waiting.await.unwrap().unwrap(), "b");
}

#[tokio::test]
async fn newcomer_does_not_overtake_the_queue() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(1, 10));
    let held = gate.admit().await.unwrap();
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    until("queued", || gate.stats().queued == 1).await;
    // The slot goes to the waiter inside the drop, before any newcomer can see it free.
    drop(held);
    assert_eq!(a.inflight(), 1);
    assert_eq!(gate.stats().queued, 0);
    waiting.await.unwrap().unwrap();
    assert_eq!(a.inflight(), 0);
}

#[tokio::test]
async fn queue_full_is_rejected() {
    let (gate, _) = gate();
    gate.update(vec![endpoint("a", 1)], limits(1, 2));
    let held = gate.admit().await.unwrap();
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit().await.map(drop) })
        })
        .collect();
    until("two queued", || gate.stats().queued == 2).await;
    assert_eq!(
        gate.admit().await.unwrap_err(),
        AdmitError::QueueFull { depth: 2 }
    );
    assert_eq!(gate.stats().rejected_queue_full, 1);
    assert_eq!(gate.demand(), 3);
    drop(held);
    for task in queued {
        task.await.unwrap().unwrap();
    }
    assert_eq!(gate.stats().rejected_queue_full, 1);
    assert_eq!(gate.demand(), 0);
}

#[tokio::test]
async fn zero_queue_depth_rejects_at_once() {
    let (gate, colds) = gate();
    gate.update(vec![], limits(1, 0));
    assert_eq!(
        gate.admit().await.unwrap_err(),
        AdmitError::QueueFull { depth: 0 }
    );
    assert_eq!(
        colds.load(Ordering::SeqCst),
        1,
        "the activator is poked anyway"
    );
    assert_eq!(gate.stats().cold_holds, 0);
}

#[tokio::test(start_paused = true)]
async fn waiting_past_the_timeout() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(
        vec![a.clone()],
        GateLimits {
            concurrency: 1,
            queue_depth: 10,
            timeout: Duration::from_secs(2),
        },
    );
    let held = gate.admit().await.unwrap();
    let started = Instant::now();
    let error = gate.admit().await.unwrap_err();
    assert_eq!(
        error,
        AdmitError::Timeout {
            waited: Duration::from_secs(2),
            cold: false
        }
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(gate.stats().timed_out, 1);
    assert_eq!(gate.stats().queued, 0);
    // The permit's deadline is arrival + timeout.
    assert_eq!(
        held.deadline() - started,
        Duration::ZERO + Duration::from_secs(2)
    );
    drop(held);
    assert_eq!(a.inflight(), 0);

    // Cold: no instance ever comes.
    gate.update(vec![], gate.limits());
    let error = gate.admit().await.unwrap_err();
    assert!(
        matches!(error, AdmitError::Timeout { cold: true, .. }),
        "{error:?}"
    );
    assert_eq!(gate.stats().timed_out, 2);
    assert!(
        gate.take_cold_waits().is_empty(),
        "timeouts are not cold waits"
    );
}

#[tokio::test]
async fn activator_holds_until_an_instance_is_ready() {
    let (gate, colds) = gate();
    gate.update(vec![], limits(20, 100));
    let held: Vec<_> = (0..20)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let permit = gate.admit().await?;
                Ok::<_, AdmitError>(permit.endpoint().instance.clone())
            })
        })
        .collect();
    until("all held", || gate.stats().queued == 20).await;
    assert_eq!(
        colds.load(Ordering::SeqCst),
        20,
        "one poke per held request"
    );
    assert_eq!(gate.stats().cold_holds, 20);
    assert_eq!(gate.stats().ready_endpoints, 0);
    assert_eq!(gate.demand(), 20);

    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(20, 100));
    // Released inside update(): every waiter already holds its permit.
    assert_eq!(gate.stats().queued, 0);
    assert_eq!(a.inflight(), 20);
    for task in held {
        assert_eq!(task.await.unwrap().unwrap(), "a");
    }
    assert_eq!(a.inflight(), 0);
    assert_eq!(gate.take_cold_waits().len(), 20);
    assert!(gate.take_cold_waits().is_empty(), "taken once");
    assert_eq!(colds.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn cancelled_waiter_frees_its_place() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(1, 1));
    let held = gate.admit().await.unwrap();
    let task = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    until("queued", || gate.stats().queued == 1).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(gate.stats().queued, 0, "the place is free again");
    let again = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    until("queued again", || gate.stats().queued == 1).await;
    drop(held);
    again.await.unwrap().unwrap();
    assert_eq!(a.inflight(), 0);
    assert_eq!(gate.stats().timed_out, 0, "a cancellation is not a timeout");
}

#[tokio::test]
async fn permit_granted_to_a_cancelled_waiter_moves_on() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(1, 10));
    let held = gate.admit().await.unwrap();
    let spawn_waiter = || {
        let gate = gate.clone();
        tokio::spawn(async move { gate.admit().await.map(drop) })
    };
    let first = spawn_waiter();
    until("first queued", || gate.stats().queued == 1).await;
    let second = spawn_waiter();
    until("second queued", || gate.stats().queued == 2).await;
    // The slot is sent to `first`, which goes away before it looks at it.
    drop(held);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    second.await.unwrap().unwrap();
    assert_eq!(a.inflight(), 0);
    assert_eq!(gate.demand(), 0);
}

#[tokio::test]
async fn removed_endpoint_gets_no_new_requests() {
    let (gate, _) = gate();
    let (a, b) = (endpoint("a", 1), endpoint("b", 2));
    gate.update(vec![a.clone(), b.clone()], limits(1, 10));
    let pa = gate.admit().await.unwrap();
    let pb = gate.admit().await.unwrap();
    assert_eq!(pa.endpoint().instance, "a");
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move {
            let permit = gate.admit().await?;
            Ok::<_, AdmitError>(permit.endpoint().instance.clone())
        }
    });
    until("queued", || gate.stats().queued == 1).await;
    gate.update(vec![b.clone()], limits(1, 10));
    assert_eq!(a.inflight(), 1, "a's request is still in flight");
    drop(pa); // frees a slot on a, which is gone: the waiter keeps waiting
    assert_eq!(a.inflight(), 0);
    assert_eq!(gate.stats().queued, 1);
    drop(pb);
    assert_eq!(waiter.await.unwrap().unwrap(), "b");
    assert_eq!((a.inflight(), b.inflight()), (0, 0));
    assert_eq!(gate.stats().inflight, 0);
}

#[tokio::test]
async fn raising_the_limit_releases_waiters() {
    let (gate, _) = gate();
    let a = endpoint("a", 1);
    gate.update(vec![a.clone()], limits(1, 10));
    let held = gate.admit().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit().await })
        })
        .collect();
    until("three queued", || gate.stats().queued == 3).await;
    gate.update(vec![a.clone()], limits(4, 10));
    assert_eq!(gate.stats().queued, 0);
    assert_eq!(a.inflight(), 4);
    let mut permits = Vec::new();
    for task in waiters {
        permits.push(task.await.unwrap().unwrap());
    }
    // Lowering it lets the requests in flight finish but admits nothing new until below.
    gate.update(vec![a.clone()], limits(2, 10));
    drop(held);
    drop(permits.pop());
    assert_eq!(a.inflight(), 2);
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    until("queued at the lower limit", || gate.stats().queued == 1).await;
    drop(permits);
    waiter.await.unwrap().unwrap();
    assert_eq!(a.inflight(), 0);
}

#[test]
fn limits_are_clamped() {
    let (gate, _) = gate();
    // (given concurrency, kept)
    let cases = [(0, 1), (1, 1), (80, 80), (1000, 1000), (1001, 1000)];
    for (given, kept) in cases {
        gate.update(vec![], limits(given, 10));
        assert_eq!(gate.limits().concurrency, kept, "{given}");
    }
    gate.update(
        vec![],
        GateLimits {
            timeout: Duration::MAX,
            ..limits(1, 1)
        },
    );
    assert_eq!(gate.limits().timeout, MAX_TIMEOUT);
    assert_eq!(GateLimits::default().concurrency, 80);
}

#[tokio::test(start_paused = true)]
async fn average_demand_is_time_weighted() {
    let (gate, _) = gate();
    gate.update(vec![endpoint("a", 1)], limits(10, 10));
    // Nothing held for 1 s: zero.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gate.sample_demand(None).average, 0.0);

    // Two requests for 1 s, then one for another 1 s: (2 + 1) / 2 = 1.5.
    let first = gate.admit().await.unwrap();
    let second = gate.admit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(second);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let average = gate.sample_demand(None).average;
    assert!((average - 1.5).abs() < 1e-6, "{average}");

    // A short request between two samples still counts: 100 ms of 1 over 1 s = 0.1 (plus the
    // long-held `first`, 1.0).
    let short = gate.admit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(short);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let average = gate.sample_demand(None).average;
    assert!((average - 1.1).abs() < 1e-6, "{average}");
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn idle_gates_keep_their_marker_and_a_later_sample_is_not_diluted() {
    let (gate, _) = gate();
    gate.update(vec![endpoint("a", 1)], limits(10, 10));
    let first = gate.sample_demand(None);
    assert!(first.idle);
    assert_eq!(first.average, 0.0);

    // Nothing happens for 9 s: the marker stays put, so a sampler may pass the gate over.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(gate.demand_changes(), first.changes);

    // The sampler's last pass was here; a request is then held for the last 0.5 s of 1 s.
    let previous_pass = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = gate.admit().await.unwrap();
    assert_ne!(
        gate.demand_changes(),
        first.changes,
        "an admission moves the marker"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sample = gate.sample_demand(Some(previous_pass));
    assert!((sample.average - 0.5).abs() < 1e-6, "{sample:?}");
    assert!(!sample.idle);

    // Released: idle again, with a new marker.
    drop(held);
    let after = gate.sample_demand(None);
    assert!(after.idle);
    assert_eq!(gate.demand_changes(), after.changes);
}

#[tokio::test(start_paused = true)]
async fn demand_is_reported_once_until_a_sample_finds_the_gate_idle() {
    let reports = Arc::new(AtomicUsize::new(0));
    let counter = reports.clone();
    let gate = VersionGate::new(
        "default".into(),
        "hello".into(),
        "v1".into(),
        Arc::new(|| {}),
        Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
    gate.update(vec![endpoint("a", 1)], limits(10, 10));
    // An update may release queued requests, so it counts as a change too; an idle sample
    // re-arms the report.
    assert!(gate.sample_demand(None).idle);
    let base = reports.load(Ordering::SeqCst);
    let count = || reports.load(Ordering::SeqCst) - base;

    let first = gate.admit().await.unwrap();
    let second = gate.admit().await.unwrap();
    assert_eq!(count(), 1, "one report for a burst");
    assert!(!gate.sample_demand(None).idle);
    drop(second);
    drop(first);
    assert_eq!(count(), 1, "a busy sample does not re-arm the report");

    assert!(gate.sample_demand(None).idle);
    let again = gate.admit().await.unwrap();
    assert_eq!(
        count(),
        2,
        "the first request after an idle sample reports again"
    );
    drop(again);
    assert_eq!(count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_version_refuses_cold_requests_and_releases_held_ones() {
    let (gate, colds) = gate();
    gate.update(Vec::new(), limits(10, 10));
    let held = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await }
    });
    until("held", || gate.stats().queued == 1).await;

    gate.set_failure(Some("instance exited with code 1"));
    let released = held.await.expect("joined");
    assert!(
        matches!(&released, Err(AdmitError::Failing { reason }) if &**reason == "instance exited with code 1"),
        "{released:?}"
    );
    assert_eq!(gate.stats().queued, 0);

    // Refused at once, and the activator still hears of it (it retries on its backoff).
    let before = colds.load(Ordering::SeqCst);
    assert!(matches!(
        gate.admit().await,
        Err(AdmitError::Failing { .. })
    ));
    assert_eq!(colds.load(Ordering::SeqCst), before + 1);

    // A ready instance serves, failure or not.
    gate.update(vec![endpoint("a", 1)], limits(10, 10));
    drop(gate.admit().await.expect("a slot"));

    // Cleared: a cold request is held again (until its timeout here).
    gate.set_failure(None);
    gate.update(Vec::new(), limits(10, 10));
    assert!(matches!(
        gate.admit().await,
        Err(AdmitError::Timeout { cold: true, .. })
    ));
}
