//! HTTP/1.1 to instances on a connection kept by the client's connection.
//!
//! An HTTP/1.1 client connection sends one request at a time, so it can own one upstream
//! connection and reuse it for every request it forwards to the same instance, with no shared
//! pool to check out from and put back into (a mutex, a hash of the address and a waiter list per
//! request in the pooled client). [`ConnUpstream`] is that one connection; it is dropped, and its
//! upstream connection closed, when the client's connection closes. HTTP/2 clients (many streams
//! at once), upgrades and h2c upstreams use the shared pooled client instead.
//!
//! A request that finds its kept connection closed by the instance (an idle timeout, a restart)
//! is sent again on a fresh connection: hyper hands an unsent request back.

use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::RequestBody;
use crate::route::Endpoint;

/// The upstream connection one client connection keeps; see the module docs.
#[derive(Default)]
pub(crate) struct ConnUpstream {
    slot: Mutex<Option<(Arc<Endpoint>, http1::SendRequest<RequestBody>)>>,
}

/// Why a request got no response from the instance.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be made (nothing was sent).
    Connect(std::io::Error),
    /// The exchange failed after the connection was made.
    Failed(hyper::Error),
}

impl ConnUpstream {
    /// Sends `req` to `endpoint` over the kept connection (made, or remade, as needed).
    pub(crate) async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // hyper's low-level connection sends the URI as given: send the origin form
        // (`/path?query`), as pooled clients do; an absolute URI reads as a proxy request to
        // many servers (busybox httpd answers 400).
        if req.uri().scheme().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = http::Uri::from(path);
        }
        let mut kept = self.take(endpoint);
        // At most two tries: the kept connection, then a fresh one if it turned out closed.
        for _ in 0..2 {
            let fresh = kept.is_none();
            let mut sender = match kept.take() {
                Some(sender) => sender,
                None => connect(endpoint).await.map_err(UpstreamError::Connect)?,
            };
            if let Err(error) = sender.ready().await {
                if fresh {
                    return Err(UpstreamError::Failed(error));
                }
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.put(endpoint, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => {
                        debug!("Kept upstream connection was closed; reconnecting.");
                        req = unsent;
                    }
                    _ => return Err(UpstreamError::Failed(error.into_error())),
                },
            }
        }
        // Two kept connections failed before sending (only reachable when `ready` failed on
        // the kept one and the fresh one was closed again): a last plain attempt.
        let mut sender = connect(endpoint).await.map_err(UpstreamError::Connect)?;
        sender.ready().await.map_err(UpstreamError::Failed)?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Failed)?;
        self.put(endpoint, sender);
        Ok(response)
    }

    /// The kept connection if it goes to `endpoint` and is still open; a connection to another
    /// instance is dropped (closed).
    fn take(&self, endpoint: &Arc<Endpoint>) -> Option<http1::SendRequest<RequestBody>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let (kept_for, sender) = slot.take()?;
        (Arc::ptr_eq(&kept_for, endpoint) && !sender.is_closed()).then_some(sender)
    }

    fn put(&self, endpoint: &Arc<Endpoint>, sender: http1::SendRequest<RequestBody>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Arc::clone(endpoint), sender));
    }
}

/// A new HTTP/1.1 connection to the instance, driven by its own task until it closes.
async fn connect(endpoint: &Endpoint) -> std::io::Result<http1::SendRequest<RequestBody>> {
    let stream = TcpStream::connect(endpoint.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            debug!(%error, "Upstream connection closed with an error.");
        }
    });
    Ok(sender)
}
