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
//!   subjects when it maps to at most [`MAX_FILTER_SUBJECTS`] of them, then
//!   fetched without waiting in batches until `limit` rows or the end of the
//!   stream. Rows are also checked against the scope in process, so a scope
//!   that does not map (too many subjects) is filtered here.
//! - Ids are put into the stored bodies ([`wire::with_id`]) from each
//!   message's sequence and timestamp; live delivery (`live.rs`) computes
//!   the same ids from the same messages.
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

use super::cursor::{self, Position, SequenceTooLarge, StreamTag};
use super::wire::{self, Names, NotAnEvent};
use super::Cluster;
use crate::event::SourceType;
use crate::log::{CursorCheck, EventLog, LogError, LogRow, ReadScope, CURSOR_CLOCK_SKEW};

/// Most filter subjects one read consumer gets; a scope that needs more is
/// pushed down coarser (by source only, or by type only) and filtered here.
pub const MAX_FILTER_SUBJECTS: usize = 64;

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
    async fn read(
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
        let info = stream_info(&self.inner.cluster)
            .await
            .map_err(unavailable)?;
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

/// The consumer filter of a read: subjects, and whether they express the
/// scope exactly (every message they let through is a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Filter {
    /// Filter subjects; empty = the whole stream.
    pub(super) subjects: Vec<String>,
    /// Whether the subjects are the scope.
    pub(super) exact: bool,
}

impl Filter {
    /// The finest filter of at most [`MAX_FILTER_SUBJECTS`] subjects for
    /// `scope`: types × sources, else sources of any type, else types, else
    /// everything. Subjects never overlap (JetStream refuses that): a source
    /// or prefix inside another prefix is left out.
    pub(super) fn of(names: &Names, scope: &ReadScope) -> Self {
        let mut types: Vec<SourceType> = Vec::new();
        for t in &scope.types {
            if !types.contains(t) {
                types.push(*t);
            }
        }
        let ids = id_patterns(scope);
        let by_ids = !scope.sources.is_empty() || !scope.prefixes.is_empty();
        let all_types = types.is_empty() || types.len() == SourceType::ALL.len();
        if by_ids {
            if let Some(ids) = &ids {
                if !all_types && types.len() * ids.len() <= MAX_FILTER_SUBJECTS {
                    let subjects = types
                        .iter()
                        .flat_map(|t| ids.iter().map(|i| names.filter(Some(*t), i)))
                        .collect();
                    return Self {
                        subjects,
                        exact: true,
                    };
                }
                if ids.len() <= MAX_FILTER_SUBJECTS {
                    return Self {
                        subjects: ids.iter().map(|i| names.filter(None, i)).collect(),
                        exact: all_types,
                    };
                }
            }
        }
        if !all_types {
            return Self {
                subjects: types.iter().map(|t| names.type_subjects(*t)).collect(),
                exact: !by_ids,
            };
        }
        Self {
            subjects: Vec::new(),
            exact: !by_ids,
        }
    }
}

/// The source-id part of the filter subjects of `scope`: exact ids and
/// `prefix.>`, none inside another; None when one cannot be a subject
/// (an empty token — no event subject has one, the in-process check then
/// decides).
fn id_patterns(scope: &ReadScope) -> Option<Vec<String>> {
    let mut prefixes: Vec<&str> = scope.prefixes.iter().map(String::as_str).collect();
    prefixes.sort_by_key(|p| p.len());
    let mut kept: Vec<&str> = Vec::new();
    for p in prefixes {
        let stem = p.strip_suffix('.')?;
        if !is_subject_tokens(stem) {
            return None;
        }
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    let mut out: Vec<String> = kept.iter().map(|p| format!("{p}>")).collect();
    for s in &scope.sources {
        if !is_subject_tokens(s) {
            return None;
        }
        if !kept.iter().any(|k| s.starts_with(k)) && !out.contains(s) {
            out.push(s.clone());
        }
    }
    Some(out)
}

/// Dot-separated tokens, none empty, no wildcard or space.
fn is_subject_tokens(s: &str) -> bool {
    s.split('.').all(|t| {
        !t.is_empty()
            && !t
                .bytes()
                .any(|b| matches!(b, b'*' | b'>' | b' ' | b'\t' | b'\r' | b'\n'))
    })
}

/// The scope, checked in process (what the SQL of one node does).
pub(super) fn in_scope(scope: &ReadScope, source_id: &str, source_type: SourceType) -> bool {
    (scope.types.is_empty() || scope.types.contains(&source_type))
        && ((scope.sources.is_empty() && scope.prefixes.is_empty())
            || scope.sources.iter().any(|s| s == source_id)
            || scope
                .prefixes
                .iter()
                .any(|p| source_id.starts_with(p.as_str())))
}

/// A stored message as readers see it: its event id, where it is from and
/// its JSON with the id put in.
pub(super) struct Message<'a> {
    pub(super) id: Uuid,
    pub(super) source_id: &'a str,
    pub(super) source_type: SourceType,
    pub(super) json: String,
}

impl<'a> Message<'a> {
    /// Decodes message `seq` on `subject`, stamped `ms` by the stream.
    pub(super) fn decode(
        names: &Names,
        tag: StreamTag,
        subject: &'a str,
        seq: u64,
        ms: u64,
        payload: &[u8],
    ) -> Result<Self, BadMessage> {
        let (source_type, source_id) = names
            .parse_subject(subject)
            .ok_or_else(|| BadMessage::Subject(subject.to_owned()))?;
        let body = std::str::from_utf8(payload).map_err(|_| BadMessage::Utf8)?;
        let id = cursor::encode(tag, seq, ms)?;
        let json = wire::with_id(body, id)?;
        Ok(Self {
            id,
            source_id,
            source_type,
            json,
        })
    }
}

/// A message of the event stream that is not an event: reported and passed
/// over (a poison message must not stop every reader of the stream).
#[derive(Debug, thiserror::Error)]
pub(super) enum BadMessage {
    /// Not `<prefix>.ev.<type>.<source id>`.
    #[error("subject {0:?} is not an event subject")]
    Subject(String),
    /// The body is not UTF-8.
    #[error("the body is not UTF-8")]
    Utf8,
    /// The body is not a published StreamEvent.
    #[error(transparent)]
    NotAnEvent(#[from] NotAnEvent),
    /// The sequence does not fit an id.
    #[error(transparent)]
    Sequence(#[from] SequenceTooLarge),
    /// The body with its id is not a StreamEvent.
    #[error("the body is not a StreamEvent: {0}")]
    Json(#[from] serde_json::Error),
}

impl BadMessage {
    /// Logs that message `seq` is passed over, and why.
    pub(super) fn report(&self, seq: u64) {
        tracing::error!(sequence = seq, error = %self, "event stream message is not an event; passed over");
    }
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

pub(super) fn unavailable(e: ReadError) -> LogError {
    LogError::Unavailable(Box::new(e))
}

/// Milliseconds since the epoch of a stream timestamp (0 before it).
pub(super) fn ms_of_nanos(nanos: i128) -> u64 {
    u64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(0)
}

/// The timestamp at the start of millisecond `ms`.
fn time_of_ms(ms: u64) -> Result<time::OffsetDateTime, LogError> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| unavailable(ReadError::Time(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(sources: &[&str], prefixes: &[&str], types: &[SourceType]) -> ReadScope {
        ReadScope {
            sources: sources.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            types: types.to_vec(),
        }
    }

    #[test]
    fn scopes_map_to_non_overlapping_filter_subjects() {
        let n = Names::new("L");
        let all = Filter::of(&n, &ReadScope::default());
        assert_eq!(all.subjects, Vec::<String>::new());
        assert!(all.exact);

        let f = Filter::of(&n, &scope(&["a.b", "c", "c"], &["a."], &[]));
        assert_eq!(f.subjects, vec!["L.ev.*.a.>", "L.ev.*.c"]);
        assert!(f.exact);

        let f = Filter::of(
            &n,
            &scope(
                &["c"],
                &["k.s.", "k."],
                &[SourceType::Rss, SourceType::Html],
            ),
        );
        assert_eq!(
            f.subjects,
            vec!["L.ev.rss.k.>", "L.ev.rss.c", "L.ev.html.k.>", "L.ev.html.c"]
        );
        assert!(f.exact);

        let f = Filter::of(&n, &scope(&[], &[], &[SourceType::Json]));
        assert_eq!(f.subjects, vec!["L.ev.json.>"]);
        assert!(f.exact);
    }

    #[test]
    fn a_scope_too_wide_for_subjects_is_pushed_down_coarser() {
        let n = Names::new("L");
        let many: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        // 2 types × 40 sources > 64: by source only, types checked here.
        let f = Filter::of(&n, &scope(&refs, &[], &[SourceType::Rss, SourceType::Json]));
        assert_eq!(f.subjects.len(), 40);
        assert!(f.subjects.iter().all(|s| s.starts_with("L.ev.*.")));
        assert!(!f.exact);
        // 100 sources and a type: by type only.
        let many: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let f = Filter::of(&n, &scope(&refs, &[], &[SourceType::Rss]));
        assert_eq!(f.subjects, vec!["L.ev.rss.>"]);
        assert!(!f.exact);
        // An id that cannot be a subject: the in-process check decides.
        let f = Filter::of(&n, &scope(&["a..b"], &[], &[]));
        assert!(f.subjects.is_empty());
        assert!(!f.exact);
    }

    #[test]
    fn the_in_process_check_is_the_scope() {
        let s = scope(&["x"], &["k."], &[SourceType::Rss]);
        assert!(in_scope(&s, "x", SourceType::Rss));
        assert!(in_scope(&s, "k.a.b", SourceType::Rss));
        assert!(!in_scope(&s, "k", SourceType::Rss));
        assert!(!in_scope(&s, "kx", SourceType::Rss));
        assert!(!in_scope(&s, "x", SourceType::Html));
        assert!(in_scope(&ReadScope::default(), "any", SourceType::Html));
    }

    #[test]
    fn stream_timestamps_become_milliseconds() {
        assert_eq!(ms_of_nanos(1_795_000_000_123_999_999), 1_795_000_000_123);
        assert_eq!(ms_of_nanos(-5), 0);
    }
}
