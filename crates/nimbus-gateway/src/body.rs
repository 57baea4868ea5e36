//! The response body the gateway sends: either a small generated body (errors, `101`) or the
//! instance's body streamed through frame by frame, holding the request's admission [`Permit`]
//! (its slot on the instance) until the body ends or the client goes away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::error::BoxError;
use crate::gate::Permit;
use crate::observe::Pending;
use crate::upstream::{keep_trailer_fields, KeptBody};

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
        body: UpstreamBody,
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
    pub(crate) fn upstream(body: UpstreamBody, permit: Option<Permit>) -> Self {
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
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(full) => {
                let polled: Poll<Option<Result<Frame<Bytes>, BoxError>>> =
                    match Pin::new(full).poll_frame(cx) {
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

/// An instance's response body: from the pooled client, or read inline from the client
/// connection's kept upstream connection.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    Pooled(Incoming),
    Kept(KeptBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx).map(|frame| {
                frame.map(|frame| {
                    let frame = frame?;
                    Ok(match frame.into_trailers() {
                        Ok(trailers) => Frame::trailers(keep_trailer_fields(trailers)),
                        Err(frame) => frame,
                    })
                })
            }),
            Self::Kept(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(body) => body.is_end_stream(),
            Self::Kept(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Pooled(body) => body.size_hint(),
            Self::Kept(body) => body.size_hint(),
        }
    }
}

/// The request body sent to an instance: the client's body, with an optional size cap (a body
/// past it fails the upstream request, which the proxy answers with 413) and an optional slot
/// that gets the untouched body back when the upstream request is dropped before sending any
/// of it (a failed connection), so it can be retried on another instance.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    /// Bytes read so far and the cap.
    seen: u64,
    limit: Option<u64>,
    /// Present only when the proxy may need it (a limit without `content-length`, or a retry).
    shared: Option<std::sync::Arc<BodyShared>>,
    polled: bool,
}

/// What the proxy learns back from a [`RequestBody`] it gave away.
#[derive(Debug, Default)]
pub struct BodyShared {
    /// The body, returned unread when the upstream request was dropped before polling it.
    returned: std::sync::Mutex<Option<Incoming>>,
    /// The body went past its cap.
    too_large: std::sync::atomic::AtomicBool,
}

/// The error a [`RequestBody`] fails with past its cap.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl RequestBody {
    /// The client's body as it is.
    pub fn new(inner: Incoming) -> Self {
        Self {
            inner: Some(inner),
            seen: 0,
            limit: None,
            shared: None,
            polled: false,
        }
    }

    /// No body (a retried request that had none).
    pub fn empty() -> Self {
        Self {
            inner: None,
            seen: 0,
            limit: None,
            shared: None,
            polled: false,
        }
    }

    /// Fails past `limit` bytes.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Reports back through `shared` (see [`BodyShared`]).
    pub fn shared(mut self, shared: std::sync::Arc<BodyShared>) -> Self {
        self.shared = Some(shared);
        self
    }
}

impl BodyShared {
    /// The body, if it came back unread.
    pub fn take_returned(&self) -> Option<Incoming> {
        self.returned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// True when the body went past its cap.
    pub fn too_large(&self) -> bool {
        self.too_large.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.polled {
            return;
        }
        if let (Some(shared), Some(inner)) = (&self.shared, self.inner.take()) {
            *shared
                .returned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(inner);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(limit), Some(data)) = (this.limit, frame.data_ref()) {
                    this.seen += data.len() as u64;
                    if this.seen > limit {
                        if let Some(shared) = &this.shared {
                            shared
                                .too_large
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        this.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
