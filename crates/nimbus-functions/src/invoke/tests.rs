use std::net::SocketAddr;

use http::HeaderValue;
use serde_json::json;

use super::*;

fn headers(error: Option<&'static str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = error {
        headers.insert(HEADER_ERROR, HeaderValue::from_static(value));
    }
    headers
}

#[test]
fn classify_answers() {
    let traceback = r#"{"error":{"type":"ValueError","message":"boom","traceback":["Traceback (most recent call last):","ValueError: boom"]}}"#;
    // (status, x-nimbus-error, body, expected)
    let cases: Vec<(u16, Option<&'static str>, &str, InvokeOutcome)> = vec![
        (200, None, r#"{"a":1}"#, InvokeOutcome::Ok(json!({"a": 1}))),
        (200, None, "null", InvokeOutcome::Ok(Value::Null)), // handler returned nothing
        (200, None, r#""text""#, InvokeOutcome::Ok(json!("text"))),
        (
            200,
            Some("handler"),
            traceback,
            InvokeOutcome::HandlerError(HandlerError {
                error_type: "ValueError".into(),
                message: "boom".into(),
                traceback: vec![
                    "Traceback (most recent call last):".into(),
                    "ValueError: boom".into(),
                ],
            }),
        ),
        (
            200,
            Some("Handler"), // header value compared without case
            r#"{"error":{"type":"E","message":"m"}}"#, // traceback optional
            InvokeOutcome::HandlerError(HandlerError {
                error_type: "E".into(),
                message: "m".into(),
                traceback: vec![],
            }),
        ),
        (
            200,
            Some("handler"),
            "oops",
            InvokeOutcome::Platform(
                "the instance reported a handler error in an unreadable body \
                 (expected value at line 1 column 1): oops"
                    .into(),
            ),
        ),
        (
            200,
            None,
            "not json",
            InvokeOutcome::Platform(
                "the function's result is not JSON (expected ident at line 1 column 2): not json"
                    .into(),
            ),
        ),
        (
            400, // the shim's own error: its message is used
            None,
            r#"{"error":{"type":"InvalidEvent","message":"the event is not JSON"}}"#,
            InvokeOutcome::Platform("the instance answered HTTP 400: the event is not JSON".into()),
        ),
        (
            502,
            None,
            "",
            InvokeOutcome::Platform("the instance answered HTTP 502: (empty body)".into()),
        ),
        (
            500, // a non-200 is never a handler error, whatever the header says
            Some("handler"),
            "crash",
            InvokeOutcome::Platform("the instance answered HTTP 500: crash".into()),
        ),
    ];
    for (status, error, body, expected) in cases {
        let status = StatusCode::from_u16(status).unwrap();
        let got = classify(status, &headers(error), body.as_bytes());
        assert_eq!(got, expected, "{status} {error:?} {body}");
    }
}

#[test]
fn long_platform_bodies_are_cut() {
    let body = "x".repeat(1000);
    let InvokeOutcome::Platform(message) =
        classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), body.as_bytes())
    else {
        panic!("expected a platform error");
    };
    assert!(message.ends_with('…'), "{message}");
    assert!(message.len() < 300, "{message}");
}

#[test]
fn request_headers() {
    let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
    let request = InvokeRequest {
        request_id: "req-1".into(),
        function: "resize".into(),
        version: "v3".into(),
        memory_mb: 256,
        timeout: Duration::from_millis(2500),
        event: Bytes::from_static(b"{\"k\":1}"),
    };
    let built = build_request(addr, &request, 1_700_000_000_000).unwrap();
    assert_eq!(built.method(), http::Method::POST);
    assert_eq!(built.uri().to_string(), "http://127.0.0.1:4321/invoke");
    let cases: &[(&str, &str)] = &[
        (HEADER_REQUEST_ID, "req-1"),
        (HEADER_FUNCTION, "resize"),
        (HEADER_VERSION, "v3"),
        (HEADER_MEMORY_MB, "256"),
        (HEADER_DEADLINE_MS, "1700000002500"), // now + timeout
        ("content-type", "application/json"),
        ("host", "127.0.0.1:4321"),
    ];
    for (name, value) in cases {
        assert_eq!(built.headers()[*name], *value, "{name}");
    }
    // A header value that cannot be sent is a platform error, not a panic.
    let bad = InvokeRequest {
        request_id: "bad\nid".into(),
        ..request
    };
    assert!(build_request(addr, &bad, 0).is_err());
}

/// (outcome, Ok(value) or Err((kind, type, message)))
type ResultCase = (
    InvokeOutcome,
    Result<Value, (ErrorKind, &'static str, &'static str)>,
);

#[test]
fn outcomes_as_results() {
    let timeout = Duration::from_secs(3);
    let cases: Vec<ResultCase> = vec![
        (InvokeOutcome::Ok(json!(1)), Ok(json!(1))),
        (
            InvokeOutcome::HandlerError(HandlerError {
                error_type: "KeyError".into(),
                message: "'x'".into(),
                traceback: vec!["line".into()],
            }),
            Err((ErrorKind::Handler, "KeyError", "'x'")),
        ),
        (
            InvokeOutcome::Timeout,
            Err((
                ErrorKind::Timeout,
                "Timeout",
                "the function did not finish within its timeout of 3000 ms",
            )),
        ),
        (
            InvokeOutcome::Platform("refused".into()),
            Err((ErrorKind::Platform, "PlatformError", "refused")),
        ),
        (
            InvokeOutcome::MemoryLimit {
                used_mib: 210,
                limit_mib: 128,
            },
            Err((
                ErrorKind::Memory,
                "MemoryLimitExceeded",
                "the function used 210 MiB, more than its memory of 128 MiB; its instance was \
                 stopped (raise it with --memory)",
            )),
        ),
    ];
    for (outcome, expected) in cases {
        let got = outcome.clone().into_result(timeout);
        match (got, expected) {
            (Ok(v), Ok(e)) => assert_eq!(v, e),
            (Err(e), Err((kind, ty, message))) => {
                assert_eq!(
                    (e.kind, e.error_type.as_str(), e.message.as_str()),
                    (kind, ty, message)
                )
            }
            (got, expected) => panic!("{outcome:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn function_error_json_shape() {
    let error = FunctionError {
        kind: ErrorKind::Handler,
        error_type: "ValueError".into(),
        message: "boom".into(),
        traceback: vec!["a".into()],
    };
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"kind": "handler", "type": "ValueError", "message": "boom", "traceback": ["a"]})
    );
    let timeout = FunctionError {
        kind: ErrorKind::Timeout,
        error_type: "Timeout".into(),
        message: "late".into(),
        traceback: vec![],
    };
    // No empty traceback in the JSON.
    assert_eq!(
        serde_json::to_value(&timeout).unwrap(),
        json!({"kind": "timeout", "type": "Timeout", "message": "late"})
    );
}

#[tokio::test]
async fn refused_connection_is_a_platform_error() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let request = InvokeRequest {
        request_id: "r".into(),
        function: "f".into(),
        version: "v1".into(),
        memory_mb: 128,
        timeout: Duration::from_secs(5),
        event: Bytes::from_static(b"{}"),
    };
    let outcome = InvokeClient::new().invoke(addr, &request).await;
    assert!(
        matches!(&outcome, InvokeOutcome::Platform(m) if m.contains("did not answer")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn callback_urls_are_checked() {
    let client = InvokeClient::new();
    let cases: &[(&str, &str)] = &[
        ("https://example.com/hook", "is not http://"),
        ("not a url", "is invalid"),
        ("/relative", "is not http://"),
    ];
    for (url, expected) in cases {
        let err = client
            .post_callback(url, Bytes::new(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{url}: {err}");
    }
}

#[test]
fn over_memory_is_strictly_above_the_functions_mib() {
    const MIB: u64 = 1024 * 1024;
    let cases = [
        (0, 128, false),
        (128 * MIB, 128, false), // exactly the limit is allowed
        (128 * MIB + 1, 128, true),
        (3 * 1024 * MIB, 64, true),
        (u64::MAX, u64::MAX, false), // no overflow on absurd limits
    ];
    for (resident, memory_mb, over) in cases {
        assert_eq!(
            over_memory(resident, memory_mb),
            over,
            "{resident} vs {memory_mb} MiB"
        );
    }
}
