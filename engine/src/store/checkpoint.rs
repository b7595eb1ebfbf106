//! WAL checkpoints off the writer's thread.
//!
//! Every commit appends the pages it changed to the WAL; a checkpoint copies
//! them back into the database file (and syncs it) so the WAL can start over.
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its
//! threshold, on the writer's thread: under load that was 16 % of the
//! writer's time (a profile of the store bench), while every submitter
//! waited.
//!
//! Here the writer's connection reports the WAL's size after each commit
//! (`sqlite3_wal_hook`); each time it has grown by another 64 MiB, a
//! checkpointer thread with its own connection runs a `PASSIVE` checkpoint,
//! which copies committed frames while the writer goes on appending. A
//! passive checkpoint never waits for the writer, so under continuous writes
//! it may never catch up with the end of the WAL, and the WAL only starts
//! over once everything in it has been copied. The writer therefore keeps
//! SQLite's own checkpoint as the bound: at 256 MiB it checkpoints in its
//! COMMIT as before, finding most frames already copied, and the next
//! transaction starts the WAL over. (If the checkpointer is copying at that
//! moment the writer's checkpoint is busy and is retried on every following
//! commit, so on a slow disk the WAL can pass 256 MiB by what is written
//! while one background checkpoint runs.) Measured with the store bench: the
//! writer's CPU per event 8–20 % lower (docs/PERFORMANCE.md).

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

use super::error::StoreError;
use super::schema::open_connection;

/// When checkpoints run, in WAL pages (8 KiB each).
#[derive(Debug, Clone, Copy)]
pub(super) struct Thresholds {
    /// The checkpointer is asked to copy each time the WAL has grown by
    /// this many pages since it was last asked. Not after every commit: a
    /// checkpoint copies the newest version of each page, so frequent small
    /// ones copy pages that are rewritten again and again (the items of
    /// busy sources) many times over.
    pub(super) step: i32,
    /// From this size on the writer checkpoints in its own COMMIT (what
    /// `PRAGMA wal_autocheckpoint` did before): the bound on the WAL.
    pub(super) hard: i32,
}

impl Thresholds {
    /// 64 MiB steps, the writer's own at 256 MiB.
    pub(super) const DEFAULT: Thresholds = Thresholds {
        step: 8192,
        hard: 32768,
    };
}

/// Installs the WAL hook on the writer's connection and starts the
/// checkpointer thread on a connection of its own. The thread ends when the
/// writer's connection is closed (the hook, which holds the only sender, is
/// dropped with it); the handle returned is for waiting on that.
pub(super) fn start(
    writer: &mut Connection,
    path: &Path,
    at: Thresholds,
) -> Result<JoinHandle<()>, StoreError> {
    let conn = open_connection(path)?;
    let (nudge, nudged) = sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("livestrom-wal-ckpt".into())
        .spawn(move || run(conn, nudged))
        .map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: format!("cannot start checkpoint thread: {e}"),
        })?;
    let mut next = at.step;
    let mut last = 0;
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
        if pages < last {
            // The WAL started over: a new cycle.
            next = at.step;
        }
        last = pages;
        after_commit(wal, pages, at, &mut next, &nudge);
        // The commit has happened whatever a checkpoint says: an error
        // returned here would make the COMMIT report a failure.
        Ok(())
    }))?;
    Ok(thread)
}

/// The writer's WAL hook: `pages` is the WAL's size after the commit;
/// `next` the size at which to ask the checkpointer next.
fn after_commit(
    wal: &mut rusqlite::hooks::Wal,
    pages: i32,
    at: Thresholds,
    next: &mut i32,
    nudge: &SyncSender<()>,
) {
    if pages >= at.hard {
        // As SQLite's automatic checkpoint does (PASSIVE, in the commit).
        if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
            note_failure("writer", &e);
        }
    } else if pages >= *next {
        *next = pages.saturating_add(at.step);
        // One pending nudge is enough: a checkpoint copies everything
        // committed when it starts.
        match nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::debug!("checkpoint thread gone; the writer's own checkpoint remains")
            }
        }
    }
}

fn run(conn: Connection, nudged: Receiver<()>) {
    while nudged.recv().is_ok() {
        let result: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            });
        match result {
            Ok((busy, log, copied)) => {
                tracing::trace!(busy, log, copied, "background checkpoint")
            }
            Err(e) => note_failure("background", &e),
        }
    }
    tracing::debug!("checkpoint thread stopped: the writer closed");
}

/// A checkpoint that could not run is not a failed write: the frames stay
/// in the WAL (still durable, still read) until a later checkpoint copies
/// them. Busy is routine (the other checkpointer was copying).
fn note_failure(who: &str, e: &rusqlite::Error) {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            tracing::debug!(who, error = %e, "checkpoint skipped: busy")
        }
        _ => tracing::warn!(who, error = %e, "WAL checkpoint failed; will retry at the next one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TestResult;

    /// A writer connection with the hook, small thresholds, and a table to fill.
    fn writer(dir: &Path, at: Thresholds) -> Result<(Connection, JoinHandle<()>), StoreError> {
        let path = dir.join("ckpt.db");
        let mut conn = open_connection(&path)?;
        conn.execute_batch("CREATE TABLE t (x BLOB)")?;
        let thread = start(&mut conn, &path, at)?;
        Ok((conn, thread))
    }

    /// Commits `n` transactions of one 8 KiB row each (about two WAL pages).
    fn fill(conn: &Connection, n: usize) -> rusqlite::Result<()> {
        for _ in 0..n {
            conn.execute("INSERT INTO t (x) VALUES (zeroblob(8000))", [])?;
        }
        Ok(())
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn the_checkpointer_copies_the_wal_before_the_writer_would() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (conn, _thread) = writer(
            dir.path(),
            Thresholds {
                step: 64,
                hard: i32::MAX,
            },
        )?;
        let db = dir.path().join("ckpt.db");
        let before = file_len(&db);
        // Past one step; the writer never checkpoints (no hard bound), so
        // only the checkpointer thread can have copied pages into the file.
        fill(&conn, 100)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while file_len(&db) < before + 64 * 8192 {
            assert!(
                std::time::Instant::now() < deadline,
                "no background checkpoint: the database file stayed at {} bytes",
                file_len(&db)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    #[test]
    fn the_writers_own_checkpoint_bounds_the_wal() -> TestResult {
        let dir = tempfile::tempdir()?;
        // The checkpointer is never asked (its step is out of reach), so
        // the writer's own checkpoint at `hard` is all that bounds the WAL:
        // the commit that crosses it copies every frame (nothing else holds
        // the checkpoint lock or reads an older snapshot) and the next
        // transaction starts the WAL over. The file is reused, not
        // truncated, so its size is the largest the WAL ever was.
        let at = Thresholds {
            step: i32::MAX,
            hard: 128,
        };
        let (conn, _thread) = writer(dir.path(), at)?;
        fill(&conn, 2_000)?;
        let wal = file_len(&dir.path().join("ckpt.db-wal"));
        // `hard` pages plus the one commit that crossed it (an 8 KiB row
        // and its table's pages), each frame a page and a 24-byte header.
        let bound = (128 + 8) * (8192 + 24) + 32;
        assert!(wal <= bound, "WAL grew to {wal} bytes (bound {bound})");
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(rows, 2_000);
        Ok(())
    }

    #[test]
    fn continuous_writes_beside_the_checkpointer_are_all_kept() -> TestResult {
        let dir = tempfile::tempdir()?;
        // Both at work: the writer's checkpoint at `hard` may find the
        // checkpointer holding the lock and skip (busy), retrying on the
        // next commit. How far the WAL gets past `hard` meanwhile depends
        // on how long the disk takes, so only what must always hold is
        // asserted: every commit is kept and the database reads back whole.
        let at = Thresholds {
            step: 32,
            hard: 128,
        };
        let (conn, _thread) = writer(dir.path(), at)?;
        fill(&conn, 2_000)?;
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        assert_eq!(rows, 2_000);
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        assert_eq!(check, "ok");
        Ok(())
    }

    #[test]
    fn the_thread_ends_when_the_writer_closes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (conn, thread) = writer(dir.path(), Thresholds::DEFAULT)?;
        fill(&conn, 3)?;
        // Closing the writer drops the hook and with it the only sender.
        conn.close().map_err(|(_, e)| e)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpoint thread outlived the writer's connection"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}
