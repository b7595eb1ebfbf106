//! The store's error type: what can go wrong opening, reading or writing
//! the database, worded for the logs and `last_error` users read.

use std::path::PathBuf;

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
    /// A stored row could not be decoded.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// The writer thread has stopped (shutdown or a fatal error).
    #[error("the store writer has stopped")]
    WriterGone,
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}
