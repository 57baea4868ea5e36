use std::path::{Component, PathBuf};

use super::*;

#[test]
fn keys_map_to_paths_inside_the_bucket() {
    let long_segment = "a".repeat(254);
    let cases: &[(&str, Result<&str, KeyError>)] = &[
        ("hello.txt", Ok("mhello.txt")),
        ("photos/2024/cat.jpg", Ok("dphotos/d2024/mcat.jpg")),
        ("a", Ok("ma")),                                  // a file …
        ("a/b", Ok("da/mb")),                             // … and a directory of the same name
        ("dir/", Ok("ddir/m")),                           // "folder" marker object
        ("a//b", Ok("da/d/mb")),                          // empty segment
        ("..", Ok("m..")),                                // never the parent dir
        ("../../etc/passwd", Ok("d../d../detc/mpasswd")), // traversal stays inside
        ("/abs", Ok("d/mabs")),                           // leading slash is an empty segment
        ("sp ace+%", Ok("msp%20ace%2B%25")),              // encoded
        ("ünï", Ok("m%C3%BCn%C3%AF")),                    // UTF-8 bytes encoded
        ("_bucket.json", Ok("m_bucket.json")),            // never collides with our files
        ("", Err(KeyError::Empty)),
        (&long_segment, Ok("")), // 255 bytes with the prefix: fits
        (&"a".repeat(255), Err(KeyError::SegmentTooLong)),
        (&"%".repeat(100), Err(KeyError::SegmentTooLong)), // 300 bytes once encoded
        (&"a/".repeat(513), Err(KeyError::TooLong(1026))),
    ];
    for (key, expected) in cases {
        let got = ObjectPath::from_key(key).map(|p| p.relative());
        match expected {
            Ok("") => assert!(got.is_ok(), "{key:?}"),
            Ok(path) => assert_eq!(got, Ok(PathBuf::from(path)), "{key:?}"),
            Err(e) => assert_eq!(got, Err(e.clone()), "{key:?}"),
        }
        if let Ok(path) = got {
            assert!(
                path.components().all(|c| matches!(c, Component::Normal(_))),
                "{key:?} maps to {path:?}"
            );
        }
    }
}

#[test]
fn entries_decode_back_to_segments() {
    let cases: &[(&str, Option<Entry>)] = &[
        ("mhello.txt", Some(Entry::Object("hello.txt".into()))),
        ("dphotos", Some(Entry::Dir("photos".into()))),
        ("m", Some(Entry::Object(String::new()))),
        ("msp%20ace%2B%25", Some(Entry::Object("sp ace+%".into()))),
        ("m%C3%BCn%C3%AF", Some(Entry::Object("ünï".into()))),
        ("_blobs", None),       // ours
        ("_bucket.json", None), // ours
        ("xfoo", None),         // unknown kind
        ("", None),             // empty
        ("m%61", None),         // non-canonical: would collide with "ma"
        ("m%2b", None),         // lowercase hex is non-canonical too
        ("m%FF", None),         // not UTF-8
        ("ma b", None),         // unencoded space: not written by us
    ];
    for (name, expected) in cases {
        assert_eq!(&parse_entry(name), expected, "{name:?}");
    }
}

#[test]
fn encoding_round_trips() {
    for key in ["a", "a b/c+d/ü", "x/../y", "dir/", "%41/%/~"] {
        let path = ObjectPath::from_key(key).expect("valid key");
        let mut segments: Vec<String> = path
            .dirs
            .iter()
            .map(|d| match parse_entry(d) {
                Some(Entry::Dir(s)) => s,
                other => panic!("{d:?} parsed as {other:?}"),
            })
            .collect();
        match parse_entry(&path.file) {
            Some(Entry::Object(s)) => segments.push(s),
            other => panic!("{:?} parsed as {other:?}", path.file),
        }
        assert_eq!(segments.join("/"), key);
    }
}

#[test]
fn prefixes_narrow_the_walk() {
    let cases: &[(&str, Option<Vec<&str>>)] = &[
        ("", Some(vec![])),
        ("photos", Some(vec![])), // no complete segment yet
        ("photos/", Some(vec!["dphotos"])),
        ("photos/2024/ja", Some(vec!["dphotos", "d2024"])),
        ("a b/", Some(vec!["da%20b"])),
        (&format!("{}/", "a".repeat(300)), None), // no key can have this segment
    ];
    for (prefix, expected) in cases {
        let expected = expected
            .as_ref()
            .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(prefix_dirs(prefix), expected, "{prefix:?}");
    }
}

#[test]
fn ids_and_part_names() {
    let id = new_id();
    assert!(is_id(&id), "{id}");
    let cases: &[(&str, bool)] = &[
        ("0123456789abcdef0123456789abcdef", true),
        ("0123456789ABCDEF0123456789ABCDEF", false), // uppercase
        ("../../../../../../../../etc/pass", false), // traversal
        ("0123", false),                             // short
    ];
    for (s, expected) in cases {
        assert_eq!(is_id(s), *expected, "{s:?}");
    }

    let etag = "9e107d9d372bb6826bd81d3542a419d6";
    let name = part_file_name(7, etag);
    assert_eq!(name, format!("00007.{etag}"));
    assert_eq!(parse_part_file_name(&name), Some((7, etag.to_owned())));
    assert_eq!(parse_part_file_name("00007.tmp"), None);
    assert_eq!(parse_part_file_name("upload.json"), None);
    assert_eq!(parse_part_file_name(&format!("7.{etag}")), None);
}
