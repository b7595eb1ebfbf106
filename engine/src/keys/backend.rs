//! The seam between the key cache and where keys are kept: [`KeyBackend`].
//! SQLite implements it on one node (`SqliteKeys`), the cluster's
//! key-value bucket in a cluster (`NatsKeys`); the cache and the edge do not
//! know which.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::model::{KeyError, Scope};

/// Where the cache gets keys from and records their use. Both calls block
/// (the cache runs them on blocking threads) and are made by one task at a
/// time each: `load` by the refresher, `record_usage` by the usage flusher.
pub trait KeyBackend: Send + Sync {
    /// Every key (active and revoked) if the keys may have changed since the
    /// last call that returned rows, else `Ok(None)`. The first call always
    /// returns the rows. A change counts as seen only once its rows were
    /// returned: after an error the next call looks again, so a revocation
    /// is not held back by one failed read.
    fn load(&self) -> Result<Option<Vec<KeyRow>>, KeyError>;

    /// [`load`](Self::load) for a refresh that a request with an unknown key
    /// waits on (`KeyCache::check_fresh`): a key created a moment ago by
    /// another process must be found even if the backend's change signal
    /// has not caught up with it. A backend whose signal can lag (the
    /// cluster's watcher) asks the store itself; the default is `load`.
    fn load_fresh(&self) -> Result<Option<Vec<KeyRow>>, KeyError> {
        self.load()
    }

    /// Records when keys were last used (key id → time of use). Best
    /// effort: on error the cache keeps the uses and offers them again.
    fn record_usage(&self, used: &HashMap<i64, DateTime<Utc>>) -> Result<(), KeyError>;
}

/// A stored key as the cache needs it (the hash, never the key).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    /// Stable id (limiters and open streams are tracked by it).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `sha256` of the whole key.
    pub hash: [u8; 32],
    /// Scopes (names a newer version wrote and this one does not know are
    /// left out).
    pub scopes: Vec<Scope>,
    /// Cap on filter terms per request.
    pub max_filters: usize,
    /// Cap on concurrent streams.
    pub max_streams: usize,
    /// Requests per second (a positive, finite number).
    pub rate: f64,
    /// Revoked keys are kept so they are refused with 403, not 401.
    pub revoked: bool,
}
