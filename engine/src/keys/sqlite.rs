//! Keys in SQLite: the `api_keys` table (its schema is the store's, so one
//! migration creates every table) — the operations behind `livestrom apikey`
//! ([`create`], [`list`], [`update`], [`revoke`]) and [`SqliteKeys`], the
//! [`KeyBackend`] the running edge's cache reads through.
//!
//! # Noticing changes
//! Every change made by [`create`], [`update`] or [`revoke`] also bumps the
//! `api_keys_generation` row of the `meta` table in the same transaction.
//! [`SqliteKeys::load`] first reads `PRAGMA data_version` (free; changes when
//! any other connection committed), only then the generation row, and only
//! when that changed reloads the table; what it saw is recorded only after
//! the reload succeeded, so a failed read is retried on the next call (a
//! revocation never waits for the full reload). A full reload also happens
//! every [`FULL_RELOAD_EVERY`] to pick up hand edits that did not bump the
//! generation.
//!
//! # Writes: the single exception to "every write goes through the writer"
//! In `livestrom run` every write goes through the store's single writer
//! thread, the keys' `last_used_at` too ([`SqliteKeys::with_store`] sends
//! them as a writer job). The single exception is `livestrom apikey`: a
//! separate process that runs while `livestrom run` holds the writer, so it
//! writes on a connection of its own, in short `BEGIN IMMEDIATE`
//! transactions (the write lock is taken up front, so a read-then-write never
//! fails half-way on a busy database) with the connection's busy timeout, so
//! it waits for the writer's group commit instead of failing. A backend made
//! with [`SqliteKeys::new`] (no running store) writes `last_used_at` the same
//! way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::backend::{KeyBackend, KeyRow};
use super::format::{generate, hash_key};
use super::model::{KeyError, KeyRecord, KeyUpdate, NewKey, Scope, DEFAULT_RATE};
use crate::store::{open_connection, StoreError};

/// How often a backend's `load` reloads every key regardless of its change
/// signal ([`SqliteKeys`]' generation row, `NatsKeys`' watcher).
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// The `meta` row bumped on every key change.
const GENERATION_KEY: &str = "api_keys_generation";

impl From<rusqlite::Error> for KeyError {
    fn from(e: rusqlite::Error) -> Self {
        KeyError::Storage(Box::new(e))
    }
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        KeyError::Storage(Box::new(e))
    }
}

/// Mints a key, stores only its hash, returns the plaintext (shown once).
/// `conn` comes from `livestrom_engine::store::open_and_migrate`.
pub fn create(conn: &Connection, new: &NewKey) -> Result<String, KeyError> {
    new.validate()?;
    let key = generate();
    let hash = hash_key(&key);
    let tx = write_tx(conn)?;
    let inserted = tx.execute(
        "INSERT INTO api_keys (name, key_hash, scopes, max_filters, max_streams, rate, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            new.name,
            &hash[..],
            scopes_to_text(&new.scopes),
            new.max_filters as i64,
            new.max_streams as i64,
            new.rate,
            rfc3339(Utc::now())
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e, "api_keys.name") => {
            return Err(KeyError::NameTaken(new.name.clone()))
        }
        Err(e) => return Err(e.into()),
    }
    bump_generation(&tx)?;
    tx.commit()?;
    Ok(key)
}

/// All keys, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<KeyRecord>, KeyError> {
    let mut stmt = conn.prepare(
        "SELECT name, scopes, max_filters, max_streams, rate, created_at, last_used_at, revoked_at \
         FROM api_keys ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyRecord {
            name: r.get(0)?,
            scopes: scopes_from_text(&r.get::<_, String>(1)?),
            max_filters: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            max_streams: usize::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            rate: r.get(4)?,
            created_at: r.get(5)?,
            last_used_at: r.get(6)?,
            revoked_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Changes a key's scopes/limits.
pub fn update(conn: &Connection, name: &str, change: &KeyUpdate) -> Result<(), KeyError> {
    change.validate()?;
    let tx = write_tx(conn)?;
    let revoked: Option<Option<String>> = tx
        .query_row(
            "SELECT revoked_at FROM api_keys WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    match revoked {
        None => return Err(KeyError::NotFound(name.to_owned())),
        Some(Some(_)) => return Err(KeyError::Revoked(name.to_owned())),
        Some(None) => {}
    }
    tx.execute(
        "UPDATE api_keys SET scopes = coalesce(?2, scopes), max_filters = coalesce(?3, max_filters), \
         max_streams = coalesce(?4, max_streams), rate = coalesce(?5, rate) WHERE name = ?1",
        params![
            name,
            change.scopes.as_deref().map(scopes_to_text),
            change.max_filters.map(|v| v as i64),
            change.max_streams.map(|v| v as i64),
            change.rate
        ],
    )?;
    bump_generation(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Revokes a key (refused by the edge within a second, streams closed within 5 s).
pub fn revoke(conn: &Connection, name: &str) -> Result<(), KeyError> {
    let tx = write_tx(conn)?;
    let n = tx.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, rfc3339(Utc::now())],
    )?;
    if n == 0 {
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM api_keys WHERE name = ?1)",
            params![name],
            |r| r.get(0),
        )?;
        return Err(if exists {
            KeyError::AlreadyRevoked(name.to_owned())
        } else {
            KeyError::NotFound(name.to_owned())
        });
    }
    bump_generation(&tx)?;
    tx.commit()?;
    Ok(())
}

/// The [`KeyBackend`] over the database file `livestrom run` uses. Opens
/// its connections on first use (on a blocking thread, where the cache
/// calls it).
pub struct SqliteKeys {
    path: PathBuf,
    /// The running node's store: `last_used_at` goes through its writer.
    store: Option<crate::store::Store>,
    /// Change detection. A mutex only because the trait takes `&self`: the
    /// refresher is its one caller.
    watch: Mutex<Watch>,
    /// The connection for `last_used_at` writes: separate from the watch
    /// connection so a write waiting on the busy timeout never delays
    /// noticing a revocation.
    usage: Mutex<Option<Connection>>,
    /// Unit tests: this many key-table loads fail, as a transient database
    /// error would.
    #[cfg(test)]
    fail_loads: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for SqliteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeys")
            .field("path", &self.path)
            .finish()
    }
}

/// What [`SqliteKeys::load`] last saw.
struct Watch {
    /// Dedicated: `PRAGMA data_version` is per connection.
    conn: Option<Connection>,
    data_version: i64,
    generation: Option<String>,
    /// When every key was last loaded (None: never, so the next load is full).
    last_full: Option<Instant>,
}

impl SqliteKeys {
    /// A backend over the database at `path` (already migrated by the store).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            watch: Mutex::new(Watch {
                conn: None,
                data_version: -1,
                generation: None,
                last_full: None,
            }),
            store: None,
            usage: Mutex::new(None),
            #[cfg(test)]
            fail_loads: Default::default(),
        }
    }

    /// A backend over a running node's store: reads on connections of its
    /// own, writes through the store's writer.
    pub fn with_store(store: &crate::store::Store) -> Self {
        Self {
            store: Some(store.clone()),
            ..Self::new(store.path())
        }
    }

    /// Unit tests: the next `n` loads that get as far as reading the table fail.
    #[cfg(test)]
    pub(crate) fn fail_next_loads(&self, n: u32) {
        self.fail_loads
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Unit tests: how many injected failures are still to come.
    #[cfg(test)]
    pub(crate) fn failures_left(&self) -> u32 {
        self.fail_loads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl KeyBackend for SqliteKeys {
    /// See the module doc, "Noticing changes".
    fn load(&self) -> Result<Option<Vec<KeyRow>>, KeyError> {
        let mut guard = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let w: &mut Watch = &mut guard;
        let full = w
            .last_full
            .is_none_or(|at| at.elapsed() >= FULL_RELOAD_EVERY);
        let conn = match &mut w.conn {
            Some(c) => c,
            slot @ None => slot.insert(open_connection(&self.path)?),
        };
        let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if dv == w.data_version && !full {
            return Ok(None);
        }
        let generation: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![GENERATION_KEY],
                |r| r.get(0),
            )
            .optional()?;
        if generation == w.generation && !full {
            // Another table changed; the keys did not.
            w.data_version = dv;
            return Ok(None);
        }
        #[cfg(test)]
        if self
            .fail_loads
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(KeyError::Storage("injected transient failure".into()));
        }
        let rows = load_rows(conn)?;
        w.data_version = dv;
        w.generation = generation;
        if full {
            w.last_full = Some(Instant::now());
        }
        Ok(Some(rows))
    }

    fn record_usage(&self, used: &HashMap<i64, DateTime<Utc>>) -> Result<(), KeyError> {
        let rows: Vec<(i64, String)> = used.iter().map(|(id, at)| (*id, rfc3339(*at))).collect();
        // Called on a blocking thread of the runtime (the cache's usage loop).
        if let (Some(store), Ok(rt)) = (&self.store, tokio::runtime::Handle::try_current()) {
            return Ok(rt.block_on(store.record_key_usage(rows))?);
        }
        let mut slot = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = match &mut *slot {
            Some(c) => c,
            empty @ None => empty.insert(open_connection(&self.path)?),
        };
        let tx = write_tx(conn)?;
        crate::store::update_key_usage(&tx, &rows)?;
        tx.commit()?;
        Ok(())
    }
}

/// A `BEGIN IMMEDIATE` transaction: see the module doc, "Writes".
fn write_tx(conn: &Connection) -> Result<Transaction<'_>, rusqlite::Error> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn load_rows(conn: &Connection) -> Result<Vec<KeyRow>, KeyError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, key_hash, scopes, max_filters, max_streams, rate, revoked_at IS NOT NULL \
         FROM api_keys ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, f64>(6)?,
            r.get::<_, bool>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, hash, scopes, max_filters, max_streams, rate, revoked) = row?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            tracing::warn!(key = %name, "api key row has a malformed hash; ignoring it");
            continue;
        };
        out.push(KeyRow {
            id,
            name,
            hash,
            scopes: scopes_from_text(&scopes),
            max_filters: usize::try_from(max_filters).unwrap_or(0),
            max_streams: usize::try_from(max_streams).unwrap_or(0),
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                DEFAULT_RATE
            },
            revoked,
        });
    }
    Ok(out)
}

fn scopes_to_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Unknown scope names in a stored row (a newer version wrote them) are skipped.
fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split(',')
        .filter_map(|p| Scope::parse(p.trim()))
        .collect()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bump_generation(conn: &Connection) -> Result<(), KeyError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, '1') \
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        params![GENERATION_KEY],
    )?;
    Ok(())
}

fn is_unique_violation(e: &rusqlite::Error, column: &str) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE && msg.contains(column))
}

#[cfg(test)]
mod tests;
