use super::*;

fn keys(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A query, then the objects, common prefixes and `next_after` it should give.
type Case = (
    ListQuery,
    Vec<&'static str>,
    Vec<&'static str>,
    Option<&'static str>,
);

fn query(prefix: &str, delimiter: Option<&str>, after: Option<&str>, max_keys: usize) -> ListQuery {
    ListQuery {
        prefix: prefix.into(),
        delimiter: delimiter.map(Into::into),
        after: after.map(Into::into),
        max_keys,
    }
}

#[test]
fn pages() {
    let all = keys(&[
        "a.txt",
        "photos/2023/x.jpg",
        "photos/2024/a.jpg",
        "photos/2024/b.jpg",
        "photos/cover.jpg",
        "readme",
        "videos/v.mp4",
    ]);
    // (query, objects, common prefixes, next_after)
    let cases: Vec<Case> = vec![
        // Everything, flat.
        (
            query("", None, None, 1000),
            vec![
                "a.txt",
                "photos/2023/x.jpg",
                "photos/2024/a.jpg",
                "photos/2024/b.jpg",
                "photos/cover.jpg",
                "readme",
                "videos/v.mp4",
            ],
            vec![],
            None,
        ),
        // Top level with a delimiter.
        (
            query("", Some("/"), None, 1000),
            vec!["a.txt", "readme"],
            vec!["photos/", "videos/"],
            None,
        ),
        // One level down.
        (
            query("photos/", Some("/"), None, 1000),
            vec!["photos/cover.jpg"],
            vec!["photos/2023/", "photos/2024/"],
            None,
        ),
        // A prefix that is not a directory.
        (
            query("photos/2024/a", None, None, 1000),
            vec!["photos/2024/a.jpg"],
            vec![],
            None,
        ),
        // Prefix matching nothing.
        (query("nope/", Some("/"), None, 1000), vec![], vec![], None),
        // Page of two: a common prefix counts as one entry.
        (
            query("", Some("/"), None, 2),
            vec!["a.txt"],
            vec!["photos/"],
            Some("photos/"),
        ),
        // Continuing after a common prefix skips all its keys.
        (
            query("", Some("/"), Some("photos/"), 2),
            vec!["readme"],
            vec!["videos/"],
            None,
        ),
        // Flat pages of three.
        (
            query("", None, None, 3),
            vec!["a.txt", "photos/2023/x.jpg", "photos/2024/a.jpg"],
            vec![],
            Some("photos/2024/a.jpg"),
        ),
        (
            query("", None, Some("photos/2024/a.jpg"), 3),
            vec!["photos/2024/b.jpg", "photos/cover.jpg", "readme"],
            vec![],
            Some("readme"),
        ),
        (
            query("", None, Some("readme"), 3),
            vec!["videos/v.mp4"],
            vec![],
            None,
        ),
        // Exactly max_keys left: not truncated.
        (
            query("videos/", None, None, 1),
            vec!["videos/v.mp4"],
            vec![],
            None,
        ),
        // max_keys 0 returns nothing.
        (query("", None, None, 0), vec![], vec![], None),
        // An empty delimiter is no delimiter.
        (
            query("videos", Some(""), None, 10),
            vec!["videos/v.mp4"],
            vec![],
            None,
        ),
        // A multi-character delimiter.
        (
            query("photos", Some("/20"), None, 10),
            vec!["photos/cover.jpg"],
            vec!["photos/20"],
            None,
        ),
    ];
    for (q, objects, prefixes, next) in cases {
        let got = page(&all, &q);
        assert_eq!(got.objects, objects, "{q:?}");
        assert_eq!(got.common_prefixes, prefixes, "{q:?}");
        assert_eq!(got.next_after.as_deref(), next, "{q:?}");
    }
}

#[test]
fn following_tokens_visits_every_entry_once() {
    let all = keys(&["a/1", "a/2", "b", "c/1", "c/2/x", "d", "e/"]);
    for max_keys in 1..=4 {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..20 {
            let got = page(&all, &query("", Some("/"), after.as_deref(), max_keys));
            seen.extend(got.objects);
            seen.extend(got.common_prefixes);
            match got.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec!["a/", "b", "c/", "d", "e/"],
            "max_keys {max_keys}"
        );
    }
}

#[test]
fn tokens_round_trip_and_reject_garbage() {
    for key in ["", "photos/2024/a.jpg", "ünï code/ x"] {
        assert_eq!(decode_token(&encode_token(key)).as_deref(), Some(key));
    }
    for bad in ["abc", "zz", "ff"] {
        assert_eq!(decode_token(bad), None, "{bad:?}");
    }
}

#[test]
fn url_encoding_for_responses() {
    let cases = [
        ("photos/2024/a.jpg", "photos/2024/a.jpg"),
        ("a b+c", "a%20b%2Bc"),
        ("100%", "100%25"),
        ("ü~", "%C3%BC~"),
        ("x\u{1}y", "x%01y"), // control characters XML 1.0 cannot hold
    ];
    for (raw, encoded) in cases {
        assert_eq!(encode_url(raw), encoded, "{raw:?}");
    }
}
