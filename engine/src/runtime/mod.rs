//! The engine runtime: one scheduling loop that polls every configured source
//! (fetch → parse → normalise → store), long-lived upstream readers for
//! streaming firehoses, live config reload, retention pruning and a clean
//! shutdown that loses nothing acknowledged.
//!
//! Rooms: `handle` (talking to a running engine), `slots` (the configured
//! sources and their bookkeeping), `poll` (one poll, start to commit),
//! `stream` (streaming firehoses: storing what `upstream`, the upstream
//! connection, reads), `reload` (config reload), `prune` (the pruner),
//! `ctx` (what every task shares). This file is the loop.

mod ctx;
mod handle;
mod poll;
mod prune;
mod reload;
mod slots;
mod stream;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::ctx::Ctx;
use self::handle::{Command, Reply};
use self::poll::{poll_once, record_poll_failure, task_failure, PollResult, Polls, Running};
use self::reload::{apply_reload, rebuild_ctx};
use self::slots::{first_poll_at, start_slot, Slot, Slots};
use crate::config::{Config, ConfigError, FetchConfig};
use crate::fetch::{FetchError, Fetcher};
use crate::scheduler::{self, DueQueue};
use crate::sink::Sink;
use crate::store::SourceState;

pub use self::handle::{handle, Commands, EngineHandle, PollNowError};
pub use self::poll::{PollError, PollFailed};

/// Polls in flight at most; further due sources wait in the queue.
const MAX_IN_FLIGHT: usize = 256;

/// How often the loop beats its heartbeat when nothing else wakes it
/// (readiness calls it stale after [`crate::readiness::SCHEDULER_STALE`]).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long shutdown waits for in-flight polls to store their results.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Engine errors (start-up only: a failing source never stops the engine).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Fetcher(#[from] FetchError),
}

/// Runs the engine until `cancel` fires, then drains in-flight polls and
/// flushes the store. `reload` delivers re-validated configs (file watch, SIGHUP).
pub async fn run(
    config: Config,
    store: impl Into<Arc<dyn Sink>>,
    mut reload: Option<mpsc::Receiver<Result<Config, ConfigError>>>,
    commands: Option<Commands>,
    cancel: CancellationToken,
) -> Result<(), RuntimeError> {
    let store: Arc<dyn Sink> = store.into();
    let mut commands = commands.map(|c| c.rx);
    let mut engine = Engine::start(config, &store, cancel.clone()).await?;
    let pruner = prune::spawn(store.clone(), engine.configured.clone(), cancel.clone());
    let heartbeat = store.metrics().heartbeat();
    loop {
        heartbeat.beat();
        let wake_at = engine.start_due_polls();
        let wake_at = wake_at.min(Instant::now() + HEARTBEAT_EVERY);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(wake_at) => {}
            Some((task, joined)) = engine.polls.join_next(), if !engine.polls.is_empty() => {
                engine.poll_finished(task, joined);
            }
            Some(command) = recv_or_pending(&mut commands) => engine.command(command),
            Some(update) = recv_or_pending(&mut reload) => match update {
                Err(e) => tracing::error!("config reload rejected, keeping the running config:\n{e}"),
                Ok(new) => engine.reload(new),
            },
        }
    }
    engine.drain().await;
    let _ = pruner.await;
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "store flush at shutdown failed");
    }
    tracing::info!("engine stopped");
    Ok(())
}

/// What the loop owns between two wake-ups.
struct Engine {
    /// The store and HTTP client every task shares; replaced (not mutated)
    /// when a reload changes the fetch settings.
    ctx: Arc<Ctx>,
    /// The fetch settings `ctx`'s client was built from.
    fetch_cfg: FetchConfig,
    slots: Slots,
    /// When each polled source is due.
    queue: DueQueue,
    /// Poll tasks (and recordings of polls that died).
    polls: Polls,
    /// One reader task per streamed source.
    upstreams: JoinSet<()>,
    /// Tasks in `polls`; no more than [`MAX_IN_FLIGHT`] start.
    in_flight: usize,
    first_round: FirstRound,
    /// The configured source ids, for the pruner's item-state sweep (which
    /// forgets sources no longer configured); updated on every reload.
    configured: Arc<Mutex<HashSet<String>>>,
    cancel: CancellationToken,
}

impl Engine {
    /// Slots for every configured source: streamed ones start reading,
    /// polled ones are scheduled at their stored next-poll time (or soon).
    async fn start(
        config: Config,
        store: &Arc<dyn Sink>,
        cancel: CancellationToken,
    ) -> Result<Self, RuntimeError> {
        let ctx = Arc::new(Ctx {
            store: store.clone(),
            fetcher: Fetcher::new(&config.fetch)?,
        });
        let states: HashMap<String, SourceState> = match store.source_states().await {
            Ok(v) => v.into_iter().map(|s| (s.source_id.clone(), s)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read source states; scheduling every source as new");
                HashMap::new()
            }
        };
        let mut engine = Self {
            ctx,
            fetch_cfg: config.fetch,
            slots: Slots::default(),
            queue: DueQueue::new(),
            polls: Polls::default(),
            upstreams: JoinSet::new(),
            in_flight: 0,
            first_round: FirstRound::default(),
            configured: Arc::default(),
            cancel,
        };
        for src in config.sources {
            let first_at = first_poll_at(states.get(src.id.as_str()));
            let slot = engine.slots.insert(Slot::new(src));
            let Some(s) = engine.slots.get_mut(slot) else {
                continue;
            };
            // Streamed sources report through their reader, not a poll: the
            // first-round summary does not wait for them.
            if !s.reported {
                engine.first_round.unreported += 1;
            }
            start_slot(
                &engine.ctx,
                s,
                slot,
                first_at,
                &mut engine.queue,
                &mut engine.upstreams,
                &engine.cancel,
            );
        }
        *engine
            .configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = engine.slots.ids();
        tracing::info!(sources = engine.slots.len(), "engine started");
        Ok(engine)
    }

    /// Starts every due poll there is room for; returns when the loop must
    /// wake up next for the queue.
    fn start_due_polls(&mut self) -> Instant {
        let now = Instant::now();
        while self.in_flight < MAX_IN_FLIGHT {
            let Some(slot) = self.queue.pop_due(now) else {
                break;
            };
            self.start_poll(slot);
        }
        let next_due = if self.in_flight < MAX_IN_FLIGHT {
            self.queue.peek()
        } else {
            None
        };
        next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    /// Spawns a poll of `slot` unless one is in flight or it streams.
    fn start_poll(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.polling || s.upstream.is_some() {
            return;
        }
        s.polling = true;
        let (src, kind, epoch) = (s.src.clone(), s.kind.clone(), s.epoch);
        let (ctx, cancel) = (self.ctx.clone(), self.cancel.clone());
        let task = Running {
            slot,
            epoch,
            recovery: false,
        };
        self.polls.spawn(task, async move {
            tokio::select! {
                r = poll_once(&ctx, &src, &kind) => r,
                _ = cancel.cancelled() => PollResult {
                    outcome: Err(PollError::Shutdown.into()),
                    next_in: Duration::ZERO,
                    skipped: false,
                },
            }
        });
        self.in_flight += 1;
    }

    /// A poll task ended: answer its waiters, then schedule the source's
    /// next poll (or the poll someone asked for meanwhile).
    fn poll_finished(&mut self, task: Running, joined: Result<PollResult, JoinError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Running {
            slot,
            epoch,
            recovery,
        } = task;
        let PollResult {
            outcome,
            next_in,
            skipped,
        } = match joined {
            Ok(result) => result,
            Err(died) => {
                let failed = PollFailed::from(task_failure(died));
                let Some(s) = self.slots.get(slot) else {
                    return;
                };
                tracing::error!(source = %s.src.id, "{failed}");
                if !recovery {
                    // The slot stays busy until the failure is recorded, so
                    // no other poll of the source overwrites its state meanwhile.
                    let record = record_poll_failure(self.ctx.clone(), s.src.clone(), failed);
                    let task = Running {
                        slot,
                        epoch,
                        recovery: true,
                    };
                    self.polls.spawn(task, record);
                    self.in_flight += 1;
                    return;
                }
                // Even recording the failure failed: free the slot and try
                // again after the longest backoff.
                PollResult {
                    outcome: Err(failed),
                    next_in: scheduler::MAX_BACKOFF,
                    skipped: false,
                }
            }
        };
        let polled = self.slots.polled();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.polling = false;
        for w in s.waiters.drain(..) {
            let _ = w.send(outcome.clone().map_err(PollNowError::from));
        }
        if !s.next_waiters.is_empty() {
            s.waiters = std::mem::take(&mut s.next_waiters);
            self.start_poll(slot);
            return;
        }
        if s.epoch != epoch {
            // The config changed while this poll ran: poll the new one now.
            if !s.streaming() {
                self.queue.schedule(slot, Instant::now());
            }
            return;
        }
        if skipped {
            // Not polled yet: no first-round report, just come back.
            self.queue.schedule(slot, Instant::now() + next_in);
            return;
        }
        if !s.reported {
            s.reported = true;
            let failed = outcome
                .as_ref()
                .err()
                .map(|e| format!("{} ({e})", s.src.id));
            self.first_round.report(failed, polled);
        }
        self.queue.schedule(slot, Instant::now() + next_in);
    }

    /// A command from an [`EngineHandle`].
    fn command(&mut self, command: Command) {
        match command {
            Command::PollNow(id, reply) => self.poll_now(id, reply),
        }
    }

    /// `poll_now`: poll the source at once, or right after its poll in flight.
    fn poll_now(&mut self, id: String, reply: Reply) {
        let Some(slot) = self.slots.find(&id) else {
            let _ = reply.send(Err(PollNowError::UnknownSource(id)));
            return;
        };
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.upstream.is_some() {
            let _ = reply.send(Err(PollNowError::Streaming(id)));
        } else if s.polling {
            s.next_waiters.push(reply);
        } else {
            s.waiters.push(reply);
            self.queue.remove(slot);
            self.start_poll(slot);
        }
    }

    /// Applies a re-validated config.
    fn reload(&mut self, new: Config) {
        rebuild_ctx(&mut self.ctx, &mut self.fetch_cfg, &new.fetch);
        apply_reload(
            &self.ctx,
            new,
            &mut self.slots,
            &mut self.queue,
            &mut self.upstreams,
            &self.cancel,
        );
        *self
            .configured
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.slots.ids();
    }

    /// Shutdown: waits (at most [`SHUTDOWN_GRACE`]) for in-flight polls
    /// and upstream readers to store what they have.
    async fn drain(mut self) {
        tracing::info!(
            in_flight = self.in_flight,
            "engine stopping: waiting for in-flight polls to store their results"
        );
        let drain = async {
            while self.polls.join_next().await.is_some() {}
            while self.upstreams.join_next().await.is_some() {}
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!(
                "some polls did not finish within {SHUTDOWN_GRACE:?}; their results were not stored"
            );
        }
    }
}

/// The first round: one summary line once every polled source configured
/// at start has been polled once.
#[derive(Default)]
struct FirstRound {
    /// Polled sources not polled yet.
    unreported: usize,
    /// "id (error)" of each that failed.
    failing: Vec<String>,
}

impl FirstRound {
    /// A source's first poll ended (`failed`: why not); `polled` sources
    /// are configured now.
    fn report(&mut self, failed: Option<String>, polled: usize) {
        self.unreported = self.unreported.saturating_sub(1);
        self.failing.extend(failed);
        if self.unreported > 0 {
            return;
        }
        if self.failing.is_empty() {
            tracing::info!("first round: all {polled} polled sources reachable");
        } else {
            tracing::warn!(
                "first round: {} of {polled} polled sources reachable; cannot reach {}: {}",
                polled.saturating_sub(self.failing.len()),
                self.failing.len(),
                self.failing.join("; ")
            );
        }
    }
}

/// Receives from an optional channel; a missing or closed channel never yields
/// (so its `select!` branch simply stays quiet).
async fn recv_or_pending<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    if let Some(r) = rx {
        if let Some(v) = r.recv().await {
            return Some(v);
        }
        *rx = None;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests;
