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
    /// The cluster (NATS JetStream) could not be reached or refused a call:
    /// nothing of the write is acknowledged; the poll is retried.
    #[error("cluster unavailable: cannot {action}: {source}")]
    Cluster {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// A clustered engine may not write this source now: its lease is
    /// lost or not yet held, or another engine published to it since this
    /// one last read it. Nothing was stored by this write.
    #[error("source {source_id}: {reason}; nothing was stored")]
    Fenced {
        /// The source.
        source_id: String,
        /// Why.
        reason: &'static str,
    },
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
