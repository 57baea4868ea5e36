use super::*;
use crate::balance::hash_key;

fn all(loads: &[usize]) -> Vec<Candidate> {
    loads
        .iter()
        .map(|&load| Candidate {
            load,
            usable: true,
            weight: 1,
        })
        .collect()
}

/// Runs `n` picks over fixed candidates and counts picks per index.
fn counts(chooser: &mut Chooser, candidates: &[Candidate], n: usize, hint: PickHint) -> Vec<usize> {
    let mut counts = vec![0; candidates.len()];
    for k in 0..n {
        let hint = PickHint {
            draws: hint
                .draws
                .wrapping_add((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ..hint
        };
        if let Some(i) = chooser.pick(candidates.len(), hint, |i| candidates[i]) {
            counts[i] += 1;
        }
    }
    counts
}

#[test]
fn distributions() {
    let hint = PickHint::default();
    let mut unusable = all(&[0, 0, 0]);
    unusable[1].usable = false;
    let mut weighted = all(&[0, 0, 0]);
    weighted[0].weight = 3;
    // (algorithm, candidates, picks, expected counts per instance)
    type Case = (Option<Algorithm>, Vec<Candidate>, usize, Vec<usize>);
    let cases: Vec<Case> = vec![
        (None, all(&[0, 0, 0]), 30, vec![10, 10, 10]), // idle ties rotate
        (None, all(&[5, 1, 3]), 3, vec![0, 3, 0]),     // fewest in flight wins
        (
            Some(Algorithm::RoundRobin),
            all(&[9, 0, 0]),
            30,
            vec![10, 10, 10],
        ), // loads ignored
        (
            Some(Algorithm::RoundRobin),
            unusable.clone(),
            30,
            vec![15, 0, 15],
        ), // full skipped
        (Some(Algorithm::Weighted), weighted, 50, vec![30, 10, 10]), // 3:1:1
        (
            Some(Algorithm::Weighted),
            unusable.clone(),
            10,
            vec![5, 0, 5],
        ), // weight 0 when full
        (None, unusable, 10, vec![5, 0, 5]),           // default skips too
    ];
    for (algorithm, candidates, n, want) in cases {
        let mut chooser = Chooser::new(algorithm.as_ref());
        assert_eq!(
            counts(&mut chooser, &candidates, n, hint),
            want,
            "{algorithm:?} {candidates:?}"
        );
    }
}

#[test]
fn least_request_prefers_the_lighter_of_two() {
    let mut chooser = Chooser::new(Some(&Algorithm::LeastRequest));
    // One instance far busier than the others: it only wins when drawn against itself, which
    // two distinct draws never do.
    let candidates = all(&[100, 0, 0]);
    let got = counts(&mut chooser, &candidates, 300, PickHint::default());
    assert_eq!(got[0], 0, "{got:?}");
    assert!(got[1] > 50 && got[2] > 50, "{got:?}");
    // Only usable candidates are drawn.
    let mut one = all(&[0, 0, 0]);
    one[0].usable = false;
    one[2].usable = false;
    assert_eq!(
        counts(&mut chooser, &one, 20, PickHint::default()),
        [0, 20, 0]
    );
}

#[test]
fn hash_keeps_a_key_on_its_instance() {
    let on = HashOn::ClientIp;
    let mut chooser = Chooser::new(Some(&Algorithm::Hash(on)));
    chooser.set_instances(&["a", "b", "c"]);
    let candidates = all(&[0, 0, 0]);
    let mut owners = std::collections::BTreeSet::new();
    for key in 0..30u32 {
        let hint = PickHint {
            hash: Some(hash_key(&key.to_be_bytes())),
            draws: 0,
        };
        let first = chooser.pick(3, hint, |i| candidates[i]);
        for _ in 0..5 {
            assert_eq!(chooser.pick(3, hint, |i| candidates[i]), first, "key {key}");
        }
        owners.insert(first);
    }
    assert_eq!(owners.len(), 3, "30 keys spread over all 3 instances");

    // The owner full: the least-outstanding other takes it. Missing key: least outstanding.
    let key = PickHint {
        hash: Some(hash_key(b"k")),
        draws: 0,
    };
    let owner = chooser.pick(3, key, |i| candidates[i]).unwrap();
    let mut full = all(&[0, 2, 1]);
    full[owner].usable = false;
    let fallback = chooser.pick(3, key, |i| full[i]).unwrap();
    assert_ne!(fallback, owner);
    let busy = all(&[4, 1, 3]);
    assert_eq!(chooser.pick(3, PickHint::default(), |i| busy[i]), Some(1));
}

#[test]
fn nothing_usable() {
    for algorithm in [
        None,
        Some(Algorithm::RoundRobin),
        Some(Algorithm::Weighted),
        Some(Algorithm::LeastRequest),
        Some(Algorithm::Hash(HashOn::ClientIp)),
    ] {
        let mut chooser = Chooser::new(algorithm.as_ref());
        chooser.set_instances(&["a", "b"]);
        let mut none = all(&[0, 0]);
        none[0].usable = false;
        none[1].usable = false;
        let hint = PickHint {
            hash: Some(1),
            draws: 7,
        };
        assert_eq!(chooser.pick(2, hint, |i| none[i]), None, "{algorithm:?}");
        assert_eq!(chooser.pick(0, hint, |_| none[0]), None, "{algorithm:?}");
    }
}
