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
//!
//! The rooms, one job each (`mod.rs` holds the [`Store`] handle: open,
//! write, flush, pooled reads):
//! - `error`: [`StoreError`].
//! - `types`: what is written and read ([`WriteBatch`], [`ItemState`],
//!   [`SourceState`], …; log rows and scopes are `crate::log`'s).
//! - `schema`: the tables, connection pragmas and open-error wording.
//! - `writer`: the writer thread (group commit, id minting, prune jobs).
//! - `pending`: item state written behind the events (`item_log`, folded
//!   into `items`) and what readers see of it before a fold.
//! - `log`: the [`EventLog`] seam and its SQLite implementation.
//! - `state`: item and source state reads.
//! - `retention`: event pruning and the item-state sweep.
//!
//! Dependencies point one way: `error` and `types` are leaves; `schema`,
//! `pending` and `writer` use only them (`writer` also `pending`); `log`,
//! `state` and `retention` add the handle (`super::Store`), and
//! `retention` sends its jobs in `writer`'s job type.
//! Nothing but this file uses `log`, `state` or `retention`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::bus::Bus;
use crate::config::Synchronous;
use crate::event::{CommittedEvent, IdGenerator};
use crate::metrics::Metrics;

mod checkpoint;
mod error;
mod log;
mod pending;
mod retention;
mod schema;
mod state;
#[cfg(test)]
mod tests;
mod types;
mod writer;

pub use crate::log::EventLog;
pub use crate::log::{LogRow, ReadScope};
pub use error::StoreError;
pub use retention::{item_horizon, ITEM_HORIZON_MIN, ITEM_PRUNE_CHUNK};
pub use schema::{open_and_migrate, open_connection};
pub use types::{ItemState, NewEvent, SourceState, WriteBatch, SEEN_REFRESH};
pub(crate) use writer::update_key_usage;

use pending::{FoldPolicy, SharedPending};
use schema::{describe_open_error, SCHEMA};
use writer::{Job, WriterThread};

/// The writer connection's page cache, KiB. It fills with every page a
/// commit touches and is never given back, so under a burst it was most of
/// the process's growth (at 256 MiB a burst of 100,000 events took the RSS
/// to 4.7–4.9× its steady size, at 16 MiB to 2.6–2.8×). A large cache paid
/// for itself while commits of many sources rewrote `items` pages in
/// place; with their item state written behind (`pending`) 4 MiB ingests
/// as fast in every shape measured and the burst peaks 15–25 MiB lower
/// (docs/PERFORMANCE.md, "Burst: a smaller writer cache").
const WRITER_CACHE_KIB: u32 = 4 << 10;

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
    /// The process's metrics (the writer records its commits; the runtime
    /// and the edge take theirs from here on one node).
    metrics: Metrics,
    /// Item state committed but not yet folded into `items` (`pending`).
    pending: SharedPending,
    /// Unit tests only: consulted by [`Store::write`] before a batch is
    /// queued, so a test can make one batch fail (or panic in the writing
    /// task) the way a failed commit would, through the real runtime.
    #[cfg(test)]
    write_fault: Mutex<Option<WriteFault>>,
}

/// A test's verdict on a batch about to be written: `Err(message)` fails
/// the write as a failed commit does ([`StoreError::Commit`], a SQLite error
/// with that message). A plain string, so runtime tests need no SQLite types.
#[cfg(test)]
pub(crate) type WriteFault = Arc<dyn Fn(&WriteBatch) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database, migrates it, seeds the id
    /// generator from the newest stored id and starts the writer thread.
    pub fn open(path: &Path, retention: Duration, bus: Bus) -> Result<Self, StoreError> {
        Self::open_with_metrics(path, retention, bus, Metrics::new())
    }

    /// [`Store::open`] recording into `metrics`.
    pub fn open_with_metrics(
        path: &Path,
        retention: Duration,
        bus: Bus,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        Self::open_synchronous(path, retention, Synchronous::Normal, bus, metrics)
    }

    /// [`Store::open_with_metrics`] whose writer commits with `synchronous`
    /// (`[engine] synchronous`; `Full` syncs every commit before it is
    /// acknowledged, so a power loss cannot take back an announced event).
    pub fn open_synchronous(
        path: &Path,
        retention: Duration,
        synchronous: Synchronous,
        bus: Bus,
        metrics: Metrics,
    ) -> Result<Self, StoreError> {
        Self::open_folding(
            path,
            retention,
            synchronous,
            bus,
            metrics,
            FoldPolicy::from_env(),
        )
    }

    /// [`Store::open_synchronous`] whose writer folds item state by `fold`.
    fn open_folding(
        path: &Path,
        retention: Duration,
        synchronous: Synchronous,
        bus: Bus,
        metrics: Metrics,
        fold: FoldPolicy,
    ) -> Result<Self, StoreError> {
        let conn = open_connection(path)?;
        conn.execute_batch(&format!("PRAGMA synchronous={};", synchronous.pragma()))
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: describe_open_error(&e),
            })?;
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
        let mut conn = conn;
        // Item state a previous process committed but did not fold (it was
        // killed, or stopped without a flush) goes into `items` first.
        let folded = pending::fold(&mut conn).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: format!(
                "cannot fold item state left in `item_log`: {}",
                describe_open_error(&e)
            ),
        })?;
        if folded > 0 {
            tracing::info!(
                rows = folded,
                "item state the last run had not folded is now in `items`"
            );
        }
        // The writer keeps the hot part of the items index in memory
        // (`WRITER_CACHE_KIB`). Checkpoints run on
        // their own thread from 64 MiB of WAL, the writer's own at 256 MiB
        // (`checkpoint`): fewer, larger checkpoints under load. The WAL file
        // is reused, not shrunk (truncating it after every checkpoint
        // measured 35 % slower).
        conn.execute_batch(&format!(
            "PRAGMA cache_size=-{WRITER_CACHE_KIB}; PRAGMA mmap_size=1073741824;"
        ))
        .map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: describe_open_error(&e),
        })?;
        // Detached: it ends when the writer's connection closes.
        let _checkpointer = checkpoint::start(&mut conn, path, checkpoint::Thresholds::DEFAULT)?;
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let ids = Arc::new(Mutex::new(IdGenerator::new(seed)));
        let pending = SharedPending::default();
        let w = WriterThread {
            conn,
            ids: ids.clone(),
            bus: bus.clone(),
            retention,
            metrics: metrics.clone(),
            pending: pending.clone(),
            fold,
            folded_at: std::time::Instant::now(),
            fold_failed: false,
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
                metrics,
                pending,
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

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
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
        rx.await.map_err(|_| StoreError::WriterGone)?
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
            Some(fault) => fault(batch).map_err(|msg| {
                StoreError::Commit(Arc::new(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(msg),
                )))
            }),
            None => Ok(()),
        }
    }

    /// Resolves once every write queued before this call is committed and
    /// the item state is folded into `items` (used at shutdown after the
    /// pollers stopped: nothing acknowledged is lost, and the file is left
    /// with nothing to fold).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Flush(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Proves the database takes writes: one tiny write (the `ready_probe`
    /// row of `meta`) through the writer, the way every write goes. Used by
    /// readiness (`GET /readyz`); a full disk, a read-only file or a stuck
    /// writer fail it.
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        self.check_write_fault(&WriteBatch::default())?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Probe(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Tests: the writer connection's `PRAGMA synchronous` (1 NORMAL, 2 FULL).
    #[cfg(test)]
    pub(crate) async fn writer_synchronous(&self) -> Result<i64, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::Synchronous(tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records API keys' `last_used_at` (key id, RFC 3339 time) through the
    /// writer, like every other write of a running node.
    pub async fn record_key_usage(&self, used: Vec<(i64, String)>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(Job::KeyUsage(used, tx))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` on the writer's connection, on the writer thread, between
    /// group commits: how a running node writes anything that is not a
    /// poll's batch (webhook endpoints). `f` opens and ends its own
    /// transaction (`BEGIN IMMEDIATE`); it must be short, ingestion waits.
    pub async fn exec<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: writer::ExecFn = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner
            .writer
            .send(Job::Exec(job))
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
        tokio::task::spawn_blocking(move || this.read_blocking(f)).await?
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
}
