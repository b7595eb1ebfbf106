//! The writer thread: the only connection that writes. It drains whatever
//! jobs are queued, commits all queued batches in one transaction (group
//! commit), mints ids in commit order while holding the `ids` mutex that
//! [`EventLog::watermark`](super::EventLog::watermark) shares, publishes to
//! the bus after COMMIT, and runs the prune jobs between groups. Item
//! state goes to `item_log` and is folded into `items` behind the events
//! (`pending`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::pending::{self, FoldPolicy, Pending, Row, SharedPending, LOG_ITEM, UPSERT_ITEM};
use super::types::{WriteBatch, SEEN_REFRESH};
use crate::bus::{Batch, Bus};
use crate::event::{uuid_floor_at, CommittedEvent, IdGenerator};
use crate::metrics::Metrics;

/// Work for the writer thread, each with where to send the outcome.
pub(super) enum Job {
    Write(Box<WriteBatch>, Reply),
    Prune(oneshot::Sender<Result<usize, StoreError>>),
    /// One step of the item-state sweep of one source.
    PruneItems(
        Box<PruneStep>,
        oneshot::Sender<Result<(usize, Option<String>), StoreError>>,
    ),
    /// Resolves once everything queued before it is committed and the
    /// item state is folded into `items`.
    Flush(oneshot::Sender<()>),
    /// `last_used_at` of API keys: (key id, RFC 3339 time).
    KeyUsage(Vec<(i64, String)>, oneshot::Sender<Result<(), StoreError>>),
    /// Readiness: one tiny write proves the database takes writes.
    Probe(oneshot::Sender<Result<(), StoreError>>),
    /// Tests: the writer connection's `PRAGMA synchronous` (1 NORMAL, 2 FULL).
    #[cfg(test)]
    Synchronous(oneshot::Sender<Result<i64, StoreError>>),
    /// Someone else's statements on the writer's connection, run between
    /// groups (webhook endpoints' cursors and state, operator changes made
    /// through the edge): every write of a running node goes through this
    /// thread. The closure sends its own outcome.
    Exec(ExecFn),
}

/// What [`Job::Exec`] runs: it opens and ends its own transaction.
pub(super) type ExecFn = Box<dyn FnOnce(&mut Connection) + Send>;

/// Sets API keys' `last_used_at` (key id, RFC 3339 time) inside the
/// caller's transaction: the writer's job, and `SqliteKeys` without a store.
pub(crate) fn update_key_usage(
    conn: &rusqlite::Connection,
    used: &[(i64, String)],
) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2")?;
    for (id, at) in used {
        stmt.execute(rusqlite::params![at, id])?;
    }
    Ok(())
}

/// One bounded step of [`Store::prune_items`](super::Store::prune_items).
pub(super) struct PruneStep {
    pub(super) source_id: String,
    /// Start after this item id (None: from the first).
    pub(super) after: Option<String>,
    /// Rows with `seen_at` below this (unix seconds) are deleted.
    pub(super) floor: i64,
    /// Rows examined at most.
    pub(super) chunk: usize,
    /// After the last step, delete the source's state row too.
    pub(super) forget: bool,
}

/// Events drained into one transaction at most (group commit bound).
const MAX_GROUP_EVENTS: usize = 8192;

/// The writer's state, moved onto its thread by [`WriterThread::run`].
pub(super) struct WriterThread {
    pub(super) conn: Connection,
    /// Shared with readers for
    /// [`EventLog::watermark`](super::EventLog::watermark); locked per
    /// transaction.
    pub(super) ids: Arc<Mutex<IdGenerator>>,
    pub(super) bus: Bus,
    pub(super) retention: Duration,
    /// Commit durations and sizes are recorded here.
    pub(super) metrics: Metrics,
    /// Item state committed to `item_log` and not yet folded into `items`.
    pub(super) pending: SharedPending,
    /// When the writer folds `item_log` on its own.
    pub(super) fold: FoldPolicy,
    /// When `item_log` was last folded (or a fold failed).
    pub(super) folded_at: Instant,
    /// The last fold failed.
    pub(super) fold_failed: bool,
}

/// What a group's transaction committed: each batch's events, and the item
/// state appended to `item_log`, for `pending`.
type Applied = (Vec<Vec<Arc<CommittedEvent>>>, Vec<Row>);

/// Where one transaction writes item state: in place, or behind (see
/// `pending`): behind when the group spans [`FoldPolicy::behind_from`]
/// sources or more, and always for an item whose newest state is pending
/// (so a pending entry is never older than its `items` row).
struct ItemWrites<'t, 'p> {
    behind: bool,
    pending: &'p Pending,
    in_place: rusqlite::CachedStatement<'t>,
    log: rusqlite::CachedStatement<'t>,
    /// Rows appended to `item_log`, for `pending` after COMMIT.
    written: Vec<Row>,
}

/// One item's new state as the transaction writes it, borrowed from the
/// batch: owned (a [`Row`]) only when it goes behind, so a write in place
/// copies no string.
struct NewState<'a> {
    source_id: &'a str,
    item_id: &'a str,
    version: u32,
    last_event_id: uuid::Uuid,
    fingerprint: &'a str,
    aliases: String,
    seen_at: i64,
}

impl ItemWrites<'_, '_> {
    fn put(&mut self, row: NewState<'_>) -> rusqlite::Result<()> {
        let behind = self.behind || self.pending.holds(row.source_id, row.item_id);
        let stmt = if behind {
            &mut self.log
        } else {
            &mut self.in_place
        };
        stmt.execute(params![
            row.source_id,
            row.item_id,
            row.version as i64,
            row.last_event_id.as_bytes().as_slice(),
            row.fingerprint,
            row.aliases,
            row.seen_at
        ])?;
        if behind {
            self.written.push(Row {
                source_id: row.source_id.to_owned(),
                item_id: row.item_id.to_owned(),
                version: row.version,
                last_event_id: row.last_event_id,
                fingerprint: row.fingerprint.to_owned(),
                aliases: row.aliases,
                seen_at: row.seen_at,
            });
        }
        Ok(())
    }
}

/// Whether a group's items span `n` sources or more.
fn spans_sources(group: &[(WriteBatch, Reply)], n: usize) -> bool {
    let mut seen = std::collections::HashSet::new();
    group
        .iter()
        .flat_map(|(b, _)| {
            let touched = b.source.as_ref().filter(|_| !b.touch_items.is_empty());
            b.events
                .iter()
                .map(|e| e.event.source_id.as_str())
                .chain(touched.map(|s| s.source_id.as_str()))
        })
        .any(|s| seen.insert(s) && seen.len() >= n)
}

/// Where a submitter of a batch waits for its committed events.
pub(super) type Reply = oneshot::Sender<Result<Vec<Arc<CommittedEvent>>, StoreError>>;

impl WriterThread {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            let mut group: Vec<(WriteBatch, Reply)> = Vec::new();
            let mut prunes = Vec::new();
            let mut item_steps = Vec::new();
            let mut flushes = Vec::new();
            let mut key_usage = Vec::new();
            let mut probes = Vec::new();
            let mut execs = Vec::new();
            let mut n = 0;
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Write(b, r) => {
                        n += b.events.len().max(1);
                        group.push((*b, r));
                    }
                    Job::Prune(r) => prunes.push(r),
                    Job::PruneItems(step, r) => item_steps.push((step, r)),
                    Job::Flush(r) => flushes.push(r),
                    Job::KeyUsage(used, r) => key_usage.push((used, r)),
                    Job::Probe(r) => probes.push(r),
                    #[cfg(test)]
                    Job::Synchronous(r) => {
                        let _ = r.send(
                            self.conn
                                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                                .map_err(StoreError::from),
                        );
                    }
                    Job::Exec(f) => execs.push(f),
                }
                if n < MAX_GROUP_EVENTS {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            // The sweep reads and deletes `items` rows: it runs on the
            // folded table, so it never judges an item by an older row.
            if !item_steps.is_empty() || !flushes.is_empty() {
                self.fold_items();
            }
            for r in prunes {
                let _ = r.send(self.prune());
            }
            for (step, r) in item_steps {
                let _ = r.send(self.prune_items_step(&step));
            }
            for (used, r) in key_usage {
                let _ = r.send(self.record_key_usage(&used));
            }
            for r in probes {
                let _ = r.send(self.probe());
            }
            for f in execs {
                f(&mut self.conn);
            }
            for r in flushes {
                let _ = r.send(());
            }
            let rows = self.pending.rows();
            let waited = self.folded_at.elapsed() >= self.fold.every;
            // After a failed fold, the next waits as an idle one would (one
            // error a second at most, not one per commit).
            let by_rows = rows >= self.fold.rows && (!self.fold_failed || waited);
            if by_rows || (rows > 0 && rx.is_empty() && waited) {
                self.fold_items();
            }
        }
        self.fold_items();
        tracing::debug!("store writer stopped: all handles dropped");
    }

    /// Folds `item_log` into `items` (see `pending`). A failed fold leaves
    /// both as they were (the next fold, or the next open, retries it);
    /// readers still find the state in `pending`.
    fn fold_items(&mut self) {
        if self.pending.rows() == 0 {
            return;
        }
        let started = Instant::now();
        match pending::fold_pending(&mut self.conn, &self.pending) {
            Ok(rows) => {
                self.fold_failed = false;
                tracing::debug!(
                    rows,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "item state folded into items"
                );
            }
            Err(e) => {
                self.fold_failed = true;
                tracing::error!(error = %e, "folding item state into `items` failed; retrying at the next fold")
            }
        }
        self.folded_at = Instant::now();
    }

    /// The readiness probe's write, in its own short transaction.
    fn probe(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', ?1) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [Utc::now().to_rfc3339()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Writes API keys' `last_used_at` in one transaction.
    fn record_key_usage(&mut self, used: &[(i64, String)]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        update_key_usage(&tx, used)?;
        tx.commit()?;
        Ok(())
    }

    fn commit_group(&mut self, mut group: Vec<(WriteBatch, Reply)>) {
        let now = Utc::now();
        let started = std::time::Instant::now();
        // The events are moved into the transaction (no copy); on failure
        // every submitter gets the error and nothing was committed.
        let result = self.apply(&mut group, now);
        match result {
            Ok((per_batch, written)) => {
                // Before anyone hears of the commit: a lookup after it must
                // find this state.
                self.pending.record(written);
                let events = per_batch.iter().map(Vec::len).sum();
                self.metrics.engine().commit(started.elapsed(), events);
                let all: Vec<Arc<CommittedEvent>> = per_batch.iter().flatten().cloned().collect();
                if !all.is_empty() {
                    self.bus.publish(Batch::from(all));
                }
                for ((_, reply), evs) in group.into_iter().zip(per_batch) {
                    let _ = reply.send(Ok(evs));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let e = Arc::new(e);
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Commit(e.clone())));
                }
            }
        }
    }

    fn apply(
        &mut self,
        group: &mut [(WriteBatch, Reply)],
        now: DateTime<Utc>,
    ) -> rusqlite::Result<Applied> {
        // Held until the transaction ends (commit or rollback): see `Inner::ids`.
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(group.len());
        let behind = spans_sources(group, self.fold.behind_from);
        // Read, not changed, until after COMMIT (only this thread changes it).
        let pending = self.pending.clone();
        let pending = pending.read();
        let mut last = None;
        let written = {
            let mut ins_event = tx.prepare_cached(
                "INSERT INTO events (id, source_id, source_type, json) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut items = ItemWrites {
                behind,
                pending: &pending,
                in_place: tx.prepare_cached(UPSERT_ITEM)?,
                log: tx.prepare_cached(LOG_ITEM)?,
                written: Vec::new(),
            };
            let mut refresh_stmt = tx.prepare_cached(
                "UPDATE items SET seen_at = ?1 WHERE source_id = ?2 AND seen_at < ?3",
            )?;
            let mut up_source = tx.prepare_cached(
                "INSERT INTO sources (source_id, etag, last_modified, last_poll_at, last_success_at, last_error, consecutive_failures, next_poll_at, event_count, initialized, snapshot, upstream_cursor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (source_id) DO UPDATE SET etag=excluded.etag, last_modified=excluded.last_modified, last_poll_at=excluded.last_poll_at,
                 last_success_at=excluded.last_success_at, last_error=excluded.last_error, consecutive_failures=excluded.consecutive_failures,
                 next_poll_at=excluded.next_poll_at, event_count=sources.event_count + ?9, initialized=excluded.initialized,
                 snapshot=excluded.snapshot, upstream_cursor=excluded.upstream_cursor",
            )?;
            for (batch, _) in group.iter_mut() {
                let new_events = std::mem::take(&mut batch.events);
                let n_events = new_events.len();
                let mut evs = Vec::with_capacity(n_events);
                for ne in new_events {
                    let mut ev = ne.event;
                    ev.id = ids.next_id();
                    ev.emitted_at = now;
                    ev.schema_version = 1;
                    let committed = CommittedEvent::new(ev);
                    let e = &committed.event;
                    ins_event.execute(params![
                        e.id.as_bytes().as_slice(),
                        e.source_id,
                        e.source_type.as_index() as i64,
                        &*committed.json
                    ])?;
                    items.put(NewState {
                        source_id: &e.source_id,
                        item_id: &e.item_id,
                        version: e.version,
                        last_event_id: e.id,
                        fingerprint: &ne.fingerprint,
                        aliases: ne.aliases.join("\u{1f}"),
                        seen_at: now.timestamp(),
                    })?;
                    last = Some(e.id);
                    evs.push(Arc::new(committed));
                }
                for it in &batch.touch_items {
                    let sid = batch
                        .source
                        .as_ref()
                        .map(|s| s.source_id.as_str())
                        .unwrap_or_default();
                    items.put(NewState {
                        source_id: sid,
                        item_id: &it.item_id,
                        version: it.version,
                        last_event_id: it.last_event_id,
                        fingerprint: &it.fingerprint,
                        aliases: it.aliases.join("\u{1f}"),
                        seen_at: now.timestamp(),
                    })?;
                }
                if batch.refresh_items {
                    if let Some(s) = &batch.source {
                        let refresh = SEEN_REFRESH.as_secs() as i64;
                        refresh_stmt.execute(params![
                            now.timestamp(),
                            s.source_id,
                            now.timestamp() - refresh
                        ])?;
                    }
                }
                if let Some(s) = &batch.source {
                    let ts = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
                    up_source.execute(params![
                        s.source_id,
                        s.etag,
                        s.last_modified,
                        ts(&s.last_poll_at),
                        ts(&s.last_success_at),
                        s.last_error,
                        s.consecutive_failures as i64,
                        ts(&s.next_poll_at),
                        n_events as i64,
                        s.initialized as i64,
                        s.snapshot,
                        s.upstream_cursor,
                    ])?;
                }
                out.push(evs);
            }
            if let Some(last) = last {
                tx.execute("INSERT INTO meta (key, value) VALUES ('last_id', ?1) ON CONFLICT(key) DO UPDATE SET value=excluded.value", [last.to_string()])?;
            }
            items.written
        };
        tx.commit()?;
        Ok((out, written))
    }

    /// Deletes stale item state among the next `chunk` items of a source
    /// (by item id); returns the count and where the next step starts
    /// (None: the source is done).
    fn prune_items_step(
        &mut self,
        step: &PruneStep,
    ) -> Result<(usize, Option<String>), StoreError> {
        let offset = (step.chunk - 1) as i64;
        let end: Option<String> = match &step.after {
            Some(after) => self.conn.query_row(
                "SELECT item_id FROM items WHERE source_id = ?1 AND item_id > ?2 ORDER BY item_id LIMIT 1 OFFSET ?3",
                params![step.source_id, after, offset],
                |r| r.get(0),
            ),
            None => self.conn.query_row(
                "SELECT item_id FROM items WHERE source_id = ?1 ORDER BY item_id LIMIT 1 OFFSET ?2",
                params![step.source_id, offset],
                |r| r.get(0),
            ),
        }
        .optional()?;
        let deleted = match (&step.after, &end) {
            (Some(after), Some(end)) => self.conn.execute(
                "DELETE FROM items WHERE source_id = ?1 AND item_id > ?2 AND item_id <= ?3 AND seen_at < ?4",
                params![step.source_id, after, end, step.floor],
            )?,
            (Some(after), None) => self.conn.execute(
                "DELETE FROM items WHERE source_id = ?1 AND item_id > ?2 AND seen_at < ?3",
                params![step.source_id, after, step.floor],
            )?,
            (None, Some(end)) => self.conn.execute(
                "DELETE FROM items WHERE source_id = ?1 AND item_id <= ?2 AND seen_at < ?3",
                params![step.source_id, end, step.floor],
            )?,
            (None, None) => self.conn.execute(
                "DELETE FROM items WHERE source_id = ?1 AND seen_at < ?2",
                params![step.source_id, step.floor],
            )?,
        };
        if end.is_none() && step.forget {
            self.conn.execute(
                "DELETE FROM sources WHERE source_id = ?1",
                [&step.source_id],
            )?;
        }
        Ok((deleted, end))
    }

    fn prune(&mut self) -> Result<usize, StoreError> {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let floor = uuid_floor_at(now_ms.saturating_sub(self.retention.as_millis() as u64));
        // The mark is committed before the first delete: a replay that
        // checks it after reading a page knows whether rows after its
        // cursor may be gone (a 410, never a silent gap). It only rises.
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('pruned_below', ?1) ON CONFLICT(key) DO UPDATE SET value=excluded.value WHERE excluded.value > meta.value",
            [floor.to_string()],
        )?;
        let mut total = 0;
        loop {
            // Chunked so the writer never holds the lock for long.
            let n = self.conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ?1 ORDER BY id LIMIT 10000)",
                [floor.as_bytes().as_slice()],
            )?;
            total += n;
            if n < 10000 {
                break;
            }
        }
        Ok(total)
    }
}
