//! The database file: its schema (created or completed on every open), the
//! connection pragmas, and open errors worded so a user knows what to do.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::StoreError;

/// Every table, created if missing; run on every open (`IF NOT EXISTS`), so
/// it is also the migration of a database made by an older version.
pub(super) const SCHEMA: &str = r#"
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
CREATE TABLE IF NOT EXISTS item_log (
    seq INTEGER PRIMARY KEY,
    source_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_event_id BLOB NOT NULL,
    fingerprint TEXT NOT NULL,
    aliases TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);
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
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    filters TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until TEXT,
    created_at TEXT NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT,
    state_since TEXT,
    last_attempt_at TEXT,
    last_success_at TEXT,
    last_error TEXT,
    last_error_at TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    failing_since TEXT,
    next_attempt_at TEXT,
    delivered INTEGER NOT NULL DEFAULT 0
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

/// Puts a SQLite error met while opening in words a user can act on.
pub(super) fn describe_open_error(e: &rusqlite::Error) -> String {
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
