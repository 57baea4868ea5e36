use http::{HeaderMap, HeaderValue};

use super::*;

fn split(pairs: &[(&str, u32)]) -> Vec<TrafficTarget> {
    pairs
        .iter()
        .map(|(v, p)| TrafficTarget {
            version: v.to_string(),
            percent: *p,
        })
        .collect()
}

fn rule(source: MatchSource, name: &str, value: &str, version: &str) -> RouteRule {
    RouteRule {
        matcher: RuleMatch {
            source,
            name: name.into(),
            value: value.into(),
        },
        version: version.into(),
    }
}

fn versions(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn validation() {
    let known = versions(&["v1", "v2", "v3"]);
    let cases: &[(&str, TrafficPolicy, Option<&str>)] = &[
        (
            "single 100",
            TrafficPolicy {
                split: split(&[("v1", 100)]),
                rules: vec![],
            },
            None,
        ),
        (
            "90/10",
            TrafficPolicy {
                split: split(&[("v1", 90), ("v2", 10)]),
                rules: vec![],
            },
            None,
        ),
        (
            "weight 0 allowed",
            TrafficPolicy {
                split: split(&[("v1", 100), ("v2", 0)]),
                rules: vec![],
            },
            None,
        ),
        (
            "sum 90",
            TrafficPolicy {
                split: split(&[("v1", 80), ("v2", 10)]),
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "sum 110",
            TrafficPolicy {
                split: split(&[("v1", 100), ("v2", 10)]),
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "empty split",
            TrafficPolicy {
                split: vec![],
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "all zero",
            TrafficPolicy {
                split: split(&[("v1", 0)]),
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "unknown version",
            TrafficPolicy {
                split: split(&[("v9", 100)]),
                rules: vec![],
            },
            Some("unknown_version"),
        ),
        (
            "duplicate",
            TrafficPolicy {
                split: split(&[("v1", 50), ("v1", 50)]),
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "over 100 one entry",
            TrafficPolicy {
                split: split(&[("v1", 200)]),
                rules: vec![],
            },
            Some("invalid_traffic"),
        ),
        (
            "rule ok",
            TrafficPolicy {
                split: split(&[("v1", 100)]),
                rules: vec![rule(MatchSource::Query, "env", "beta", "v3")],
            },
            None,
        ),
        (
            "rule unknown version",
            TrafficPolicy {
                split: split(&[("v1", 100)]),
                rules: vec![rule(MatchSource::Query, "env", "beta", "v7")],
            },
            Some("unknown_version"),
        ),
        (
            "rule empty name",
            TrafficPolicy {
                split: split(&[("v1", 100)]),
                rules: vec![rule(MatchSource::Query, "", "beta", "v2")],
            },
            Some("invalid_rule"),
        ),
        (
            "rule bad header",
            TrafficPolicy {
                split: split(&[("v1", 100)]),
                rules: vec![rule(MatchSource::Header, "x canary", "1", "v2")],
            },
            Some("invalid_rule"),
        ),
    ];
    for (label, policy, expected) in cases {
        match (policy.validate(&known), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(code)) => assert_eq!(e.code, *code, "{label}: {}", e.message),
            (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn evaluation() {
    let mut headers = HeaderMap::new();
    headers.insert("x-canary", HeaderValue::from_static("1"));
    headers.append("x-region", HeaderValue::from_static("us-east"));
    headers.append("x-region", HeaderValue::from_static("eu-west"));
    let empty = HeaderMap::new();

    let policy = TrafficPolicy {
        split: split(&[("v1", 90), ("v2", 0), ("v3", 10)]),
        rules: vec![
            rule(MatchSource::Query, "env", "beta", "v3"),
            rule(MatchSource::Header, "x-canary", "1", "v2"),
            rule(MatchSource::Header, "x-region", "eu-*", "v1"),
            rule(MatchSource::Query, "user", "*@corp", "v2"),
        ],
    };
    // (label, query, headers, roll, expected version, expected rule)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a HeaderMap,
        u32,
        &'a str,
        Option<usize>,
    );
    let cases: &[Case<'_>] = &[
        ("no match, roll 0", None, &empty, 0, "v1", None),
        ("no match, roll 89", None, &empty, 89, "v1", None),
        ("weight 0 skipped", None, &empty, 90, "v3", None),
        ("no match, roll 99", None, &empty, 99, "v3", None),
        ("query rule", Some("env=beta"), &empty, 0, "v3", Some(0)),
        (
            "query among others",
            Some("a=1&env=beta&b=2"),
            &empty,
            0,
            "v3",
            Some(0),
        ),
        ("query wrong value", Some("env=prod"), &empty, 0, "v1", None),
        ("query name only", Some("env"), &empty, 0, "v1", None),
        (
            "query encoded",
            Some("user=ann%40corp"),
            &empty,
            0,
            "v2",
            Some(3),
        ),
        (
            "query plus is space",
            Some("env=be+ta"),
            &empty,
            0,
            "v1",
            None,
        ),
        ("header rule", None, &headers, 0, "v2", Some(1)),
        (
            "first rule wins",
            Some("env=beta"),
            &headers,
            0,
            "v3",
            Some(0),
        ),
    ];
    for (label, query, hdrs, roll, version, rule_idx) in cases {
        let req = RequestView {
            query: *query,
            headers: hdrs,
        };
        let d = policy.evaluate(&req, *roll).expect(label);
        assert_eq!((d.version, d.rule), (*version, *rule_idx), "{label}");
    }

    // A header with several values matches on any of them.
    let mut only_region = HeaderMap::new();
    only_region.append("x-region", HeaderValue::from_static("us-east"));
    only_region.append("x-region", HeaderValue::from_static("eu-west"));
    let req = RequestView {
        query: None,
        headers: &only_region,
    };
    assert_eq!(policy.evaluate(&req, 0).map(|d| d.rule), Some(Some(2)));

    // A single 100 always wins, at every roll.
    let single = TrafficPolicy::single("v7");
    for roll in 0..100 {
        let req = RequestView {
            query: None,
            headers: &empty,
        };
        assert_eq!(single.evaluate(&req, roll).map(|d| d.version), Some("v7"));
    }

    // Empty split: nothing to route to.
    let none = TrafficPolicy::default();
    let req = RequestView {
        query: None,
        headers: &empty,
    };
    assert_eq!(none.evaluate(&req, 0), None);
}

#[test]
fn split_distribution_is_exact_over_all_rolls() {
    let policy = TrafficPolicy {
        split: split(&[("v1", 90), ("v2", 10)]),
        rules: vec![],
    };
    let empty = HeaderMap::new();
    let req = RequestView {
        query: None,
        headers: &empty,
    };
    let v1 = (0..100)
        .filter(|r| policy.evaluate(&req, *r).map(|d| d.version) == Some("v1"))
        .count();
    assert_eq!(v1, 90);
}

#[test]
fn deploy_moves_traffic() {
    let first = TrafficPolicy::after_deploy(None, "v1", true);
    assert_eq!(
        first,
        TrafficPolicy::single("v1"),
        "first version takes 100% even with no_traffic"
    );

    let with_rule = TrafficPolicy {
        split: split(&[("v1", 100)]),
        rules: vec![rule(MatchSource::Query, "env", "beta", "v1")],
    };
    let moved = TrafficPolicy::after_deploy(Some(&with_rule), "v2", false);
    assert_eq!(moved.split, split(&[("v2", 100)]));
    assert_eq!(moved.rules, with_rule.rules, "rules are kept");

    let kept = TrafficPolicy::after_deploy(Some(&with_rule), "v2", true);
    assert_eq!(kept, with_rule);
}

#[test]
fn version_limit_names_deletable_versions() {
    let all: Vec<String> = (1..=10).map(|i| format!("v{i}")).collect();
    let policy = TrafficPolicy {
        split: split(&[("v9", 50), ("v10", 50)]),
        rules: vec![rule(MatchSource::Header, "x-canary", "1", "v8")],
    };
    assert_eq!(policy.check_version_limit(&all[..9]), Ok(()));
    let err = policy.check_version_limit(&all).unwrap_err();
    assert_eq!(err.code, "version_limit");
    assert!(
        err.message.contains("v1, v2, v3, v4, v5, v6, v7"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains("v8,"),
        "rule target is not deletable: {}",
        err.message
    );
    assert!(!err.message.contains("v9"), "{}", err.message);
}

#[test]
fn delete_checks() {
    let policy = TrafficPolicy {
        split: split(&[("v1", 100), ("v2", 0)]),
        rules: vec![rule(MatchSource::Query, "env", "beta", "v3")],
    };
    assert_eq!(
        policy.check_delete("v1").unwrap_err().code,
        "version_in_use"
    );
    assert_eq!(policy.check_delete("v2"), Ok(()));
    assert_eq!(
        policy.check_delete("v3").unwrap_err().code,
        "version_in_use"
    );
    assert_eq!(policy.check_delete("v4"), Ok(()));
}

#[test]
fn cli_syntax() {
    assert_eq!(
        parse_split("v1=90,v2=10").unwrap(),
        split(&[("v1", 90), ("v2", 10)])
    );
    assert_eq!(parse_split(" v1 = 100 ").unwrap(), split(&[("v1", 100)]));
    assert!(parse_split("v1").is_err());
    assert!(parse_split("v1=ninety").is_err());
    assert!(parse_split("v1=-5").is_err());

    let r = parse_rule(MatchSource::Query, "env=beta:v3").unwrap();
    assert_eq!(r, rule(MatchSource::Query, "env", "beta", "v3"));
    let r = parse_rule(MatchSource::Header, "X-Canary=1:v2").unwrap();
    assert_eq!(r, rule(MatchSource::Header, "x-canary", "1", "v2"));
    let r = parse_rule(MatchSource::Query, "t=a:b:v2").unwrap();
    assert_eq!(
        r.matcher.value, "a:b",
        "the version is after the last colon"
    );
    assert!(parse_rule(MatchSource::Query, "env=beta").is_err());
    assert!(parse_rule(MatchSource::Query, "beta:v2").is_err());
    assert!(parse_rule(MatchSource::Query, "=x:v2").is_err());
}

#[test]
fn explanation() {
    let mut headers = HeaderMap::new();
    headers.insert("x-canary", HeaderValue::from_static("1"));
    let policy = TrafficPolicy {
        split: split(&[("v1", 90), ("v2", 10)]),
        rules: vec![
            rule(MatchSource::Query, "env", "beta", "v3"),
            rule(MatchSource::Header, "x-canary", "1", "v2"),
        ],
    };
    let req = RequestView {
        query: None,
        headers: &headers,
    };
    let lines = policy.explain(&req);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains("does not match"));
    assert!(lines[1].contains("matches → version v2"));
    let empty = HeaderMap::new();
    let req = RequestView {
        query: Some("env=prod"),
        headers: &empty,
    };
    let lines = policy.explain(&req);
    assert!(lines.last().unwrap().contains("v1=90%, v2=10%"));
}
