//! The configured sources as the loop keeps them: one slot per source with
//! its scheduling bookkeeping, the table of slots, and how a slot is started.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::handle::Reply;
use super::stream::run_stream;
use crate::config::SourceConfig;
use crate::scheduler::{self, DueQueue};
use crate::sources::{self, Kind};
use crate::store::SourceState;

/// A configured source and its scheduling bookkeeping.
pub(super) struct Slot {
    pub(super) src: Arc<SourceConfig>,
    /// How the source is driven (from `src`; replaced with it).
    pub(super) kind: Arc<dyn Kind>,
    /// Bumped whenever the source is replaced, so a stale poll result is ignored.
    pub(super) epoch: u64,
    /// A poll is in flight (never two of one source at once).
    pub(super) polling: bool,
    /// Streaming firehose: cancels its upstream reader.
    pub(super) upstream: Option<CancellationToken>,
    /// The first-round summary has counted this source.
    pub(super) reported: bool,
    /// Waiting for the in-flight poll (`poll_now`).
    pub(super) waiters: Vec<Reply>,
    /// Waiting for a poll that starts after the in-flight one.
    pub(super) next_waiters: Vec<Reply>,
}

impl Slot {
    /// A slot for `src`. Streaming sources report through their reader, not
    /// a poll, so they start out counted by the first-round summary.
    pub(super) fn new(src: SourceConfig) -> Self {
        let kind = sources::kind(&src);
        let reported = kind.stream().is_some();
        Self {
            src: Arc::new(src),
            kind,
            epoch: 0,
            polling: false,
            upstream: None,
            reported,
            waiters: Vec::new(),
            next_waiters: Vec::new(),
        }
    }

    /// The source's config changed: a new kind with it, and a new epoch so
    /// a poll of the old config finishing later is recognised as stale.
    pub(super) fn replace(&mut self, src: SourceConfig) {
        self.epoch += 1;
        self.kind = sources::kind(&src);
        self.src = Arc::new(src);
    }

    /// Read from a long-lived upstream instead of polled.
    pub(super) fn streaming(&self) -> bool {
        self.kind.stream().is_some()
    }
}

/// Every configured source, by slot index and by id. A slot's index is
/// stable while its source is configured (the due-queue and poll tasks name
/// slots by index) and never reused: a removed source leaves `None` behind.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Option<Slot>>,
    by_id: HashMap<String, usize>,
}

impl Slots {
    /// Adds a slot for a source not configured yet; returns its index.
    pub(super) fn insert(&mut self, slot: Slot) -> usize {
        let i = self.slots.len();
        self.by_id.insert(slot.src.id.as_str().to_owned(), i);
        self.slots.push(Some(slot));
        i
    }

    /// The slot at `i`, unless its source was removed.
    pub(super) fn get(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    /// The slot at `i`, unless its source was removed.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// The index of the source `id`, if configured.
    pub(super) fn find(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The configured source ids.
    pub(super) fn ids(&self) -> HashSet<String> {
        self.by_id.keys().cloned().collect()
    }

    /// Configured sources.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Configured sources that are polled (not streamed).
    pub(super) fn polled(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| !s.streaming())
            .count()
    }

    /// Removes every source `keep` rejects, handing each removed slot (and
    /// its index) to `removed`.
    pub(super) fn retain(
        &mut self,
        keep: impl Fn(&str) -> bool,
        mut removed: impl FnMut(usize, Slot),
    ) {
        let slots = &mut self.slots;
        self.by_id.retain(|id, i| {
            if keep(id) {
                return true;
            }
            if let Some(s) = slots.get_mut(*i).and_then(Option::take) {
                removed(*i, s);
            }
            false
        });
    }
}

/// Schedules a (new or replaced) slot: streaming sources get an upstream
/// reader, everything else a first poll at `at`.
pub(super) fn start_slot(
    ctx: &Arc<Ctx>,
    s: &mut Slot,
    slot: usize,
    at: Instant,
    queue: &mut DueQueue,
    upstreams: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    if s.streaming() {
        let token = cancel.child_token();
        s.upstream = Some(token.clone());
        upstreams.spawn(run_stream(
            ctx.clone(),
            s.src.clone(),
            s.kind.clone(),
            token,
        ));
    } else {
        queue.schedule(slot, at);
    }
}

pub(super) fn jitter_within(d: Duration) -> Duration {
    d.mul_f64(rand::random::<f64>())
}

/// First poll of a source: at its stored next-poll time if it has one (a
/// restart keeps the cadence), else soon, spread over a few seconds.
pub(super) fn first_poll_at(state: Option<&SourceState>) -> Instant {
    let now = Instant::now();
    let spread = jitter_within(scheduler::FIRST_POLL_SPREAD);
    match state.and_then(|s| s.next_poll_at) {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            now + wait.min(scheduler::MAX_HINT).max(spread)
        }
        None => now + spread,
    }
}
