//! Unit tests of the runtime's failure paths that need a fault inside the
//! engine (a store write that fails, a poll that panics): the real `run`
//! loop against local servers on 127.0.0.1, with the store's test-only
//! write hook as the only seam.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use tokio::task::JoinHandle;

use super::*;
use crate::store::{ReadScope, Store, WriteBatch};
use crate::{Bus, EventLog};

/// A generous bound for waits on a slow shared machine; never a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

/// A running engine on a fresh database.
struct Engine {
    store: Store,
    handle: EngineHandle,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), RuntimeError>>,
    _dir: tempfile::TempDir,
}

/// Opens a fresh store; `prepare` runs on it (seed state, install faults)
/// before the engine starts with `sources` (TOML `[[source]]` tables).
async fn start(sources: &str, prepare: impl AsyncFnOnce(&Store)) -> Engine {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("t.db");
    let toml = format!(
        "[engine]\ndatabase = {db:?}\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\ntimeout = \"10s\"\n{sources}"
    );
    let config = Config::from_toml(Path::new("test-sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
    let store = Store::open(&config.engine.database, config.engine.retention, Bus::new())
        .unwrap_or_else(|e| panic!("store: {e}"));
    prepare(&store).await;
    let (handle, commands) = handle();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        config,
        store.clone(),
        None,
        Some(commands),
        cancel.clone(),
    ));
    Engine {
        store,
        handle,
        cancel,
        task,
        _dir: dir,
    }
}

impl Engine {
    async fn state(&self, id: &str) -> SourceState {
        match self.store.source_state(id).await {
            Ok(Some(s)) => s,
            other => panic!("no state for {id}: {other:?}"),
        }
    }

    /// Waits until the stored state of `id` satisfies `ok`.
    async fn state_where(&self, id: &str, what: &str, ok: impl Fn(&SourceState) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(s)) = self.store.source_state(id).await {
                if ok(&s) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{what} never happened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Store {
        self.cancel.cancel();
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("engine did not stop cleanly: {other:?}"),
        }
        self.store
    }
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn stored_events(store: &Store) -> usize {
    store
        .read_after(uuid::Uuid::nil(), 1000, &ReadScope::default())
        .map(|rows| rows.len())
        .unwrap_or_else(|e| panic!("read events: {e}"))
}

/// An SSE upstream whose first connection carries what the test sends, in
/// the test's own time; later connections stay open and silent.
#[derive(Clone)]
struct Upstream {
    first: Arc<Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>>,
    connections: Arc<AtomicUsize>,
}

async fn upstream(State(up): State<Upstream>) -> impl IntoResponse {
    up.connections.fetch_add(1, Ordering::SeqCst);
    let first = up.first.lock().ok().and_then(|mut f| f.take());
    let body = match first {
        Some(mut rx) => Body::from_stream(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|b| b.map(Ok::<_, std::io::Error>))
        })),
        None => Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>()),
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body)
}

/// Serves an [`Upstream`] at `/stream`: what is sent on the returned sender
/// is its first connection's body.
async fn serve_upstream() -> (mpsc::UnboundedSender<Bytes>, Upstream, std::net::SocketAddr) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream {
        first: Arc::new(Mutex::new(Some(rx))),
        connections: Arc::default(),
    };
    let addr = serve(
        Router::new()
            .route("/stream", get(upstream))
            .with_state(up.clone()),
    )
    .await;
    (tx, up, addr)
}

fn sse(n: u32) -> Bytes {
    Bytes::from(format!(
        "id: {n}\ndata: {{\"id\":\"e{n}\",\"title\":\"Edit {n}\",\"uri\":\"https://wiki.example/{n}\"}}\n\n"
    ))
}

/// A batch that cannot be stored is retried while the source shows why; on
/// shutdown it is given up and nothing after it is stored, so the stored
/// cursor stays before it and the next run reads it again.
#[tokio::test]
async fn an_upstream_batch_that_cannot_be_stored_shows_its_error_and_nothing_after_it_is_stored() {
    let (tx, up, addr) = serve_upstream().await;
    let src = format!(
        "[[source]]\nid = \"wiki.rc\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{addr}/stream\"\nfields = {{ id = \"/id\", title = \"/title\", url = \"/uri\" }}\n"
    );
    // Every write that would store the cursor after item 2 fails.
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let engine = start(&src, async move |store: &Store| {
        store.set_write_fault(move |batch| {
            match batch
                .source
                .as_ref()
                .and_then(|s| s.upstream_cursor.as_deref())
            {
                Some("2") => {
                    seen.fetch_add(1, Ordering::SeqCst);
                    Err("injected: disk full".to_owned())
                }
                _ => Ok(()),
            }
        })
    })
    .await;
    let send = |n: u32| {
        tx.send(sse(n))
            .unwrap_or_else(|_| panic!("the upstream connection is gone"))
    };

    send(1);
    engine
        .state_where("wiki.rc", "storing item 1", |s| {
            s.upstream_cursor.as_deref() == Some("1")
        })
        .await;
    send(2);
    let deadline = Instant::now() + WAIT;
    while attempts.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "item 2 was never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Item 3 arrives and the connection ends: the reader hands its batch over
    // before it reconnects, so the second connection proves the batch after
    // the failing one is waiting in the runtime's queue.
    send(3);
    drop(tx);
    let deadline = Instant::now() + WAIT;
    while up.connections.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the reader never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not stalling silently: while it retries, the source shows why.
    engine
        .state_where(
            "wiki.rc",
            "the store failure shown as the source's error",
            |s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("injected: disk full"))
                    && s.consecutive_failures >= 1
            },
        )
        .await;
    assert_eq!(
        engine.state("wiki.rc").await.upstream_cursor.as_deref(),
        Some("1")
    );

    let store = engine.stop().await;
    let state = match store.source_state("wiki.rc").await {
        Ok(Some(s)) => s,
        other => panic!("no state: {other:?}"),
    };
    assert_eq!(
        state.upstream_cursor.as_deref(),
        Some("1"),
        "the cursor moved past a batch that was never stored"
    );
    assert_eq!(
        stored_events(&store),
        1,
        "a batch after the lost one was stored"
    );
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected: disk full")),
        "{state:?}"
    );
}

/// A poll that panics frees its slot: the source shows the panic message,
/// is rescheduled with backoff and can be polled again.
#[tokio::test]
async fn a_panicking_poll_keeps_its_source_and_shows_the_panic() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let addr = serve(Router::new().route(
        "/feed.xml",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    [(header::CONTENT_TYPE, "application/rss+xml")],
                    "<rss version=\"2.0\"><channel><title>t</title><item><guid>a</guid><title>A</title><link>https://example.org/a</link></item></channel></rss>",
                )
            }
        }),
    ))
    .await;
    let src =
        format!("[[source]]\nid = \"boom\"\ntype = \"rss\"\nurl = \"http://{addr}/feed.xml\"\ninterval = \"1h\"\n");
    let engine = start(&src, async |store: &Store| {
        // Not due for an hour: only `poll_now` polls it, so the test knows
        // which poll panics.
        let seeded = store
            .write(WriteBatch {
                source: Some(SourceState {
                    source_id: "boom".into(),
                    next_poll_at: Some(Utc::now() + chrono::Duration::hours(1)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert!(seeded.is_ok(), "{seeded:?}");
        // The first poll of `boom` panics inside its task, while it stores
        // its result.
        let armed = AtomicBool::new(true);
        store.set_write_fault(move |batch| {
            let ours = batch.source.as_ref().is_some_and(|s| s.source_id == "boom");
            if ours && armed.swap(false, Ordering::SeqCst) {
                panic!("injected panic while storing boom");
            }
            Ok(())
        });
    })
    .await;

    let first = tokio::time::timeout(WAIT, engine.handle.poll_now("boom"))
        .await
        .unwrap_or_else(|_| panic!("poll_now never answered after the poll panicked"));
    match first {
        Err(e) => assert!(
            e.to_string().contains("injected panic while storing boom"),
            "{e}"
        ),
        Ok(()) => panic!("a panicked poll reported success"),
    }
    let failed = engine.state("boom").await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("panicked") && e.contains("injected panic")),
        "{failed:?}"
    );
    assert_eq!(failed.consecutive_failures, 1, "{failed:?}");
    assert!(
        failed
            .next_poll_at
            .is_some_and(|t| t > Utc::now() + chrono::Duration::minutes(30)),
        "rescheduled with the failure backoff: {failed:?}"
    );

    let second = tokio::time::timeout(WAIT, engine.handle.poll_now("boom"))
        .await
        .unwrap_or_else(|_| panic!("the source was never polled again"));
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let healthy = engine.state("boom").await;
    assert_eq!(healthy.last_error, None);
    assert_eq!(healthy.consecutive_failures, 0);
    engine.stop().await;
}

/// What a failed poll shows (to `poll_now`, in `last_error`) never carries
/// a source's credentials, and the typed error stays matchable.
#[test]
fn a_failed_poll_is_shown_without_credentials() {
    let failed = PollFailed::from(PollError::Panicked(
        "GET https://reader:hunter2@example.org/feed?token=s3cret".into(),
    ));
    let shown = failed.to_string();
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
    assert!(
        shown.starts_with("internal: the poll panicked: "),
        "{shown}"
    );
    assert!(matches!(failed.error(), PollError::Panicked(_)));
    assert_eq!(PollNowError::from(failed).to_string(), shown);
}

/// The store of [`batches_are_planned_beside_a_commit_unless_they_read_what_it_writes`]:
/// the real store, with the writes of chosen upstream cursors held until
/// the test lets them go, and every item lookup recorded with whether a
/// write was held at the time.
struct Gate {
    store: Store,
    /// Cursors whose write waits, each for its own release.
    held: Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Receiver<()>>>,
    /// The cursor whose write is waiting now, if any.
    holding: Mutex<Option<String>>,
    /// Each lookup's keys and the cursor whose write was held meanwhile.
    lookups: Mutex<Vec<(Vec<String>, Option<String>)>>,
    /// The first lookup that reads this key fails.
    fail_lookup: Mutex<Option<String>>,
    changed: tokio::sync::Notify,
}

impl Gate {
    /// Waits until `ok` holds of the gate (checked after every change).
    async fn until(&self, what: &str, ok: impl Fn(&Gate) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            if ok(self) {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "timed out waiting for {what}"
            );
        }
    }

    fn holding(&self) -> Option<String> {
        self.holding.lock().ok().and_then(|h| h.clone())
    }

    fn lookups(&self) -> Vec<(Vec<String>, Option<String>)> {
        self.lookups.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl crate::Sink for Gate {
    fn write(
        &self,
        batch: WriteBatch,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<Arc<crate::CommittedEvent>>, crate::store::StoreError>,
    > {
        Box::pin(async move {
            let cursor = batch
                .source
                .as_ref()
                .and_then(|s| s.upstream_cursor.clone());
            let wait = cursor
                .as_ref()
                .and_then(|c| self.held.lock().ok().and_then(|mut h| h.remove(c)));
            if let Some(release) = wait {
                if let Ok(mut h) = self.holding.lock() {
                    h.clone_from(&cursor);
                }
                self.changed.notify_waiters();
                let _ = release.await;
                if let Ok(mut h) = self.holding.lock() {
                    *h = None;
                }
            }
            let r = self.store.write(batch).await;
            self.changed.notify_waiters();
            r
        })
    }
    fn flush(&self) -> futures::future::BoxFuture<'_, Result<(), crate::store::StoreError>> {
        Box::pin(self.store.flush())
    }
    fn items<'a>(
        &'a self,
        source_id: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        Result<Vec<crate::store::ItemState>, crate::store::StoreError>,
    > {
        Box::pin(self.store.items(source_id))
    }
    fn items_by_ids<'a>(
        &'a self,
        source_id: &'a str,
        ids: Vec<String>,
    ) -> futures::future::BoxFuture<
        'a,
        Result<Vec<crate::store::ItemState>, crate::store::StoreError>,
    > {
        if let Ok(mut l) = self.lookups.lock() {
            l.push((ids.clone(), self.holding()));
        }
        self.changed.notify_waiters();
        let fail = self
            .fail_lookup
            .lock()
            .ok()
            .and_then(|mut f| f.take_if(|key| ids.contains(key)));
        if let Some(key) = fail {
            return Box::pin(async move {
                Err(crate::store::StoreError::Commit(Arc::new(
                    rusqlite::Error::InvalidParameterName(format!("injected: lookup of {key}")),
                )))
            });
        }
        Box::pin(self.store.items_by_ids(source_id, ids))
    }
    fn source_state<'a>(
        &'a self,
        source_id: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<SourceState>, crate::store::StoreError>> {
        Box::pin(self.store.source_state(source_id))
    }
    fn source_states(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Vec<SourceState>, crate::store::StoreError>> {
        Box::pin(self.store.source_states())
    }
    fn prune(&self) -> futures::future::BoxFuture<'_, Result<usize, crate::store::StoreError>> {
        Box::pin(self.store.prune())
    }
    fn prune_items<'a>(
        &'a self,
        configured: &'a std::collections::HashSet<String>,
    ) -> futures::future::BoxFuture<'a, Result<usize, crate::store::StoreError>> {
        Box::pin(self.store.prune_items(configured))
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        self.store.metrics()
    }
}

/// A firehose source `wiki.rc` run on a [`Gate`] over a fresh store; the
/// writes of `held` cursors wait for their release.
struct Gated {
    gate: Arc<Gate>,
    store: Store,
    tx: mpsc::UnboundedSender<Bytes>,
    releases: std::collections::HashMap<String, tokio::sync::oneshot::Sender<()>>,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), RuntimeError>>,
    _dir: tempfile::TempDir,
}

impl Gated {
    async fn start(held: &[&str], fail_lookup: Option<&str>) -> Self {
        let (tx, _up, addr) = serve_upstream().await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let toml = format!(
            "[engine]\ndatabase = {:?}\n[fetch]\nallow_private_networks = true\n\
             [[source]]\nid = \"wiki.rc\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{addr}/stream\"\n\
             fields = {{ id = \"/id\", title = \"/title\" }}\n",
            dir.path().join("t.db")
        );
        let config = Config::from_toml(Path::new("test-sources.toml"), &toml)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        let store = Store::open(&config.engine.database, config.engine.retention, Bus::new())
            .unwrap_or_else(|e| panic!("store: {e}"));
        let mut releases = std::collections::HashMap::new();
        let mut waits = std::collections::HashMap::new();
        for cursor in held {
            let (release, wait) = tokio::sync::oneshot::channel();
            releases.insert((*cursor).to_owned(), release);
            waits.insert((*cursor).to_owned(), wait);
        }
        let gate = Arc::new(Gate {
            store: store.clone(),
            held: Mutex::new(waits),
            holding: Mutex::new(None),
            lookups: Mutex::new(Vec::new()),
            fail_lookup: Mutex::new(fail_lookup.map(str::to_owned)),
            changed: tokio::sync::Notify::new(),
        });
        let cancel = CancellationToken::new();
        let sink: Arc<dyn crate::Sink> = gate.clone();
        let task = tokio::spawn(run(config, sink, None, None, cancel.clone()));
        Self {
            gate,
            store,
            tx,
            releases,
            cancel,
            task,
            _dir: dir,
        }
    }

    /// Sends one SSE event: item `item` titled `title`, upstream id `cursor`.
    fn send(&self, cursor: u32, item: &str, title: &str) {
        let frame = format!("id: {cursor}\ndata: {{\"id\":\"{item}\",\"title\":\"{title}\"}}\n\n");
        self.tx
            .send(Bytes::from(frame))
            .unwrap_or_else(|_| panic!("the upstream connection is gone"));
    }

    async fn held(&self, cursor: &str) {
        self.gate
            .until(&format!("the write of batch {cursor} held"), |g| {
                g.holding().as_deref() == Some(cursor)
            })
            .await;
    }

    fn release(&mut self, cursor: &str) {
        if let Some(r) = self.releases.remove(cursor) {
            let _ = r.send(());
        }
    }

    /// Whether a lookup that read `item` ran while the write of `cursor`
    /// was held.
    fn looked_up_while(&self, item: &str, cursor: &str) -> bool {
        self.gate
            .lookups()
            .iter()
            .any(|(keys, h)| keys.iter().any(|k| k == item) && h.as_deref() == Some(cursor))
    }

    /// Checks that no lookup of `item` runs while the write of `cursor` is
    /// held. The runner reaches such a lookup within moments if it makes
    /// one, so a short look catches it; when none comes the test goes on.
    async fn no_lookup_while(&self, item: &str, cursor: &str) {
        let early = tokio::time::timeout(
            Duration::from_secs(1),
            self.gate
                .until("a lookup", |_| self.looked_up_while(item, cursor)),
        )
        .await;
        assert!(
            early.is_err(),
            "{item} was looked up while batch {cursor}, which may write it, was not stored"
        );
    }

    /// Waits until `n` events are stored.
    async fn stored(&self, n: usize) {
        self.gate
            .until(&format!("{n} events stored"), |_| {
                stored_events(&self.store) == n
            })
            .await;
    }

    /// Stops the engine once `n` events are stored; the events, oldest
    /// first, and the stored upstream cursor.
    async fn stop_at(self, n: usize) -> (Vec<crate::StreamEvent>, Option<String>) {
        self.stored(n).await;
        let store = self.store.clone();
        self.cancel.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            other => panic!("engine ended with {other:?}"),
        }
        let rows = store
            .read_after(uuid::Uuid::nil(), 10, &ReadScope::default())
            .unwrap_or_else(|e| panic!("read events: {e}"));
        let events = rows
            .iter()
            .map(|r| serde_json::from_str(&r.json).unwrap_or_else(|e| panic!("event json: {e}")))
            .collect();
        let state = match store.source_state("wiki.rc").await {
            Ok(Some(s)) => s,
            other => panic!("no state: {other:?}"),
        };
        (events, state.upstream_cursor)
    }
}

fn versions(events: &[crate::StreamEvent]) -> Vec<(&str, u32, Option<uuid::Uuid>)> {
    events
        .iter()
        .map(|e| (e.item_id.as_str(), e.version, e.supersedes))
        .collect()
}

/// A firehose batch is looked up and planned while the batch before it
/// commits — unless it reads an item that commit writes: then it waits, so
/// an edit is planned against the version just stored (version 3 supersedes
/// version 2, not a second version 2 beside it).
#[tokio::test]
async fn batches_are_planned_beside_a_commit_unless_they_read_what_it_writes() {
    let mut g = Gated::start(&["2", "3"], None).await;
    g.send(1, "x", "X one");
    g.stored(1).await;
    g.send(2, "y", "Y one");
    g.held("2").await;
    // Batch 3 reads x, which batch 2 does not write: planned beside it.
    g.send(3, "x", "X two");
    g.gate
        .until("batch 3 looked up while batch 2 commits", |_| {
            g.looked_up_while("x", "2")
        })
        .await;
    g.release("2");
    g.held("3").await;
    // Batch 4 reads x, which batch 3 writes: it must wait for that commit.
    g.send(4, "x", "X three");
    g.no_lookup_while("x", "3").await;
    g.release("3");
    let (events, cursor) = g.stop_at(4).await;
    assert_eq!(
        versions(&events),
        vec![
            ("x", 1, None),
            ("y", 1, None),
            ("x", 2, Some(events[0].id)),
            ("x", 3, Some(events[2].id)),
        ]
    );
    assert_eq!(cursor.as_deref(), Some("4"));
}

/// A batch whose plan failed is planned again by its commit's retry, so
/// what it writes is not known: the next batch waits for it whatever it
/// reads.
#[tokio::test]
async fn a_batch_after_one_whose_plan_failed_waits_for_its_commit() {
    let mut g = Gated::start(&["2"], Some("y")).await;
    g.send(1, "x", "X one");
    g.stored(1).await;
    // Batch 2's first lookup fails; its retry plans it again and commits.
    g.send(2, "y", "Y one");
    g.held("2").await;
    g.send(3, "y", "Y two");
    g.no_lookup_while("y", "2").await;
    g.release("2");
    let (events, cursor) = g.stop_at(3).await;
    assert_eq!(
        versions(&events),
        vec![("x", 1, None), ("y", 1, None), ("y", 2, Some(events[1].id))]
    );
    assert_eq!(cursor.as_deref(), Some("3"));
}

/// A commit that panics is one failed attempt of its batch: the source
/// shows the panic, the batch is stored on the next attempt, and the
/// firehose goes on.
#[tokio::test]
async fn a_panicking_commit_is_retried_and_shown() {
    let (tx, _up, addr) = serve_upstream().await;
    let src = format!(
        "[[source]]\nid = \"wiki.rc\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{addr}/stream\"\nfields = {{ id = \"/id\", title = \"/title\", url = \"/uri\" }}\n"
    );
    let panicked = Arc::new(AtomicBool::new(false));
    let once = panicked.clone();
    let engine = start(&src, async move |store: &Store| {
        store.set_write_fault(move |batch| {
            let cursor = batch
                .source
                .as_ref()
                .and_then(|s| s.upstream_cursor.as_deref());
            if cursor == Some("2") && !once.swap(true, Ordering::SeqCst) {
                panic!("injected: a bug in the commit");
            }
            Ok(())
        })
    })
    .await;
    let send = |n: u32| {
        tx.send(sse(n))
            .unwrap_or_else(|_| panic!("the upstream connection is gone"))
    };
    send(1);
    send(2);
    engine
        .state_where("wiki.rc", "the panic shown as the source's error", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("injected: a bug in the commit"))
        })
        .await;
    send(3);
    engine
        .state_where("wiki.rc", "items 2 and 3 stored after the retry", |s| {
            s.upstream_cursor.as_deref() == Some("3") && s.last_error.is_none()
        })
        .await;
    assert!(panicked.load(Ordering::SeqCst));
    let store = engine.stop().await;
    assert_eq!(stored_events(&store), 3);
}
