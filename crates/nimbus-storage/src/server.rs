//! [`serve`]: the S3 endpoint's accept loop (hyper 1.x, HTTP/1.1 and h2c).

use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::service::Service;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tracing::{debug, info, warn, Instrument};

use crate::keys::{AccessKeys, KeyAuth};
use crate::s3::S3Adapter;
use crate::store::Storage;

#[cfg(test)]
mod tests;

/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the S3 API for `storage` on `listener` until `shutdown` resolves, then stops accepting
/// and gives open connections up to 5 s to finish. Every request must be signed (SigV4 header
/// or presigned query) with one of `keys`; unsigned requests, unknown keys and bad signatures
/// get 403. Buckets are addressed path-style (`http://HOST:PORT/BUCKET/KEY`).
pub async fn serve(
    listener: TcpListener,
    storage: Storage,
    keys: AccessKeys,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let service = {
        let mut builder = S3ServiceBuilder::new(S3Adapter::new(storage));
        builder.set_auth(KeyAuth(keys));
        builder.build()
    };
    info!(addr = %local, "S3 endpoint listening.");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    warn!(%error, "Accept failed.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%error, "Could not set TCP_NODELAY.");
        }
        let s3 = service.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let has_body = has_body(req.headers());
            let response = Service::call(&s3, req);
            async move {
                let mut response = response.await?;
                if close_after(has_body, response.status()) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, s3s::HttpError>(response)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let span = tracing::debug_span!("s3", client.addr = %client, server.addr = %local);
        tokio::spawn(
            async move {
                if let Err(error) = conn.await {
                    debug!(%error, "Connection closed with an error.");
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    info!(addr = %local, "S3 endpoint draining connections.");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(addr = %local, "S3 connections still open after the drain timeout; closing them.");
    }
    Ok(())
}

/// Whether to close the connection after this response. An error answered before the request
/// body was read (no such bucket, bad signature) leaves the body unread. A client that sent
/// `Expect: 100-continue` (boto3 and the aws CLI do) then never sends it and reuses the
/// connection, while hyper takes the next request's first bytes for the missing body
/// (hyperium/hyper#3137), so that request fails with a bad signature. Closing avoids that;
/// errors are rare, so are the reconnects.
fn close_after(request_has_body: bool, status: StatusCode) -> bool {
    request_has_body && (status.is_client_error() || status.is_server_error())
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}
