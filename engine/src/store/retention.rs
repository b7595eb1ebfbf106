//! Retention: events older than the window are deleted, and item state not
//! seen for [`item_horizon`] is swept source by source in short writer jobs
//! (the SQL of both runs on the writer thread, see `writer`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::error::StoreError;
use super::types::SEEN_REFRESH;
use super::writer::{Job, PruneStep};
use super::Store;

/// The shortest time item state is kept after it was last seen.
pub const ITEM_HORIZON_MIN: Duration = Duration::from_secs(3 * 86_400);
/// Item-state rows examined per pruning step (one short writer job each, so
/// writes interleave with a long sweep).
pub const ITEM_PRUNE_CHUNK: usize = 20_000;

/// How long item state is kept after it was last seen: the retention window,
/// and at least [`ITEM_HORIZON_MIN`] (a feed polled daily refreshes its items
/// at least every [`SEEN_REFRESH`] plus one interval).
pub fn item_horizon(retention: Duration) -> Duration {
    retention.max(ITEM_HORIZON_MIN)
}

impl Store {
    /// Deletes events older than the retention window; returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Prune(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Forgets the state of items not seen for [`item_horizon`] — but only
    /// for sources polled successfully since then (a source that was down
    /// for a week keeps its items, so nothing still in its feed is emitted
    /// again when it comes back). A source that is no longer `configured`
    /// and was not polled within the horizon is forgotten entirely: its
    /// items and its state (re-adding it later starts it as a new source).
    /// Without this the item table of a busy firehose grows forever.
    /// Sweeps each source in steps of [`ITEM_PRUNE_CHUNK`] rows, each its own
    /// writer job, so ingestion interleaves. Returns how many item rows were
    /// deleted.
    pub async fn prune_items(&self, configured: &HashSet<String>) -> Result<usize, StoreError> {
        self.prune_items_chunked(configured, ITEM_PRUNE_CHUNK).await
    }

    async fn prune_items_chunked(
        &self,
        configured: &HashSet<String>,
        chunk: usize,
    ) -> Result<usize, StoreError> {
        let horizon =
            chrono::Duration::from_std(item_horizon(self.inner.retention)).map_err(|source| {
                StoreError::OutOfRange {
                    what: "item horizon",
                    source,
                }
            })?;
        let refresh =
            chrono::Duration::from_std(SEEN_REFRESH).map_err(|source| StoreError::OutOfRange {
                what: "seen refresh",
                source,
            })?;
        let floor = Utc::now() - horizon;
        type Row = (String, Option<String>, Option<String>);
        let sources: Vec<Row> = self
            .read(|c| {
                let mut stmt =
                    c.prepare("SELECT source_id, last_success_at, last_poll_at FROM sources")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await?;
        let at = |t: Option<String>| {
            t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let mut total = 0;
        for (source_id, last_success, last_poll) in sources {
            let (item_floor, forget) = if configured.contains(&source_id) {
                if at(last_success).is_none_or(|t| t <= floor + refresh) {
                    continue;
                }
                (floor.timestamp(), false)
            } else {
                if at(last_poll).is_some_and(|t| t > floor) {
                    continue;
                }
                (i64::MAX, true)
            };
            let mut after = None;
            loop {
                let step = PruneStep {
                    source_id: source_id.clone(),
                    after,
                    floor: item_floor,
                    chunk: chunk.max(1),
                    forget,
                };
                let (tx, rx) = oneshot::channel();
                self.inner
                    .writer
                    .send(Job::PruneItems(Box::new(step), tx))
                    .await
                    .map_err(|_| StoreError::WriterGone)?;
                let (n, next) = rx.await.map_err(|_| StoreError::WriterGone)??;
                total += n;
                match next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            if forget {
                tracing::info!(source = %source_id, "forgot a source that is no longer configured");
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests;
