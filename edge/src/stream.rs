//! `GET /v1/stream`: replay from the log after the cursor, then live.
//!
//! One connection is one [`Conn`] state machine driven by the response body:
//! hyper polls the body only when the socket can take more, so a slow client
//! slows its own replay (backpressure) and, once live, lets its hub queue
//! fill until the hub drops it (bounded memory; the client resumes).
//!
//! The hand-over from replay to live has no gap and no duplicate:
//! 1. subscribe to the hub first (the queue starts collecting live events);
//! 2. replay from the log in pages until a page comes back short — every
//!    event the hub fanned out *before* step 1 was committed before it, so
//!    the log has it;
//! 3. drain the queue, skipping events at or before the last replayed
//!    position — in the log's order ([`EventLog::is_after`](livestrom_engine::EventLog::is_after)): a cluster's
//!    ids carry a stream sequence while their timestamps may step back.
//!
//! If the queue overflowed during the replay it is re-armed and the replay
//! simply continues from the log (never skip); once live, an overflow means
//! the client is too slow and the stream ends.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use livestrom_engine::keys::KeyInfo;
use livestrom_engine::log::{CursorCheck, LogError};
use tokio::task::{JoinError, JoinHandle};
use uuid::Uuid;

use crate::access::RequestId;
use crate::auth::Authenticated;
use crate::filter::{parse_cursor, parse_query, Endpoint, Filter};
use crate::hub::{
    write_checkpoint, write_comment, write_error_event, write_event, Drained, Frame, Subscription,
};
use crate::limits::StreamGuard;
use crate::metrics::{now_ms, Disconnect};
use crate::problem::Problem;
use crate::AppState;

/// Log rows per replay read (one statement each).
pub const REPLAY_PAGE: usize = 2048;

/// A replay page stops taking events once its rendered frames reach this
/// size (big page snapshots); the rest of the rows are read by the next page.
pub const REPLAY_PAGE_BYTES: usize = 8 << 20;

/// What to reserve for a page whose first event renders from `first_json`
/// bytes: room for a full page of similar events, but never more than 1 MiB
/// up front (one huge event must not reserve a page of huge events).
fn page_reserve(first_json: usize) -> usize {
    REPLAY_PAGE
        .saturating_mul(first_json.saturating_add(80))
        .min(1 << 20)
}

/// Most bytes of queued frames one live write takes. A subscriber's queue
/// holds up to its bound (4 MiB by default) of shared frames; each drain
/// copies what it takes into a chunk of the connection's own, so draining
/// everything at once under a burst made every busy connection hold a
/// copy of its whole queue while writing it. What is left stays queued
/// (shared, still counted against the bound) for the next write.
pub const MAX_DRAIN_BYTES: usize = 128 << 10;

/// After this many events passed over by the filter since the last frame
/// carrying an id, an id-only checkpoint frame is sent (also on every
/// keep-alive tick when anything was passed over).
pub const CHECKPOINT_AFTER_SKIPPED: u64 = 1000;

/// The handler.
pub async fn handler(
    State(state): State<AppState>,
    Authenticated(key): Authenticated,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let q = parse_query(query.as_deref(), Endpoint::Stream, key.max_filters)?;
    let cursor = cursor_from(&headers, q.since)?;
    let guard = state.limits.stream_guard(&key)?;
    let filter = Arc::new(q.filter);
    // Subscribe before anything is read from the log (hand-over step 1).
    let sub = state
        .hub
        .subscribe(filter.clone())
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let start = check_cursor(&state, cursor, cursor_param(&headers)).await?;

    // The id is sanitised by `access` (no CR/LF): safe inside a comment line.
    let mut hello = BytesMut::with_capacity(64);
    write_comment(&mut hello, &format!("connected request_id={request_id}"));

    let (pos, phase) = match start {
        Start::After(id) => (id, Phase::Replay),
        Start::Now(head) => (head, Phase::Live),
    };
    let sent_seq = state.hub.position().map_or(0, |p| p.seq);
    let ticks = sub.ticks();
    let conn = Conn {
        state,
        key,
        _guard: guard,
        sub,
        ticks,
        filter,
        phase,
        hello: Some(hello.freeze()),
        pos,
        last_sent: pos,
        sent_seq,
        skipped_in_replay: 0,
        spare: Vec::new(),
        more: false,
        ahead: None,
        ended: None,
    };
    let abort = crate::server::AbortWrite(conn.sub.overflow_signal());
    let body = futures::stream::unfold(conn, |mut c| async move {
        c.next_chunk()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), c))
    });
    let mut res = axum::body::Body::from_stream(body).into_response();
    res.extensions_mut().insert(abort);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(res)
}

/// The cursor of a request: `Last-Event-ID` wins over `since=`.
pub fn cursor_from(headers: &HeaderMap, since: Option<Uuid>) -> Result<Option<Uuid>, Problem> {
    match last_event_id(headers) {
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                Problem::bad_param("Last-Event-ID", "`Last-Event-ID` must be a UUIDv7 event id")
            })?;
            parse_cursor("Last-Event-ID", s).map(Some)
        }
        None => Ok(since),
    }
}

/// Where a request starts reading.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// After this cursor (inside the retention window).
    After(Uuid),
    /// No cursor: after the log's head at the time of the check (nil when empty).
    Now(Uuid),
}

/// The `Last-Event-ID` header, unless it is empty (a client with no id yet;
/// compliant ones leave it out): then `since=` or "now" applies.
fn last_event_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get("last-event-id")
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
}

/// Which parameter carried the cursor (for error messages): the header wins.
pub fn cursor_param(headers: &HeaderMap) -> &'static str {
    if last_event_id(headers).is_some() {
        "Last-Event-ID"
    } else {
        "since"
    }
}

/// How far ahead of this server's clock a cursor may be (clock skew between
/// nodes) before it is refused as a position that cannot exist.
pub use livestrom_engine::log::CURSOR_CLOCK_SKEW;

/// Checks a cursor with the log ([`EventLog::check_cursor`](livestrom_engine::EventLog::check_cursor)): older than the
/// retained window or an id of another stream is a 410; ahead of the log
/// (on one node: of both its newest event and the clock, beyond
/// [`CURSOR_CLOCK_SKEW`]) is a 400 — resuming from it would silently skip
/// every event until the log caught up. Without a cursor, reads the head.
/// Runs the blocking reads off the runtime.
pub async fn check_cursor(
    state: &AppState,
    cursor: Option<Uuid>,
    param: &'static str,
) -> Result<Start, Problem> {
    enum Refusal {
        Old(Uuid),
        Foreign(String),
        Ahead(Option<Uuid>),
    }
    let log = state.log.clone();
    let r = state
        .reads
        .run(move || -> Result<Result<Start, Refusal>, LogError> {
            let Some(c) = cursor else {
                return Ok(Ok(Start::Now(log.head()?.unwrap_or(Uuid::nil()))));
            };
            Ok(match log.check_cursor(c)? {
                CursorCheck::Ok => Ok(Start::After(c)),
                CursorCheck::Expired { floor } => Err(Refusal::Old(floor)),
                CursorCheck::Foreign { why } => Err(Refusal::Foreign(why)),
                CursorCheck::Ahead { head } => Err(Refusal::Ahead(head)),
            })
        })
        .await;
    match r {
        Ok(Ok(Ok(s))) => Ok(s),
        Ok(Ok(Err(Refusal::Old(floor)))) => Err(Problem::gone(format!(
            "the cursor is older than the retained window (oldest resumable position {floor}); reconnect without a cursor to resync from now"
        ))),
        Ok(Ok(Err(Refusal::Foreign(why)))) => Err(Problem::gone_foreign(format!(
            "the cursor belongs to another stream ({why}): this stream was recreated, or the id comes from another cluster or server; reconnect without `{param}` to start from now"
        ))),
        Ok(Ok(Err(Refusal::Ahead(head)))) => Err(Problem::bad_param(
            param,
            format!(
                "`{param}` is ahead of this server's clock and newest event ({}): it is not a position of this stream; reconnect without a cursor",
                head.map_or_else(|| "none yet".to_owned(), |h| h.to_string())
            ),
        )),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Replay,
    Live,
    Done,
}

/// A replay page being read (`Conn::spawn_page`).
type PageRead = JoinHandle<Result<Result<ReplayPage, LogError>, JoinError>>;

/// One open stream.
struct Conn {
    state: AppState,
    key: Arc<KeyInfo>,
    /// Holds the key's concurrent-stream slot until the stream ends.
    _guard: StreamGuard,
    /// Registered with the hub before the replay began.
    sub: Subscription,
    filter: Arc<Filter>,
    /// The hub's keep-alive ticks when this stream last looked
    /// ([`Subscription::ticks`]): one timer for all streams, none per stream.
    ticks: u64,
    phase: Phase,
    /// `:connected` comment, sent first.
    hello: Option<Bytes>,
    /// Every event up to this position, in the log's order
    /// ([`EventLog::is_after`](livestrom_engine::EventLog::is_after)), has been handled (sent or filtered out).
    pos: Uuid,
    /// The id the client will resume from (last event or checkpoint sent).
    last_sent: Uuid,
    /// Hub sequence number at `last_sent` (counts events passed over since).
    sent_seq: u64,
    /// Rows the replay filtered out since the last id sent.
    skipped_in_replay: u64,
    /// Recycled drain buffer (keeps its capacity between wake-ups).
    spare: Vec<Frame>,
    /// The last drain stopped at [`MAX_DRAIN_BYTES`] with frames left in the
    /// queue: drain again at once (no wake-up will come for them).
    more: bool,
    /// The next replay page, already being read.
    ahead: Option<PageRead>,
    /// Why the server ended the stream; None while it runs. A stream
    /// dropped without one was closed by its client (counted on drop).
    ended: Option<Disconnect>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let why = match self.ended {
            Some(why) => why,
            // The server gave up a write because the queue overflowed.
            None if self.sub.overflow_signal().is_set() => {
                tracing::info!(key = %self.key.name, "slow subscriber disconnected: its queue exceeded the bound while a write to it was stalled");
                Disconnect::Slow
            }
            None => Disconnect::Client,
        };
        self.state.metrics.disconnect(why);
    }
}

/// A rendered replay page and the replay state after it.
struct ReplayPage {
    buf: BytesMut,
    pos: Uuid,
    last_sent: Uuid,
    skipped: u64,
    /// Rows read (a short page means the log is exhausted).
    rows: usize,
    /// Events rendered into `buf`.
    events: u64,
    /// Events after the page's start may have been pruned while the stream
    /// replayed (the log's prune mark passed it): the page is not sent and
    /// the stream ends with the 410 problem instead of a silent gap.
    gone: Option<Uuid>,
}

enum Wake {
    Stop,
    Queue,
}

impl Conn {
    /// The next bytes to send; None ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(h) = self.hello.take() {
            return Some(h);
        }
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Replay => {
                    // Boxed (one allocation per page): the replay's
                    // awaits are larger than the live wait, and this
                    // future is what an idle subscriber holds for hours.
                    if let Some(chunk) = Box::pin(self.replay_step()).await {
                        return Some(chunk);
                    }
                }
                Phase::Live => {
                    // Shutdown needs no arm of its own: the hub's task
                    // stops on it and ends every queue, which wakes this
                    // wait with `Drained::Ended` (and `drain_live` reads
                    // the reason). One wait fewer in what an idle stream
                    // holds.
                    let wake = tokio::select! {
                        biased;
                        _ = self.key.revoked.cancelled() => Wake::Stop,
                        () = std::future::ready(()), if self.more => Wake::Queue,
                        // Frames queued, or the hub's keep-alive tick.
                        _ = self.sub.notified() => Wake::Queue,
                    };
                    let chunk = match wake {
                        Wake::Stop => {
                            let why = self.stop_reason();
                            self.end(why);
                            None
                        }
                        Wake::Queue => {
                            let ticks = self.sub.ticks();
                            let tick = ticks != self.ticks;
                            self.ticks = ticks;
                            self.drain_live(tick)
                        }
                    };
                    match chunk {
                        Some(c) if !c.is_empty() => return Some(c),
                        Some(_) => {}
                        None => self.end(Disconnect::HubEnded),
                    }
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.state.shutdown.is_cancelled() || self.key.revoked.is_cancelled()
    }

    /// Why a stopped stream stopped: shutdown, else its key's revocation.
    fn stop_reason(&self) -> Disconnect {
        if self.state.shutdown.is_cancelled() {
            Disconnect::Shutdown
        } else {
            Disconnect::Revoked
        }
    }

    /// Ends the stream for `why` (the first reason recorded wins).
    fn end(&mut self, why: Disconnect) {
        self.phase = Phase::Done;
        self.ended.get_or_insert(why);
    }

    /// One replay page. Returns bytes to send, or None when there is nothing
    /// to send yet (phase may have changed).
    ///
    /// Pages are rendered on a blocking thread straight from the SQLite rows
    /// into the outgoing buffer; while hyper writes one page the next is
    /// already being read (one page of read-ahead).
    async fn replay_step(&mut self) -> Option<Bytes> {
        if self.stopped() {
            let why = self.stop_reason();
            self.end(why);
            return None;
        }
        let read = match self.ahead.take() {
            Some(r) => r,
            None => self.spawn_page(),
        };
        let page: ReplayPage = tokio::select! {
            biased;
            _ = self.state.shutdown.cancelled() => { self.end(Disconnect::Shutdown); return None; }
            _ = self.key.revoked.cancelled() => { self.end(Disconnect::Revoked); return None; }
            r = read => match r {
                Ok(Ok(Ok(page))) => page,
                Ok(Ok(Err(e))) => { tracing::error!(error = %e, "replay read failed; ending stream"); self.end(Disconnect::Error); return None; }
                Ok(Err(e)) | Err(e) => { tracing::error!(error = %e, "replay task failed; ending stream"); self.end(Disconnect::Error); return None; }
            },
        };
        if let Some(floor) = page.gone {
            self.end(Disconnect::Gone);
            return Some(gone_frame(floor));
        }
        self.state.metrics.replayed_stream(page.events);
        let mut buf = page.buf;
        self.pos = page.pos;
        self.last_sent = page.last_sent;
        self.skipped_in_replay = page.skipped;
        if page.rows < REPLAY_PAGE {
            // Hand-over (step 3): the first live drain decides.
            let p = self.state.hub.position();
            let mut frames = std::mem::take(&mut self.spare);
            match self.sub.drain(&mut frames, MAX_DRAIN_BYTES) {
                Drained::Overflowed => {
                    // Live events were dropped while we replayed: keep
                    // reading the log from `pos` with a fresh queue.
                    self.sub.rearm();
                }
                Drained::Ended => {
                    let why = if self.state.shutdown.is_cancelled() {
                        Disconnect::Shutdown
                    } else {
                        Disconnect::HubEnded
                    };
                    self.end(why);
                }
                d @ (Drained::Frames | Drained::Partial) => {
                    self.phase = Phase::Live;
                    self.sent_seq = p.map_or(0, |p| p.seq);
                    // Frames left queued may be at or before the hub's
                    // position: `pos` only jumps to it after a full drain.
                    self.more = d == Drained::Partial;
                    let hub_pos = if self.more { None } else { p.map(|p| p.id) };
                    self.write_frames(&mut buf, &mut frames, hub_pos);
                }
            }
            self.spare = frames;
        } else {
            self.ahead = Some(self.spawn_page());
        }
        // A replay never delivers what the key may no longer see.
        if self.stopped() {
            let why = self.stop_reason();
            self.end(why);
            return None;
        }
        (!buf.is_empty()).then(|| buf.freeze())
    }

    /// Starts reading and rendering the page after `pos` on a blocking thread.
    fn spawn_page(&self) -> PageRead {
        let log = self.state.log.clone();
        let filter = self.filter.clone();
        // Made per page rather than kept: a live stream never needs it.
        let scope = self.filter.read_scope();
        let mut page = ReplayPage {
            buf: BytesMut::new(),
            pos: self.pos,
            last_sent: self.last_sent,
            skipped: self.skipped_in_replay,
            rows: 0,
            events: 0,
            gone: None,
        };
        self.state.reads.spawn(move || {
            let after = page.pos;
            // Rows after the page is full are left for the next page (`pos`
            // does not move past them).
            let mut full = false;
            let read =
                log.read_after_with(after, REPLAY_PAGE, &scope, &mut |id, sid, st, json| {
                    if full {
                        return;
                    }
                    page.pos = id;
                    if filter.matches_json(sid, st, json) {
                        if page.buf.capacity() == 0 {
                            page.buf.reserve(page_reserve(json.len()));
                        }
                        write_event(&mut page.buf, id, st, json);
                        page.events += 1;
                        page.last_sent = id;
                        page.skipped = 0;
                        full = page.buf.len() >= REPLAY_PAGE_BYTES;
                    } else {
                        page.skipped += 1;
                    }
                })?;
            // Asked after the page (a log raises its prune mark before it
            // deletes anything): whether the page may lack rows.
            if let Some(floor) = log.missed_after(after)? {
                page.gone = Some(floor);
                return Ok(page);
            }
            // A page cut short by its byte budget is not the end of the log.
            page.rows = if full { REPLAY_PAGE } else { read };
            if page.skipped >= CHECKPOINT_AFTER_SKIPPED && log.is_after(page.pos, page.last_sent) {
                write_checkpoint(&mut page.buf, page.pos);
                page.last_sent = page.pos;
                page.skipped = 0;
            }
            Ok(page)
        })
    }

    /// Appends queued frames newer than `pos`, then advances `pos` to the
    /// hub position read before the drain (everything up to it is handled).
    fn write_frames(&mut self, buf: &mut BytesMut, frames: &mut Vec<Frame>, hub_pos: Option<Uuid>) {
        let log = self.state.log.clone();
        let now = now_ms();
        for f in frames.drain(..) {
            if log.is_after(f.id, self.pos) {
                self.state.metrics.delivered(f.committed_ms, now);
                buf.put_slice(&f.bytes);
                self.pos = f.id;
                self.last_sent = f.id;
                self.sent_seq = self.sent_seq.max(f.seq);
            }
        }
        if let Some(p) = hub_pos {
            if log.is_after(p, self.pos) {
                self.pos = p;
            }
        }
    }

    /// Drains the live queue into one chunk (at most [`MAX_DRAIN_BYTES`]
    /// of frames; `more` says whether frames were left). None ends the stream.
    fn drain_live(&mut self, tick: bool) -> Option<Bytes> {
        // Position first, queue second: every matching event up to the
        // position is then in what we drain (or was drained before) — when
        // the drain emptied the queue. A partial drain leaves some of them
        // queued, so the position is forgotten until a drain empties it.
        let mut p = self.state.hub.position();
        let mut frames = std::mem::take(&mut self.spare);
        self.more = false;
        match self.sub.drain(&mut frames, MAX_DRAIN_BYTES) {
            Drained::Frames => {}
            Drained::Partial => {
                self.more = true;
                p = None;
            }
            Drained::Overflowed => {
                tracing::info!(key = %self.key.name, "slow subscriber disconnected: its queue exceeded the bound");
                self.end(Disconnect::Slow);
                return None;
            }
            Drained::Ended => {
                let why = if self.state.shutdown.is_cancelled() {
                    Disconnect::Shutdown
                } else {
                    Disconnect::HubEnded
                };
                self.end(why);
                return None;
            }
        }
        // Fast path: exactly one new frame and nothing else to say.
        let log = &self.state.log;
        if !tick && frames.len() == 1 && log.is_after(frames[0].id, self.pos) {
            let f = frames.pop()?;
            self.state.metrics.delivered(f.committed_ms, now_ms());
            self.pos = f.id;
            self.last_sent = f.id;
            self.sent_seq = self.sent_seq.max(f.seq);
            if let Some(p) = p {
                if log.is_after(p.id, self.pos) {
                    self.pos = p.id;
                }
            }
            self.spare = frames;
            return Some(f.bytes);
        }
        let mut buf =
            BytesMut::with_capacity(frames.iter().map(|f| f.bytes.len()).sum::<usize>() + 64);
        self.write_frames(&mut buf, &mut frames, p.map(|p| p.id));
        self.spare = frames;
        if let Some(p) = p {
            let skipped = p.seq.saturating_sub(self.sent_seq);
            if self.state.log.is_after(self.pos, self.last_sent)
                && (tick || skipped >= CHECKPOINT_AFTER_SKIPPED)
            {
                write_checkpoint(&mut buf, self.pos);
                self.last_sent = self.pos;
                self.sent_seq = p.seq;
            }
        }
        if tick {
            write_comment(&mut buf, " keepalive");
        }
        Some(buf.freeze())
    }
}

/// The 410 problem as an `error` event (no `id:`, so the client's
/// Last-Event-ID stays where it was): sent when retention pruned events
/// after the stream's position while it replayed. The client's reconnect
/// then gets the HTTP 410 itself.
fn gone_frame(floor: Uuid) -> Bytes {
    let p = Problem::gone(format!(
        "events after this stream's position were pruned by retention while it replayed (oldest resumable position {floor}); reconnect without a cursor to resync from now"
    ));
    let json = serde_json::to_string(&p).unwrap_or_else(|_| String::from("{\"status\":410}"));
    let mut b = BytesMut::with_capacity(json.len() + 24);
    write_error_event(&mut b, &json);
    b.freeze()
}

/// Maps a store failure on the request path to a logged 500.
pub(crate) fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "event log failure");
    Problem::internal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_first_event_does_not_reserve_a_page_of_huge_events() {
        assert_eq!(page_reserve(100), REPLAY_PAGE * 180);
        assert_eq!(page_reserve(10 << 20), 1 << 20);
        assert_eq!(page_reserve(usize::MAX), 1 << 20);
    }
}
