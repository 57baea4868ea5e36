use http::HeaderValue;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect(text)
}

fn cidr(text: &str) -> Cidr {
    text.parse().expect(text)
}

fn policy(rules: &[&str], default: Action) -> AccessPolicy {
    let rules = rules.iter().map(|r| r.parse().expect(r)).collect();
    AccessPolicy::new(rules, default)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn cidrs_parse() {
    let cases = &[
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"), // a bare address
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("fd00::/8", "fd00::/8"),
        ("::1", "::1/128"),
        ("::/0", "::/0"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
    ];
    for (text, printed) in cases {
        assert_eq!(cidr(text).to_string(), *printed, "{text}");
    }
}

#[test]
fn cidr_errors() {
    let cases = &[
        ("", AccessError::Address(String::new())),
        ("10.0.0", AccessError::Address("10.0.0".into())),
        ("10.0.0.0/", AccessError::Prefix("10.0.0.0/".into())),
        ("10.0.0.0/33", AccessError::Prefix("10.0.0.0/33".into())),
        ("10.0.0.0/-1", AccessError::Prefix("10.0.0.0/-1".into())),
        ("fd00::/129", AccessError::Prefix("fd00::/129".into())),
        (
            "example.com/8",
            AccessError::Address("example.com/8".into()),
        ),
        ("10.0.0.0/8/8", AccessError::Prefix("10.0.0.0/8/8".into())),
        (
            "10.1.2.3/8",
            AccessError::HostBits {
                given: "10.1.2.3/8".into(),
                network: cidr("10.0.0.0/8"),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<Cidr>().as_ref(), Err(expected), "{text:?}");
    }
    assert_eq!(
        "10.1.2.3/8".parse::<Cidr>().map_err(|e| e.to_string()),
        Err("\"10.1.2.3/8\" has bits set after the prefix; did you mean 10.0.0.0/8?".into())
    );
}

#[test]
fn cidr_contains() {
    let cases = &[
        ("10.0.0.0/8", "10.255.1.2", true),
        ("10.0.0.0/8", "11.0.0.1", false),
        ("10.0.0.0/8", "::ffff:10.1.2.3", true), // IPv4-mapped IPv6 counts as IPv4
        ("10.0.0.0/8", "::a00:1", false),        // IPv4-compatible does not
        ("192.0.2.7", "192.0.2.7", true),
        ("192.0.2.7", "192.0.2.8", false),
        ("0.0.0.0/0", "203.0.113.9", true), // every IPv4 address
        ("0.0.0.0/0", "::1", false),        // but not IPv6
        ("::/0", "::1", true),
        ("::/0", "127.0.0.1", false),
        ("fd00::/8", "fd12:3456::1", true),
        ("fd00::/8", "fe80::1", false),
        ("2001:db8::/127", "2001:db8::1", true),
        ("2001:db8::/127", "2001:db8::2", false),
        ("::1", "::1", true),
        ("127.0.0.0/8", "::1", false), // loopbacks of different families
    ];
    for (network, address, expected) in cases {
        assert_eq!(
            cidr(network).contains(ip(address)),
            *expected,
            "{address} in {network}"
        );
    }
}

#[test]
fn cidr_new_clears_host_bits() {
    assert_eq!(Cidr::new(ip("10.1.2.3"), 8), Some(cidr("10.0.0.0/8")));
    assert_eq!(Cidr::new(ip("10.1.2.3"), 33), None);
    assert_eq!(Cidr::new(ip("::1"), 129), None);
    assert_eq!(Cidr::new(ip("2001:db8::ff"), 0), Some(cidr("::/0")));
}

#[test]
fn paths_normalize() {
    let cases = &[
        ("/", "/"),
        ("/admin", "/admin"),
        ("/admin/", "/admin/"),
        ("", "/"),
        ("admin", "/admin"),
        ("//admin", "/admin"),
        ("/a//b///c", "/a/b/c"),
        ("/./admin", "/admin"),
        ("/public/../admin", "/admin"),
        ("/../../admin", "/admin"), // never above the root
        ("/admin/.", "/admin/"),
        ("/admin/x/..", "/admin/"),
        ("/%61dmin", "/admin"),      // unreserved letters are decoded
        ("/%2E%2e/admin", "/admin"), // so are dots, and then resolved
        ("/a%2Fb", "/a%2Fb"),        // an encoded slash stays encoded
        ("/a%20b", "/a%20b"),        // so does a space
        ("/a%zzb", "/a%zzb"),        // not an escape
        ("/a%6", "/a%6"),            // cut short
        ("/%7e%5F%2d", "/~_-"),
        ("/ünï/%41", "/ünï/A"), // non-ASCII is kept whole
    ];
    for (raw, expected) in cases {
        assert_eq!(normalize_path(raw), *expected, "{raw:?}");
    }
    assert!(matches!(normalize_path("/a/b"), Cow::Borrowed(_)));
}

#[test]
fn path_matches() {
    let cases = &[
        ("/admin", "/admin", true),
        ("/admin", "/admin/", true),
        ("/admin", "/admin/users", true),
        ("/admin", "/administrator", false), // segment boundary
        ("/admin", "/Admin", false),         // case-sensitive, as apps route
        ("/admin/", "/admin/x", true),
        ("/admin/", "/admin", false), // the slash is part of the prefix
        ("/", "/anything", true),
        ("/api/*/debug", "/api/v1/debug", true),
        ("/api/*/debug", "/api/v1/debug/x", false), // a glob matches the whole path
        ("/api/*", "/api/", true),
        ("/*.php", "/x/index.php", true),
    ];
    for (pattern, path, expected) in cases {
        let path_match = PathMatch::parse(pattern).expect(pattern);
        assert_eq!(path_match.matches(path), *expected, "{pattern} vs {path}");
    }
}

#[test]
fn rules_parse_and_print() {
    let cases = &[
        ("allow", "allow"),
        ("deny   path=/admin", "deny path=/admin"),
        ("allow ip=10.0.0.0/8,::1", "allow ip=10.0.0.0/8,::1/128"),
        ("deny header:X-Env=prod*", "deny header:x-env=prod*"),
        ("deny header:x-empty=", "deny header:x-empty="),
        (
            "allow ip=192.0.2.0/24 path=/api/* header:x-team=core",
            "allow ip=192.0.2.0/24 path=/api/* header:x-team=core",
        ),
    ];
    for (text, printed) in cases {
        let rule: Rule = text.parse().expect(text);
        assert_eq!(rule.to_string(), *printed, "{text}");
        assert_eq!(printed.parse::<Rule>().as_ref(), Ok(&rule), "{printed}");
    }
}

#[test]
fn rule_errors() {
    let cases = &[
        ("", AccessError::Empty),
        ("   ", AccessError::Empty),
        ("permit", AccessError::Action("permit".into())),
        ("Allow", AccessError::Action("Allow".into())),
        ("allow ip=", AccessError::Address(String::new())),
        ("allow ip=10.0.0.0/8,", AccessError::Address(String::new())),
        ("allow path=admin", AccessError::Path("admin".into())),
        ("allow path=*.php", AccessError::Path("*.php".into())),
        ("allow host=x", AccessError::Condition("host=x".into())),
        (
            "allow header:x-env",
            AccessError::Condition("header:x-env".into()),
        ),
        (
            "allow header:bad name=1",
            AccessError::Condition("header:bad".into()),
        ), // split on space
        ("allow header:=1", AccessError::HeaderName(String::new())),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<Rule>().as_ref(), Err(expected), "{text:?}");
    }
}

#[test]
fn policies_decide() {
    let admin_closed = policy(&["allow ip=10.0.0.0/8", "deny path=/admin"], Action::Allow);
    let allow_list = policy(
        &["allow path=/healthz", "allow ip=192.0.2.0/24,2001:db8::/32"],
        Action::Deny,
    );
    let by_header = policy(
        &[
            "deny header:user-agent=*bot*",
            "allow header:x-team=core path=/internal",
            "deny path=/internal",
        ],
        Action::Allow,
    );
    let empty = AccessPolicy::allow_all();
    let closed = AccessPolicy::new(Vec::new(), Action::Deny);
    let none = &[][..];

    type Case<'a> = (
        &'a AccessPolicy,
        &'a str,
        &'a str,
        &'a [(&'static str, &'static str)],
        Action,
        Option<usize>,
    );
    let cases: &[Case<'_>] = &[
        // The admin pages are closed except to the private network.
        (
            &admin_closed,
            "10.1.1.1",
            "/admin",
            none,
            Action::Allow,
            Some(0),
        ),
        (
            &admin_closed,
            "203.0.113.5",
            "/admin/users",
            none,
            Action::Deny,
            Some(1),
        ),
        (
            &admin_closed,
            "203.0.113.5",
            "//admin",
            none,
            Action::Deny,
            Some(1),
        ), // normalised
        (
            &admin_closed,
            "203.0.113.5",
            "/public/../admin",
            none,
            Action::Deny,
            Some(1),
        ),
        (
            &admin_closed,
            "203.0.113.5",
            "/%61dmin",
            none,
            Action::Deny,
            Some(1),
        ),
        (
            &admin_closed,
            "203.0.113.5",
            "/administrator",
            none,
            Action::Allow,
            None,
        ),
        (&admin_closed, "203.0.113.5", "/", none, Action::Allow, None),
        (
            &admin_closed,
            "::ffff:10.0.0.9",
            "/admin",
            none,
            Action::Allow,
            Some(0),
        ), // mapped
        // An allow list with an open health path.
        (
            &allow_list,
            "203.0.113.5",
            "/healthz",
            none,
            Action::Allow,
            Some(0),
        ),
        (
            &allow_list,
            "192.0.2.200",
            "/app",
            none,
            Action::Allow,
            Some(1),
        ),
        (
            &allow_list,
            "2001:db8:1::1",
            "/app",
            none,
            Action::Allow,
            Some(1),
        ),
        (&allow_list, "2001:db9::1", "/app", none, Action::Deny, None),
        (&allow_list, "203.0.113.5", "/app", none, Action::Deny, None),
        // Headers, and all conditions of a rule must hold.
        (
            &by_header,
            "10.0.0.1",
            "/",
            &[("user-agent", "Googlebot/2.1")],
            Action::Deny,
            Some(0),
        ),
        (
            &by_header,
            "10.0.0.1",
            "/",
            &[("user-agent", "curl/8")],
            Action::Allow,
            None,
        ),
        (
            &by_header,
            "10.0.0.1",
            "/internal/x",
            &[("x-team", "core")],
            Action::Allow,
            Some(1),
        ),
        (
            &by_header,
            "10.0.0.1",
            "/internal/x",
            &[("x-team", "web")],
            Action::Deny,
            Some(2),
        ),
        (
            &by_header,
            "10.0.0.1",
            "/internal/x",
            none,
            Action::Deny,
            Some(2),
        ),
        (
            &by_header,
            "10.0.0.1",
            "/other",
            &[("x-team", "core")],
            Action::Allow,
            None,
        ),
        // Any of a repeated header's values may match.
        (
            &by_header,
            "10.0.0.1",
            "/internal",
            &[("x-team", "web"), ("x-team", "core")],
            Action::Allow,
            Some(1),
        ),
        // No rules: the default decides.
        (&empty, "203.0.113.5", "/admin", none, Action::Allow, None),
        (&closed, "127.0.0.1", "/", none, Action::Deny, None),
    ];
    for (i, (policy, client, path, pairs, action, rule)) in cases.iter().enumerate() {
        let headers = headers(pairs);
        let request = AccessRequest {
            client: ip(client),
            path,
            headers: &headers,
        };
        let expected = AccessDecision {
            action: *action,
            rule: *rule,
        };
        assert_eq!(
            policy.evaluate(&request),
            expected,
            "case {i}: {client} {path} {pairs:?}"
        );
    }
}

#[test]
fn first_match_wins() {
    // Both rules match; their order decides.
    let deny_first = policy(&["deny path=/x", "allow path=/x"], Action::Allow);
    let allow_first = policy(&["allow path=/x", "deny path=/x"], Action::Deny);
    let headers = HeaderMap::new();
    let request = AccessRequest {
        client: ip("127.0.0.1"),
        path: "/x",
        headers: &headers,
    };
    assert_eq!(deny_first.evaluate(&request).action, Action::Deny);
    assert_eq!(allow_first.evaluate(&request).action, Action::Allow);
    // A rule without conditions matches everything after it is reached.
    let catch_all = policy(&["allow path=/open", "deny"], Action::Allow);
    assert_eq!(
        catch_all.evaluate(&request),
        AccessDecision {
            action: Action::Deny,
            rule: Some(1)
        }
    );
}
