//! The event log an edge reads in a cluster: [`JetStreamLog`] implements the
//! [`EventLog`] seam on the JetStream stream the engines publish to, so the
//! edge replays, pages and checks cursors exactly as it does on SQLite.
//!
//! How it reads (docs/CLUSTER.md, "Edges: replay and live"):
//! - A cursor is decoded ([`cursor::decode`]): this stream's id → after its
//!   sequence; a time cursor → from the first message stamped at or after
//!   its millisecond (what `id > uuid_floor_at(ms)` means on one node);
//!   another stream's id → [`CursorCheck::Foreign`] (410).
//! - One read is one ephemeral pull consumer (no acks, in memory, deleted
//!   afterwards): created at the start position with the scope as filter
//!   subjects when it maps to at most
//!   [`MAX_FILTER_SUBJECTS`](super::scope::MAX_FILTER_SUBJECTS) of them, then
//!   fetched without waiting in batches until `limit` rows or the end of the
//!   stream. Rows are also checked against the scope in process, so a scope
//!   that does not map (too many subjects) is filtered here.
//! - Ids are put into the stored bodies from each message's sequence and
//!   timestamp (`message.rs`); live delivery (`live.rs`) decodes messages
//!   the same way, so a message has one id on every edge.
//! - Retention: the stream deletes from its start (max age), so "events
//!   after sequence `s` may be gone" is `s + 1 < first sequence`.
//!
//! The trait is blocking: each call runs its requests with
//! [`Handle::block_on`] on the runtime handle given to [`JetStreamLog::new`].
//! Call it from `spawn_blocking` (as the edge does) or a thread outside the
//! runtime — **never from an async task**: tokio panics when a runtime
//! worker blocks on a future.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures::StreamExt;
use tokio::runtime::Handle;
use uuid::Uuid;

use super::cursor::{self, Position, StreamTag};
use super::message::{ms_of_nanos, Message};
use super::scope::{in_scope, Filter};
use super::wire::Names;
use super::Cluster;
use crate::event::SourceType;
use crate::log::{CursorCheck, EventLog, LogError, LogRow, ReadScope, CURSOR_CLOCK_SKEW};
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};

/// Most messages one fetch asks for.
const FETCH_MAX: usize = 2048;
/// Fewest messages one fetch asks for when rows are filtered here (so a
/// selective filter does not fetch one message at a time).
const FETCH_MIN_FILTERED: usize = 256;
/// How long a fetch may go without its next message before the read fails
/// (a fetch that does not wait ends at once unless the server is gone).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// An abandoned consumer (its delete lost) is removed by the server after
/// this long without a fetch.
pub(super) const CONSUMER_IDLE: Duration = Duration::from_secs(30);
/// Waits before a read whose request failed is tried again: 100 ms doubling
/// to 2 s, in the upper half of each step. A replicated stream answers 503
/// while its leader (or a new read consumer's) is being elected.
const READ_RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(2),
    factor: 2,
    jitter: Jitter::EQUAL,
};
/// Failed attempts in a row (with no row read between them) before a read
/// reports the failure: about 4.5–9 s of waits in all.
const READ_ATTEMPTS: u32 = 9;

/// The JetStream stream as an [`EventLog`]. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    /// The runtime the blocking calls run their requests on.
    runtime: Handle,
    /// The last floor read, for the infallible [`EventLog::retention_floor`]
    /// (operator stats only; cursor checks read the stream each time).
    floor: Mutex<Uuid>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("cluster", &self.inner.cluster)
            .finish_non_exhaustive()
    }
}

impl JetStreamLog {
    /// The log of `cluster`'s event stream; its blocking calls run their
    /// requests on `runtime` (the runtime the cluster's client lives on).
    pub fn new(cluster: Cluster, runtime: Handle) -> Self {
        Self {
            inner: Arc::new(Inner {
                cluster,
                runtime,
                floor: Mutex::new(Uuid::nil()),
            }),
        }
    }

    fn tag(&self) -> StreamTag {
        self.inner.cluster.tag()
    }

    fn names(&self) -> &Names {
        self.inner.cluster.names()
    }

    /// Runs `f` to completion on the runtime (see the module doc: never
    /// from an async task).
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.runtime.block_on(f)
    }

    /// Reads up to `limit` rows after `after` in scope, handing each to `f`.
    ///
    /// A JetStream request that fails (a 503 during an election, a lost
    /// connection) is tried again with backoff from after the last row
    /// handed over, so no row is handed twice or skipped; the failure is
    /// reported after [`READ_ATTEMPTS`] in a row that read nothing.
    /// ([`Self::bounds`] retries the same way.)
    async fn read(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        let mut retry = Retry::new();
        let (mut from, mut n) = (after, 0);
        loop {
            let (mut last, mut handed) = (None, 0);
            let result = self
                .read_once(from, limit - n, scope, &mut |id, sid, st, json| {
                    last = Some(id);
                    handed += 1;
                    f(id, sid, st, json);
                })
                .await;
            n += handed;
            let e = match result {
                Ok(_) => return Ok(n),
                Err(e) => e,
            };
            if let Some(id) = last {
                from = id;
                retry = Retry::new();
            }
            retry.after(e).await?;
        }
    }

    /// One attempt of [`Self::read`].
    async fn read_once(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        if limit == 0 {
            return Ok(0);
        }
        let deliver_policy = match cursor::decode(self.tag(), after) {
            Position::AfterSeq(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            Position::AfterTime(0) => DeliverPolicy::All,
            Position::AfterTime(ms) => DeliverPolicy::ByStartTime {
                start_time: time_of_ms(ms)?,
            },
            Position::Foreign(_) => return Err(LogError::Cursor(after)),
        };
        let filter = Filter::of(self.names(), scope);
        let mut config = pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: CONSUMER_IDLE,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        match filter.subjects.as_slice() {
            [] => {}
            [one] => config.filter_subject = one.clone(),
            many => config.filter_subjects = many.to_vec(),
        }
        let js = self.inner.cluster.js();
        let stream = self.names().stream().to_owned();
        let consumer: PullConsumer = js
            .create_consumer_on_stream(config, &stream)
            .await
            .map_err(|e| unavailable(ReadError::js("create a read consumer", e)))?;
        let pending = consumer.cached_info().num_pending;
        let read = self
            .fetch(&consumer, pending, limit, scope, filter.exact, f)
            .await;
        // Not waited for: the server also removes it after CONSUMER_IDLE.
        let name = consumer.cached_info().name.clone();
        let js = js.clone();
        self.inner.runtime.spawn(async move {
            if let Err(e) = js.delete_consumer_from_stream(&name, &stream).await {
                tracing::debug!(consumer = %name, error = %e, "read consumer not deleted; it expires by itself");
            }
        });
        read
    }

    /// Fetches from a read consumer until `limit` rows were handed to `f` or
    /// nothing is pending.
    async fn fetch(
        &self,
        consumer: &PullConsumer,
        mut pending: u64,
        limit: usize,
        scope: &ReadScope,
        exact: bool,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        let mut n = 0;
        while n < limit && pending > 0 {
            let mut want = limit - n;
            if !exact {
                want = want.max(FETCH_MIN_FILTERED);
            }
            let want = want
                .min(FETCH_MAX)
                .min(usize::try_from(pending).unwrap_or(usize::MAX));
            let mut batch = consumer
                .fetch()
                .max_messages(want)
                .messages()
                .await
                .map_err(|e| unavailable(ReadError::js("fetch", e)))?;
            let mut got = 0;
            while n < limit {
                let next = tokio::time::timeout(FETCH_TIMEOUT, batch.next())
                    .await
                    .map_err(|_| unavailable(ReadError::Timeout(FETCH_TIMEOUT)))?;
                let Some(msg) = next else { break };
                let msg = msg.map_err(|e| unavailable(ReadError::js("fetch", e)))?;
                got += 1;
                let info = msg
                    .info()
                    .map_err(|e| unavailable(ReadError::js("read a message's info", e)))?;
                pending = info.pending;
                let ms = ms_of_nanos(info.published.unix_timestamp_nanos());
                match Message::decode(
                    self.names(),
                    self.tag(),
                    &msg.subject,
                    info.stream_sequence,
                    ms,
                    &msg.payload,
                ) {
                    Ok(m) if in_scope(scope, m.source_id, m.source_type) => {
                        f(m.id, m.source_id, m.source_type, &m.json);
                        n += 1;
                    }
                    Ok(_) => {}
                    Err(e) => e.report(info.stream_sequence),
                }
            }
            if got == 0 {
                // Pending but nothing came: deleted meanwhile.
                break;
            }
        }
        Ok(n)
    }

    /// The stream's current bounds, checking it is still the stream this
    /// node's ids were made for.
    async fn bounds(&self) -> Result<Bounds, LogError> {
        let mut retry = Retry::new();
        let info = loop {
            match stream_info(&self.inner.cluster).await {
                Ok(info) => break info,
                Err(e) => retry.after(unavailable(e)).await?,
            }
        };
        let s = &info.state;
        let b = Bounds {
            first_seq: s.first_sequence,
            first_ms: ms_of_nanos(s.first_timestamp.unix_timestamp_nanos()),
            last_seq: s.last_sequence,
            last_ms: ms_of_nanos(s.last_timestamp.unix_timestamp_nanos()),
            messages: s.messages,
            created_ms: ms_of_nanos(info.created.unix_timestamp_nanos()),
        };
        let floor = self.floor_of(&b)?;
        *self
            .inner
            .floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = floor;
        Ok(b)
    }

    /// The oldest resumable position: after the last deleted message (nil
    /// when nothing was ever deleted).
    fn floor_of(&self, b: &Bounds) -> Result<Uuid, LogError> {
        if b.first_seq <= 1 {
            return Ok(Uuid::nil());
        }
        let ms = if b.messages > 0 {
            b.first_ms
        } else {
            b.last_ms
        };
        self.position(b.first_seq - 1, ms)
    }

    fn position(&self, seq: u64, ms: u64) -> Result<Uuid, LogError> {
        cursor::position(self.tag(), seq, ms).map_err(|e| LogError::Corrupt(e.to_string()))
    }

    /// The newest message's id (even if retention deleted it since).
    fn head_of(&self, b: &Bounds) -> Result<Option<Uuid>, LogError> {
        if b.last_seq == 0 {
            return Ok(None);
        }
        self.position(b.last_seq, b.last_ms).map(Some)
    }

    /// Whether events after `pos` may have been deleted: `Some(floor)`.
    fn expired(&self, pos: Position, b: &Bounds) -> Result<Option<Uuid>, LogError> {
        let gone = match pos {
            Position::AfterSeq(seq) => seq.saturating_add(1) < b.first_seq,
            // The newest deleted message is stamped at or before the first
            // retained one (or the last one, when none is retained): a time
            // cursor at or before that may have lost events.
            Position::AfterTime(ms) => {
                b.first_seq > 1
                    && ms
                        <= if b.messages > 0 {
                            b.first_ms
                        } else {
                            b.last_ms
                        }
            }
            Position::Foreign(_) => true,
        };
        if gone {
            self.floor_of(b).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl EventLog for JetStreamLog {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        let mut rows = Vec::with_capacity(limit.min(FETCH_MAX));
        self.read_after_with(after, limit, scope, &mut |id, sid, st, json| {
            rows.push(LogRow {
                id,
                source_id: sid.to_owned(),
                source_type: st,
                json: Arc::from(json),
            });
        })?;
        Ok(rows)
    }

    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        self.block_on(self.read(after, limit, scope, f))
    }

    fn retention_floor(&self) -> Uuid {
        match self.block_on(self.bounds()) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "event stream unreadable; reporting the last retention floor seen")
            }
        }
        *self
            .inner
            .floor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn head(&self) -> Result<Option<Uuid>, LogError> {
        let b = self.block_on(self.bounds())?;
        self.head_of(&b)
    }

    fn pruned_below(&self) -> Result<Uuid, LogError> {
        let b = self.block_on(self.bounds())?;
        self.floor_of(&b)
    }

    /// The newest message's id (the position before the first message on a
    /// stream that never had one): every message at or below it is stored
    /// and readable, every later one has a greater sequence — and positions
    /// are sequences, so the clock plays no part and the watermark stays
    /// resumable for as long as nothing after it is deleted, idle or not.
    fn watermark(&self) -> Result<Uuid, LogError> {
        let b = self.block_on(self.bounds())?;
        match self.head_of(&b)? {
            Some(head) => Ok(head),
            None => self.position(0, b.created_ms),
        }
    }

    /// By sequence when both are this stream's ids (their timestamps come
    /// from the leader's clock and may step back); a time cursor by time.
    fn is_after(&self, id: Uuid, pos: Uuid) -> bool {
        match (
            cursor::decode(self.tag(), id),
            cursor::decode(self.tag(), pos),
        ) {
            (Position::AfterSeq(a), Position::AfterSeq(b)) => a > b,
            _ => id > pos,
        }
    }

    fn check_cursor(&self, cursor: Uuid) -> Result<CursorCheck, LogError> {
        let pos = cursor::decode(self.tag(), cursor);
        if let Position::Foreign(theirs) = pos {
            return Ok(CursorCheck::Foreign {
                why: format!(
                    "it carries stream tag {theirs:#09x}, this stream {} has tag {:#09x}",
                    self.names().stream(),
                    self.tag().get()
                ),
            });
        }
        let b = self.block_on(self.bounds())?;
        let ahead = match pos {
            Position::AfterSeq(seq) => seq > b.last_seq,
            // As on one node: past the clock (with skew) and the newest message.
            Position::AfterTime(ms) => {
                let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
                ms >= now_ms + CURSOR_CLOCK_SKEW.as_millis() as u64 && ms > b.last_ms
            }
            Position::Foreign(_) => false,
        };
        if ahead {
            return Ok(CursorCheck::Ahead {
                head: self.head_of(&b)?,
            });
        }
        Ok(match self.expired(pos, &b)? {
            Some(floor) => CursorCheck::Expired { floor },
            None => CursorCheck::Ok,
        })
    }

    fn missed_after(&self, after: Uuid) -> Result<Option<Uuid>, LogError> {
        let pos = cursor::decode(self.tag(), after);
        if matches!(pos, Position::Foreign(_)) {
            return Err(LogError::Cursor(after));
        }
        let b = self.block_on(self.bounds())?;
        self.expired(pos, &b)
    }
}

/// The event stream's info, read now, after checking it is still the
/// stream this node's ids were made for (its tag).
pub(super) async fn stream_info(
    cluster: &Cluster,
) -> Result<async_nats::jetstream::stream::Info, ReadError> {
    let stream = cluster
        .js()
        .get_stream(cluster.names().stream())
        .await
        .map_err(|e| ReadError::js("read the event stream's info", e))?;
    let info = stream.cached_info().clone();
    let tag = StreamTag::of(&info.config.name, info.created.unix_timestamp_nanos());
    if tag != cluster.tag() {
        return Err(ReadError::Recreated {
            stream: info.config.name.clone(),
            now: tag.get(),
            was: cluster.tag().get(),
        });
    }
    Ok(info)
}

/// The stream's state as cursor checks need it.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    first_seq: u64,
    first_ms: u64,
    last_seq: u64,
    last_ms: u64,
    messages: u64,
    created_ms: u64,
}

/// A failure of a JetStream read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// A request failed.
    #[error("JetStream: cannot {action}: {source}")]
    JetStream {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// The server stopped answering in the middle of a fetch.
    #[error("JetStream: no message for {0:?} in the middle of a fetch")]
    Timeout(Duration),
    /// The stream was deleted and created again: its sequences start over,
    /// so ids this node makes would name the wrong messages.
    #[error("the event stream {stream} was recreated (tag {now:#09x}, this node started with {was:#09x}): restart this node")]
    Recreated {
        /// The stream.
        stream: String,
        /// Its tag now.
        now: u32,
        /// The tag this node's ids carry.
        was: u32,
    },
    /// A time cursor beyond what a timestamp can hold.
    #[error("time cursor at {0} ms is out of range")]
    Time(u64),
}

impl ReadError {
    pub(super) fn js(action: &'static str, source: impl Into<async_nats::Error>) -> Self {
        Self::JetStream {
            action,
            source: source.into(),
        }
    }
}

/// Retries of one request: [`READ_ATTEMPTS`] in a row, [`READ_RETRY`] apart.
struct Retry {
    backoff: Backoff,
    failures: u32,
}

impl Retry {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(READ_RETRY),
            failures: 0,
        }
    }

    /// After a failed attempt: waits before the next one, or gives `e`
    /// back when it will not pass by trying again or the attempts are
    /// used up.
    async fn after(&mut self, e: LogError) -> Result<(), LogError> {
        self.failures += 1;
        if !retryable(&e) || self.failures >= READ_ATTEMPTS {
            return Err(e);
        }
        let wait = self.backoff.next_delay();
        tracing::debug!(error = %e, failures = self.failures, retry_in = ?wait, "event stream request failed; trying again");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// Whether a failed read may succeed when tried again: a request JetStream
/// failed (not a bad cursor, nor a fetch the server stopped answering for
/// [`FETCH_TIMEOUT`]).
fn retryable(e: &LogError) -> bool {
    match e {
        LogError::Unavailable(e) => matches!(
            e.downcast_ref::<ReadError>(),
            Some(ReadError::JetStream { .. })
        ),
        _ => false,
    }
}

pub(super) fn unavailable(e: ReadError) -> LogError {
    LogError::Unavailable(Box::new(e))
}

/// The timestamp at the start of millisecond `ms`.
fn time_of_ms(ms: u64) -> Result<time::OffsetDateTime, LogError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| unavailable(ReadError::Time(ms)))
}
