use super::*;

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i}\n")).collect()
}

#[test]
fn tail_lines_cases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let cases: &[(&str, usize, &[&str])] = &[
        ("", 3, &[]),                                // empty file
        ("one\n", 3, &["one"]),                      // fewer lines than asked
        ("one\ntwo\nthree\n", 2, &["two", "three"]), // last two
        ("one\ntwo\nthree", 2, &["two", "three"]),   // unfinished last line counts
        ("one\r\ntwo\r\n", 5, &["one", "two"]),      // CRLF
        ("a\n\nb\n", 3, &["a", "", "b"]),            // blank lines are lines
        ("one\ntwo\n", 0, &[]),                      // nothing asked
    ];
    for (content, n, expected) in cases {
        std::fs::write(&path, content).unwrap();
        assert_eq!(tail_lines(&path, *n), *expected, "{content:?} n={n}");
    }
    assert!(tail_lines(&dir.path().join("missing.log"), 3).is_empty());
}

#[test]
fn tail_lines_reads_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    // ~90 KB: many TAIL_BLOCKs.
    std::fs::write(&path, numbered(0, 10_000)).unwrap();
    let got = tail_lines(&path, 3);
    assert_eq!(got, ["line 9997", "line 9998", "line 9999"]);
    let got = tail_lines(&path, 2_000);
    assert_eq!(got.len(), 2_000);
    assert_eq!(got[0], "line 8000");
    assert_eq!(got[1_999], "line 9999");
}

#[test]
fn tail_lines_falls_back_to_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.log");
    std::fs::write(rotated_path(&path), numbered(0, 10)).unwrap();
    std::fs::write(&path, numbered(10, 12)).unwrap();
    assert_eq!(
        tail_lines(&path, 4),
        ["line 8", "line 9", "line 10", "line 11"]
    );
    // Enough in the current file: the rotated one is not used.
    assert_eq!(tail_lines(&path, 1), ["line 11"]);
    // Only the rotated file has content (just after a rotation).
    std::fs::write(&path, "").unwrap();
    assert_eq!(tail_lines(&path, 2), ["line 8", "line 9"]);
}

#[test]
fn read_from_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.log");
    std::fs::write(&path, "one\ntwo\nthr").unwrap();

    let (lines, off) = read_from(&path, 0, 1024).unwrap();
    assert_eq!(lines, ["one", "two"]);
    assert_eq!(off, 8, "unfinished line is left for later");

    let (lines, off2) = read_from(&path, off, 1024).unwrap();
    assert!(lines.is_empty());
    assert_eq!(off2, off);

    std::fs::write(&path, "one\ntwo\nthree\nfour\n").unwrap();
    let (lines, off) = read_from(&path, off, 1024).unwrap();
    assert_eq!(lines, ["three", "four"]);
    assert_eq!(off, 19);

    // max_bytes cuts at the last complete line within the budget.
    let (lines, off) = read_from(&path, 0, 10).unwrap();
    assert_eq!(lines, ["one", "two"]);
    assert_eq!(off, 8);

    // A line longer than the budget comes in pieces so the cursor moves.
    std::fs::write(&path, "abcdefghij\n").unwrap();
    let (lines, off) = read_from(&path, 0, 4).unwrap();
    assert_eq!((lines, off), (vec!["abcd".to_owned()], 4));

    assert!(read_from(&dir.path().join("missing"), 0, 10).is_err());
}

#[test]
fn read_from_restarts_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rot.log");
    std::fs::write(&path, numbered(0, 100)).unwrap();
    let (lines, off) = read_from(&path, 0, 1 << 20).unwrap();
    assert_eq!(lines.len(), 100);

    assert!(rotate_if_over(&path, 10).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(tail_lines(&rotated_path(&path), 1), ["line 99"]);

    // New writes after the truncate: the file is now shorter than the cursor.
    std::fs::write(&path, "fresh\n").unwrap();
    let (lines, off2) = read_from(&path, off, 1 << 20).unwrap();
    assert_eq!(lines, ["fresh"]);
    assert_eq!(off2, 6);
}

#[test]
fn rotate_if_over_cases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.log");
    assert!(!rotate_if_over(&path, 10).unwrap(), "missing file");
    std::fs::write(&path, "0123456789").unwrap();
    assert!(!rotate_if_over(&path, 10).unwrap(), "at the cap");
    std::fs::write(&path, "0123456789A").unwrap();
    assert!(rotate_if_over(&path, 10).unwrap(), "over the cap");
    assert_eq!(
        std::fs::read_to_string(rotated_path(&path)).unwrap(),
        "0123456789A"
    );
    // A second rotation replaces the old `.1`.
    std::fs::write(&path, "second rotation!").unwrap();
    assert!(rotate_if_over(&path, 10).unwrap());
    assert_eq!(
        std::fs::read_to_string(rotated_path(&path)).unwrap(),
        "second rotation!"
    );
}

#[test]
fn appends_continue_at_new_end_after_truncate() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let mut writer = open_append(&path).unwrap();
    writer.write_all(numbered(0, 50).as_bytes()).unwrap();
    assert!(rotate_if_over(&path, 100).unwrap());
    writer.write_all(b"after\n").unwrap();
    // O_APPEND: no hole of zeros before the new line.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
}

#[test]
fn the_lines_since_a_time_start_at_the_latest_mark_before_it() {
    let marks = [
        Mark {
            at_ms: 1000,
            size: 4,
        },
        Mark {
            at_ms: 2000,
            size: 8,
        },
    ];
    // (since, offset): never fewer lines than asked for; at most those of one mark's gap more.
    let cases = [(0, 0), (999, 0), (1000, 4), (1500, 4), (2000, 8), (9000, 8)];
    for (since, offset) in cases {
        assert_eq!(offset_since(&marks, since), offset, "since {since}");
    }
    assert_eq!(offset_since(&[], 5000), 0, "no marks: the whole log");
    // (since, whether a log with these marks may hold lines that new)
    for (since, may) in [(0, true), (2000, true), (2001, false)] {
        assert_eq!(may_hold_since(&marks, since), may, "since {since}");
    }
    assert!(may_hold_since(&[], 1), "a log without marks might");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    std::fs::write(&log, "a\nb\nc\nd\ne\n").unwrap();
    for mark in marks {
        append_mark(&log, mark.at_ms, mark.size).unwrap();
    }
    std::fs::write(index_path(&log), {
        let mut text = std::fs::read_to_string(index_path(&log)).unwrap();
        text.push_str("torn"); // a crash mid-append
        text
    })
    .unwrap();
    assert_eq!(read_marks(&log), marks);
    let cases: &[(u64, usize, &[&str])] = &[
        (500, 10, &["a", "b", "c", "d", "e"]),
        (1500, 10, &["c", "d", "e"]),
        (2000, 10, &["e"]),
        (1000, 2, &["d", "e"]), // the newest of them
    ];
    for (since, max, expected) in cases {
        assert_eq!(
            lines_since(&log, *since, *max, 1 << 20),
            *expected,
            "since {since}"
        );
    }
    // A read budget smaller than the gap keeps the newest whole lines.
    assert_eq!(lines_since(&log, 0, 10, 5), ["d", "e"]);

    // Rotated at 3000: the copy keeps the marks and holds what came before; the emptied log's
    // first mark dates the rotation.
    std::fs::rename(&log, rotated_path(&log)).unwrap();
    std::fs::rename(index_path(&log), index_path(&rotated_path(&log))).unwrap();
    std::fs::write(&log, "f\n").unwrap();
    append_mark(&log, 3000, 0).unwrap();
    let cases: &[(u64, &[&str])] = &[
        (1500, &["c", "d", "e", "f"]),
        (2500, &["e", "f"]), // e: written between the last mark and the rotation
        (3000, &["f"]),
        (9000, &["f"]),
    ];
    for (since, expected) in cases {
        assert_eq!(
            lines_since(&log, *since, 10, 1 << 20),
            *expected,
            "since {since}, rotated"
        );
    }
}

#[test]
fn upkeep_marks_growth_once_and_rotation_moves_the_marks() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("b.log");
    let mut marker = Marker::default();
    assert!(!marker.upkeep(&log, 100).unwrap(), "no log yet: nothing");
    assert!(read_marks(&log).is_empty());
    std::fs::write(&log, "one\n").unwrap();
    marker.upkeep(&log, 100).unwrap();
    marker.upkeep(&log, 100).unwrap(); // unchanged: no second mark
    let marks = read_marks(&log);
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].size, 4);

    std::fs::write(&log, numbered(0, 30)).unwrap();
    assert!(marker.upkeep(&log, 100).unwrap(), "over the cap: rotated");
    assert_eq!(
        read_marks(&rotated_path(&log)),
        marks,
        "the copy keeps them"
    );
    let fresh = read_marks(&log);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].size, 0, "the emptied log starts from now");
    // Lines written after the rotation are found; the copy's older ones are not.
    std::fs::write(&log, "after\n").unwrap();
    let since = fresh[0].at_ms;
    assert_eq!(lines_since(&log, since, 10, 1 << 20), ["after"]);
    assert_eq!(lines_since(&log, 0, 2, 1 << 20), ["line 29", "after"]);
}
