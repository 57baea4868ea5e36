use std::net::{Ipv4Addr, Ipv6Addr};

use http::HeaderValue;

use super::*;

/// A deterministic xorshift generator, so the random choosers can be fed "random" draws.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

fn counts(picks: impl IntoIterator<Item = Option<usize>>, len: usize) -> Vec<usize> {
    let mut counts = vec![0; len];
    for pick in picks {
        counts[pick.expect("a pick")] += 1;
    }
    counts
}

#[test]
fn round_robin_cases() {
    let cases = &[
        (0, 0, None),    // no instance
        (0, 7, None),    // no instance, any turn
        (1, 0, Some(0)), // single instance
        (1, 99, Some(0)),
        (3, 0, Some(0)),
        (3, 4, Some(1)),
        (3, usize::MAX, Some(usize::MAX % 3)), // the counter wrapped
    ];
    for &(len, turn, expected) in cases {
        assert_eq!(round_robin(len, turn), expected, "len {len} turn {turn}");
    }
}

#[test]
fn round_robin_distributes_evenly() {
    let picks = (0..3000).map(|turn| round_robin(3, turn));
    assert_eq!(counts(picks, 3), vec![1000, 1000, 1000]);
}

#[test]
fn smooth_weighted_sequences() {
    let cases: &[(&[u32], &[usize])] = &[
        // nginx's documented order for a=5, b=1, c=1 (ngx_http_upstream_round_robin.c, 1.3.1).
        (&[5, 1, 1], &[0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]),
        (&[1, 1, 1], &[0, 1, 2, 0, 1, 2]), // equal weights: plain round-robin
        (&[2, 1], &[0, 1, 0, 0, 1, 0]),    // interleaved, not a a b
        (&[0, 3], &[1, 1, 1]),             // weight 0 is never picked
        (&[4], &[0, 0, 0]),                // single candidate
        (&[1, 0, 0, 2], &[3, 0, 3, 3, 0, 3]), // zeros in between
    ];
    for (weights, expected) in cases {
        let mut state = SmoothWeighted::new();
        let picks: Vec<usize> = (0..expected.len())
            .map(|_| state.pick(weights).expect("a pick"))
            .collect();
        assert_eq!(&picks, expected, "weights {weights:?}");
    }
}

#[test]
fn smooth_weighted_without_candidates() {
    let cases: &[&[u32]] = &[&[], &[0], &[0, 0, 0]];
    for weights in cases {
        assert_eq!(SmoothWeighted::new().pick(weights), None, "{weights:?}");
    }
}

#[test]
fn smooth_weighted_distribution_is_exact_per_cycle() {
    let cases: &[&[u32]] = &[&[5, 1, 1], &[3, 2, 1], &[10, 1], &[7, 7, 7, 1]];
    for weights in cases {
        let total: u32 = weights.iter().sum();
        let mut state = SmoothWeighted::new();
        let picks = (0..total * 100).map(|_| state.pick(weights));
        let expected: Vec<usize> = weights.iter().map(|w| *w as usize * 100).collect();
        assert_eq!(
            counts(picks, weights.len()),
            expected,
            "weights {weights:?}"
        );
    }
}

#[test]
fn smooth_weighted_restarts_when_instances_change() {
    let mut state = SmoothWeighted::new();
    for _ in 0..5 {
        state.pick(&[5, 1, 1]);
    }
    // Two instances now: the state restarts and follows the 2/1 order from scratch.
    let picks: Vec<Option<usize>> = (0..3).map(|_| state.pick(&[2, 1])).collect();
    assert_eq!(picks, vec![Some(0), Some(1), Some(0)]);
}

#[test]
fn power_of_two_cases() {
    let cases: &[(&[usize], u32, u32, Option<usize>)] = &[
        (&[], 0, 0, None),              // no candidate
        (&[], 5, 9, None),              // no candidate, any draws
        (&[7], 0, 0, Some(0)),          // single candidate
        (&[7], 3, 8, Some(0)),          // single candidate, any draws
        (&[3, 1], 0, 0, Some(1)),       // draws 0 and (0 → skips 0) 1; 1 is less loaded
        (&[1, 3], 0, 0, Some(0)),       // same draws, 0 is less loaded
        (&[2, 2], 1, 0, Some(1)),       // tie: the first drawn wins
        (&[5, 0, 9], 2, 1, Some(1)),    // draws 2 and 1 (1 < 2, kept): 0 beats 9
        (&[4, 4, 0], 0, 1, Some(2)),    // draws 0 and 2 (1 ≥ 0 → 2)
        (&[0, 9, 9, 9], 5, 2, Some(1)), // draws 1 and 3 (2 ≥ 1 → 3): tie → first drawn
    ];
    for &(loads, first, second, expected) in cases {
        assert_eq!(
            power_of_two(loads, first, second),
            expected,
            "loads {loads:?} draws {first}/{second}"
        );
    }
}

#[test]
fn power_of_two_draws_two_distinct_indices() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in 2..8 {
        for _ in 0..1000 {
            let (a, b) = two_distinct(len, rng.next(), rng.next()).expect("two indices");
            assert!(a < len && b < len && a != b, "len {len}: {a} {b}");
        }
    }
}

#[test]
fn power_of_two_spreads_equal_loads_and_avoids_the_busiest() {
    let mut rng = XorShift(42);
    // Equal loads: every instance gets about a quarter.
    let picks = (0..10_000).map(|_| power_of_two(&[1, 1, 1, 1], rng.next(), rng.next()));
    for (i, n) in counts(picks, 4).into_iter().enumerate() {
        assert!((2_000..3_000).contains(&n), "instance {i} got {n} of 10000");
    }
    // The most loaded instance loses every comparison, so it is never picked.
    let picks = (0..10_000).map(|_| power_of_two(&[3, 50, 2, 4], rng.next(), rng.next()));
    let got = counts(picks, 4);
    assert_eq!(got[1], 0, "{got:?}");
    // The least loaded wins every comparison it is in: 1 - P(not drawn) = 1 - (3/4 · 2/3) = 1/2.
    assert!((4_500..5_500).contains(&got[2]), "{got:?}");
}

fn instance_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("hello-v1-{i:06x}")).collect()
}

/// The instance id each of the keys `user-0..count` maps to.
fn owners(ids: &[String], count: usize) -> Vec<String> {
    let ring = HashRing::new(ids);
    (0..count)
        .map(|k| {
            let index = ring.pick(hash_key(format!("user-{k}").as_bytes()));
            ids[index.expect("a non-empty ring")].clone()
        })
        .collect()
}

#[test]
fn hash_ring_without_and_with_one_instance() {
    let empty: &[&str] = &[];
    let ring = HashRing::new(empty);
    assert!(ring.is_empty());
    assert_eq!(ring.pick(hash_key(b"anything")), None);

    let ring = HashRing::new(&["only"]);
    for key in [0, 1, u64::MAX / 2, u64::MAX] {
        assert_eq!(ring.pick(key), Some(0), "hash {key}");
    }
}

#[test]
fn hash_ring_spreads_keys() {
    let ids = instance_ids(10);
    let owned = owners(&ids, 10_000);
    for id in &ids {
        let n = owned.iter().filter(|o| *o == id).count();
        // 1,000 each on average; virtual nodes keep every share within ±30 %.
        assert!((700..=1_300).contains(&n), "{id} owns {n} of 10000 keys");
    }
}

#[test]
fn hash_ring_moves_only_the_removed_instances_keys() {
    let ids = instance_ids(10);
    let before = owners(&ids, 10_000);
    for removed in [0, 4, 9] {
        let mut fewer = ids.clone();
        let gone = fewer.remove(removed);
        let after = owners(&fewer, 10_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned_by_gone = before.iter().filter(|o| **o == gone).count();
        // Exactly the removed instance's keys move, and that is about 1/10 of them.
        assert_eq!(moved, owned_by_gone, "removing {gone}");
        assert!(
            moved <= 1_300,
            "removing {gone} moved {moved} of 10000 keys"
        );
    }
}

#[test]
fn hash_ring_moves_only_keys_to_an_added_instance() {
    let ids = instance_ids(10);
    let before = owners(&ids, 10_000);
    let mut more = ids.clone();
    more.insert(3, "hello-v1-new".to_string()); // position in the list does not matter
    let after = owners(&more, 10_000);
    let moved: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(_, a)| a)
        .collect();
    assert!(
        moved.iter().all(|to| *to == "hello-v1-new"),
        "keys moved between old instances"
    );
    // 1/11 ≈ 909 on average.
    assert!(
        moved.len() <= 1_200,
        "adding one moved {} of 10000 keys",
        moved.len()
    );
    assert!(!moved.is_empty(), "the new instance got no key");
}

#[test]
fn hash_ring_ignores_the_order_of_ids() {
    let ids = instance_ids(5);
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(owners(&ids, 2_000), owners(&reversed, 2_000));
}

#[test]
fn hash_key_is_stable() {
    // Pinned values: a change here moves every key of every hash-balanced service.
    assert_eq!(hash_key(b""), mix64(FNV_OFFSET));
    assert_eq!(hash_key(b"a"), hash_key(b"a"));
    assert_ne!(hash_key(b"a"), hash_key(b"b"));
    assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c); // FNV-1a 64 test vector
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

/// Request headers, the cookie name asked for, and the value expected.
type CookieCase<'a> = (&'a [(&'static str, &'static str)], &'a str, Option<&'a str>);

#[test]
fn cookie_values() {
    let cases: &[CookieCase<'_>] = &[
        (&[], "sid", None),                                            // no Cookie header
        (&[("cookie", "sid=abc")], "sid", Some("abc")),                // single
        (&[("cookie", "a=1; sid=abc; b=2")], "sid", Some("abc")),      // among others
        (&[("cookie", "a=1;sid=abc")], "sid", Some("abc")),            // no space
        (&[("cookie", "xsid=1; sidx=2")], "sid", None),                // names match exactly
        (&[("cookie", "sid=")], "sid", Some("")),                      // empty value
        (&[("cookie", "sid=a=b")], "sid", Some("a=b")),                // '=' inside the value
        (&[("cookie", "a=1"), ("cookie", "sid=2")], "sid", Some("2")), // second header line
        (&[("cookie", "sid=1; sid=2")], "sid", Some("1")),             // the first wins
        (&[("cookie", "flag; sid=3")], "sid", Some("3")),              // a pair without '='
        (&[("x-sid", "sid=3")], "sid", None),                          // another header
    ];
    for (pairs, name, expected) in cases {
        assert_eq!(
            cookie_value(&headers(pairs), name),
            *expected,
            "{pairs:?} {name}"
        );
    }
}

#[test]
fn hash_on_keys() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let none = HeaderMap::new();
    let with = headers(&[("x-user", "alice"), ("cookie", "sid=s1")]);
    let header = HashOn::Header(HeaderName::from_static("x-user"));
    let cookie = HashOn::Cookie("sid".into());

    assert_eq!(
        HashOn::ClientIp.hash(v4, &none),
        HashOn::ClientIp.hash(mapped, &none)
    );
    assert_ne!(
        HashOn::ClientIp.hash(v4, &none),
        HashOn::ClientIp.hash(v6, &none)
    );
    assert_eq!(header.hash(v4, &with), Some(hash_key(b"alice")));
    assert_eq!(header.hash(v6, &with), header.hash(v4, &with)); // the client does not matter
    assert_eq!(header.hash(v4, &none), None);
    assert_eq!(cookie.hash(v4, &with), Some(hash_key(b"s1")));
    assert_eq!(cookie.hash(v4, &none), None);
}

#[test]
fn algorithms_parse_and_print() {
    let cases = &[
        ("round-robin", Algorithm::RoundRobin, "round-robin"),
        ("weighted", Algorithm::Weighted, "weighted"),
        ("least-request", Algorithm::LeastRequest, "least-request"),
        ("hash", Algorithm::Hash(HashOn::ClientIp), "hash:ip"),
        ("hash:ip", Algorithm::Hash(HashOn::ClientIp), "hash:ip"),
        (
            "hash:header:X-User",
            Algorithm::Hash(HashOn::Header(HeaderName::from_static("x-user"))),
            "hash:header:x-user",
        ),
        (
            "hash:cookie:session",
            Algorithm::Hash(HashOn::Cookie("session".into())),
            "hash:cookie:session",
        ),
    ];
    for (text, expected, printed) in cases {
        let parsed: Algorithm = text.parse().expect(text);
        assert_eq!(&parsed, expected, "{text}");
        assert_eq!(parsed.to_string(), *printed, "{text}");
        assert_eq!(
            printed.parse::<Algorithm>().as_ref(),
            Ok(expected),
            "{printed}"
        );
    }
}

#[test]
fn algorithm_errors() {
    let cases = &[
        ("", AlgorithmError::Unknown(String::new())),
        ("rr", AlgorithmError::Unknown("rr".into())),
        ("Round-Robin", AlgorithmError::Unknown("Round-Robin".into())),
        ("hash:", AlgorithmError::Unknown("hash:".into())),
        ("hash:header:", AlgorithmError::HeaderName(String::new())),
        (
            "hash:header:bad name",
            AlgorithmError::HeaderName("bad name".into()),
        ),
        ("hash:cookie:", AlgorithmError::CookieName(String::new())),
        ("hash:cookie:a;b", AlgorithmError::CookieName("a;b".into())),
    ];
    for (text, expected) in cases {
        assert_eq!(
            text.parse::<Algorithm>().as_ref(),
            Err(expected),
            "{text:?}"
        );
    }
    // The message lists every name `--lb` takes, the default (which the policy maps to no
    // algorithm) included.
    let message = AlgorithmError::Unknown("rr".into()).to_string();
    for name in [
        "least-outstanding",
        "round-robin",
        "weighted",
        "least-request",
        "hash:ip",
    ] {
        assert!(message.contains(name), "{message}");
    }
}
