//! The store's error type: what can go wrong opening, reading or writing
//! the database, worded for the logs and `last_error` users read.

use std::path::PathBuf;
use std::sync::Arc;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or is not a usable SQLite database.
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A group commit failed and was rolled back: nothing of the batch was
    /// stored. Shared, because every batch of the group gets the same error.
    #[error("database commit failed: {0}")]
    Commit(#[source] Arc<rusqlite::Error>),
    /// A stored row could not be decoded.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The writer thread has stopped (shutdown or a fatal error).
    #[error("the store writer has stopped")]
    WriterGone,
    /// A blocking task (a read on a pooled connection) panicked or was
    /// cancelled.
    #[error("store task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A duration the store computes with does not fit a timestamp (a
    /// retention window of hundreds of millions of years).
    #[error("{what} out of range: {source}")]
    OutOfRange {
        /// Which duration.
        what: &'static str,
        /// The conversion's error.
        source: chrono::OutOfRangeError,
    },
}

/// What the edge sees of a store failure behind the log seam: a corrupt row
/// stays "corrupt", everything else is the backend being unavailable.
impl From<StoreError> for crate::log::LogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(what) => crate::log::LogError::Corrupt(what),
            other => crate::log::LogError::Unavailable(Box::new(other)),
        }
    }
}
