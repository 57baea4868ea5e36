use super::*;

#[test]
fn connections_close_after_errors_to_requests_with_bodies() {
    let cases = [
        (true, StatusCode::OK, false),       // body read, keep the connection
        (true, StatusCode::NOT_FOUND, true), // NoSuchBucket before reading
        (true, StatusCode::FORBIDDEN, true), // bad signature before reading
        (true, StatusCode::INTERNAL_SERVER_ERROR, true),
        (false, StatusCode::NOT_FOUND, false), // nothing left unread
        (false, StatusCode::OK, false),
    ];
    for (has_body, status, expected) in cases {
        assert_eq!(
            close_after(has_body, status),
            expected,
            "{has_body} {status}"
        );
    }
}

#[test]
fn requests_with_bodies() {
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    };
    let cases = [
        (headers(&[]), false),
        (headers(&[("content-length", "0")]), false),
        (headers(&[("content-length", "1")]), true),
        (headers(&[("transfer-encoding", "chunked")]), true),
        (headers(&[("content-length", "garbage")]), true), // unsure: close
    ];
    for (map, expected) in cases {
        assert_eq!(has_body(&map), expected, "{map:?}");
    }
}
