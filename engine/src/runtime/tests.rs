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
