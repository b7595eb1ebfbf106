//! Keys in the cluster: one entry per key in the JetStream key-value bucket
//! `<prefix>_KEYS` (value format in `stored`) — the operations behind
//! `livestrom apikey` when `[cluster]` is set ([`create`], [`list`],
//! [`update`], [`revoke`], reached through `KeyAdmin`) and [`NatsKeys`], the
//! [`KeyBackend`] every edge's key cache reads through.
//!
//! # Writes
//! A new key is a KV `create`, which fails if the name's entry exists, so two
//! nodes creating the same name at once get one key and one "already
//! exists". Every other write (update, revoke, last use) reads the entry and
//! writes it back with compare-and-set on the revision it read: a write that
//! lost against another one re-reads and tries again, so no change is lost
//! and a revoked key is never written back as active.
//!
//! # Noticing changes
//! [`NatsKeys`] keeps a watcher on the whole bucket (a JetStream ordered
//! consumer delivering only new entries). Each entry it sees that changes
//! what the cache enforces (hash, scopes, limits, revoked — not
//! `last_used_at`, which every edge writes) bumps a generation; `load` lists
//! the bucket only when the generation moved since its last list, so an
//! unchanged bucket costs two atomic loads per refresh, no request. A change reaches an
//! edge's cache within the watcher's delivery (milliseconds) plus one
//! refresh tick (250 ms). Gaps are covered: while the watcher is down (NATS
//! reconnecting, its consumer lost) every `load` lists the bucket, a
//! re-established watcher bumps the generation (what changed in between is
//! listed), and every [`FULL_RELOAD_EVERY`] the bucket is listed regardless.
//!
//! # A new key on its first request
//! The watcher's delivery races a client that got its key from `apikey
//! create` and uses it at once (`KEY=$(…) && curl …`): the edge may see the
//! request first. The cache's `check_fresh` therefore asks for
//! `load_fresh`, which, when the watcher has seen nothing new, asks the
//! server for the bucket's last revision (one request) and lists the bucket
//! if anything was written after the last list. So a key works on its first
//! request on any edge, and a flood of unknown keys costs one small request
//! per refresh, not a list.
//!
//! # Blocking
//! [`KeyBackend`]'s calls block (the cache runs them on blocking threads).
//! [`NatsKeys`] captures the runtime's [`Handle`] when it is opened and runs
//! each call's NATS requests with `Handle::block_on`, bounded by
//! [`CALL_TIMEOUT`]. Calling `load` or `record_usage` from async code (not a
//! blocking thread) would panic, as `block_on` does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tokio::runtime::Handle;

use super::backend::{KeyBackend, KeyRow};
use super::format::{generate, hash_key};
use super::model::{validate_name, KeyError, KeyRecord, KeyUpdate, NewKey};
use super::sqlite::FULL_RELOAD_EVERY;
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};

mod stored;

use stored::{kv_key, rfc3339, StoredKey};

/// Longest a backend call (a list of the bucket, a batch of last-use
/// writes) may take before it fails; the cache keeps its keys and retries.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Compare-and-set attempts of an admin change before it gives up with
/// [`KeyError::Contended`] (a conflict needs another write to the same key
/// between a read and a write a few milliseconds apart).
const CAS_ATTEMPTS: usize = 5;

/// Entries read at once when the bucket is listed.
const LIST_CONCURRENCY: usize = 16;

/// Re-establishing a lost watcher: 100 ms doubling to 5 s (meanwhile every
/// `load` lists the bucket, so keys keep being refreshed).
const REWATCH: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    factor: 2,
    jitter: Jitter::EQUAL,
};

/// The [`KeyBackend`] over the cluster's keys bucket. See the module doc
/// for how it notices changes and why its calls block.
pub struct NatsKeys {
    kv: kv::Store,
    /// The runtime the NATS client runs on; the blocking calls run their
    /// requests on it.
    rt: Handle,
    /// What the watcher task and `load` share.
    shared: Arc<Shared>,
    /// What `load` last listed. A mutex only because the trait takes
    /// `&self`: the refresher is its one caller.
    loaded: Mutex<Loaded>,
    /// Key id → its entry's KV key, from the last list: `record_usage` is
    /// given ids.
    entries: Mutex<HashMap<i64, String>>,
    /// The watcher task, stopped when the backend is dropped.
    watcher: tokio::task::AbortHandle,
}

impl std::fmt::Debug for NatsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKeys")
            .field("bucket", &self.kv.name)
            .finish_non_exhaustive()
    }
}

/// Between the watcher task and `load`.
struct Shared {
    /// Bumped by the watcher for every entry that changes what the cache
    /// enforces, and when the watcher was (re-)established.
    generation: AtomicU64,
    /// Whether the watcher is running; while it is not, `load` lists every time.
    watching: AtomicBool,
    /// The rows of the last list, by KV key: an entry equal to its row here
    /// changes nothing the cache enforces (a `last_used_at` write).
    known: Mutex<HashMap<String, KeyRow>>,
}

/// What the last successful list covered.
struct Loaded {
    /// The generation read before that list started (None: never listed).
    generation: Option<u64>,
    /// The bucket's last revision read before that list started: every
    /// write up to it is in the list.
    through: u64,
    /// When the bucket was last listed regardless of the generation.
    last_full: Option<Instant>,
}

impl NatsKeys {
    /// A backend over the keys bucket `kv` (from
    /// `Cluster::bucket(Bucket::Keys, …)`). Starts the watcher first, so
    /// that the first `load` (which always lists) misses nothing after it.
    /// Must be called on the runtime the backend's calls will use.
    pub async fn open(kv: kv::Store) -> Result<Self, KeyError> {
        let watch = kv
            .watch_all()
            .await
            .map_err(failed(&kv, "watch the keys"))?;
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(true),
            known: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(watch_loop(kv.clone(), shared.clone(), watch));
        Ok(Self {
            kv,
            rt: Handle::current(),
            shared,
            loaded: Mutex::new(Loaded {
                generation: None,
                through: 0,
                last_full: None,
            }),
            entries: Mutex::new(HashMap::new()),
            watcher: task.abort_handle(),
        })
    }

    /// Runs `fut` on the captured runtime from a blocking thread, failing
    /// after [`CALL_TIMEOUT`].
    fn block_on<T>(
        &self,
        action: &'static str,
        fut: impl Future<Output = Result<T, KeyError>>,
    ) -> Result<T, KeyError> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
            .unwrap_or_else(|_| Err(timed_out(&self.kv, action)))
    }

    /// `load`; with `fresh`, also when the bucket was written after the
    /// last list even though the watcher has not said so yet.
    fn load_if(&self, fresh: bool) -> Result<Option<Vec<KeyRow>>, KeyError> {
        let mut loaded = lock(&self.loaded);
        // Read before listing: a change the list misses bumps it again.
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let watching = self.shared.watching.load(Ordering::SeqCst);
        let full = loaded
            .last_full
            .is_none_or(|at| at.elapsed() >= FULL_RELOAD_EVERY);
        let signalled = !watching || full || loaded.generation != Some(generation);
        if !signalled && !fresh {
            return Ok(None);
        }
        let listed_through = loaded.through;
        let listing = self.block_on("list the keys", async {
            let through = last_revision(&self.kv).await?;
            if !signalled && through <= listed_through {
                return Ok(None);
            }
            Ok(Some((through, snapshot(&self.kv).await?)))
        })?;
        let Some(listing) = listing else {
            return Ok(None);
        };
        let (through, listed) = listing;
        let mut rows = Vec::with_capacity(listed.len());
        let mut known = HashMap::with_capacity(listed.len());
        let mut entries = HashMap::with_capacity(listed.len());
        for entry in listed {
            match usable(&entry.key, &entry.value) {
                Ok(row) => {
                    entries.insert(row.id, entry.key.clone());
                    known.insert(entry.key, row.clone());
                    rows.push(row);
                }
                Err(reason) => tracing::warn!(
                    bucket = %self.kv.name,
                    entry = %entry.key,
                    %reason,
                    "ignoring an api key entry this version cannot use"
                ),
            }
        }
        *lock(&self.shared.known) = known;
        *lock(&self.entries) = entries;
        loaded.generation = Some(generation);
        loaded.through = through;
        if full {
            loaded.last_full = Some(Instant::now());
        }
        Ok(Some(rows))
    }
}

impl Drop for NatsKeys {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl KeyBackend for NatsKeys {
    /// See the module doc, "Noticing changes".
    fn load(&self) -> Result<Option<Vec<KeyRow>>, KeyError> {
        self.load_if(false)
    }

    /// `load`, and if the watcher saw nothing, one request for the bucket's
    /// last revision: anything written after the last list (a key another
    /// node created a moment ago, not delivered to the watcher yet) makes
    /// it list now. See the module doc, "A new key on its first request".
    fn load_fresh(&self) -> Result<Option<Vec<KeyRow>>, KeyError> {
        self.load_if(true)
    }

    /// Sets `last_used_at` of each key to the time given if that is later
    /// than what is stored (another edge may have recorded a later use).
    /// Best effort per key: a lost compare-and-set is retried once, then
    /// left (the key is being written by others; its last use is not worth
    /// more); a deleted entry is not written (never resurrected), a revoked
    /// one keeps its revocation (written back as read). Transport errors
    /// fail the call so the cache offers the uses again.
    fn record_usage(&self, used: &HashMap<i64, DateTime<Utc>>) -> Result<(), KeyError> {
        let targets: Vec<(String, i64, DateTime<Utc>)> = {
            let entries = lock(&self.entries);
            used.iter()
                .filter_map(|(id, at)| entries.get(id).map(|key| (key.clone(), *id, *at)))
                .collect()
        };
        if targets.is_empty() {
            return Ok(());
        }
        self.block_on("record when keys were last used", async {
            for (entry_key, id, at) in &targets {
                record_use(&self.kv, entry_key, *id, *at).await?;
            }
            Ok(())
        })
    }
}

/// Mints a key, stores only its hash under the key's name, returns the
/// plaintext (shown once). Fails with [`KeyError::NameTaken`] if the name
/// exists, revoked or not.
pub(crate) async fn create(kv: &kv::Store, new: &NewKey) -> Result<String, KeyError> {
    new.validate()?;
    let key = generate();
    let value = StoredKey::new(new, &hash_key(&key), Utc::now());
    let bytes = value.encode().map_err(|e| KeyError::Storage(Box::new(e)))?;
    match kv.create(kv_key(&new.name), bytes).await {
        Ok(_) => Ok(key),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            Err(KeyError::NameTaken(new.name.clone()))
        }
        Err(e) => Err(failed(kv, "create a key")(e)),
    }
}

/// All keys, oldest first. Entries this version cannot read are logged and
/// left out.
pub(crate) async fn list(kv: &kv::Store) -> Result<Vec<KeyRecord>, KeyError> {
    let mut keys: Vec<StoredKey> = snapshot(kv)
        .await?
        .into_iter()
        .filter_map(|entry| match StoredKey::decode(&entry.value) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(bucket = %kv.name, entry = %entry.key, error = %e, "cannot read a stored api key; not listed");
                None
            }
        })
        .collect();
    // Same format everywhere (RFC 3339, seconds, `Z`), so text order is time order.
    keys.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Ok(keys.iter().map(StoredKey::record).collect())
}

/// Changes a key's scopes/limits (not a revoked key's).
pub(crate) async fn update(kv: &kv::Store, name: &str, change: &KeyUpdate) -> Result<(), KeyError> {
    change.validate()?;
    modify(kv, name, |key| {
        if key.revoked_at.is_some() {
            return Err(KeyError::Revoked(name.to_owned()));
        }
        if let Some(scopes) = &change.scopes {
            key.set_scopes(scopes);
        }
        if let Some(v) = change.max_filters {
            key.max_filters = v;
        }
        if let Some(v) = change.max_streams {
            key.max_streams = v;
        }
        if let Some(v) = change.rate {
            key.rate = v;
        }
        Ok(())
    })
    .await
}

/// Revokes a key (kept, so edges refuse it with 403 rather than 401).
pub(crate) async fn revoke(kv: &kv::Store, name: &str) -> Result<(), KeyError> {
    let now = rfc3339(Utc::now());
    modify(kv, name, |key| {
        if key.revoked_at.is_some() {
            return Err(KeyError::AlreadyRevoked(name.to_owned()));
        }
        key.revoked_at = Some(now.clone());
        Ok(())
    })
    .await
}

/// Reads the key named `name`, lets `change` edit it (or refuse), writes it
/// back if the entry is still at the revision read; on a lost race reads
/// again, up to [`CAS_ATTEMPTS`] times.
async fn modify<F>(kv: &kv::Store, name: &str, mut change: F) -> Result<(), KeyError>
where
    F: FnMut(&mut StoredKey) -> Result<(), KeyError>,
{
    // No key can have an invalid name (create validates), and an invalid
    // name may not be a valid KV key: it is simply not there.
    if validate_name(name).is_err() {
        return Err(KeyError::NotFound(name.to_owned()));
    }
    let entry_key = kv_key(name);
    for _ in 0..CAS_ATTEMPTS {
        let entry = kv
            .entry(entry_key.as_str())
            .await
            .map_err(failed(kv, "read a key"))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Err(KeyError::NotFound(name.to_owned()));
        };
        let mut key = StoredKey::decode(&entry.value).map_err(|e| KeyError::Unreadable {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        change(&mut key)?;
        let bytes = key.encode().map_err(|e| KeyError::Storage(Box::new(e)))?;
        match kv.update(entry_key.as_str(), bytes, entry.revision).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(failed(kv, "write a key")(e)),
        }
    }
    Err(KeyError::Contended(name.to_owned()))
}

/// The bucket's last revision (its stream's last sequence), from the server.
async fn last_revision(kv: &kv::Store) -> Result<u64, KeyError> {
    let info = kv
        .stream
        .get_info()
        .await
        .map_err(failed(kv, "read the bucket's last revision"))?;
    Ok(info.state.last_sequence)
}

/// Every entry of the bucket that holds a value (not deleted), each at its
/// latest revision, bounded by [`CALL_TIMEOUT`].
async fn snapshot(kv: &kv::Store) -> Result<Vec<kv::Entry>, KeyError> {
    let read = async {
        let names: Vec<String> = kv
            .keys()
            .await
            .map_err(failed(kv, "list the keys"))?
            .try_collect()
            .await
            .map_err(failed(kv, "list the keys"))?;
        let entries: Vec<Option<kv::Entry>> = futures::stream::iter(names)
            .map(|name| kv.entry(name))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await
            .map_err(failed(kv, "read a key"))?;
        // An entry deleted between the two steps is simply gone.
        Ok(entries
            .into_iter()
            .flatten()
            .filter(|e| e.operation == Operation::Put)
            .collect())
    };
    match tokio::time::timeout(CALL_TIMEOUT, read).await {
        Ok(out) => out,
        Err(_) => Err(timed_out(kv, "list the keys")),
    }
}

/// One key's `last_used_at` (see [`NatsKeys::record_usage`]).
async fn record_use(
    kv: &kv::Store,
    entry_key: &str,
    id: i64,
    at: DateTime<Utc>,
) -> Result<(), KeyError> {
    for _ in 0..2 {
        let entry = kv
            .entry(entry_key)
            .await
            .map_err(failed(kv, "read a key"))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(());
        };
        let Ok(mut key) = StoredKey::decode(&entry.value) else {
            return Ok(());
        };
        // Another key under the same name now (deleted by hand and created
        // again), or a later use already recorded.
        if key.id != id || key.last_used().is_some_and(|t| t >= at) {
            return Ok(());
        }
        key.last_used_at = Some(rfc3339(at));
        let bytes = key.encode().map_err(|e| KeyError::Storage(Box::new(e)))?;
        match kv.update(entry_key, bytes, entry.revision).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(failed(kv, "record a key's last use")(e)),
        }
    }
    tracing::debug!(
        entry = entry_key,
        "api key last use not recorded: the key kept changing"
    );
    Ok(())
}

/// Follows the bucket: bumps the generation for entries that change what
/// the cache enforces; re-establishes itself when the watch ends.
async fn watch_loop(kv: kv::Store, shared: Arc<Shared>, mut watch: kv::Watch) {
    let mut backoff = Backoff::new(REWATCH);
    loop {
        while let Some(item) = watch.next().await {
            match item {
                Ok(entry) => shared.saw(&entry.key, entry.operation, &entry.value),
                Err(e) => {
                    // The client recreates its consumer from where it was;
                    // whatever happened around it, look at the whole bucket.
                    tracing::debug!(bucket = %kv.name, error = %e, "api key watcher hiccup; relisting");
                    shared.bump();
                }
            }
        }
        shared.watching.store(false, Ordering::SeqCst);
        shared.bump();
        tracing::warn!(bucket = %kv.name, "api key watcher ended; listing the keys on every refresh until it is back");
        watch = loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match kv.watch_all().await {
                Ok(w) => break w,
                Err(e) => {
                    tracing::debug!(bucket = %kv.name, error = %e, "cannot watch the api keys yet")
                }
            }
        };
        backoff.reset();
        // What changed while nobody watched is found by the next list.
        shared.watching.store(true, Ordering::SeqCst);
        shared.bump();
        tracing::info!(bucket = %kv.name, "api key watcher re-established");
    }
}

impl Shared {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// An entry the watcher delivered: a change unless its row equals the
    /// one the last list has for its KV key (or it is a delete, or
    /// unusable, and the last list has none).
    fn saw(&self, key: &str, operation: Operation, value: &[u8]) {
        let row = match operation {
            Operation::Put => usable(key, value).ok(),
            Operation::Delete | Operation::Purge => None,
        };
        let unchanged = lock(&self.known).get(key) == row.as_ref();
        if !unchanged {
            self.bump();
        }
    }
}

/// The row of an entry, or why it cannot be used. An entry whose name is
/// not the one its KV key says is refused: `apikey revoke <name>` would
/// not find it, and a key that cannot be revoked must not be honoured.
fn usable(entry_key: &str, value: &[u8]) -> Result<KeyRow, String> {
    let key = StoredKey::decode(value).map_err(|e| e.to_string())?;
    if kv_key(&key.name) != entry_key {
        return Err(format!(
            "it holds the key `{}`, whose entry would be `{}`",
            key.name,
            kv_key(&key.name)
        ));
    }
    key.row().map_err(|e| e.to_string())
}

/// Maps a client error to [`KeyError::Bucket`].
fn failed<E>(kv: &kv::Store, action: &'static str) -> impl FnOnce(E) -> KeyError
where
    E: Into<async_nats::Error>,
{
    let bucket = kv.name.clone();
    move |e| KeyError::Bucket {
        bucket,
        action,
        source: e.into(),
    }
}

fn timed_out(kv: &kv::Store, action: &'static str) -> KeyError {
    KeyError::Bucket {
        bucket: kv.name.clone(),
        action,
        source: format!("no answer within {}s", CALL_TIMEOUT.as_secs()).into(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_knowing(rows: &[(&str, &StoredKey)]) -> Shared {
        let known = rows
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.row().expect("row")))
            .collect();
        Shared {
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(true),
            known: Mutex::new(known),
        }
    }

    /// The watcher's decision: what every edge writes (last use) and what
    /// the last list already has are not changes; anything the cache
    /// enforces differently, a new key, a deleted or unreadable one are.
    #[test]
    fn only_entries_that_change_what_the_cache_enforces_count() {
        let key = StoredKey::new(&NewKey::new("news.app"), &hash_key(&generate()), Utc::now());
        let shared = shared_knowing(&[("news/app", &key)]);
        let changes = |edit: &dyn Fn(&mut StoredKey)| {
            let mut k = key.clone();
            edit(&mut k);
            let before = shared.generation.load(Ordering::SeqCst);
            shared.saw("news/app", Operation::Put, &k.encode().expect("encode"));
            shared.generation.load(Ordering::SeqCst) != before
        };
        assert!(!changes(&|_| {}), "the listed value itself");
        assert!(
            !changes(&|k| k.last_used_at = Some(rfc3339(Utc::now()))),
            "a last-use write"
        );
        assert!(changes(&|k| k.rate = 2.0));
        assert!(changes(&|k| k.max_streams = 1));
        assert!(changes(&|k| k.scopes = vec!["admin".into()]));
        assert!(changes(&|k| k.revoked_at = Some(rfc3339(Utc::now()))));
        assert!(changes(&|k| k.hash = "zz".into()), "an unusable value");

        let count = |key: &str, op: Operation, value: &[u8]| {
            let before = shared.generation.load(Ordering::SeqCst);
            shared.saw(key, op, value);
            shared.generation.load(Ordering::SeqCst) - before
        };
        assert_eq!(count("news/app", Operation::Delete, b""), 1);
        assert_eq!(count("news/app", Operation::Purge, b""), 1);
        assert_eq!(
            count("other", Operation::Delete, b""),
            0,
            "an unknown entry deleted"
        );
        let other = StoredKey::new(&NewKey::new("other"), &hash_key(&generate()), Utc::now());
        let bytes = other.encode().expect("encode");
        assert_eq!(count("other", Operation::Put, &bytes), 1, "a new key");
        assert_eq!(
            count("elsewhere", Operation::Put, &bytes),
            0,
            "a key under the wrong entry is never used, so never a change"
        );
        assert!(usable("elsewhere", &bytes).is_err());
        assert!(usable("other", &bytes).is_ok());
    }
}
