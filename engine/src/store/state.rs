//! Item and source state reads: what the normaliser compares a poll
//! against (item fingerprints, versions, aliases) and what `sources list`
//! and the runtime show (ETag, health, cursors, counts).
//!
//! Item state is the `items` table overlaid with what the writer committed
//! since its last fold (`pending`), taken before the read transaction opens.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::error::StoreError;
use super::types::{split_aliases, ItemState, SourceState};
use super::Store;

impl Store {
    /// All item states of a source.
    pub async fn items(&self, source_id: &str) -> Result<Vec<ItemState>, StoreError> {
        let sid = source_id.to_owned();
        let pending = self.inner.pending.clone();
        self.read(move |c| {
            let mut newer = pending.items(&sid);
            let mut out = load_items(c, &sid)?;
            for item in &mut out {
                if let Some(p) = newer.remove(&item.item_id) {
                    *item = p;
                }
            }
            out.extend(newer.into_values());
            Ok(out)
        })
        .await
    }

    /// The stored state of a source, if it was ever polled.
    pub async fn source_state(&self, source_id: &str) -> Result<Option<SourceState>, StoreError> {
        let sid = source_id.to_owned();
        let pending = self.inner.pending.clone();
        self.read(move |c| {
            let unfolded = pending.ids(Some(&sid));
            let tx = c.unchecked_transaction()?;
            let state = load_source(&tx, &sid)?
                .map(|s| count_unfolded(&tx, s, &unfolded))
                .transpose()?;
            tx.commit()?;
            Ok(state)
        })
        .await
    }

    /// State of every source ever polled.
    pub async fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.source_states_blocking()).await?
    }

    /// [`Store::source_states`] on the calling thread (blocking).
    pub fn source_states_blocking(&self) -> Result<Vec<SourceState>, StoreError> {
        let unfolded = self.inner.pending.ids(None);
        self.read_blocking(|c| {
            let tx = c.unchecked_transaction()?;
            let states = load_all_sources(&tx)?
                .into_iter()
                .map(|s| count_unfolded(&tx, s, &unfolded))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok(states)
        })
    }

    /// Item states of a source restricted to the given item ids (firehose
    /// sources, whose item tables grow without bound, look up only these).
    pub async fn items_by_ids(
        &self,
        source_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<ItemState>, StoreError> {
        let sid = source_id.to_owned();
        let pending = self.inner.pending.clone();
        self.read(move |c| {
            let mut out = pending.items_by_ids(&sid, &ids);
            let newer: HashSet<String> = out.iter().map(|p| p.item_id.clone()).collect();
            // One read transaction for all the lookups (a firehose batch asks
            // for ~4 keys per item): outside one, every statement takes and
            // drops the WAL read lock itself (fcntl calls, the wal-index
            // header read), which was most of the lookup's time in a
            // profile of `cargo bench --bench burst`.
            let tx = c.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {ITEM_COLS} FROM items WHERE source_id = ?1 AND item_id = ?2"
                ))?;
                for id in ids {
                    if newer.contains(&id) {
                        continue;
                    }
                    let mut rows = stmt.query(params![sid, id])?;
                    if let Some(r) = rows.next()? {
                        out.push(item_from_row(r)?);
                    }
                }
            }
            // Read only: ending it either way releases the snapshot.
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// Columns of an item-state row, in the order [`item_from_row`] reads them.
const ITEM_COLS: &str = "item_id, version, last_event_id, fingerprint, aliases, seen_at";

/// Decodes one item-state row. Version 0 is kept: it marks an item held back
/// by `initial_items` (seen, never emitted).
fn item_from_row(r: &rusqlite::Row<'_>) -> Result<ItemState, StoreError> {
    let last: Vec<u8> = r.get(2)?;
    let aliases: String = r.get(4)?;
    Ok(ItemState {
        item_id: r.get(0)?,
        version: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
        last_event_id: Uuid::from_slice(&last).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        fingerprint: r.get(3)?,
        aliases: split_aliases(&aliases),
        seen_at: r.get(5)?,
    })
}

fn load_items(c: &Connection, source_id: &str) -> Result<Vec<ItemState>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {ITEM_COLS} FROM items WHERE source_id = ?1"
    ))?;
    let mut rows = stmt.query([source_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(item_from_row(r)?);
    }
    Ok(out)
}

/// Adds to a source's `item_count` (the rows of `items`) its pending items
/// that have no row there yet; `tx` is the read that counted.
fn count_unfolded(
    tx: &Connection,
    mut state: SourceState,
    unfolded: &HashMap<String, Vec<String>>,
) -> Result<SourceState, StoreError> {
    let Some(ids) = unfolded.get(&state.source_id) else {
        return Ok(state);
    };
    let mut stmt =
        tx.prepare_cached("SELECT 1 FROM items WHERE source_id = ?1 AND item_id = ?2")?;
    for id in ids {
        if !stmt.exists(params![state.source_id, id])? {
            state.item_count += 1;
        }
    }
    Ok(state)
}

const SOURCE_COLS: &str = "s.source_id, etag, last_modified, last_poll_at, last_success_at, last_error, consecutive_failures, next_poll_at, event_count, initialized, snapshot, upstream_cursor, (SELECT COUNT(*) FROM items i WHERE i.source_id = s.source_id)";

fn source_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SourceState> {
    let ts = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        Ok(r.get::<_, Option<String>>(i)?
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    };
    Ok(SourceState {
        source_id: r.get(0)?,
        etag: r.get(1)?,
        last_modified: r.get(2)?,
        last_poll_at: ts(3)?,
        last_success_at: ts(4)?,
        last_error: r.get(5)?,
        consecutive_failures: r.get::<_, i64>(6)?.max(0) as u32,
        next_poll_at: ts(7)?,
        event_count: r.get::<_, i64>(8)?.max(0) as u64,
        initialized: r.get::<_, i64>(9)? != 0,
        snapshot: r.get(10)?,
        upstream_cursor: r.get(11)?,
        item_count: r.get::<_, i64>(12)?.max(0) as u64,
    })
}

fn load_source(c: &Connection, source_id: &str) -> Result<Option<SourceState>, StoreError> {
    let sql = format!("SELECT {SOURCE_COLS} FROM sources s WHERE s.source_id = ?1");
    Ok(c.query_row(&sql, [source_id], source_from_row).optional()?)
}

fn load_all_sources(c: &Connection) -> Result<Vec<SourceState>, StoreError> {
    let sql = format!("SELECT {SOURCE_COLS} FROM sources s ORDER BY s.source_id");
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map([], source_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
