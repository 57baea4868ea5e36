//! Plain-text output helpers: column-aligned tables, ages and traffic summaries.

use std::time::{SystemTime, UNIX_EPOCH};

use nimbus_model::{RouteRule, TrafficTarget};

/// Renders a table: a header row, then one row per entry, columns padded to the widest cell and
/// separated by two spaces. The last column is not padded, so no line ends in spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(len),
                None => widths.push(len),
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds since the Unix epoch, by the local clock (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short age such as `42s`, `5m`, `3h` or `2d`; `-` for an unknown time.
pub fn age(now: u64, then: Option<u64>) -> String {
    let Some(then) = then.filter(|t| *t > 0) else {
        return "-".to_string();
    };
    let secs = now.saturating_sub(then);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `v1=90%, v2=10%`, or `-` for an empty split.
pub fn split_text(split: &[TrafficTarget]) -> String {
    if split.is_empty() {
        return "-".to_string();
    }
    split
        .iter()
        .map(|t| format!("{}={}%", t.version, t.percent))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per rule, numbered from 1 as the API's explain numbers them:
/// `1. query env=beta → v3`.
pub fn rule_lines(rules: &[RouteRule]) -> Vec<String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{}. {} → {}", i + 1, r.matcher, r.version))
        .collect()
}

/// `-` for an empty value, so table columns never collapse.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use nimbus_model::traffic::MatchSource;
    use nimbus_model::RuleMatch;

    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn render_tables() {
        type Case<'a> = (&'a [&'a str], Vec<Vec<String>>, &'a str);
        let cases: &[Case<'_>] = &[
            // Header only.
            (&["NAME", "URL"], vec![], "NAME  URL\n"),
            // Columns padded to the widest cell, last column unpadded.
            (
                &["NAME", "URL"],
                vec![row(&["hello", "http://a"]), row(&["x", "http://bb"])],
                "NAME   URL\nhello  http://a\nx      http://bb\n",
            ),
            // A wide header sets the width.
            (
                &["INSTANCES", "AGE"],
                vec![row(&["1/1", "5m"])],
                "INSTANCES  AGE\n1/1        5m\n",
            ),
            // Multi-byte characters count as one column each.
            (
                &["A", "B"],
                vec![row(&["→→", "x"]), row(&["abc", "y"])],
                "A    B\n→→   x\nabc  y\n",
            ),
            // An empty last cell leaves no trailing spaces.
            (&["A", "B"], vec![row(&["abc", ""])], "A    B\nabc\n"),
        ];
        for (headers, rows, expected) in cases {
            assert_eq!(render(headers, rows), *expected, "{headers:?} {rows:?}");
        }
    }

    #[test]
    fn ages() {
        let now = 1_000_000;
        let cases = &[
            (None, "-"),
            (Some(0), "-"), // unset timestamp
            (Some(now), "0s"),
            (Some(now - 59), "59s"),
            (Some(now - 60), "1m"),
            (Some(now - 3_599), "59m"),
            (Some(now - 3_600), "1h"),
            (Some(now - 86_400 * 3), "3d"),
            (Some(now + 10), "0s"), // clock skew: never negative
        ];
        for (then, expected) in cases {
            assert_eq!(age(now, *then), *expected, "{then:?}");
        }
    }

    #[test]
    fn traffic_text() {
        let t = |v: &str, p| TrafficTarget {
            version: v.into(),
            percent: p,
        };
        assert_eq!(split_text(&[]), "-");
        assert_eq!(split_text(&[t("v1", 100)]), "v1=100%");
        assert_eq!(split_text(&[t("v1", 90), t("v2", 10)]), "v1=90%, v2=10%");
        let rule = RouteRule {
            matcher: RuleMatch {
                source: MatchSource::Header,
                name: "x-canary".into(),
                value: "1".into(),
            },
            version: "v2".into(),
        };
        assert_eq!(rule_lines(&[rule]), vec!["1. header x-canary=1 → v2"]);
    }
}
