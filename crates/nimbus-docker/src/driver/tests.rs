use super::*;

#[test]
fn resolves_the_socket() {
    let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
        (None, None, Some(DEFAULT_SOCKET)),
        (None, Some(""), Some(DEFAULT_SOCKET)),
        (
            None,
            Some("unix:///run/user/1000/docker.sock"),
            Some("/run/user/1000/docker.sock"),
        ),
        (
            Some("/tmp/d.sock"),
            Some("tcp://10.0.0.1:2375"),
            Some("/tmp/d.sock"),
        ), // config wins
        (None, Some("tcp://10.0.0.1:2375"), None),
        (None, Some("ssh://me@host"), None),
        (None, Some("unix://"), None),
    ];
    for (configured, host, expected) in cases {
        let got = resolve_socket(configured.map(Path::new), *host).ok();
        assert_eq!(got, expected.map(PathBuf::from), "{configured:?} {host:?}");
    }
}

#[test]
fn cursor_skips_what_was_copied_and_survives_a_restart() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("x.cursor");
    let t = |secs, nanos| LogTimestamp::new(secs, nanos).ok_or("bad time");
    {
        let mut cursor = Cursor::new(path.clone(), None);
        assert!(!cursor.is_copied(t(1, 0)?));
        cursor.advance(t(5, 10)?);
        cursor.advance(t(5, 5)?); // never backwards
                                  // A stderr line older than the newest stdout line can still arrive: it is new.
        assert!(!cursor.is_copied(t(5, 5)?));
        // Dropped without an explicit save, as an aborted follower is.
    }
    let resumed = read_cursor(&path);
    assert_eq!(resumed, Some(t(5, 10)?));
    let cursor = Cursor::new(path.clone(), resumed);
    assert!(cursor.is_copied(t(4, 999_999_999)?));
    assert!(cursor.is_copied(t(5, 10)?));
    assert!(!cursor.is_copied(t(5, 11)?));
    assert!(!cursor.is_copied(t(6, 0)?));
    assert!(!dir.path().join("x.tmp").exists(), "no temp file left");
    Ok(())
}
