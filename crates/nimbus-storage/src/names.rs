//! Bucket name rules (the S3 rules for general purpose buckets), checked before a bucket exists
//! on disk. A valid name is also a safe directory name: no `/`, never `.` or `..`.

#[cfg(test)]
mod tests;

/// The shortest and longest bucket names S3 accepts.
const MIN_LEN: usize = 3;
const MAX_LEN: usize = 63;
/// Prefixes S3 reserves for its own features.
const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
/// Suffixes S3 reserves for access points and other features.
const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// Why a bucket name was refused; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketNameError {
    #[error("must be 3 to 63 characters long, not {0}")]
    Length(usize),
    #[error("may contain only lowercase letters, digits, '.' and '-' (found {0:?})")]
    Character(char),
    #[error("must start and end with a lowercase letter or a digit")]
    Edge,
    #[error("must not contain two periods in a row")]
    AdjacentPeriods,
    #[error("must not look like an IP address")]
    IpAddress,
    #[error("must not start with the reserved prefix {0:?}")]
    ReservedPrefix(&'static str),
    #[error("must not end with the reserved suffix {0:?}")]
    ReservedSuffix(&'static str),
}

/// Checks `name` against the S3 bucket naming rules.
pub fn validate_bucket_name(name: &str) -> Result<(), BucketNameError> {
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(BucketNameError::Character(bad));
    }
    // Only ASCII is left, so bytes are characters.
    if !(MIN_LEN..=MAX_LEN).contains(&name.len()) {
        return Err(BucketNameError::Length(name.len()));
    }
    let is_edge_ok =
        |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !is_edge_ok(name.as_bytes().first()) || !is_edge_ok(name.as_bytes().last()) {
        return Err(BucketNameError::Edge);
    }
    if name.contains("..") {
        return Err(BucketNameError::AdjacentPeriods);
    }
    if looks_like_ipv4(name) {
        return Err(BucketNameError::IpAddress);
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Err(BucketNameError::ReservedPrefix(prefix));
    }
    if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        return Err(BucketNameError::ReservedSuffix(suffix));
    }
    Ok(())
}

/// Four dot-separated groups of digits, such as `192.168.5.4` (S3 refuses the format, even when a
/// group is above 255).
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.len() <= 3 && g.bytes().all(|b| b.is_ascii_digit()))
}
