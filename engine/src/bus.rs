//! The live feed: committed batches announced, in commit order, to in-process readers.
//!
//! This is the SPEC §7 seam on the live side: today an in-process
//! `tokio::sync::broadcast` with very few receivers (the edge's fan-out hub,
//! `tail`-style tools), later a distributed log's push subscription. Only the
//! store's writer publishes, and only after COMMIT returned, so whatever a
//! reader sees here is durable.

use std::sync::Arc;

use futures::stream::BoxStream;
use tokio::sync::broadcast;

use crate::event::CommittedEvent;

/// One committed transaction's events, ascending by id.
pub type Batch = Arc<[Arc<CommittedEvent>]>;

/// Capacity in batches. A receiver that falls this far behind gets `Lagged`
/// and must re-read what it missed from the event log (never skip).
const CAPACITY: usize = 4096;

/// The live feed of committed events.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Batch>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with the default capacity.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// A bus holding `batches` batches for a slow receiver (at least 1);
    /// small ones let tests force `Lagged`.
    pub fn with_capacity(batches: usize) -> Self {
        let (tx, _) = broadcast::channel(batches.max(1));
        Self { tx }
    }

    /// Announces a committed batch (called by the store's writer only).
    pub fn publish(&self, batch: Batch) {
        // No receivers is fine: nobody is listening live.
        let _ = self.tx.send(batch);
    }

    /// Subscribes to batches committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.tx.subscribe()
    }
}

/// What a reader of the live feed gets next.
#[derive(Debug, Clone)]
pub enum Live {
    /// The next committed batch, in commit order.
    Batch(Batch),
    /// The reader fell this many batches behind and they are gone from the
    /// feed: it must re-read them from the event log (never skip).
    Lagged(u64),
}

/// The live side of the seam the edge reads through (SPEC §7): committed
/// batches in commit order, with a lag signal. The in-process [`Bus`]
/// implements it for one node; a distributed log's push subscription would
/// for many. The stream ends when the feed closes (shutdown).
pub trait LiveFeed: Send + Sync + 'static {
    /// Batches committed from now on.
    fn follow(&self) -> BoxStream<'static, Live>;
}

impl LiveFeed for Bus {
    fn follow(&self) -> BoxStream<'static, Live> {
        Box::pin(futures::stream::unfold(
            self.subscribe(),
            |mut rx| async move {
                let next = match rx.recv().await {
                    Ok(batch) => Live::Batch(batch),
                    Err(broadcast::error::RecvError::Lagged(n)) => Live::Lagged(n),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((next, rx))
            },
        ))
    }
}
