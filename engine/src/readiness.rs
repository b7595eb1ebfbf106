//! Readiness (`GET /readyz`): whether this process can do its job right
//! now — its log takes writes, its scheduler loop is turning — as a seam
//! ([`Readiness`]) the edge asks through [`Backend`](crate::Backend), so a
//! cluster node answers with its own checks (JetStream connected).
//! Liveness (`GET /healthz`) is not this: a node that is alive but cannot
//! write should be taken out of a load balancer, not restarted.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cluster::Cluster;
use crate::metrics::{Heartbeat, Metrics};
use crate::store::Store;

/// A scheduler loop whose heartbeat is older than this is not turning
/// (it beats at least every 5 seconds).
pub const SCHEDULER_STALE: Duration = Duration::from_secs(30);

/// How long the database write probe may take before it counts as failed
/// (a writer stuck behind a long transaction is not ready either).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One check that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotReady {
    /// Which check: `database`, `scheduler`, `cluster`, `edge`.
    pub check: &'static str,
    /// What is wrong, for an operator.
    pub detail: String,
}

/// The engine side's readiness checks.
pub trait Readiness: Send + Sync + 'static {
    /// Runs every check; empty when ready. Bounded in time.
    fn check(&self) -> BoxFuture<'_, Vec<NotReady>>;
}

/// The scheduler check: has the loop beaten within [`SCHEDULER_STALE`]?
pub fn check_scheduler(heartbeat: &Heartbeat) -> Option<NotReady> {
    match heartbeat.age() {
        None => Some(NotReady {
            check: "scheduler",
            detail: "the scheduler loop has not started".to_owned(),
        }),
        Some(age) if age > SCHEDULER_STALE => Some(NotReady {
            check: "scheduler",
            detail: format!(
                "the scheduler loop last went round {}s ago (stale after {}s)",
                age.as_secs(),
                SCHEDULER_STALE.as_secs()
            ),
        }),
        Some(_) => None,
    }
}

/// One node: the SQLite store takes a write (through its writer thread)
/// and, where this process runs the engine, the scheduler loop is turning.
#[derive(Debug, Clone)]
pub struct SqliteReadiness {
    store: Store,
    /// Whether a scheduler loop runs in this process (its heartbeat is in
    /// the store's metrics).
    scheduler: bool,
}

impl SqliteReadiness {
    /// Checks `store`, and the scheduler heartbeat when `scheduler`.
    pub fn new(store: Store, scheduler: bool) -> Self {
        Self { store, scheduler }
    }
}

impl Readiness for SqliteReadiness {
    fn check(&self) -> BoxFuture<'_, Vec<NotReady>> {
        Box::pin(async move {
            let mut out = Vec::new();
            match tokio::time::timeout(PROBE_TIMEOUT, self.store.probe_write()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => out.push(NotReady {
                    check: "database",
                    detail: format!("the database does not take writes: {e}"),
                }),
                Err(_) => out.push(NotReady {
                    check: "database",
                    detail: format!(
                        "a write to the database did not finish within {}s",
                        PROBE_TIMEOUT.as_secs()
                    ),
                }),
            }
            if self.scheduler {
                out.extend(check_scheduler(self.store.metrics().heartbeat()));
            }
            out
        })
    }
}

/// A cluster node: connected to NATS (JetStream), and, where this process
/// runs the engine, the scheduler loop is turning.
#[derive(Debug, Clone)]
pub struct ClusterReadiness {
    cluster: Cluster,
    /// The process's metrics when it runs a scheduler loop.
    scheduler: Option<Metrics>,
}

impl ClusterReadiness {
    /// Checks the connection of `cluster`, and the scheduler heartbeat in
    /// `scheduler` when this process runs the engine.
    pub fn new(cluster: Cluster, scheduler: Option<Metrics>) -> Self {
        Self { cluster, scheduler }
    }
}

impl Readiness for ClusterReadiness {
    fn check(&self) -> BoxFuture<'_, Vec<NotReady>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let state = self.cluster.client().connection_state();
            if state != async_nats::connection::State::Connected {
                out.push(NotReady {
                    check: "cluster",
                    detail: format!("not connected to NATS ({state})"),
                });
            }
            if let Some(m) = &self.scheduler {
                out.extend(check_scheduler(m.heartbeat()));
            }
            out
        })
    }
}

/// Always ready: for a backend whose checks live elsewhere (tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    fn check(&self) -> BoxFuture<'_, Vec<NotReady>> {
        Box::pin(async { Vec::new() })
    }
}

/// A shared readiness seam.
pub type SharedReadiness = Arc<dyn Readiness>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(
            &dir.path().join("t.db"),
            Duration::from_secs(3600),
            Bus::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (dir, store)
    }

    #[tokio::test]
    async fn a_writable_store_with_a_turning_scheduler_is_ready() {
        let (_dir, store) = store();
        store.metrics().heartbeat().beat();
        assert_eq!(SqliteReadiness::new(store, true).check().await, vec![]);
    }

    #[tokio::test]
    async fn a_store_that_refuses_writes_is_not_ready() {
        let (_dir, store) = store();
        store.metrics().heartbeat().beat();
        store.set_write_fault(|_| Err("disk I/O error".to_owned()));
        let not = SqliteReadiness::new(store, true).check().await;
        assert_eq!(not.len(), 1, "{not:?}");
        assert_eq!(not[0].check, "database");
        assert!(not[0].detail.contains("disk I/O error"), "{not:?}");
    }

    #[tokio::test]
    async fn a_scheduler_that_never_started_or_stopped_turning_is_not_ready() {
        let (_dir, store) = store();
        let r = SqliteReadiness::new(store.clone(), true);
        let not = r.check().await;
        assert_eq!(not.len(), 1);
        assert_eq!(not[0].check, "scheduler");
        assert!(not[0].detail.contains("not started"), "{not:?}");
        store
            .metrics()
            .heartbeat()
            .set_age_for_tests(SCHEDULER_STALE + Duration::from_secs(5));
        let not = r.check().await;
        assert_eq!(not.len(), 1);
        assert!(not[0].detail.contains("stale after 30s"), "{not:?}");
        // Without a scheduler in the process, only the database counts.
        assert_eq!(SqliteReadiness::new(store, false).check().await, vec![]);
    }
}
