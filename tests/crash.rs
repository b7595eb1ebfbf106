//! Crash safety, with the real binary: `livestrom run` ingests a fast local
//! SSE firehose while a real SSE client records every event; the process is
//! killed with SIGKILL at random moments and restarted, `LIVESTROM_CRASH_ROUNDS`
//! times (50 by default; the long version is 1,000). Afterwards:
//! every id the client ever saw is still stored, `PRAGMA integrity_check`
//! is ok, no item is stored twice, the stored items have no gap, the
//! client's ids increase strictly with no duplicate, and its resumes got
//! exactly what is stored.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::helpers::print_log_tail;

const BIN: &str = env!("CARGO_BIN_EXE_livestrom");
const WAIT: Duration = Duration::from_secs(60);

/// Upstream rate of the crash test: one item every this long.
const EVERY: Duration = Duration::from_millis(2);

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The upstream's clock: items 1..=`max()` exist; frozen once `frozen`.
pub(crate) struct Upstream {
    start: Instant,
    /// One item every this long.
    every: Duration,
    frozen: AtomicBool,
    frozen_at: AtomicU64,
}

impl Upstream {
    /// Items from now on, one every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            start: Instant::now(),
            every,
            frozen: AtomicBool::new(false),
            frozen_at: AtomicU64::new(0),
        }
    }

    fn max(&self) -> u64 {
        if self.frozen.load(Ordering::SeqCst) {
            return self.frozen_at.load(Ordering::SeqCst);
        }
        (self.start.elapsed().as_micros() / self.every.as_micros()) as u64
    }

    pub(crate) fn freeze(&self) -> u64 {
        let m = self.max();
        self.frozen_at.store(m, Ordering::SeqCst);
        self.frozen.store(true, Ordering::SeqCst);
        m
    }
}

/// An SSE firehose: items from `Last-Event-ID + 1` up to the clock, then
/// new ones as they come.
pub(crate) async fn firehose(up: Arc<Upstream>) -> SocketAddr {
    firehose_resuming_early(up, 0).await
}

/// [`firehose`] that resumes `overlap` items before the `Last-Event-ID` it
/// is sent (as upstreams that resume by time or page do): only the
/// engine's item state keeps those from being stored twice.
pub(crate) async fn firehose_resuming_early(up: Arc<Upstream>, overlap: u64) -> SocketAddr {
    async fn events(
        State((up, overlap)): State<(Arc<Upstream>, u64)>,
        headers: HeaderMap,
    ) -> impl axum::response::IntoResponse {
        let from = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_sub(overlap)
            + 1;
        let stream = futures::stream::unfold((up, from), |(up, next)| async move {
            while next > up.max() {
                tokio::time::sleep(up.every).await;
            }
            let ev = Event::default().id(next.to_string()).data(format!(
                "{{\"id\":\"item-{next}\",\"title\":\"item {next}\"}}"
            ));
            Some((Ok::<_, std::convert::Infallible>(ev), (up, next + 1)))
        });
        Sse::new(stream)
    }
    let app = Router::new()
        .route("/events", get(events))
        .with_state((up, overlap));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Lines of a node's log (access lines left out) kept for a failing test's report.
const LOG_TAIL: usize = 200;

/// A `livestrom run` child; SIGKILLed on drop. If the test is failing
/// (dropped while panicking), the last lines of its log are printed, so a
/// failure on CI shows what the node said.
pub(crate) struct Node(pub(crate) Child, pub(crate) Arc<Mutex<VecDeque<String>>>);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            if let Ok(mut tail) = self.1.lock() {
                print_log_tail("livestrom run's log", tail.make_contiguous());
            }
        }
    }
}

/// Starts `livestrom run` on `listen` and waits until it listens.
pub(crate) fn start(config: &Path, listen: SocketAddr) -> Node {
    start_with(config, listen, &[])
}

/// [`start`] with more environment variables.
pub(crate) fn start_with(config: &Path, listen: SocketAddr, env: &[(&str, &str)]) -> Node {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", &listen.to_string()])
        .env("LIVESTROM_LOG", "warn,livestrom=info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
    let lines = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on http://") {
                let _ = tx.send(());
            }
            // Access lines would crowd out what matters.
            if line.contains("livestrom::access") {
                continue;
            }
            if let Ok(mut lines) = lines.lock() {
                if lines.len() == LOG_TAIL {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        }
    });
    let node = Node(child, tail);
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("livestrom run never listened: {e}"));
    node
}

/// A random number (std's randomly seeded hasher; no extra crate).
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// What the client got: (id, item number), in arrival order.
pub(crate) type Got = Arc<Mutex<Vec<(uuid::Uuid, u64)>>>;

/// A resuming SSE client: reconnects with `Last-Event-ID` whenever the
/// connection ends, until `stop`.
pub(crate) async fn client(addr: SocketAddr, key: String, got: Got, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::SeqCst) {
        let last = got
            .lock()
            .ok()
            .and_then(|g| g.last().map(|(id, _)| id.to_string()));
        let mut req = http
            .get(format!("http://{addr}/v1/stream"))
            .header("X-API-Key", &key);
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last);
        }
        if let Ok(res) = req.send().await {
            if res.status() == 200 {
                let mut events = res.bytes_stream().eventsource();
                while let Ok(Some(Ok(ev))) =
                    tokio::time::timeout(Duration::from_millis(500), events.next()).await
                {
                    if ev.data.is_empty() {
                        continue;
                    }
                    let Ok(id) = ev.id.parse::<uuid::Uuid>() else {
                        continue;
                    };
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    let n = item_number(&v);
                    if let Ok(mut g) = got.lock() {
                        g.push((id, n));
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }
        }
        // Between reconnects (the server is being restarted): a retry pace,
        // not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The upstream's number of an event's item (`item-N`), 0 if it has none.
pub(crate) fn item_number(event: &serde_json::Value) -> u64 {
    event
        .get("item_id")
        .and_then(|i| i.as_str())
        .and_then(|i| i.strip_prefix("item-"))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0)
}

/// The stored events: (id, item number), in id order.
pub(crate) fn stored(
    db: &Path,
) -> Result<Vec<(uuid::Uuid, u64)>, Box<dyn std::error::Error + Send + Sync>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT id, json FROM events ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) = row?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let n = item_number(&v);
        out.push((uuid::Uuid::from_slice(&id)?, n));
    }
    Ok(out)
}

/// A config for one firehose source at `upstream` with its database in `dir`.
pub(crate) fn write_config(
    dir: &Path,
    upstream: SocketAddr,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let db = dir.join("crash.db");
    let config = dir.join("sources.toml");
    write_firehose_config(&config, &db, upstream)?;
    Ok((config, db))
}

/// Writes `config`: one SSE firehose source `crash.fire` at `upstream`,
/// its database at `db`.
pub(crate) fn write_firehose_config(
    config: &Path,
    db: &Path,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    std::fs::write(
        config,
        format!(
            "[engine]\ndatabase = \"{}\"\nretention = \"1h\"\n[fetch]\nallow_private_networks = true\n\
             [[source]]\nid = \"crash.fire\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{upstream}/events\"\n\
             fields = {{ id = \"/id\", title = \"/title\" }}\n",
            db.display()
        ),
    )
}

/// Mints a key through the CLI.
fn mint_key(config: &Path) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    mint(config, &["--name", "crash", "--rate", "1000/s"])
}

/// Mints a key through the CLI with `args` (name, scopes, …); returns it.
pub(crate) fn mint(
    config: &Path,
    args: &[&str],
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let created = Command::new(BIN)
        .args(["apikey", "create"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()?;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    Ok(String::from_utf8_lossy(&created.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged_and_resumes_exactly() -> TestResult {
    let rounds: u32 = std::env::var("LIVESTROM_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let up = Arc::new(Upstream::new(EVERY));
    let upstream = firehose(up.clone()).await;
    let dir = tempfile::tempdir()?;
    let (config, db) = write_config(dir.path(), upstream)?;
    let key = mint_key(&config)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;

    let got: Got = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut node = start(&config, listen);
    let reader = tokio::spawn(client(listen, key, got.clone(), stop.clone()));
    for round in 0..rounds {
        // Run for a random 50–400 ms, then SIGKILL.
        let run_for = Duration::from_millis(50 + random() % 350);
        tokio::time::sleep(run_for).await;
        node.0.kill()?;
        node.0.wait()?;
        // Every id the client saw is durable, the file is consistent.
        let seen: BTreeSet<uuid::Uuid> = got
            .lock()
            .map(|g| g.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        let kept: BTreeSet<uuid::Uuid> = stored(&db)?.into_iter().map(|(id, _)| id).collect();
        let lost: Vec<_> = seen.difference(&kept).collect();
        assert!(
            lost.is_empty(),
            "round {round}: ids a client saw are gone after kill -9: {lost:?}"
        );
        node = start(&config, listen);
    }
    // Let it catch up with the upstream, then compare everything.
    let last = up.freeze();
    let deadline = Instant::now() + WAIT;
    loop {
        let n = got
            .lock()
            .map(|g| g.last().map(|(_, n)| *n).unwrap_or(0))
            .unwrap_or(0);
        if n >= last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never got item {last} (has {n})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = reader.await;
    drop(node);

    let conn = rusqlite::Connection::open(&db)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    drop(conn);
    let kept = stored(&db)?;
    let items: Vec<u64> = kept.iter().map(|(_, n)| *n).collect();
    let distinct: BTreeSet<u64> = items.iter().copied().collect();
    assert_eq!(distinct.len(), items.len(), "an item was stored twice");
    assert_eq!(
        distinct,
        (1..=last).collect::<BTreeSet<_>>(),
        "stored items have a gap"
    );
    let got = got.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "the client's ids are not strictly increasing (a duplicate or a reorder)"
    );
    // The client connected before item 1 was stored: it got everything.
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "the client's resumes did not get exactly what is stored"
    );
    eprintln!(
        "{rounds} kill -9 rounds, {} events, all checks passed",
        kept.len()
    );
    Ok(())
}

/// Reads the stream, dropping the connection after a random 1–200 events,
/// `drops` times, resuming each time with `Last-Event-ID`; then reads to
/// `until`. Returns what it got.
async fn dropping_client(
    addr: SocketAddr,
    key: &str,
    drops: u32,
    until: u64,
) -> Vec<(uuid::Uuid, u64)> {
    let http = reqwest::Client::new();
    let mut got: Vec<(uuid::Uuid, u64)> = Vec::new();
    let mut dropped = 0;
    let deadline = Instant::now() + WAIT * 2;
    while got.last().map_or(0, |(_, n)| *n) < until {
        assert!(Instant::now() < deadline, "never reached item {until}");
        let mut req = http
            .get(format!("http://{addr}/v1/stream"))
            .header("X-API-Key", key);
        if let Some((id, _)) = got.last() {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let Ok(res) = req.send().await else { continue };
        assert_eq!(res.status(), 200);
        let take = if dropped < drops {
            1 + random() % 200
        } else {
            u64::MAX
        };
        let mut events = res.bytes_stream().eventsource();
        let mut n_here = 0;
        while let Some(Ok(ev)) = events.next().await {
            if ev.data.is_empty() {
                continue;
            }
            let id: uuid::Uuid = ev
                .id
                .parse()
                .unwrap_or_else(|e| panic!("bad id {}: {e}", ev.id));
            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
            let n = v
                .get("item_id")
                .and_then(|i| i.as_str())
                .and_then(|i| i.strip_prefix("item-"))
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            got.push((id, n));
            n_here += 1;
            if n_here >= take || n >= until {
                break;
            }
        }
        // The response is dropped here: the connection closes mid-stream.
        dropped += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropping_100_times_gets_exactly_the_stored_events_in_order() -> TestResult {
    let up = Arc::new(Upstream::new(Duration::from_millis(1)));
    let upstream = firehose(up.clone()).await;
    let dir = tempfile::tempdir()?;
    let (config, db) = write_config(dir.path(), upstream)?;
    let key = mint_key(&config)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let node = start(&config, listen);
    // From "now" on the first connection; exact from there on.
    let got = dropping_client(listen, &key, 100, 10_000).await;
    up.freeze();
    drop(node);
    let kept = stored(&db)?;
    let have: Vec<uuid::Uuid> = got.iter().map(|(id, _)| *id).collect();
    let first = kept
        .iter()
        .position(|(id, _)| Some(id) == have.first())
        .unwrap_or_else(|| panic!("the first id received is not stored"));
    let want: Vec<uuid::Uuid> = kept[first..]
        .iter()
        .map(|(id, _)| *id)
        .take(have.len())
        .collect();
    assert!(got.len() >= 9_000, "got {}", got.len());
    assert_eq!(have.len(), want.len());
    assert!(
        have == want,
        "the union of 100 resumed reads is not exactly the stored events in order"
    );
    Ok(())
}
