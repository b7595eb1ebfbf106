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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::ctx::Ctx;
use self::handle::Command;
use self::poll::{poll_once, record_poll_failure, task_failure, PollResult, Polls, Running};
use self::reload::apply_reload;
use self::slots::{first_poll_at, start_slot, Slot};
use crate::config::{Config, ConfigError};
use crate::fetch::{FetchError, Fetcher};
use crate::scheduler::{self, DueQueue};
use crate::store::{SourceState, Store};

pub use self::handle::{handle, Commands, EngineHandle, PollNowError};
pub use self::poll::{PollError, PollFailed};

/// Polls in flight at most; further due sources wait in the queue.
const MAX_IN_FLIGHT: usize = 256;

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
        let s = Slot::new(src);
        let streaming = s.streaming();
        slots.push(Some(s));
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
    let pruner = prune::spawn(store.clone(), configured.clone(), cancel.clone());

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
                        let failed = PollFailed::from(task_failure(died));
                        let Some(s) = slots.get(slot).and_then(Option::as_ref) else { continue };
                        tracing::error!(source = %s.src.id, "{failed}");
                        if !recovery {
                            // The slot stays busy until the failure is
                            // recorded, so no other poll of the source
                            // overwrites its state meanwhile.
                            polls.spawn(Running { slot, epoch, recovery: true }, record_poll_failure(ctx.clone(), s.src.clone(), failed));
                            in_flight += 1;
                            continue;
                        }
                        // Even recording the failure failed: free the slot
                        // and try again after the longest backoff.
                        PollResult {
                            outcome: Err(failed),
                            next_in: scheduler::MAX_BACKOFF,
                            skipped: false,
                        }
                    }
                };
                let total = slots.iter().flatten().filter(|s| !s.streaming()).count();
                let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else { continue };
                s.polling = false;
                for w in s.waiters.drain(..) {
                    let _ = w.send(res.clone().map_err(PollNowError::from));
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
                    if !s.streaming() {
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
                        let _ = reply.send(Err(PollNowError::UnknownSource(id)));
                        continue;
                    };
                    let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else { continue };
                    if s.upstream.is_some() {
                        let _ = reply.send(Err(PollNowError::Streaming(id)));
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
    let (src, kind, epoch) = (s.src.clone(), s.kind.clone(), s.epoch);
    let (ctx, cancel) = (ctx.clone(), cancel.clone());
    let task = Running {
        slot,
        epoch,
        recovery: false,
    };
    polls.spawn(task, async move {
        tokio::select! {
            r = poll_once(&ctx, &src, &kind) => r,
            _ = cancel.cancelled() => PollResult { outcome: Err(PollError::Shutdown.into()), next_in: Duration::ZERO, skipped: false },
        }
    });
    true
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

#[cfg(test)]
mod tests;
