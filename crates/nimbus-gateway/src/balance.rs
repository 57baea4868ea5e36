//! Load-balancing choosers: which of a version's instances takes the next request.
//!
//! Every chooser is a pure function (or a small state machine driven by `&mut self`) over a
//! slice describing the candidates, and returns an index into that slice, or `None` when there
//! is no candidate. Nothing here reads a clock, a socket or a global RNG: randomness comes in as
//! arguments, so tests are deterministic and the proxy decides where state lives.
//!
//! - [`round_robin`]: `turn % len`.
//! - [`SmoothWeighted`]: nginx's smooth weighted round-robin (weights from instance size).
//! - [`power_of_two`]: least outstanding requests by the power of two random choices.
//! - [`HashRing`] + [`HashOn`]: consistent hashing on the client IP, a header or a cookie, with
//!   virtual nodes, so that when an instance comes or goes only its share of keys moves.
//! - [`Algorithm`]: the `--lb` setting, parsed from and printed as text.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::header::{HeaderName, COOKIE};
use http::HeaderMap;

/// Virtual nodes per instance on a [`HashRing`]; ketama's choice. More nodes even out the
/// shares (each instance gets 1/n ± about 8 %) at the cost of a bigger ring.
pub const DEFAULT_VNODES: usize = 160;

/// A load-balancing algorithm, as written after `--lb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    /// `round-robin`: each instance in turn.
    RoundRobin,
    /// `weighted`: smooth weighted round-robin, weights from instance size.
    Weighted,
    /// `least-request`: fewest requests in flight among two random instances.
    LeastRequest,
    /// `hash`, `hash:ip`, `hash:header:NAME` or `hash:cookie:NAME`: consistent hashing.
    Hash(HashOn),
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's address (IPv4-mapped IPv6 addresses count as the IPv4 address).
    ClientIp,
    /// The first value of a request header.
    Header(HeaderName),
    /// The value of a cookie in the `Cookie` header(s).
    Cookie(String),
}

/// Why an `--lb` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// Not one of the known algorithm names.
    #[error("unknown load-balancing algorithm {0:?}: use least-outstanding (the default), round-robin, weighted, least-request, hash (= hash:ip), hash:ip, hash:header:NAME or hash:cookie:NAME")]
    Unknown(String),
    /// `hash:header:` with a name that is not a valid header name.
    #[error("{0:?} is not a valid header name to hash on")]
    HeaderName(String),
    /// `hash:cookie:` with an empty name or one with characters a cookie name cannot have.
    #[error("{0:?} is not a valid cookie name to hash on")]
    CookieName(String),
}

/// The next instance in turn: `turn % len`. Callers keep an atomic counter and pass its
/// post-increment value. `None` when there is no instance.
pub fn round_robin(len: usize, turn: usize) -> Option<usize> {
    turn.checked_rem(len)
}

/// The state of nginx's smooth weighted round-robin: one running score per instance.
///
/// Each pick adds every instance's weight to its score, picks the highest score (the first one
/// on a tie) and subtracts the total weight from the winner. Over any window of `total` picks
/// each instance is picked exactly `weight` times, and heavy instances are interleaved with the
/// light ones instead of being picked in a run: weights 5/1/1 give `a a b a c a a`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmoothWeighted {
    current: Vec<i64>,
}

impl SmoothWeighted {
    /// A state with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks among instances with these weights. An instance of weight 0 is never picked (it is
    /// draining); `None` when there is none of positive weight. When the number of instances
    /// changes, the scores restart from zero.
    pub fn pick(&mut self, weights: &[u32]) -> Option<usize> {
        if self.current.len() != weights.len() {
            self.current.clear();
            self.current.resize(weights.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, &weight) in weights.iter().enumerate() {
            if weight == 0 {
                continue;
            }
            let weight = i64::from(weight);
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let chosen = best?;
        self.current[chosen] -= total;
        Some(chosen)
    }
}

/// Least outstanding requests by the power of two choices: draw two different instances at
/// random and take the one with fewer requests in flight (the first drawn on a tie).
///
/// `first_draw` and `second_draw` are raw random numbers (e.g. two halves of one `u64`); they are
/// reduced here to two distinct indices, so a caller needs no knowledge of `loads.len()`.
/// `None` when `loads` is empty; `Some(0)` for one instance.
pub fn power_of_two(loads: &[usize], first_draw: u32, second_draw: u32) -> Option<usize> {
    let (a, b) = two_distinct(loads.len(), first_draw, second_draw)?;
    Some(if loads[b] < loads[a] { b } else { a })
}

/// Two distinct indices below `len` from two raw draws (both the same when `len` is 1).
fn two_distinct(len: usize, first_draw: u32, second_draw: u32) -> Option<(usize, usize)> {
    let a = (first_draw as usize).checked_rem(len)?;
    let Some(b) = (second_draw as usize).checked_rem(len - 1) else {
        return Some((a, a));
    };
    // Draw from the len - 1 others: skip over `a`.
    Some((a, if b >= a { b + 1 } else { b }))
}

// === impl HashRing ===

/// A consistent-hash ring with virtual nodes. Each instance owns `vnodes` points on a 64-bit
/// circle, placed by hashing its id, so the points stay where they are when other instances
/// come or go; a key goes to the owner of the first point at or after the key's hash.
///
/// Build it once per set of ready instances (it is immutable), then [`HashRing::pick`] per
/// request. Removing one of `n` instances moves only the keys it owned (about 1/n); adding one
/// moves about 1/(n + 1), all of them to the new instance.
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    /// `(point, index into the ids the ring was built from)`, sorted by point.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// A ring over instances with these ids (e.g. instance ids, which survive restarts of the
    /// gateway and changes of the list order), each with [`DEFAULT_VNODES`] points.
    pub fn new<S: AsRef<str>>(ids: &[S]) -> Self {
        Self::with_vnodes(ids, DEFAULT_VNODES)
    }

    /// A ring with `vnodes` points per instance (at least 1).
    pub fn with_vnodes<S: AsRef<str>>(ids: &[S], vnodes: usize) -> Self {
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(ids.len().saturating_mul(vnodes));
        for (index, id) in ids.iter().enumerate() {
            let seed = fnv1a(FNV_OFFSET, id.as_ref().as_bytes());
            for replica in 0..vnodes as u64 {
                points.push((mix64(seed ^ mix64(replica)), index));
            }
        }
        // Equal points (vanishingly rare) go to the smaller id, whatever the input order.
        points.sort_unstable_by(|(pa, ia), (pb, ib)| {
            pa.cmp(pb)
                .then_with(|| ids[*ia].as_ref().cmp(ids[*ib].as_ref()))
        });
        Self { points }
    }

    /// True when the ring has no instance.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The index (into the ids the ring was built from) that owns the key hashed to `hash`;
    /// `None` for an empty ring.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        let at = self.points.partition_point(|(point, _)| *point < hash);
        // Past the last point the circle wraps to the first.
        let (_, index) = self.points.get(at).or_else(|| self.points.first())?;
        Some(*index)
    }
}

/// A stable 64-bit hash of a key (FNV-1a, then a finalizer that spreads nearby keys over the
/// ring). Stable across processes and Rust versions, unlike `std`'s `DefaultHasher`.
pub fn hash_key(key: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, key))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

// === impl HashOn ===

impl HashOn {
    /// The hash of this request's key, or `None` when the request lacks it (no such header or
    /// cookie, or a header value that is not visible ASCII); callers then fall back to another
    /// chooser, e.g. round-robin.
    pub fn hash(&self, client: IpAddr, headers: &HeaderMap) -> Option<u64> {
        match self {
            HashOn::ClientIp => Some(match client.to_canonical() {
                IpAddr::V4(v4) => hash_key(&v4.octets()),
                IpAddr::V6(v6) => hash_key(&v6.octets()),
            }),
            HashOn::Header(name) => headers.get(name).map(|value| hash_key(value.as_bytes())),
            HashOn::Cookie(name) => cookie_value(headers, name).map(|v| hash_key(v.as_bytes())),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s), the first one if repeated.
/// Surrounding double quotes are kept: they are part of the value as the server set it.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
}

impl fmt::Display for HashOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashOn::ClientIp => f.write_str("ip"),
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

// === impl Algorithm ===

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "round-robin" => return Ok(Algorithm::RoundRobin),
            "weighted" => return Ok(Algorithm::Weighted),
            "least-request" => return Ok(Algorithm::LeastRequest),
            "hash" | "hash:ip" => return Ok(Algorithm::Hash(HashOn::ClientIp)),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("hash:header:") {
            let header = HeaderName::from_str(name)
                .map_err(|_| AlgorithmError::HeaderName(name.to_string()))?;
            return Ok(Algorithm::Hash(HashOn::Header(header)));
        }
        if let Some(name) = text.strip_prefix("hash:cookie:") {
            // RFC 6265 cookie-name: a token (visible ASCII without separators).
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !valid {
                return Err(AlgorithmError::CookieName(name.to_string()));
            }
            return Ok(Algorithm::Hash(HashOn::Cookie(name.to_string())));
        }
        Err(AlgorithmError::Unknown(text.to_string()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::RoundRobin => f.write_str("round-robin"),
            Algorithm::Weighted => f.write_str("weighted"),
            Algorithm::LeastRequest => f.write_str("least-request"),
            Algorithm::Hash(on) => write!(f, "hash:{on}"),
        }
    }
}

#[cfg(test)]
mod tests;
