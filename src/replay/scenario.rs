//! Scenarios: what the replay server answers on each URL path, request after request.
//!
//! A [`Scenario`] maps paths to routes. A *sequence* route serves its [`Step`]s
//! in order — the n-th request to the path gets the n-th step, and after the
//! last one the last repeats (or the sequence starts over, see [`Repeat`]). A
//! *dynamic* route computes a [`Reply`] per request (the demo upstream uses
//! these for feeds that grow with the clock).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

/// A named set of routes the [`ReplayServer`](super::ReplayServer) serves.
///
/// Build one in code with [`Scenario::new`] + [`Scenario::route`], or load a
/// recorded one from a directory with [`Scenario::load`].
#[derive(Clone)]
pub struct Scenario {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) routes: BTreeMap<String, Route>,
}

/// One path's behaviour.
#[derive(Clone)]
pub(super) enum Route {
    /// Recorded steps served one per request.
    Sequence { steps: Vec<Step>, repeat: Repeat },
    /// A reply computed per request.
    Dynamic(Responder),
}

/// The function behind a dynamic route.
pub(super) type Responder = Arc<dyn Fn(&ReplayRequest) -> Reply + Send + Sync>;

/// What a sequence route serves once every step has been served once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Repeat {
    /// Keep serving the last step (the default: an upstream that settled).
    #[default]
    Last,
    /// Start over at the first step.
    Cycle,
}

impl Scenario {
    /// An empty scenario; add routes with [`Scenario::route`] and [`Scenario::dynamic`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            routes: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a sequence route: request n to `path` gets step n,
    /// after the last step the last one repeats. `path` is matched exactly
    /// against the request path (the query string is ignored).
    pub fn route(self, path: &str, steps: impl IntoIterator<Item = Step>) -> Self {
        self.route_with(path, Repeat::Last, steps)
    }

    /// Like [`Scenario::route`] with an explicit [`Repeat`] policy.
    pub fn route_with(
        mut self,
        path: &str,
        repeat: Repeat,
        steps: impl IntoIterator<Item = Step>,
    ) -> Self {
        let steps = steps.into_iter().collect();
        self.routes
            .insert(normalize_path(path), Route::Sequence { steps, repeat });
        self
    }

    /// Adds (or replaces) a route whose reply is computed per request.
    pub fn dynamic(
        mut self,
        path: &str,
        f: impl Fn(&ReplayRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.routes
            .insert(normalize_path(path), Route::Dynamic(Arc::new(f)));
        self
    }

    /// Sets the free-text description (shown nowhere but `Debug`; documentation).
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The scenario's name (the directory name for loaded scenarios).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The free-text description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The served paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// The recorded steps of a sequence route (`None` for unknown or dynamic paths).
    pub fn steps(&self, path: &str) -> Option<&[Step]> {
        match self.routes.get(path)? {
            Route::Sequence { steps, .. } => Some(steps),
            Route::Dynamic(_) => None,
        }
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: BTreeMap<&str, String> = self
            .routes
            .iter()
            .map(|(p, r)| {
                let what = match r {
                    Route::Sequence { steps, repeat } => {
                        format!("{} steps, repeat {repeat:?}", steps.len())
                    }
                    Route::Dynamic(_) => "dynamic".to_owned(),
                };
                (p.as_str(), what)
            })
            .collect();
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("routes", &routes)
            .finish()
    }
}

fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// A request as the replay server saw it: given to dynamic routes and kept
/// for tests ([`ReplayServer::requests`](super::ReplayServer::requests)).
#[derive(Clone, Debug)]
pub struct ReplayRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path (what routes match on).
    pub path: String,
    /// Raw query string, without the `?`.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-cased; non-UTF-8 values are lossily decoded.
    pub headers: Vec<(String, String)>,
    /// 1-based number of this request among all requests to `path`.
    pub hit: usize,
}

impl ReplayRequest {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a dynamic route answers.
pub enum Reply {
    /// A regular step (conditional GET, gzip, delay and streaming all apply).
    Step(Step),
    /// A hand-made streaming body (the demo's endless firehose).
    Stream {
        /// HTTP status.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// The body chunks; an `Err` aborts the connection mid-stream.
        body: BoxStream<'static, io::Result<Bytes>>,
    },
}

impl From<Step> for Reply {
    fn from(step: Step) -> Self {
        Reply::Step(step)
    }
}

/// One recorded response.
#[derive(Clone, Debug)]
pub struct Step {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) body: StepBody,
    pub(super) gzip: bool,
    pub(super) delay: Duration,
    pub(super) template: bool,
    pub(super) note: Option<String>,
}

/// The body of a [`Step`].
#[derive(Clone, Debug)]
pub enum StepBody {
    /// A whole body sent at once.
    Bytes(Bytes),
    /// Lines sent one by one (ndjson or SSE).
    Stream(LineStream),
}

/// A streamed body: lines sent one at a time.
#[derive(Clone, Debug)]
pub struct LineStream {
    pub(super) format: StreamFormat,
    pub(super) lines: Vec<StreamLine>,
    pub(super) line_delay: Duration,
    pub(super) drop_after: Option<usize>,
    pub(super) hold_open: bool,
}

/// Wire format of a [`LineStream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
    /// Server-Sent Events (`text/event-stream`); honours `Last-Event-ID`.
    Sse,
}

/// One line of an ndjson stream or one event of an SSE stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLine {
    /// SSE `id:` (ignored for ndjson).
    pub id: Option<String>,
    /// SSE `event:` (ignored for ndjson).
    pub event: Option<String>,
    /// The payload: the ndjson line, or the SSE `data:` (newlines become several `data:` lines).
    pub data: String,
}

impl StreamLine {
    /// An ndjson line (or an SSE event without id).
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            id: None,
            event: None,
            data: data.into(),
        }
    }

    /// An SSE event with an id.
    pub fn sse(id: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            event: None,
            data: data.into(),
        }
    }

    /// Sets the SSE event type.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// The bytes sent for this line.
    pub fn encode(&self, format: StreamFormat) -> Bytes {
        match format {
            StreamFormat::Ndjson => {
                let mut s = self.data.replace('\n', " ");
                s.push('\n');
                Bytes::from(s)
            }
            StreamFormat::Sse => {
                let mut s = String::new();
                if let Some(id) = &self.id {
                    s.push_str("id: ");
                    s.push_str(id);
                    s.push('\n');
                }
                if let Some(ev) = &self.event {
                    s.push_str("event: ");
                    s.push_str(ev);
                    s.push('\n');
                }
                for line in self.data.split('\n') {
                    s.push_str("data: ");
                    s.push_str(line);
                    s.push('\n');
                }
                s.push('\n');
                Bytes::from(s)
            }
        }
    }
}

impl Step {
    /// A response with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            etag: None,
            last_modified: None,
            body: StepBody::Bytes(body.into()),
            gzip: false,
            delay: Duration::ZERO,
            template: false,
            note: None,
        }
    }

    /// A `200 OK` with `body`.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::new(200, body)
    }

    /// A response with `status` and a short plain-text body naming it.
    pub fn status(status: u16) -> Self {
        Self::new(status, format!("replay: scripted status {status}\n"))
            .content_type("text/plain; charset=utf-8")
    }

    /// A `200 OK` ndjson stream of `lines`.
    pub fn ndjson(lines: impl IntoIterator<Item = StreamLine>) -> Self {
        Self::stream(StreamFormat::Ndjson, lines)
    }

    /// A `200 OK` SSE stream of `events`; a request's `Last-Event-ID` resumes after that id.
    pub fn sse(events: impl IntoIterator<Item = StreamLine>) -> Self {
        Self::stream(StreamFormat::Sse, events)
    }

    fn stream(format: StreamFormat, lines: impl IntoIterator<Item = StreamLine>) -> Self {
        let mut step = Self::new(200, Bytes::new());
        step.body = StepBody::Stream(LineStream {
            format,
            lines: lines.into_iter().collect(),
            line_delay: Duration::ZERO,
            drop_after: None,
            hold_open: false,
        });
        step
    }

    /// Sets the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header (sent as given; invalid names/values make the reply a 500 naming them).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets `Content-Type`.
    pub fn content_type(self, value: impl Into<String>) -> Self {
        self.replace_header("content-type", value.into())
    }

    /// Sets `Cache-Control`.
    pub fn cache_control(self, value: impl Into<String>) -> Self {
        self.replace_header("cache-control", value.into())
    }

    /// Sets `Retry-After` (seconds or an HTTP date).
    pub fn retry_after(self, value: impl Into<String>) -> Self {
        self.replace_header("retry-after", value.into())
    }

    /// Sets the `ETag`; a request whose `If-None-Match` matches gets a 304.
    /// A bare value is quoted (`v1` → `"v1"`); `W/"…"` and `"…"` are kept.
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(quote_etag(&etag.into()));
        self
    }

    /// Sets `Last-Modified` (an HTTP date); a request whose
    /// `If-Modified-Since` is not older gets a 304 (when it sent no `If-None-Match`).
    pub fn last_modified(mut self, date: impl Into<String>) -> Self {
        self.last_modified = Some(date.into());
        self
    }

    /// Compresses the body on the fly and sends `Content-Encoding: gzip`
    /// (whole bodies only; streams are sent uncompressed).
    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    /// Waits this long before answering (a slow upstream).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Replaces `{{hit}}` in the body with the 1-based request number for the
    /// path (e.g. guids that churn on every fetch).
    pub fn templated(mut self) -> Self {
        self.template = true;
        self
    }

    /// Attaches a free-text note (documentation only).
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Streams only: waits this long between lines.
    pub fn line_delay(mut self, delay: Duration) -> Self {
        if let StepBody::Stream(s) = &mut self.body {
            s.line_delay = delay;
        }
        self
    }

    /// Streams only: aborts the connection after sending `n` lines (counted per
    /// connection) when more lines remain: a mid-stream drop, not a clean end.
    pub fn drop_after(mut self, n: usize) -> Self {
        if let StepBody::Stream(s) = &mut self.body {
            s.drop_after = Some(n);
        }
        self
    }

    /// Streams only: keeps the connection open after the last line (a live
    /// upstream that has nothing more to say yet) instead of ending the body.
    pub fn hold_open(mut self) -> Self {
        if let StepBody::Stream(s) = &mut self.body {
            s.hold_open = true;
        }
        self
    }

    /// The scripted status code.
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// The body, as recorded.
    pub fn body(&self) -> &StepBody {
        &self.body
    }

    /// The scripted ETag, quoted.
    pub fn etag_value(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The free-text note, if any.
    pub fn note_text(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The value of a scripted header (case-insensitive name).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when the body is compressed on the fly.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    fn replace_header(mut self, name: &str, value: String) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value));
        self
    }
}

impl LineStream {
    /// The wire format.
    pub fn format(&self) -> StreamFormat {
        self.format
    }

    /// The lines, in order.
    pub fn lines(&self) -> &[StreamLine] {
        &self.lines
    }

    /// Lines sent before the connection is aborted, if scripted.
    pub fn drop_after_lines(&self) -> Option<usize> {
        self.drop_after
    }
}

pub(super) fn quote_etag(etag: &str) -> String {
    let t = etag.trim();
    if t.starts_with('"') || t.starts_with("W/\"") {
        t.to_owned()
    } else {
        format!("\"{t}\"")
    }
}
