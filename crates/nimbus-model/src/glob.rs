//! The glob used by traffic rules: `*` matches any run of characters (including none); every other
//! character matches itself, case-sensitively. A pattern without `*` is an exact match.

/// True when `value` matches `pattern`.
pub fn matches(pattern: &str, value: &str) -> bool {
    let p = pattern.as_bytes();
    let v = value.as_bytes();
    let (mut pi, mut vi) = (0, 0);
    // Where the last `*` was and how much of `value` it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        let cases = &[
            ("beta", "beta", true),   // exact
            ("beta", "Beta", false),  // case-sensitive
            ("beta", "beta2", false), // exact is not a prefix match
            ("*", "", true),          // star matches empty
            ("*", "anything", true),  // star matches all
            ("", "", true),           // empty matches only empty
            ("", "x", false),
            ("beta*", "beta", true), // trailing star, empty rest
            ("beta*", "beta-7", true),
            ("*-eu", "x-eu", true), // leading star
            ("*-eu", "x-us", false),
            ("a*b*c", "aXXbYYc", true), // several stars
            ("a*b*c", "aXXbYY", false),
            ("a**b", "ab", true), // consecutive stars
            ("*a", "aaa", true),  // backtracking
            ("a*a", "a", false),  // pattern longer than value
            ("v?", "v1", false),  // '?' is literal
            ("v?", "v?", true),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                matches(pattern, value),
                *expected,
                "{pattern:?} vs {value:?}"
            );
        }
    }
}
