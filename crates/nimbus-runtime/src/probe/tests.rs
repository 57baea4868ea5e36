use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A loopback server answering every request with `status`, for at most `max` connections.
async fn serve_status(status: u16, max: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..max {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let response =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn ready_on_2xx_3xx_4xx() {
    for status in [200, 204, 302, 404] {
        let port = serve_status(status, 5).await;
        let took = wait_ready(port, "/", Duration::from_secs(5)).await;
        assert!(took.is_ok(), "status {status}: {took:?}");
    }
}

#[tokio::test]
async fn not_ready_on_5xx() {
    let port = serve_status(503, 1_000).await;
    let err = wait_ready(port, "/healthz", Duration::from_millis(300))
        .await
        .unwrap_err();
    let ProbeError::Timeout { last_error, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(last_error, "HTTP 503");
}

#[tokio::test]
async fn times_out_when_nobody_listens() {
    let port = pick_free_port().unwrap();
    let started = std::time::Instant::now();
    let err = wait_ready(port, "/", Duration::from_millis(400))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let ProbeError::Timeout {
        port: p,
        attempts,
        ref last_error,
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(p, port);
    assert!(attempts >= 5, "polls fast at first: {attempts}");
    assert!(last_error.contains("connect"), "{last_error}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}/")),
        "{message}"
    );
}

#[tokio::test]
async fn hung_server_counts_as_not_ready() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let err = wait_ready(port, "/", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
    drop(listener);
}

#[tokio::test]
async fn rejects_relative_path() {
    let err = wait_ready(1, "health", Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(err, ProbeError::InvalidPath("health".into()));
}

#[test]
fn free_port_is_bindable() {
    let port = pick_free_port().unwrap();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
