//! The pure part of ListObjects: given every key under a prefix in sorted order, pick one page of
//! objects and common prefixes, S3 style, and say where the next page starts.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

#[cfg(test)]
mod tests;

/// What `encoding-type=url` leaves as is: unreserved characters and `/`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// S3's default and largest page size.
pub const MAX_KEYS: usize = 1000;

/// What the client asked for, already decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    /// Keys that contain the delimiter after the prefix roll up into one common prefix.
    pub delimiter: Option<String>,
    /// Only entries sorting after this (the start-after key or the continuation point).
    pub after: Option<String>,
    pub max_keys: usize,
}

/// One page of results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Object keys, sorted.
    pub objects: Vec<String>,
    /// Common prefixes, sorted.
    pub common_prefixes: Vec<String>,
    /// Set when more entries follow: the last entry of this page, where the next page starts.
    pub next_after: Option<String>,
}

enum Item<'a> {
    Object(&'a str),
    Prefix(&'a str),
}

/// Picks the page of `sorted_keys` that `query` asks for. Objects and common prefixes share the
/// `max_keys` budget, in key order.
pub fn page(sorted_keys: &[String], query: &ListQuery) -> Page {
    let mut page = Page::default();
    if query.max_keys == 0 {
        return page;
    }
    let prefix = query.prefix.as_str();
    let after = query.after.as_deref();
    let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut count = 0;
    let mut last: Option<&str> = None;
    for key in sorted_keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        if after.is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        let item = match delimiter.and_then(|d| rest.find(d).map(|i| i + d.len())) {
            Some(end) => Item::Prefix(&key[..prefix.len() + end]),
            None => Item::Object(key),
        };
        if let Item::Prefix(common) = item {
            // Keys of one common prefix are adjacent; the prefix itself may have ended the
            // previous page.
            if last == Some(common) || after == Some(common) {
                continue;
            }
        }
        if count == query.max_keys {
            page.next_after = last.map(str::to_owned);
            break;
        }
        count += 1;
        match item {
            Item::Object(k) => {
                page.objects.push(k.to_owned());
                last = Some(k);
            }
            Item::Prefix(p) => {
                page.common_prefixes.push(p.to_owned());
                last = Some(p);
            }
        }
    }
    page
}

/// The continuation token for a page that ended at `last` (hex, so it is opaque and URL-safe).
pub fn encode_token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The entry a continuation token points after; `None` for a token we did not issue.
pub fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// A key or prefix for a response with `encoding-type=url` (which SDKs ask for and decode), so
/// keys holding characters XML cannot carry survive the trip.
pub fn encode_url(s: &str) -> String {
    utf8_percent_encode(s, URL_ENCODE).to_string()
}
