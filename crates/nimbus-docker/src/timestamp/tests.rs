use super::*;

#[test]
fn parses_rfc3339() {
    let cases: &[(&str, Option<(i64, u32)>)] = &[
        ("1970-01-01T00:00:00Z", Some((0, 0))),
        (
            "2024-05-01T12:34:56.123456789Z",
            Some((1_714_566_896, 123_456_789)),
        ),
        ("2024-05-01T12:34:56.5Z", Some((1_714_566_896, 500_000_000))), // trailing zeros trimmed
        (
            "2024-05-01T12:34:56.1234567891Z",
            Some((1_714_566_896, 123_456_789)),
        ), // past ns: dropped
        ("2024-02-29T00:00:00Z", Some((1_709_164_800, 0))),             // leap day
        ("2000-03-01T00:00:00Z", Some((951_868_800, 0))),
        ("1969-12-31T23:59:59Z", Some((-1, 0))),
        ("2024-05-01T14:34:56+02:00", Some((1_714_566_896, 0))), // offset
        ("2024-05-01T10:34:56-02:00", Some((1_714_566_896, 0))),
        ("2024-05-01t12:34:56z", Some((1_714_566_896, 0))), // lower case allowed by RFC 3339
        ("2024-05-01T12:34:56", None),                      // no zone
        ("2024-05-01T12:34:56.Z", None),                    // empty fraction
        ("2024-13-01T12:34:56Z", None),                     // month 13
        ("2024-05-01T24:00:00Z", None),                     // hour 24
        ("2024-05-01X12:34:56Z", None),
        ("not a time at all!!", None),
        ("", None),
    ];
    for (text, expected) in cases {
        let got = LogTimestamp::parse_rfc3339(text).map(|t| (t.secs, t.nanos));
        assert_eq!(got, *expected, "{text:?}");
    }
}

#[test]
fn orders_by_time() {
    let parse = |s| LogTimestamp::parse_rfc3339(s);
    let cases = &[
        (
            "2024-05-01T12:00:00.5Z",
            "2024-05-01T12:00:00.123456789Z",
            true,
        ), // .5 > .123…
        (
            "2024-05-01T12:00:01Z",
            "2024-05-01T12:00:00.999999999Z",
            true,
        ),
        (
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.000000001Z",
            false,
        ),
    ];
    for (a, b, a_later) in cases {
        assert_eq!(parse(a) > parse(b), *a_later, "{a} > {b}");
    }
}

#[test]
fn cursor_round_trips() {
    let cases = &[
        (0, 0),
        (1_714_566_896, 123_456_789),
        (1_714_566_896, 5),
        (-1, 999_999_999),
    ];
    for (secs, nanos) in cases {
        let t = LogTimestamp::new(*secs, *nanos).expect("valid");
        assert_eq!(LogTimestamp::from_cursor(&t.to_cursor()), Some(t), "{t:?}");
    }
    for bad in [
        "",
        "12",
        "12.5",
        "x.000000000",
        "1.0000000000",
        "1.999999999x",
    ] {
        assert_eq!(LogTimestamp::from_cursor(bad), None, "{bad:?}");
    }
}

#[test]
fn since_param_is_whole_seconds() {
    let cases: &[(i64, i32)] = &[
        (0, 0),
        (-5, 0),
        (1_714_566_896, 1_714_566_896),
        (i64::MAX, i32::MAX),
    ];
    for (secs, expected) in cases {
        let t = LogTimestamp::new(*secs, 7).expect("valid");
        assert_eq!(t.since_param(), *expected, "{secs}");
    }
}

/// An entry, and the seconds and text it splits into.
type EntryCase<'a> = (&'a [u8], Option<(i64, &'a [u8])>);

#[test]
fn splits_entries() {
    let cases: &[EntryCase<'_>] = &[
        (
            b"2024-05-01T12:34:56.000000001Z hello\n",
            Some((1_714_566_896, b"hello\n")),
        ),
        (
            b"2024-05-01T12:34:56Z  two spaces\n",
            Some((1_714_566_896, b" two spaces\n")),
        ),
        (b"2024-05-01T12:34:56Z ", Some((1_714_566_896, b""))),
        (b"hello world\n", None),
        (b"2024-05-01T12:34:56Z", None), // no space, no message
        (b"", None),
    ];
    for (entry, expected) in cases {
        let got = split_entry(entry).map(|(t, rest)| (t.secs, rest));
        assert_eq!(got, *expected, "{:?}", String::from_utf8_lossy(entry));
    }
}
