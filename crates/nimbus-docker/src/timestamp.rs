//! The engine's log timestamps (`2024-05-01T12:00:00.123456789Z`, RFC 3339, UTC, up to nine
//! fraction digits), parsed into a comparable value without a date-time library.
//!
//! A log follower asks the engine for `timestamps=true`, so every entry starts with one of these
//! and a space. The time of the last entry copied is the follower's cursor: a follower resumed
//! after a restart asks for entries `since` the cursor's second and skips the ones at or before
//! the cursor itself, so nothing is copied twice.

#[cfg(test)]
mod tests;

/// A point in time with nanosecond precision, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogTimestamp {
    /// Seconds since the Unix epoch.
    secs: i64,
    nanos: u32,
}

// === impl LogTimestamp ===

impl LogTimestamp {
    pub fn new(secs: i64, nanos: u32) -> Option<Self> {
        (nanos < 1_000_000_000).then_some(Self { secs, nanos })
    }

    /// Seconds since the Unix epoch.
    pub fn secs(&self) -> i64 {
        self.secs
    }

    /// Parses RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        let (hour, minute, second) = (
            digits(&b[11..13])?,
            digits(&b[14..16])?,
            digits(&b[17..19])?,
        );
        // 60 allows a leap second; it counts as the next second's start.
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
            return None;
        }
        if second > 60 {
            return None;
        }
        let mut rest = &b[19..];
        let mut nanos: u32 = 0;
        if let Some(fraction) = rest.strip_prefix(b".") {
            let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
            if len == 0 {
                return None;
            }
            // Digits past the ninth are below a nanosecond: dropped.
            for (i, d) in fraction[..len].iter().enumerate().take(9) {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
            rest = &fraction[len..];
        }
        let offset_secs: i64 = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let hours = digits(&[*h1, *h2])?;
                let minutes = digits(&[*m1, *m2])?;
                let offset = hours * 3600 + minutes * 60;
                if *sign == b'-' {
                    -offset
                } else {
                    offset
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        Self::new(secs, nanos)
    }

    /// The cursor file's form: `SECS.NANOS`, exact and easy to read back.
    pub fn to_cursor(self) -> String {
        format!("{}.{:09}", self.secs, self.nanos)
    }

    /// Reads [`Self::to_cursor`]'s form back.
    pub fn from_cursor(text: &str) -> Option<Self> {
        let (secs, nanos) = text.trim().split_once('.')?;
        if nanos.len() != 9 {
            return None;
        }
        Self::new(secs.parse().ok()?, nanos.parse().ok()?)
    }

    /// The engine's `since` log filter takes whole seconds: entries of this second come again, and
    /// the caller skips those at or before `self`.
    pub fn since_param(self) -> i32 {
        i32::try_from(self.secs.max(0)).unwrap_or(i32::MAX)
    }
}

/// Splits one log entry of a `timestamps=true` stream into its time and its text. `None` when the
/// entry does not start with a timestamp and a space.
pub fn split_entry(entry: &[u8]) -> Option<(LogTimestamp, &[u8])> {
    // The timestamp is short; do not scan a long line for its first space.
    let head = &entry[..entry.len().min(64)];
    let space = head.iter().position(|b| *b == b' ')?;
    let stamp = std::str::from_utf8(&entry[..space]).ok()?;
    let time = LogTimestamp::parse_rfc3339(stamp)?;
    Some((time, &entry[space + 1..]))
}

/// ASCII digits to a number; `None` on anything else.
fn digits(bytes: &[u8]) -> Option<i64> {
    let mut value: i64 = 0;
    for b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(value)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
