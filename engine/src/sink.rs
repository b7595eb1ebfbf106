//! Where the engine's results go and what a poll is compared against
//! (SPEC §7 seam, engine side): [`Sink`]. The runtime commits each poll's
//! events and state through it and reads the stored item and source state
//! from it; it never names SQLite or NATS. One node implements it with the
//! SQLite [`Store`]; a cluster with JetStream and key-value buckets
//! (`cluster::sink`).

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::event::CommittedEvent;
use crate::metrics::Metrics;
use crate::store::{ItemState, SourceState, Store, StoreError, WriteBatch};

/// The engine's store: append events with their state, read state back.
pub trait Sink: Send + Sync + 'static {
    /// Commits a batch (events, item and source state) as one unit as far
    /// as the backend allows; resolves once it is durable, with the stored
    /// events (ids assigned).
    fn write(
        &self,
        batch: WriteBatch,
    ) -> BoxFuture<'_, Result<Vec<Arc<CommittedEvent>>, StoreError>>;
    /// Resolves once every write submitted before it is durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Every stored item of a source.
    fn items<'a>(&'a self, source_id: &'a str)
        -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>>;
    /// The stored items of a source among `ids`.
    fn items_by_ids<'a>(
        &'a self,
        source_id: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>>;
    /// The stored state of a source, if it was ever polled.
    fn source_state<'a>(
        &'a self,
        source_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SourceState>, StoreError>>;
    /// The state of every source ever polled.
    fn source_states(&self) -> BoxFuture<'_, Result<Vec<SourceState>, StoreError>>;
    /// Deletes events older than the retention window (0 where the backend
    /// expires them itself).
    fn prune(&self) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Forgets item state not seen for the item horizon (see
    /// [`Store::prune_items`]; 0 where the backend expires it itself).
    fn prune_items<'a>(
        &'a self,
        configured: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;
    /// The process's metrics, where the runtime counts polls and events and
    /// beats the scheduler's heartbeat.
    fn metrics(&self) -> &Metrics;
}

impl Sink for Store {
    fn write(
        &self,
        batch: WriteBatch,
    ) -> BoxFuture<'_, Result<Vec<Arc<CommittedEvent>>, StoreError>> {
        Box::pin(Store::write(self, batch))
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::flush(self))
    }
    fn items<'a>(
        &'a self,
        source_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>> {
        Box::pin(Store::items(self, source_id))
    }
    fn items_by_ids<'a>(
        &'a self,
        source_id: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>> {
        Box::pin(Store::items_by_ids(self, source_id, ids))
    }
    fn source_state<'a>(
        &'a self,
        source_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SourceState>, StoreError>> {
        Box::pin(Store::source_state(self, source_id))
    }
    fn source_states(&self) -> BoxFuture<'_, Result<Vec<SourceState>, StoreError>> {
        Box::pin(Store::source_states(self))
    }
    fn prune(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(Store::prune(self))
    }
    fn prune_items<'a>(
        &'a self,
        configured: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(Store::prune_items(self, configured))
    }
    fn metrics(&self) -> &Metrics {
        Store::metrics(self)
    }
}

impl From<Store> for Arc<dyn Sink> {
    fn from(store: Store) -> Self {
        Arc::new(store)
    }
}
