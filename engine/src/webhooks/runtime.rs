//! The webhooks of a running node: one worker task per endpoint, started,
//! re-configured and stopped as operators change the `webhooks` table
//! (checked every [`CHECK_EVERY`], so a change made by `livestrom webhook`
//! in another process takes effect within a second), a follower of the
//! live feed that wakes caught-up workers when events are committed, and
//! the persister that writes every worker's progress through the store's
//! writer, coalesced into one transaction per round. Each worker reports
//! to its endpoint's series in the store's metrics registry; a deleted
//! endpoint's series go with its worker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::deliver::SharedTransport;
use super::metrics::WebhookMetrics;
use super::model::{Endpoint, Progress, WebhookError};
use super::sqlite::{load_endpoints, save_progress, ChangeWatch};
use super::worker::{self, Ctx, ProgressSink};
use crate::bus::LiveFeed;
use crate::store::Store;

/// How often the endpoints table is checked for operator changes.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long shutdown waits for the workers to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// A failed progress write is tried again after this.
const SAVE_RETRY: Duration = Duration::from_secs(1);

/// Starts delivering the endpoints of `store`'s database through
/// `transport` (the fetcher, with its SSRF guard; a config reload replaces
/// it) until `cancel`; the task ends after the workers stopped and their
/// last progress was written.
pub fn spawn(
    store: Store,
    transport: SharedTransport,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(store, transport, cancel))
}

/// A running worker.
struct Worker {
    /// Its settings; a new revision is sent here.
    config: watch::Sender<Arc<Endpoint>>,
    /// Stops it alone (deleted endpoint); a child of the node's token.
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

async fn run(store: Store, transport: SharedTransport, cancel: CancellationToken) {
    let (head_tx, head_rx) = watch::channel(0u64);
    let follower = tokio::spawn(follow(store.clone(), head_tx, cancel.clone()));
    let persister = Arc::new(Persister::new(store.clone()));
    let persist_stop = CancellationToken::new();
    let persisting = tokio::spawn(persister.clone().run(persist_stop.clone()));
    let metrics = store.metrics().webhooks().clone();
    let base = Ctx {
        log: Arc::new(store.clone()),
        transport: transport.subscribe(),
        sink: persister,
        head: head_rx,
        cancel: cancel.clone(),
    };
    let mut workers: HashMap<i64, Worker> = HashMap::new();
    let mut watch = Some(ChangeWatch::default());
    let mut reload = false;
    loop {
        if let Some(mut w) = watch.take() {
            let path = store.path().to_owned();
            match tokio::task::spawn_blocking(move || {
                let changed = w.changed(&path);
                (w, changed)
            })
            .await
            {
                Ok((w, changed)) => {
                    watch = Some(w);
                    match changed {
                        Ok(c) => reload |= c,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check the webhooks for changes; retrying")
                        }
                    }
                }
                // The check panicked: start over with a fresh connection.
                Err(e) => {
                    tracing::warn!(error = %e, "webhook change check failed");
                    watch = Some(ChangeWatch::default());
                }
            }
        }
        if reload {
            match load(&store).await {
                Ok(endpoints) => {
                    reload = false;
                    reconcile(&mut workers, endpoints, &base, &metrics);
                }
                Err(e) => tracing::warn!(error = %e, "cannot load the webhooks; retrying"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
    let ids: Vec<i64> = workers.keys().copied().collect();
    let stopping = futures::future::join_all(workers.into_values().map(|w| w.task));
    if tokio::time::timeout(STOP_WAIT, stopping).await.is_err() {
        tracing::warn!("webhook workers did not stop within {STOP_WAIT:?}");
    }
    // Nothing delivers any more: no series claims otherwise.
    for id in ids {
        metrics.forget(id);
    }
    // Last: whatever the workers saved on their way out is written.
    persist_stop.cancel();
    let _ = persisting.await;
    let _ = follower.await;
}

/// Every endpoint, read on the store's pool.
async fn load(store: &Store) -> Result<Vec<Endpoint>, WebhookError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read_blocking(|c| Ok(load_endpoints(c)))?).await?
}

/// Starts workers for new endpoints, hands changed settings to running
/// ones and stops those of deleted endpoints (their series go too, before
/// a new endpoint of the same name gets its own).
fn reconcile(
    workers: &mut HashMap<i64, Worker>,
    endpoints: Vec<Endpoint>,
    base: &Ctx,
    metrics: &WebhookMetrics,
) {
    let ids: HashSet<i64> = endpoints.iter().map(|e| e.id).collect();
    workers.retain(|id, w| {
        let keep = ids.contains(id);
        if !keep {
            w.cancel.cancel();
            metrics.forget(*id);
        }
        keep
    });
    for ep in endpoints {
        if let Some(w) = workers.get(&ep.id) {
            if w.config.borrow().revision != ep.revision {
                w.config.send_replace(Arc::new(ep));
            }
            continue;
        }
        tracing::info!(
            webhook = %ep.name,
            state = ep.progress.state.as_str(),
            cursor = %ep.progress.cursor,
            "webhook {} ({}) loaded: {}",
            ep.name,
            crate::fetch::redact_url(&ep.url),
            ep.progress.state.as_str()
        );
        let cancel = base.cancel.child_token();
        let id = ep.id;
        let series = metrics.endpoint(id, &ep.name, &ep.progress);
        let (config, rx) = watch::channel(Arc::new(ep));
        let ctx = Ctx {
            cancel: cancel.clone(),
            ..base.clone()
        };
        let task = tokio::spawn(worker::run(rx, ctx, series));
        workers.insert(
            id,
            Worker {
                config,
                cancel,
                task,
            },
        );
    }
}

/// Wakes caught-up workers whenever a batch is committed (and when the
/// feed lagged: they read the log, so nothing is missed either way).
async fn follow(store: Store, head: watch::Sender<u64>, cancel: CancellationToken) {
    let mut feed = store.bus().follow();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            next = feed.next() => match next {
                Some(_) => head.send_modify(|n| *n = n.wrapping_add(1)),
                None => return,
            },
        }
    }
}

/// Writes the workers' progress: the newest of each endpoint, all that
/// piled up during the previous write in one writer job.
struct Persister {
    store: Store,
    /// Endpoint id → (epoch, progress), newest only.
    pending: Mutex<HashMap<i64, (i64, Progress)>>,
    /// Rung by every save; holds a permit while nobody waits.
    notify: Notify,
}

impl Persister {
    fn new(store: Store) -> Self {
        Self {
            store,
            pending: Mutex::new(HashMap::new()),
            notify: Notify::new(),
        }
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = stop.cancelled() => {
                    self.flush().await;
                    return;
                }
            }
            if !self.flush().await {
                tokio::select! {
                    _ = tokio::time::sleep(SAVE_RETRY) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    /// Writes what is pending; false (and kept for the next round) on failure.
    async fn flush(&self) -> bool {
        let rows: Vec<(i64, i64, Progress)> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending
                .drain()
                .map(|(id, (epoch, p))| (id, epoch, p))
                .collect()
        };
        if rows.is_empty() {
            return true;
        }
        let kept = rows.clone();
        let result = self
            .store
            .exec(move |c| save_progress(c, &rows))
            .await
            .map_err(WebhookError::from)
            .and_then(|r| r);
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save webhook progress; retrying");
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for (id, epoch, p) in kept {
                    pending.entry(id).or_insert((epoch, p));
                }
                self.notify.notify_one();
                false
            }
        }
    }
}

impl ProgressSink for Persister {
    fn save(&self, id: i64, epoch: i64, progress: &Progress) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (epoch, progress.clone()));
        self.notify.notify_one();
    }
}
