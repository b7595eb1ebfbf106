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
