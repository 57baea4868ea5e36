//! Readiness: is an instance answering HTTP on its port yet? Plus picking a free port for it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::{DriverError, ProbeError};

#[cfg(test)]
mod tests;

/// First gap between two probe attempts; it grows by half each time up to [`MAX_DELAY`].
/// Probes are this far apart during the first [`FAST_PHASE`]: a cold start's held requests wait
/// for the probe, so its period is added to every cold start (a refused connect costs
/// microseconds, so polling this often is cheap).
const FIRST_DELAY: Duration = Duration::from_millis(1);
/// How long probing stays at [`FIRST_DELAY`] before backing off towards [`MAX_DELAY`].
const FAST_PHASE: Duration = Duration::from_secs(2);
const MAX_DELAY: Duration = Duration::from_millis(100);
/// Connect + response deadline of one attempt (cut short by the overall timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Picks a port nobody listens on right now by binding `127.0.0.1:0` and dropping the socket.
/// Another process may take it before the instance binds it; callers retry on a failed start.
pub fn pick_free_port() -> Result<u16, DriverError> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(DriverError::NoFreePort)?;
    let port = listener
        .local_addr()
        .map_err(DriverError::NoFreePort)?
        .port();
    Ok(port)
}

/// Polls `GET http://127.0.0.1:{port}{health_path}` until it answers 2xx, 3xx or 4xx (anything
/// that proves the app serves HTTP), and returns how long that took. Attempts are 1 ms apart for
/// the first 2 s, then back off to ~100 ms; each has its own short connect/response deadline. 5xx, refused and
/// hung connections count as not ready yet.
pub async fn wait_ready(
    port: u16,
    health_path: &str,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    if !health_path.starts_with('/') {
        return Err(ProbeError::InvalidPath(health_path.to_owned()));
    }
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delay = FIRST_DELAY;
    let mut attempts = 0u32;
    let mut last_error = String::from("no attempt made");
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        attempts += 1;
        let budget = ATTEMPT_TIMEOUT.min(deadline - now);
        match tokio::time::timeout(budget, probe_once(port, health_path)).await {
            Ok(Ok(status)) if status < 500 => return Ok(started.elapsed()),
            Ok(Ok(status)) => last_error = format!("HTTP {status}"),
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = format!("no response within {budget:?}"),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        if started.elapsed() >= FAST_PHASE {
            delay = (delay * 3 / 2).min(MAX_DELAY);
        }
    }
    Err(ProbeError::Timeout {
        port,
        path: health_path.to_owned(),
        timeout,
        attempts,
        last_error,
    })
}

/// One HTTP/1.1 request on a fresh connection; the status code, or why there was none.
/// One health check: `GET path` on `127.0.0.1:port` within `timeout`; the status, or why there
/// was none.
pub async fn check_once(port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    match tokio::time::timeout(timeout, probe_once(port, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no response within {timeout:?}")),
    }
}

async fn probe_once(port: u16, path: &str) -> Result<u16, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::USER_AGENT, "nimbus-probe")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let result = sender.send_request(request).await;
    // The body is not needed; dropping the connection closes it.
    conn.abort();
    result
        .map(|response| response.status().as_u16())
        .map_err(|e| format!("request: {e}"))
}
