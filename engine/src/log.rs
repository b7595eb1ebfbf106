//! The event log as the edge reads it (SPEC §7 seam): [`EventLog`] with its
//! row and scope types and its error. The engine appends (the store's
//! writer); readers only read after a cursor. SQLite implements it today
//! (`store/log.rs`); a distributed log would implement the same trait, and
//! the edge never knows which.

use std::sync::Arc;

use uuid::Uuid;

use crate::event::SourceType;

/// A row of the event log as readers get it: enough to filter without parsing,
/// plus the stored JSON.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// Event id.
    pub id: Uuid,
    /// Source id.
    pub source_id: String,
    /// Source type.
    pub source_type: SourceType,
    /// The StreamEvent JSON, one line.
    pub json: Arc<str>,
}

/// Pushdown for log reads: restrict by source id / prefix and type in SQL.
#[derive(Debug, Clone, Default)]
pub struct ReadScope {
    /// Exact source ids (OR). Empty with empty `prefixes` = all sources.
    pub sources: Vec<String>,
    /// Source id prefixes including the trailing dot, e.g. `kommun.` (OR with `sources`).
    pub prefixes: Vec<String>,
    /// Source types (OR). Empty = all.
    pub types: Vec<SourceType>,
}

/// A read of the event log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The backend could not be read (a database or network failure).
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored entry could not be decoded.
    #[error("corrupt event log entry: {0}")]
    Corrupt(String),
    /// A blocking read task panicked or was cancelled.
    #[error("event log read task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The durable event log as the edge sees it (SPEC §7 seam). Blocking: call
/// from `spawn_blocking` or a dedicated thread.
pub trait EventLog: Send + Sync + 'static {
    /// Up to `limit` events with id > `after`, ascending.
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError>;
    /// Like [`EventLog::read_after`], but hands each row to `f` as borrowed
    /// `(id, source_id, source_type, json)` instead of collecting owned rows
    /// (no per-row allocation on the replay path). Returns the rows visited.
    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        let rows = self.read_after(after, limit, scope)?;
        for r in &rows {
            f(r.id, &r.source_id, r.source_type, &r.json);
        }
        Ok(rows.len())
    }
    /// Events before this id may have been pruned: a cursor below it is gone (410).
    fn retention_floor(&self) -> Uuid;
    /// The newest committed id, if any.
    fn head(&self) -> Result<Option<Uuid>, LogError>;
    /// Events below this id may have been deleted (nil: nothing ever was).
    /// Raised before a prune deletes anything, so a reader that checks it
    /// *after* a read knows whether that read may have missed rows.
    fn pruned_below(&self) -> Result<Uuid, LogError>;
    /// A position that is "now" for readers: every event at or below it is
    /// committed and every later commit gets a greater id. Unlike the wall
    /// clock it cannot pass an id minted but not yet committed; unlike the
    /// head it keeps up with the clock on an idle log (a cursor taken from
    /// it stays inside the retention window as long as a fresh one would).
    fn watermark(&self) -> Result<Uuid, LogError>;
}
