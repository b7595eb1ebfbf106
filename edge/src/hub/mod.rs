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

//!
//! Rooms: `frame` (the bytes sent), `queue` (a subscriber's bounded queue),
//! `registry` (the subscriber index and fan-out of one event), `task` (the
//! one reader of the live feed, catch-up from the log).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use livestrom_engine::bus::LiveFeed;
use livestrom_engine::log::LogError;
use livestrom_engine::EventLog;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::filter::Filter;

mod frame;
mod queue;
mod registry;
mod task;
#[cfg(test)]
mod tests;

pub use frame::{
    render_event, write_checkpoint, write_comment, write_error_event, write_event, Frame,
};
pub use queue::{Drained, OverflowSignal};
pub use task::Position;

use queue::{lock, Subscriber};
use registry::Registry;
use task::{HubInner, HubTask};

/// Default bound of one subscriber's queue, in bytes of queued frames.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// Handle to the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

/// The hub is gone (its bus closed or the server is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the live feed has stopped (server shutting down)")]
pub struct HubClosed;

/// A registered subscriber; deregisters on drop.
pub struct Subscription {
    hub: Arc<HubInner>,
    slot: u32,
    sub: Arc<Subscriber>,
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
            ticks: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
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
        let sub = Arc::new(Subscriber::new(
            filter,
            self.inner.queue_limit.load(Ordering::Relaxed),
        ));
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

    /// Records the hub's lag and fan-out delay in `metrics` from now on
    /// (the first call wins).
    pub fn set_metrics(&self, metrics: crate::metrics::EdgeMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// Whether the hub has stopped (shutdown or its feed closed): no
    /// stream can go live.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Number of registered subscribers.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner.registry).count
    }

    /// Keep-alive for every stream from one timer: every `period` (at least
    /// 10 ms) the tick count ([`Subscription::ticks`]) moves and every
    /// registered subscriber is woken, until `cancel`. One timer for the
    /// whole hub instead of one per stream: an idle stream then holds no
    /// timer at all (docs/PERFORMANCE.md, idle memory per subscriber).
    pub fn start_keepalive(&self, period: Duration, cancel: CancellationToken) {
        let inner = self.inner.clone();
        let period = period.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = every.tick() => {}
                }
                inner.ticks.fetch_add(1, Ordering::AcqRel);
                let registry = lock(&inner.registry);
                for slot in registry.slots.iter().flatten() {
                    slot.sub.notify.notify_one();
                }
            }
        });
    }
}

impl Subscription {
    /// Set once the queue overflowed while live (the client reads too
    /// slowly): the server gives up a write in progress on it.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.sub.clone())
    }

    /// Keep-alive ticks of the hub so far ([`Hub::start_keepalive`]): a
    /// stream that sees it move since its last look is due a keep-alive.
    pub fn ticks(&self) -> u64 {
        self.hub.ticks.load(Ordering::Acquire)
    }

    /// Resolves when frames were queued (or the queue overflowed or ended)
    /// since the last drain. May resolve spuriously; always drain after it.
    pub async fn notified(&self) {
        self.sub.notify.notified().await;
    }

    /// Moves the oldest queued frames into `out` (which should be empty) in
    /// one lock: all of them, or as many as fit in `max_bytes` (at least
    /// one), returning [`Drained::Partial`] when more remain. From the first
    /// successful drain on the subscriber counts as live: a later overflow
    /// deregisters it from the hub immediately.
    pub fn drain(&self, out: &mut Vec<Frame>, max_bytes: usize) -> Drained {
        self.sub.drain(out, max_bytes)
    }

    /// Clears an overflow (and anything queued): the queue collects again
    /// from now on. Used while replaying, before reading more from the log.
    pub fn rearm(&self) {
        self.sub.rearm();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.registry).remove(self.slot, &self.sub);
    }
}
