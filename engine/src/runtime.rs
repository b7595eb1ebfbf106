//! The engine runtime: one scheduling loop that polls every configured source
//! (fetch → parse → normalise → store), long-lived upstream readers for
//! streaming firehoses, live config reload, retention pruning and a clean
//! shutdown that loses nothing acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, FirehoseFormat, SourceConfig, SourceKind};
use crate::fetch::{redact_urls_in, FetchError, FetchRequest, FetchResponse, Fetched, Fetcher};
use crate::normalize;
use crate::scheduler::{self, Backoff, BackoffPolicy, DueQueue, Jitter, PollTiming};
use crate::sources::{feed, firehose, html, Item, Parsed};
use crate::store::{SourceState, Store, StoreError, WriteBatch};

/// Polls in flight at most; further due sources wait in the queue.
const MAX_IN_FLIGHT: usize = 256;
/// How long shutdown waits for in-flight polls to store their results.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often events older than the retention window are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Item state is swept every this many event prunes (hourly; the sweep
/// reads every item row, so it runs less often).
const ITEM_PRUNE_EVERY_N: u64 = 6;
/// Upstream batches buffered between a streaming firehose reader and the store.
const UPSTREAM_QUEUE: usize = 16;
/// Retry of an upstream batch the store refused: the reader waits meanwhile,
/// so no jitter is needed; half a second doubling to 30 s.
const STORE_RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
    factor: 2,
    jitter: Jitter::NONE,
};

/// Commands to a running engine.
#[derive(Debug)]
enum Command {
    /// Poll a source now (after its in-flight poll, if any); replies with its outcome.
    PollNow(String, oneshot::Sender<Result<(), String>>),
}

/// Talks to a running engine: created by [`handle`], passed to [`run`].
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The receiving side of an [`EngineHandle`], given to [`run`].
#[derive(Debug)]
pub struct Commands {
    rx: mpsc::Receiver<Command>,
}

/// A handle and the command stream for [`run`].
pub fn handle() -> (EngineHandle, Commands) {
    let (tx, rx) = mpsc::channel(64);
    (EngineHandle { tx }, Commands { rx })
}

impl EngineHandle {
    /// Polls `source_id` now and waits for the result to be committed. If a
    /// poll of it is in flight, a fresh one starts right after it. Streaming
    /// firehoses cannot be polled.
    pub async fn poll_now(&self, source_id: &str) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::PollNow(source_id.to_owned(), tx))
            .await
            .map_err(|_| "the engine is not running".to_owned())?;
        rx.await
            .map_err(|_| "the engine stopped before the poll finished".to_owned())?
    }
}

/// Engine errors (start-up only: a failing source never stops the engine).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Fetcher(#[from] FetchError),
}

/// Why one poll failed; shown as the source's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Fetching failed.
    #[error("fetch: {0}")]
    Fetch(#[from] FetchError),
    /// The feed did not parse.
    #[error("parse: {0}")]
    Feed(#[from] feed::FeedError),
    /// The page is unusable.
    #[error("page: {0}")]
    Html(#[from] html::HtmlError),
    /// The firehose document did not map.
    #[error("firehose: {0}")]
    Firehose(#[from] firehose::FirehoseError),
    /// Storing failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A parser task died.
    #[error("internal: {0}")]
    Task(String),
    /// The source's domain is under a Retry-After for this long: not polled.
    #[error("deferred by the domain's Retry-After for {0:?}")]
    Deferred(Duration),
}

/// Shared by every poll.
struct Ctx {
    store: Store,
    fetcher: Fetcher,
}

/// A configured source and its scheduling bookkeeping.
struct Slot {
    src: Arc<SourceConfig>,
    /// Bumped whenever the source is replaced, so a stale poll result is ignored.
    epoch: u64,
    /// A poll is in flight (never two of one source at once).
    polling: bool,
    /// Streaming firehose: cancels its upstream reader.
    upstream: Option<CancellationToken>,
    /// The first-round summary has counted this source.
    reported: bool,
    /// Waiting for the in-flight poll (`poll_now`).
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// Waiting for a poll that starts after the in-flight one.
    next_waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Slot {
    fn new(src: SourceConfig, reported: bool) -> Self {
        Self {
            src: Arc::new(src),
            epoch: 0,
            polling: false,
            upstream: None,
            reported,
            waiters: Vec::new(),
            next_waiters: Vec::new(),
        }
    }
}

/// Runs the engine until `cancel` fires, then drains in-flight polls and
/// flushes the store. `reload` delivers re-validated configs (file watch, SIGHUP).
pub async fn run(
    config: Config,
    store: Store,
    mut reload: Option<mpsc::Receiver<Result<Config, ConfigError>>>,
    commands: Option<Commands>,
    cancel: CancellationToken,
) -> Result<(), RuntimeError> {
    let mut commands = commands.map(|c| c.rx);
    let mut ctx = Arc::new(Ctx {
        store: store.clone(),
        fetcher: Fetcher::new(&config.fetch)?,
    });
    let mut fetch_cfg = config.fetch.clone();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut queue = DueQueue::new();
    let mut polls = Polls::default();
    let mut upstreams: JoinSet<()> = JoinSet::new();
    let mut in_flight = 0usize;
    let mut unreported = 0usize;
    let mut failing_first_round: Vec<String> = Vec::new();

    let states: HashMap<String, SourceState> = match store.source_states().await {
        Ok(v) => v.into_iter().map(|s| (s.source_id.clone(), s)).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read source states; scheduling every source as new");
            HashMap::new()
        }
    };
    for src in config.sources {
        let slot = slots.len();
        let first_at = first_poll_at(states.get(src.id.as_str()));
        by_id.insert(src.id.as_str().to_owned(), slot);
        // Streaming firehoses report through their reader, not a poll: they
        // are not waited for by the first-round summary.
        let streaming = is_streaming(&src);
        slots.push(Some(Slot::new(src, streaming)));
        if !streaming {
            unreported += 1;
        }
        start_slot(
            &ctx,
            &mut slots,
            slot,
            first_at,
            &mut queue,
            &mut upstreams,
            &cancel,
        );
    }
    tracing::info!(sources = slots.len(), "engine started");

    // The configured source ids, for the item-state sweep (which forgets
    // sources no longer configured); updated on every reload.
    let configured: Arc<std::sync::Mutex<HashSet<String>>> =
        Arc::new(std::sync::Mutex::new(by_id.keys().cloned().collect()));
    let prune_configured = configured.clone();
    let prune_store = store.clone();
    let prune_cancel = cancel.clone();
    let pruner = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = prune_cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            match prune_store.prune().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pruned = n, "pruned events older than the retention window")
                }
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            }
            if rounds.is_multiple_of(ITEM_PRUNE_EVERY_N) {
                // A poisoned lock still holds the last complete set.
                let ids = prune_configured
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let sweep = tokio::select! {
                    _ = prune_cancel.cancelled() => break,
                    r = prune_store.prune_items(&ids) => r,
                };
                match sweep {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        forgotten = n,
                        "forgot the state of items not seen for longer than the item horizon"
                    ),
                    Err(e) => tracing::warn!(error = %e, "pruning item state failed"),
                }
            }
            rounds += 1;
        }
    });

    loop {
        // Start every due poll we have room for.
        let now = Instant::now();
        while in_flight < MAX_IN_FLIGHT {
            let Some(slot) = queue.pop_due(now) else {
                break;
            };
            if start_poll(&ctx, &mut slots, slot, &mut polls, &cancel) {
                in_flight += 1;
            }
        }
        let next_due = if in_flight < MAX_IN_FLIGHT {
            queue.peek()
        } else {
            None
        };
        let sleep_until = next_due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));

        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(sleep_until) => {}
            Some((task, joined)) = polls.join_next(), if !polls.is_empty() => {
                in_flight = in_flight.saturating_sub(1);
                let Running { slot, epoch, recovery } = task;
                let PollResult { outcome: res, next_in, skipped } = match joined {
                    Ok(result) => result,
                    Err(died) => {
                        let why = redact_urls_in(&task_failure(died)).into_owned();
                        let Some(s) = slots.get(slot).and_then(Option::as_ref) else { continue };
                        tracing::error!(source = %s.src.id, "a poll {why}");
                        if !recovery {
                            // The slot stays busy until the failure is
                            // recorded, so no other poll of the source
                            // overwrites its state meanwhile.
                            polls.spawn(Running { slot, epoch, recovery: true }, record_poll_failure(ctx.clone(), s.src.clone(), why));
                            in_flight += 1;
                            continue;
                        }
                        // Even recording the failure failed: free the slot
                        // and try again after the longest backoff.
                        PollResult {
                            outcome: Err(format!("internal: the poll {why}")),
                            next_in: scheduler::MAX_BACKOFF,
                            skipped: false,
                        }
                    }
                };
                let total = slots.iter().flatten().filter(|s| !is_streaming(&s.src)).count();
                let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else { continue };
                s.polling = false;
                for w in s.waiters.drain(..) {
                    let _ = w.send(res.clone());
                }
                if !s.next_waiters.is_empty() {
                    s.waiters = std::mem::take(&mut s.next_waiters);
                    if start_poll(&ctx, &mut slots, slot, &mut polls, &cancel) {
                        in_flight += 1;
                    }
                    continue;
                }
                if s.epoch != epoch {
                    // The config changed while this poll ran: poll the new one now.
                    if !is_streaming(&s.src) {
                        queue.schedule(slot, Instant::now());
                    }
                    continue;
                }
                if skipped {
                    // Not polled yet: no first-round report, just come back.
                    queue.schedule(slot, Instant::now() + next_in);
                    continue;
                }
                if !s.reported {
                    s.reported = true;
                    unreported = unreported.saturating_sub(1);
                    if let Err(e) = &res {
                        failing_first_round.push(format!("{} ({e})", s.src.id));
                    }
                    if unreported == 0 {
                        first_round_summary(total, &failing_first_round);
                    }
                }
                let at = Instant::now() + next_in;
                queue.schedule(slot, at);
            }
            Some(cmd) = recv_or_pending(&mut commands) => match cmd {
                Command::PollNow(id, reply) => {
                    let Some(&slot) = by_id.get(&id) else {
                        let _ = reply.send(Err(format!("no source `{id}` in the running config")));
                        continue;
                    };
                    let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else { continue };
                    if s.upstream.is_some() {
                        let _ = reply.send(Err(format!("`{id}` is a streaming firehose; it is not polled")));
                    } else if s.polling {
                        s.next_waiters.push(reply);
                    } else {
                        s.waiters.push(reply);
                        queue.remove(slot);
                        if start_poll(&ctx, &mut slots, slot, &mut polls, &cancel) {
                            in_flight += 1;
                        }
                    }
                }
            },
            Some(update) = recv_or_pending(&mut reload) => match update {
                Err(e) => tracing::error!("config reload rejected, keeping the running config:\n{e}"),
                Ok(new) => {
                    if new.fetch != fetch_cfg {
                        match Fetcher::new(&new.fetch) {
                            Ok(f) => {
                                ctx = Arc::new(Ctx { store: store.clone(), fetcher: f });
                                fetch_cfg = new.fetch.clone();
                            }
                            Err(e) => tracing::error!(error = %e, "config reload: cannot rebuild the HTTP client, keeping the old one"),
                        }
                    }
                    apply_reload(&ctx, new, &mut slots, &mut by_id, &mut queue, &mut upstreams, &cancel);
                    *configured.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        by_id.keys().cloned().collect();
                }
            },
        }
    }

    tracing::info!(
        in_flight,
        "engine stopping: waiting for in-flight polls to store their results"
    );
    let drain = async {
        while polls.join_next().await.is_some() {}
        while upstreams.join_next().await.is_some() {}
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!(
            "some polls did not finish within {SHUTDOWN_GRACE:?}; their results were not stored"
        );
    }
    let _ = pruner.await;
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "store flush at shutdown failed");
    }
    tracing::info!("engine stopped");
    Ok(())
}

/// Spawns a poll of `slot` unless one is in flight; true if it started.
fn start_poll(
    ctx: &Arc<Ctx>,
    slots: &mut [Option<Slot>],
    slot: usize,
    polls: &mut Polls,
    cancel: &CancellationToken,
) -> bool {
    let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else {
        return false;
    };
    if s.polling || s.upstream.is_some() {
        return false;
    }
    s.polling = true;
    let (src, epoch, ctx, cancel) = (s.src.clone(), s.epoch, ctx.clone(), cancel.clone());
    let task = Running {
        slot,
        epoch,
        recovery: false,
    };
    polls.spawn(task, async move {
        tokio::select! {
            r = poll_once(&ctx, &src) => r,
            _ = cancel.cancelled() => PollResult { outcome: Err("cancelled by shutdown".into()), next_in: Duration::ZERO, skipped: false },
        }
    });
    true
}

/// The polls in flight. A task that panics returns no result, so which
/// slot it polled is kept by task id: the slot is freed and its source
/// rescheduled instead of staying "polling" forever.
#[derive(Default)]
struct Polls {
    tasks: JoinSet<PollResult>,
    running: HashMap<tokio::task::Id, Running>,
}

/// What a poll task is for.
#[derive(Debug, Clone, Copy)]
struct Running {
    slot: usize,
    /// The slot's epoch when the poll started.
    epoch: u64,
    /// Records the failure of a poll that panicked (not a poll itself).
    recovery: bool,
}

impl Polls {
    fn spawn(
        &mut self,
        task: Running,
        fut: impl std::future::Future<Output = PollResult> + Send + 'static,
    ) {
        let id = self.tasks.spawn(fut).id();
        self.running.insert(id, task);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next finished task and its result (`Err` if it panicked).
    async fn join_next(&mut self) -> Option<(Running, Result<PollResult, tokio::task::JoinError>)> {
        loop {
            let (id, result) = match self.tasks.join_next_with_id().await? {
                Ok((id, result)) => (id, Ok(result)),
                Err(e) => (e.id(), Err(e)),
            };
            // Every task is registered when spawned; an unknown id cannot
            // name a slot, so it is skipped.
            if let Some(task) = self.running.remove(&id) {
                return Some((task, result));
            }
        }
    }
}

/// "panicked: <message>" for a poll task that died.
fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".to_owned();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("panicked: {msg}")
}

/// Records a poll that died as a failed poll of its source (shown as its
/// `last_error`, counted in its failures) and schedules it with the failure
/// backoff.
async fn record_poll_failure(ctx: Arc<Ctx>, src: Arc<SourceConfig>, why: String) -> PollResult {
    let now = Utc::now();
    let msg = format!("internal: the poll {why}");
    let mut state = match ctx.store.source_state(src.id.as_str()).await {
        Ok(s) => s.unwrap_or_else(|| SourceState {
            source_id: src.id.as_str().to_owned(),
            ..Default::default()
        }),
        Err(e) => {
            tracing::error!(source = %src.id, error = %e, "cannot record the failed poll");
            return PollResult {
                outcome: Err(msg),
                next_in: scheduler::base_delay(&src.cadence, now),
                skipped: false,
            };
        }
    };
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    state.last_poll_at = Some(now);
    state.last_error = Some(msg.clone());
    let timing = PollTiming {
        ok: false,
        consecutive_failures: state.consecutive_failures,
        ..PollTiming::default()
    };
    let delay = scheduler::next_delay(&src.cadence, now, &timing, rand::random::<f64>());
    state.next_poll_at = chrono::Duration::from_std(delay).ok().map(|d| now + d);
    let batch = WriteBatch {
        source: Some(state),
        ..WriteBatch::default()
    };
    if let Err(e) = ctx.store.write(batch).await {
        tracing::error!(source = %src.id, error = %e, "cannot record the failed poll");
    }
    PollResult {
        outcome: Err(msg),
        next_in: delay,
        skipped: false,
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

fn first_round_summary(total: usize, failing: &[String]) {
    if failing.is_empty() {
        tracing::info!("first round: all {total} polled sources reachable");
    } else {
        tracing::warn!(
            "first round: {} of {total} polled sources reachable; cannot reach {}: {}",
            total.saturating_sub(failing.len()),
            failing.len(),
            failing.join("; ")
        );
    }
}

/// Schedules a (new or replaced) slot: streaming firehoses get an upstream
/// reader, everything else a first poll.
fn start_slot(
    ctx: &Arc<Ctx>,
    slots: &mut [Option<Slot>],
    slot: usize,
    at: Instant,
    queue: &mut DueQueue,
    upstreams: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else {
        return;
    };
    if is_streaming(&s.src) {
        let token = cancel.child_token();
        s.upstream = Some(token.clone());
        upstreams.spawn(run_stream(ctx.clone(), s.src.clone(), token));
    } else {
        queue.schedule(slot, at);
    }
}

fn is_streaming(src: &SourceConfig) -> bool {
    matches!(&src.kind, SourceKind::Firehose(f) if matches!(f.format, FirehoseFormat::Ndjson | FirehoseFormat::Sse))
}

fn apply_reload(
    ctx: &Arc<Ctx>,
    new: Config,
    slots: &mut Vec<Option<Slot>>,
    by_id: &mut HashMap<String, usize>,
    queue: &mut DueQueue,
    upstreams: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    let mut keep: HashMap<String, ()> = HashMap::new();
    for src in new.sources {
        let id = src.id.as_str().to_owned();
        keep.insert(id.clone(), ());
        match by_id.get(&id).copied() {
            Some(slot) => {
                let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if *s.src == src {
                    continue;
                }
                changed += 1;
                s.epoch += 1;
                s.src = Arc::new(src);
                if let Some(t) = s.upstream.take() {
                    t.cancel();
                }
                // A poll of the old config still running keeps the slot busy
                // (no second poll of the same source alongside it); when it
                // finishes it schedules the new config at once.
                if s.polling && !is_streaming(&s.src) {
                    continue;
                }
                start_slot(
                    ctx,
                    slots,
                    slot,
                    Instant::now() + jitter_within(scheduler::FIRST_POLL_SPREAD),
                    queue,
                    upstreams,
                    cancel,
                );
            }
            None => {
                added += 1;
                let slot = slots.len();
                slots.push(Some(Slot::new(src, true)));
                by_id.insert(id, slot);
                start_slot(
                    ctx,
                    slots,
                    slot,
                    Instant::now() + jitter_within(scheduler::FIRST_POLL_SPREAD),
                    queue,
                    upstreams,
                    cancel,
                );
            }
        }
    }
    by_id.retain(|id, slot| {
        if keep.contains_key(id) {
            return true;
        }
        removed += 1;
        queue.remove(*slot);
        if let Some(s) = slots.get_mut(*slot).and_then(Option::take) {
            if let Some(t) = s.upstream {
                t.cancel();
            }
        }
        false
    });
    tracing::info!(added, changed, removed, "config reloaded");
}

fn jitter_within(d: Duration) -> Duration {
    d.mul_f64(rand::random::<f64>())
}

/// First poll of a source: at its stored next-poll time if it has one (a
/// restart keeps the cadence), else soon, spread over a few seconds.
fn first_poll_at(state: Option<&SourceState>) -> Instant {
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

/// How one poll ended and when the source is due next.
struct PollResult {
    /// The error text on failure (recorded in the source's state when the store allowed).
    outcome: Result<(), String>,
    /// Delay until the next poll (the same value stored as `next_poll_at`).
    next_in: Duration,
    /// Nothing was fetched or stored: the domain already had enough polls in
    /// flight or waiting (see `Politeness::crowded`); try again after `next_in`.
    skipped: bool,
}

/// One poll of one source, start to commit.
async fn poll_once(ctx: &Ctx, src: &Arc<SourceConfig>) -> PollResult {
    // Enough polls of this domain are already fetching or waiting for their
    // turn: come back shortly rather than wait in an in-flight slot (nothing
    // is read or written, so skipping is cheap).
    let host = src.url.host_str().unwrap_or_default();
    if let Some(wait) = ctx.fetcher.politeness().crowded(host) {
        return PollResult {
            outcome: Err(format!(
                "skipped: enough polls of {host}'s domain are already in flight or waiting"
            )),
            next_in: wait.mul_f64(1.0 + rand::random::<f64>()),
            skipped: true,
        };
    }
    let started = Utc::now();
    let mut state = match ctx.store.source_state(src.id.as_str()).await {
        Ok(s) => s.unwrap_or_else(|| SourceState {
            source_id: src.id.as_str().to_owned(),
            ..Default::default()
        }),
        Err(e) => {
            // Not even the state could be read: retry on the source's cadence.
            return PollResult {
                outcome: Err(format!("store: {e}")),
                next_in: scheduler::base_delay(&src.cadence, started),
                skipped: false,
            };
        }
    };
    state.last_poll_at = Some(started);
    let outcome = poll_inner(ctx, src, &mut state).await;
    let now = Utc::now();
    let (timing, batch_events, touch, unchanged, result) = match outcome {
        Err(PollError::Deferred(wait)) => {
            // The domain asked everyone to wait (429/503 Retry-After): not this
            // source's failure; try again when the domain allows.
            tracing::debug!(source = %src.id, ?wait, "domain deferred by Retry-After; rescheduling");
            let timing = PollTiming {
                ok: true,
                consecutive_failures: state.consecutive_failures,
                ttl: None,
                cache: None,
                retry_after: Some(wait),
            };
            (timing, Vec::new(), Vec::new(), false, Ok(()))
        }
        Ok(done) => {
            state.last_success_at = Some(now);
            state.last_error = None;
            state.consecutive_failures = 0;
            state.initialized = true;
            let timing = PollTiming {
                ok: true,
                consecutive_failures: 0,
                ttl: done.ttl,
                cache: done.cache,
                retry_after: None,
            };
            (timing, done.events, done.touch, done.unchanged, Ok(()))
        }
        Err(e) => {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            // Shown in logs, `last_error`, `sources list` and the admin API:
            // no URL in it may carry the source's credentials.
            let msg = redact_urls_in(&e.to_string()).into_owned();
            if state.consecutive_failures == 1 || state.consecutive_failures.is_power_of_two() {
                tracing::warn!(source = %src.id, failures = state.consecutive_failures, "poll failed: {msg}");
            } else {
                tracing::debug!(source = %src.id, failures = state.consecutive_failures, "poll failed: {msg}");
            }
            if state.consecutive_failures > 1 && state.last_error.is_none() {
                tracing::info!(source = %src.id, "source failing again");
            }
            state.last_error = Some(msg.clone());
            let retry_after = match &e {
                PollError::Fetch(f) => f.retry_after(),
                _ => None,
            };
            let timing = PollTiming {
                ok: false,
                consecutive_failures: state.consecutive_failures,
                ttl: None,
                cache: None,
                retry_after,
            };
            (timing, Vec::new(), Vec::new(), false, Err(msg))
        }
    };
    let delay = scheduler::next_delay(&src.cadence, now, &timing, rand::random::<f64>());
    state.next_poll_at = chrono::Duration::from_std(delay).ok().map(|d| now + d);
    let n = batch_events.len();
    let batch = WriteBatch {
        events: batch_events,
        source: Some(state),
        touch_items: touch,
        refresh_items: unchanged,
    };
    match ctx.store.write(batch).await {
        Ok(_) if n > 0 => tracing::info!(source = %src.id, events = n, "stored new events"),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(source = %src.id, error = %e, "cannot store poll result");
            return PollResult {
                outcome: Err(format!("store: {e}")),
                next_in: delay,
                skipped: false,
            };
        }
    }
    PollResult {
        outcome: result,
        next_in: delay,
        skipped: false,
    }
}

struct PollDone {
    events: Vec<crate::store::NewEvent>,
    /// Items stored without an event (held back by `initial_items`, new aliases).
    touch: Vec<crate::store::ItemState>,
    /// The content is what the last 200 had (304, or a page without a
    /// significant change): its items are still there.
    unchanged: bool,
    ttl: Option<Duration>,
    cache: Option<Duration>,
}

async fn poll_inner(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    state: &mut SourceState,
) -> Result<PollDone, PollError> {
    if let Some(host) = src.url.host_str() {
        let politeness = ctx.fetcher.politeness();
        if let Some(wait) = politeness.deferred_for(host) {
            if wait > Duration::from_secs(1) {
                return Err(PollError::Deferred(wait));
            }
        }
    }
    let mut req = FetchRequest::get(src.url.clone());
    req.etag = state.etag.clone();
    req.last_modified = state.last_modified.clone();
    req.user_agent = src.user_agent.clone();
    req.headers = src.headers.clone();
    req.accept = Some(accept_for(src));
    let fetched = match ctx.fetcher.fetch(&req).await? {
        FetchResponse::NotModified { hints } => {
            return Ok(PollDone {
                events: Vec::new(),
                touch: Vec::new(),
                unchanged: true,
                ttl: None,
                cache: hints.not_before,
            });
        }
        FetchResponse::Body(f) => f,
    };
    let cache = fetched.hints.not_before;
    let (items, ttl, snapshot) = parse(src, &fetched, state.snapshot.clone()).await?;
    // A page below the change threshold yields no item, but it is still there.
    let unchanged = matches!(src.kind, SourceKind::Html(_)) && items.is_empty();
    let known = if matches!(src.kind, SourceKind::Firehose(_)) {
        let ids = normalize::identity_keys(&items);
        ctx.store.items_by_ids(src.id.as_str(), ids).await?
    } else {
        ctx.store.items(src.id.as_str()).await?
    };
    let first_poll = !state.initialized;
    let fetched_at = fetched.fetched_at;
    let plan = plan_off_runtime(src, items, known, first_poll, fetched_at).await?;
    // Only a successfully parsed 200 moves the validators and the snapshot.
    state.etag = fetched.etag;
    state.last_modified = fetched.last_modified;
    if let Some(s) = snapshot {
        state.snapshot = Some(s);
    }
    Ok(PollDone {
        events: plan.events,
        touch: plan.touch,
        unchanged,
        ttl,
        cache,
    })
}

fn accept_for(src: &SourceConfig) -> &'static str {
    match src.kind {
        SourceKind::Rss => "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
        SourceKind::Json => "application/feed+json, application/json;q=0.9, */*;q=0.5",
        SourceKind::Html(_) => "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
        SourceKind::Firehose(_) => "application/json, application/x-ndjson;q=0.9, */*;q=0.5",
    }
}

/// Items, the feed's ttl, and (html) the new snapshot to store.
type ParseOut = (Vec<Item>, Option<Duration>, Option<String>);

/// Parses a body on a blocking thread. For html sources, also returns the new
/// snapshot to store (only when it changed meaningfully or is the first).
async fn parse(
    src: &SourceConfig,
    fetched: &Fetched,
    prev_snapshot: Option<String>,
) -> Result<ParseOut, PollError> {
    let body = fetched.body.clone();
    let ct = fetched.content_type.clone();
    let base = fetched.final_url.clone();
    let kind = src.kind.clone();
    let page_url = fetched.final_url.to_string();
    let task = tokio::task::spawn_blocking(move || -> Result<ParseOut, PollError> {
        match &kind {
            SourceKind::Rss | SourceKind::Json => {
                let Parsed { items, ttl } = feed::parse(&body, ct.as_deref(), &base)?;
                Ok((items, ttl, None))
            }
            SourceKind::Firehose(settings) => {
                let Parsed { items, ttl } = firehose::parse_json(&body, settings, &base)?;
                Ok((items, ttl, None))
            }
            SourceKind::Html(settings) => {
                let snap = html::extract(&body, ct.as_deref(), settings)?;
                let item = |diff: Option<html::Change>| Item {
                    guid: Some("page".into()),
                    url: Some(page_url.clone()),
                    title: snap.title.clone(),
                    content: snap.text.clone(),
                    published: None,
                    diff: diff.as_ref().map(|c| c.diff.clone()),
                    added: diff.map(|c| c.added),
                    ..Item::default()
                };
                match prev_snapshot {
                    None => Ok((vec![item(None)], None, Some(snap.text.clone()))),
                    Some(prev) => match html::diff(&prev, &snap.text, settings.min_change) {
                        None => Ok((Vec::new(), None, None)),
                        Some(change) => {
                            Ok((vec![item(Some(change))], None, Some(snap.text.clone())))
                        }
                    },
                }
            }
        }
    });
    task.await.map_err(|e| PollError::Task(e.to_string()))?
}

/// A streaming firehose (ndjson / sse): the upstream reader sends batches;
/// each is normalised and committed with the upstream cursor in one
/// transaction, so a restart resumes exactly after the last stored item.
async fn run_stream(ctx: Arc<Ctx>, src: Arc<SourceConfig>, cancel: CancellationToken) {
    let mut state = match ctx.store.source_state(src.id.as_str()).await {
        Ok(s) => s.unwrap_or_else(|| SourceState {
            source_id: src.id.as_str().to_owned(),
            ..Default::default()
        }),
        Err(e) => {
            tracing::error!(source = %src.id, error = %e, "cannot read source state; upstream not started");
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<firehose::UpstreamBatch>(UPSTREAM_QUEUE);
    let (htx, mut hrx) = mpsc::channel::<Result<(), String>>(16);
    let reader = tokio::spawn(firehose::run_upstream(
        src.clone(),
        ctx.fetcher.clone(),
        state.upstream_cursor.clone(),
        tx,
        htx,
        cancel.clone(),
    ));
    loop {
        tokio::select! {
            // Store whatever the reader already handed over before stopping.
            biased;
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                if !store_or_give_up(&ctx, &src, &mut state, &batch, &cancel).await {
                    // Shutdown gave this batch up: storing any later one
                    // would move the cursor past it and lose it for good.
                    break;
                }
            }
            health = hrx.recv() => {
                let Some(health) = health else { continue };
                record_health(&ctx, &src, &mut state, health).await;
            }
        }
    }
    let _ = reader.await;
}

/// Stores one upstream batch, retrying with capped backoff until it is
/// stored (the reader waits meanwhile: the channel is bounded). Each failure
/// is recorded as the source's error, so a batch that keeps failing shows
/// as a failing source rather than a silent stall. Returns false when
/// `cancel` fired first: the batch is given up, and since the stored cursor
/// still points before it, the next run fetches it again.
async fn store_or_give_up(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    state: &mut SourceState,
    batch: &firehose::UpstreamBatch,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(STORE_RETRY);
    loop {
        let e = match store_upstream_batch(ctx, src, state, batch).await {
            Ok(()) => return true,
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::error!(source = %src.id, error = %e, "cannot store upstream items; retrying in {delay:?}");
        // `state` still holds the cursor before this batch: recording the
        // error never moves it.
        record_health(
            ctx,
            src,
            state,
            Err(format!("cannot store upstream items: {e}")),
        )
        .await;
        tokio::select! {
            () = cancel.cancelled() => {
                tracing::warn!(
                    source = %src.id,
                    items = batch.items.len(),
                    "shutdown: gave up upstream items that could not be stored; the next run reads them again"
                );
                return false;
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// [`normalize::plan`] on a blocking thread: hashing and text work grow
/// with the feed, and the async workers also serve the SSE edge.
async fn plan_off_runtime(
    src: &Arc<SourceConfig>,
    items: Vec<Item>,
    known: Vec<crate::store::ItemState>,
    first_poll: bool,
    at: DateTime<Utc>,
) -> Result<normalize::Plan, PollError> {
    let src = Arc::clone(src);
    tokio::task::spawn_blocking(move || normalize::plan(&src, items, &known, first_poll, at))
        .await
        .map_err(|e| PollError::Task(e.to_string()))
}

/// Normalises and commits one upstream batch with the cursor after it.
/// `state` (what the next write stores) only moves when the commit succeeded,
/// so a failed batch never lets a later write record a cursor past it.
async fn store_upstream_batch(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    state: &mut SourceState,
    batch: &firehose::UpstreamBatch,
) -> Result<(), PollError> {
    let now = Utc::now();
    let ids = normalize::identity_keys(&batch.items);
    let known = ctx.store.items_by_ids(src.id.as_str(), ids).await?;
    // `plan` reads documents as feeds list them (newest first); an upstream
    // stream delivers oldest first, so hand it over reversed to keep arrival order.
    let mut items = batch.items.clone();
    items.reverse();
    let plan = plan_off_runtime(src, items, known, false, now).await?;
    let mut next = state.clone();
    next.last_poll_at = Some(now);
    next.last_success_at = Some(now);
    next.last_error = None;
    next.consecutive_failures = 0;
    next.initialized = true;
    if batch.cursor.is_some() {
        next.upstream_cursor.clone_from(&batch.cursor);
    }
    let n = plan.events.len();
    ctx.store
        .write(WriteBatch {
            events: plan.events,
            source: Some(next.clone()),
            touch_items: plan.touch,
            refresh_items: false,
        })
        .await?;
    *state = next;
    tracing::debug!(source = %src.id, events = n, "stored upstream items");
    Ok(())
}

async fn record_health(
    ctx: &Ctx,
    src: &SourceConfig,
    state: &mut SourceState,
    health: Result<(), String>,
) {
    let now: DateTime<Utc> = Utc::now();
    state.last_poll_at = Some(now);
    match health {
        Ok(()) => {
            if state.last_error.take().is_some() {
                tracing::info!(source = %src.id, "upstream connected");
            }
            state.consecutive_failures = 0;
            state.last_success_at = Some(now);
        }
        Err(msg) => {
            let msg = redact_urls_in(&msg).into_owned();
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            if state.consecutive_failures == 1 || state.consecutive_failures.is_power_of_two() {
                tracing::warn!(source = %src.id, failures = state.consecutive_failures, "upstream: {msg}");
            }
            state.last_error = Some(msg);
        }
    }
    let batch = WriteBatch {
        events: Vec::new(),
        source: Some(state.clone()),
        touch_items: Vec::new(),
        refresh_items: false,
    };
    if let Err(e) = ctx.store.write(batch).await {
        tracing::error!(source = %src.id, error = %e, "cannot store upstream health");
    }
}

#[cfg(test)]
mod tests;
