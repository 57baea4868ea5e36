//! The gateway's own HTTP/1.1 server loop, for the request most traffic is: HTTP/1.1, no body,
//! no upgrade. It reads and parses the request head (httparse), runs the proxy and writes the
//! response on the connection's own task: no per-request timer, no service future moved
//! between layers, the head and a small body in one `send`.
//!
//! Everything else — a request with a body, an upgrade, `Expect`, HTTP/1.0, an h2c preface, a
//! head that does not parse or is too big — hands the connection, with the bytes read so far,
//! to hyper ([`Outcome::Handoff`]), which serves it from there on and answers malformed or
//! oversized heads with its own 400 or 431. So this loop only ever sees well-formed requests it
//! can answer completely, and the rules for the rest live in one place.
//!
//! The header read timeout (slowloris) and each request's upstream deadline share one timer per
//! connection, re-armed lazily ([`ConnTimer`]).

use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::body::GatewayBody;
use crate::proxy::{ClientRequest, Conn};
use crate::server::Gateway;
use crate::timer::ConnTimer;

/// Header slots parsed on the stack; a configured `max_headers` above it hands the rare head
/// with more fields to hyper.
const STACK_HEADERS: usize = 100;
/// Free space the read buffer keeps before each read.
const READ_RESERVE: usize = 4 * 1024;
/// Initial read buffer.
const READ_BUFFER: usize = 8 * 1024;
/// A buffer past this size is replaced by a fresh one after the response.
const KEEP_BUFFER: usize = 2 * READ_BUFFER;
/// Body bytes gathered behind the head before the first write.
const GATHER_LIMIT: usize = 64 * 1024;

/// The per-connection settings this loop enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
}

/// A listener's shutdown as its connections see it: a flag each response reads (a token's own
/// check takes a lock), and a token that wakes idle connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    stopping: Arc<AtomicBool>,
    pub token: CancellationToken,
}

impl Stop {
    /// Idle connections close now; busy ones after their response.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Relaxed);
        self.token.cancel();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }
}

/// How the loop ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The connection is done (closed by the client, timed out, failed, or shut down).
    Closed,
    /// Hyper serves the rest of the connection, starting with these bytes.
    Handoff(Bytes),
}

/// Serves requests on `io` until the connection ends or a request needs hyper.
pub(crate) async fn serve<IO>(
    io: &mut IO,
    gateway: &Gateway,
    conn: &Conn,
    scheme: &'static str,
    limits: Limits,
    stop: &Stop,
) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut out = BytesMut::with_capacity(READ_BUFFER);
    let mut sleep = pin!(tokio::time::sleep_until(
        Instant::now() + limits.header_read_timeout
    ));
    let mut timer = ConnTimer::new(sleep.as_mut());
    let mut stopped = pin!(stop.token.cancelled());
    loop {
        // Read until a whole head is in, the client goes away, or the head read times out.
        let head = loop {
            if !buf.is_empty() {
                match parse_head(&buf, limits) {
                    Parse::Complete(head) => break head,
                    Parse::Handoff => return Outcome::Handoff(buf.freeze()),
                    Parse::Partial => {}
                }
            }
            make_room(&mut buf);
            let read = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => read,
                () = timer.expired() => {
                    debug!(partial = buf.len(), "Request head not read in time; closing.");
                    return Outcome::Closed;
                }
                () = stopped.as_mut(), if buf.is_empty() => return Outcome::Closed,
            };
            match read {
                Ok(0) => return Outcome::Closed,
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "Client read failed.");
                    return Outcome::Closed;
                }
            }
        };

        let bytes = buf.split_to(head.len).freeze();
        let head_request = head.method == Method::HEAD;
        let keep_alive = head.keep_alive;
        let Some(req) = head.into_request(&bytes) else {
            // A name or target hyper may still make sense of (or answer with 400).
            let mut all = BytesMut::from(bytes);
            all.extend_from_slice(&buf);
            return Outcome::Handoff(all.freeze());
        };
        // Watch the client while the request is handled: a client that hangs up (say, while
        // queued or held for a cold start) abandons its request, freeing its place. The read
        // costs no syscall while the socket has nothing new.
        let response = {
            let mut handled = pin!(crate::proxy::handle(
                gateway,
                conn,
                scheme,
                req,
                Some(&mut timer)
            ));
            loop {
                make_room(&mut buf);
                tokio::select! {
                    biased;
                    response = handled.as_mut() => break response,
                    read = io.read_buf(&mut buf), if buf.len() < limits.max_header_bytes => {
                        match read {
                            Ok(0) => debug!("Client closed the connection mid-request."),
                            Ok(_) => continue,
                            Err(error) => debug!(%error, "Client read failed mid-request."),
                        }
                        return Outcome::Closed;
                    }
                }
            }
        };
        let keep_alive = keep_alive && !stop.is_stopping();
        if let Err(error) = respond(io, &mut out, response, head_request, keep_alive).await {
            debug!(%error, "Response write failed.");
            return Outcome::Closed;
        }
        drop(bytes);
        if !keep_alive {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        // A big head or a gathered body grew a buffer: give the memory back rather than keep it
        // for the connection's life (idle keep-alive connections can be many).
        if out.capacity() > KEEP_BUFFER {
            out = BytesMut::with_capacity(READ_BUFFER);
        }
        if buf.capacity() > KEEP_BUFFER && buf.len() < READ_BUFFER {
            let rest = buf.split();
            buf = BytesMut::with_capacity(READ_BUFFER);
            buf.extend_from_slice(&rest);
        }
        timer.set(Instant::now() + limits.header_read_timeout);
    }
}

/// Keeps at least [`READ_RESERVE`] bytes free in the read buffer before a read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_RESERVE {
        buf.reserve(READ_BUFFER);
    }
}

/// Writes `response`: the head, then its body, gathering small bodies behind the head into one
/// write. An error (the client gone, the body failing or ending short of its length) means the
/// connection cannot carry another response.
async fn respond<IO>(
    io: &mut IO,
    out: &mut BytesMut,
    response: Response<GatewayBody>,
    head_request: bool,
    keep_alive: bool,
) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    out.clear();
    let framing = encode_head(out, &parts, head_request, body.size_hint(), keep_alive);
    drop(parts);
    let mut left = match framing {
        Framing::Empty => {
            let written = write_out(io, out).await;
            drop(body);
            return written;
        }
        Framing::Length(length) => Some(length),
        Framing::Chunked => None,
    };
    // Trailer fields go after the last chunk; with a content-length there is nowhere to put
    // them (RFC 9112 §7.1.2), and they are dropped.
    let mut trailers = None;
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing more yet: send what is gathered so the client sees it now.
                write_out(io, out).await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(error)) => {
                write_out(io, out).await?;
                return Err(std::io::Error::other(error));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(left) => {
                let length = data.len() as u64;
                if length > *left {
                    write_out(io, out).await?;
                    return Err(std::io::Error::other("body longer than its content-length"));
                }
                *left -= length;
                put_or_write(io, out, &data).await?;
            }
            None => {
                out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
                put_or_write(io, out, &data).await?;
                out.put_slice(b"\r\n");
            }
        }
    }
    match left {
        Some(0) => {}
        Some(_) => {
            write_out(io, out).await?;
            return Err(std::io::Error::other(
                "body shorter than its content-length",
            ));
        }
        None => {
            out.put_slice(b"0\r\n");
            for (name, value) in trailers.iter().flatten() {
                put_header(out, name.as_str().as_bytes(), value.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
    }
    let written = write_out(io, out).await;
    // The finished body reports the request (access log, metrics) after the client has it.
    drop(body);
    written
}

/// Appends `data` to the gathered bytes, or writes both when that would grow past the limit.
async fn put_or_write<IO>(io: &mut IO, out: &mut BytesMut, data: &Bytes) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    if out.len() + data.len() <= GATHER_LIMIT {
        out.put_slice(data);
        return Ok(());
    }
    write_out(io, out).await?;
    io.write_all(data).await
}

async fn write_out<IO>(io: &mut IO, out: &mut BytesMut) -> std::io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// Writes the status line and headers into `out`, adding what HTTP/1.1 needs and the handler
/// leaves out: `content-length` (or chunked framing), `date`, and `connection: close` when the
/// connection ends after this response.
fn encode_head(
    out: &mut BytesMut,
    parts: &http::response::Parts,
    head_request: bool,
    hint: SizeHint,
    keep_alive: bool,
) -> Framing {
    let status = parts.status;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    for (name, value) in &parts.headers {
        if bodiless && status != StatusCode::NOT_MODIFIED && name == header::CONTENT_LENGTH {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless || head_request {
        Framing::Empty
    } else if let Some(length) = declared {
        Framing::Length(length)
    } else if let Some(length) = hint.exact() {
        put_header(out, b"content-length", length.to_string().as_bytes());
        Framing::Length(length)
    } else {
        put_header(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if !parts.headers.contains_key(header::DATE) {
        put_header(out, b"date", http_date().as_bytes());
    }
    if !keep_alive {
        put_header(out, b"connection", b"close");
    }
    out.put_slice(b"\r\n");
    framing
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Today's `date` header value, formatted at most once a second per thread.
fn http_date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            let formatted = httpdate::fmt_http_date(now);
            if let Ok(value) = HeaderValue::from_str(&formatted) {
                *cached = (second, value);
            }
        }
        cached.1.clone()
    })
}

/// What [`parse_head`] found at the start of the buffer.
#[derive(Debug)]
// Returned once per request and used at once: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A head this loop does not serve (see the module docs).
    Handoff,
    Complete(Head),
}

/// Where a part of the head is in the buffer: start and end. 32-bit, so a head's field list
/// stays small enough to move cheaply (heads are far below 4 GiB; bigger ones go to hyper).
type Span = (u32, u32);

fn range((start, end): Span) -> Range<usize> {
    start as usize..end as usize
}

/// A request head this loop serves: where its parts are in the buffer.
#[derive(Debug)]
struct Head {
    len: usize,
    method: Method,
    target: Span,
    headers: smallvec::SmallVec<[(Span, Span); 16]>,
    /// The client did not ask to close (`Connection: close`).
    keep_alive: bool,
}

/// Parses the request head at the start of `buf`. Pure: the rules for which requests this loop
/// serves live here.
#[inline]
fn parse_head(buf: &[u8], limits: Limits) -> Parse {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let slots = &mut slots[..limits.max_headers.clamp(1, STACK_HEADERS)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_header_bytes => {
            return Parse::Partial;
        }
        // Too big, too many fields, or malformed: hyper answers (431 or 400).
        Ok(httparse::Status::Partial) | Err(_) => return Parse::Handoff,
    };
    if len > limits.max_header_bytes || len > u32::MAX as usize || req.version != Some(1) {
        return Parse::Handoff;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parse::Handoff;
    };
    let method = match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "CONNECT" => return Parse::Handoff,
        other => match Method::from_bytes(other.as_bytes()) {
            Ok(method) => method,
            Err(_) => return Parse::Handoff,
        },
    };
    // Within the first `len` bytes, so within u32.
    let offset = |part: &[u8]| -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        (start as u32, (start + part.len()) as u32)
    };
    let mut keep_alive = true;
    let mut headers = smallvec::SmallVec::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if field.value != b"0" {
                return Parse::Handoff;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parse::Handoff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::Handoff;
                }
            }
        }
        headers.push((offset(name), offset(field.value)));
    }
    Parse::Complete(Head {
        len,
        method,
        target: offset(target.as_bytes()),
        headers,
        keep_alive,
    })
}

impl Head {
    /// The request, its target and header values sharing `bytes` (the head). `None` when a
    /// name, value or target is not one `http` accepts.
    fn into_request(self, bytes: &Bytes) -> Option<ClientRequest> {
        let uri = Uri::from_maybe_shared(bytes.slice(range(self.target))).ok()?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(&bytes[range(name)]).ok()?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(range(value))).ok()?;
            headers.append(name, value);
        }
        let mut req = Request::new(None);
        *req.method_mut() = self.method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        Some(req)
    }
}

/// An IO that first yields bytes already read from it: how a connection the loop read from is
/// handed to hyper.
#[derive(Debug)]
pub(crate) struct Rewind<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub(crate) fn new(io: IO, prefix: Bytes) -> Self {
        Self { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 8 * 1024,
        max_headers: 4,
        header_read_timeout: Duration::from_secs(10),
    };

    fn kind(parsed: &Parse) -> &'static str {
        match parsed {
            Parse::Partial => "partial",
            Parse::Handoff => "handoff",
            Parse::Complete(head) if head.keep_alive => "serve",
            Parse::Complete(_) => "serve, then close",
        }
    }

    #[test]
    fn which_heads_this_loop_serves() {
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "b".repeat(9000));
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "plain GET",
                b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "serve",
            ),
            ("HEAD", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "serve"),
            ("DELETE", b"DELETE /a HTTP/1.1\r\nHost: x\r\n\r\n", "serve"),
            (
                "explicit empty body",
                b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "serve",
            ),
            (
                "close",
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n",
                "serve, then close",
            ),
            (
                "head not complete",
                b"GET / HTTP/1.1\r\nHost: x\r\n",
                "partial",
            ),
            ("request line only", b"GET / HT", "partial"),
            (
                "a body",
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                "handoff",
            ),
            (
                "chunked body",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "handoff",
            ),
            (
                "websocket",
                b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                "handoff",
            ),
            (
                "upgrade token only",
                b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
                "handoff",
            ),
            (
                "expect",
                b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
                "handoff",
            ),
            ("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", "handoff"),
            (
                "h2c preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                "handoff",
            ),
            ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\n\r\n", "handoff"),
            ("garbage", b"NOT HTTP AT ALL\r\n\r\n", "handoff"),
            (
                "too many fields",
                b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n",
                "handoff",
            ),
            ("too big", big.as_bytes(), "handoff"),
        ];
        for (name, head, want) in cases {
            assert_eq!(kind(&parse_head(head, LIMITS)), *want, "{name}");
        }
        // A partial head that already fills the limit goes to hyper (which answers 431).
        let partial = format!("GET / HTTP/1.1\r\nx-big: {}", "b".repeat(9000));
        assert_eq!(kind(&parse_head(partial.as_bytes(), LIMITS)), "handoff");
    }

    #[test]
    fn parsed_head_becomes_a_request_sharing_the_bytes() {
        let raw =
            b"GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next";
        let Parse::Complete(head) = parse_head(raw, LIMITS) else {
            panic!("not complete");
        };
        assert_eq!(head.len, raw.len() - "GET /next".len());
        let bytes = Bytes::copy_from_slice(&raw[..head.len]);
        let req = head.into_request(&bytes).expect("a request");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/p?q=1");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "a.example");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert!(req.body().is_none());
    }

    fn head_of(
        response: Response<GatewayBody>,
        head_request: bool,
        keep: bool,
    ) -> (String, Framing) {
        let (parts, body) = response.into_parts();
        let mut out = BytesMut::new();
        let framing = encode_head(&mut out, &parts, head_request, body.size_hint(), keep);
        (String::from_utf8_lossy(&out).into_owned(), framing)
    }

    #[test]
    fn response_heads_get_framing_date_and_close() {
        let with = |status: u16, length: Option<&str>, body: GatewayBody| {
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).expect("a status");
            response
                .headers_mut()
                .insert("x-a", HeaderValue::from_static("1"));
            response.headers_mut().insert(
                "date",
                HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
            );
            if let Some(length) = length {
                response.headers_mut().insert(
                    "content-length",
                    HeaderValue::from_str(length).expect("a value"),
                );
            }
            response
        };
        let full = || GatewayBody::full(Bytes::from_static(b"hello"));
        let date = "date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
        let cases = [
            ("length from the body", with(200, None, full()), false, true,
             format!("HTTP/1.1 200 OK\r\nx-a: 1\r\n{date}content-length: 5\r\n\r\n"), Framing::Length(5)),
            ("declared length kept", with(200, Some("5"), full()), false, true,
             format!("HTTP/1.1 200 OK\r\nx-a: 1\r\n{date}content-length: 5\r\n\r\n"), Framing::Length(5)),
            ("HEAD sends no body", with(200, Some("5"), GatewayBody::empty()), true, true,
             format!("HTTP/1.1 200 OK\r\nx-a: 1\r\n{date}content-length: 5\r\n\r\n"), Framing::Empty),
            ("204 drops a length", with(204, Some("0"), GatewayBody::empty()), false, true,
             format!("HTTP/1.1 204 No Content\r\nx-a: 1\r\n{date}\r\n"), Framing::Empty),
            ("304 keeps its length", with(304, Some("5"), GatewayBody::empty()), false, true,
             format!("HTTP/1.1 304 Not Modified\r\nx-a: 1\r\n{date}content-length: 5\r\n\r\n"), Framing::Empty),
            ("closing", with(404, None, GatewayBody::empty()), false, false,
             format!("HTTP/1.1 404 Not Found\r\nx-a: 1\r\n{date}content-length: 0\r\nconnection: close\r\n\r\n"), Framing::Length(0)),
        ];
        for (name, response, head_request, keep, want, framing) in cases {
            assert_eq!(
                head_of(response, head_request, keep),
                (want, framing),
                "{name}"
            );
        }
        // No date from the handler: today's is added.
        let (head, _) = head_of(Response::new(GatewayBody::empty()), false, true);
        let date = head
            .lines()
            .find_map(|line| line.strip_prefix("date: "))
            .expect("a date");
        assert!(httpdate::parse_http_date(date).is_ok(), "{head}");
    }
}
