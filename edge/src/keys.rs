//! API keys: minting (`lstr_` + 44 base62 with a checksum tail), hashing,
//! the database operations behind `livestrom apikey`, and the edge's cache.
//!
//! # Key format
//! `lstr_` + 38 random base62 characters + a 6-character base62 CRC32 of
//! those 38 characters. The checksum lets the edge reject a mistyped or
//! truncated key without touching the cache or the database; it is not a
//! secret. The 38 random characters carry ~226 bits of entropy.
//!
//! # Storage
//! Only `sha256(whole key)` is stored (`api_keys.key_hash`). Every change made
//! by [`create`], [`update`] or [`revoke`] also bumps the `api_keys_generation`
//! row of the `meta` table in the same transaction, which is what the edge's
//! refresher watches.
//!
//! # The edge's cache ([`KeyStore`])
//! Keys live in memory (active and revoked ones, so a revoked key gets 403
//! rather than 401). A background task polls every [`REFRESH_EVERY`]: it
//! reads `PRAGMA data_version` (free; changes when any other connection
//! committed), and only then the generation row, and only when that changed
//! reloads the table; what it saw is recorded only after the reload
//! succeeded, so a failed read is retried on the next tick (a revocation
//! never waits for the full reload). A full reload also happens every [`FULL_RELOAD_EVERY`]
//! to pick up hand edits that did not bump the generation. A well-formed key
//! the cache does not know wakes the refresher and waits for its poll before
//! it is refused ([`KeyStore::check_fresh`]), so a key works on its first
//! request right after `apikey create`.
//!
//! What a change does to open streams:
//! - revoked (or deleted) key: removed from the active set and its
//!   [`KeyInfo::revoked`] token is cancelled, so open streams close;
//! - `stream:read` scope removed: same as revoked for open streams (token
//!   cancelled), the key stays usable for its other scopes;
//! - other changes (limits, adding scopes): a new `Arc<KeyInfo>` replaces the
//!   old one for new requests and **shares the old token**: open streams keep
//!   running under the limits they were opened with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use livestrom_engine::Store;
use rand::distr::Alphanumeric;
use rand::Rng;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::auth::{KeyInfo, Scope};

/// Prefix of every key.
pub const KEY_PREFIX: &str = "lstr_";
/// Characters after the prefix.
pub const KEY_BODY_LEN: usize = 44;
/// Random characters at the start of the body.
const RANDOM_LEN: usize = 38;
/// Checksum characters at the end of the body.
const CHECKSUM_LEN: usize = KEY_BODY_LEN - RANDOM_LEN;
/// Base62 digits, in value order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// How often the edge looks for key changes (revocations apply within this
/// plus one reload).
pub const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// How long a request with an unknown key waits for the database check
/// ([`KeyStore::check_fresh`]) before it is refused.
pub const FRESH_CHECK_WAIT: Duration = Duration::from_secs(2);
/// How often the edge reloads every key regardless of the generation row.
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(30);
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// How often pending `last_used_at` updates are flushed to the database.
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Default filter-term cap of a new key.
pub const DEFAULT_MAX_FILTERS: usize = 20;
/// Default concurrent-stream cap of a new key.
pub const DEFAULT_MAX_STREAMS: usize = 10;
/// Default request rate of a new key (per second; burst twice that).
pub const DEFAULT_RATE: f64 = 10.0;
/// Largest accepted `--max-filters`.
pub const MAX_MAX_FILTERS: usize = 1000;
/// Largest accepted `--max-streams`.
pub const MAX_MAX_STREAMS: usize = 10_000;
/// Largest accepted `--rate` (per second).
pub const MAX_RATE: f64 = 100_000.0;
/// Smallest accepted `--rate` (per second): one request per 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// The `meta` row bumped on every key change.
const GENERATION_KEY: &str = "api_keys_generation";

/// Key errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Database problem.
    #[error("database: {0}")]
    Db(String),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid key name `{name}`: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another key already has this name.
    #[error(
        "a key named `{0}` already exists (names are unique; pick another or `apikey update {0}`)"
    )]
    NameTaken(String),
    /// No key has this name.
    #[error("no key named `{0}` (see `livestrom apikey list`)")]
    NotFound(String),
    /// The key is already revoked.
    #[error("the key `{0}` is already revoked")]
    AlreadyRevoked(String),
    /// A revoked key cannot be changed.
    #[error("the key `{0}` is revoked and cannot be updated; create a new key")]
    Revoked(String),
    /// A scope that does not exist.
    #[error("unknown scope `{0}` (valid scopes: stream:read, admin)")]
    InvalidScope(String),
    /// An empty scope list.
    #[error("a key needs at least one scope (valid scopes: stream:read, admin)")]
    NoScopes,
    /// A rate that is not a positive number of requests per second.
    #[error("invalid rate `{0}`: expected requests per second such as `10/s` or `10` (or per minute: `30/m`), between 0.001/s and 100000/s")]
    InvalidRate(String),
    /// A limit outside its range.
    #[error("invalid {field} {value}: must be between {min} and {max}")]
    InvalidLimit {
        /// Which limit.
        field: &'static str,
        /// The value given.
        value: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
}

impl From<rusqlite::Error> for KeyError {
    fn from(e: rusqlite::Error) -> Self {
        KeyError::Db(e.to_string())
    }
}

/// Why a presented string is not a well-formed key (decided without a lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// It does not start with `lstr_`.
    #[error("an API key starts with `lstr_`")]
    Prefix,
    /// Wrong number of characters after the prefix.
    #[error("an API key is `lstr_` followed by 44 characters")]
    Length,
    /// A character outside `[0-9A-Za-z]` after the prefix.
    #[error("an API key has only letters and digits after `lstr_`")]
    Alphabet,
    /// The checksum tail does not match: most likely a typo.
    #[error("the key's checksum does not match (is it mistyped or truncated?)")]
    Checksum,
}

/// Mints a fresh random key (plaintext).
pub fn generate() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_BODY_LEN);
    key.push_str(KEY_PREFIX);
    key.push_str(&random);
    key.push_str(&checksum(&random));
    key
}

/// Checks prefix, length, alphabet and checksum of a presented key.
pub fn check_format(presented: &str) -> Result<(), FormatError> {
    let body = presented
        .strip_prefix(KEY_PREFIX)
        .ok_or(FormatError::Prefix)?;
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Alphabet);
    }
    if body.len() != KEY_BODY_LEN {
        return Err(FormatError::Length);
    }
    let (random, tail) = body.split_at(RANDOM_LEN);
    // Not secret: the checksum is derived from the visible part of the key.
    if checksum(random) != tail {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// The stored form of a key: sha256 of the whole string.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Base62 CRC32 of `random`, fixed width (62^6 > 2^32).
fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Checks a key name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    let invalid = |reason: &str| KeyError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "`{}` is not allowed; use letters, digits, `.`, `_` and `-`",
            c.escape_debug()
        )));
    }
    Ok(())
}

/// Parses `stream:read,admin` (comma-separated, duplicates folded).
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, KeyError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| KeyError::InvalidScope(part.to_owned()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err(KeyError::NoScopes);
    }
    Ok(out)
}

/// Parses a rate: `10`, `10/s`, `2.5/s` or `30/m`; returns requests per second.
pub fn parse_rate(s: &str) -> Result<f64, KeyError> {
    let invalid = || KeyError::InvalidRate(s.to_owned());
    let t = s.trim();
    let (num, per) = match t.split_once('/') {
        None => (t, 1.0),
        Some((n, unit)) => match unit.trim() {
            "s" | "sec" | "second" => (n, 1.0),
            "m" | "min" | "minute" => (n, 60.0),
            _ => return Err(invalid()),
        },
    };
    let n: f64 = num.trim().parse().map_err(|_| invalid())?;
    let rate = n / per;
    validate_rate(rate).map_err(|_| invalid())?;
    Ok(rate)
}

fn validate_rate(rate: f64) -> Result<(), KeyError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(KeyError::InvalidRate(rate.to_string()))
    }
}

fn validate_limit(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), KeyError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(KeyError::InvalidLimit {
            field,
            value,
            min,
            max,
        })
    }
}

fn validate_scopes(scopes: &[Scope]) -> Result<(), KeyError> {
    if scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    Ok(())
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

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bump_generation(conn: &rusqlite::Connection) -> Result<(), KeyError> {
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

/// The edge's view of the keys: verified in memory, refreshed from the
/// database so CLI changes (revoke, update) apply within a second.
#[derive(Clone)]
pub struct KeyStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.snapshot();
        f.debug_struct("KeyStore")
            .field("active", &cache.active_count)
            .field("revoked", &cache.revoked_count)
            .finish()
    }
}

/// The result of checking a presented key.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A known, unrevoked key.
    Valid(Arc<KeyInfo>),
    /// Not a well-formed key (no lookup was made).
    Malformed(FormatError),
    /// Well-formed but not a key of this server.
    Unknown,
    /// A revoked key.
    Revoked {
        /// Its name.
        name: String,
    },
}

impl KeyStore {
    /// Loads the keys and starts the refresher (stops on `cancel`).
    pub async fn open(store: &Store, cancel: CancellationToken) -> Result<Self, KeyError> {
        let path = store.path().to_owned();
        let (refresher, rows) = tokio::task::spawn_blocking(move || -> Result<_, KeyError> {
            let conn = livestrom_engine::store::open_connection(&path)
                .map_err(|e| KeyError::Db(e.to_string()))?;
            let mut r = Refresher {
                conn,
                data_version: -1,
                generation: None,
                last_full: Instant::now(),
                #[cfg(test)]
                fail_loads: Arc::default(),
            };
            let rows = r.poll(true)?.unwrap_or_default();
            Ok((r, rows))
        })
        .await
        .map_err(|e| KeyError::Db(format!("key loader task failed: {e}")))??;
        let shared = Arc::new(Shared {
            cache: RwLock::new(Arc::new(Cache::default())),
            usage: Mutex::new(Usage::default()),
            requested: AtomicU64::new(0),
            covered: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
            #[cfg(test)]
            fail_loads: refresher.fail_loads.clone(),
        });
        shared.apply(rows);
        let this = Self { shared };
        tokio::spawn(this.clone().refresh_loop(refresher, cancel.clone()));
        tokio::spawn(this.clone().usage_loop(store.clone(), cancel));
        Ok(this)
    }

    /// Verifies a presented key string (constant-time on the hash).
    pub fn verify(&self, presented: &str) -> Option<Arc<KeyInfo>> {
        match self.check(presented) {
            Verdict::Valid(info) => Some(info),
            _ => None,
        }
    }

    /// Verifies a presented key and says why it is refused. Order: format and
    /// checksum (no lookup), then the hash in the cache.
    pub fn check(&self, presented: &str) -> Verdict {
        if let Err(e) = check_format(presented) {
            return Verdict::Malformed(e);
        }
        let hash = hash_key(presented);
        let cache = self.snapshot();
        let Some(bucket) = cache.index.get(&bucket_of(&hash)) else {
            return Verdict::Unknown;
        };
        // The map narrows by a hash prefix; the full hash is compared in constant time.
        let Some(entry) = bucket.iter().find(|e| bool::from(e.hash.ct_eq(&hash))) else {
            return Verdict::Unknown;
        };
        match &entry.state {
            EntryState::Active(info) => {
                self.shared.note_use(info.id);
                Verdict::Valid(info.clone())
            }
            EntryState::Revoked { name } => Verdict::Revoked { name: name.clone() },
        }
    }

    /// [`check`](Self::check), but a well-formed key the cache does not know
    /// is looked for in the database before it is refused: a key created a
    /// moment ago (`KEY=$(livestrom apikey create …) && curl …`) works at
    /// once instead of after the next refresh tick. Concurrent lookups share
    /// one refresh (a cheap `PRAGMA data_version` unless keys changed); the
    /// wait is bounded by [`FRESH_CHECK_WAIT`].
    pub async fn check_fresh(&self, presented: &str) -> Verdict {
        let verdict = self.check(presented);
        if !matches!(verdict, Verdict::Unknown) {
            return verdict;
        }
        let ticket = self.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.shared.covered.subscribe();
        self.shared.wake.notify_one();
        let waited =
            tokio::time::timeout(FRESH_CHECK_WAIT, covered.wait_for(|c| *c >= ticket)).await;
        if !matches!(waited, Ok(Ok(_))) {
            return Verdict::Unknown;
        }
        self.check(presented)
    }

    /// Number of usable (unrevoked) keys in the cache.
    pub fn active_count(&self) -> usize {
        self.snapshot().active_count
    }

    fn snapshot(&self) -> Arc<Cache> {
        match self.shared.cache.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn refresh_loop(self, mut refresher: Refresher, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
                () = self.shared.wake.notified() => {}
            }
            // Every request taken before this poll starts is answered by it.
            let covers = self.shared.requested.load(Ordering::SeqCst);
            let full = refresher.last_full.elapsed() >= FULL_RELOAD_EVERY;
            let res = tokio::task::spawn_blocking(move || {
                let out = refresher.poll(full);
                (refresher, out)
            })
            .await;
            let out;
            (refresher, out) = match res {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "api key refresher task failed; keys are no longer refreshed");
                    return;
                }
            };
            match out {
                Ok(Some(rows)) => self.shared.apply(rows),
                Ok(None) => {}
                // Keep serving the last known keys (fail static); retried next tick.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh api keys; keeping the cached ones")
                }
            }
            self.shared.covered.send_if_modified(|c| {
                let newer = covers > *c;
                *c = (*c).max(covers);
                newer
            });
        }
    }

    /// Writes `last_used_at` for keys used since the last flush (at most once
    /// per [`LAST_USED_EVERY`] per key), off the request path.
    async fn usage_loop(self, store: Store, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<rusqlite::Connection> = None;
        loop {
            let stopping = tokio::select! {
                () = cancel.cancelled() => true,
                _ = tick.tick() => false,
            };
            let pending = self.shared.take_pending();
            if !pending.is_empty() {
                let path = store.path().to_owned();
                let c = conn.take();
                let res = tokio::task::spawn_blocking(move || {
                    let c = match c {
                        Some(c) => c,
                        None => match livestrom_engine::store::open_connection(&path) {
                            Ok(c) => c,
                            Err(e) => return (None, pending, Err(e.to_string())),
                        },
                    };
                    let out = write_last_used(&c, &pending).map_err(|e| e.to_string());
                    (Some(c), pending, out)
                })
                .await;
                match res {
                    Ok((c, _, Ok(()))) => conn = c,
                    Ok((c, pending, Err(e))) => {
                        conn = c;
                        self.shared.restore_pending(pending);
                        tracing::debug!(error = %e, "cannot record api key last use; will retry");
                    }
                    Err(e) => tracing::warn!(error = %e, "api key usage task failed"),
                }
            }
            if stopping {
                return;
            }
        }
    }
}

fn write_last_used(
    conn: &rusqlite::Connection,
    pending: &HashMap<i64, String>,
) -> Result<(), rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2")?;
        for (id, at) in pending {
            stmt.execute(params![at, id])?;
        }
    }
    tx.commit()
}

/// What the cache and the refresher share.
struct Shared {
    /// The current snapshot; swapped whole on reload so readers never wait on
    /// a reload.
    cache: RwLock<Arc<Cache>>,
    /// `last_used_at` bookkeeping (bounded by the number of keys).
    usage: Mutex<Usage>,
    /// Refresh requests taken so far (see [`KeyStore::check_fresh`]).
    requested: AtomicU64,
    /// The newest request number a completed refresh covered.
    covered: tokio::sync::watch::Sender<u64>,
    /// Wakes the refresher before its next tick.
    wake: tokio::sync::Notify,
    /// Unit tests: the refresher's [`Refresher::fail_loads`].
    #[cfg(test)]
    fail_loads: Arc<std::sync::atomic::AtomicU32>,
}

#[derive(Default)]
struct Usage {
    /// When each key's use was last recorded.
    recorded: HashMap<i64, Instant>,
    /// Uses to write: key id → RFC 3339 time.
    pending: HashMap<i64, String>,
}

/// A snapshot of the keys, indexed by the first 8 bytes of the hash.
#[derive(Default)]
struct Cache {
    index: HashMap<u64, Vec<Entry>>,
    /// Active keys by id, to keep `Arc`s and tokens across reloads.
    by_id: HashMap<i64, Arc<KeyInfo>>,
    active_count: usize,
    revoked_count: usize,
}

struct Entry {
    hash: [u8; 32],
    state: EntryState,
}

enum EntryState {
    Active(Arc<KeyInfo>),
    Revoked { name: String },
}

fn bucket_of(hash: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(b)
}

/// A row of `api_keys` as the cache needs it.
#[derive(Debug, Clone)]
struct KeyRow {
    id: i64,
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    max_filters: usize,
    max_streams: usize,
    rate: f64,
    revoked: bool,
}

impl KeyRow {
    fn same_limits(&self, info: &KeyInfo) -> bool {
        self.name == info.name
            && self.scopes == info.scopes
            && self.max_filters == info.max_filters
            && self.max_streams == info.max_streams
            && self.rate == info.rate
    }
}

impl Shared {
    /// Replaces the snapshot with `rows`, cancelling tokens of keys that were
    /// revoked, deleted or lost `stream:read`.
    fn apply(&self, rows: Vec<KeyRow>) {
        let old = match self.cache.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut next = Cache::default();
        for row in rows {
            let state = if row.revoked {
                next.revoked_count += 1;
                EntryState::Revoked {
                    name: row.name.clone(),
                }
            } else {
                let info = match old.by_id.get(&row.id) {
                    Some(prev) if row.same_limits(prev) => prev.clone(),
                    Some(prev) => {
                        let lost_read =
                            prev.has(Scope::StreamRead) && !row.scopes.contains(&Scope::StreamRead);
                        let token = if lost_read {
                            prev.revoked.cancel();
                            CancellationToken::new()
                        } else {
                            prev.revoked.clone()
                        };
                        tracing::info!(key = %row.name, "api key changed; new limits apply to new requests");
                        Arc::new(info_from(&row, token))
                    }
                    None => Arc::new(info_from(&row, CancellationToken::new())),
                };
                next.active_count += 1;
                next.by_id.insert(row.id, info.clone());
                EntryState::Active(info)
            };
            next.index
                .entry(bucket_of(&row.hash))
                .or_default()
                .push(Entry {
                    hash: row.hash,
                    state,
                });
        }
        for (id, prev) in &old.by_id {
            if !next.by_id.contains_key(id) {
                tracing::info!(key = %prev.name, "api key revoked; closing its streams");
                prev.revoked.cancel();
            }
        }
        match self.cache.write() {
            Ok(mut g) => *g = Arc::new(next),
            Err(p) => *p.into_inner() = Arc::new(next),
        }
    }

    fn note_use(&self, id: i64) {
        let Ok(mut usage) = self.usage.lock() else {
            return;
        };
        let now = Instant::now();
        let due = usage
            .recorded
            .get(&id)
            .is_none_or(|at| now.duration_since(*at) >= LAST_USED_EVERY);
        if due {
            usage.recorded.insert(id, now);
            usage.pending.insert(id, now_rfc3339());
        }
    }

    /// Puts back uses that could not be written; newer uses win.
    fn restore_pending(&self, pending: HashMap<i64, String>) {
        if let Ok(mut u) = self.usage.lock() {
            for (id, at) in pending {
                u.pending.entry(id).or_insert(at);
            }
        }
    }

    fn take_pending(&self) -> HashMap<i64, String> {
        match self.usage.lock() {
            Ok(mut u) => std::mem::take(&mut u.pending),
            Err(_) => HashMap::new(),
        }
    }
}

fn info_from(row: &KeyRow, revoked: CancellationToken) -> KeyInfo {
    KeyInfo {
        id: row.id,
        name: row.name.clone(),
        scopes: row.scopes.clone(),
        max_filters: row.max_filters,
        max_streams: row.max_streams,
        rate: row.rate,
        revoked,
    }
}

/// The refresher's own connection and what it last saw.
struct Refresher {
    /// Dedicated: `PRAGMA data_version` is per connection.
    conn: rusqlite::Connection,
    data_version: i64,
    generation: Option<String>,
    last_full: Instant,
    /// Unit tests: this many key-table loads fail, as a transient database
    /// error would.
    #[cfg(test)]
    fail_loads: Arc<std::sync::atomic::AtomicU32>,
}

impl Refresher {
    /// Returns the rows when something changed (or `full`), else `None`.
    ///
    /// What was seen (data version, generation, the full-reload time) is
    /// recorded only once the rows are loaded: after a failed read the next
    /// tick still sees the change and tries again, instead of the change
    /// waiting for the next full reload.
    fn poll(&mut self, full: bool) -> Result<Option<Vec<KeyRow>>, KeyError> {
        let dv: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if dv == self.data_version && !full {
            return Ok(None);
        }
        let generation: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![GENERATION_KEY],
                |r| r.get(0),
            )
            .optional()?;
        if generation == self.generation && !full {
            // Another table changed; the keys did not.
            self.data_version = dv;
            return Ok(None);
        }
        #[cfg(test)]
        if self
            .fail_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(KeyError::Db("injected transient failure".into()));
        }
        let rows = load_rows(&self.conn)?;
        self.data_version = dv;
        self.generation = generation;
        if full {
            self.last_full = Instant::now();
        }
        Ok(Some(rows))
    }
}

fn load_rows(conn: &rusqlite::Connection) -> Result<Vec<KeyRow>, KeyError> {
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

/// What `apikey create` asks for.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Unique name.
    pub name: String,
    /// Scopes (`stream:read`, `admin`).
    pub scopes: Vec<crate::auth::Scope>,
    /// Filter-term cap (default 20).
    pub max_filters: usize,
    /// Concurrent-stream cap (default 10).
    pub max_streams: usize,
    /// Requests per second, burst twice that (default 10).
    pub rate: f64,
}

impl NewKey {
    /// A key with `stream:read` and the default limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scopes: vec![Scope::StreamRead],
            max_filters: DEFAULT_MAX_FILTERS,
            max_streams: DEFAULT_MAX_STREAMS,
            rate: DEFAULT_RATE,
        }
    }
}

/// What `apikey update` changes (None = keep).
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// New scopes.
    pub scopes: Option<Vec<crate::auth::Scope>>,
    /// New filter cap.
    pub max_filters: Option<usize>,
    /// New stream cap.
    pub max_streams: Option<usize>,
    /// New rate.
    pub rate: Option<f64>,
}

/// A key as `apikey list` shows it (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<crate::auth::Scope>,
    /// Filter cap.
    pub max_filters: usize,
    /// Stream cap.
    pub max_streams: usize,
    /// Rate.
    pub rate: f64,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last used (RFC 3339), if ever.
    pub last_used_at: Option<String>,
    /// Revoked (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
}

/// Mints a key, stores only its hash, returns the plaintext (shown once).
/// `conn` comes from `livestrom_engine::store::open_and_migrate`.
pub fn create(conn: &rusqlite::Connection, new: &NewKey) -> Result<String, KeyError> {
    validate_name(&new.name)?;
    validate_scopes(&new.scopes)?;
    validate_limit("max-filters", new.max_filters, 0, MAX_MAX_FILTERS)?;
    validate_limit("max-streams", new.max_streams, 1, MAX_MAX_STREAMS)?;
    validate_rate(new.rate)?;
    let key = generate();
    let hash = hash_key(&key);
    let tx = conn.unchecked_transaction()?;
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
            now_rfc3339()
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
pub fn list(conn: &rusqlite::Connection) -> Result<Vec<KeyRecord>, KeyError> {
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
pub fn update(conn: &rusqlite::Connection, name: &str, change: &KeyUpdate) -> Result<(), KeyError> {
    if let Some(s) = &change.scopes {
        validate_scopes(s)?;
    }
    if let Some(v) = change.max_filters {
        validate_limit("max-filters", v, 0, MAX_MAX_FILTERS)?;
    }
    if let Some(v) = change.max_streams {
        validate_limit("max-streams", v, 1, MAX_MAX_STREAMS)?;
    }
    if let Some(r) = change.rate {
        validate_rate(r)?;
    }
    let tx = conn.unchecked_transaction()?;
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
pub fn revoke(conn: &rusqlite::Connection, name: &str) -> Result<(), KeyError> {
    let tx = conn.unchecked_transaction()?;
    let n = tx.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, now_rfc3339()],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn =
            livestrom_engine::store::open_and_migrate(&dir.path().join("k.db")).expect("open");
        (dir, conn)
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_pass_the_checksum() {
        for _ in 0..200 {
            let k = generate();
            assert_eq!(k.len(), KEY_PREFIX.len() + KEY_BODY_LEN, "{k}");
            assert!(k.starts_with("lstr_"));
            assert!(k[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(check_format(&k), Ok(()));
        }
        assert_ne!(generate(), generate());
    }

    #[test]
    fn every_single_character_typo_is_caught_by_the_checksum() {
        let k = generate();
        let bytes = k.as_bytes();
        for i in KEY_PREFIX.len()..k.len() {
            for &c in BASE62.iter().filter(|&&c| c != bytes[i]) {
                let mut typo = bytes.to_vec();
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(
                    check_format(&typo),
                    Err(FormatError::Checksum),
                    "typo at {i} accepted: {typo}"
                );
            }
        }
        // Two adjacent characters swapped.
        let mut swapped = bytes.to_vec();
        let i = (KEY_PREFIX.len()..k.len() - 1)
            .find(|&i| bytes[i] != bytes[i + 1])
            .expect("distinct neighbours");
        swapped.swap(i, i + 1);
        let swapped = String::from_utf8(swapped).expect("ascii");
        assert_eq!(check_format(&swapped), Err(FormatError::Checksum));
    }

    #[test]
    fn malformed_keys_are_named_precisely() {
        let k = generate();
        assert_eq!(check_format(""), Err(FormatError::Prefix));
        assert_eq!(check_format(&k[1..]), Err(FormatError::Prefix));
        assert_eq!(
            check_format(&k.replace("lstr_", "LSTR_")),
            Err(FormatError::Prefix)
        );
        assert_eq!(check_format(&k[..k.len() - 1]), Err(FormatError::Length));
        assert_eq!(check_format(&format!("{k}0")), Err(FormatError::Length));
        assert_eq!(
            check_format(&format!("{} ", &k[..k.len() - 1])),
            Err(FormatError::Alphabet)
        );
        assert_eq!(
            check_format(&format!("{}é", &k[..k.len() - 2])),
            Err(FormatError::Alphabet)
        );
        assert_eq!(check_format("lstr_"), Err(FormatError::Length));
    }

    #[test]
    fn checksum_is_fixed_width_base62() {
        assert_eq!(checksum(""), "000000"); // crc32("") == 0
        for s in ["a", "hello", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"] {
            let c = checksum(s);
            assert_eq!(c.len(), CHECKSUM_LEN);
            let value = c.bytes().fold(0u64, |acc, b| {
                acc * 62 + BASE62.iter().position(|&d| d == b).expect("base62 digit") as u64
            });
            assert_eq!(value, u64::from(crc32fast::hash(s.as_bytes())));
        }
    }

    #[test]
    fn names_scopes_and_rates_are_validated() {
        assert!(validate_name("my-app.v2_prod").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(matches!(
            validate_name(""),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name(&"a".repeat(65)),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("my app"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("å"),
            Err(KeyError::InvalidName { .. })
        ));

        assert_eq!(
            parse_scopes("stream:read").expect("ok"),
            vec![Scope::StreamRead]
        );
        assert_eq!(
            parse_scopes(" admin , stream:read,admin ").expect("ok"),
            vec![Scope::Admin, Scope::StreamRead]
        );
        assert!(
            matches!(parse_scopes("stream:write"), Err(KeyError::InvalidScope(s)) if s == "stream:write")
        );
        assert!(matches!(parse_scopes(" , "), Err(KeyError::NoScopes)));

        assert_eq!(parse_rate("10/s").expect("ok"), 10.0);
        assert_eq!(parse_rate("10").expect("ok"), 10.0);
        assert_eq!(parse_rate("2.5/s").expect("ok"), 2.5);
        assert_eq!(parse_rate("30/m").expect("ok"), 0.5);
        for bad in [
            "", "0", "-1/s", "ten", "10/h", "NaN", "inf", "1e9", "10/", "0.0001",
        ] {
            assert!(
                matches!(parse_rate(bad), Err(KeyError::InvalidRate(_))),
                "{bad} accepted"
            );
        }
    }

    /// Wakes the refresher and waits (generously) until a refresh that
    /// started after this call has finished: what `check_fresh` does, without
    /// its short deadline, as a clock-free way to step the refresher.
    async fn refresh_once(keys: &KeyStore) {
        let ticket = keys.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = keys.shared.covered.subscribe();
        keys.shared.wake.notify_one();
        let done =
            tokio::time::timeout(Duration::from_secs(30), covered.wait_for(|c| *c >= ticket)).await;
        assert!(matches!(done, Ok(Ok(_))), "the refresher never ran");
    }

    /// A reload that fails (a transient database error) is retried on the
    /// next tick: a key revoked just before it is refused one refresh later,
    /// not after the next full reload.
    #[tokio::test]
    async fn a_revocation_seen_by_a_failed_reload_applies_on_the_next_refresh() {
        let (dir, conn) = db();
        let path = dir.path().join("k.db");
        let store = Store::open(
            &path,
            Duration::from_secs(3600),
            livestrom_engine::Bus::new(),
        )
        .expect("store");
        let key = create(&conn, &NewKey::new("app")).expect("create");
        let cancel = CancellationToken::new();
        let keys = KeyStore::open(&store, cancel.clone()).await.expect("open");
        assert!(matches!(keys.check(&key), Verdict::Valid(_)));

        keys.shared.fail_loads.store(1, Ordering::SeqCst);
        revoke(&conn, "app").expect("revoke");
        for _ in 0..100 {
            if keys.shared.fail_loads.load(Ordering::SeqCst) == 0 {
                break;
            }
            refresh_once(&keys).await;
        }
        assert_eq!(
            keys.shared.fail_loads.load(Ordering::SeqCst),
            0,
            "the refresher never reloaded after the revocation"
        );
        refresh_once(&keys).await;
        assert!(
            matches!(keys.check(&key), Verdict::Revoked { .. }),
            "a revoked key still works one refresh after a failed reload"
        );
        cancel.cancel();
    }

    #[test]
    fn create_list_update_revoke_round_trip() {
        let (_dir, conn) = db();
        let key = create(&conn, &NewKey::new("app")).expect("create");
        assert_eq!(check_format(&key), Ok(()));
        let stored: Vec<u8> = conn
            .query_row("SELECT key_hash FROM api_keys", [], |r| r.get(0))
            .expect("row");
        assert_eq!(stored, hash_key(&key).to_vec());
        let dump: String = conn
            .query_row(
                "SELECT name || scopes || created_at FROM api_keys",
                [],
                |r| r.get(0),
            )
            .expect("row");
        assert!(!dump.contains(&key[5..]));

        assert!(
            matches!(create(&conn, &NewKey::new("app")), Err(KeyError::NameTaken(n)) if n == "app")
        );
        assert!(matches!(
            create(&conn, &NewKey::new("bad name")),
            Err(KeyError::InvalidName { .. })
        ));
        let mut zero = NewKey::new("z");
        zero.max_streams = 0;
        assert!(matches!(
            create(&conn, &zero),
            Err(KeyError::InvalidLimit {
                field: "max-streams",
                ..
            })
        ));
        let mut none = NewKey::new("n");
        none.scopes.clear();
        assert!(matches!(create(&conn, &none), Err(KeyError::NoScopes)));

        update(
            &conn,
            "app",
            &KeyUpdate {
                max_streams: Some(3),
                rate: Some(2.0),
                scopes: Some(vec![Scope::StreamRead, Scope::Admin]),
                ..Default::default()
            },
        )
        .expect("update");
        let listed = list(&conn).expect("list");
        assert_eq!(listed.len(), 1);
        let r = &listed[0];
        assert_eq!(
            (r.name.as_str(), r.max_filters, r.max_streams, r.rate),
            ("app", 20, 3, 2.0)
        );
        assert_eq!(r.scopes, vec![Scope::StreamRead, Scope::Admin]);
        assert!(r.revoked_at.is_none() && r.last_used_at.is_none());
        assert!(chrono::DateTime::parse_from_rfc3339(&r.created_at).is_ok());

        assert!(matches!(
            update(&conn, "nope", &KeyUpdate::default()),
            Err(KeyError::NotFound(_))
        ));
        revoke(&conn, "app").expect("revoke");
        assert!(matches!(
            revoke(&conn, "app"),
            Err(KeyError::AlreadyRevoked(_))
        ));
        assert!(matches!(revoke(&conn, "nope"), Err(KeyError::NotFound(_))));
        assert!(matches!(
            update(&conn, "app", &KeyUpdate::default()),
            Err(KeyError::Revoked(_))
        ));
        assert!(list(&conn).expect("list")[0].revoked_at.is_some());
        let generation: String = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![GENERATION_KEY],
                |r| r.get(0),
            )
            .expect("generation");
        assert_eq!(generation, "3");
    }
}
