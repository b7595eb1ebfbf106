//! Item state written behind the events.
//!
//! In `items`, keyed by `(source_id, item_id)`, a commit of events from
//! many sources rewrote one page per source in place, most of what such
//! ingest cost. So a commit whose items span [`BEHIND_FROM_SOURCES`]
//! sources or more appends their new state to `item_log` instead (the rows
//! land on the table's last page, one after another); a commit of one or
//! two sources' items writes them in place, as before, except items whose
//! newest state is still pending. The writer folds `item_log` into `items` every
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
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use rusqlite::Connection;
use uuid::Uuid;

use super::types::{split_aliases, ItemState};

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
    /// A commit whose items span this many sources or more writes them
    /// behind ([`BEHIND_FROM_SOURCES`] unless the environment says else).
    pub(super) behind_from: usize,
}

impl FoldPolicy {
    pub(super) const DEFAULT: Self = Self {
        rows: 65_536,
        every: Duration::from_secs(1),
        behind_from: BEHIND_FROM_SOURCES,
    };

    /// [`FoldPolicy::DEFAULT`], with `LIVESTROM_ITEM_STATE_BEHIND_FROM`
    /// (a number of sources, at least 1; 1 writes all item state behind)
    /// in place of [`BEHIND_FROM_SOURCES`] when it is set. A tuning knob
    /// (docs/OPERATIONS.md), and how the kill -9 test sends every commit
    /// through `item_log`.
    pub(super) fn from_env() -> Self {
        const VAR: &str = "LIVESTROM_ITEM_STATE_BEHIND_FROM";
        let behind_from = match std::env::var(VAR) {
            Err(_) => BEHIND_FROM_SOURCES,
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    tracing::warn!(value = %v, "{VAR} is not a number of sources of at least 1; using {BEHIND_FROM_SOURCES}");
                    BEHIND_FROM_SOURCES
                }
            },
        };
        Self {
            behind_from,
            ..Self::DEFAULT
        }
    }

    /// Tests: only sweeps, flushes and opens fold (what a process killed
    /// between two folds leaves behind).
    #[cfg(test)]
    pub(super) const NEVER: Self = Self {
        rows: usize::MAX,
        every: Duration::MAX,
        behind_from: BEHIND_FROM_SOURCES,
    };
}

/// One row for `item_log`, as the writer appends it and [`Pending`] keeps it.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) source_id: String,
    pub(super) item_id: String,
    pub(super) version: u32,
    pub(super) last_event_id: Uuid,
    pub(super) fingerprint: String,
    /// Joined with U+001F, as stored.
    pub(super) aliases: String,
    pub(super) seen_at: i64,
}

/// What [`Pending`] keeps of a row: a few hundred bytes at most per item
/// (strings boxed to their length, the aliases still joined), since a
/// burst holds up to [`FoldPolicy::rows`] of them.
#[derive(Debug, Clone)]
struct Entry {
    version: u32,
    last_event_id: Uuid,
    fingerprint: Box<str>,
    aliases: Box<str>,
    seen_at: i64,
}

impl Entry {
    fn state(&self, item_id: &str) -> ItemState {
        ItemState {
            item_id: item_id.to_owned(),
            version: self.version,
            last_event_id: self.last_event_id,
            fingerprint: self.fingerprint.as_ref().to_owned(),
            aliases: split_aliases(&self.aliases),
            seen_at: self.seen_at,
        }
    }
}

/// The item state in `item_log`, newest per item, by source then item id.
#[derive(Debug, Default)]
pub(super) struct Pending {
    by_source: HashMap<Box<str>, HashMap<Box<str>, Entry>>,
    /// Rows appended to `item_log` since the last fold (duplicates counted).
    rows: usize,
}

impl Pending {
    /// Whether the item's newest state is pending (not folded yet).
    pub(super) fn holds(&self, source_id: &str, item_id: &str) -> bool {
        self.by_source
            .get(source_id)
            .is_some_and(|items| items.contains_key(item_id))
    }
}

/// [`Pending`] shared by the writer (which fills and empties it) and readers.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedPending(Arc<RwLock<Pending>>);

impl SharedPending {
    // Every update is a plain map operation; a panic elsewhere while the
    // lock was held leaves nothing half-written to guard against.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Pending> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Pending> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records committed item state (the writer, after COMMIT).
    pub(super) fn record(&self, written: Vec<Row>) {
        if written.is_empty() {
            return;
        }
        let mut p = self.write();
        p.rows += written.len();
        for row in written {
            let items = match p.by_source.get_mut(row.source_id.as_str()) {
                Some(items) => items,
                None => p.by_source.entry(row.source_id.into()).or_default(),
            };
            let entry = Entry {
                version: row.version,
                last_event_id: row.last_event_id,
                fingerprint: row.fingerprint.into(),
                aliases: row.aliases.into(),
                seen_at: row.seen_at,
            };
            items.insert(row.item_id.into(), entry);
        }
    }

    /// Rows appended since the last fold.
    pub(super) fn rows(&self) -> usize {
        self.read().rows
    }

    /// Forgets everything (the writer, after a fold's COMMIT).
    pub(super) fn clear(&self) {
        let mut p = self.write();
        p.by_source = HashMap::new();
        p.rows = 0;
    }

    /// Every pending item of a source, by item id.
    pub(super) fn items(&self, source_id: &str) -> HashMap<String, ItemState> {
        let p = self.read();
        p.by_source
            .get(source_id)
            .map_or_else(HashMap::new, |items| {
                items
                    .iter()
                    .map(|(id, e)| (id.as_ref().to_owned(), e.state(id)))
                    .collect()
            })
    }

    /// The pending state of those of `ids` that have one.
    pub(super) fn items_by_ids(&self, source_id: &str, ids: &[String]) -> Vec<ItemState> {
        let p = self.read();
        let Some(items) = p.by_source.get(source_id) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| items.get(id.as_str()).map(|e| e.state(id)))
            .collect()
    }

    /// The ids of every pending item, by source (for item counts).
    pub(super) fn ids(&self, source_id: Option<&str>) -> HashMap<String, Vec<String>> {
        let p = self.read();
        p.by_source
            .iter()
            .filter(|(s, _)| source_id.is_none_or(|want| want == s.as_ref()))
            .map(|(s, items)| {
                let ids = items.keys().map(|id| id.as_ref().to_owned()).collect();
                (s.as_ref().to_owned(), ids)
            })
            .collect()
    }
}

/// Writes one item's state into `items` in place.
pub(super) const UPSERT_ITEM: &str =
    "INSERT INTO items (source_id, item_id, version, last_event_id, fingerprint, aliases, seen_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (source_id, item_id) DO UPDATE SET version=excluded.version,
    last_event_id=excluded.last_event_id, fingerprint=excluded.fingerprint,
    aliases=excluded.aliases, seen_at=excluded.seen_at";

/// Appends one item's state to `item_log`.
pub(super) const LOG_ITEM: &str = "INSERT INTO item_log (source_id, item_id, version, last_event_id, fingerprint, aliases, seen_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Distinct sources among a group's items from which the writer writes
/// their state behind (to `item_log`) instead of in place. A group of one
/// or two sources' items (a poll, a firehose's batch, even a burst of
/// 100,000) touches few `items` pages in place, cheaper than appending and
/// folding later, and holds nothing in [`Pending`]; a group of many
/// sources' items rewrites a page per source in place.
pub(super) const BEHIND_FROM_SOURCES: usize = 8;

/// The writer's fold: upserts the newest state of every pending item into
/// `items`, in key order (each page rewritten once), and empties
/// `item_log`, in one transaction; then forgets the pending state. Returns
/// how many items it wrote. Readers go on reading `pending` meanwhile; the
/// writer is the only one that changes it, and it is busy here.
pub(super) fn fold_pending(
    conn: &mut Connection,
    pending: &SharedPending,
) -> rusqlite::Result<usize> {
    let n = {
        let p = pending.read();
        let mut rows: Vec<(&str, &str, &Entry)> = p
            .by_source
            .iter()
            .flat_map(|(s, items)| items.iter().map(move |(id, e)| (&**s, &**id, e)))
            .collect();
        // SQLite's BINARY collation is byte order, as `str`'s.
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT_ITEM)?;
            for (source, id, e) in &rows {
                stmt.execute(rusqlite::params![
                    source,
                    id,
                    e.version as i64,
                    e.last_event_id.as_bytes().as_slice(),
                    &*e.fingerprint,
                    &*e.aliases,
                    e.seen_at
                ])?;
            }
        }
        tx.execute("DELETE FROM item_log", [])?;
        tx.commit()?;
        rows.len()
    };
    pending.clear();
    Ok(n)
}

/// Moves every row of `item_log` into `items` (the newest per item wins) in
/// one transaction; returns how many rows it moved. The open's fold, of
/// what a previous process left (no `pending` to read it from).
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
