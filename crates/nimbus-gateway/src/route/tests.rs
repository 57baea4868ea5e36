use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use nimbus_model::traffic::MatchSource;
use nimbus_model::{RequestView, RouteRule, RuleMatch, TrafficPolicy, TrafficTarget};

use super::*;
use crate::error::ErrorSource;
use crate::gate::{AdmitError, GateLimits};

fn endpoint(instance: &str, port: u16) -> Arc<Endpoint> {
    Arc::new(Endpoint::new(
        instance.to_string(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    ))
}

fn version(name: &str, endpoints: Vec<Arc<Endpoint>>) -> (String, Arc<VersionRoute>) {
    let gate = VersionGate::new(
        "default".into(),
        "hello".into(),
        name.into(),
        Arc::new(|| {}),
        Arc::new(|| {}),
    );
    gate.update(endpoints, GateLimits::default());
    (name.to_string(), Arc::new(VersionRoute::new(gate)))
}

/// `hello` with v1 (two instances), v2 (one), v3 (none ready); split v1=90,v2=10; rules
/// `?env=beta → v2`, `x-canary: 1 → v3`, `?env=ghost → v4` (not in the table).
fn table() -> RouteTable {
    let policy = TrafficPolicy {
        split: vec![
            TrafficTarget {
                version: "v1".into(),
                percent: 90,
            },
            TrafficTarget {
                version: "v2".into(),
                percent: 10,
            },
        ],
        rules: vec![
            rule(MatchSource::Query, "env", "beta", "v2"),
            rule(MatchSource::Header, "x-canary", "1", "v3"),
            rule(MatchSource::Query, "env", "ghost", "v4"),
        ],
    };
    let service = Arc::new(ServiceRoute {
        namespace: "default".into(),
        name: "hello".into(),
        policy,
        versions: HashMap::from([
            version(
                "v1",
                vec![endpoint("hello-v1-a", 1001), endpoint("hello-v1-b", 1002)],
            ),
            version("v2", vec![endpoint("hello-v2-a", 2001)]),
            version("v3", vec![]),
        ]),
        gateway: Default::default(),
    });
    let empty = Arc::new(ServiceRoute {
        namespace: "default".into(),
        name: "empty".into(),
        policy: TrafficPolicy::default(),
        versions: HashMap::new(),
        gateway: Default::default(),
    });
    let mut table = RouteTable::default();
    table.insert(
        "hello--default.nimbus.localhost".into(),
        HostRoute::Service(service.clone()),
    );
    table.insert(
        "WWW.Example.com.:80".into(),
        HostRoute::Service(service.clone()),
    );
    table.insert(
        "v2--hello--default.nimbus.localhost".into(),
        HostRoute::Version {
            service: service.clone(),
            version: "v2".into(),
        },
    );
    table.insert(
        "v3--hello--default.nimbus.localhost".into(),
        HostRoute::Version {
            service,
            version: "v3".into(),
        },
    );
    table.insert(
        "empty--default.nimbus.localhost".into(),
        HostRoute::Service(empty),
    );
    table
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

/// (host, query, headers, roll, expected version or error code, matching rule)
type Case<'a> = (
    &'a str,
    Option<&'a str>,
    &'a HeaderMap,
    u32,
    Result<&'a str, &'a str>,
    Option<usize>,
);

#[test]
fn choose() {
    let table = table();
    let canary: HeaderMap = [(
        http::header::HeaderName::from_static("x-canary"),
        HeaderValue::from_static("1"),
    )]
    .into_iter()
    .collect();
    let none = HeaderMap::new();
    const SVC: &str = "hello--default.nimbus.localhost";
    const V2: &str = "v2--hello--default.nimbus.localhost";
    const V3: &str = "v3--hello--default.nimbus.localhost";
    const EMPTY: &str = "empty--default.nimbus.localhost";
    const NO_VERSION: Result<&str, &str> = Err("no_ready_instance");
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        (SVC, None, &none, 0, Ok("v1"), None),                     // split, low roll
        (SVC, None, &none, 89, Ok("v1"), None),                    // split, last v1 roll
        (SVC, None, &none, 90, Ok("v2"), None),                    // split, first v2 roll
        (SVC, None, &none, 99, Ok("v2"), None),                    // split, top roll
        ("www.example.com", None, &none, 0, Ok("v1"), None),       // custom domain, normalised at insert
        (SVC, Some("env=beta"), &none, 0, Ok("v2"), Some(0)),      // query rule
        (SVC, Some("a=1&env=beta"), &none, 0, Ok("v2"), Some(0)),  // query rule, not first param
        (SVC, Some("env=prod"), &none, 95, Ok("v2"), None),        // no rule matches → split
        (SVC, None, &canary, 0, Ok("v3"), Some(1)),                // header rule → v3 (none ready: the gate holds)
        (SVC, Some("env=ghost"), &none, 0, NO_VERSION, None),      // rule → version not in table
        (V2, None, &none, 0, Ok("v2"), None),                      // version host ignores the split
        (V2, None, &canary, 0, Ok("v2"), None),                    // … and the rules
        (V3, None, &none, 0, Ok("v3"), None),                      // version without endpoints is chosen
        (EMPTY, None, &none, 0, NO_VERSION, None),                 // empty split
        ("nope.example.com", None, &none, 0, Err("unknown_host"), None), // unbound host
        ("", None, &none, 0, Err("unknown_host"), None),           // no host at all
    ];
    for (host, query, headers, roll, expected, rule) in cases {
        let view = RequestView {
            query: *query,
            headers,
        };
        match (table.choose(host, &view, *roll), expected) {
            (Ok(choice), Ok(version)) => {
                assert_eq!(choice.version.version, *version, "{host} {query:?} {roll}");
                assert_eq!(choice.rule, *rule, "{host} {query:?} {roll}");
                assert_eq!(choice.service.name, "hello");
                assert_eq!(choice.version.gate.version(), *version);
            }
            (Err(error), Err(code)) => assert_eq!(error.code(), *code, "{host} {query:?} {roll}"),
            (got, want) => panic!("{host} {query:?} {roll}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn choose_is_pure() {
    // Choosing changes nothing: no slot is taken, no cursor moves.
    let table = table();
    let headers = HeaderMap::new();
    let view = RequestView {
        query: None,
        headers: &headers,
    };
    let first = table
        .choose("hello--default.nimbus.localhost", &view, 0)
        .unwrap();
    for _ in 0..5 {
        let again = table
            .choose("hello--default.nimbus.localhost", &view, 0)
            .unwrap();
        assert!(Arc::ptr_eq(&first.version, &again.version));
    }
    assert_eq!(first.version.gate.stats().inflight, 0);
}

#[test]
fn inflight_guard() {
    let e = endpoint("x", 1);
    assert_eq!(e.inflight(), 0);
    let a = e.track();
    let b = e.track();
    assert_eq!(e.inflight(), 2);
    drop(a);
    assert_eq!(e.inflight(), 1);
    drop(b);
    assert_eq!(e.inflight(), 0);
    let mut c = e.track();
    c.release();
    assert_eq!(e.inflight(), 0);
    drop(c); // already released: no second decrement
    assert_eq!(e.inflight(), 0);
}

#[test]
fn table_basics() {
    let table = table();
    assert_eq!(table.len(), 5);
    assert!(!table.is_empty());
    assert!(RouteTable::default().is_empty());
    assert!(table.get("www.example.com").is_some());
    assert!(table.get("WWW.Example.com").is_none()); // get expects a normalised host
}

#[test]
fn error_shapes() {
    let cases: &[(GatewayError, u16, &str, Option<&str>, ErrorSource)] = &[
        (
            GatewayError::UnknownHost { host: "x".into() },
            404,
            "unknown_host",
            Some("host"),
            ErrorSource::Downstream,
        ),
        (
            GatewayError::NoReadyInstance {
                namespace: "default".into(),
                service: "hello".into(),
                version: Some("v1".into()),
            },
            503,
            "no_ready_instance",
            None,
            ErrorSource::Gateway,
        ),
        (
            GatewayError::not_admitted(
                "default",
                "hello",
                "v1",
                AdmitError::QueueFull { depth: 10 },
            ),
            503,
            "queue_full",
            None,
            ErrorSource::Gateway,
        ),
        (
            GatewayError::not_admitted(
                "default",
                "hello",
                "v1",
                AdmitError::Timeout {
                    waited: Duration::from_secs(2),
                    cold: true,
                },
            ),
            504,
            "queue_timeout",
            None,
            ErrorSource::Gateway,
        ),
        (
            GatewayError::UpstreamTimeout {
                instance: "i".into(),
                timeout: Duration::from_secs(1),
            },
            504,
            "upstream_timeout",
            None,
            ErrorSource::Upstream,
        ),
    ];
    for (error, status, code, field, source) in cases {
        assert_eq!(error.status().as_u16(), *status, "{error}");
        assert_eq!(error.code(), *code);
        assert_eq!(error.field(), *field);
        assert_eq!(error.source_kind(), *source);
    }
    assert_eq!(
        GatewayError::UnknownHost { host: "x".into() }.to_string(),
        "no service is bound to host \"x\""
    );
    let full = GatewayError::not_admitted(
        "default",
        "hello",
        "v1",
        AdmitError::QueueFull { depth: 10 },
    );
    assert_eq!(full.retry_after(), Some(1));
    assert_eq!(
        full.to_string(),
        "service hello (namespace default) version v1 is at capacity: all instances are busy and \
         10 requests are already queued; retry shortly"
    );
    let cold = AdmitError::Timeout {
        waited: Duration::from_millis(1500),
        cold: true,
    };
    assert_eq!(
        GatewayError::not_admitted("default", "hello", "v1", cold).to_string(),
        "service hello (namespace default) version v1: no instance became ready within 1.5s"
    );
    let busy = AdmitError::Timeout {
        waited: Duration::from_secs(2),
        cold: false,
    };
    assert_eq!(
        GatewayError::not_admitted("default", "hello", "v1", busy).to_string(),
        "service hello (namespace default) version v1: no instance slot freed up within 2s"
    );
    assert_eq!(
        GatewayError::UnknownHost { host: "x".into() }.retry_after(),
        None
    );
}

#[test]
fn affinity_cookie_overrides_the_split_not_the_rules() {
    let policy = TrafficPolicy {
        split: vec![
            TrafficTarget {
                version: "v1".into(),
                percent: 100,
            },
            TrafficTarget {
                version: "v2".into(),
                percent: 0,
            },
        ],
        rules: vec![rule(MatchSource::Header, "x-canary", "1", "v3")],
    };
    // (cookie, canary header?, roll, expected version, from the cookie?)
    let cases: &[(Option<&str>, bool, u32, &str, bool)] = &[
        (None, false, 50, "v1", false),       // no cookie: the split
        (Some("v1"), false, 50, "v1", true),  // cookie honoured
        (Some("v2"), false, 50, "v1", false), // v2 has 0%: takes no traffic, cookie ignored
        (Some("v9"), false, 50, "v1", false), // unknown version
        (Some("v1"), true, 50, "v3", false),  // a rule still wins
    ];
    for (cookie, canary, roll, want, pinned) in cases {
        let mut headers = HeaderMap::new();
        if *canary {
            headers.insert("x-canary", HeaderValue::from_static("1"));
        }
        let view = RequestView {
            query: None,
            headers: &headers,
        };
        let (decision, from_cookie) =
            evaluate_with_affinity(&policy, &view, *roll, *cookie).unwrap();
        assert_eq!(decision.version, *want, "{cookie:?} {canary}");
        assert_eq!(from_cookie, *pinned, "{cookie:?} {canary}");
    }
}
