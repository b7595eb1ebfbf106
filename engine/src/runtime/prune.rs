//! The pruner: events older than the retention window every ten minutes,
//! and (hourly) the state of items not seen for longer than the item horizon.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sink::Sink;

/// How often events older than the retention window are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Item state is swept every this many event prunes (hourly; the sweep
/// reads every item row, so it runs less often).
const ITEM_PRUNE_EVERY_N: u64 = 6;

/// Spawns the pruner; it stops when `cancel` fires. `configured` holds the
/// configured source ids (the item sweep forgets sources no longer
/// configured) and is updated by the loop on every reload.
pub(super) fn spawn(
    store: Arc<dyn Sink>,
    configured: Arc<Mutex<HashSet<String>>>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            match store.prune().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pruned = n, "pruned events older than the retention window")
                }
                Err(e) => tracing::warn!(error = %e, "pruning failed"),
            }
            if rounds.is_multiple_of(ITEM_PRUNE_EVERY_N) {
                // A poisoned lock still holds the last complete set.
                let ids = configured
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let sweep = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = store.prune_items(&ids) => r,
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
    })
}
