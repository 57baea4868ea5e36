//! HTTP/1.1 to instances on connections kept by the client's connection, driven inline.
//!
//! A client connection keeps the upstream connections its requests used and reuses them for its
//! next requests to the same instances: one for an HTTP/1.1 client (one request at a time), a
//! few for an HTTP/2 client (concurrent streams). [`ConnUpstream`] holds them, and they are
//! driven by the task serving the request: the request head is written and the response head
//! read right in the request's future, and the response body is read by the [`KeptBody`] the
//! client's connection polls as it sends it. There is no shared pool to check out from, no
//! connection task, and no channel between tasks per request (what a pooled client costs: a
//! mutex, a hashed lookup, two task wake-ups and a body channel). This path carries requests
//! without a body, the bulk of proxied traffic; requests with one, upgrades and h2c upstreams use
//! the shared pooled client.
//!
//! A kept connection the instance closed while idle (an idle timeout, a restart) shows as a
//! write error or an end of stream before any response byte; the request, which has no body, is
//! then sent again once on a fresh connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::proxy::{
    connection_named, is_hop_by_hop, Forwarded, HeaderNames, X_FORWARDED_FOR, X_FORWARDED_HOST,
    X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::route::Endpoint;

/// Most header fields in an instance's response head, and most trailer fields after its body.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest response head (status line and headers) read from an instance.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line or trailer line in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Read buffer reserved before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Most idle upstream connections one client connection keeps; past it the oldest is closed.
const MAX_IDLE_PER_CLIENT: usize = 8;

/// The idle upstream connections, newest last, one client connection keeps.
type IdleConns = Arc<Mutex<Vec<KeptConn>>>;

/// The upstream connections one client connection keeps; see the module docs.
#[derive(Default)]
pub(crate) struct ConnUpstream {
    /// Shared with the [`KeptBody`] of each response in flight, which puts its connection back
    /// when the body has been read in full.
    idle: IdleConns,
}

/// An open connection to one instance, with bytes read past the last response.
struct KeptConn {
    endpoint: Arc<Endpoint>,
    stream: TcpStream,
    buf: BytesMut,
    /// The request head being sent, reused from request to request.
    head: Vec<u8>,
}

/// Why a request got no response from the instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be made (nothing was sent).
    #[error("connecting to the instance failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The exchange failed after the connection was made.
    #[error("the instance connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The instance's response was not valid HTTP/1.x.
    #[error("invalid response from the instance: {0}")]
    Invalid(&'static str),
}

/// How the end of a response body is found (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked transfer coding, at the given step.
    Chunked(Chunk),
    /// Everything until the instance closes the connection.
    UntilClose,
    /// The body is complete.
    Done,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: expecting trailer lines up to an empty line.
    Trailers,
}

// === impl ConnUpstream ===

impl ConnUpstream {
    /// Sends a request without a body to `endpoint` over the kept connection (made, or remade,
    /// as needed) and reads the response head; the body is read as the returned response's body
    /// is polled.
    pub(crate) async fn send<B>(
        &self,
        endpoint: &Arc<Endpoint>,
        req: &Request<B>,
        forwarded: &Forwarded<'_>,
    ) -> Result<Response<KeptBody>, UpstreamError> {
        let kept = self.take(endpoint);
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(conn) => conn,
            // Boxed: connecting is rare, and its future would otherwise sit in every request's.
            None => Box::pin(connect(endpoint)).await?,
        };
        encode_request_head(&mut conn.head, req, forwarded, endpoint);
        let mut parsed = exchange(&mut conn).await;
        if reused && matches!(parsed, Err(Exchange::Closed(_))) {
            debug!("Kept upstream connection was closed; reconnecting.");
            let head = std::mem::take(&mut conn.head);
            conn = Box::pin(connect(endpoint)).await?;
            conn.head = head;
            parsed = exchange(&mut conn).await;
        }
        let head = parsed.map_err(|error| match error {
            Exchange::Closed(error) | Exchange::Io(error) => UpstreamError::Io(error),
            Exchange::Invalid(what) => UpstreamError::Invalid(what),
        })?;
        let framing = framing(req.method(), &head)?;
        let reusable = framing != Framing::UntilClose && keeps_alive(&head);
        let mut body = KeptBody {
            conn: Some(conn),
            framing,
            reusable,
            idle: Arc::clone(&self.idle),
            trailers: None,
        };
        if body.framing == Framing::Done {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Ok(response)
    }

    /// The most recently used idle connection to `endpoint`, if any.
    fn take(&self, endpoint: &Arc<Endpoint>) -> Option<KeptConn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let at = idle
            .iter()
            .rposition(|conn| Arc::ptr_eq(&conn.endpoint, endpoint))?;
        Some(idle.remove(at))
    }
}

/// A new connection to the instance.
async fn connect(endpoint: &Arc<Endpoint>) -> Result<KeptConn, UpstreamError> {
    let stream = TcpStream::connect(endpoint.addr)
        .await
        .map_err(UpstreamError::Connect)?;
    stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
    if endpoint.addr.ip().is_loopback() {
        // Nothing to control on loopback: Reno costs the least per ACK (the system default may
        // be BBR, which also paces with timers). Unprivileged processes may always pick Reno.
        if let Err(error) = socket2::SockRef::from(&stream).set_tcp_congestion(b"reno") {
            tracing::debug!(%error, "Could not set Reno congestion control.");
        }
    }
    Ok(KeptConn {
        endpoint: Arc::clone(endpoint),
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        head: Vec::new(),
    })
}

/// The request line and headers as sent: origin-form target, HTTP/1.1, and the request's
/// headers rewritten as [`Forwarded::rewrite`] would (hop-by-hop headers dropped, forwarding
/// headers added; a `Host` from the instance's address if there is none at all), in one pass
/// without touching the request's header map.
fn encode_request_head<B>(
    head: &mut Vec<u8>,
    req: &Request<B>,
    forwarded: &Forwarded<'_>,
    endpoint: &Endpoint,
) {
    fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let headers = req.headers();
    let named = if headers.contains_key(header::CONNECTION) {
        connection_named(headers, false)
    } else {
        HeaderNames::new()
    };
    head.clear();
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut prior_forwarded_for = false;
    for (name, value) in headers {
        if is_hop_by_hop(name, false)
            || named.contains(name)
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
            || name == X_REQUEST_ID
        {
            continue;
        }
        if name == X_FORWARDED_FOR {
            prior_forwarded_for = true;
            continue;
        }
        has_host |= name == header::HOST;
        field(head, name.as_str().as_bytes(), value.as_bytes());
    }
    if !has_host {
        let host = forwarded.raw_host.map_or_else(
            || endpoint.authority().as_str().as_bytes(),
            HeaderValue::as_bytes,
        );
        field(head, b"host", host);
    }
    head.extend_from_slice(b"x-forwarded-for: ");
    if prior_forwarded_for {
        for prior in headers.get_all(X_FORWARDED_FOR) {
            head.extend_from_slice(prior.as_bytes());
            head.extend_from_slice(b", ");
        }
    }
    head.extend_from_slice(forwarded.client_ip.as_bytes());
    head.extend_from_slice(b"\r\n");
    field(head, b"x-forwarded-proto", forwarded.proto.as_bytes());
    if let Some(raw_host) = forwarded.raw_host {
        field(head, b"x-forwarded-host", raw_host.as_bytes());
    }
    field(head, b"x-request-id", forwarded.request_id.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// A parsed response head.
struct ResponseHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// How one write-and-read of a request head went wrong.
enum Exchange {
    /// The connection was found closed before any response byte: safe to send again.
    Closed(std::io::Error),
    /// It failed after response bytes arrived.
    Io(std::io::Error),
    Invalid(&'static str),
}

/// Writes `head` and reads the final response head (skipping `1xx` interim responses).
async fn exchange(conn: &mut KeptConn) -> Result<ResponseHead, Exchange> {
    if let Err(error) = conn.stream.write_all(&conn.head).await {
        return Err(Exchange::Closed(error));
    }
    let mut received_any = !conn.buf.is_empty();
    loop {
        if !conn.buf.is_empty() {
            match parse_response_head(&mut conn.buf)? {
                Some(parsed) => {
                    if parsed.status.is_informational() {
                        continue; // 100 Continue, 103 Early Hints: the final response follows
                    }
                    return Ok(parsed);
                }
                None if conn.buf.len() >= MAX_RESPONSE_HEAD_BYTES => {
                    return Err(Exchange::Invalid("response head too large"));
                }
                None => {}
            }
        }
        conn.buf.reserve(READ_CHUNK);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !received_any => {
                return Err(Exchange::Closed(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(Exchange::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => received_any = true,
            Err(error) if !received_any && is_reset(&error) => {
                return Err(Exchange::Closed(error));
            }
            Err(error) => return Err(Exchange::Io(error)),
        }
    }
}

fn is_reset(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Parses a response head from the front of `buf` and removes it: `None` when it is incomplete.
/// Header values share the head's bytes (no allocation per value).
fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, Exchange> {
    // Uninitialised slots: filling 100 empty headers per response costs a 3 KiB copy.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    );
    let len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Exchange::Invalid("too many response headers"))
        }
        Err(_) => return Err(Exchange::Invalid("malformed response head")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Exchange::Invalid("invalid status code"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each field sits in the head, so the values can be slices of it once it is frozen.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Exchange::Invalid("invalid response header name"))?;
        let start = field.value.as_ptr() as usize - base;
        fields.push((name, start..start + field.value.len()));
    }
    // A copy of the head, not a split of the read buffer: sharing the buffer would cost an
    // allocation to promote it now and another to grow it again for the next read.
    let head = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    // Room for what the gateway adds (`x-request-id`, a cookie) without growing the map.
    let mut headers = HeaderMap::with_capacity(fields.len() + 2);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| Exchange::Invalid("invalid response header value"))?;
        headers.append(name, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
    }))
}

/// How the response's body ends (RFC 9112 §6.3).
fn framing(method: &Method, head: &ResponseHead) -> Result<Framing, UpstreamError> {
    if *method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Done);
    }
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(UpstreamError::Invalid(
            "101 Switching Protocols without an upgrade",
        ));
    }
    if let Some(last) = head
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|coding| !coding.is_empty())
    {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| UpstreamError::Invalid("invalid content-length"))?;
            if length.is_some_and(|seen| seen != n) {
                return Err(UpstreamError::Invalid("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Whether the instance keeps the connection open after this response.
fn keeps_alive(head: &ResponseHead) -> bool {
    let has = |token: &str| {
        head.headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match head.version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

/// A response body read straight from the kept connection. When it has been read in full the
/// connection goes back to its client connection for the next request; dropped before
/// that (the client went away), it closes the connection.
pub(crate) struct KeptBody {
    conn: Option<KeptConn>,
    framing: Framing,
    reusable: bool,
    idle: IdleConns,
    /// Trailer fields of a chunked body, gathered until its end (made at the first one; boxed,
    /// as most bodies have none and this one sits in every response's body).
    trailers: Option<Box<HeaderMap>>,
}

impl std::fmt::Debug for KeptBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptBody")
            .field("framing", &self.framing)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

/// What one step of the body reader produced.
enum Step {
    Data(Bytes),
    /// The body is complete, and these trailer fields followed it.
    Trailers(HeaderMap),
    /// Needs more bytes from the connection.
    More,
    /// Made progress without data (a chunk line); go on.
    Again,
}

impl KeptBody {
    /// Marks the body complete and hands the connection back if it can carry another request.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes past the response mean the instance is out of step: do not reuse.
            if self.reusable && conn.buf.is_empty() {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() >= MAX_IDLE_PER_CLIENT {
                    idle.remove(0);
                }
                idle.push(conn);
            }
        }
    }

    /// One step over the buffered bytes.
    fn step(&mut self) -> Result<Step, UpstreamError> {
        let Some(conn) = self.conn.as_mut() else {
            self.framing = Framing::Done;
            return Ok(Step::Again);
        };
        let buf = &mut conn.buf;
        match self.framing {
            Framing::Done => Ok(Step::Again),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = take_data(buf, n);
                self.framing = Framing::Length(left - n as u64);
                Ok(Step::Data(data))
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = buf.len();
                Ok(Step::Data(take_data(buf, n)))
            }
            Framing::Chunked(chunk) => {
                let (next, data) = chunk_step(chunk, buf)?;
                match next {
                    Some(next) => self.framing = Framing::Chunked(next),
                    None => self.framing = Framing::Done,
                }
                Ok(match data {
                    ChunkOut::Data(bytes) => Step::Data(bytes),
                    ChunkOut::NeedMore => Step::More,
                    ChunkOut::Trailer(line) => {
                        add_trailer(self.trailers.get_or_insert_default(), &line)?;
                        Step::Again
                    }
                    // The end of the body: its trailer fields, if it had any, come last.
                    ChunkOut::Progress if next.is_none() => match self.trailers.take() {
                        Some(trailers) => Step::Trailers(*trailers),
                        None => Step::Again,
                    },
                    ChunkOut::Progress => Step::Again,
                })
            }
        }
    }
}

/// Body bytes up to this size are copied out of the read buffer; bigger ones share it.
const COPY_DATA_BELOW: usize = 4 * 1024;

/// The first `n` bytes of `buf`, removed from it. Small pieces are copied, so the buffer stays
/// unshared and is reused as is for the next read; big ones are split off without a copy.
fn take_data(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_DATA_BELOW {
        let data = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        data
    } else {
        buf.split_to(n).freeze()
    }
}

/// What one chunked-decoding step produced.
enum ChunkOut {
    Data(Bytes),
    /// One trailer field line.
    Trailer(Vec<u8>),
    NeedMore,
    Progress,
}

/// Fields an instance may not set in a trailer, besides hop-by-hop ones: they frame, route or
/// describe the whole message and only mean something in the head (RFC 9110 §6.5.1).
const HEAD_ONLY_FIELDS: [HeaderName; 7] = [
    header::TRAILER,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::HOST,
    header::SET_COOKIE,
];

/// Whether a trailer may carry the field `name`: not a hop-by-hop one, nor one only a head may
/// carry.
fn trailer_may_carry(name: &HeaderName) -> bool {
    !(is_hop_by_hop(name, false) || HEAD_ONLY_FIELDS.contains(name))
}

/// The trailer fields of a response hyper decoded (HTTP/2, or a pooled HTTP/1.1 connection)
/// without the ones no trailer may carry, as [`add_trailer`] leaves them out of the gateway's
/// own decoding.
pub(crate) fn keep_trailer_fields(trailers: HeaderMap) -> HeaderMap {
    if trailers.keys().all(trailer_may_carry) {
        return trailers;
    }
    let mut kept = HeaderMap::with_capacity(trailers.len());
    let mut name = None;
    // A name comes with its first value only; the values after it share it.
    for (next, value) in trailers {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = name.as_ref().filter(|n| trailer_may_carry(n)) {
            kept.append(name.clone(), value);
        }
    }
    kept
}

/// Adds one trailer line (`name: value`) to `trailers`; a field no trailer may carry is left
/// out, a malformed line is an invalid response.
fn add_trailer(trailers: &mut HeaderMap, line: &[u8]) -> Result<(), UpstreamError> {
    let invalid = || UpstreamError::Invalid("malformed trailer field");
    let colon = line.iter().position(|&b| b == b':').ok_or_else(invalid)?;
    let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| invalid())?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| invalid())?;
    if !trailer_may_carry(&name) {
        return Ok(());
    }
    if trailers.len() >= MAX_RESPONSE_HEADERS {
        return Err(UpstreamError::Invalid("too many trailer fields"));
    }
    trailers.append(name, value);
    Ok(())
}

/// One step of chunked decoding over `buf`: the next state (`None`: the body is complete) and
/// what it produced.
fn chunk_step(
    chunk: Chunk,
    buf: &mut BytesMut,
) -> Result<(Option<Chunk>, ChunkOut), UpstreamError> {
    // The next line (without its CR LF or bare LF), removed from `buf`; `None` until a whole
    // line is buffered. Lines are short: copied out, so the buffer stays unshared.
    let line = |buf: &mut BytesMut| -> Result<Option<Vec<u8>>, UpstreamError> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
                let line = text.to_vec();
                buf.advance(end + 1);
                Ok(Some(line))
            }
            None if buf.len() > MAX_CHUNK_LINE_BYTES => {
                Err(UpstreamError::Invalid("chunk line too long"))
            }
            None => Ok(None),
        }
    };
    Ok(match chunk {
        Chunk::Size => match line(buf)? {
            None => (Some(chunk), ChunkOut::NeedMore),
            Some(line) => {
                let size = line[..].split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= 16)
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or(UpstreamError::Invalid("invalid chunk size"))?;
                let next = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
                (Some(next), ChunkOut::Progress)
            }
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok((Some(chunk), ChunkOut::NeedMore));
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let data = take_data(buf, n);
            let next = if n as u64 == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n as u64)
            };
            (Some(next), ChunkOut::Data(data))
        }
        Chunk::DataEnd => match line(buf)? {
            None => (Some(chunk), ChunkOut::NeedMore),
            Some(line) if line.is_empty() => (Some(Chunk::Size), ChunkOut::Progress),
            Some(_) => return Err(UpstreamError::Invalid("missing CRLF after chunk data")),
        },
        Chunk::Trailers => match line(buf)? {
            None => (Some(chunk), ChunkOut::NeedMore),
            Some(line) if line.is_empty() => (None, ChunkOut::Progress),
            Some(line) => (Some(Chunk::Trailers), ChunkOut::Trailer(line)),
        },
    })
}

impl Body for KeptBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            if this.framing == Framing::Done {
                this.finish();
                return Poll::Ready(None);
            }
            let step = match this.step() {
                Ok(step) => step,
                Err(error) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(error)));
                }
            };
            match step {
                Step::Data(data) => {
                    if matches!(this.framing, Framing::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::Trailers(trailers) => {
                    // The last frame: the connection goes back now, as the body may not be
                    // polled again.
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Step::Again => {}
                Step::More => {
                    let Some(conn) = this.conn.as_mut() else {
                        return Poll::Ready(None);
                    };
                    conn.buf.reserve(READ_CHUNK);
                    let read = ready!(tokio_util::io::poll_read_buf(
                        Pin::new(&mut conn.stream),
                        cx,
                        &mut conn.buf
                    ));
                    match read {
                        Ok(0) if this.framing == Framing::UntilClose => {
                            this.conn = None;
                            this.framing = Framing::Done;
                        }
                        Ok(0) => {
                            this.conn = None;
                            this.framing = Framing::Done;
                            return Poll::Ready(Some(Err(UpstreamError::Io(
                                std::io::ErrorKind::UnexpectedEof.into(),
                            ))));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            this.conn = None;
                            this.framing = Framing::Done;
                            return Poll::Ready(Some(Err(UpstreamError::Io(error))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header name/value pairs, as literals.
    type Pairs = &'static [(&'static str, &'static str)];

    fn head(status: u16, version: Version, pairs: &[(&'static str, &'static str)]) -> ResponseHead {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, HeaderValue::from_static(v));
        }
        ResponseHead {
            status: StatusCode::from_u16(status).unwrap(),
            version,
            headers,
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        use Framing::*;
        let get = Method::GET;
        // (method, status, headers, framing; None = invalid)
        let cases: &[(&Method, u16, Pairs, Option<Framing>)] = &[
            (&get, 200, &[("content-length", "2")], Some(Length(2))),
            (&get, 200, &[("content-length", "0")], Some(Done)),
            (&Method::HEAD, 200, &[("content-length", "9")], Some(Done)),
            (&get, 204, &[], Some(Done)),
            (&get, 304, &[("content-length", "9")], Some(Done)),
            (
                &get,
                200,
                &[("transfer-encoding", "chunked")],
                Some(Chunked(Chunk::Size)),
            ),
            (
                &get,
                200,
                &[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "4"),
                ],
                Some(Chunked(Chunk::Size)),
            ),
            (
                &get,
                200,
                &[("transfer-encoding", "gzip")],
                Some(UntilClose),
            ),
            (&get, 200, &[], Some(UntilClose)),
            (&get, 200, &[("content-length", "3, 3")], Some(Length(3))),
            (
                &get,
                200,
                &[("content-length", "3"), ("content-length", "4")],
                None,
            ),
            (&get, 200, &[("content-length", "-1")], None),
            (&get, 101, &[], None),
        ];
        for (method, status, pairs, want) in cases {
            let got = framing(method, &head(*status, Version::HTTP_11, pairs)).ok();
            assert_eq!(got, *want, "{method} {status} {pairs:?}");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let cases: &[(Version, Pairs, bool)] = &[
            (Version::HTTP_11, &[], true),
            (Version::HTTP_11, &[("connection", "close")], false),
            (
                Version::HTTP_11,
                &[("connection", "keep-alive, Close")],
                false,
            ),
            (Version::HTTP_10, &[], false),
            (Version::HTTP_10, &[("connection", "Keep-Alive")], true),
        ];
        for (version, pairs, want) in cases {
            assert_eq!(
                keeps_alive(&head(200, *version, pairs)),
                *want,
                "{version:?} {pairs:?}"
            );
        }
    }

    /// Decodes a whole chunked body fed in pieces of `piece` bytes: its data, and its trailer
    /// fields as `name: value` lines.
    fn decode_chunked(wire: &[u8], piece: usize) -> Result<(Vec<u8>, String), UpstreamError> {
        let mut state = Some(Chunk::Size);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut out = Vec::new();
        let mut trailers = HeaderMap::new();
        while let Some(chunk) = state {
            let (next, produced) = chunk_step(chunk, &mut buf)?;
            state = next;
            match produced {
                ChunkOut::Data(data) => out.extend_from_slice(&data),
                ChunkOut::Trailer(line) => add_trailer(&mut trailers, &line)?,
                ChunkOut::Progress => {}
                ChunkOut::NeedMore => {
                    if fed == wire.len() {
                        return Err(UpstreamError::Invalid("truncated"));
                    }
                    let end = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
        assert!(
            buf.is_empty() && fed == wire.len(),
            "bytes left after the body"
        );
        let trailers = trailers
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap()))
            .collect();
        Ok((out, trailers))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        // (wire, decoded; None = invalid)
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"2\r\nok\r\n0\r\n\r\n", Some(b"ok")),
            (
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                Some(b"hello world"),
            ),
            (
                b"A\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n",
                Some(b"0123456789"),
            ),
            (b"0\r\n\r\n", Some(b"")),
            (b"2\nok\n0\n\n", Some(b"ok")),   // bare LF line ends
            (b"zz\r\nok\r\n0\r\n\r\n", None), // not hex
            (b"2\r\nokX\r\n0\r\n\r\n", None), // data longer than its size
            (b"2\r\nok\r\n", None),           // no last chunk
        ];
        for (wire, want) in cases {
            for piece in [1, 3, 1024] {
                let got = decode_chunked(wire, piece).ok().map(|(body, _)| body);
                assert_eq!(
                    got.as_deref(),
                    *want,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    #[test]
    fn trailer_fields_are_kept_except_those_only_a_head_may_carry() {
        // (trailer section after the last chunk, fields kept; None = invalid)
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\r\n", Some("")),
            (b"x-checksum: abc\r\n\r\n", Some("x-checksum: abc\n")),
            (
                b"Grpc-Status:0\r\ngrpc-message:  ok \r\n\r\n",
                Some("grpc-status: 0\ngrpc-message: ok\n"),
            ),
            (b"x-a: 1\nx-a: 2\n\n", Some("x-a: 1\nx-a: 2\n")), // repeated, bare LF
            // framing, routing and hop-by-hop fields are left out
            (
                b"content-length: 9\r\ntransfer-encoding: gzip\r\nconnection: close\r\nhost: x\r\nset-cookie: a=1\r\ntrailer: x\r\nx-ok: 1\r\n\r\n",
                Some("x-ok: 1\n"),
            ),
            (b"no colon\r\n\r\n", None),
            (b"bad name: 1\r\n\r\n", None),
            (b"x-a: \x01\r\n\r\n", None),
        ];
        for (section, want) in cases {
            let wire = [b"2\r\nok\r\n0\r\n".as_slice(), section].concat();
            for piece in [1, 4, 1024] {
                let got = decode_chunked(&wire, piece).ok();
                assert_eq!(
                    got.as_ref().map(|(_, trailers)| trailers.as_str()),
                    *want,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(section)
                );
                if let Some((body, _)) = got {
                    assert_eq!(body, b"ok");
                }
            }
        }
        let many: Vec<u8> = (0..=MAX_RESPONSE_HEADERS)
            .flat_map(|i| format!("x-{i}: 1\r\n").into_bytes())
            .chain(*b"\r\n")
            .collect();
        let wire = [b"0\r\n".as_slice(), &many].concat();
        assert!(decode_chunked(&wire, 1024).is_err(), "past the field limit");
    }

    #[test]
    fn decoded_trailers_lose_the_fields_no_trailer_may_carry() {
        type Fields = &'static [(&'static str, &'static str)];
        // (fields hyper decoded, fields kept)
        let cases: &[(Fields, Fields)] = &[
            (&[], &[]),
            (&[("grpc-status", "0")], &[("grpc-status", "0")]),
            (
                &[
                    ("set-cookie", "a=1"),
                    ("x-a", "1"),
                    ("x-a", "2"),
                    ("content-type", "t"),
                ],
                &[("x-a", "1"), ("x-a", "2")],
            ),
            (
                &[
                    ("proxy-x", "1"),
                    ("keep-alive", "5"),
                    ("grpc-message", "ok"),
                ],
                &[("grpc-message", "ok")],
            ),
        ];
        for (decoded, want) in cases {
            let mut trailers = HeaderMap::new();
            for (name, value) in *decoded {
                trailers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let kept = keep_trailer_fields(trailers);
            let got: Vec<(&str, &str)> = kept
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            assert_eq!(got, *want, "{decoded:?}");
        }
    }

    /// Parses an encoded head back into (request line, header fields in order).
    fn fields_of(head: &[u8]) -> (String, Vec<(String, String)>) {
        let text = std::str::from_utf8(head).unwrap();
        let text = text
            .strip_suffix("\r\n\r\n")
            .expect("head ends with an empty line");
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap().to_string();
        let fields = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        (line, fields)
    }

    #[test]
    fn kept_head_is_the_rewritten_request() {
        let ip = HeaderValue::from_static("10.0.0.7");
        let id = HeaderValue::from_static("req-1");
        let host = HeaderValue::from_static("Shop.Example.com:8080");
        let endpoint = Endpoint::new("i-1".into(), "127.0.0.1:9".parse().unwrap());
        // (request headers, the client's raw host)
        let cases: &[(Pairs, Option<&HeaderValue>)] = &[
            (
                &[("host", "Shop.Example.com:8080"), ("accept", "*/*")],
                Some(&host),
            ),
            (
                &[
                    ("host", "a"),
                    ("connection", "keep-alive, x-secret"),
                    ("x-secret", "s"),
                    ("keep-alive", "5"),
                    ("x-b", "2"),
                ],
                Some(&host),
            ),
            (
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2"),
                    ("x-forwarded-proto", "ftp"),
                    ("x-request-id", "spoof"),
                    ("x-forwarded-host", "evil"),
                ],
                None,
            ),
            (
                &[
                    ("proxy-authorization", "x"),
                    ("te", "trailers"),
                    ("upgrade", "websocket"),
                    ("cookie", "a=1"),
                    ("cookie", "b=2"),
                ],
                Some(&host),
            ),
        ];
        for (pairs, raw_host) in cases {
            let mut req = Request::new(());
            *req.uri_mut() = "/p?q=1".parse().unwrap();
            for (k, v) in *pairs {
                req.headers_mut().append(*k, HeaderValue::from_static(v));
            }
            let forwarded = Forwarded {
                client_ip: &ip,
                proto: "https",
                raw_host: *raw_host,
                request_id: &id,
            };
            let mut head = Vec::new();
            encode_request_head(&mut head, &req, &forwarded, &endpoint);
            let (line, mut got) = fields_of(&head);
            assert_eq!(line, "GET /p?q=1 HTTP/1.1");

            // What the pooled path sends: the header map rewritten.
            let mut want_map = req.headers().clone();
            forwarded.rewrite(&mut want_map, false);
            if !want_map.contains_key(header::HOST) {
                want_map.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9"));
            }
            let mut want: Vec<(String, String)> = want_map
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{pairs:?}");
        }
    }

    #[test]
    fn response_heads_parse() {
        let parse = |raw: &[u8]| {
            let mut buf = BytesMut::from(raw);
            parse_response_head(&mut buf).map(|head| (head, buf))
        };
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\nx-a: 2\r\n\r\nok";
        let Ok((Some(parsed), rest)) = parse(raw) else {
            panic!("a complete head parses");
        };
        assert_eq!(&rest[..], b"ok", "the body stays in the buffer");
        assert_eq!(parsed.status, StatusCode::OK);
        assert_eq!(parsed.headers["content-length"], "2");
        let values: Vec<_> = parsed.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-le"),
            Ok((None, _))
        ));
        assert!(parse(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nx-bad: a\x01b\r\n\r\n").is_err());
    }
}
