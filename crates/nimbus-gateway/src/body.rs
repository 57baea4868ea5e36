//! The response body the gateway sends: either a small generated body (errors, `101`) or the
//! instance's body streamed through frame by frame, holding the request's admission [`Permit`]
//! (its slot on the instance) until the body ends or the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::gate::Permit;
use crate::observe::Pending;

/// A response body, without boxing on the hot path. It counts the bytes it sends and, when it is
/// dropped (sent in full, failed, or abandoned by the client), reports the request to the
/// gateway's observer, if any.
#[derive(Debug)]
pub struct GatewayBody {
    kind: Kind,
    sent: u64,
    pending: Option<Pending>,
}

#[derive(Debug)]
enum Kind {
    Full(Full<Bytes>),
    Upstream {
        body: Incoming,
        /// Dropped at end of stream, on error, or when the client disconnects mid-body; dropping
        /// it frees the slot for the next queued request.
        permit: Option<Permit>,
    },
}

// === impl GatewayBody ===

impl GatewayBody {
    /// A generated body.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Full::new(bytes)),
            sent: 0,
            pending: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The instance's body, streamed; `permit` is released when it is done (at once for an
    /// empty body).
    pub fn upstream(body: Incoming, permit: Option<Permit>) -> Self {
        let permit = if body.is_end_stream() { None } else { permit };
        Self {
            kind: Kind::Upstream { body, permit },
            sent: 0,
            pending: None,
        }
    }

    /// Reports the request to the observer when this body is done.
    pub(crate) fn observed(mut self, pending: Option<Pending>) -> Self {
        self.pending = pending;
        self
    }
}

impl Drop for GatewayBody {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.report(self.sent);
        }
    }
}

fn count<E>(sent: &mut u64, polled: &Poll<Option<Result<Frame<Bytes>, E>>>) {
    if let Poll::Ready(Some(Ok(frame))) = polled {
        if let Some(data) = frame.data_ref() {
            *sent += data.len() as u64;
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(full) => {
                let polled = match Pin::new(full).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(Some(Err(never))) => match never {},
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                };
                count(&mut this.sent, &polled);
                polled
            }
            Kind::Upstream { body, permit } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                count(&mut this.sent, &polled);
                match &polled {
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                        permit.take();
                    }
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        permit.take();
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(full) => full.size_hint(),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
