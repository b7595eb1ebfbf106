//! One interface for `livestrom apikey` whichever store holds the keys:
//! [`KeyAdmin`] runs create/list/update/revoke on the SQLite database of a
//! single node or on the cluster's keys bucket, with the same checks, the
//! same errors and the same output.

use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::kv;
use rusqlite::Connection;

use super::model::{KeyError, KeyRecord, KeyUpdate, NewKey};
use super::{nats, sqlite};

/// Where `livestrom apikey` manages keys.
#[derive(Clone)]
pub struct KeyAdmin {
    store: Store,
}

#[derive(Clone)]
enum Store {
    /// One node: the database `livestrom run` uses (see `sqlite` for why
    /// this process writes it directly). Behind a mutex so each call can
    /// run on a blocking thread.
    Sqlite(Arc<Mutex<Connection>>),
    /// A cluster: the `<prefix>_KEYS` bucket (boxed: the handle is large).
    Cluster(Box<kv::Store>),
}

impl std::fmt::Debug for KeyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            Store::Sqlite(_) => f.write_str("KeyAdmin(sqlite)"),
            Store::Cluster(kv) => write!(f, "KeyAdmin(bucket {})", kv.name),
        }
    }
}

impl KeyAdmin {
    /// Keys in a SQLite database (`conn` from
    /// `livestrom_engine::store::open_and_migrate`).
    pub fn sqlite(conn: Connection) -> Self {
        Self {
            store: Store::Sqlite(Arc::new(Mutex::new(conn))),
        }
    }

    /// Keys in a cluster's keys bucket (`Cluster::bucket(Bucket::Keys, …)`).
    pub fn cluster(kv: kv::Store) -> Self {
        Self {
            store: Store::Cluster(Box::new(kv)),
        }
    }

    /// Mints a key, stores only its hash, returns the plaintext (shown once).
    pub async fn create(&self, new: &NewKey) -> Result<String, KeyError> {
        match &self.store {
            Store::Sqlite(conn) => {
                let new = new.clone();
                blocking(conn, move |c| sqlite::create(c, &new)).await
            }
            Store::Cluster(kv) => nats::create(kv, new).await,
        }
    }

    /// All keys, oldest first (never the keys themselves).
    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        match &self.store {
            Store::Sqlite(conn) => blocking(conn, sqlite::list).await,
            Store::Cluster(kv) => nats::list(kv).await,
        }
    }

    /// Changes a key's scopes/limits.
    pub async fn update(&self, name: &str, change: &KeyUpdate) -> Result<(), KeyError> {
        match &self.store {
            Store::Sqlite(conn) => {
                let (name, change) = (name.to_owned(), change.clone());
                blocking(conn, move |c| sqlite::update(c, &name, &change)).await
            }
            Store::Cluster(kv) => nats::update(kv, name, change).await,
        }
    }

    /// Revokes a key: edges refuse it within a second and close its streams.
    pub async fn revoke(&self, name: &str) -> Result<(), KeyError> {
        match &self.store {
            Store::Sqlite(conn) => {
                let name = name.to_owned();
                blocking(conn, move |c| sqlite::revoke(c, &name)).await
            }
            Store::Cluster(kv) => nats::revoke(kv, name).await,
        }
    }
}

/// Runs a SQLite operation on a blocking thread (it may wait on the
/// database's busy timeout while `livestrom run` commits).
async fn blocking<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, KeyError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, KeyError> + Send + 'static,
{
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    })
    .await
    .map_err(KeyError::Task)?
}
