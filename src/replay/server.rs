//! The replay HTTP server: serves a [`Scenario`] on 127.0.0.1 from its own thread.
//!
//! The server runs on a dedicated thread with its own current-thread tokio
//! runtime, so it keeps real time even when a test pauses its own clock
//! (`tokio::time::pause()`), works from sync and async callers alike, and
//! stops cleanly: dropping the runtime ends every open connection, including
//! streams scripted to stay open.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::oneshot;

use super::scenario::{
    LineStream, Repeat, ReplayRequest, Reply, Route, Scenario, Step, StepBody, StreamFormat,
};

/// Pause before a scripted mid-stream drop so the lines sent so far reach the client.
const DROP_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// How many recent requests are kept for [`ReplayServer::requests`] (the demo runs for hours).
const REQUEST_LOG_CAP: usize = 1000;

/// A running fixture upstream on `127.0.0.1:<ephemeral port>`.
///
/// Stops on [`ReplayServer::shutdown`] or when dropped.
pub struct ReplayServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Tells the server thread to stop; `None` once sent.
    stop: Option<oneshot::Sender<()>>,
    /// The server thread; joined on shutdown so the port is released when it returns.
    thread: Option<JoinHandle<()>>,
}

/// State shared by the handle and the request handler.
struct Shared {
    scenario: Scenario,
    /// Request counters and the recent-request log. A std mutex: it is never
    /// held across an `.await`.
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    hits: HashMap<String, usize>,
    log: VecDeque<ReplayRequest>,
}

impl Shared {
    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere while counting; the counts are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReplayServer {
    /// Binds `127.0.0.1:0` and starts serving `scenario` on a background thread.
    /// Needs no tokio runtime from the caller.
    pub fn start(scenario: Scenario) -> io::Result<ReplayServer> {
        let listener = StdTcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared {
            scenario,
            state: Mutex::new(Counters::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("replay-{}", shared.scenario.name()))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        res = axum::serve(listener, app) => {
                            if let Err(e) = res {
                                tracing::warn!(error = %e, "replay server stopped");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here aborts every connection task.
                drop(runtime);
            })?;
        Ok(ReplayServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The absolute URL of `path` on this server (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base_url())
        } else {
            format!("{}/{path}", self.base_url())
        }
    }

    /// Requests received for `path` so far (any status, including 304s and 404s).
    pub fn hits(&self, path: &str) -> usize {
        self.shared.counters().hits.get(path).copied().unwrap_or(0)
    }

    /// Requests received for all paths.
    pub fn total_hits(&self) -> usize {
        self.shared.counters().hits.values().sum()
    }

    /// The most recent requests for `path` (up to 1000 over all paths), oldest first.
    pub fn requests(&self, path: &str) -> Vec<ReplayRequest> {
        self.shared
            .counters()
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The scenario being served.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.scenario
    }

    /// Stops the server and waits for its thread; open connections are closed.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may already be gone (serve failed); nothing to tell it then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!(addr = %self.addr, "replay server thread panicked");
            }
        }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for ReplayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayServer")
            .field("addr", &self.addr)
            .field("scenario", &self.shared.scenario.name())
            .finish()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let req = {
        let mut c = shared.counters();
        let hit = {
            let n = c.hits.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let req = ReplayRequest {
            method: method.as_str().to_owned(),
            path: path.clone(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            hit,
        };
        if c.log.len() >= REQUEST_LOG_CAP {
            c.log.pop_front();
        }
        c.log.push_back(req.clone());
        req
    };

    let Some(route) = shared.scenario.routes.get(&path) else {
        let known: Vec<&str> = shared.scenario.paths().collect();
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "replay: no route for {method} {path} in scenario `{}`; it serves: {}\n",
                shared.scenario.name(),
                known.join(", ")
            ),
        );
    };
    let reply = match route {
        Route::Sequence { steps, repeat } => match pick(steps, *repeat, req.hit) {
            Some(step) => Reply::Step(step.clone()),
            None => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "replay: route {path} of scenario `{}` has no steps\n",
                        shared.scenario.name()
                    ),
                )
            }
        },
        Route::Dynamic(f) => f(&req),
    };
    match reply {
        Reply::Step(step) => serve_step(step, &req).await,
        Reply::Stream {
            status,
            headers,
            body,
        } => build(status, &headers, Body::from_stream(body)),
    }
}

/// The step for the `hit`-th (1-based) request.
fn pick(steps: &[Step], repeat: Repeat, hit: usize) -> Option<&Step> {
    let last = steps.len().checked_sub(1)?;
    let i = hit.saturating_sub(1);
    let i = match repeat {
        Repeat::Last => i.min(last),
        Repeat::Cycle => i % steps.len(),
    };
    steps.get(i)
}

async fn serve_step(step: Step, req: &ReplayRequest) -> Response {
    if !step.delay.is_zero() {
        tokio::time::sleep(step.delay).await;
    }
    let mut headers = step.headers.clone();
    if let Some(etag) = &step.etag {
        headers.push(("etag".to_owned(), etag.clone()));
    }
    if let Some(lm) = &step.last_modified {
        headers.push(("last-modified".to_owned(), lm.clone()));
    }
    if (200..300).contains(&step.status) && not_modified(&step, req) {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        return build(304, &headers, Body::empty());
    }
    match step.body {
        StepBody::Bytes(bytes) => {
            let bytes = if step.template {
                let text = String::from_utf8_lossy(&bytes).replace("{{hit}}", &req.hit.to_string());
                Bytes::from(text)
            } else {
                bytes
            };
            if step.gzip {
                match gzip(&bytes) {
                    Ok(z) => {
                        headers.push(("content-encoding".to_owned(), "gzip".to_owned()));
                        build(step.status, &headers, Body::from(z))
                    }
                    Err(e) => plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("replay: gzip failed: {e}\n"),
                    ),
                }
            } else {
                build(step.status, &headers, Body::from(bytes))
            }
        }
        StepBody::Stream(ls) => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                let ct = match ls.format {
                    StreamFormat::Ndjson => "application/x-ndjson",
                    StreamFormat::Sse => "text/event-stream",
                };
                headers.push(("content-type".to_owned(), ct.to_owned()));
            }
            headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
            let resume_after = match ls.format {
                StreamFormat::Sse => req.header("last-event-id"),
                StreamFormat::Ndjson => None,
            };
            build(
                step.status,
                &headers,
                Body::from_stream(line_stream(ls, resume_after)),
            )
        }
    }
}

/// Conditional GET: `If-None-Match` wins; `If-Modified-Since` only counts without it.
fn not_modified(step: &Step, req: &ReplayRequest) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        let Some(etag) = &step.etag else { return false };
        let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let ours = strip(etag);
        return inm.split(',').any(|t| t.trim() == "*" || strip(t) == ours);
    }
    match (req.header("if-modified-since"), &step.last_modified) {
        (Some(ims), Some(lm)) => match (
            chrono::DateTime::parse_from_rfc2822(ims),
            chrono::DateTime::parse_from_rfc2822(lm),
        ) {
            (Ok(ims), Ok(lm)) => lm <= ims,
            _ => false,
        },
        _ => false,
    }
}

/// The body of a streaming step: lines one by one, an optional delay between
/// them, an abort after `drop_after` lines, and SSE resume after `resume_after`.
fn line_stream(
    ls: LineStream,
    resume_after: Option<&str>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let start = resume_after
        .and_then(|id| ls.lines.iter().position(|l| l.id.as_deref() == Some(id)))
        .map_or(0, |i| i + 1);
    let chunks: Vec<Bytes> = ls.lines[start..]
        .iter()
        .map(|l| l.encode(ls.format))
        .collect();
    let LineStream {
        line_delay,
        drop_after,
        hold_open,
        ..
    } = ls;
    struct St {
        chunks: std::vec::IntoIter<Bytes>,
        sent: usize,
        done: bool,
    }
    let init = St {
        chunks: chunks.into_iter(),
        sent: 0,
        done: false,
    };
    stream::unfold(init, move |mut st| async move {
        if st.done {
            return None;
        }
        let Some(chunk) = st.chunks.next() else {
            if hold_open {
                // A live upstream with nothing more to say: stay open until the
                // client goes away or the server shuts down.
                std::future::pending::<()>().await;
            }
            return None;
        };
        // Mid-stream only: the drop happens while lines remain.
        if drop_after == Some(st.sent) {
            st.done = true;
            // Let hyper flush the lines already yielded before the abort
            // discards its write buffer: returning Pending here makes it flush.
            tokio::task::yield_now().await;
            tokio::time::sleep(DROP_LINGER).await;
            let e = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "replay: connection dropped after {} lines as scripted",
                    st.sent
                ),
            );
            return Some((Err(e), st));
        }
        if st.sent > 0 && !line_delay.is_zero() {
            tokio::time::sleep(line_delay).await;
        }
        st.sent += 1;
        Some((Ok(chunk), st))
    })
    .boxed()
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut res = Response::new(Body::from(text));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A response from scripted parts; an invalid status or header becomes a 500 naming it.
fn build(status: u16, headers: &[(String, String)], body: Body) -> Response {
    let Ok(code) = StatusCode::from_u16(status) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("replay: scripted status {status} is not valid\n"),
        );
    };
    let mut res = Response::new(body);
    *res.status_mut() = code;
    for (k, v) in headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(name), Ok(value)) => {
                res.headers_mut().append(name, value);
            }
            _ => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("replay: scripted header `{k}: {v}` is not a valid HTTP header\n"),
                )
            }
        }
    }
    res
}
