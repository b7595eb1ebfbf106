//! What the webhook tests share: a firehose whose items the test adds, a
//! scripted receiver that records every request, a node running the real
//! binary, the `livestrom webhook` CLI and what the database holds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;

pub(crate) use crate::crash::{random, start as start_node, Node};

/// A generous bound for anything the tests wait for (two busy cores).
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_livestrom");

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub(crate) type AnyError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An SSE firehose: items 1..=count exist; [`Feed::add`] makes more.
pub(crate) struct Feed {
    count: watch::Sender<u64>,
    pub(crate) addr: SocketAddr,
}

impl Feed {
    pub(crate) async fn start() -> Result<Arc<Self>, AnyError> {
        let (count, _) = watch::channel(0u64);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let feed = Arc::new(Self { count, addr });
        let app = Router::new()
            .route("/events", get(events))
            .with_state(feed.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(feed)
    }

    /// `n` more items.
    pub(crate) fn add(&self, n: u64) {
        self.count.send_modify(|c| *c += n);
    }

    pub(crate) fn count(&self) -> u64 {
        *self.count.borrow()
    }
}

async fn events(State(feed): State<Arc<Feed>>, headers: HeaderMap) -> impl IntoResponse {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let rx = feed.count.subscribe();
    let stream = futures::stream::unfold((rx, from), |(mut rx, next)| async move {
        rx.wait_for(|c| *c >= next).await.ok()?;
        let ev = Event::default().id(next.to_string()).data(format!(
            "{{\"id\":\"item-{next}\",\"title\":\"item {next}\"}}"
        ));
        Some((Ok::<_, std::convert::Infallible>(ev), (rx, next + 1)))
    });
    Sse::new(stream)
}

/// What a receiver answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) location: Option<String>,
}

pub(crate) fn reply(status: u16) -> Reply {
    Reply {
        status,
        ..Default::default()
    }
}

/// How a receiver answers the `n`th request (0-based).
pub(crate) type Answer = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) at: Instant,
    pub(crate) id: String,
    pub(crate) timestamp: i64,
    pub(crate) signature: String,
    pub(crate) content_type: String,
    pub(crate) body: String,
    pub(crate) status: u16,
}

/// A local receiver that answers as scripted and records every request.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    inner: Arc<ReceiverInner>,
}

struct ReceiverInner {
    hits: Mutex<Vec<Hit>>,
    answer: Mutex<Answer>,
    delay: Duration,
}

impl Receiver {
    pub(crate) async fn start(
        answer: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> Result<Self, AnyError> {
        Self::with_delay(answer, Duration::ZERO).await
    }

    /// Each answer takes `delay` (so a kill lands mid-request).
    pub(crate) async fn with_delay(
        answer: impl Fn(usize) -> Reply + Send + Sync + 'static,
        delay: Duration,
    ) -> Result<Self, AnyError> {
        let inner = Arc::new(ReceiverInner {
            hits: Mutex::new(Vec::new()),
            answer: Mutex::new(Arc::new(answer)),
            delay,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, inner })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub(crate) fn set(&self, answer: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *lock(&self.inner.answer) = Arc::new(answer);
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        lock(&self.inner.hits).clone()
    }

    /// The ids of the requests answered with a 2xx, in arrival order.
    pub(crate) fn delivered(&self) -> Vec<String> {
        lock(&self.inner.hits)
            .iter()
            .filter(|h| (200..300).contains(&h.status))
            .map(|h| h.id.clone())
            .collect()
    }
}

async fn hook(State(r): State<Arc<ReceiverInner>>, headers: HeaderMap, body: String) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let reply = {
        let mut hits = lock(&r.hits);
        let reply = (lock(&r.answer))(hits.len());
        hits.push(Hit {
            at: Instant::now(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp").parse().unwrap_or(0),
            signature: header("webhook-signature"),
            content_type: header("content-type"),
            body,
            status: reply.status,
        });
        reply
    };
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    let mut res = StatusCode::from_u16(reply.status)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        .into_response();
    if let Some(s) = reply.retry_after {
        if let Ok(v) = s.to_string().parse() {
            res.headers_mut().insert("retry-after", v);
        }
    }
    if let Some(l) = reply.location {
        if let Ok(v) = l.parse() {
            res.headers_mut().insert("location", v);
        }
    }
    res
}

/// A node's files: a config watching the feed, its database.
pub(crate) struct Setup {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) db: PathBuf,
    pub(crate) listen: SocketAddr,
}

impl Setup {
    /// A config with one SSE firehose source (`hooks.fire`, tag `fire`) at `feed`.
    pub(crate) fn new(feed: &Feed) -> Result<Self, AnyError> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("hooks.db");
        let config = dir.path().join("sources.toml");
        std::fs::write(
            &config,
            format!(
                "[engine]\ndatabase = \"{}\"\nretention = \"1h\"\n[fetch]\nallow_private_networks = true\n\
                 [[source]]\nid = \"hooks.fire\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{}/events\"\n\
                 tags = [\"fire\"]\nfields = {{ id = \"/id\", title = \"/title\" }}\n",
                db.display(),
                feed.addr
            ),
        )?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Self {
            _dir: dir,
            config,
            db,
            listen,
        })
    }

    pub(crate) fn start(&self) -> Node {
        start_node(&self.config, self.listen)
    }

    /// `livestrom webhook <args> --config <config>`.
    pub(crate) fn webhook(&self, args: &[&str]) -> Result<Output, AnyError> {
        Ok(Command::new(BIN)
            .arg("webhook")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()?)
    }

    /// `webhook create`, asserting success; the secret.
    pub(crate) fn create(&self, name: &str, url: &str, extra: &[&str]) -> Result<String, AnyError> {
        let mut args = vec!["create", "--name", name, "--url", url];
        args.extend_from_slice(extra);
        let out = self.webhook(&args)?;
        assert!(
            out.status.success(),
            "create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// A `webhook` command that must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String, AnyError> {
        let out = self.webhook(args)?;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// One endpoint as `webhook list --json` shows it.
    pub(crate) fn endpoint(&self, name: &str) -> Result<Value, AnyError> {
        let list: Vec<Value> = serde_json::from_str(&self.ok(&["list", "--json"])?)?;
        list.into_iter()
            .find(|e| e["name"] == name)
            .ok_or_else(|| format!("no endpoint {name}").into())
    }

    /// A key for the node's stream (`admin` too).
    pub(crate) fn key(&self) -> Result<String, AnyError> {
        let out = Command::new(BIN)
            .args([
                "apikey",
                "create",
                "--name",
                "t",
                "--scopes",
                "stream:read,admin",
                "--rate",
                "1000/s",
                "--config",
            ])
            .arg(&self.config)
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }
}

/// The stored events: (id, json), in id order.
pub(crate) fn stored(db: &Path) -> Result<Vec<(String, String)>, AnyError> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT id, json FROM events ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row?;
        out.push((uuid::Uuid::from_slice(&id)?.to_string(), json));
    }
    Ok(out)
}

/// Waits (real time, bounded by [`WAIT`]) until `cond` holds.
pub(crate) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    crate::helpers::wait_for(what, WAIT, || {
        let ok = cond();
        async move { ok }
    })
    .await
}

/// Waits until `n` events are stored.
pub(crate) async fn stored_at_least(db: &Path, n: usize) {
    until(&format!("{n} stored events"), || {
        stored(db).is_ok_and(|s| s.len() >= n)
    })
    .await
}
