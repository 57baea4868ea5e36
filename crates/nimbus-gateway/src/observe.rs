//! What the gateway tells the rest of the engine about each finished request: the facts metrics,
//! metering (egress bytes) and the access log need, handed to a [`RequestObserver`] once the
//! response body is done (or the client went away).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

/// One finished request. The names are shared with the route table (`Arc<str>`), so filling
/// them in costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: u64,
    /// The normalised host (shared with the route table when it matched one).
    pub host: Arc<str>,
    pub method: Method,
    /// The request target; [`RequestRecord::path`] is the part that gets logged.
    pub uri: http::Uri,
    /// Empty when the request matched no service (404) or version.
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    pub version: Arc<str>,
    /// The instance that served it, if one did.
    pub instance: Option<Arc<str>>,
    pub status: u16,
    /// Response body bytes sent to the client (egress).
    pub bytes_out: u64,
    /// Request body bytes, from `content-length` when the client sent one (ingress).
    pub bytes_in: u64,
    /// Arrival to the end of the response body.
    pub duration: Duration,
    /// Forward to the instance's response headers, when an instance answered.
    pub upstream: Option<Duration>,
    pub request_id: http::HeaderValue,
}

impl RequestRecord {
    /// The request's path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The request id as text (ids are checked to be visible ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }
}

/// An empty name, shared: a record's names before routing (and after a 404) cost no allocation.
pub(crate) fn no_name() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from("")))
}

/// Receives every finished request. Called on the gateway's request path: keep it cheap and
/// never block (hand slow work to another task).
pub trait RequestObserver: Send + Sync {
    fn finished(&self, record: RequestRecord);
}

/// The record of a request in flight, completed and reported when its response body ends.
pub(crate) struct Pending {
    pub observer: Arc<dyn RequestObserver>,
    pub record: RequestRecord,
    pub started: Instant,
}

impl Pending {
    pub(crate) fn report(mut self, bytes_out: u64) {
        self.record.bytes_out = bytes_out;
        self.record.duration = self.started.elapsed();
        self.observer.finished(self.record);
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}
