use std::net::Ipv4Addr;

use super::*;

fn spec(f: impl FnOnce(&mut GatewaySpec)) -> GatewaySpec {
    let mut spec = GatewaySpec::default();
    f(&mut spec);
    spec
}

#[test]
fn compile_errors_name_the_field() {
    let cases: Vec<(GatewaySpec, Option<&str>)> = vec![
        (GatewaySpec::default(), None),
        (spec(|s| s.lb = Some("least-outstanding".into())), None),
        (spec(|s| s.lb = Some("hash:header:x-user".into())), None),
        (spec(|s| s.lb = Some("random".into())), Some("lb")), // unknown algorithm
        (spec(|s| s.rate = Some("100/s".into())), None),
        (
            spec(|s| s.rate = Some("100/fortnight".into())),
            Some("rate"),
        ), // unit
        (
            spec(|s| s.rate_per_ip = Some("lots".into())),
            Some("rate_per_ip"),
        ), // format
        (spec(|s| s.access = vec!["deny path=/admin".into()]), None),
        (spec(|s| s.access = vec!["deny".into()]), None), // no conditions: everything
        (
            spec(|s| s.access = vec!["allow ip=10.0.0.1/8".into()]),
            Some("access"),
        ), // host bits
        (
            spec(|s| s.access = vec!["block ip=10.0.0.0/8".into()]),
            Some("access"),
        ), // action
    ];
    for (spec, field) in cases {
        match ServicePolicy::compile(&spec) {
            Ok(_) => assert_eq!(field, None, "{spec:?} should not compile"),
            Err(e) => assert_eq!(Some(e.field()), field, "{spec:?}: {e}"),
        }
    }
}

#[test]
fn admit_checks_access_then_limits() {
    let policy = ServicePolicy::compile(&spec(|s| {
        s.access = vec!["allow ip=10.0.0.0/8".into(), "deny path=/admin".into()];
        s.rate_per_ip = Some("1/h".into());
        s.burst_per_ip = Some(2);
    }))
    .unwrap();
    assert!(policy.has_checks());
    let headers = HeaderMap::new();
    let outside = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let inside = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1));
    // (client, path, expected)
    let cases: &[(IpAddr, &str, Result<(), Refusal>)] = &[
        (outside, "/admin/x", Err(Refusal::Denied { rule: Some(1) })), // deny rule
        (inside, "/admin", Ok(())),                                    // allow rule first
        (outside, "/", Ok(())),                                        // default allow, token 1
        (outside, "/y", Ok(())),                                       // token 2
        (
            outside,
            "/x",
            Err(Refusal::Limited {
                per_ip: true,
                retry_after_secs: 1800,
            }),
        ), // burst 2 used
        (outside, "/admin", Err(Refusal::Denied { rule: Some(1) })),   // denial takes no token
        (inside, "/", Ok(())),                                         // its own bucket: token 2
        (
            inside,
            "/",
            Err(Refusal::Limited {
                per_ip: true,
                retry_after_secs: 1800,
            }),
        ), // used up
    ];
    for (i, (client, path, want)) in cases.iter().enumerate() {
        let got = policy.admit(*client, path, &headers);
        match (want, got) {
            (Err(Refusal::Limited { .. }), Err(Refusal::Limited { per_ip, .. })) => {
                assert!(per_ip, "case {i}")
            }
            (want, got) => assert_eq!(got, *want, "case {i}"),
        }
    }
}

#[test]
fn default_policy_checks_nothing() {
    let policy = ServicePolicy::default();
    assert!(!policy.has_checks());
    assert!(policy
        .admit(IpAddr::V4(Ipv4Addr::LOCALHOST), "/", &HeaderMap::new())
        .is_ok());
    assert_eq!(
        ServicePolicy::compile(&GatewaySpec::default())
            .unwrap()
            .spec(),
        &GatewaySpec::default()
    );
}
