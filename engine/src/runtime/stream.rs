//! A streaming firehose (ndjson / sse) in the runtime: the upstream reader
//! hands batches over a bounded channel; each is normalised and committed
//! with the upstream cursor, retried while the store refuses it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ctx::{known_items, plan_off_runtime, Ctx};
use super::poll::PollError;
use super::upstream::{self, HealthReport, UpstreamBatch, UpstreamError};
use crate::config::SourceConfig;
use crate::fetch::redact_urls_in;
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};
use crate::sources::Kind;
use crate::store::{SourceState, WriteBatch};

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
    loop {
        tokio::select! {
            // Store whatever the reader already handed over before stopping.
            biased;
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                if !store_or_give_up(&ctx, &src, &kind, &mut state, &batch, &cancel).await {
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
    kind: &Arc<dyn Kind>,
    state: &mut SourceState,
    batch: &UpstreamBatch,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(STORE_RETRY);
    loop {
        let e = match store_upstream_batch(ctx, src, kind, state, batch).await {
            Ok(()) => return true,
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::error!(source = %src.id, error = %e, "cannot store upstream items; retrying in {delay:?}");
        // `state` still holds the cursor before this batch: recording the
        // error never moves it.
        record_health(ctx, src, state, Err(UpstreamError::Store(e))).await;
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

/// Normalises and commits one upstream batch with the cursor after it.
/// `state` (what the next write stores) only moves when the commit succeeded,
/// so a failed batch never lets a later write record a cursor past it.
async fn store_upstream_batch(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    kind: &Arc<dyn Kind>,
    state: &mut SourceState,
    batch: &UpstreamBatch,
) -> Result<(), PollError> {
    let now = Utc::now();
    let known = known_items(ctx, src, kind.lookup(), &batch.items).await?;
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
    let stored = ctx
        .store
        .write(WriteBatch {
            events: plan.events,
            source: Some(next.clone()),
            touch_items: plan.touch,
            refresh_items: false,
        })
        .await?;
    // Counted once the batch is stored (a failed batch is retried whole).
    let metrics = ctx.store.metrics().engine();
    metrics.items_parsed(src.source_type, batch.items.len());
    metrics.events_emitted(src.source_type, stored.len());
    *state = next;
    tracing::debug!(source = %src.id, events = n, "stored upstream items");
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
