//! Access control: an ordered list of allow/deny rules over the client address, the path and
//! headers, where the first rule that matches decides and a default action covers the rest.
//!
//! A rule is written `ACTION [CONDITION ...]` and holds when all of its conditions hold (a rule
//! without conditions always holds):
//!
//! | condition | holds when |
//! |---|---|
//! | `ip=10.0.0.0/8,::1` | the client address is in one of the networks (a bare address is a /32 or /128) |
//! | `path=/admin` | the path is `/admin` or below it (`/admin/x`), not `/administrator` |
//! | `path=/api/*/debug` | the whole path matches the glob (`*` is any run of characters) |
//! | `header:x-env=prod*` | a value of the header matches the glob (an exact value without `*`) |
//!
//! e.g. `allow ip=10.0.0.0/8`, `deny path=/admin`, default `allow`: the admin pages are closed
//! except to the private network. Paths are normalised before matching (`//`, `.`, `..` and
//! percent-encoded unreserved characters), so `/./admin` or `/%61dmin` cannot step around a rule.
//! Everything here is pure; the proxy answers a deny with 403.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::header::HeaderName;
use http::HeaderMap;
use nimbus_model::glob;

/// What a rule (or the default) does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it with 403.
    Deny,
}

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// How a rule matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path is this one or below it, on a segment boundary.
    Prefix(String),
    /// The whole path matches this glob.
    Glob(String),
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The client address is in one of these networks.
    ClientIn(Vec<Cidr>),
    /// The (normalised) path matches.
    Path(PathMatch),
    /// A value of the header matches the glob.
    Header { name: HeaderName, pattern: String },
}

/// An action taken when all conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub conditions: Vec<Condition>,
}

/// Ordered rules and the action for requests no rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    rules: Vec<Rule>,
    default: Action,
}

/// What access control sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The peer address of the connection.
    pub client: IpAddr,
    /// The request path, without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// The outcome of [`AccessPolicy::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessDecision {
    pub action: Action,
    /// The index of the rule that decided, `None` when the default did.
    pub rule: Option<usize>,
}

/// Why a rule, a network or an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("action {0:?} must be allow or deny")]
    Action(String),
    #[error(
        "{0:?} is not an IPv4 or IPv6 address or network (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.7)"
    )]
    Address(String),
    #[error("prefix length in {0:?} must be a number from 0 to 32 for IPv4 or 0 to 128 for IPv6")]
    Prefix(String),
    #[error("{given:?} has bits set after the prefix; did you mean {network}?")]
    HostBits { given: String, network: Cidr },
    #[error("condition {0:?} must be ip=NETWORKS, path=PATH or header:NAME=VALUE")]
    Condition(String),
    #[error("path {0:?} must start with /")]
    Path(String),
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
    #[error("a rule needs an action: allow or deny, then conditions")]
    Empty,
}

// === impl Action ===

impl FromStr for Action {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            other => Err(AccessError::Action(other.to_string())),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

// === impl Cidr ===

impl Cidr {
    /// The network of `address`/`prefix`; `None` when the prefix is too long for the family.
    /// Bits after the prefix are cleared.
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        let network = match address {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix)?)),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix)?)),
        };
        Some(Self { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `address` is in the network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`,
    /// what a dual-stack listener sees) count as their IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(self.prefix).is_some_and(|m| u32::from(ip) & m == u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(self.prefix).is_some_and(|m| u128::from(ip) & m == u128::from(net))
            }
            _ => false,
        }
    }
}

fn mask_v4(prefix: u8) -> Option<u32> {
    (prefix <= 32).then(|| u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn mask_v6(prefix: u8) -> Option<u128> {
    (prefix <= 128).then(|| u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
}

impl FromStr for Cidr {
    type Err = AccessError;

    /// `ADDRESS/PREFIX` or a bare address (the /32 or /128 of it). Bits set after the prefix are
    /// refused, since `10.1.2.3/8` is most likely a typo for a smaller network.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| AccessError::Address(text.to_string()))?;
        let full = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => full,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= full)
                .ok_or_else(|| AccessError::Prefix(text.to_string()))?,
        };
        let cidr =
            Cidr::new(address, prefix).ok_or_else(|| AccessError::Prefix(text.to_string()))?;
        if cidr.network != address {
            return Err(AccessError::HostBits {
                given: text.to_string(),
                network: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

// === impl PathMatch ===

impl PathMatch {
    /// A glob when `pattern` has a `*`, a prefix otherwise. The pattern must start with `/`.
    pub fn parse(pattern: &str) -> Result<Self, AccessError> {
        if !pattern.starts_with('/') {
            return Err(AccessError::Path(pattern.to_string()));
        }
        Ok(if pattern.contains('*') {
            PathMatch::Glob(pattern.to_string())
        } else {
            PathMatch::Prefix(pattern.to_string())
        })
    }

    /// True when the (already normalised) `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Glob(pattern) => glob::matches(pattern, path),
            PathMatch::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                None => false,
                // `/admin` covers `/admin` and `/admin/…`; `/admin/` covers what is below it.
                Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
            },
        }
    }
}

impl fmt::Display for PathMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Prefix(p) | PathMatch::Glob(p) => f.write_str(p),
        }
    }
}

/// The path as an application will most likely see it: percent-encoded unreserved characters
/// decoded (`%61` → `a`, `%2E` → `.`), empty and `.` segments dropped, `..` segments resolved
/// (never above the root). Other escapes such as `%2F` stay as they are. Borrows when there is
/// nothing to change.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let decoded = decode_unreserved(path);
    let needs_segments = decoded.contains("//")
        || decoded.split('/').any(|s| s == "." || s == "..")
        || !decoded.starts_with('/');
    if !needs_segments {
        return decoded;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    // A trailing slash, `.` or `..` still names a directory.
    let trailing = decoded.len() > 1
        && (decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/.."));
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (trailing && !out.ends_with('/')) {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986: letters, digits, `-._~`).
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)? << 4) | hex(*bytes.get(i + 2)?)?))
            .flatten()
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            None => {
                // Copy up to the next '%' (whole UTF-8 sequences, since '%' is ASCII).
                let end = path[i + 1..].find('%').map_or(path.len(), |at| i + 1 + at);
                out.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    Cow::Owned(out)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

// === impl Condition ===

impl Condition {
    /// True when the condition holds for a request whose path is already normalised.
    fn holds(&self, request: &AccessRequest<'_>, path: &str) -> bool {
        match self {
            Condition::ClientIn(networks) => networks.iter().any(|n| n.contains(request.client)),
            Condition::Path(path_match) => path_match.matches(path),
            Condition::Header { name, pattern } => request
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| glob::matches(pattern, value)),
        }
    }
}

impl FromStr for Condition {
    type Err = AccessError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(networks) = text.strip_prefix("ip=") {
            let networks = networks
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<Cidr>, _>>()?;
            return Ok(Condition::ClientIn(networks));
        }
        if let Some(pattern) = text.strip_prefix("path=") {
            return Ok(Condition::Path(PathMatch::parse(pattern)?));
        }
        if let Some(rest) = text.strip_prefix("header:") {
            let (name, pattern) = rest
                .split_once('=')
                .ok_or_else(|| AccessError::Condition(text.to_string()))?;
            let name = HeaderName::from_str(name)
                .map_err(|_| AccessError::HeaderName(name.to_string()))?;
            return Ok(Condition::Header {
                name,
                pattern: pattern.to_string(),
            });
        }
        Err(AccessError::Condition(text.to_string()))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::ClientIn(networks) => {
                f.write_str("ip=")?;
                for (i, network) in networks.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{network}")?;
                }
                Ok(())
            }
            Condition::Path(path_match) => write!(f, "path={path_match}"),
            Condition::Header { name, pattern } => write!(f, "header:{name}={pattern}"),
        }
    }
}

// === impl Rule ===

impl Rule {
    /// True when every condition holds (always, for a rule without conditions).
    fn matches(&self, request: &AccessRequest<'_>, path: &str) -> bool {
        self.conditions.iter().all(|c| c.holds(request, path))
    }
}

impl FromStr for Rule {
    type Err = AccessError;

    /// `allow|deny [CONDITION ...]`, separated by spaces.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut words = text.split_whitespace();
        let action = words.next().ok_or(AccessError::Empty)?.parse()?;
        let conditions = words.map(str::parse).collect::<Result<_, _>>()?;
        Ok(Rule { action, conditions })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.action)?;
        for condition in &self.conditions {
            write!(f, " {condition}")?;
        }
        Ok(())
    }
}

// === impl AccessPolicy ===

impl AccessPolicy {
    /// Rules checked in order, and the action when none matches.
    pub fn new(rules: Vec<Rule>, default: Action) -> Self {
        Self { rules, default }
    }

    /// Lets everything through.
    pub fn allow_all() -> Self {
        Self::new(Vec::new(), Action::Allow)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The action when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The first rule that matches decides; else the default.
    pub fn evaluate(&self, request: &AccessRequest<'_>) -> AccessDecision {
        if self.rules.is_empty() {
            return AccessDecision {
                action: self.default,
                rule: None,
            };
        }
        let path = normalize_path(request.path);
        let rule = self.rules.iter().position(|r| r.matches(request, &path));
        AccessDecision {
            action: rule.map_or(self.default, |i| self.rules[i].action),
            rule,
        }
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::allow_all()
    }
}

#[cfg(test)]
mod tests;
