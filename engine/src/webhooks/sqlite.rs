//! Webhook endpoints in SQLite: the `webhooks` table (its schema is the
//! store's, so one migration creates every table). Every operation takes a
//! connection and runs in one short `BEGIN IMMEDIATE` transaction, so the
//! same code serves both writers: `livestrom webhook`, another process,
//! on a connection of its own (the documented exception beside
//! `livestrom apikey`, see `keys/sqlite.rs`), and a running node, whose
//! writes (the admin API's changes, the workers' progress) go through the
//! store's writer thread ([`Store::exec`](crate::store::Store::exec)).
//!
//! Every operator change bumps the `webhooks_generation` row of `meta`
//! in the same transaction; the running node notices it within a
//! fraction of a second ([`ChangeWatch`]) and hands the new settings to
//! the endpoint's worker. Progress writes do not bump it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use uuid::Uuid;

use super::model::{
    Endpoint, EndpointInfo, EndpointUpdate, FilterTerms, NewEndpoint, Progress, Since, State,
    WebhookError,
};
use super::schedule::ROTATION_OVERLAP;
use super::signing::SigningSecret;
use crate::event::uuid_floor_at;
use crate::log::CURSOR_CLOCK_SKEW;
use crate::store::{open_connection, StoreError};

/// The `meta` row bumped on every operator change.
const GENERATION_KEY: &str = "webhooks_generation";

impl From<rusqlite::Error> for WebhookError {
    fn from(e: rusqlite::Error) -> Self {
        WebhookError::Storage(Box::new(e))
    }
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        WebhookError::Storage(Box::new(e))
    }
}

/// Creates an endpoint; returns its secret (shown once) and how it is listed.
/// `retention` is the node's retention window (to check `--since`).
pub(super) fn create(
    conn: &Connection,
    new: &NewEndpoint,
    retention: Duration,
) -> Result<(SigningSecret, EndpointInfo), WebhookError> {
    let url = new.validate()?;
    let secret = SigningSecret::generate();
    let tx = write_tx(conn)?;
    let cursor = resolve_since(&tx, new.since, retention)?;
    let now = Utc::now();
    let filters =
        serde_json::to_string(&new.filters).map_err(|e| WebhookError::Storage(Box::new(e)))?;
    let inserted = tx.execute(
        "INSERT INTO webhooks (name, url, filters, concurrency, timeout_ms, secret, created_at, cursor, state, state_since) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active', ?7)",
        params![
            new.name,
            url.as_str(),
            filters,
            new.concurrency as i64,
            new.timeout.as_millis() as i64,
            secret.expose(),
            rfc3339(now),
            cursor.to_string(),
        ],
    );
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(WebhookError::NameTaken(new.name.clone())),
        Err(e) => return Err(e.into()),
    }
    bump_generation(&tx)?;
    let info = info_of(&tx, &new.name)?;
    tx.commit()?;
    Ok((secret, info))
}

/// Every endpoint, oldest first (never the secrets).
pub(super) fn list(conn: &Connection) -> Result<Vec<EndpointInfo>, WebhookError> {
    let mut stmt = conn.prepare(&format!("SELECT {INFO_COLUMNS} FROM webhooks ORDER BY id"))?;
    let rows = stmt.query_map([], info_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One endpoint by name.
pub(super) fn get(conn: &Connection, name: &str) -> Result<EndpointInfo, WebhookError> {
    info_of(conn, name)
}

/// Changes an endpoint's URL, filters, concurrency or timeout; its cursor
/// and state are kept.
pub(super) fn update(
    conn: &Connection,
    name: &str,
    change: &EndpointUpdate,
) -> Result<EndpointInfo, WebhookError> {
    let url = change.validate()?;
    let filters = change
        .filters
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| WebhookError::Storage(Box::new(e)))?;
    let tx = write_tx(conn)?;
    let n = tx.execute(
        "UPDATE webhooks SET url = coalesce(?2, url), filters = coalesce(?3, filters), \
         concurrency = coalesce(?4, concurrency), timeout_ms = coalesce(?5, timeout_ms), \
         revision = revision + 1 WHERE name = ?1",
        params![
            name,
            url.as_ref().map(|u| u.as_str()),
            filters,
            change.concurrency.map(|c| c as i64),
            change.timeout.map(|t| t.as_millis() as i64),
        ],
    )?;
    finish_change(tx, name, n)
}

/// `enable`: active again, failures forgotten, delivery continues from the
/// cursor. `disable`: no delivery until enabled (the cursor is kept).
pub(super) fn set_enabled(
    conn: &Connection,
    name: &str,
    enabled: bool,
) -> Result<EndpointInfo, WebhookError> {
    let tx = write_tx(conn)?;
    let now = rfc3339(Utc::now());
    let n = if enabled {
        tx.execute(
            "UPDATE webhooks SET state = 'active', state_reason = NULL, state_since = ?2, failures = 0, \
             failing_since = NULL, next_attempt_at = NULL, epoch = epoch + 1, revision = revision + 1 \
             WHERE name = ?1",
            params![name, now],
        )?
    } else {
        tx.execute(
            "UPDATE webhooks SET state = 'disabled', state_reason = 'disabled by the operator', \
             state_since = ?2, next_attempt_at = NULL, epoch = epoch + 1, revision = revision + 1 \
             WHERE name = ?1",
            params![name, now],
        )?
    };
    finish_change(tx, name, n)
}

/// A new secret (returned, shown once); the previous one keeps signing
/// beside it for [`ROTATION_OVERLAP`] (a secret rotated before that is
/// dropped: two sign at most). Returns the secret and when the previous
/// one stops signing.
pub(super) fn rotate_secret(
    conn: &Connection,
    name: &str,
) -> Result<(SigningSecret, DateTime<Utc>), WebhookError> {
    let secret = SigningSecret::generate();
    let until = Utc::now()
        + chrono::Duration::from_std(ROTATION_OVERLAP).unwrap_or(chrono::Duration::hours(24));
    let tx = write_tx(conn)?;
    let n = tx.execute(
        "UPDATE webhooks SET previous_secret = secret, previous_until = ?2, secret = ?3, \
         revision = revision + 1 WHERE name = ?1",
        params![name, rfc3339(until), secret.expose()],
    )?;
    finish_change(tx, name, n)?;
    Ok((secret, until))
}

/// Deletes an endpoint; its worker stops within a second.
pub(super) fn delete(conn: &Connection, name: &str) -> Result<(), WebhookError> {
    let tx = write_tx(conn)?;
    let n = tx.execute("DELETE FROM webhooks WHERE name = ?1", params![name])?;
    if n == 0 {
        return Err(WebhookError::NotFound(name.to_owned()));
    }
    bump_generation(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Moves the cursor to `since` (any retained position, earlier or later):
/// delivery continues with the first matching event after it. A failing
/// or paused endpoint becomes active; a disabled one stays disabled.
pub(super) fn replay(
    conn: &Connection,
    name: &str,
    since: Since,
    retention: Duration,
) -> Result<EndpointInfo, WebhookError> {
    let tx = write_tx(conn)?;
    let cursor = resolve_since(&tx, since, retention)?;
    let now = rfc3339(Utc::now());
    let n = tx.execute(
        "UPDATE webhooks SET cursor = ?2, failures = 0, failing_since = NULL, next_attempt_at = NULL, \
         state_reason = CASE WHEN state = 'disabled' THEN state_reason ELSE NULL END, \
         state_since = CASE WHEN state = 'disabled' THEN state_since ELSE ?3 END, \
         state = CASE WHEN state = 'disabled' THEN 'disabled' ELSE 'active' END, \
         epoch = epoch + 1, revision = revision + 1 WHERE name = ?1",
        params![name, cursor.to_string(), now],
    )?;
    finish_change(tx, name, n)
}

/// Every endpoint as the delivery workers run it.
pub(super) fn load_endpoints(conn: &Connection) -> Result<Vec<Endpoint>, WebhookError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, epoch, revision, secret, previous_secret, previous_until, {INFO_COLUMNS} FROM webhooks ORDER BY id"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let info = info_at(r, 6)?;
        let secret_text: String = r.get(3)?;
        let Ok(secret) = SigningSecret::parse(&secret_text) else {
            tracing::warn!(webhook = %info.name, "webhook has a malformed secret; it is not delivered (rotate its secret)");
            continue;
        };
        let previous = match (
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ) {
            (Some(text), Some(until)) => SigningSecret::parse(&text)
                .ok()
                .zip(parse_time(Some(until))),
            _ => None,
        };
        let Ok(url) = url::Url::parse(&info.url) else {
            tracing::warn!(webhook = %info.name, "webhook has a malformed url; it is not delivered (update its url)");
            continue;
        };
        out.push(Endpoint {
            id,
            url,
            filter: info.filters.filter(),
            concurrency: info.concurrency.max(1),
            timeout: Duration::from_secs_f64(info.timeout_secs.max(0.001)),
            secret,
            previous,
            epoch: r.get(1)?,
            revision: r.get(2)?,
            progress: Progress {
                cursor: info.cursor,
                state: info.state,
                state_reason: info.state_reason,
                state_since: info.state_since,
                last_attempt_at: info.last_attempt_at,
                last_success_at: info.last_success_at,
                last_error: info.last_error,
                last_error_at: info.last_error_at,
                failures: info.failures_in_a_row,
                failing_since: parse_time(r.get(6 + FAILING_SINCE)?),
                next_attempt_at: info.next_attempt_at,
                delivered: info.delivered,
            },
            name: info.name,
        });
    }
    Ok(out)
}

/// Writes the workers' progress, each row only if its epoch is still the
/// stored one (an operator's enable, disable or replay since then wins),
/// in one transaction.
pub(super) fn save_progress(
    conn: &Connection,
    rows: &[(i64, i64, Progress)],
) -> Result<(), WebhookError> {
    let tx = write_tx(conn)?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE webhooks SET cursor = ?3, state = ?4, state_reason = ?5, state_since = ?6, \
             last_attempt_at = ?7, last_success_at = ?8, last_error = ?9, last_error_at = ?10, \
             failures = ?11, failing_since = ?12, next_attempt_at = ?13, delivered = ?14 \
             WHERE id = ?1 AND epoch = ?2",
        )?;
        for (id, epoch, p) in rows {
            let t = |t: &Option<DateTime<Utc>>| t.map(rfc3339);
            stmt.execute(params![
                id,
                epoch,
                p.cursor.to_string(),
                p.state.as_str(),
                p.state_reason,
                t(&p.state_since),
                t(&p.last_attempt_at),
                t(&p.last_success_at),
                p.last_error,
                t(&p.last_error_at),
                p.failures as i64,
                t(&p.failing_since),
                t(&p.next_attempt_at),
                p.delivered as i64,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Notices operator changes cheaply: `PRAGMA data_version` (free; changes
/// when another connection committed anything), then the generation row.
#[derive(Debug)]
pub(super) struct ChangeWatch {
    /// Dedicated: `data_version` is per connection.
    conn: Option<Connection>,
    data_version: i64,
    generation: Option<String>,
    /// True until the first successful check (which always reports a change).
    first: bool,
}

impl Default for ChangeWatch {
    fn default() -> Self {
        Self {
            conn: None,
            data_version: -1,
            generation: None,
            first: true,
        }
    }
}

impl ChangeWatch {
    /// Whether an operator changed any endpoint since the last call (always
    /// true on the first). Blocking.
    pub(super) fn changed(&mut self, path: &Path) -> Result<bool, WebhookError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            slot @ None => slot.insert(open_connection(path)?),
        };
        let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if dv == self.data_version && !self.first {
            return Ok(false);
        }
        let generation: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![GENERATION_KEY],
                |r| r.get(0),
            )
            .optional()?;
        self.data_version = dv;
        let changed = self.first || generation != self.generation;
        self.first = false;
        self.generation = generation;
        Ok(changed)
    }
}

/// Where deliveries start for `since`, checked against the retained window.
fn resolve_since(
    conn: &Connection,
    since: Since,
    retention: Duration,
) -> Result<Uuid, WebhookError> {
    let now_ms = Utc::now().timestamp_millis().max(0) as u64;
    let head: Option<Uuid> = conn
        .query_row("SELECT id FROM events ORDER BY id DESC LIMIT 1", [], |r| {
            r.get::<_, Vec<u8>>(0)
        })
        .optional()?
        .and_then(|b| Uuid::from_slice(&b).ok());
    let since = match since {
        // The first event committed from now on: past the newest id even
        // when the clock is behind it.
        Since::Now => {
            return Ok(head.map_or(uuid_floor_at(now_ms), |h| h.max(uuid_floor_at(now_ms))))
        }
        Since::After(id) => id,
    };
    let pruned: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'pruned_below'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let by_time = uuid_floor_at(now_ms.saturating_sub(retention.as_millis() as u64));
    let floor = pruned
        .and_then(|s| Uuid::parse_str(&s).ok())
        .map_or(by_time, |p| p.max(by_time));
    if since < floor {
        return Err(WebhookError::CursorExpired { since, floor });
    }
    let latest = uuid_floor_at(now_ms + CURSOR_CLOCK_SKEW.as_millis() as u64);
    if since >= latest && head.is_none_or(|h| since > h) {
        return Err(WebhookError::CursorAhead(since));
    }
    Ok(since)
}

/// Ends an operator change of one row: not found, or bump and commit.
fn finish_change(
    tx: Transaction<'_>,
    name: &str,
    changed: usize,
) -> Result<EndpointInfo, WebhookError> {
    if changed == 0 {
        return Err(WebhookError::NotFound(name.to_owned()));
    }
    bump_generation(&tx)?;
    let info = info_of(&tx, name)?;
    tx.commit()?;
    Ok(info)
}

/// The columns [`info_row`] reads, in its order.
const INFO_COLUMNS: &str = "name, url, filters, concurrency, timeout_ms, state, state_reason, state_since, cursor, \
     created_at, last_attempt_at, last_success_at, last_error, last_error_at, failures, next_attempt_at, \
     delivered, previous_until, failing_since";
/// Where `failing_since` is among [`INFO_COLUMNS`].
const FAILING_SINCE: usize = 18;

fn info_of(conn: &Connection, name: &str) -> Result<EndpointInfo, WebhookError> {
    conn.query_row(
        &format!("SELECT {INFO_COLUMNS} FROM webhooks WHERE name = ?1"),
        params![name],
        info_row,
    )
    .optional()?
    .ok_or_else(|| WebhookError::NotFound(name.to_owned()))
}

fn info_row(r: &Row<'_>) -> rusqlite::Result<EndpointInfo> {
    info_at(r, 0)
}

/// An [`EndpointInfo`] from [`INFO_COLUMNS`] starting at column `at`.
fn info_at(r: &Row<'_>, at: usize) -> rusqlite::Result<EndpointInfo> {
    let text = |i: usize| r.get::<_, Option<String>>(at + i);
    let filters: String = r.get(at + 2)?;
    let cursor: String = r.get(at + 8)?;
    Ok(EndpointInfo {
        name: r.get(at)?,
        url: r.get(at + 1)?,
        // Terms a newer version wrote that this one cannot read show as
        // none here; the worker refuses to deliver them (`Endpoint::filter`).
        filters: serde_json::from_str(&filters).unwrap_or_else(|_| FilterTerms {
            source: vec![format!("<unreadable: {filters}>")],
            ..Default::default()
        }),
        concurrency: usize::try_from(r.get::<_, i64>(at + 3)?).unwrap_or(1),
        timeout_secs: r.get::<_, i64>(at + 4)? as f64 / 1000.0,
        state: State::parse(&r.get::<_, String>(at + 5)?),
        state_reason: text(6)?,
        state_since: parse_time(text(7)?),
        cursor: Uuid::parse_str(&cursor).unwrap_or_else(|_| Uuid::nil()),
        created_at: parse_time(text(9)?).unwrap_or_default(),
        last_attempt_at: parse_time(text(10)?),
        last_success_at: parse_time(text(11)?),
        last_error: text(12)?,
        last_error_at: parse_time(text(13)?),
        failures_in_a_row: u32::try_from(r.get::<_, i64>(at + 14)?).unwrap_or(u32::MAX),
        next_attempt_at: parse_time(text(15)?),
        delivered: u64::try_from(r.get::<_, i64>(at + 16)?).unwrap_or(0),
        previous_secret_until: parse_time(text(17)?).filter(|t| *t > Utc::now()),
    })
}

/// A `BEGIN IMMEDIATE` transaction: see the module doc.
fn write_tx(conn: &Connection) -> Result<Transaction<'_>, rusqlite::Error> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn bump_generation(conn: &Connection) -> Result<(), WebhookError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, '1') \
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        params![GENERATION_KEY],
    )?;
    Ok(())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(t: Option<String>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE && msg.contains("webhooks.name"))
}

#[cfg(test)]
mod tests;
