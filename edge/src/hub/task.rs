//! The hub's task: the one reader of the live feed. It fans each batch out
//! through the registry and, when it lags, re-reads the gap from the log
//! (retrying a failed read, never skipping).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use livestrom_engine::bus::Live;
use livestrom_engine::log::{LogError, ReadScope};
use livestrom_engine::scheduler::{Backoff, BackoffPolicy, Jitter};
use livestrom_engine::{CommittedEvent, EventLog, StreamEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::queue::{lock, Subscriber};
use super::registry::Registry;

/// Rows per log read when the hub catches up after `Lagged`.
const CATCH_UP_PAGE: usize = 2048;

/// Waits between attempts of a catch-up read that failed: 100 ms doubling
/// to 5 s, in the upper half of each step (hubs of several edges that fail
/// together do not retry together).
const CATCH_UP_RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    factor: 2,
    jitter: Jitter::EQUAL,
};

/// How far the hub has fanned out: every event up to `id` has been offered
/// to every subscriber registered at the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The newest fanned-out event id.
    pub id: Uuid,
    /// Its sequence number.
    pub seq: u64,
}

/// What the hub handle, its subscriptions and its task share.
pub(super) struct HubInner {
    pub(super) registry: Mutex<Registry>,
    /// Last fanned-out event; written after the enqueues of that event, so a
    /// reader that loads it and then drains its queue has seen every
    /// matching event up to it.
    pub(super) position: Mutex<Option<Position>>,
    pub(super) queue_limit: AtomicUsize,
    pub(super) closed: AtomicBool,
    /// Keep-alive ticks so far (`Hub::start_keepalive`).
    pub(super) ticks: AtomicU64,
    /// Where the task counts lag episodes and fan-out delays (set once,
    /// right after start).
    pub(super) metrics: std::sync::OnceLock<crate::metrics::EdgeMetrics>,
}

/// The task owning the bus receiver.
pub(super) struct HubTask {
    pub(super) inner: Arc<HubInner>,
    pub(super) log: Arc<dyn EventLog>,
    /// Newest event fanned out (or the start floor): events not after it in
    /// the log's order ([`EventLog::is_after`]) are skipped, which
    /// de-duplicates a catch-up against the bus.
    pub(super) last: Uuid,
    pub(super) seq: u64,
}

impl HubTask {
    pub(super) async fn run(mut self, mut rx: BoxStream<'static, Live>, cancel: CancellationToken) {
        loop {
            let r = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = rx.next() => r,
            };
            match r {
                Some(Live::Batch(batch)) => self.process(batch.iter().map(|e| &**e)),
                Some(Live::Lagged(n)) => {
                    if let Some(m) = self.inner.metrics.get() {
                        m.hub_lagged();
                    }
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
        let mut backoff = Backoff::new(CATCH_UP_RETRY);
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
                    let wait = backoff.next_delay();
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
                }
            }
        }
    }

    pub(super) fn process<'a>(&mut self, events: impl Iterator<Item = &'a CommittedEvent>) {
        let mut newest = None;
        let mut committed_ms = None;
        for ev in events {
            // In the log's order, not the ids' (a cluster's ids carry a
            // stream sequence; their timestamps may step back).
            if !self.log.is_after(ev.event.id, self.last) {
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
            committed_ms = Some(ev.event.emitted_at.timestamp_millis());
        }
        if let Some(p) = newest {
            *lock(&self.inner.position) = Some(p);
        }
        // Once per batch, for its newest event: the hub's lag behind commits.
        if let (Some(m), Some(at)) = (self.inner.metrics.get(), committed_ms) {
            m.hub_fanned_out(at, crate::metrics::now_ms());
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
                if self.log.is_after(id, self.last) {
                    self.last = id;
                }
            }
            if n < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }
}
