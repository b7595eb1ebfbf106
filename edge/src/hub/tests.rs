//! Hub tests: the index, queue bounds, frames, and the task against an
//! in-memory log (catch-up failures, undecodable rows, clock steps).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use livestrom_engine::bus::Batch;
use livestrom_engine::cluster::cursor::{self, Position, StreamTag};
use livestrom_engine::log::{LogError, LogRow, ReadScope};
use livestrom_engine::{Bus, CommittedEvent, EventLog, SourceType, StreamEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue::{lock, OverflowSignal, Subscriber};
use super::registry::Registry;
use super::{render_event, Drained, Frame, Hub, Subscription};
use crate::filter::Filter;

fn committed(id: u128, source: &str, st: SourceType, tags: &[&str], title: &str) -> CommittedEvent {
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
    let s = Arc::new(Subscriber::new(Arc::new(f), 1 << 20));
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
    let s = Subscriber::new(Arc::new(Filter::default()), limit);
    lock(&s.queue).live = live;
    s
}

#[test]
fn overflow_drops_the_queue_and_rearm_restarts_it() {
    let s = lone_subscriber(100, false);
    let f = Frame {
        id: Uuid::nil(),
        seq: 1,
        bytes: Bytes::from(vec![b'x'; 60]),
        committed_ms: 0,
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
        committed_ms: 0,
    };
    assert!(!s.push(&big), "a big frame alone is not an overflow");
    assert_eq!(lock(&s.queue).frames.len(), 1);
    // Anything on top of it is.
    assert!(s.push(&big));
    assert!(lock(&s.queue).overflowed);
}

#[tokio::test]
async fn the_overflow_signal_is_set_and_wakes_a_waiting_write_only_when_live() {
    let frame = Frame {
        id: Uuid::nil(),
        seq: 1,
        bytes: Bytes::from(vec![b'x'; 60]),
        committed_ms: 0,
    };
    // Replaying: an overflow is re-read from the log, never a cut-off.
    let replaying = OverflowSignal(Arc::new(lone_subscriber(100, false)));
    replaying.0.push(&frame);
    replaying.0.push(&frame);
    assert!(lock(&replaying.0.queue).overflowed);
    assert!(!replaying.is_set());

    // Live, with a write already waiting on the signal when it is set.
    let live = OverflowSignal(Arc::new(lone_subscriber(100, true)));
    let waiter = tokio::spawn({
        let live = live.clone();
        async move { live.wait().await }
    });
    assert!(!live.is_set());
    live.0.push(&frame);
    assert!(live.0.push(&frame), "a live overflow deregisters");
    assert!(live.is_set());
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiting write is woken")
        .expect("the waiter does not panic");
    // A wait that starts after the overflow returns at once.
    tokio::time::timeout(Duration::from_secs(30), live.wait())
        .await
        .expect("already set");
}

#[test]
fn a_drain_takes_at_most_its_byte_budget_oldest_first() {
    let s = lone_subscriber(1 << 20, true);
    for seq in 0..10u64 {
        s.push(&Frame {
            id: Uuid::from_u128(u128::from(seq) + 1),
            seq,
            bytes: Bytes::from(vec![b'x'; 100]),
            committed_ms: 0,
        });
    }
    let mut got = Vec::new();
    let mut chunks = Vec::new();
    loop {
        let mut out = Vec::new();
        let d = s.drain(&mut out, 250);
        chunks.push(out.len());
        got.extend(out.iter().map(|f| f.seq));
        if d == Drained::Frames {
            break;
        }
        assert_eq!(d, Drained::Partial);
    }
    assert_eq!(
        chunks,
        [2, 2, 2, 2, 2],
        "two 100-byte frames fit in 250 bytes"
    );
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(lock(&s.queue).bytes, 0);
    // One frame larger than the budget still goes out, alone.
    s.push(&Frame {
        id: Uuid::from_u128(100),
        seq: 10,
        bytes: Bytes::from(vec![b'x'; 500]),
        committed_ms: 0,
    });
    s.push(&Frame {
        id: Uuid::from_u128(101),
        seq: 11,
        bytes: Bytes::from(vec![b'x'; 10]),
        committed_ms: 0,
    });
    let mut out = Vec::new();
    assert_eq!(s.drain(&mut out, 250), Drained::Partial);
    assert_eq!(out.iter().map(|f| f.seq).collect::<Vec<_>>(), [10]);
    assert_eq!(lock(&s.queue).bytes, 10);
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
        match sub.drain(&mut frames, usize::MAX) {
            Drained::Ended => return (got, true),
            Drained::Overflowed => panic!("queue overflowed"),
            Drained::Frames | Drained::Partial => got.extend(frames.iter().map(|f| f.id)),
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

/// Waits for a wake-up of `s`; on a paused clock a missing one fails the
/// timeout instead of hanging.
async fn woken(s: &Subscription) {
    tokio::time::timeout(Duration::from_secs(16), s.notified())
        .await
        .expect("woken by the keep-alive tick");
}

#[tokio::test(start_paused = true)]
async fn one_keepalive_timer_ticks_and_wakes_every_subscriber() {
    let rig = Rig::start(4, 0).await;
    let a = rig.subscribe();
    let b = rig.subscribe();
    assert_eq!((a.ticks(), b.ticks()), (0, 0));
    rig.hub
        .start_keepalive(Duration::from_secs(15), rig.cancel.clone());
    let started = tokio::time::Instant::now();
    // Each subscriber is woken by the tick (nothing was queued) and sees
    // the count move, once per period.
    for round in 1..=3u64 {
        woken(&a).await;
        woken(&b).await;
        assert_eq!((a.ticks(), b.ticks()), (round, round));
        assert_eq!(started.elapsed(), Duration::from_secs(15 * round));
    }
    // A subscriber registered later sees the same count (and is woken by the next tick).
    let c = rig.subscribe();
    assert_eq!(c.ticks(), 3);
    woken(&c).await;
    assert_eq!(c.ticks(), 4);
    // Cancelled: no more ticks.
    rig.cancel.cancel();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(a.ticks(), 4);
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

/// A log ordered by the stream sequence its ids carry (as a cluster's
/// are), not by the ids: their timestamps may step back.
struct SeqLog {
    tag: StreamTag,
    rows: Mutex<Vec<LogRow>>,
}

impl SeqLog {
    fn seq(&self, id: Uuid) -> u64 {
        match cursor::decode(self.tag, id) {
            Position::AfterSeq(s) => s,
            _ => 0,
        }
    }

    /// Appends message `seq` stamped `ms`, as the feed would carry it.
    fn commit(&self, seq: u64, ms: u64) -> Arc<CommittedEvent> {
        let mut e = committed(1, "s", SourceType::Rss, &[], &format!("e{seq}"));
        e.event.id = cursor::encode(self.tag, seq, ms).expect("sequence fits");
        let e = CommittedEvent::new(e.event);
        lock(&self.rows).push(LogRow {
            id: e.event.id,
            source_id: "s".into(),
            source_type: SourceType::Rss,
            json: e.json.clone(),
        });
        Arc::new(e)
    }
}

impl EventLog for SeqLog {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        _scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        let after = self.seq(after);
        Ok(lock(&self.rows)
            .iter()
            .filter(|r| self.seq(r.id) > after)
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
    fn is_after(&self, id: Uuid, pos: Uuid) -> bool {
        self.seq(id) > self.seq(pos)
    }
}

#[tokio::test]
async fn events_whose_ids_step_back_in_time_are_fanned_out_in_log_order() {
    // Live, and through a catch-up (a bus of one batch: the hub lags).
    for capacity in [4096, 1] {
        let bus = Bus::with_capacity(capacity);
        let log = Arc::new(SeqLog {
            tag: StreamTag::of("LIVESTROM", 1),
            rows: Mutex::new(Vec::new()),
        });
        let cancel = CancellationToken::new();
        let hub = Hub::start(&bus, log.clone(), cancel.clone())
            .await
            .expect("start");
        let sub = hub
            .subscribe(Arc::new(Filter::default()))
            .expect("the hub accepts streams");
        let now = Utc::now().timestamp_millis() as u64;
        // The stream's clock steps back 50 ms between the first two.
        let events = [
            log.commit(1, now),
            log.commit(2, now - 50),
            log.commit(3, now + 1),
        ];
        for e in &events {
            bus.publish(Batch::from(vec![e.clone()]));
        }
        let want: Vec<Uuid> = events.iter().map(|e| e.event.id).collect();
        let (got, ended) = receive_until(&sub, want[2]).await;
        assert!(!ended);
        assert_eq!(got, want, "bus capacity {capacity}");
        cancel.cancel();
    }
}
