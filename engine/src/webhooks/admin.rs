//! One interface for every way an operator manages webhook endpoints:
//! [`WebhookAdmin`] runs create/list/update/enable/disable/rotate/delete/
//! replay on the database directly (`livestrom webhook`, another process)
//! or through a running node's store writer (the edge's
//! `/v1/admin/webhooks`), with the same checks, errors and results. On a
//! cluster it refuses every operation with one clear message: webhooks
//! are single-node for now.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::model::{EndpointInfo, EndpointUpdate, NewEndpoint, Since, WebhookError};
use super::signing::SigningSecret;
use super::sqlite;
use crate::store::{open_and_migrate, Store};

/// What a cluster answers to every webhook operation.
pub const CLUSTER_UNSUPPORTED: &str = "webhooks are single-node for now: a configuration with a [cluster] table has no webhook endpoints (see docs/WEBHOOKS.md)";

/// Where webhook endpoints are managed. Cheap to clone.
#[derive(Clone)]
pub struct WebhookAdmin {
    at: At,
}

#[derive(Clone)]
enum At {
    /// A connection of this process's own (the CLI): see `sqlite` for why
    /// it may write while `livestrom run` runs. Behind a mutex so each call
    /// can run on a blocking thread.
    Direct {
        conn: Arc<Mutex<Connection>>,
        retention: Duration,
    },
    /// A running node: writes through its store's writer, reads on its pool.
    Store(Store),
    /// A cluster: no webhooks (the message says why).
    Unsupported(String),
}

impl std::fmt::Debug for WebhookAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            At::Direct { .. } => f.write_str("WebhookAdmin(direct)"),
            At::Store(s) => write!(f, "WebhookAdmin({s:?})"),
            At::Unsupported(_) => f.write_str("WebhookAdmin(unsupported)"),
        }
    }
}

/// A new secret and until when the previous one still signs.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new secret (shown once).
    pub secret: SigningSecret,
    /// The previous secret signs beside it until then.
    pub previous_until: DateTime<Utc>,
}

impl WebhookAdmin {
    /// Opens (and migrates) the database at `path` on a connection of its
    /// own; `retention` is the node's, to check `--since`.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, WebhookError> {
        Ok(Self {
            at: At::Direct {
                conn: Arc::new(Mutex::new(open_and_migrate(path)?)),
                retention,
            },
        })
    }

    /// A running node's endpoints, written through its store's writer.
    pub fn with_store(store: &Store) -> Self {
        Self {
            at: At::Store(store.clone()),
        }
    }

    /// Refuses every operation with `why`.
    pub fn unsupported(why: impl Into<String>) -> Self {
        Self {
            at: At::Unsupported(why.into()),
        }
    }

    /// Creates an endpoint: its secret (shown once) and how it is listed.
    pub async fn create(
        &self,
        new: NewEndpoint,
    ) -> Result<(SigningSecret, EndpointInfo), WebhookError> {
        let retention = self.retention();
        self.write(move |c| sqlite::create(c, &new, retention))
            .await
    }

    /// Every endpoint, oldest first (never a secret).
    pub async fn list(&self) -> Result<Vec<EndpointInfo>, WebhookError> {
        self.read(sqlite::list).await
    }

    /// One endpoint.
    pub async fn get(&self, name: &str) -> Result<EndpointInfo, WebhookError> {
        let name = name.to_owned();
        self.read(move |c| sqlite::get(c, &name)).await
    }

    /// Changes an endpoint's URL, filters, concurrency or timeout.
    pub async fn update(
        &self,
        name: &str,
        change: EndpointUpdate,
    ) -> Result<EndpointInfo, WebhookError> {
        let name = name.to_owned();
        self.write(move |c| sqlite::update(c, &name, &change)).await
    }

    /// Enables (resumes from the cursor) or disables an endpoint.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<EndpointInfo, WebhookError> {
        let name = name.to_owned();
        self.write(move |c| sqlite::set_enabled(c, &name, enabled))
            .await
    }

    /// A new secret; the previous one signs beside it for 24 hours.
    pub async fn rotate_secret(&self, name: &str) -> Result<Rotated, WebhookError> {
        let name = name.to_owned();
        let (secret, previous_until) = self.write(move |c| sqlite::rotate_secret(c, &name)).await?;
        Ok(Rotated {
            secret,
            previous_until,
        })
    }

    /// Deletes an endpoint.
    pub async fn delete(&self, name: &str) -> Result<(), WebhookError> {
        let name = name.to_owned();
        self.write(move |c| sqlite::delete(c, &name)).await
    }

    /// Delivers again from `since` (or skips ahead to it).
    pub async fn replay(&self, name: &str, since: Since) -> Result<EndpointInfo, WebhookError> {
        let retention = self.retention();
        let name = name.to_owned();
        self.write(move |c| sqlite::replay(c, &name, since, retention))
            .await
    }

    fn retention(&self) -> Duration {
        match &self.at {
            At::Direct { retention, .. } => *retention,
            At::Store(store) => store.retention(),
            At::Unsupported(_) => Duration::ZERO,
        }
    }

    /// Runs a change where this admin writes.
    async fn write<T, F>(&self, f: F) -> Result<T, WebhookError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WebhookError> + Send + 'static,
    {
        match &self.at {
            At::Direct { conn, .. } => blocking(conn, f).await,
            At::Store(store) => store.exec(move |c| f(c)).await?,
            At::Unsupported(why) => Err(WebhookError::Unsupported(why.clone())),
        }
    }

    /// Runs a read: on the direct connection, or on the store's read pool.
    async fn read<T, F>(&self, f: F) -> Result<T, WebhookError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WebhookError> + Send + 'static,
    {
        match &self.at {
            At::Direct { conn, .. } => blocking(conn, f).await,
            At::Store(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.read_blocking(|c| Ok(f(c)))?).await?
            }
            At::Unsupported(why) => Err(WebhookError::Unsupported(why.clone())),
        }
    }
}

/// Runs a SQLite operation on a blocking thread (it may wait on the
/// database's busy timeout while `livestrom run` commits).
async fn blocking<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, WebhookError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, WebhookError> + Send + 'static,
{
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    })
    .await?
}
