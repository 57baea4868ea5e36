//! The response body the gateway sends: either a small generated body (errors, `101`) or the
//! instance's body streamed through frame by frame, holding the request's admission [`Permit`]
//! (its slot on the instance) until the body ends or the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::gate::Permit;

/// A response body, without boxing on the hot path.
#[derive(Debug)]
pub struct GatewayBody {
    kind: Kind,
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
        match &mut self.get_mut().kind {
            Kind::Full(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Upstream { body, permit } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
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
