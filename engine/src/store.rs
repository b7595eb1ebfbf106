//! SQLite event log and state: one writer thread with group commit, pooled readers.
//!
//! - WAL mode; all writes go through one dedicated thread (`Writer`), which
//!   drains whatever batches are queued into one `BEGIN IMMEDIATE` transaction,
//!   assigns UUIDv7 ids and `emitted_at` in commit order, COMMITs, and only then
//!   publishes to the [`Bus`] and acknowledges the submitters.
//! - Readers use separate connections from a small pool on blocking threads and
//!   never hold a transaction across an await (each read is one statement).
//! - Item state (per-item fingerprint, version, last event) and source state
//!   (ETag, Last-Modified, health, HTML snapshot, upstream cursor) live beside
//!   the events so a restart neither re-emits nor loses cursors.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::bus::{Batch, Bus};
use crate::event::{uuid_floor_at, CommittedEvent, IdGenerator, SourceType, StreamEvent};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or is not a usable SQLite database.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The writer thread has stopped (shutdown or a fatal error).
    #[error("the store writer has stopped")]
    WriterGone,
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

/// An event to store: everything but `id` and `emitted_at`, which the writer assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event; its `id` and `emitted_at` are overwritten at commit.
    pub event: StreamEvent,
    /// The item's significance fingerprint after this event (see `normalize`).
    pub fingerprint: String,
    /// Secondary identity keys of the item (canonical link, content hash) used
    /// to recognise the same item when its guid churns.
    pub aliases: Vec<String>,
}

/// Stored state of one item of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    /// Stable identity within the source.
    pub item_id: String,
    /// Current version.
    pub version: u32,
    /// Id of the item's newest event.
    pub last_event_id: Uuid,
    /// Significance fingerprint of that version.
    pub fingerprint: String,
    /// Secondary identity keys.
    pub aliases: Vec<String>,
    /// When the item was last written: first seen, changed, or refreshed
    /// because a poll still saw it (unix seconds; set by the store on write,
    /// ignored in what is written). Item state not refreshed for
    /// [`item_horizon`] is pruned ([`Store::prune_items`]).
    pub seen_at: i64,
}

/// How often a poll that still sees an unchanged item rewrites its state's
/// `seen_at` (so items that stay in a feed are never pruned).
pub const SEEN_REFRESH: Duration = Duration::from_secs(86_400);
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

/// Persistent per-source state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceState {
    /// Source id.
    pub source_id: String,
    /// ETag of the last 200.
    pub etag: Option<String>,
    /// Last-Modified of the last 200.
    pub last_modified: Option<String>,
    /// Start of the last poll.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// End of the last successful poll.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last error, cleared on success.
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    pub consecutive_failures: u32,
    /// When the next poll is due.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Items known for this source.
    pub item_count: u64,
    /// Events emitted in total.
    pub event_count: u64,
    /// True once the first successful poll has been stored.
    pub initialized: bool,
    /// html sources: the last normalised text of the watched region.
    pub snapshot: Option<String>,
    /// firehose sse/ndjson: the upstream resume cursor (Last-Event-ID).
    pub upstream_cursor: Option<String>,
}

/// One transaction's worth of work from one poll.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// New events, in the order they should be emitted.
    pub events: Vec<NewEvent>,
    /// The source's state after this poll (upserted), if any.
    pub source: Option<SourceState>,
    /// Items seen again unchanged whose aliases changed (rare), upserted without an event.
    pub touch_items: Vec<ItemState>,
    /// The source's content is what its last 200 had (a 304, or a page
    /// without a significant change): every item of the source whose
    /// `seen_at` is older than [`SEEN_REFRESH`] is refreshed, so item state
    /// of an unchanged feed is never pruned.
    pub refresh_items: bool,
}

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

/// The durable event log as the edge sees it (SPEC §7 seam). Blocking: call
/// from `spawn_blocking` or a dedicated thread.
pub trait EventLog: Send + Sync + 'static {
    /// Up to `limit` events with id > `after`, ascending.
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, StoreError>;
    /// Like [`EventLog::read_after`], but hands each row to `f` as borrowed
    /// `(id, source_id, source_type, json)` instead of collecting owned rows
    /// (no per-row allocation on the replay path). Returns the rows visited.
    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, StoreError> {
        let rows = self.read_after(after, limit, scope)?;
        for r in &rows {
            f(r.id, &r.source_id, r.source_type, &r.json);
        }
        Ok(rows.len())
    }
    /// Events before this id may have been pruned: a cursor below it is gone (410).
    fn retention_floor(&self) -> Uuid;
    /// The newest committed id, if any.
    fn head(&self) -> Result<Option<Uuid>, StoreError>;
    /// Events below this id may have been deleted (nil: nothing ever was).
    /// Raised before a prune deletes anything, so a reader that checks it
    /// *after* a read knows whether that read may have missed rows.
    fn pruned_below(&self) -> Result<Uuid, StoreError>;
    /// A position that is "now" for readers: every event at or below it is
    /// committed and every later commit gets a greater id. Unlike the wall
    /// clock it cannot pass an id minted but not yet committed; unlike the
    /// head it keeps up with the clock on an idle log (a cursor taken from
    /// it stays inside the retention window as long as a fresh one would).
    fn watermark(&self) -> Result<Uuid, StoreError>;
}

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    retention: Duration,
    writer: mpsc::Sender<Job>,
    bus: Bus,
    /// The writer's id generator. The writer holds it from the first id it
    /// mints for a transaction until that transaction ended, so whoever
    /// holds it sees no event minted but uncommitted (see [`EventLog::watermark`]).
    ids: Arc<Mutex<IdGenerator>>,
    /// Unit tests only: consulted by [`Store::write`] before a batch is
    /// queued, so a test can make one batch fail (or panic in the writing
    /// task) the way a failed commit would, through the real runtime.
    #[cfg(test)]
    write_fault: Mutex<Option<WriteFault>>,
}

/// A test's verdict on a batch about to be written: `Err` fails the write
/// as a failed commit does (`StoreError::Task`).
#[cfg(test)]
pub(crate) type WriteFault = Arc<dyn Fn(&WriteBatch) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

enum Job {
    Write(Box<WriteBatch>, Reply),
    Prune(oneshot::Sender<Result<usize, String>>),
    /// One step of the item-state sweep of one source.
    PruneItems(
        Box<PruneStep>,
        oneshot::Sender<Result<(usize, Option<String>), String>>,
    ),
    /// Resolves once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

/// One bounded step of [`Store::prune_items`].
struct PruneStep {
    source_id: String,
    /// Start after this item id (None: from the first).
    after: Option<String>,
    /// Rows with `seen_at` below this (unix seconds) are deleted.
    floor: i64,
    /// Rows examined at most.
    chunk: usize,
    /// After the last step, delete the source's state row too.
    forget: bool,
}

/// Events drained into one transaction at most (group commit bound).
const MAX_GROUP_EVENTS: usize = 8192;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id BLOB PRIMARY KEY NOT NULL,
    source_id TEXT NOT NULL,
    source_type INTEGER NOT NULL,
    json TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    source_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_event_id BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    aliases TEXT NOT NULL DEFAULT '',
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (source_id, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sources (
    source_id TEXT PRIMARY KEY NOT NULL,
    etag TEXT,
    last_modified TEXT,
    last_poll_at TEXT,
    last_success_at TEXT,
    last_error TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_poll_at TEXT,
    event_count INTEGER NOT NULL DEFAULT 0,
    initialized INTEGER NOT NULL DEFAULT 0,
    snapshot TEXT,
    upstream_cursor TEXT
);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    max_filters INTEGER NOT NULL,
    max_streams INTEGER NOT NULL,
    rate REAL NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
"#;

/// Opens a connection with the project's pragmas; errors are phrased for users.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: path.to_owned(),
        reason,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| open_err(e.to_string()))?;
    // Larger pages suit rows of a few hundred bytes (fewer splits, shallower
    // trees); SQLite only applies this to a database not yet created.
    conn.execute_batch("PRAGMA page_size=8192;")
        .map_err(|e| open_err(describe_open_error(&e)))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| open_err(describe_open_error(&e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_err(format!(
            "could not switch to WAL mode (got `{mode}`)"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384;")
        .map_err(|e| open_err(describe_open_error(&e)))?;
    Ok(conn)
}

fn describe_open_error(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            "the file is not a SQLite database or is corrupt (move it aside to start fresh)".into()
        }
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            "the database is corrupt (restore a backup or move it aside to start fresh)".into()
        }
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            "the database is locked by another process (is another `livestrom run` using it?)"
                .into()
        }
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen) => {
            format!("cannot open or write the file: {e}")
        }
        _ => e.to_string(),
    }
}

/// Opens a connection and creates/migrates the schema: for tools (the CLI's
/// `apikey`, `sources list`) that work on the database while `livestrom run`
/// has it open (WAL allows one writer at a time and any number of readers).
pub fn open_and_migrate(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    conn.execute_batch(SCHEMA).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        reason: describe_open_error(&e),
    })?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database, migrates it, seeds the id
    /// generator from the newest stored id and starts the writer thread.
    pub fn open(path: &Path, retention: Duration, bus: Bus) -> Result<Self, StoreError> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: describe_open_error(&e),
        })?;
        let last: Option<Vec<u8>> = conn
            .query_row("SELECT id FROM events ORDER BY id DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: describe_open_error(&e),
            })?;
        let last_meta: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='last_id'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let seed = [
            last.as_deref().and_then(|b| Uuid::from_slice(b).ok()),
            last_meta.and_then(|s| Uuid::parse_str(&s).ok()),
        ]
        .into_iter()
        .flatten()
        .max();
        // Take the write lock once now, so a database locked by another
        // process is a clear error at start-up rather than a stall later.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: describe_open_error(&e),
            })?;
        // The writer keeps the hot part of the items index in memory (256 MiB
        // page cache, used only as the database grows) and checkpoints the WAL
        // every 32768 pages (256 MiB): fewer, larger checkpoints under load.
        // The WAL file is reused, not shrunk (truncating it after every
        // checkpoint measured 35 % slower).
        conn.execute_batch("PRAGMA cache_size=-262144; PRAGMA wal_autocheckpoint=32768; PRAGMA mmap_size=1073741824;")
            .map_err(|e| StoreError::Open { path: path.to_owned(), reason: describe_open_error(&e) })?;
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let ids = Arc::new(Mutex::new(IdGenerator::new(seed)));
        let w = WriterThread {
            conn,
            ids: ids.clone(),
            bus: bus.clone(),
            retention,
        };
        std::thread::Builder::new()
            .name("livestrom-store-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: format!("cannot start writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                readers: Mutex::new(Vec::new()),
                retention,
                writer: tx,
                bus,
                ids,
                #[cfg(test)]
                write_fault: Mutex::new(None),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The live feed this store publishes to.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The retention window.
    pub fn retention(&self) -> Duration {
        self.inner.retention
    }

    /// Commits a batch; resolves once COMMIT returned, with the stored events.
    pub async fn write(&self, batch: WriteBatch) -> Result<Vec<Arc<CommittedEvent>>, StoreError> {
        #[cfg(test)]
        self.check_write_fault(&batch)?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Write(Box::new(batch), tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Task)
    }

    /// Unit tests: every later [`Store::write`] first asks `fault` about its batch.
    #[cfg(test)]
    pub(crate) fn set_write_fault(
        &self,
        fault: impl Fn(&WriteBatch) -> Result<(), String> + Send + Sync + 'static,
    ) {
        if let Ok(mut f) = self.inner.write_fault.lock() {
            *f = Some(Arc::new(fault));
        }
    }

    #[cfg(test)]
    fn check_write_fault(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        // Cloned out so the hook (which may panic) runs without the lock held.
        let fault = self.inner.write_fault.lock().ok().and_then(|f| f.clone());
        match fault {
            Some(fault) => fault(batch).map_err(StoreError::Task),
            None => Ok(()),
        }
    }

    /// Deletes events older than the retention window; returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Prune(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(StoreError::Task)
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
        let horizon = chrono::Duration::from_std(item_horizon(self.inner.retention))
            .map_err(|e| StoreError::Task(format!("item horizon: {e}")))?;
        let refresh = chrono::Duration::from_std(SEEN_REFRESH)
            .map_err(|e| StoreError::Task(format!("seen refresh: {e}")))?;
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
                let (n, next) = rx
                    .await
                    .map_err(|_| StoreError::WriterGone)?
                    .map_err(StoreError::Task)?;
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

    /// Resolves once every write queued before this call is committed (used
    /// at shutdown after the pollers stopped: nothing acknowledged is lost).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Flush(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Runs `f` with a pooled read connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` with a pooled read connection on the current thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = match self.inner.readers.lock().ok().and_then(|mut p| p.pop()) {
            Some(c) => c,
            None => open_connection(&self.inner.path)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.inner.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        out
    }

    /// All item states of a source.
    pub async fn items(&self, source_id: &str) -> Result<Vec<ItemState>, StoreError> {
        let sid = source_id.to_owned();
        self.read(move |c| load_items(c, &sid)).await
    }

    /// The stored state of a source, if it was ever polled.
    pub async fn source_state(&self, source_id: &str) -> Result<Option<SourceState>, StoreError> {
        let sid = source_id.to_owned();
        self.read(move |c| load_source(c, &sid)).await
    }

    /// State of every source ever polled.
    pub async fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        self.read(load_all_sources).await
    }
}

impl EventLog for Store {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, StoreError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        self.read_blocking(|c| {
            read_after_visit(c, after, limit, scope, &mut |id, sid, st, json| {
                out.push(LogRow {
                    id,
                    source_id: sid.to_owned(),
                    source_type: st,
                    json: Arc::from(json),
                });
            })
        })?;
        Ok(out)
    }

    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, StoreError> {
        self.read_blocking(|c| read_after_visit(c, after, limit, scope, f))
    }

    fn retention_floor(&self) -> Uuid {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let floor_ms = now_ms.saturating_sub(self.inner.retention.as_millis() as u64);
        let by_time = uuid_floor_at(floor_ms);
        self.pruned_below().unwrap_or(by_time).max(by_time)
    }

    fn pruned_below(&self) -> Result<Uuid, StoreError> {
        let v: Option<String> = self.read_blocking(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key='pruned_below'", [], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })?;
        v.map_or(Ok(Uuid::nil()), |s| {
            Uuid::parse_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("meta pruned_below {s:?}: {e}")))
        })
    }

    fn watermark(&self) -> Result<Uuid, StoreError> {
        let mut ids = self
            .inner
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        Ok(ids.advance_to(uuid_floor_at(now_ms)))
    }

    fn head(&self) -> Result<Option<Uuid>, StoreError> {
        self.read_blocking(|c| {
            let b: Option<Vec<u8>> = c
                .query_row("SELECT id FROM events ORDER BY id DESC LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            b.map(|b| Uuid::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
    }
}

fn read_after_visit(
    c: &Connection,
    after: Uuid,
    limit: usize,
    scope: &ReadScope,
    f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
) -> Result<usize, StoreError> {
    let mut sql = String::from("SELECT id, source_id, source_type, json FROM events WHERE id > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![after.as_bytes().to_vec().into()];
    if !scope.sources.is_empty() || !scope.prefixes.is_empty() {
        let mut ors = Vec::new();
        for s in &scope.sources {
            args.push(s.clone().into());
            ors.push(format!("source_id = ?{}", args.len()));
        }
        for p in &scope.prefixes {
            // Range on the prefix: [p, p + 0xFF) — ids are ASCII so this is exact.
            args.push(p.clone().into());
            let lo = args.len();
            args.push(format!("{p}\u{10FFFF}").into());
            ors.push(format!(
                "(source_id >= ?{lo} AND source_id < ?{})",
                args.len()
            ));
        }
        sql.push_str(&format!(" AND ({})", ors.join(" OR ")));
    }
    if !scope.types.is_empty() {
        let list: Vec<String> = scope
            .types
            .iter()
            .map(|t| (t.as_index() as i64).to_string())
            .collect();
        sql.push_str(&format!(" AND source_type IN ({})", list.join(",")));
    }
    sql.push_str(" ORDER BY id LIMIT ");
    sql.push_str(&limit.to_string());
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let id = r
            .get_ref(0)?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = Uuid::from_slice(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let st: i64 = r.get(2)?;
        let source_type = *SourceType::ALL
            .get(st as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("source_type {st}")))?;
        let sid = r
            .get_ref(1)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let json = r
            .get_ref(3)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        f(id, sid, source_type, json);
        n += 1;
    }
    Ok(n)
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

fn split_aliases(s: &str) -> Vec<String> {
    s.split('\u{1f}')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
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

struct WriterThread {
    conn: Connection,
    /// Shared with readers for [`EventLog::watermark`]; locked per transaction.
    ids: Arc<Mutex<IdGenerator>>,
    bus: Bus,
    retention: Duration,
}

type Reply = oneshot::Sender<Result<Vec<Arc<CommittedEvent>>, String>>;

impl WriterThread {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            let mut group: Vec<(WriteBatch, Reply)> = Vec::new();
            let mut prunes = Vec::new();
            let mut item_steps = Vec::new();
            let mut flushes = Vec::new();
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
                }
                if n < MAX_GROUP_EVENTS {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }
            for r in prunes {
                let _ = r.send(self.prune().map_err(|e| e.to_string()));
            }
            for (step, r) in item_steps {
                let _ = r.send(self.prune_items_step(&step).map_err(|e| e.to_string()));
            }
            for r in flushes {
                let _ = r.send(());
            }
        }
        tracing::debug!("store writer stopped: all handles dropped");
    }

    fn commit_group(&mut self, mut group: Vec<(WriteBatch, Reply)>) {
        let now = Utc::now();
        // The events are moved into the transaction (no copy); on failure
        // every submitter gets the error and nothing was committed.
        let result = self.apply(&mut group, now);
        match result {
            Ok(per_batch) => {
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
                let msg = e.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }

    fn apply(
        &mut self,
        group: &mut [(WriteBatch, Reply)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<Arc<CommittedEvent>>>, StoreError> {
        // Held until the transaction ends (commit or rollback): see `Inner::ids`.
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(group.len());
        let mut last = None;
        {
            let mut ins_event = tx.prepare_cached(
                "INSERT INTO events (id, source_id, source_type, json) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut up_item = tx.prepare_cached(
                "INSERT INTO items (source_id, item_id, version, last_event_id, fingerprint, aliases, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (source_id, item_id) DO UPDATE SET version=excluded.version, last_event_id=excluded.last_event_id,
                 fingerprint=excluded.fingerprint, aliases=excluded.aliases, seen_at=excluded.seen_at",
            )?;
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
                    up_item.execute(params![
                        e.source_id,
                        e.item_id,
                        e.version as i64,
                        e.id.as_bytes().as_slice(),
                        ne.fingerprint,
                        ne.aliases.join("\u{1f}"),
                        now.timestamp()
                    ])?;
                    last = Some(e.id);
                    evs.push(Arc::new(committed));
                }
                for it in &batch.touch_items {
                    let sid = batch
                        .source
                        .as_ref()
                        .map(|s| s.source_id.as_str())
                        .unwrap_or_default();
                    up_item.execute(params![
                        sid,
                        it.item_id,
                        it.version as i64,
                        it.last_event_id.as_bytes().as_slice(),
                        it.fingerprint,
                        it.aliases.join("\u{1f}"),
                        now.timestamp()
                    ])?;
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
        }
        tx.commit()?;
        Ok(out)
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

impl Store {
    /// Item states of a source restricted to the given item ids (firehose
    /// sources, whose item tables grow without bound, look up only these).
    pub async fn items_by_ids(
        &self,
        source_id: &str,
        ids: Vec<String>,
    ) -> Result<Vec<ItemState>, StoreError> {
        let sid = source_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {ITEM_COLS} FROM items WHERE source_id = ?1 AND item_id = ?2"
            ))?;
            let mut out = Vec::new();
            for id in ids {
                let mut rows = stmt.query(params![sid, id])?;
                if let Some(r) = rows.next()? {
                    out.push(item_from_row(r)?);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn ev(source: &str, item: &str) -> NewEvent {
        NewEvent {
            event: StreamEvent {
                id: Uuid::nil(),
                schema_version: 1,
                source_id: source.into(),
                source_type: SourceType::Rss,
                url: "https://example.com/".into(),
                title: format!("title {item}"),
                content: "content".into(),
                tags: vec![],
                fetched_at: Utc::now(),
                emitted_at: Utc::now(),
                item_id: item.into(),
                version: 1,
                supersedes: None,
                diff: None,
                added: None,
                published_at: None,
            },
            fingerprint: "fp".into(),
            aliases: vec!["a1".into()],
        }
    }

    /// Events with id at or below `w` visible right now.
    fn visible_upto(store: &Store, w: Uuid) -> Result<usize, StoreError> {
        store.read_blocking(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM events WHERE id <= ?1",
                [w.as_bytes().as_slice()],
                |r| r.get::<_, i64>(0),
            )? as usize)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watermark_never_passes_an_event_minted_but_not_committed() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let store = Store::open(
            &dir.path().join("t.db"),
            Duration::from_secs(3600),
            Bus::new(),
        )?;
        // Empty log: the watermark is "now", and later commits are above it.
        let w0 = store.watermark()?;
        let first = store
            .write(WriteBatch {
                events: vec![ev("s", "0")],
                ..Default::default()
            })
            .await?;
        assert!(first[0].event.id > w0);
        // Big transactions in flight while readers take watermarks: every
        // event at or below a watermark must already be visible when it is
        // handed out (nothing below it may appear later).
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..4 {
                    let events = (0..5000)
                        .map(|i| ev("s", &format!("{round}-{i}")))
                        .collect();
                    store
                        .write(WriteBatch {
                            events,
                            ..Default::default()
                        })
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        };
        let reader = {
            let store = store.clone();
            let done = done.clone();
            tokio::task::spawn_blocking(move || {
                let mut seen = Vec::new();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let w = store.watermark()?;
                    seen.push((w, visible_upto(&store, w)?));
                }
                Ok::<_, StoreError>(seen)
            })
        };
        writer
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        for (w, then) in seen {
            assert_eq!(
                visible_upto(&store, w)?,
                then,
                "an event at or below watermark {w} was committed after it was handed out"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn write_read_and_restart_keeps_ids_increasing() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("t.db");
        let bus = Bus::new();
        let mut live = bus.subscribe();
        let store = Store::open(&path, Duration::from_secs(3600), bus)?;
        let batch = WriteBatch {
            events: vec![ev("a.b", "1"), ev("a.c", "2"), ev("b", "3")],
            source: Some(SourceState {
                source_id: "a.b".into(),
                etag: Some("x".into()),
                initialized: true,
                ..Default::default()
            }),
            touch_items: vec![],
            refresh_items: false,
        };
        let out = store.write(batch).await?;
        assert_eq!(out.len(), 3);
        assert!(out[0].event.id < out[1].event.id && out[1].event.id < out[2].event.id);
        let published = live
            .recv()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        assert_eq!(published.len(), 3);

        let scope = ReadScope {
            prefixes: vec!["a.".into()],
            ..Default::default()
        };
        let rows = store.read_after(Uuid::nil(), 10, &scope)?;
        assert_eq!(
            rows.iter()
                .map(|r| r.source_id.as_str())
                .collect::<Vec<_>>(),
            vec!["a.b", "a.c"]
        );
        let rows = store.read_after(out[0].event.id, 10, &ReadScope::default())?;
        assert_eq!(rows.len(), 2);

        let items = store.items("a.b").await?;
        assert_eq!(items.len(), 1);
        // A held-back item (version 0, never emitted) reads back as version 0,
        // through both lookups.
        let held = ItemState {
            item_id: "held".into(),
            version: 0,
            last_event_id: Uuid::nil(),
            fingerprint: "f".into(),
            aliases: vec![],
            seen_at: 0,
        };
        // What was written, with the write time the store gave it.
        let unstamped = |v: Vec<ItemState>| -> Vec<ItemState> {
            v.into_iter()
                .map(|i| ItemState { seen_at: 0, ..i })
                .collect()
        };
        store
            .write(WriteBatch {
                source: Some(SourceState {
                    source_id: "h".into(),
                    ..Default::default()
                }),
                touch_items: vec![held.clone()],
                ..Default::default()
            })
            .await?;
        assert_eq!(unstamped(store.items("h").await?), vec![held.clone()]);
        assert_eq!(
            unstamped(store.items_by_ids("h", vec!["held".into()]).await?),
            vec![held]
        );
        assert_eq!(items[0].aliases, vec!["a1".to_string()]);
        let st = store
            .source_state("a.b")
            .await?
            .ok_or(StoreError::Corrupt("missing".into()))?;
        assert_eq!(st.etag.as_deref(), Some("x"));
        assert_eq!(st.event_count, 3);
        let last = out[2].event.id;
        drop(store);

        let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
        let out2 = store
            .write(WriteBatch {
                events: vec![ev("b", "4")],
                ..Default::default()
            })
            .await?;
        assert!(out2[0].event.id > last);
        assert_eq!(store.head()?, Some(out2[0].event.id));
        Ok(())
    }

    #[test]
    fn locked_database_is_a_clear_open_error() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("locked.db");
        drop(Store::open(&path, Duration::from_secs(60), Bus::new())?);
        let holder = open_connection(&path)?;
        holder
            .execute_batch("BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('x', 'y');")?;
        let err = Store::open(&path, Duration::from_secs(60), Bus::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("locked by another process"), "{err}");
        holder.execute_batch("ROLLBACK;")?;
        Ok(())
    }

    #[test]
    fn garbage_file_is_a_clear_open_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("bad.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap_or_else(|e| panic!("{e}"));
        let err = Store::open(&path, Duration::from_secs(60), Bus::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a SQLite database"), "{err}");
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[tokio::test]
    async fn prune_items_forgets_stale_state_of_sources_polled_since() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("items.db");
        let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
        let polled_now = |id: &str| SourceState {
            source_id: id.into(),
            last_success_at: Some(Utc::now()),
            ..Default::default()
        };
        // "live": polled just now; "down": last success long ago.
        for (sid, source) in [
            ("live", polled_now("live")),
            (
                "down",
                SourceState {
                    source_id: "down".into(),
                    last_success_at: Some(Utc::now() - chrono::Duration::days(30)),
                    ..Default::default()
                },
            ),
        ] {
            store
                .write(WriteBatch {
                    events: (0..10)
                        .map(|i| super::tests::ev(sid, &format!("item{i:02}")))
                        .collect(),
                    source: Some(source),
                    ..Default::default()
                })
                .await?;
        }
        // Age every even item of both sources past the horizon.
        let old = (Utc::now() - chrono::Duration::days(30)).timestamp();
        let conn = open_connection(&path)?;
        conn.execute(
            "UPDATE items SET seen_at = ?1 WHERE CAST(substr(item_id, 5) AS INTEGER) % 2 = 0",
            [old],
        )?;
        drop(conn);

        // "gone": no longer configured, last polled long ago; "just-removed":
        // no longer configured but polled an hour ago.
        for (sid, polled) in [
            ("gone", Utc::now() - chrono::Duration::days(30)),
            ("just-removed", Utc::now() - chrono::Duration::hours(1)),
        ] {
            store
                .write(WriteBatch {
                    events: (0..4)
                        .map(|i| super::tests::ev(sid, &format!("item{i:02}")))
                        .collect(),
                    source: Some(SourceState {
                        source_id: sid.into(),
                        last_poll_at: Some(polled),
                        last_success_at: Some(polled),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
        }
        let configured: HashSet<String> = ["live", "down"].map(String::from).into();

        // Small steps: the sweep has to carry its position across chunks.
        let deleted = store.prune_items_chunked(&configured, 3).await?;
        assert_eq!(deleted, 5 + 4);
        assert!(store.items("gone").await?.is_empty());
        assert_eq!(
            store.source_state("gone").await?,
            None,
            "forgotten entirely"
        );
        assert_eq!(store.items("just-removed").await?.len(), 4);
        assert!(store.source_state("just-removed").await?.is_some());
        let ids = |items: Vec<ItemState>| -> Vec<String> {
            let mut v: Vec<String> = items.into_iter().map(|i| i.item_id).collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(store.items("live").await?),
            ["item01", "item03", "item05", "item07", "item09"]
        );
        assert_eq!(
            store.items("down").await?.len(),
            10,
            "a source that was down keeps its items"
        );
        // Nothing left to do.
        assert_eq!(store.prune_items(&configured).await?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn an_unchanged_source_refreshes_its_items_so_they_are_not_pruned(
    ) -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("refresh.db");
        let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
        let polled = || SourceState {
            source_id: "quiet".into(),
            last_success_at: Some(Utc::now()),
            ..Default::default()
        };
        store
            .write(WriteBatch {
                events: (0..3)
                    .map(|i| super::tests::ev("quiet", &format!("i{i}")))
                    .collect(),
                source: Some(polled()),
                ..Default::default()
            })
            .await?;
        // A week of 304s: the items were last written long ago.
        let old = (Utc::now() - chrono::Duration::days(7)).timestamp();
        open_connection(&path)?.execute("UPDATE items SET seen_at = ?1", [old])?;
        // Another 304.
        store
            .write(WriteBatch {
                source: Some(polled()),
                refresh_items: true,
                ..Default::default()
            })
            .await?;
        let configured: HashSet<String> = ["quiet".to_owned()].into();
        assert_eq!(store.prune_items(&configured).await?, 0);
        assert_eq!(store.items("quiet").await?.len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn prune_removes_events_outside_retention_and_raises_the_floor() -> Result<(), StoreError>
    {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Task(e.to_string()))?;
        let path = dir.path().join("p.db");
        let store = Store::open(&path, Duration::from_millis(200), Bus::new())?;
        let ev = |n: u32| NewEvent {
            event: StreamEvent {
                id: Uuid::nil(),
                schema_version: 1,
                source_id: "s".into(),
                source_type: SourceType::Rss,
                url: String::new(),
                title: format!("{n}"),
                content: String::new(),
                tags: vec![],
                fetched_at: Utc::now(),
                emitted_at: Utc::now(),
                item_id: format!("{n}"),
                version: 1,
                supersedes: None,
                diff: None,
                added: None,
                published_at: None,
            },
            fingerprint: String::new(),
            aliases: vec![],
        };
        let old = store
            .write(WriteBatch {
                events: vec![ev(1), ev(2)],
                ..Default::default()
            })
            .await?;
        // Let the first two events age past the 200 ms window (wall-clock
        // retention is what is under test, so real time has to pass).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.retention_floor() <= old[1].event.id {
            assert!(
                std::time::Instant::now() < deadline,
                "retention floor never passed the old events"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let fresh = store
            .write(WriteBatch {
                events: vec![ev(3)],
                ..Default::default()
            })
            .await?;
        assert_eq!(store.prune().await?, 2);
        let left = store.read_after(Uuid::nil(), 10, &ReadScope::default())?;
        assert_eq!(
            left.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![fresh[0].event.id]
        );
        assert!(store.retention_floor() > old[1].event.id);
        // Item state survives pruning: an old item is still known.
        assert_eq!(store.items("s").await?.len(), 3);
        Ok(())
    }
}
