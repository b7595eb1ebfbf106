//! The key cache the edge verifies requests against: every key in memory
//! (active and revoked ones, so a revoked key gets 403 rather than 401),
//! refreshed from a [`KeyBackend`], and the `last_used_at` bookkeeping.
//!
//! A background task asks the backend for changes every [`REFRESH_EVERY`]
//! (cheap when nothing changed; see the backend). A well-formed key the cache
//! does not know wakes the refresher and waits for its poll before it is
//! refused ([`KeyCache::check_fresh`]), so a key works on its first request
//! right after `apikey create`. What a reload does to open streams is in the
//! `keys` module doc.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::backend::{KeyBackend, KeyRow};
use super::format::{check_format, hash_key, FormatError};
use super::model::{KeyError, KeyInfo, Scope};

/// How often the cache asks its backend for key changes (revocations apply
/// within this plus one reload).
pub const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// How long a request with an unknown key waits for the backend check
/// ([`KeyCache::check_fresh`]) before it is refused.
pub const FRESH_CHECK_WAIT: Duration = Duration::from_secs(2);
/// `last_used_at` is written at most this often per key.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// How often pending `last_used_at` updates are handed to the backend.
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The edge's view of the keys: verified in memory, refreshed from the
/// backend so CLI changes (revoke, update) apply within a second.
#[derive(Clone)]
pub struct KeyCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.snapshot();
        f.debug_struct("KeyCache")
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

impl KeyCache {
    /// Loads the keys from `backend` and starts the refresher and the usage
    /// flusher (both stop on `cancel`; the flusher writes what is pending
    /// first).
    pub async fn open(
        backend: Arc<dyn KeyBackend>,
        cancel: CancellationToken,
    ) -> Result<Self, KeyError> {
        let first = backend.clone();
        let rows = tokio::task::spawn_blocking(move || first.load())
            .await
            .map_err(KeyError::Task)??
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            cache: RwLock::new(Arc::new(Cache::default())),
            usage: Mutex::new(Usage::default()),
            requested: AtomicU64::new(0),
            covered: tokio::sync::watch::Sender::new(0),
            wake: tokio::sync::Notify::new(),
        });
        shared.apply(rows);
        let this = Self { shared };
        tokio::spawn(this.clone().refresh_loop(backend.clone(), cancel.clone()));
        tokio::spawn(this.clone().usage_loop(backend, cancel));
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
    /// is looked for in the backend before it is refused: a key created a
    /// moment ago (`KEY=$(livestrom apikey create …) && curl …`) works at
    /// once instead of after the next refresh tick. Concurrent lookups share
    /// one refresh (a cheap change check unless keys changed); the wait is
    /// bounded by [`FRESH_CHECK_WAIT`].
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

    async fn refresh_loop(self, backend: Arc<dyn KeyBackend>, cancel: CancellationToken) {
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
            // A request with an unknown key waits on this poll: look in the
            // store, not only at the change signal.
            let fresh = covers > *self.shared.covered.borrow();
            let b = backend.clone();
            let load = move || if fresh { b.load_fresh() } else { b.load() };
            let out = match tokio::task::spawn_blocking(load).await {
                Ok(out) => out,
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

    /// Hands `last_used_at` of keys used since the last flush (at most once
    /// per [`LAST_USED_EVERY`] per key) to the backend, off the request path.
    async fn usage_loop(self, backend: Arc<dyn KeyBackend>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                () = cancel.cancelled() => true,
                _ = tick.tick() => false,
            };
            let pending = self.shared.take_pending();
            if !pending.is_empty() {
                let b = backend.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let out = b.record_usage(&pending);
                    (pending, out)
                })
                .await;
                match res {
                    Ok((_, Ok(()))) => {}
                    Ok((pending, Err(e))) => {
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

/// What the cache handles and its two background tasks share.
struct Shared {
    /// The current snapshot; swapped whole on reload so readers never wait on
    /// a reload.
    cache: RwLock<Arc<Cache>>,
    /// `last_used_at` bookkeeping (bounded by the number of keys).
    usage: Mutex<Usage>,
    /// Refresh requests taken so far (see [`KeyCache::check_fresh`]).
    requested: AtomicU64,
    /// The newest request number a completed refresh covered.
    covered: tokio::sync::watch::Sender<u64>,
    /// Wakes the refresher before its next tick.
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Usage {
    /// When each key's use was last recorded.
    recorded: HashMap<i64, Instant>,
    /// Uses to write: key id → time of use.
    pending: HashMap<i64, DateTime<Utc>>,
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

/// Whether `row` still describes `info` exactly (then its `Arc` is kept).
fn same_limits(row: &KeyRow, info: &KeyInfo) -> bool {
    row.name == info.name
        && row.scopes == info.scopes
        && row.max_filters == info.max_filters
        && row.max_streams == info.max_streams
        && row.rate == info.rate
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
                    Some(prev) if same_limits(&row, prev) => prev.clone(),
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
            usage.pending.insert(id, Utc::now());
        }
    }

    /// Puts back uses that could not be written; newer uses win.
    fn restore_pending(&self, pending: HashMap<i64, DateTime<Utc>>) {
        if let Ok(mut u) = self.usage.lock() {
            for (id, at) in pending {
                u.pending.entry(id).or_insert(at);
            }
        }
    }

    fn take_pending(&self) -> HashMap<i64, DateTime<Utc>> {
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

#[cfg(test)]
mod tests;
