//! What the edge reads through (SPEC §7): the event log, the live feed, the
//! key store and the sources' stored state — four traits. One node
//! implements them with SQLite and the in-process bus ([`Backend::sqlite`]);
//! a cluster backend implements the same four, and the edge, which only
//! ever holds a [`Backend`], never knows which. Beside the four, it carries
//! the engine's readiness checks and the process's metrics registry.

use std::sync::Arc;

use crate::bus::LiveFeed;
use crate::keys::{KeyBackend, SqliteKeys};
use crate::log::{EventLog, LogError};
use crate::metrics::Metrics;
use crate::readiness::{Readiness, SqliteReadiness};
use crate::store::{SourceState, Store};
use crate::webhooks::WebhookAdmin;

/// The sources' stored state, for operator views (`/v1/admin/sources`).
/// Blocking: call from `spawn_blocking`.
pub trait SourceStates: Send + Sync + 'static {
    /// Every source the engine has stored state for, by id.
    fn source_states(&self) -> Result<Vec<SourceState>, LogError>;
}

impl SourceStates for Store {
    fn source_states(&self) -> Result<Vec<SourceState>, LogError> {
        Ok(self.source_states_blocking()?)
    }
}

/// Everything the edge reads, behind the four seams.
#[derive(Clone)]
pub struct Backend {
    /// Replays, pages, cursors.
    pub log: Arc<dyn EventLog>,
    /// Committed batches as they happen.
    pub live: Arc<dyn LiveFeed>,
    /// API keys and their changes.
    pub keys: Arc<dyn KeyBackend>,
    /// Source health for operators.
    pub sources: Arc<dyn SourceStates>,
    /// Whether the engine side can do its job (`GET /readyz`): the log
    /// takes writes, the scheduler turns, the cluster is connected.
    pub readiness: Arc<dyn Readiness>,
    /// The process's metrics registry; the edge registers its series here
    /// and renders all of them at `GET /metrics`.
    pub metrics: Metrics,
    /// Webhook endpoints for operators (`/v1/admin/webhooks`): through the
    /// store's writer on one node, refused on a cluster.
    pub webhooks: WebhookAdmin,
}

impl Backend {
    /// One node: the SQLite store (log, source state, keys in the same file)
    /// and its in-process bus.
    pub fn sqlite(store: &Store) -> Self {
        Self {
            log: Arc::new(store.clone()),
            live: Arc::new(store.bus().clone()),
            keys: Arc::new(SqliteKeys::with_store(store)),
            sources: Arc::new(store.clone()),
            readiness: Arc::new(SqliteReadiness::new(store.clone(), true)),
            metrics: store.metrics().clone(),
            webhooks: WebhookAdmin::with_store(store),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}
