//! Hosts: generated default and version-test domains, custom domain checks, `Host` normalisation.
//!
//! Generated hosts are one DNS label under the base domain (`hello--default.nimbus.localhost`), so
//! one wildcard DNS record and one wildcard certificate cover every service and version.

use crate::ModelError;

pub const DEFAULT_BASE_DOMAIN: &str = "nimbus.localhost";

/// `SERVICE--NAMESPACE.BASE`
pub fn service_host(service: &str, namespace: &str, base: &str) -> String {
    format!("{service}--{namespace}.{base}")
}

/// `VERSION--SERVICE--NAMESPACE.BASE`
pub fn version_host(version: &str, service: &str, namespace: &str, base: &str) -> String {
    format!("{version}--{service}--{namespace}.{base}")
}

/// Lowercases a `Host` header value and strips any port and trailing dot.
/// `[::1]:8000` → `[::1]`; `Hello.Example.COM.:80` → `hello.example.com`.
pub fn normalize_host(raw: &str) -> String {
    host_key(raw).into_owned()
}

/// [`normalize_host`] without allocating when the host is already lower case (the common case
/// on the request path).
pub fn host_key(raw: &str) -> std::borrow::Cow<'_, str> {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    let host = without_port.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// Checks a custom domain and returns its normal form. Hosts under the base domain whose first
/// label contains `--` are reserved for generated names.
pub fn validate_custom_domain(host: &str, base: &str) -> Result<String, ModelError> {
    let field = "host";
    let host_norm = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |rule: String| {
        ModelError::invalid(
            "invalid_domain",
            field,
            format!("domain {host:?} is invalid: {rule}"),
        )
    };
    if host_norm.is_empty() {
        return Err(bad("it must not be empty".into()));
    }
    if host_norm.len() > 253 {
        return Err(bad("it is longer than 253 characters".into()));
    }
    for label in host_norm.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label (two dots in a row?)".into()));
        }
        if label.len() > 63 {
            return Err(bad(format!("label {label:?} is longer than 63 characters")));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(bad(format!(
                "character {c:?} is not allowed; use letters, digits, '-' and '.'"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad(format!(
                "label {label:?} must not start or end with '-'"
            )));
        }
    }
    let suffix = format!(".{base}");
    if host_norm == base {
        return Err(ModelError::invalid(
            "reserved_domain",
            field,
            format!("domain {host:?} is the engine's base domain"),
        ));
    }
    if let Some(first) = host_norm.strip_suffix(&suffix) {
        if first.contains("--") {
            return Err(ModelError::invalid(
                "reserved_domain",
                field,
                format!("domain {host:?} is reserved for generated service and version domains"),
            ));
        }
    }
    Ok(host_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated() {
        assert_eq!(
            service_host("hello", "default", "nimbus.localhost"),
            "hello--default.nimbus.localhost"
        );
        assert_eq!(
            version_host("v2", "hello", "default", "nimbus.localhost"),
            "v2--hello--default.nimbus.localhost"
        );
    }

    #[test]
    fn normalize() {
        let cases = &[
            (
                "hello--default.nimbus.localhost",
                "hello--default.nimbus.localhost",
            ),
            (
                "hello--default.nimbus.localhost:8000",
                "hello--default.nimbus.localhost",
            ), // port
            ("Hello.Example.COM", "hello.example.com"), // case
            ("example.com.", "example.com"),            // trailing dot
            ("example.com.:80", "example.com"),         // dot and port
            ("[::1]:8000", "[::1]"),                    // ipv6 with port
            ("[::1]", "[::1]"),                         // ipv6 bare
            ("127.0.0.1:8000", "127.0.0.1"),            // ipv4
            (" example.com ", "example.com"),           // stray spaces
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_host(raw), *expected, "{raw:?}");
        }
    }

    #[test]
    fn custom_domains() {
        let base = "nimbus.localhost";
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("www.example.com", Ok("www.example.com")),
            ("WWW.Example.com.", Ok("www.example.com")), // normalised
            ("shop.nimbus.localhost", Ok("shop.nimbus.localhost")), // under base, no '--'
            ("localhost", Ok("localhost")),              // single label
            ("", Err("invalid_domain")),
            ("a..b", Err("invalid_domain")),       // empty label
            ("-a.com", Err("invalid_domain")),     // leading dash
            ("a_b.com", Err("invalid_domain")),    // underscore
            ("a b.com", Err("invalid_domain")),    // space
            ("x.com/path", Err("invalid_domain")), // path
            ("nimbus.localhost", Err("reserved_domain")), // the base itself
            ("hello--default.nimbus.localhost", Err("reserved_domain")), // generated shape
        ];
        for (host, expected) in cases {
            match (validate_custom_domain(host, base), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{host:?}"),
                (Err(e), Err(code)) => assert_eq!(e.code, *code, "{host:?}"),
                (got, want) => panic!("{host:?}: got {got:?}, want {want:?}"),
            }
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(validate_custom_domain(&long, base).is_err());
    }
}
