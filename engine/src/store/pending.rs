//! Item state written behind the events.
//!
//! A commit appends each item's new state to `item_log` (the rows land on
//! the table's last page, one after another) instead of updating `items`
//! in place: in `items`, keyed by `(source_id, item_id)`, a commit of
//! events from many sources rewrote one page per source, most of what
//! ingest cost. The writer folds `item_log` into `items` every
//! [`FoldPolicy::rows`] rows, when it goes idle [`FoldPolicy::every`]
//! after the last fold, before an item-state sweep, at a flush (shutdown)
//! and when the store opens (after a crash, the rows a dead process
//! appended). Each fold is one transaction: upsert, then empty `item_log`.
//!
//! Until a fold, readers find the newest state in [`Pending`], which the
//! writer fills after each COMMIT (before anyone is told of the commit)
//! and empties after each fold's COMMIT. **A reader takes what it needs
//! from `Pending` before it opens its read transaction**, and an entry of
//! `Pending` is never older than the `items` row of the same item; so
//! whichever side of a fold a read falls on, it sees the newest state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use super::types::ItemState;

#[cfg(test)]
mod tests;

/// When the writer folds on its own (beside sweeps, flushes and opens).
#[derive(Debug, Clone, Copy)]
pub(super) struct FoldPolicy {
    /// Rows appended since the last fold that make the writer fold at
    /// once. Larger folds rewrite each `items` page for more rows at a
    /// time, at the cost of a longer pause of the writer per fold and of
    /// [`Pending`]'s memory (a few hundred bytes per row);
    /// docs/PERFORMANCE.md has the measurements behind the default.
    pub(super) rows: usize,
    /// A writer with nothing queued folds once this long has passed since
    /// the last fold, so `items` follows the log within about this much
    /// when ingestion is light.
    pub(super) every: Duration,
}

impl FoldPolicy {
    pub(super) const DEFAULT: Self = Self {
        rows: 65_536,
        every: Duration::from_secs(1),
    };

    /// Tests: only sweeps, flushes and opens fold (what a process killed
    /// between two folds leaves behind).
    #[cfg(test)]
    pub(super) const NEVER: Self = Self {
        rows: usize::MAX,
        every: Duration::MAX,
    };
}

/// The item state in `item_log`, newest per item, by source then item id.
#[derive(Debug, Default)]
pub(super) struct Pending {
    by_source: HashMap<String, HashMap<String, ItemState>>,
    /// Rows appended to `item_log` since the last fold (duplicates counted).
    rows: usize,
}

/// [`Pending`] shared by the writer (which fills and empties it) and readers.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedPending(Arc<Mutex<Pending>>);

impl SharedPending {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every update is a plain map operation; a panic elsewhere while
        // it was held leaves nothing half-written to guard against.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records committed item state (the writer, after COMMIT).
    pub(super) fn record(&self, written: Vec<(String, ItemState)>) {
        if written.is_empty() {
            return;
        }
        let mut p = self.lock();
        p.rows += written.len();
        for (source, state) in written {
            let items = match p.by_source.get_mut(source.as_str()) {
                Some(items) => items,
                None => p.by_source.entry(source).or_default(),
            };
            items.insert(state.item_id.clone(), state);
        }
    }

    /// Rows appended since the last fold.
    pub(super) fn rows(&self) -> usize {
        self.lock().rows
    }

    /// Forgets everything (the writer, after a fold's COMMIT).
    pub(super) fn clear(&self) {
        let mut p = self.lock();
        p.by_source.clear();
        p.rows = 0;
    }

    /// Every pending item of a source.
    pub(super) fn items(&self, source_id: &str) -> HashMap<String, ItemState> {
        self.lock()
            .by_source
            .get(source_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The pending state of those of `ids` that have one.
    pub(super) fn items_by_ids(&self, source_id: &str, ids: &[String]) -> Vec<ItemState> {
        let p = self.lock();
        let Some(items) = p.by_source.get(source_id) else {
            return Vec::new();
        };
        ids.iter().filter_map(|id| items.get(id).cloned()).collect()
    }

    /// The ids of every pending item, by source (for item counts).
    pub(super) fn ids(&self, source_id: Option<&str>) -> HashMap<String, Vec<String>> {
        let p = self.lock();
        p.by_source
            .iter()
            .filter(|(s, _)| source_id.is_none_or(|want| want == s.as_str()))
            .map(|(s, items)| (s.clone(), items.keys().cloned().collect()))
            .collect()
    }
}

/// Moves every row of `item_log` into `items` (the newest per item wins) in
/// one transaction; returns how many rows it moved.
pub(super) fn fold(conn: &mut Connection) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Sorted by key so the upsert walks `items` in order, each page
    // rewritten once; within a key by `seq`, so the last row wins.
    // (`WHERE true` keeps SQLite from reading ON CONFLICT as a join's.)
    let n = tx.execute(
        "INSERT INTO items (source_id, item_id, version, last_event_id, fingerprint, aliases, seen_at)
         SELECT source_id, item_id, version, last_event_id, fingerprint, aliases, seen_at
         FROM item_log WHERE true ORDER BY source_id, item_id, seq
         ON CONFLICT (source_id, item_id) DO UPDATE SET version=excluded.version,
         last_event_id=excluded.last_event_id, fingerprint=excluded.fingerprint,
         aliases=excluded.aliases, seen_at=excluded.seen_at",
        [],
    )?;
    tx.execute("DELETE FROM item_log", [])?;
    tx.commit()?;
    Ok(n)
}
