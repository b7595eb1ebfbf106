//! The event log as the edge reads it (SPEC §7 seam): [`EventLog`] with its
//! row and scope types and its error. The engine appends (the store's
//! writer); readers only read after a cursor. SQLite implements it today
//! (`store/log.rs`); a distributed log would implement the same trait, and
//! the edge never knows which.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::event::{uuid_floor_at, SourceType};

/// How far ahead of this server's clock a cursor may be (clock skew between
/// nodes) before the default [`EventLog::check_cursor`] refuses it as a
/// position that cannot exist.
pub const CURSOR_CLOCK_SKEW: Duration = Duration::from_secs(300);

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

/// What a cursor means to a log, checked before reading after it
/// ([`EventLog::check_cursor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCheck {
    /// A position inside the retained window: a read after it misses nothing.
    Ok,
    /// Events after the cursor may have been deleted (410); `floor` is the
    /// oldest position a reader can still resume from.
    Expired {
        /// The oldest resumable position.
        floor: Uuid,
    },
    /// Not a position of this log at all — an id another stream gave out (a
    /// log that was recreated, another cluster's, a single node's): 410.
    /// Reading after it as if it were one could skip or repeat events.
    Foreign {
        /// Whose id it is, as far as the log can tell (for the 410's detail).
        why: String,
    },
    /// Ahead of the log's newest event (and, on one node, of the clock): a
    /// position no event has reached, so reading after it would silently
    /// skip everything until the log caught up (400).
    Ahead {
        /// The newest event, if any.
        head: Option<Uuid>,
    },
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
    /// A read was asked to start at a cursor that is not a position of this
    /// log (callers check cursors with [`EventLog::check_cursor`] first).
    #[error("cursor {0} is not a position of this event log")]
    Cursor(Uuid),
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
    /// Whether a read after position `pos` would return the event `id`: the
    /// log's order, which readers that compare positions (the edge's hub
    /// and streams) must use. On one node an id is its position (`id >
    /// pos`, the default). A log whose ids carry their position elsewhere
    /// — a stream sequence, while the id's timestamp comes from a clock
    /// that may step back — overrides it. Called per event on the live
    /// path: cheap, no IO.
    fn is_after(&self, id: Uuid, pos: Uuid) -> bool {
        id > pos
    }
    /// What `cursor` means to this log, before reading after it: inside the
    /// retained window, expired, an id of another log, or ahead of it.
    ///
    /// The default is the single-node rule, where an id's order is its
    /// position: below [`EventLog::retention_floor`] is expired; at or past
    /// the clock plus [`CURSOR_CLOCK_SKEW`] and above the head is ahead. A
    /// log whose ids carry their position another way (a stream sequence)
    /// overrides it.
    fn check_cursor(&self, cursor: Uuid) -> Result<CursorCheck, LogError> {
        let floor = self.retention_floor();
        if cursor < floor {
            return Ok(CursorCheck::Expired { floor });
        }
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let latest_plausible = uuid_floor_at(now_ms + CURSOR_CLOCK_SKEW.as_millis() as u64);
        if cursor >= latest_plausible {
            let head = self.head()?;
            if head.is_none_or(|h| cursor > h) {
                return Ok(CursorCheck::Ahead { head });
            }
        }
        Ok(CursorCheck::Ok)
    }
    /// Checked *after* a read that started at `after`: `Some(floor)` when
    /// events after `after` may have been deleted before or during that
    /// read (so it may lack rows), with the oldest resumable position.
    ///
    /// The default compares with [`EventLog::pruned_below`], which a log
    /// raises before it deletes anything.
    fn missed_after(&self, after: Uuid) -> Result<Option<Uuid>, LogError> {
        let pruned = self.pruned_below()?;
        Ok((pruned > after).then_some(pruned))
    }
}
