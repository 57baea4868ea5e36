//! Names of namespaces, services and versions are DNS labels so they can appear in hosts.

use crate::ModelError;

/// Longest accepted name. Two names and a namespace must fit one 63-byte DNS label.
pub const MAX_NAME_LEN: usize = 30;

/// Checks a resource name: lowercase `a-z0-9-`, starts with a letter, does not end with `-`,
/// no `--` (reserved as the separator in generated hosts), at most 30 characters.
///
/// `field` names the input in the error (e.g. `service`).
pub fn validate_name(field: &str, name: &str) -> Result<(), ModelError> {
    let bad = |rule: &str| {
        ModelError::invalid(
            "invalid_name",
            field,
            format!("{field} name {name:?} is invalid: {rule}"),
        )
    };
    if name.is_empty() {
        return Err(bad("it must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(&format!(
            "it is {} characters long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(bad(&format!(
            "character {c:?} is not allowed; use lowercase letters a-z, digits 0-9 and '-'"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad("it must start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(bad("it must not end with '-'"));
    }
    if name.contains("--") {
        return Err(bad(
            "it must not contain '--', which separates names in generated domains",
        ));
    }
    Ok(())
}

/// The name of the `seq`-th version of a service: `v1`, `v2`, …
pub fn version_name(seq: u32) -> String {
    format!("v{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("hello", None),
            ("a", None),                                     // one letter
            ("web-2", None),                                 // digits and dash inside
            ("abcdefghijabcdefghijabcdefghij", None),        // exactly 30
            ("abcdefghijabcdefghijabcdefghijk", Some("31")), // 31 characters
            ("", Some("empty")),
            ("Hello", Some("'H'")),         // uppercase
            ("hello_world", Some("'_'")),   // underscore
            ("héllo", Some("'é'")),         // non-ascii
            ("9lives", Some("start with")), // digit first
            ("-web", Some("start with")),   // dash first
            ("web-", Some("end with")),     // dash last
            ("a--b", Some("'--'")),         // reserved separator
            ("a.b", Some("'.'")),           // dot
            ("a b", Some("' '")),           // space
        ];
        for (name, expected) in cases {
            let got = validate_name("service", name);
            match expected {
                None => assert_eq!(got, Ok(()), "{name:?}"),
                Some(fragment) => {
                    let err = got.expect_err(name);
                    assert_eq!(err.code, "invalid_name");
                    assert_eq!(err.field.as_deref(), Some("service"));
                    assert!(err.message.contains(fragment), "{name:?}: {}", err.message);
                }
            }
        }
    }

    #[test]
    fn version_names() {
        assert_eq!(version_name(1), "v1");
        assert_eq!(version_name(12), "v12");
    }
}
