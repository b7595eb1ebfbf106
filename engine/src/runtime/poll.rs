//! One poll of one source, start to commit: fetch → parse → plan → write,
//! the poll's error, and the set of polls in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::{JoinError, JoinSet};

use super::ctx::{identify_off_runtime, known_by, lookup_keys, plan_off_runtime, Ctx};
use crate::config::SourceConfig;
use crate::fetch::{redact_urls_in, FetchError, FetchRequest, FetchResponse, Fetched};
use crate::metrics::{ErrorKind, PollOutcome};
use crate::scheduler::{self, PollTiming};
use crate::sources::{Body, Kind, Parse, SourceError};
use crate::store::{SourceState, StoreError, WriteBatch};

/// Why one poll failed. Shown (as a [`PollFailed`], with credentials in
/// URLs redacted) as the source's `last_error` and to `poll_now`.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Fetching failed.
    #[error("fetch: {0}")]
    Fetch(#[from] FetchError),
    /// The response could not be turned into items.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Storing failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A parse or plan task on a blocking thread died.
    #[error("internal: {0}")]
    Task(#[from] JoinError),
    /// The poll task itself panicked, with this message; recorded by the loop
    /// in its place.
    #[error("internal: the poll panicked: {0}")]
    Panicked(String),
    /// The poll task was cancelled before it reported.
    #[error("internal: the poll was cancelled")]
    Aborted,
    /// Shutdown began while the poll ran; its result was not stored.
    #[error("cancelled by shutdown")]
    Shutdown,
    /// Not polled: enough polls of this host's domain are already in flight
    /// or waiting (see `Politeness::crowded`).
    #[error("skipped: enough polls of {host}'s domain are already in flight or waiting")]
    Crowded {
        /// The source's host.
        host: String,
    },
    /// The source's domain is under a Retry-After for this long: not polled.
    #[error("deferred by the domain's Retry-After for {0:?}")]
    Deferred(Duration),
}

/// A failed poll as everyone waiting for it sees it: one [`PollError`],
/// shared by every `poll_now` waiting on the poll, displayed with
/// credentials in URLs redacted (it is shown in logs, `last_error`, the CLI
/// and the admin API). The inner error is deliberately not its `source()`:
/// an error-chain printer would show it unredacted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", redact_urls_in(&.0.to_string()))]
pub struct PollFailed(Arc<PollError>);

impl PollFailed {
    /// The poll's error, to match on (display the `PollFailed`, not this).
    pub fn error(&self) -> &PollError {
        &self.0
    }
}

impl From<PollError> for PollFailed {
    fn from(e: PollError) -> Self {
        Self(Arc::new(e))
    }
}

/// How one poll ended and when the source is due next.
pub(super) struct PollResult {
    /// The error on failure (recorded in the source's state when the store allowed).
    pub(super) outcome: Result<(), PollFailed>,
    /// Delay until the next poll (the same value stored as `next_poll_at`).
    pub(super) next_in: Duration,
    /// Nothing was fetched or stored: the domain already had enough polls in
    /// flight or waiting (see `Politeness::crowded`); try again after `next_in`.
    pub(super) skipped: bool,
}

/// One poll of one source, start to commit.
pub(super) async fn poll_once(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    kind: &Arc<dyn Kind>,
) -> PollResult {
    // Enough polls of this domain are already fetching or waiting for their
    // turn: come back shortly rather than wait in an in-flight slot (nothing
    // is read or written, so skipping is cheap).
    let host = src.url.host_str().unwrap_or_default();
    let metrics = ctx.store.metrics().engine();
    if let Some(wait) = ctx.fetcher.politeness().crowded(host) {
        metrics.poll(src.source_type, PollOutcome::Skipped);
        return PollResult {
            outcome: Err(PollError::Crowded {
                host: host.to_owned(),
            }
            .into()),
            next_in: wait.mul_f64(1.0 + rand::random::<f64>()),
            skipped: true,
        };
    }
    let started = Utc::now();
    let clock = std::time::Instant::now();
    let mut state = match ctx.store.source_state(src.id.as_str()).await {
        Ok(s) => s.unwrap_or_else(|| SourceState {
            source_id: src.id.as_str().to_owned(),
            ..Default::default()
        }),
        Err(e) => {
            // Not even the state could be read: retry on the source's cadence.
            metrics.poll(src.source_type, PollOutcome::Error);
            metrics.error(ErrorKind::Store);
            return PollResult {
                outcome: Err(PollError::Store(e).into()),
                next_in: scheduler::base_delay(&src.cadence, started),
                skipped: false,
            };
        }
    };
    state.last_poll_at = Some(started);
    let outcome = poll_inner(ctx, src, kind, &mut state).await;
    let now = Utc::now();
    let mut counted = PollOutcome::Ok;
    let mut error_kind = None;
    let (timing, batch_events, touch, unchanged, result) = match outcome {
        Err(PollError::Deferred(wait)) => {
            // The domain asked everyone to wait (429/503 Retry-After): not this
            // source's failure; try again when the domain allows.
            tracing::debug!(source = %src.id, ?wait, "domain deferred by Retry-After; rescheduling");
            counted = PollOutcome::Deferred;
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
            if done.not_modified {
                counted = PollOutcome::NotModified;
            }
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
            counted = PollOutcome::Error;
            error_kind = Some(ErrorKind::of_poll(&e));
            let retry_after = match &e {
                PollError::Fetch(f) => f.retry_after(),
                _ => None,
            };
            // Shown in logs, `last_error`, `sources list` and the admin API:
            // no URL in it may carry the source's credentials (the
            // `PollFailed` display redacts them).
            let failed = PollFailed::from(e);
            let msg = failed.to_string();
            if state.consecutive_failures == 1 || state.consecutive_failures.is_power_of_two() {
                tracing::warn!(source = %src.id, failures = state.consecutive_failures, "poll failed: {msg}");
            } else {
                tracing::debug!(source = %src.id, failures = state.consecutive_failures, "poll failed: {msg}");
            }
            if state.consecutive_failures > 1 && state.last_error.is_none() {
                tracing::info!(source = %src.id, "source failing again");
            }
            state.last_error = Some(msg);
            let timing = PollTiming {
                ok: false,
                consecutive_failures: state.consecutive_failures,
                ttl: None,
                cache: None,
                retry_after,
            };
            (timing, Vec::new(), Vec::new(), false, Err(failed))
        }
    };
    let delay = scheduler::next_delay(&src.cadence, now, &timing, rand::random::<f64>());
    state.next_poll_at = chrono::Duration::from_std(delay).ok().map(|d| now + d);
    let n = batch_events.len();
    let failures = state.consecutive_failures;
    let batch = WriteBatch {
        events: batch_events,
        source: Some(state),
        touch_items: touch,
        refresh_items: unchanged,
    };
    let written = ctx.store.write(batch).await;
    // Counted once the poll's result is known, including its commit.
    let (counted, error_kind) = match &written {
        Ok(_) => (counted, error_kind),
        Err(_) => (PollOutcome::Error, Some(ErrorKind::Store)),
    };
    metrics.poll(src.source_type, counted);
    if let Some(kind) = error_kind {
        metrics.error(kind);
    }
    metrics.poll_duration(src.source_type, clock.elapsed());
    metrics.source_failures(src.id.as_str(), failures);
    match written {
        Ok(evs) if n > 0 => {
            metrics.events_emitted(src.source_type, evs.len());
            tracing::info!(source = %src.id, events = n, "stored new events");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(source = %src.id, error = %e, "cannot store poll result");
            return PollResult {
                outcome: Err(PollError::Store(e).into()),
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
    /// The upstream answered 304.
    not_modified: bool,
    ttl: Option<Duration>,
    cache: Option<Duration>,
}

async fn poll_inner(
    ctx: &Ctx,
    src: &Arc<SourceConfig>,
    kind: &Arc<dyn Kind>,
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
    req.accept = Some(kind.accept());
    let fetched = match ctx.fetcher.fetch(&req).await? {
        FetchResponse::NotModified { hints } => {
            return Ok(PollDone {
                events: Vec::new(),
                touch: Vec::new(),
                unchanged: true,
                not_modified: true,
                ttl: None,
                cache: hints.not_before,
            });
        }
        FetchResponse::Body(f) => f,
    };
    let cache = fetched.hints.not_before;
    let Parse {
        items,
        ttl,
        remember,
        unchanged,
    } = parse(kind, &fetched, state.snapshot.clone()).await?;
    ctx.store
        .metrics()
        .engine()
        .items_parsed(src.source_type, items.len());
    let identified = identify_off_runtime(items).await?;
    let known = known_by(ctx, src, lookup_keys(kind.lookup(), &identified)).await?;
    let first_poll = !state.initialized;
    let fetched_at = fetched.fetched_at;
    let plan = plan_off_runtime(src, identified, known, first_poll, fetched_at).await?;
    // Only a successfully parsed 200 moves the validators and what the kind remembers.
    state.etag = fetched.etag;
    state.last_modified = fetched.last_modified;
    if let Some(s) = remember {
        state.snapshot = Some(s);
    }
    Ok(PollDone {
        events: plan.events,
        touch: plan.touch,
        unchanged,
        not_modified: false,
        ttl,
        cache,
    })
}

/// [`Kind::parse`] on a blocking thread (parsing grows with the body; the
/// async workers also serve the SSE edge). `memory` is what the kind asked
/// to remember last time.
async fn parse(
    kind: &Arc<dyn Kind>,
    fetched: &Fetched,
    memory: Option<String>,
) -> Result<Parse, PollError> {
    let kind = Arc::clone(kind);
    let bytes = fetched.body.clone();
    let content_type = fetched.content_type.clone();
    let url = fetched.final_url.clone();
    let task = tokio::task::spawn_blocking(move || {
        let body = Body {
            bytes: &bytes,
            content_type: content_type.as_deref(),
            url: &url,
        };
        kind.parse(&body, memory.as_deref())
    });
    Ok(task.await??)
}

/// The polls in flight. A task that panics returns no result, so which
/// slot it polled is kept by task id: the slot is freed and its source
/// rescheduled instead of staying "polling" forever.
#[derive(Default)]
pub(super) struct Polls {
    tasks: JoinSet<PollResult>,
    running: HashMap<tokio::task::Id, Running>,
}

/// What a poll task is for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running {
    pub(super) slot: usize,
    /// The slot's epoch when the poll started.
    pub(super) epoch: u64,
    /// Records the failure of a poll that panicked (not a poll itself).
    pub(super) recovery: bool,
}

impl Polls {
    pub(super) fn spawn(
        &mut self,
        task: Running,
        fut: impl std::future::Future<Output = PollResult> + Send + 'static,
    ) {
        let id = self.tasks.spawn(fut).id();
        self.running.insert(id, task);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next finished task and its result (`Err` if it panicked).
    pub(super) async fn join_next(&mut self) -> Option<(Running, Result<PollResult, JoinError>)> {
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

/// Why a poll task died: its panic message, or that it was cancelled.
pub(super) fn task_failure(e: JoinError) -> PollError {
    if !e.is_panic() {
        return PollError::Aborted;
    }
    PollError::Panicked(panic_message(e.into_panic()))
}

/// A panic's message (its payload when that is a string).
pub(super) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Records a poll that died as a failed poll of its source (shown as its
/// `last_error`, counted in its failures) and schedules it with the failure
/// backoff.
pub(super) async fn record_poll_failure(
    ctx: Arc<Ctx>,
    src: Arc<SourceConfig>,
    failed: PollFailed,
) -> PollResult {
    let now = Utc::now();
    let mut state = match ctx.store.source_state(src.id.as_str()).await {
        Ok(s) => s.unwrap_or_else(|| SourceState {
            source_id: src.id.as_str().to_owned(),
            ..Default::default()
        }),
        Err(e) => {
            tracing::error!(source = %src.id, error = %e, "cannot record the failed poll");
            return PollResult {
                outcome: Err(failed),
                next_in: scheduler::base_delay(&src.cadence, now),
                skipped: false,
            };
        }
    };
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    let metrics = ctx.store.metrics().engine();
    metrics.poll(src.source_type, PollOutcome::Error);
    metrics.error(ErrorKind::of_poll(failed.error()));
    metrics.source_failures(src.id.as_str(), state.consecutive_failures);
    state.last_poll_at = Some(now);
    state.last_error = Some(failed.to_string());
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
        outcome: Err(failed),
        next_in: delay,
        skipped: false,
    }
}
