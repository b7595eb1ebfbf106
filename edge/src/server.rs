//! The edge's HTTP/1.1 server: an accept loop whose connections are served
//! by a small hand-written HTTP/1 loop, with hyper taking over whatever that
//! loop does not handle.
//!
//! Why not hyper for everything: an SSE subscriber holds its connection for
//! hours and is idle nearly all of that time. hyper keeps an 8 KiB read
//! buffer and an 8 KiB header buffer per connection for its whole life (the
//! smallest it allows), which alone is more than our budget of 10 KiB per
//! idle subscriber. So each connection reads request heads itself (parsed
//! with `httparse`, the parser hyper uses) and runs every request without a
//! body through the same axum router — authentication, filters, CORS,
//! access log, problem bodies are unchanged. The response is written
//! straight to the socket: a length-framed response with its head in one
//! vectored write; an open-ended one (the stream) as chunks, one vectored
//! write per chunk (close-delimited on HTTP/1.0). Between requests and while
//! a stream is idle, a connection holds no buffer: the socket, the body
//! state and this task's small future.
//!
//! Anything else — a request with a body, `Expect`, `Upgrade`, `CONNECT`, a
//! head `httparse` rejects, more than [`MAX_HEADERS`] headers or more than
//! [`MAX_HEAD`] bytes — is handed to hyper together with the bytes already
//! read, so hyper answers exactly as it would have (including its 400s and
//! 431s), and serves the rest of that connection.
//!
//! Liveness ([`Options`]), the same on both paths: a client must send a
//! whole request head within 30 s (also between keep-alive requests) and
//! in at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers; a client that
//! stops reading is dropped when a write makes no progress for 60 s (5 s
//! once shutdown began). While a stream served here is idle the socket is
//! watched, so a client that disconnects is noticed at once (not at the
//! next keep-alive write). At most [`Options::max_connections`] connections
//! are open at once; past it a new connection gets a 503 and is closed, so
//! sockets that never authenticate cannot pile up without bound.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Timeouts of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A client must send a whole request head within this time, also
    /// between keep-alive requests (slowloris; idle connections). 30 s.
    pub header_read_timeout: Duration,
    /// A write that makes no progress for this long drops the connection:
    /// the client stopped reading. 60 s.
    pub write_stall: Duration,
    /// After shutdown began, how long a write may still wait for the client. 5 s.
    pub shutdown_write_grace: Duration,
    /// Connections open at once, whatever their state (`edge.max_connections`,
    /// default 50,000). One more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            shutdown_write_grace: Duration::from_secs(5),
            max_connections: 50_000,
        }
    }
}

/// What a connection over [`Options::max_connections`] gets before it is
/// closed (written without waiting: a client that cannot take 300 bytes at
/// once gets nothing).
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: 162\r\n\r\n{\"type\":\"https://livestrom.dev/problems/unavailable\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"the server has its maximum number of open connections\"}\n";

/// What every part of a connection consults.
struct Ctx {
    stop: CancellationToken,
    opts: Options,
}

/// The largest request head read here; longer heads go to hyper, which
/// applies its own limits.
pub const MAX_HEAD: usize = 16 * 1024;
/// Header slots for a request head; more headers go to hyper.
const MAX_HEADERS: usize = 64;

/// Serves `app` on `listener` with default [`Options`] until `shutdown`
/// fires; open streams end and in-flight requests finish (writes to clients
/// that stopped reading get [`Options::shutdown_write_grace`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with(listener, app, shutdown, Options::default()).await
}

/// [`serve`] with explicit timeouts.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    opts: Options,
) -> io::Result<()> {
    let conns = tokio_util::task::TaskTracker::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(
        opts.max_connections
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    // Logged once per stretch at the cap, not once per refused socket.
    let mut at_cap = false;
    loop {
        let (sock, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Per-connection failures (reset before accept) and
                    // descriptor exhaustion are transient: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !at_cap {
                at_cap = true;
                tracing::warn!(
                    max_connections = opts.max_connections,
                    "connection limit reached; new connections get 503 (edge.max_connections)"
                );
            }
            // Best effort, never waits: the socket is closed right after.
            let _ = sock.try_write(OVER_CAPACITY);
            continue;
        };
        at_cap = false;
        if let Err(e) = sock.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let ctx = Ctx {
            stop: shutdown.clone(),
            opts,
        };
        let app = app.clone();
        conns.spawn(async move {
            connection(sock, peer, app, ctx).await;
            drop(slot);
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    Ok(())
}

/// One connection: requests are served here until one needs hyper, the
/// client closes, or a response cannot be followed by another.
async fn connection(mut sock: TcpStream, peer: SocketAddr, app: Router, ctx: Ctx) {
    let limit = ctx.opts.header_read_timeout;
    // Bytes read past the previous request head (a pipelined request).
    let mut pending = Bytes::new();
    loop {
        let mut buf = BytesMut::with_capacity(pending.len().max(1024));
        buf.extend_from_slice(&pending);
        drop(std::mem::take(&mut pending));
        let head = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => return,
            r = tokio::time::timeout(limit, read_head(&mut sock, &mut buf)) => match r {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "connection closed before a request head");
                    return;
                }
                Err(_) => {
                    tracing::debug!("no request head within {limit:?}; closing");
                    return;
                }
            },
        };
        let head = match head {
            Some(h) => h,
            // Closed by the client between requests.
            None if buf.is_empty() => return,
            None => return hand_to_hyper(sock, buf.freeze(), peer, app, ctx).await,
        };
        // A copy, so the head buffer is freed now rather than shared with
        // the remainder for as long as the response lasts.
        if buf.len() > head.len {
            pending = Bytes::copy_from_slice(&buf[head.len..]);
        }
        drop(buf);
        let framing = Framing {
            keep_alive: head.keep_alive,
            http10: head.version == axum::http::Version::HTTP_10,
            head_request: head.method == Method::HEAD,
        };
        let mut req = Request::new(axum::body::Body::empty());
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        req.extensions_mut().insert(ConnectInfo(peer));
        // Boxed: the router's future is large and lives only until the
        // response head is ready; this task's future stays small for the
        // stream's life.
        let res = match Box::pin(tower::ServiceExt::oneshot(app.clone(), req)).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        match respond(&mut sock, res, framing, &ctx).await {
            Ok(true) if !ctx.stop.is_cancelled() => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return;
            }
        }
    }
}

/// How a response is framed for its request.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// The client allows another request on the connection.
    keep_alive: bool,
    http10: bool,
    /// `HEAD`: headers only.
    head_request: bool,
}

/// A parsed request head this loop serves.
struct Head {
    /// Bytes of the head (including the blank line).
    len: usize,
    method: Method,
    uri: Uri,
    version: axum::http::Version,
    headers: HeaderMap,
    /// The client allows the connection to stay open after the response.
    keep_alive: bool,
}

/// Reads until a whole request head is buffered (`buf` may already hold
/// one). `Ok(Some)`: a request served here; `Ok(None)`: EOF, or a request
/// for hyper (everything read so far is in `buf`).
async fn read_head(sock: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Option<Box<Head>>> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf) {
                Parsed::Partial => {}
                Parsed::Other => return Ok(None),
                Parsed::Request(h) => return Ok(Some(h)),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(MAX_HEAD - buf.len()).max(1024));
        }
        if sock.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

enum Parsed {
    Partial,
    /// For hyper (including malformed heads: hyper produces the error).
    Other,
    Request(Box<Head>),
}

fn parse_head(bytes: &[u8]) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
        Some(Ok(m)) if m != Method::CONNECT => m,
        _ => return Parsed::Other,
    };
    let version = match req.version {
        Some(0) => axum::http::Version::HTTP_10,
        Some(1) => axum::http::Version::HTTP_11,
        _ => return Parsed::Other,
    };
    let Some(uri) = req.path.and_then(|p| p.parse::<Uri>().ok()) else {
        return Parsed::Other;
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut close = false;
    let mut keep_alive_token = false;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return Parsed::Other;
        };
        if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0")
        {
            return Parsed::Other;
        }
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    let keep_alive = match version {
        axum::http::Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    Parsed::Request(Box::new(Head {
        len,
        method,
        uri,
        version,
        headers,
        keep_alive,
    }))
}

/// Writes `res` to the socket. Returns whether the connection may carry
/// another request (only after a complete, length-framed response).
async fn respond(
    sock: &mut TcpStream,
    res: Response,
    framing: Framing,
    ctx: &Ctx,
) -> io::Result<bool> {
    let (parts, body) = res.into_parts();
    let status = parts.status;
    let no_body = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    let exact = axum::body::HttpBody::size_hint(&body).exact();
    // Framing: a known length keeps the connection usable; an open-ended
    // body is chunked on HTTP/1.1 and delimited by close on HTTP/1.0. A HEAD
    // response keeps the length its GET would have had.
    let chunked = !no_body && !framing.head_request && exact.is_none() && !framing.http10;
    let reuse = framing.keep_alive && (no_body || framing.head_request || exact.is_some());
    let mut head = BytesMut::with_capacity(512);
    head.put_slice(if framing.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing_header = name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && !framing.head_request);
        if framing_header {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.put_slice(b"date: ");
        head.put_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.put_slice(b"\r\n");
    }
    if let (false, false, Some(n)) = (no_body, framing.head_request, exact) {
        head.put_slice(b"content-length: ");
        head.put_slice(n.to_string().as_bytes());
        head.put_slice(b"\r\n");
    }
    if chunked {
        head.put_slice(b"transfer-encoding: chunked\r\n");
    }
    if !reuse {
        head.put_slice(b"connection: close\r\n");
    } else if framing.http10 {
        head.put_slice(b"connection: keep-alive\r\n");
    }
    head.put_slice(b"\r\n");
    drop(parts);
    let head = head.freeze();

    if no_body || framing.head_request {
        write_all(sock, &mut head.clone(), ctx).await?;
        return Ok(reuse);
    }
    if exact.is_some() {
        // In memory already (a problem, a JSON page): head and body in one write.
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "response body failed; closing the connection");
                return Ok(false);
            }
        };
        write_all(sock, &mut Buf::chain(head, bytes), ctx).await?;
        return Ok(reuse);
    }

    // Open-ended: the head goes out with the first chunk when that is ready
    // at once (the stream's `:connected` comment is), otherwise alone.
    let mut data = body.into_data_stream();
    let mut unsent_head = Some(head);
    let mut next = data.next().now_or_never();
    if next.is_none() {
        if let Some(mut h) = unsent_head.take() {
            write_all(sock, &mut h, ctx).await?;
        }
    }
    // Once shutdown began, a body that does not end by itself (the stream
    // ends on the same signal) gets the grace, then the connection closes.
    let mut closing_at: Option<tokio::time::Instant> = None;
    loop {
        if closing_at.is_none() && ctx.stop.is_cancelled() {
            closing_at = Some(tokio::time::Instant::now() + ctx.opts.shutdown_write_grace);
        }
        if closing_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
            tracing::debug!("response still running after the shutdown grace; closed");
            return Ok(false);
        }
        let item = match next.take() {
            Some(item) => item,
            None => tokio::select! {
                biased;
                item = data.next() => item,
                r = sock.readable() => {
                    r?;
                    if client_closed(sock)? {
                        return Ok(false);
                    }
                    continue;
                }
                _ = ctx.stop.cancelled(), if closing_at.is_none() => continue,
                _ = tokio::time::sleep_until(closing_at.unwrap_or_else(tokio::time::Instant::now)), if closing_at.is_some() => continue,
            },
        };
        let bytes = match item {
            None => break,
            Some(Err(e)) => {
                // Ending without the terminating chunk tells the client the
                // response is incomplete.
                tracing::warn!(error = %e, "response body failed; closing the connection");
                return Ok(false);
            }
            Some(Ok(bytes)) => bytes,
        };
        if bytes.is_empty() {
            continue;
        }
        let head = unsent_head.take().unwrap_or_default();
        if chunked {
            let mut size = [0u8; 18];
            let n = chunk_size_line(&mut size, bytes.len());
            let mut frame = Buf::chain(
                Buf::chain(Buf::chain(head, &size[..n]), bytes),
                &b"\r\n"[..],
            );
            write_all(sock, &mut frame, ctx).await?;
        } else {
            write_all(sock, &mut Buf::chain(head, bytes), ctx).await?;
        }
    }
    let mut last = Buf::chain(
        unsent_head.take().unwrap_or_default(),
        if chunked { &b"0\r\n\r\n"[..] } else { &b""[..] },
    );
    write_all(sock, &mut last, ctx).await?;
    sock.flush().await?;
    Ok(reuse)
}

/// Writes `len` as a chunk-size line (`<hex>\r\n`) into `out`; returns its length.
fn chunk_size_line(out: &mut [u8; 18], len: usize) -> usize {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in out[..digits].iter_mut().enumerate() {
        let nibble = (len >> ((digits - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// Reads and discards what the client sent while it streams (it has nothing
/// to say on this connection). True when the client closed its side.
fn client_closed(sock: &TcpStream) -> io::Result<bool> {
    let mut scratch = [0u8; 256];
    for _ in 0..16 {
        match sock.try_read(&mut scratch) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Writes all of `buf` with vectored writes; fails when one write makes no
/// progress for [`Options::write_stall`] (or [`Options::shutdown_write_grace`]
/// once shutdown began).
async fn write_all(sock: &mut TcpStream, buf: &mut impl Buf, ctx: &Ctx) -> io::Result<()> {
    let stop = &ctx.stop;
    while buf.has_remaining() {
        let limit = if stop.is_cancelled() {
            ctx.opts.shutdown_write_grace
        } else {
            ctx.opts.write_stall
        };
        let n = {
            let mut slices = [IoSlice::new(&[]); 8];
            let count = buf.chunks_vectored(&mut slices);
            let write = tokio::time::timeout(limit, sock.write_vectored(&slices[..count]));
            tokio::select! {
                biased;
                r = write => r.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("the client read nothing for {limit:?}"))
                })??,
                // Shutdown while waiting: retry with the shorter grace.
                _ = stop.cancelled(), if !stop.is_cancelled() => continue,
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf.advance(n);
    }
    Ok(())
}

/// Serves the rest of the connection with hyper; `read` holds bytes already
/// read from the socket (replayed to hyper first).
///
/// The connection keeps this loop's limits: the same head size and header
/// count (hyper answers 431 past them), the same header-read timeout, a
/// write that makes no progress for [`Options::write_stall`] ends it, and
/// after shutdown began it gets [`Options::shutdown_write_grace`] to finish.
async fn hand_to_hyper(sock: TcpStream, read: Bytes, peer: SocketAddr, app: Router, ctx: Ctx) {
    let stop = ctx.stop;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let mut io = tokio_io_timeout::TimeoutStream::new(Rewind { read, io: sock });
    io.set_write_timeout(Some(ctx.opts.write_stall));
    let io = hyper_util::rt::TokioIo::new(Box::pin(io));
    let conn = hyper::server::conn::http1::Builder::new()
        .writev(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(ctx.opts.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD)
        .serve_connection(io, svc);
    let mut conn = Box::pin(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    match tokio::time::timeout(ctx.opts.shutdown_write_grace, conn).await {
        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        Ok(Ok(())) => {}
        Err(_) => tracing::debug!("connection still busy after the shutdown grace; closed"),
    }
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(out.remaining());
            out.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Parsed {
        parse_head(s.as_bytes())
    }

    #[test]
    fn bodiless_requests_are_served_here() {
        let Parsed::Request(h) =
            head("GET /v1/stream?source=a.*&tag=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\n\r\nrest")
        else {
            panic!("expected the stream path");
        };
        assert_eq!(
            h.len,
            "GET /v1/stream?source=a.*&tag=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\n\r\n".len()
        );
        assert_eq!(h.uri.query(), Some("source=a.*&tag=x"));
        assert_eq!(
            h.headers.get("x-api-key").map(|v| v.as_bytes()),
            Some(&b"k"[..])
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn connection_tokens_decide_keep_alive() {
        let cases = [
            (
                "GET /v1/stream HTTP/1.1\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET /v1/stream HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n",
                false,
            ),
            ("GET /v1/stream HTTP/1.0\r\n\r\n", false),
            (
                "GET /v1/stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
            ("GET /v1/stream HTTP/1.1\r\n\r\n", true),
        ];
        for (req, want) in cases {
            match head(req) {
                Parsed::Request(h) => assert_eq!(h.keep_alive, want, "{req:?}"),
                _ => panic!("expected to be served here: {req:?}"),
            }
        }
    }

    #[test]
    fn any_method_without_a_body_is_served_here() {
        for (req, method) in [
            ("POST /v1/stream HTTP/1.1\r\n\r\n", Method::POST),
            ("HEAD /v1/stream HTTP/1.1\r\n\r\n", Method::HEAD),
            ("OPTIONS * HTTP/1.1\r\n\r\n", Method::OPTIONS),
            (
                "GET /v1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Method::GET,
            ),
            ("DELETE /v1/x HTTP/1.0\r\n\r\n", Method::DELETE),
        ] {
            match head(req) {
                Parsed::Request(h) => assert_eq!(h.method, method, "{req:?}"),
                _ => panic!("expected to be served here: {req:?}"),
            }
        }
    }

    #[test]
    fn bodies_upgrades_and_odd_heads_go_to_hyper() {
        for req in [
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET /v1/stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /v1/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /v1/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /v1/stream HTTP/2.0\r\n\r\n",
            "GET /v1/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "\x16\x03\x01\x02\x00",
        ] {
            assert!(matches!(head(req), Parsed::Other), "{req:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert!(matches!(
            head(&format!("GET /v1/stream HTTP/1.1\r\n{many}\r\n")),
            Parsed::Other
        ));
    }

    #[test]
    fn mutated_and_random_heads_never_panic() {
        use rand::{Rng, SeedableRng};
        let seeds: [&[u8]; 3] = [
            b"GET /v1/stream?source=a.*&keyword=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\nConnection: keep-alive, close\r\n\r\n",
            b"HEAD /v1/events HTTP/1.0\r\nContent-Length: 0\r\nLast-Event-ID: 01a2\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nOrigin: https://a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..4) {
                    0 => bytes[at] = rng.random(),
                    1 => bytes.insert(at, rng.random()),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    bytes.push(b'G');
                }
            }
            let _ = parse_head(&bytes);
        }
        for _ in 0..2_000 {
            let len = rng.random_range(0..512);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = parse_head(&bytes);
        }
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(head("GET /v1/str"), Parsed::Partial));
        assert!(matches!(
            head("GET /v1/stream HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (len, want) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut out = [0u8; 18];
            let n = chunk_size_line(&mut out, len);
            assert_eq!(&out[..n], want.as_bytes(), "{len}");
        }
    }

    /// Serves `app` on 127.0.0.1:0 with `opts`; the token stops it.
    async fn spawn(app: Router, opts: Options) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(listener, app, stop.clone(), opts));
        (addr, stop)
    }

    /// Reads until EOF (discarding), failing after a generous bound.
    async fn until_eof(sock: &mut TcpStream) {
        let mut scratch = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(30), async {
            while sock.read(&mut scratch).await.expect("read") > 0 {}
        })
        .await
        .expect("the server closed the connection");
    }

    #[tokio::test]
    async fn slow_heads_and_idle_keep_alive_connections_are_closed() {
        let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let opts = Options {
            header_read_timeout: Duration::from_millis(200),
            ..Options::default()
        };
        let (addr, _stop) = spawn(app, opts).await;
        // Half a head, then nothing (slowloris).
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /x HTT").await.expect("write");
        until_eof(&mut slow).await;
        // A served request, then an idle keep-alive connection.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut scratch = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nx") {
            let n = idle.read(&mut scratch).await.expect("read");
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&scratch[..n]);
        }
        until_eof(&mut idle).await;
    }

    /// Fires when dropped.
    struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    /// A route whose body never ends, and a receiver that fires once the
    /// body was dropped (the server gave up on the response).
    fn endless_app() -> (Router, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let signal = std::sync::Arc::new(std::sync::Mutex::new(Some(DropSignal(Some(tx)))));
        let app = Router::new().route(
            "/endless",
            axum::routing::get(move || {
                let guard = signal.lock().expect("lock").take();
                async move {
                    let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
                    let body = futures::stream::unfold(guard, move |g| {
                        let chunk = chunk.clone();
                        async move {
                            tokio::task::yield_now().await;
                            Some((Ok::<_, std::convert::Infallible>(chunk), g))
                        }
                    });
                    axum::body::Body::from_stream(body)
                }
            }),
        );
        (app, rx)
    }

    /// The same request in every form the two serving paths take: without a
    /// body (served here) and with one (served by hyper).
    const ENDLESS_REQUESTS: [&str; 4] = [
        "GET /endless HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /endless HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
        "GET /endless HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        "GET /endless HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    ];

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_write_stall() {
        for req in ENDLESS_REQUESTS {
            let (app, rx) = endless_app();
            let opts = Options {
                write_stall: Duration::from_millis(300),
                ..Options::default()
            };
            let (addr, _stop) = spawn(app, opts).await;
            let mut sock = TcpStream::connect(addr).await.expect("connect");
            sock.write_all(req.as_bytes()).await.expect("write");
            // Never read: the server's writes stop making progress once the
            // socket buffers are full, and it must give up and drop the body.
            tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .unwrap_or_else(|_| panic!("the stalled response was never dropped: {req:?}"))
                .expect("signal");
            drop(sock);
        }
    }

    #[tokio::test]
    async fn a_response_that_never_ends_is_closed_after_the_shutdown_grace() {
        for req in ENDLESS_REQUESTS {
            let (app, rx) = endless_app();
            let opts = Options {
                shutdown_write_grace: Duration::from_millis(200),
                ..Options::default()
            };
            let (addr, stop) = spawn(app, opts).await;
            let mut sock = TcpStream::connect(addr).await.expect("connect");
            sock.write_all(req.as_bytes()).await.expect("write");
            let mut scratch = [0u8; 4096];
            let n = sock.read(&mut scratch).await.expect("read");
            assert!(n > 0);
            // A reading client, a body that does not stop by itself: the
            // connection still ends once shutdown's grace is over.
            stop.cancel();
            until_eof(&mut sock).await;
            tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .unwrap_or_else(|_| panic!("the response outlived shutdown: {req:?}"))
                .expect("signal");
        }
    }

    /// Sends `req` and reads the whole answer (the server closes after it).
    async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        // The server may answer and close before it read everything.
        let _ = sock.write_all(req).await;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut scratch = [0u8; 4096];
            loop {
                match sock.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&scratch[..n]),
                }
            }
        })
        .await
        .expect("the server closed the connection");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn head_limits_are_the_same_whichever_path_serves_the_request() {
        let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let (addr, _stop) = spawn(app, Options::default()).await;
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
        let pad = "a".repeat(MAX_HEAD);
        for body in ["", "Content-Length: 1\r\n"] {
            let tail = if body.is_empty() { "" } else { "x" };
            let over_count = format!("GET /x HTTP/1.1\r\nHost: h\r\n{body}{many}\r\n{tail}");
            let over_size =
                format!("GET /x HTTP/1.1\r\nHost: h\r\n{body}X-Pad: {pad}\r\n\r\n{tail}");
            for req in [over_count, over_size] {
                let got = exchange(addr, req.as_bytes()).await;
                assert!(
                    got.starts_with("HTTP/1.1 431 "),
                    "{:?} -> {:?}",
                    &req[..60],
                    got.lines().next()
                );
            }
        }
        // Within the limits both paths serve it.
        let fits: String = (0..MAX_HEADERS - 4)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        for body in ["", "Content-Length: 1\r\n"] {
            let tail = if body.is_empty() { "" } else { "x" };
            let req = format!(
                "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n{body}{fits}\r\n{tail}"
            );
            let got = exchange(addr, req.as_bytes()).await;
            assert!(got.starts_with("HTTP/1.1 200 "), "{:?}", got.lines().next());
        }
    }

    #[test]
    fn the_over_capacity_answer_is_well_framed() {
        let text = std::str::from_utf8(OVER_CAPACITY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["status"], 503);
    }

    #[tokio::test]
    async fn connections_past_the_cap_get_503_and_a_freed_slot_is_reused() {
        let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let opts = Options {
            max_connections: 2,
            ..Options::default()
        };
        let (addr, _stop) = spawn(app, opts).await;
        // Two sockets that never send a head hold both slots.
        let a = TcpStream::connect(addr).await.expect("connect");
        let b = TcpStream::connect(addr).await.expect("connect");
        // The third is refused with a problem, whatever it sends.
        let got = exchange(addr, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
        assert!(
            got.contains("maximum number of open connections"),
            "{got:?}"
        );
        // A slot freed by a client that leaves is taken by the next one.
        drop(a);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = exchange(
                addr,
                b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            )
            .await;
            if got.starts_with("HTTP/1.1 200 ") {
                break;
            }
            // The server notices the close when it next reads that socket.
            assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the freed slot was never reused"
            );
            tokio::task::yield_now().await;
        }
        drop(b);
    }
}
