//! API keys: minting (`lstr_` + 44 base62 with a checksum tail), hashing,
//! the database operations behind `livestrom apikey`, and the edge's cache.
//!
//! CONTRACT (owned by the auth/keys module's owner).

use std::sync::Arc;

use livestrom_engine::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyInfo;

/// Key errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Database problem.
    #[error("database: {0}")]
    Db(String),
}

/// The edge's view of the keys: verified in memory, refreshed from the
/// database so CLI changes (revoke, update) apply within a second.
#[derive(Debug, Clone)]
pub struct KeyStore {}

impl KeyStore {
    /// Loads the keys and starts the refresher (stops on `cancel`).
    pub async fn open(store: &Store, cancel: CancellationToken) -> Result<Self, KeyError> {
        let _ = (store, cancel);
        Ok(Self {})
    }

    /// Verifies a presented key string (constant-time on the hash).
    pub fn verify(&self, presented: &str) -> Option<Arc<KeyInfo>> {
        let _ = presented;
        None
    }
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
    let _ = (conn, new);
    Err(KeyError::Db("not built yet".into()))
}

/// All keys, oldest first.
pub fn list(conn: &rusqlite::Connection) -> Result<Vec<KeyRecord>, KeyError> {
    let _ = conn;
    Ok(Vec::new())
}

/// Changes a key's scopes/limits.
pub fn update(conn: &rusqlite::Connection, name: &str, change: &KeyUpdate) -> Result<(), KeyError> {
    let _ = (conn, name, change);
    Err(KeyError::Db("not built yet".into()))
}

/// Revokes a key (refused by the edge within a second, streams closed within 5 s).
pub fn revoke(conn: &rusqlite::Connection, name: &str) -> Result<(), KeyError> {
    let _ = (conn, name);
    Err(KeyError::Db("not built yet".into()))
}
