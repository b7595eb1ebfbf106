//! Live fan-out: one task reads committed batches from the bus and hands each
//! event's pre-rendered frame to matching subscribers' bounded queues.
//!
//! Design (why it is shaped like this):
//! - **One reader of the bus.** Only the hub task holds a bus receiver; on
//!   `Lagged` it re-reads the missed range from the event log, so no event is
//!   ever skipped. No per-subscriber broadcast receivers, no per-subscriber
//!   database queries on the live path.
//! - **Render once.** Each event's SSE frame is built once into a shared
//!   [`Bytes`]; subscribers get reference-counted clones.
//! - **Indexed subscribers.** Each subscriber is indexed under one dimension
//!   of its filter (exact sources + prefixes, else tags, else types, else the
//!   "all" list), so an event only visits candidates, each at most once
//!   (a per-slot mark), and is then checked against the full filter.
//! - **Bounded queues.** A subscriber's queue is bounded in bytes. When a push
//!   would exceed it, the queue is dropped and marked *overflowed*; the
//!   connection decides what that means (replaying: re-read from the log;
//!   live: disconnect, the client resumes with `Last-Event-ID`). The hub never
//!   waits on a subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use livestrom_engine::bus::{Live, LiveFeed};
use livestrom_engine::log::{LogError, ReadScope};
use livestrom_engine::{CommittedEvent, EventLog, SourceType, StreamEvent};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::filter::{Filter, Lowered};

/// Default bound of one subscriber's queue, in bytes of queued frames.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// Rows per log read when the hub catches up after `Lagged`.
const CATCH_UP_PAGE: usize = 2048;

/// First and longest wait between attempts of a catch-up read that failed.
const CATCH_UP_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Handle to the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// The hub is gone (its bus closed or the server is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the live feed has stopped (server shutting down)")]
pub struct HubClosed;

/// One event's frame as queued for a subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Event id (for hand-over de-duplication and checkpoints).
    pub id: Uuid,
    /// The hub's sequence number of the event (counts every fanned-out event).
    pub seq: u64,
    /// `id: …\nevent: …\ndata: …\n\n`, shared by every subscriber.
    pub bytes: Bytes,
}

/// How far the hub has fanned out: every event up to `id` has been offered
/// to every subscriber registered at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The newest fanned-out event id.
    pub id: Uuid,
    /// Its sequence number.
    pub seq: u64,
}

/// Outcome of draining a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Frames (possibly none) were moved out.
    Frames,
    /// The queue exceeded its byte bound since the last rearm; frames were dropped.
    Overflowed,
    /// The hub stopped; no more live events will come.
    Ended,
}

/// A registered subscriber; deregisters on drop.
pub struct Subscription {
    hub: Arc<HubInner>,
    slot: u32,
    sub: Arc<Subscriber>,
}

struct HubInner {
    registry: Mutex<Registry>,
    /// Last fanned-out event; written after the enqueues of that event, so a
    /// reader that loads it and then drains its queue has seen every
    /// matching event up to it.
    position: Mutex<Option<Position>>,
    queue_limit: AtomicUsize,
    closed: AtomicBool,
}

/// A subscriber's shared half: its filter and its queue.
struct Subscriber {
    filter: Arc<Filter>,
    queue: Mutex<Queue>,
    notify: Notify,
}

struct Queue {
    frames: Vec<Frame>,
    bytes: usize,
    limit: usize,
    overflowed: bool,
    ended: bool,
    /// Set by the first successful drain (the connection is live): an
    /// overflow from then on disconnects, so the hub deregisters at once.
    live: bool,
}

/// Where a subscriber is indexed (derived from its filter).
enum IndexKeys {
    Sources,
    Tags,
    Types,
    All,
}

struct Slot {
    sub: Arc<Subscriber>,
    /// Sequence number of the last event that visited this slot (de-duplicates
    /// a subscriber indexed under several keys an event hits).
    mark: u64,
}

#[derive(Default)]
struct Registry {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    count: usize,
    all: Vec<u32>,
    by_source: HashMap<String, Vec<u32>>,
    by_prefix: HashMap<String, Vec<u32>>,
    by_tag: HashMap<String, Vec<u32>>,
    by_type: [Vec<u32>; 4],
}

impl Hub {
    /// Starts the hub task on `bus`; it re-reads from `log` if it ever lags.
    ///
    /// The hub starts after the log's head: every event committed from now
    /// on is fanned out, whatever its id's timestamp (ids follow commit
    /// order, not the wall clock, so a clock stepped back cannot hide them).
    pub async fn start(
        feed: &dyn LiveFeed,
        log: Arc<dyn EventLog>,
        cancel: CancellationToken,
    ) -> Result<Self, LogError> {
        // Receiver first, head second: an event committed in between is at
        // or below the head and skipped, which is harmless — nobody can have
        // subscribed before this returns.
        let rx = feed.follow();
        let head_log = log.clone();
        let head = tokio::task::spawn_blocking(move || head_log.head()).await??;
        let inner = Arc::new(HubInner {
            registry: Mutex::new(Registry::default()),
            position: Mutex::new(None),
            queue_limit: AtomicUsize::new(DEFAULT_QUEUE_BYTES),
            closed: AtomicBool::new(false),
        });
        let task = HubTask {
            inner: inner.clone(),
            log,
            last: head.unwrap_or(Uuid::nil()),
            seq: 0,
        };
        tokio::spawn(task.run(rx, cancel));
        Ok(Self { inner })
    }

    /// Registers a subscriber. Its queue collects every matching event the
    /// hub fans out from now on.
    pub fn subscribe(&self, filter: Arc<Filter>) -> Result<Subscription, HubClosed> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(HubClosed);
        }
        let sub = Arc::new(Subscriber {
            filter,
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                bytes: 0,
                limit: self.inner.queue_limit.load(Ordering::Relaxed),
                overflowed: false,
                ended: false,
                live: false,
            }),
            notify: Notify::new(),
        });
        let slot = lock(&self.inner.registry).insert(sub.clone());
        // Re-check after inserting: the task marks `closed` before ending
        // every registered queue, so either we see it or our queue is ended.
        if self.inner.closed.load(Ordering::Acquire) {
            lock(&self.inner.registry).remove(slot, &sub);
            return Err(HubClosed);
        }
        Ok(Subscription {
            hub: self.inner.clone(),
            slot,
            sub,
        })
    }

    /// The newest event fanned out so far (None before the first).
    pub fn position(&self) -> Option<Position> {
        *lock(&self.inner.position)
    }

    /// Sets the byte bound of queues registered from now on.
    pub fn set_queue_limit(&self, bytes: usize) {
        self.inner
            .queue_limit
            .store(bytes.max(1), Ordering::Relaxed);
    }

    /// Number of registered subscribers.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.registry).count
    }
}

impl Subscription {
    /// Resolves when frames were queued (or the queue overflowed or ended)
    /// since the last drain. May resolve spuriously; always drain after it.
    pub async fn notified(&self) {
        self.sub.notify.notified().await;
    }

    /// Moves all queued frames into `out` (which should be empty) in one
    /// lock. From the first successful drain on the subscriber counts as
    /// live: a later overflow deregisters it from the hub immediately.
    pub fn drain(&self, out: &mut Vec<Frame>) -> Drained {
        let mut q = lock(&self.sub.queue);
        if q.ended {
            return Drained::Ended;
        }
        if q.overflowed {
            return Drained::Overflowed;
        }
        std::mem::swap(&mut q.frames, out);
        q.bytes = 0;
        q.live = true;
        Drained::Frames
    }

    /// Clears an overflow (and anything queued): the queue collects again
    /// from now on. Used while replaying, before reading more from the log.
    pub fn rearm(&self) {
        let mut q = lock(&self.sub.queue);
        q.overflowed = false;
        q.frames.clear();
        q.bytes = 0;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.registry).remove(self.slot, &self.sub);
    }
}

impl Subscriber {
    /// Queues a frame; never blocks beyond the queue's own short lock.
    /// Returns true when the subscriber overflowed while live: the hub then
    /// drops it from the index (its connection ends at its next poll).
    fn push(&self, frame: &Frame) -> bool {
        let mut q = lock(&self.queue);
        if q.overflowed || q.ended {
            return false;
        }
        let len = frame.bytes.len();
        // An empty queue takes any one frame, however large (an html page
        // can be bigger than the bound): the bound is on what piles up.
        if q.bytes > 0 && q.bytes + len > q.limit {
            q.overflowed = true;
            q.frames = Vec::new();
            q.bytes = 0;
            let live = q.live;
            drop(q);
            self.notify.notify_one();
            return live;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push(frame.clone());
        q.bytes += len;
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
        false
    }

    fn end(&self) {
        lock(&self.queue).ended = true;
        self.notify.notify_one();
    }
}

fn index_keys(f: &Filter) -> IndexKeys {
    if !f.sources.is_empty() || !f.prefixes.is_empty() {
        IndexKeys::Sources
    } else if !f.tags.is_empty() {
        IndexKeys::Tags
    } else if !f.types.is_empty() {
        IndexKeys::Types
    } else {
        IndexKeys::All
    }
}

fn remove_from(list: &mut Vec<u32>, slot: u32) {
    if let Some(i) = list.iter().position(|s| *s == slot) {
        list.swap_remove(i);
    }
}

fn remove_keyed(map: &mut HashMap<String, Vec<u32>>, key: &str, slot: u32) {
    if let Some(list) = map.get_mut(key) {
        remove_from(list, slot);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

impl Registry {
    fn insert(&mut self, sub: Arc<Subscriber>) -> u32 {
        let f = sub.filter.clone();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(Slot { sub, mark: 0 });
                s
            }
            None => {
                self.slots.push(Some(Slot { sub, mark: 0 }));
                (self.slots.len() - 1) as u32
            }
        };
        self.count += 1;
        match index_keys(&f) {
            IndexKeys::Sources => {
                for s in &f.sources {
                    self.by_source.entry(s.clone()).or_default().push(slot);
                }
                for p in &f.prefixes {
                    self.by_prefix.entry(p.clone()).or_default().push(slot);
                }
            }
            IndexKeys::Tags => {
                for t in &f.tags {
                    self.by_tag.entry(t.clone()).or_default().push(slot);
                }
            }
            IndexKeys::Types => {
                for t in &f.types {
                    self.by_type[t.as_index()].push(slot);
                }
            }
            IndexKeys::All => self.all.push(slot),
        }
        slot
    }

    /// Removes `sub` from `slot` (no-op when the slot was already freed and
    /// perhaps reused by another subscriber).
    fn remove(&mut self, slot: u32, sub: &Arc<Subscriber>) {
        let Some(cell) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if !cell.as_ref().is_some_and(|s| Arc::ptr_eq(&s.sub, sub)) {
            return;
        }
        let Some(entry) = cell.take() else {
            return;
        };
        let f = &entry.sub.filter;
        match index_keys(f) {
            IndexKeys::Sources => {
                for s in &f.sources {
                    remove_keyed(&mut self.by_source, s, slot);
                }
                for p in &f.prefixes {
                    remove_keyed(&mut self.by_prefix, p, slot);
                }
            }
            IndexKeys::Tags => {
                for t in &f.tags {
                    remove_keyed(&mut self.by_tag, t, slot);
                }
            }
            IndexKeys::Types => {
                for t in &f.types {
                    remove_from(&mut self.by_type[t.as_index()], slot);
                }
            }
            IndexKeys::All => remove_from(&mut self.all, slot),
        }
        self.free.push(slot);
        self.count -= 1;
    }

    /// Offers one event to every candidate subscriber.
    fn fan_out(&mut self, ev: &CommittedEvent, seq: u64) {
        let Registry {
            slots,
            all,
            by_source,
            by_prefix,
            by_tag,
            by_type,
            ..
        } = self;
        let e = &ev.event;
        let mut cx = Offer {
            ev,
            seq,
            frame: None,
            lowered: None,
            dead: Vec::new(),
        };
        for &s in all.iter() {
            cx.visit(slots, s);
        }
        for &s in &by_type[e.source_type.as_index()] {
            cx.visit(slots, s);
        }
        if let Some(list) = by_source.get(e.source_id.as_str()) {
            for &s in list {
                cx.visit(slots, s);
            }
        }
        if !by_prefix.is_empty() {
            for (i, b) in e.source_id.bytes().enumerate() {
                if b == b'.' {
                    if let Some(list) = by_prefix.get(&e.source_id[..=i]) {
                        for &s in list {
                            cx.visit(slots, s);
                        }
                    }
                }
            }
        }
        if !by_tag.is_empty() {
            for t in &e.tags {
                if let Some(list) = by_tag.get(t.as_str()) {
                    for &s in list {
                        cx.visit(slots, s);
                    }
                }
            }
        }
        for (slot, sub) in cx.dead {
            self.remove(slot, &sub);
        }
    }
}

/// One event being offered: its frame and lowercased text, built on first need.
struct Offer<'a> {
    ev: &'a CommittedEvent,
    seq: u64,
    frame: Option<Frame>,
    lowered: Option<Lowered>,
    /// Live subscribers that overflowed on this event (deregistered after it).
    dead: Vec<(u32, Arc<Subscriber>)>,
}

impl Offer<'_> {
    fn visit(&mut self, slots: &mut [Option<Slot>], s: u32) {
        let Some(Some(slot)) = slots.get_mut(s as usize) else {
            return;
        };
        if slot.mark == self.seq {
            return;
        }
        slot.mark = self.seq;
        let f = &slot.sub.filter;
        let e = &self.ev.event;
        if !f.matches_source(&e.source_id, e.source_type)
            || !f.matches_tags(e.tags.iter().map(String::as_str))
        {
            return;
        }
        if !f.keywords.is_empty() {
            let l = self
                .lowered
                .get_or_insert_with(|| Lowered::new(&e.title, &e.content));
            if !f.matches_keywords(l) {
                return;
            }
        }
        let ev = self.ev;
        let seq = self.seq;
        let frame = self.frame.get_or_insert_with(|| Frame {
            id: ev.event.id,
            seq,
            bytes: render_event(ev.event.id, ev.event.source_type, &ev.json),
        });
        if slot.sub.push(frame) {
            self.dead.push((s, slot.sub.clone()));
        }
    }
}

/// Renders one event frame: `id: <id>\nevent: <type>\ndata: <json>\n\n`.
/// `json` is one line (serde_json never emits raw newlines), so feed text
/// can only ever appear inside `data:`.
pub fn render_event(id: Uuid, source_type: SourceType, json: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 72);
    write_event(&mut b, id, source_type, json);
    b.freeze()
}

/// Appends one event frame to `b` (see [`render_event`]).
pub fn write_event(b: &mut BytesMut, id: Uuid, source_type: SourceType, json: &str) {
    let mut idbuf = [0u8; 36];
    b.put_slice(b"id: ");
    b.put_slice(id.hyphenated().encode_lower(&mut idbuf).as_bytes());
    b.put_slice(b"\nevent: ");
    b.put_slice(source_type.as_str().as_bytes());
    b.put_slice(b"\ndata: ");
    // Defence in depth: a stray CR/LF would end the data line early.
    if json.bytes().any(|c| c == b'\n' || c == b'\r') {
        b.put_slice(json.replace(['\n', '\r'], " ").as_bytes());
    } else {
        b.put_slice(json.as_bytes());
    }
    b.put_slice(b"\n\n");
}

/// Appends an id-only frame (`id: <id>\n\n`): it dispatches no event but
/// moves the client's last-event-id forward.
pub fn write_checkpoint(b: &mut BytesMut, id: Uuid) {
    let mut idbuf = [0u8; 36];
    b.put_slice(b"id: ");
    b.put_slice(id.hyphenated().encode_lower(&mut idbuf).as_bytes());
    b.put_slice(b"\n\n");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (queues, index lists); carrying on is safe.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The task owning the bus receiver.
struct HubTask {
    inner: Arc<HubInner>,
    log: Arc<dyn EventLog>,
    /// Newest event fanned out (or the start floor): events at or below it
    /// are skipped, which de-duplicates a catch-up against the bus.
    last: Uuid,
    seq: u64,
}

impl HubTask {
    async fn run(mut self, mut rx: BoxStream<'static, Live>, cancel: CancellationToken) {
        loop {
            let r = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = rx.next() => r,
            };
            match r {
                Some(Live::Batch(batch)) => self.process(batch.iter().map(|e| &**e)),
                Some(Live::Lagged(n)) => {
                    tracing::warn!(
                        missed_batches = n,
                        "hub lagged behind the bus; re-reading from the log"
                    );
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        () = self.catch_up_until_done() => {}
                    }
                }
                None => break,
            }
        }
        self.inner.closed.store(true, Ordering::Release);
        for s in self.registered() {
            s.end();
        }
        tracing::debug!("hub stopped");
    }

    /// Every subscriber registered right now.
    fn registered(&self) -> Vec<Arc<Subscriber>> {
        lock(&self.inner.registry)
            .slots
            .iter()
            .flatten()
            .map(|s| s.sub.clone())
            .collect()
    }

    /// Catches up with the log, retrying a failed read with backoff until it
    /// succeeds (or the task is cancelled by the caller's `select!`). The
    /// hub never gives up: a log that fails once must not end live delivery
    /// for the life of the process. On the first failure of an episode the
    /// streams registered at that moment are ended — they cannot be served
    /// without a gap until the read succeeds, and their clients resume from
    /// the last id they saw; streams that register meanwhile wait.
    async fn catch_up_until_done(&mut self) {
        let mut wait = CATCH_UP_RETRY.0;
        let mut failures = 0u32;
        loop {
            match self.catch_up().await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            "hub caught up with the log; live delivery resumed"
                        );
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        let subs = self.registered();
                        tracing::error!(
                            error = %e,
                            streams = subs.len(),
                            "hub catch-up read failed; ending live streams (clients resume) and retrying"
                        );
                        for s in subs {
                            s.end();
                        }
                    } else {
                        tracing::warn!(error = %e, failures, retry_in = ?wait, "hub catch-up read failed again");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(CATCH_UP_RETRY.1);
                }
            }
        }
    }

    fn process<'a>(&mut self, events: impl Iterator<Item = &'a CommittedEvent>) {
        let mut newest = None;
        for ev in events {
            if ev.event.id <= self.last {
                continue;
            }
            self.seq += 1;
            self.last = ev.event.id;
            // Locked per event so registrations wait at most one event's fan-out.
            lock(&self.inner.registry).fan_out(ev, self.seq);
            newest = Some(Position {
                id: ev.event.id,
                seq: self.seq,
            });
        }
        if let Some(p) = newest {
            *lock(&self.inner.position) = Some(p);
        }
    }

    /// Re-reads everything after `last` from the log until it is exhausted.
    /// A row that does not decode is reported and skipped (it cannot be
    /// offered to filters; replays still send its stored text).
    async fn catch_up(&mut self) -> Result<(), LogError> {
        loop {
            let log = self.log.clone();
            let after = self.last;
            let rows = tokio::task::spawn_blocking(move || {
                log.read_after(after, CATCH_UP_PAGE, &ReadScope::default())
            })
            .await??;
            let n = rows.len();
            let newest = rows.last().map(|r| r.id);
            let mut events = Vec::with_capacity(n);
            for row in rows {
                match serde_json::from_str::<StreamEvent>(&row.json) {
                    Ok(event) => events.push(CommittedEvent {
                        event,
                        json: row.json,
                    }),
                    Err(e) => {
                        tracing::error!(event = %row.id, source = %row.source_id, error = %e, "stored event does not decode; skipped by live delivery");
                    }
                }
            }
            self.process(events.iter());
            // Past a trailing undecodable row too, so the next page starts after it.
            if let Some(id) = newest {
                self.last = self.last.max(id);
            }
            if n < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use livestrom_engine::bus::Batch;
    use livestrom_engine::log::LogRow;
    use livestrom_engine::Bus;

    fn committed(
        id: u128,
        source: &str,
        st: SourceType,
        tags: &[&str],
        title: &str,
    ) -> CommittedEvent {
        let mut g = livestrom_engine::event::IdGenerator::new(Some(Uuid::from_u128(id)));
        let event = StreamEvent {
            id: g.next_at(4_000_000_000_000),
            schema_version: 1,
            source_id: source.into(),
            source_type: st,
            url: "https://example.com/".into(),
            title: title.into(),
            content: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: "i".into(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        };
        CommittedEvent::new(event)
    }

    fn sub(reg: &mut Registry, q: &str) -> (u32, Arc<Subscriber>) {
        let f = crate::filter::parse_query(Some(q), crate::filter::Endpoint::Stream, 20)
            .map(|q| q.filter)
            .unwrap_or_else(|p| panic!("{q}: {}", p.detail));
        let s = Arc::new(Subscriber {
            filter: Arc::new(f),
            ..lone_subscriber(1 << 20, false)
        });
        (reg.insert(s.clone()), s)
    }

    fn count(s: &Subscriber) -> usize {
        lock(&s.queue).frames.len()
    }

    #[test]
    fn index_routes_each_event_to_matching_subscribers_once() {
        let mut reg = Registry::default();
        let (_, all) = sub(&mut reg, "");
        let (_, both) = sub(&mut reg, "source=a.b&source=a.*");
        let (_, tags) = sub(&mut reg, "tag=x&tag=y");
        let (_, ty) = sub(&mut reg, "source_type=html");
        let (_, kw) = sub(&mut reg, "keyword=%C3%A5r");
        let (slot, gone) = sub(&mut reg, "");
        reg.remove(slot, &gone);
        let e1 = committed(1, "a.b", SourceType::Rss, &["x", "y"], "ÅR");
        reg.fan_out(&e1, 1);
        let e2 = committed(2, "ab", SourceType::Html, &[], "nothing");
        reg.fan_out(&e2, 2);
        assert_eq!(count(&all), 2);
        assert_eq!(count(&both), 1);
        assert_eq!(count(&tags), 1);
        assert_eq!(count(&ty), 1);
        assert_eq!(count(&kw), 1);
        assert_eq!(count(&gone), 0);
        assert_eq!(reg.count, 5);
        // The frame is rendered once and shared.
        let a = lock(&all.queue).frames[0].bytes.as_ptr();
        let b = lock(&both.queue).frames[0].bytes.as_ptr();
        assert_eq!(a, b);
    }

    /// A subscriber outside any registry, with a queue bound of `limit` bytes.
    fn lone_subscriber(limit: usize, live: bool) -> Subscriber {
        Subscriber {
            filter: Arc::new(Filter::default()),
            queue: Mutex::new(Queue {
                frames: Vec::new(),
                bytes: 0,
                limit,
                overflowed: false,
                ended: false,
                live,
            }),
            notify: Notify::new(),
        }
    }

    #[test]
    fn overflow_drops_the_queue_and_rearm_restarts_it() {
        let s = lone_subscriber(100, false);
        let f = Frame {
            id: Uuid::nil(),
            seq: 1,
            bytes: Bytes::from(vec![b'x'; 60]),
        };
        s.push(&f);
        s.push(&f);
        let q = lock(&s.queue);
        assert!(q.overflowed && q.frames.is_empty() && q.bytes == 0);
    }

    #[test]
    fn one_frame_larger_than_the_bound_fits_an_empty_queue() {
        let s = lone_subscriber(100, true);
        let big = Frame {
            id: Uuid::nil(),
            seq: 1,
            bytes: Bytes::from(vec![b'x'; 500]),
        };
        assert!(!s.push(&big), "a big frame alone is not an overflow");
        assert_eq!(lock(&s.queue).frames.len(), 1);
        // Anything on top of it is.
        assert!(s.push(&big));
        assert!(lock(&s.queue).overflowed);
    }

    #[test]
    fn live_overflow_deregisters_but_replay_overflow_does_not() {
        let mut reg = Registry::default();
        let (_, replaying) = sub(&mut reg, "");
        let (_, live) = sub(&mut reg, "");
        for s in [&replaying, &live] {
            lock(&s.queue).limit = 1;
        }
        lock(&live.queue).live = true;
        // The first frame fits the empty queues; the second overflows them.
        let e = committed(1, "a", SourceType::Rss, &[], "t");
        reg.fan_out(&e, 1);
        assert_eq!(reg.count, 2);
        let e = committed(2, "a", SourceType::Rss, &[], "t");
        reg.fan_out(&e, 2);
        assert_eq!(reg.count, 1);
        assert_eq!(reg.all.len(), 1);
        assert!(lock(&replaying.queue).overflowed && lock(&live.queue).overflowed);
    }

    /// An in-memory event log whose next reads can be made to fail.
    #[derive(Default)]
    struct MemLog {
        rows: Mutex<Vec<LogRow>>,
        fail_reads: AtomicUsize,
    }

    impl MemLog {
        /// Appends `ev` as committed and returns it as the bus would carry it.
        fn commit(&self, ev: CommittedEvent) -> Arc<CommittedEvent> {
            self.append_raw(ev.event.id, &ev.event.source_id, ev.json.clone());
            Arc::new(ev)
        }

        fn append_raw(&self, id: Uuid, source: &str, json: Arc<str>) {
            lock(&self.rows).push(LogRow {
                id,
                source_id: source.into(),
                source_type: SourceType::Rss,
                json,
            });
        }
    }

    impl EventLog for MemLog {
        fn read_after(
            &self,
            after: Uuid,
            limit: usize,
            _scope: &ReadScope,
        ) -> Result<Vec<LogRow>, LogError> {
            if self
                .fail_reads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(LogError::Corrupt("injected read failure".into()));
            }
            Ok(lock(&self.rows)
                .iter()
                .filter(|r| r.id > after)
                .take(limit)
                .cloned()
                .collect())
        }
        fn retention_floor(&self) -> Uuid {
            Uuid::nil()
        }
        fn head(&self) -> Result<Option<Uuid>, LogError> {
            Ok(lock(&self.rows).last().map(|r| r.id))
        }
        fn pruned_below(&self) -> Result<Uuid, LogError> {
            Ok(Uuid::nil())
        }
        fn watermark(&self) -> Result<Uuid, LogError> {
            Ok(self.head()?.unwrap_or(Uuid::nil()))
        }
    }

    /// Events `1..=n` of source `s`, with increasing ids minted at `ms`.
    fn events_at(
        g: &mut livestrom_engine::event::IdGenerator,
        ms: u64,
        n: usize,
    ) -> Vec<CommittedEvent> {
        (0..n)
            .map(|i| {
                let mut e = committed(1, "s", SourceType::Rss, &[], &format!("e{i}"));
                e.event.id = g.next_at(ms);
                CommittedEvent::new(e.event)
            })
            .collect()
    }

    /// Waits (generously bounded) until `sub` has received `want` or ended;
    /// returns the ids received and whether the queue ended.
    async fn receive_until(sub: &Subscription, want: Uuid) -> (Vec<Uuid>, bool) {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut frames = Vec::new();
            match sub.drain(&mut frames) {
                Drained::Ended => return (got, true),
                Drained::Overflowed => panic!("queue overflowed"),
                Drained::Frames => got.extend(frames.iter().map(|f| f.id)),
            }
            if got.contains(&want) {
                return (got, false);
            }
            if tokio::time::timeout_at(deadline, sub.notified())
                .await
                .is_err()
            {
                panic!("nothing more arrived; got {got:?}");
            }
        }
    }

    /// A hub started on an in-memory log and a bus of `capacity` batches.
    struct Rig {
        bus: Bus,
        log: Arc<MemLog>,
        hub: Hub,
        cancel: CancellationToken,
        ids: livestrom_engine::event::IdGenerator,
        now_ms: u64,
    }

    impl Rig {
        async fn start(capacity: usize, failing_reads: usize) -> Self {
            let bus = Bus::with_capacity(capacity);
            let log = Arc::new(MemLog::default());
            log.fail_reads.store(failing_reads, Ordering::SeqCst);
            let cancel = CancellationToken::new();
            let hub = Hub::start(&bus, log.clone(), cancel.clone())
                .await
                .expect("start");
            Self {
                bus,
                log,
                hub,
                cancel,
                ids: livestrom_engine::event::IdGenerator::new(None),
                now_ms: Utc::now().timestamp_millis() as u64,
            }
        }

        fn subscribe(&self) -> Subscription {
            self.hub
                .subscribe(Arc::new(Filter::default()))
                .expect("the hub accepts streams")
        }

        /// Commits `n` events minted at `ms` to the log and announces each
        /// in its own batch; returns their ids.
        fn commit_and_publish(&mut self, ms: u64, n: usize) -> Vec<Uuid> {
            let mut ids = Vec::new();
            for e in events_at(&mut self.ids, ms, n) {
                let e = self.log.commit(e);
                ids.push(e.event.id);
                self.bus.publish(Batch::from(vec![e]));
            }
            ids
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    #[tokio::test]
    async fn a_failed_catch_up_read_is_retried_and_live_delivery_goes_on() {
        let mut rig = Rig::start(4, 1).await;
        let before = rig.subscribe();
        // Ten batches while the hub task cannot run (one thread): it lags.
        rig.commit_and_publish(rig.now_ms, 10);
        // The catch-up read fails once: the streams open then are ended (they
        // resume from their last id) ...
        let (_, ended) = receive_until(&before, Uuid::max()).await;
        assert!(ended, "the stream registered during the failure is ended");
        // ... but the hub lives on: a new stream gets what follows, live.
        let after = rig.subscribe();
        let live_id = rig.commit_and_publish(rig.now_ms + 1, 1)[0];
        let (got, ended) = receive_until(&after, live_id).await;
        assert!(!ended);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        assert_eq!(got.last(), Some(&live_id));
    }

    #[tokio::test]
    async fn a_stored_row_that_does_not_decode_is_skipped_not_fatal() {
        let mut rig = Rig::start(2, 0).await;
        let sub = rig.subscribe();
        let mut want = rig.commit_and_publish(rig.now_ms, 3);
        // Stored but unreadable (and never announced: the catch-up must read it).
        let bad = rig.ids.next_at(rig.now_ms);
        rig.log.append_raw(bad, "s", Arc::from("{not json"));
        want.extend(rig.commit_and_publish(rig.now_ms, 5));
        let last = *want.last().expect("events");
        let (got, ended) = receive_until(&sub, last).await;
        assert!(!ended, "one bad row must not end the streams");
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn the_hub_starts_after_the_log_head_not_the_clock() {
        // An idle, empty log and a clock that stepped back: the next commit's
        // id is two minutes older than "now".
        let mut rig = Rig::start(4096, 0).await;
        let sub = rig.subscribe();
        let id = rig.commit_and_publish(rig.now_ms - 120_000, 1)[0];
        let (got, _) = receive_until(&sub, id).await;
        assert_eq!(got, vec![id]);
    }

    #[test]
    fn frames_keep_feed_text_inside_data() {
        let e = committed(1, "a", SourceType::Rss, &[], "x\n\nid: 9");
        let b = render_event(e.event.id, SourceType::Rss, &e.json);
        let text = String::from_utf8_lossy(&b);
        assert_eq!(text.matches('\n').count(), 4, "{text}");
        assert!(text.starts_with(&format!("id: {}\nevent: rss\ndata: {{", e.event.id)));
        let b = render_event(e.event.id, SourceType::Rss, "{\"a\":\"x\r\nid: 9\"}");
        assert_eq!(String::from_utf8_lossy(&b).matches('\n').count(), 4);
    }
}
