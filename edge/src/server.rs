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
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::hub::OverflowSignal;

pub mod head;

use head::{parse_head, Head, Parsed};

/// A response extension: when the signal is set the server gives up the
/// write in progress and closes the connection. A stream sets it to its
/// subscriber's overflow signal, so a client that reads a little at a time
/// is cut off when its queue overflows, not after it has slowly read
/// everything already handed to the socket.
#[derive(Clone)]
pub struct AbortWrite(pub OverflowSignal);

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
pub const MAX_HEADERS: usize = 64;

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
    let counted = std::sync::Arc::new(crate::metrics::Connections::default());
    serve_counted(listener, app, shutdown, opts, counted).await
}

/// [`serve_with`], counting open connections in `counted` (the edge's
/// `AppState::connections`, read by `/readyz` and `/metrics`); sets its
/// maximum to `opts.max_connections`.
pub async fn serve_counted(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    opts: Options,
    counted: std::sync::Arc<crate::metrics::Connections>,
) -> io::Result<()> {
    counted.set_max(opts.max_connections);
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
        let open = counted.opened();
        conns.spawn(async move {
            connection(sock, peer, app, ctx).await;
            drop(open);
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
    // Bytes read past the previous request head (a pipelined request).
    let mut pending = Bytes::new();
    loop {
        let mut buf = BytesMut::with_capacity(pending.len().max(1024));
        buf.extend_from_slice(&pending);
        drop(std::mem::take(&mut pending));
        // Boxed, like every await here but the response's: this future
        // lives as long as the connection.
        let Some(head) = Box::pin(next_head(&mut sock, &mut buf, &ctx)).await else {
            return;
        };
        let head = match head {
            Some(h) => h,
            // Closed by the client between requests.
            None if buf.is_empty() => return,
            // Boxed: hyper's connection state is large and rarely needed.
            None => return Box::pin(hand_to_hyper(sock, buf.freeze(), peer, app, ctx)).await,
        };
        // The request goes straight into the router's future, boxed: it is
        // large and lives only until the response head is ready, while this
        // task's future lives as long as the stream (what it holds across an
        // await, an idle subscriber holds for hours). In a block, so nothing
        // of the request is kept across the awaits below.
        let (routed, framing, len) = {
            let (req, framing, len) = request(head, peer);
            (
                Box::pin(tower::ServiceExt::oneshot(app.clone(), req)),
                framing,
                len,
            )
        };
        // A copy, so the head buffer is freed now rather than shared with
        // the remainder for as long as the response lasts.
        if buf.len() > len {
            pending = Bytes::copy_from_slice(&buf[len..]);
        }
        drop(buf);
        // The routing and the response's head in a boxed step of their own:
        // awaited inline, the router's result and `respond`'s arguments
        // took space of their own in this future for the stream's whole
        // life (its size went from 1,200 to 1,064 bytes, release).
        let prepared = Box::pin(async move {
            match routed.await {
                Ok(res) => prepare(res, framing),
                Err(never) => match never {},
            }
        })
        .await;
        let res = respond(&mut sock, prepared, &ctx).await;
        match res {
            Ok(true) if !ctx.stop.is_cancelled() => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return;
            }
        }
    }
}

/// Waits for the next request head: `Some(head)` to serve (`None` inside:
/// for hyper, or EOF), `None` when the connection is done (shutdown, an
/// error, no head within [`Options::header_read_timeout`]).
async fn next_head(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    ctx: &Ctx,
) -> Option<Option<Box<Head>>> {
    let limit = ctx.opts.header_read_timeout;
    tokio::select! {
        biased;
        _ = ctx.stop.cancelled() => None,
        r = tokio::time::timeout(limit, read_head(sock, buf)) => match r {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection closed before a request head");
                None
            }
            Err(_) => {
                tracing::debug!("no request head within {limit:?}; closing");
                None
            }
        },
    }
}

/// The request for the router, how its response is framed, and the head's
/// length. A plain function, so nothing of the head stays in the
/// connection's future: the box and the moved-out fields are gone when it
/// returns.
fn request(head: Box<Head>, peer: SocketAddr) -> (Request<axum::body::Body>, Framing, usize) {
    let Head {
        len,
        method,
        uri,
        version,
        headers,
        keep_alive,
    } = *head;
    let framing = Framing {
        keep_alive,
        http10: version == axum::http::Version::HTTP_10,
        head_request: method == Method::HEAD,
    };
    let mut req = Request::new(axum::body::Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(ConnectInfo(peer));
    (req, framing, len)
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

/// A response ready to write: its head rendered, its body, how it is framed.
struct Prepared {
    head: Bytes,
    body: axum::body::Body,
    abort: Option<OverflowSignal>,
    /// Nothing after the head (204, 304, 1xx, or a HEAD request).
    headers_only: bool,
    /// The body's length is known (and written as `content-length`).
    exact: bool,
    chunked: bool,
    /// The connection may carry another request after this one.
    reuse: bool,
}

/// Renders the response head for its framing. A plain function, so the
/// response's parts are not part of the connection's future.
fn prepare(res: Response, framing: Framing) -> Prepared {
    let (parts, body) = res.into_parts();
    let abort = parts.extensions.get::<AbortWrite>().map(|a| a.0.clone());
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
    Prepared {
        head: head.freeze(),
        body,
        abort,
        headers_only: no_body || framing.head_request,
        exact: exact.is_some(),
        chunked,
        reuse,
    }
}

/// Writes a response to the socket. Returns whether the connection may
/// carry another request (only after a complete, length-framed response).
async fn respond(sock: &mut TcpStream, res: Prepared, ctx: &Ctx) -> io::Result<bool> {
    let Prepared {
        head,
        body,
        abort,
        headers_only,
        exact,
        chunked,
        reuse,
    } = res;

    if headers_only {
        write_all(sock, &mut head.clone(), ctx).await?;
        return Ok(reuse);
    }
    if exact {
        // In memory already (a problem, a JSON page): head and body in one
        // write. Boxed, like every await that is not the stream's idle wait:
        // this future lives as long as the connection.
        let bytes = match Box::pin(axum::body::to_bytes(body, usize::MAX)).await {
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
    // The timer is made (boxed) only then: an idle stream waits here for
    // hours, and what this wait holds is what an idle subscriber costs.
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        if closing.is_none() && ctx.stop.is_cancelled() {
            closing = Some(Box::pin(tokio::time::sleep(ctx.opts.shutdown_write_grace)));
        }
        if closing.as_ref().is_some_and(|t| t.is_elapsed()) {
            tracing::debug!("response still running after the shutdown grace; closed");
            return Ok(false);
        }
        let item = match next.take() {
            Some(item) => item,
            None => tokio::select! {
                biased;
                item = data.next() => item,
                // The socket's own read-readiness slot (no waiter node in
                // this future, unlike `readable()`): this task is its only
                // reader.
                r = std::future::poll_fn(|cx| sock.poll_read_ready(cx)) => {
                    r?;
                    if client_closed(sock)? {
                        return Ok(false);
                    }
                    continue;
                }
                _ = ctx.stop.cancelled(), if closing.is_none() => continue,
                () = async {
                    match closing.as_mut() {
                        Some(t) => t.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => continue,
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
            write_out(sock, &mut frame, ctx, abort.as_ref()).await?;
        } else {
            write_out(sock, &mut Buf::chain(head, bytes), ctx, abort.as_ref()).await?;
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
    write_out(sock, buf, ctx, None).await
}

/// [`write_all_unless`] with what the socket takes at once written first,
/// without waiting (as `write_vectored` would try first). Only a write the
/// socket cannot take whole waits, in a boxed future: the future of a
/// connection holds what its awaits hold for as long as it lives, and the
/// timers a waiting write needs are most of that (a 1.9 KiB connection
/// future before, see docs/PERFORMANCE.md).
async fn write_out(
    sock: &mut TcpStream,
    buf: &mut impl Buf,
    ctx: &Ctx,
    abort: Option<&OverflowSignal>,
) -> io::Result<()> {
    if abort.is_some_and(OverflowSignal::is_set) {
        return Err(io::Error::other(
            "write given up: the client reads too slowly",
        ));
    }
    while buf.has_remaining() {
        // In a block of its own: the slices must not be alive across the
        // await below, or this future would carry them.
        let n = {
            let mut slices = [IoSlice::new(&[]); 8];
            let count = buf.chunks_vectored(&mut slices);
            match sock.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        };
        buf.advance(n);
    }
    if buf.has_remaining() {
        Box::pin(write_all_unless(sock, buf, ctx, abort)).await
    } else {
        Ok(())
    }
}

/// [`write_all`] that gives up (an error) as soon as `abort` is set.
async fn write_all_unless(
    sock: &mut TcpStream,
    buf: &mut impl Buf,
    ctx: &Ctx,
    abort: Option<&OverflowSignal>,
) -> io::Result<()> {
    let stop = &ctx.stop;
    let aborted = async {
        match abort {
            Some(a) => a.wait().await,
            None => std::future::pending().await,
        }
    };
    let mut aborted = std::pin::pin!(aborted);
    while buf.has_remaining() {
        if abort.is_some_and(OverflowSignal::is_set) {
            return Err(io::Error::other(
                "write given up: the client reads too slowly",
            ));
        }
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
                () = &mut aborted => {
                    return Err(io::Error::other("write given up: the client reads too slowly"));
                }
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
mod tests;
