//! The delivery worker of one endpoint: reads the event log after the
//! endpoint's cursor with its filter, POSTs each matching event (in id
//! order, one at a time unless `concurrency` allows more), retries on the
//! Standard Webhooks schedule, and moves the cursor only past events that
//! got a 2xx (and past events that do not match). Its state changes —
//! failing when the schedule runs out, disabled on a 410 or after 5 days
//! failing, paused when events after its cursor were pruned — are logged
//! and saved with its progress.
//!
//! It never skips: the cursor is the position before the first event that
//! is not delivered yet, whatever happens (a crash repeats what was in
//! flight, with the same `webhook-id`). It only reads and sends; its
//! progress goes to a [`ProgressSink`] (the store's writer, coalesced), so
//! a slow receiver holds up nothing but its own endpoint.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::deliver::{Request, Response, Transport};
use super::metrics::EndpointSeries;
use super::model::{Endpoint, Progress, State};
use super::schedule::{retry_delay, Verdict, DISABLE_AFTER_FAILING};
use crate::filter::Filter;
use crate::log::{EventLog, LogError, LogRow};

/// Events read from the log at a time (and held at most, beside the ones in flight).
pub(crate) const PAGE: usize = 256;
/// A caught-up worker reads again after this even without a commit signal.
const IDLE_READ: Duration = Duration::from_secs(10);
/// A failed read of the log is tried again after this.
const READ_RETRY: Duration = Duration::from_secs(1);
/// A cursor that only moved past events that do not match is saved at most
/// this often (it only needs to stay inside the retention window).
const SKIP_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Where a worker's progress goes (the store's writer, coalesced; a
/// recorder in tests).
pub(crate) trait ProgressSink: Send + Sync + 'static {
    /// Saves `progress` of endpoint `id` unless an operator changed its
    /// progress since `epoch`.
    fn save(&self, id: i64, epoch: i64, progress: &Progress);
}

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The event log, read after the cursor.
    pub(crate) log: Arc<dyn EventLog>,
    /// Sends the attempts: the current transport, replaced by a config
    /// reload that changes `[fetch]` (which also ends scheduled retry waits).
    pub(crate) transport: watch::Receiver<Arc<dyn Transport>>,
    /// Takes the progress.
    pub(crate) sink: Arc<dyn ProgressSink>,
    /// Changes when a batch of events was committed: a caught-up worker reads again.
    pub(crate) head: watch::Receiver<u64>,
    /// Stops the worker (shutdown, endpoint deleted).
    pub(crate) cancel: CancellationToken,
}

/// Why a phase of the worker ended.
enum Stop {
    /// Shut down or the endpoint was deleted.
    Quit,
    /// The operator changed the endpoint: take the new settings.
    Settings,
    /// The endpoint's state changed (its progress says to what).
    State,
}

/// Runs the endpoint whose settings `config` carries until `ctx.cancel`,
/// reporting to its `series` as it goes.
pub(crate) async fn run(
    mut config: watch::Receiver<Arc<Endpoint>>,
    mut ctx: Ctx,
    series: EndpointSeries,
) {
    let mut ep = config.borrow_and_update().clone();
    let mut progress = ep.progress.clone();
    series.progress(&progress);
    loop {
        let stop = match progress.state {
            State::Active => {
                Session::new(ep.clone(), &mut progress, &series)
                    .run(&mut config, &mut ctx)
                    .await
            }
            State::Failing => failing(&ep, &mut progress, &mut config, &mut ctx, &series).await,
            State::Paused | State::Disabled => {
                idle(&ep, &progress, &mut config, &mut ctx, &series).await
            }
        };
        match stop {
            Stop::Quit => return,
            Stop::State => {}
            Stop::Settings => {
                let new = config.borrow_and_update().clone();
                if new.epoch != ep.epoch {
                    progress = new.progress.clone();
                    series.progress(&progress);
                    // Where it starts over is read anew (replay, enable).
                    series.pending(None);
                }
                ep = new;
            }
        }
    }
}

/// A paused or disabled endpoint waits for the operator (keeping its lag
/// true meanwhile).
async fn idle(
    ep: &Endpoint,
    progress: &Progress,
    config: &mut watch::Receiver<Arc<Endpoint>>,
    ctx: &mut Ctx,
    series: &EndpointSeries,
) -> Stop {
    tokio::select! {
        _ = ctx.cancel.cancelled() => Stop::Quit,
        changed = config.changed() => if changed.is_ok() { Stop::Settings } else { Stop::Quit },
        // Never ends.
        () = watch_lag(ep, progress.cursor, &ctx.log, &mut ctx.head, series) => Stop::Quit,
    }
}

/// Keeps the lag of an endpoint that is not delivering true: when its
/// worker does not know the oldest matching event after its cursor (it
/// started in this state, or was caught up when it stopped), the log is
/// read for it now and after every commit until one is found, each read
/// going on from where the last one stopped. Never ends.
async fn watch_lag(
    ep: &Endpoint,
    cursor: Uuid,
    log: &Arc<dyn EventLog>,
    head: &mut watch::Receiver<u64>,
    series: &EndpointSeries,
) {
    let Ok(filter) = &ep.filter else {
        return std::future::pending().await;
    };
    // Every event up to here was read and none matched.
    let mut scanned = cursor;
    loop {
        if series.pending_now().is_none() {
            head.borrow_and_update();
            match first_pending(log.clone(), scanned, filter.clone()).await {
                Ok(Scan::Found(id)) => series.pending(Some(id)),
                Ok(Scan::Upto(pos)) => scanned = scanned.max(pos),
                Err(e) => {
                    tracing::debug!(webhook = %ep.name, error = %e, "cannot read the event log for the webhook's lag")
                }
            }
        }
        if head.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Pages read at most per look for the first matching event after a
/// cursor (the lag of an endpoint that is not delivering); the next look
/// goes on from there.
const LAG_SCAN_PAGES: usize = 16;

/// What a look for the first matching event found.
enum Scan {
    /// This event.
    Found(Uuid),
    /// None up to this position.
    Upto(Uuid),
}

/// The first event after `after` that `filter` matches, if one is in the
/// next [`LAG_SCAN_PAGES`] pages of the log.
async fn first_pending(
    log: Arc<dyn EventLog>,
    after: Uuid,
    filter: Filter,
) -> Result<Scan, LogError> {
    tokio::task::spawn_blocking(move || {
        let scope = filter.read_scope();
        let mut after = after;
        for _ in 0..LAG_SCAN_PAGES {
            let rows = log.read_after(after, PAGE, &scope)?;
            if let Some(row) = rows
                .iter()
                .find(|r| filter.matches_json(&r.source_id, r.source_type, &r.json))
            {
                return Ok(Scan::Found(row.id));
            }
            match rows.last() {
                Some(last) => after = last.id,
                None => break,
            }
            if rows.len() < PAGE {
                break;
            }
        }
        Ok(Scan::Upto(after))
    })
    .await
    .map_err(LogError::Task)?
}

/// A failing endpoint waits for the operator (keeping its lag true
/// meanwhile), and is disabled when its first failure is
/// [`DISABLE_AFTER_FAILING`] old.
async fn failing(
    ep: &Endpoint,
    progress: &mut Progress,
    config: &mut watch::Receiver<Arc<Endpoint>>,
    ctx: &mut Ctx,
    series: &EndpointSeries,
) -> Stop {
    let since = progress
        .failing_since
        .or(progress.state_since)
        .unwrap_or_else(Utc::now);
    let deadline = since + chrono::Duration::from_std(DISABLE_AFTER_FAILING).unwrap_or_default();
    let wait = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    let disable_at = Instant::now() + wait;
    let cursor = progress.cursor;
    tokio::select! {
        _ = ctx.cancel.cancelled() => return Stop::Quit,
        changed = config.changed() => return if changed.is_ok() { Stop::Settings } else { Stop::Quit },
        _ = tokio::time::sleep_until(disable_at) => {}
        // Never ends.
        () = watch_lag(ep, cursor, &ctx.log, &mut ctx.head, series) => return Stop::Quit,
    }
    let reason = format!(
        "failing since {} (5 days): disabled; its cursor is kept — `livestrom webhook enable {}` once the receiver works",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ep.name
    );
    set_state(progress, State::Disabled, reason, ep, ctx, series);
    Stop::State
}

/// Saves `progress` and shows its state and failures on `/metrics`.
fn save(progress: &Progress, ep: &Endpoint, ctx: &Ctx, series: &EndpointSeries) {
    series.progress(progress);
    ctx.sink.save(ep.id, ep.epoch, progress);
}

/// Moves the endpoint to `state`, saves, and says so in the log.
fn set_state(
    progress: &mut Progress,
    state: State,
    reason: String,
    ep: &Endpoint,
    ctx: &Ctx,
    series: &EndpointSeries,
) {
    tracing::warn!(
        webhook = %ep.name,
        state = state.as_str(),
        reason = %reason,
        cursor = %progress.cursor,
        "webhook {} is {}: {reason}",
        ep.name,
        state.as_str()
    );
    progress.state = state;
    progress.state_reason = Some(reason);
    progress.state_since = Some(Utc::now());
    progress.next_attempt_at = None;
    save(progress, ep, ctx, series);
}

/// One event read and not yet behind the cursor.
struct Slot {
    id: Uuid,
    json: Arc<str>,
    started: bool,
    done: bool,
    /// Failed attempts of this event.
    failures: u32,
}

/// An attempt that came back.
struct Done {
    id: Uuid,
    started: DateTime<Utc>,
    response: Response,
    /// The transport, seen as the attempt was sent: a retry's wait ends
    /// when it is replaced after that (also while the attempt was in flight).
    transport: watch::Receiver<Arc<dyn Transport>>,
}

/// An active endpoint delivering, until its settings or state change.
struct Session<'p> {
    ep: Arc<Endpoint>,
    progress: &'p mut Progress,
    series: &'p EndpointSeries,
    /// Every matching event up to here is in `window` or delivered.
    read_pos: Uuid,
    /// The last read found nothing more: wait for a commit.
    caught_up: bool,
    /// Matching events read and not yet behind the cursor, in id order.
    window: VecDeque<Slot>,
    inflight: FuturesUnordered<BoxFuture<'static, Done>>,
    /// A restart during a retry wait: the first attempt waits out the rest.
    first_delay: Option<Duration>,
    /// When a cursor moved only past unmatched events was last saved.
    skip_saved_at: Option<Instant>,
}

impl<'p> Session<'p> {
    fn new(ep: Arc<Endpoint>, progress: &'p mut Progress, series: &'p EndpointSeries) -> Self {
        let first_delay = progress
            .next_attempt_at
            .filter(|_| progress.failures > 0)
            .and_then(|at| (at - Utc::now()).to_std().ok());
        Self {
            read_pos: progress.cursor,
            ep,
            progress,
            series,
            caught_up: false,
            window: VecDeque::new(),
            inflight: FuturesUnordered::new(),
            first_delay,
            skip_saved_at: None,
        }
    }

    async fn run(mut self, config: &mut watch::Receiver<Arc<Endpoint>>, ctx: &mut Ctx) -> Stop {
        let filter = match &self.ep.filter {
            Ok(f) => f.clone(),
            Err(e) => {
                let reason = format!("its filters no longer parse ({e}); update them to resume");
                set_state(
                    self.progress,
                    State::Paused,
                    reason,
                    &self.ep,
                    ctx,
                    self.series,
                );
                return Stop::State;
            }
        };
        // A restart inside a retry wait continues the event's schedule.
        let mut seed_failures = self.progress.failures;
        loop {
            self.start_attempts(config, ctx);
            let wants_read = !self.caught_up
                && self.window.iter().all(|s| s.started)
                && self.window.len() < PAGE;
            if wants_read {
                // Seen before reading: a commit after this wakes the wait below.
                ctx.head.borrow_and_update();
                match self.read(&filter, ctx).await {
                    Ok(()) => {
                        if let Some(first) = self.window.front_mut().filter(|_| seed_failures > 0) {
                            first.failures = seed_failures;
                            seed_failures = 0;
                        }
                        continue;
                    }
                    Err(ReadFailed::Pruned { after, floor }) => {
                        let reason = format!(
                            "its cursor {after} fell out of the retention window: events after it were pruned before they were delivered (the oldest retained position is {floor}); nothing was skipped — choose where to resume with `livestrom webhook replay {} --since <id>`",
                            self.ep.name
                        );
                        set_state(
                            self.progress,
                            State::Paused,
                            reason,
                            &self.ep,
                            ctx,
                            self.series,
                        );
                        return Stop::State;
                    }
                    Err(ReadFailed::Log(e)) => {
                        tracing::warn!(webhook = %self.ep.name, error = %e, "webhook cannot read the event log; retrying");
                        tokio::select! {
                            _ = ctx.cancel.cancelled() => return Stop::Quit,
                            _ = tokio::time::sleep(READ_RETRY) => continue,
                        }
                    }
                }
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Stop::Quit,
                changed = config.changed() => {
                    if changed.is_err() {
                        return Stop::Quit;
                    }
                    let new = config.borrow().clone();
                    if new.epoch != self.ep.epoch
                        || new.filter != self.ep.filter
                        || new.concurrency != self.ep.concurrency
                    {
                        return Stop::Settings;
                    }
                    // URL, secrets and timeout: the next attempt reads them.
                    self.ep = new;
                }
                Some(done) = self.inflight.next() => {
                    if let Some(stop) = self.finish(done, config, ctx) {
                        return stop;
                    }
                }
                _ = ctx.head.changed(), if self.caught_up => self.caught_up = false,
                _ = tokio::time::sleep(IDLE_READ), if self.caught_up => self.caught_up = false,
            }
        }
    }

    /// Starts attempts of events not started yet, up to the concurrency.
    fn start_attempts(&mut self, config: &watch::Receiver<Arc<Endpoint>>, ctx: &Ctx) {
        while self.inflight.len() < self.ep.concurrency {
            let Some(slot) = self.window.iter_mut().find(|s| !s.started) else {
                return;
            };
            slot.started = true;
            let delay = self.first_delay.take().unwrap_or_default();
            // Only a transport replaced from now on ends the wait.
            let mut transport = ctx.transport.clone();
            transport.borrow_and_update();
            let attempt = attempt(
                slot.id,
                slot.json.clone(),
                Wait::Scheduled(delay),
                config.clone(),
                transport,
                self.series,
            );
            self.inflight.push(attempt);
        }
    }

    /// Reads the next page after `read_pos`.
    async fn read(&mut self, filter: &Filter, ctx: &Ctx) -> Result<(), ReadFailed> {
        let log = ctx.log.clone();
        let after = self.read_pos;
        let scope = filter.read_scope();
        let read = tokio::task::spawn_blocking(move || -> Result<_, LogError> {
            // Taken first: every event at or below it is committed and so
            // in what the read sees.
            let watermark = log.watermark()?;
            let rows = log.read_after(after, PAGE, &scope)?;
            let missed = log.missed_after(after)?;
            Ok((watermark, rows, missed))
        })
        .await
        .map_err(|e| ReadFailed::Log(LogError::Task(e)))?;
        let (watermark, rows, missed): (Uuid, Vec<LogRow>, Option<Uuid>) =
            read.map_err(ReadFailed::Log)?;
        if let Some(floor) = missed {
            return Err(ReadFailed::Pruned { after, floor });
        }
        let full = rows.len() == PAGE;
        let last = rows.last().map(|r| r.id);
        for row in rows {
            if filter.matches_json(&row.source_id, row.source_type, &row.json) {
                self.window.push_back(Slot {
                    id: row.id,
                    json: row.json,
                    started: false,
                    done: false,
                    failures: 0,
                });
            }
        }
        self.read_pos = match (full, last) {
            (true, Some(last)) => last,
            (_, last) => last.map_or(watermark, |l| l.max(watermark)).max(after),
        };
        self.caught_up = !full;
        self.series.pending(self.window.front().map(|s| s.id));
        if self.window.is_empty() && self.read_pos > self.progress.cursor {
            self.progress.cursor = self.read_pos;
            if self
                .skip_saved_at
                .is_none_or(|at| at.elapsed() >= SKIP_SAVE_EVERY)
            {
                self.skip_saved_at = Some(Instant::now());
                save(self.progress, &self.ep, ctx, self.series);
            }
        }
        Ok(())
    }

    /// Takes an attempt's answer: the cursor moves, a retry is scheduled,
    /// or the endpoint's state changes (returned).
    fn finish(
        &mut self,
        done: Done,
        config: &watch::Receiver<Arc<Endpoint>>,
        ctx: &Ctx,
    ) -> Option<Stop> {
        let now = Utc::now();
        self.progress.last_attempt_at = Some(done.started);
        let url = config.borrow().url.clone();
        let (verdict, why) = done.response.judge(&url);
        // Not found: the session started over since (nothing to do).
        let slot = self.window.iter_mut().find(|s| s.id == done.id)?;
        match verdict {
            Verdict::Delivered => {
                slot.done = true;
                if self.progress.failures > 0 {
                    tracing::info!(
                        webhook = %self.ep.name,
                        failures = self.progress.failures,
                        "webhook {} delivers again after {} failed attempts",
                        self.ep.name,
                        self.progress.failures
                    );
                }
                self.progress.failures = 0;
                self.progress.failing_since = None;
                self.progress.next_attempt_at = None;
                self.progress.last_success_at = Some(now);
                self.progress.delivered += 1;
                while self.window.front().is_some_and(|s| s.done) {
                    if let Some(s) = self.window.pop_front() {
                        self.progress.cursor = s.id;
                    }
                }
                if self.window.is_empty() {
                    self.progress.cursor = self.progress.cursor.max(self.read_pos);
                }
                self.series.pending(self.window.front().map(|s| s.id));
                save(self.progress, &self.ep, ctx, self.series);
                None
            }
            Verdict::Gone => {
                let why = why.unwrap_or_default();
                self.progress.last_error = Some(why.clone());
                self.progress.last_error_at = Some(now);
                let reason = format!(
                    "the receiver answered 410 Gone to event {} ({why}); its cursor is kept — `livestrom webhook enable {}` to deliver again",
                    done.id, self.ep.name
                );
                set_state(
                    self.progress,
                    State::Disabled,
                    reason,
                    &self.ep,
                    ctx,
                    self.series,
                );
                Some(Stop::State)
            }
            Verdict::Retry { retry_after } => {
                slot.failures += 1;
                let failures = slot.failures;
                let why = why.unwrap_or_default();
                self.progress.failures += 1;
                self.progress.failing_since.get_or_insert(now);
                self.progress.last_error = Some(why.clone());
                self.progress.last_error_at = Some(now);
                let Some(delay) = retry_delay(failures, retry_after, rand::random::<f64>()) else {
                    let reason = format!(
                        "{failures} attempts to deliver event {} failed (the last: {why}); paused with its cursor kept, nothing skipped — `livestrom webhook enable {}` once the receiver works",
                        done.id, self.ep.name
                    );
                    set_state(
                        self.progress,
                        State::Failing,
                        reason,
                        &self.ep,
                        ctx,
                        self.series,
                    );
                    return Some(Stop::State);
                };
                tracing::debug!(webhook = %self.ep.name, event = %done.id, failures, delay = ?delay, error = %why, "webhook attempt failed; retrying");
                self.progress.next_attempt_at =
                    Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
                save(self.progress, &self.ep, ctx, self.series);
                let wait = match retry_after {
                    Some(_) => Wait::RetryAfter(delay),
                    None => Wait::Scheduled(delay),
                };
                let again = attempt(
                    done.id,
                    slot.json.clone(),
                    wait,
                    config.clone(),
                    done.transport,
                    self.series,
                );
                self.inflight.push(again);
                None
            }
        }
    }
}

/// Why a read of the log gave no page.
enum ReadFailed {
    /// Events after `after` may have been pruned: delivering on would skip them.
    Pruned { after: Uuid, floor: Uuid },
    /// The log could not be read (retried).
    Log(LogError),
}

/// What an attempt waits for before it is made.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The retry schedule (or nothing): a new transport (a config reload
    /// that changed `[fetch]`) ends it at once — the failures may have been
    /// the old settings' (the SSRF guard, the proxy).
    Scheduled(Duration),
    /// The receiver's `Retry-After`: waited out whatever changes here.
    RetryAfter(Duration),
}

/// One attempt after `wait`, with the endpoint's settings and the
/// transport at that moment (a rotated secret, a new URL or new fetch
/// settings apply from the next attempt on), counted in `series`.
fn attempt(
    id: Uuid,
    json: Arc<str>,
    wait: Wait,
    config: watch::Receiver<Arc<Endpoint>>,
    mut transport: watch::Receiver<Arc<dyn Transport>>,
    series: &EndpointSeries,
) -> BoxFuture<'static, Done> {
    let series = series.clone();
    Box::pin(async move {
        match wait {
            Wait::Scheduled(delay) if !delay.is_zero() => {
                let replaced = async {
                    if transport.changed().await.is_err() {
                        // Nobody can replace it any more: the full wait.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    () = replaced => {}
                }
            }
            Wait::RetryAfter(delay) if !delay.is_zero() => tokio::time::sleep(delay).await,
            Wait::Scheduled(_) | Wait::RetryAfter(_) => {}
        }
        let ep = config.borrow().clone();
        let send = transport.borrow_and_update().clone();
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let response = send.send(Request::new(&ep, id, json, started)).await;
        series.attempt(&response, clock.elapsed());
        Done {
            id,
            started,
            response,
            transport,
        }
    })
}
