//! A streaming firehose (ndjson / sse) in the runtime: the upstream reader
//! hands batches over a bounded channel; each is normalised and committed
//! with the upstream cursor, retried while the store refuses it.
//!
//! Two batches are in the works at once: while one commits, the next is
//! looked up and planned (together about half of a batch's time in a burst).
//! Commits stay in arrival order, one at a time. **A batch is only planned
//! beside the commit in flight when its lookup reads none of the item rows
//! that commit writes** (a commit whose plan failed may write any: its
//! retry plans again); otherwise it waits for the commit, so a repeated
//! item is planned against its newest stored version, exactly as one batch
//! after another.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ctx::{identify_off_runtime, known_by, lookup_keys, plan_off_runtime, Ctx};
use super::poll::{panic_message, PollError};
use super::upstream::{self, HealthReport, UpstreamBatch, UpstreamError};
use crate::config::SourceConfig;
use crate::fetch::redact_urls_in;
use crate::normalize::{Identified, Plan};
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};
use crate::sources::Kind;
use crate::store::{SourceState, WriteBatch};

/// Upstream batches buffered between a streaming firehose reader and the
/// store. Beside the batch being planned and the one committing, 4 keep the
/// pipeline fed: 16 held ~7 MB more items through a burst of 100,000 at
/// the same ingest (docs/PERFORMANCE.md, "Burst: fewer batches queued").
const UPSTREAM_QUEUE: usize = 4;

/// Retry of an upstream batch the store refused: the reader waits meanwhile,
/// so no jitter is needed; half a second doubling to 30 s.
const STORE_RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
    factor: 2,
    jitter: Jitter::NONE,
};

/// What one source's stream runner shares with its commit tasks.
#[derive(Clone)]
struct Runner {
    ctx: Arc<Ctx>,
    src: Arc<SourceConfig>,
    kind: Arc<dyn Kind>,
    cancel: CancellationToken,
}

/// A streaming firehose (ndjson / sse): the upstream reader sends batches;
/// each is normalised and committed with the upstream cursor in one
/// transaction, so a restart resumes exactly after the last stored item.
pub(super) async fn run_stream(
    ctx: Arc<Ctx>,
    src: Arc<SourceConfig>,
    kind: Arc<dyn Kind>,
    cancel: CancellationToken,
) {
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
    let (tx, mut rx) = mpsc::channel::<UpstreamBatch>(UPSTREAM_QUEUE);
    let (htx, mut hrx) = mpsc::channel::<HealthReport>(16);
    let reader = tokio::spawn(upstream::run_upstream(
        src.clone(),
        kind.clone(),
        ctx.fetcher.clone(),
        state.upstream_cursor.clone(),
        tx,
        htx,
        cancel.clone(),
    ));
    let run = Runner {
        ctx,
        src,
        kind,
        cancel,
    };
    let mut in_flight: Option<InFlight> = None;
    loop {
        tokio::select! {
            // Store whatever the reader already handed over before stopping.
            biased;
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                // Beside the commit in flight, if any: identify the items,
                // and look them up and plan them unless that commit writes
                // one of the rows the lookup reads.
                let planned = match identify(&run, &batch).await {
                    Ok((identified, keys)) => {
                        let reads_in_flight = in_flight.as_ref().is_some_and(|f| f.writes_any(keys.as_deref()));
                        if reads_in_flight && !land(&mut in_flight, &mut state).await {
                            break;
                        }
                        plan_batch(&run, identified, keys).await
                    }
                    Err(e) => Err(e),
                };
                // Shutdown gave the batch in flight up: storing any later one
                // would move the cursor past it and lose it for good.
                if !land(&mut in_flight, &mut state).await {
                    break;
                }
                in_flight = Some(InFlight::start(&run, state.clone(), batch, planned));
            }
            health = hrx.recv() => {
                let Some(health) = health else { continue };
                // After the commit in flight: the health write stores the
                // source's state, cursor included.
                if !land(&mut in_flight, &mut state).await {
                    break;
                }
                record_health(&run.ctx, &run.src, &mut state, health).await;
            }
        }
    }
    land(&mut in_flight, &mut state).await;
    // Closed first: a reader waiting to hand over a batch ends at once.
    drop(rx);
    drop(hrx);
    let _ = reader.await;
}

/// A batch looked up and planned, on its way to the store.
struct Planned {
    plan: Plan,
    /// When it was planned (the source's poll time).
    at: DateTime<Utc>,
    /// How long the lookup and the plan took, for the log.
    lookup: Duration,
    planning: Duration,
}

/// Works out the identities of a batch's items, and the keys its kind looks
/// them up by (None: all of the source's). `plan` reads documents as feeds
/// list them (newest first); an upstream stream delivers oldest first, so
/// they are handed over reversed to keep arrival order.
async fn identify(
    run: &Runner,
    batch: &UpstreamBatch,
) -> Result<(Identified, Option<Vec<String>>), PollError> {
    let mut items = batch.items.clone();
    items.reverse();
    let identified = identify_off_runtime(items).await?;
    let keys = lookup_keys(run.kind.lookup(), &identified);
    Ok((identified, keys))
}

/// Looks up the stored state of a batch's items (by `keys`, or all of the
/// source's when None) and plans its events.
async fn plan_batch(
    run: &Runner,
    identified: Identified,
    keys: Option<Vec<String>>,
) -> Result<Planned, PollError> {
    let at = Utc::now();
    let started = Instant::now();
    let known = known_by(&run.ctx, &run.src, keys).await?;
    let lookup = started.elapsed();
    let plan = plan_off_runtime(&run.src, identified, known, false, at).await?;
    Ok(Planned {
        plan,
        at,
        lookup,
        planning: started.elapsed() - lookup,
    })
}

/// The commit of one batch, running as its own task.
struct InFlight {
    /// The item rows the commit writes; None when not known (its plan
    /// failed, and a retry plans it again).
    writes: Option<HashSet<String>>,
    /// The source's state after it, and whether it was stored (false: given
    /// up at shutdown).
    task: JoinHandle<(SourceState, bool)>,
}

impl InFlight {
    fn start(
        run: &Runner,
        state: SourceState,
        batch: UpstreamBatch,
        planned: Result<Planned, PollError>,
    ) -> Self {
        let writes = planned.as_ref().ok().map(|p| {
            p.plan
                .events
                .iter()
                .map(|e| e.event.item_id.clone())
                .chain(p.plan.touch.iter().map(|t| t.item_id.clone()))
                .collect()
        });
        let run = run.clone();
        let task = tokio::spawn(async move {
            let mut state = state;
            let stored = store_or_give_up(&run, &mut state, &batch, planned).await;
            (state, stored)
        });
        Self { writes, task }
    }

    /// Whether the commit may write a row a lookup of `keys` reads (None:
    /// all of the source's rows).
    fn writes_any(&self, keys: Option<&[String]>) -> bool {
        match (&self.writes, keys) {
            (Some(writes), Some(keys)) => keys.iter().any(|k| writes.contains(k)),
            _ => true,
        }
    }
}

/// Waits for the commit in flight, if any, and takes the source's state
/// after it. False when its batch was given up: nothing later may be stored.
async fn land(in_flight: &mut Option<InFlight>, state: &mut SourceState) -> bool {
    let Some(f) = in_flight.take() else {
        return true;
    };
    match f.task.await {
        Ok((after, stored)) => {
            *state = after;
            stored
        }
        Err(e) => {
            tracing::error!(source = %state.source_id, error = %e, "the commit of an upstream batch failed; nothing after it is stored this run");
            false
        }
    }
}

/// Stores one upstream batch, retrying with capped backoff until it is
/// stored (the reader waits meanwhile: the channel is bounded). The first
/// attempt commits `first`, planned beside the previous commit; a retry
/// looks the batch up and plans it again. Each failure is recorded as the
/// source's error, so a batch that keeps failing shows as a failing source
/// rather than a silent stall. Returns false when `cancel` fired first: the
/// batch is given up, and since the stored cursor still points before it,
/// the next run fetches it again.
async fn store_or_give_up(
    run: &Runner,
    state: &mut SourceState,
    batch: &UpstreamBatch,
    first: Result<Planned, PollError>,
) -> bool {
    let mut backoff = Backoff::new(STORE_RETRY);
    let mut attempt = Some(first);
    loop {
        let planned = match attempt.take() {
            Some(p) => p,
            None => match identify(run, batch).await {
                Ok((identified, keys)) => plan_batch(run, identified, keys).await,
                Err(e) => Err(e),
            },
        };
        // A panic in the commit is one failed attempt, like a store error.
        let attempt = AssertUnwindSafe(commit(run, state, batch, planned)).catch_unwind();
        let e = match attempt.await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e,
            Err(panic) => PollError::Panicked(panic_message(panic)),
        };
        let delay = backoff.next_delay();
        tracing::error!(source = %run.src.id, error = %e, "cannot store upstream items; retrying in {delay:?}");
        // `state` still holds the cursor before this batch: recording the
        // error never moves it.
        record_health(&run.ctx, &run.src, state, Err(UpstreamError::Store(e))).await;
        tokio::select! {
            () = run.cancel.cancelled() => {
                tracing::warn!(
                    source = %run.src.id,
                    items = batch.items.len(),
                    "shutdown: gave up upstream items that could not be stored; the next run reads them again"
                );
                return false;
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Commits one planned upstream batch with the cursor after it. `state`
/// (what the next write stores) only moves when the commit succeeded, so a
/// failed batch never lets a later write record a cursor past it.
async fn commit(
    run: &Runner,
    state: &mut SourceState,
    batch: &UpstreamBatch,
    planned: Result<Planned, PollError>,
) -> Result<(), PollError> {
    let Planned {
        plan,
        at,
        lookup,
        planning,
    } = planned?;
    let started = Instant::now();
    let mut next = state.clone();
    next.last_poll_at = Some(at);
    next.last_success_at = Some(at);
    next.last_error = None;
    next.consecutive_failures = 0;
    next.initialized = true;
    if batch.cursor.is_some() {
        next.upstream_cursor.clone_from(&batch.cursor);
    }
    let n = plan.events.len();
    let stored = run
        .ctx
        .store
        .write(WriteBatch {
            events: plan.events,
            source: Some(next.clone()),
            touch_items: plan.touch,
            refresh_items: false,
        })
        .await?;
    // Counted once the batch is stored (a failed batch is retried whole).
    let metrics = run.ctx.store.metrics().engine();
    metrics.items_parsed(run.src.source_type, batch.items.len());
    metrics.events_emitted(run.src.source_type, stored.len());
    *state = next;
    tracing::debug!(
        source = %run.src.id,
        items = batch.items.len(),
        events = n,
        ?lookup,
        plan = ?planning,
        commit = ?started.elapsed(),
        "stored upstream items"
    );
    Ok(())
}

async fn record_health(
    ctx: &Ctx,
    src: &SourceConfig,
    state: &mut SourceState,
    health: HealthReport,
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
        Err(e) => {
            let msg = redact_urls_in(&e.to_string()).into_owned();
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
