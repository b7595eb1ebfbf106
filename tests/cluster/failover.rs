//! Several engines on one JetStream, as real processes: a local upstream
//! whose feed grows while they poll it; the engine holding the source is
//! killed with SIGKILL, the other takes the source over within the lease
//! TTL, and the stream ends up holding every item exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use livestrom_engine::StreamEvent;
use tokio::time::Instant;

use super::nats::{start_nats, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_livestrom");

/// Items the feed shows at once (older ones scroll off, as in real feeds):
/// 50 s of growth, longer than any outage the tests cause.
const WINDOW: u64 = 250;

/// A feed whose newest item is `count`; `count` grows while the test
/// runs. `requests` counts the polls.
pub(crate) async fn growing_feed(count: Arc<AtomicU64>, requests: Arc<AtomicU64>) -> SocketAddr {
    async fn feed(
        State((count, requests)): State<(Arc<AtomicU64>, Arc<AtomicU64>)>,
    ) -> ([(&'static str, &'static str); 1], String) {
        requests.fetch_add(1, Ordering::SeqCst);
        let n = count.load(Ordering::SeqCst);
        let items: String = (n.saturating_sub(WINDOW) + 1..=n)
            .rev()
            .map(|i| {
                format!(
                    "<item><title>Item {i}</title><link>http://feed.test/i/{i}</link><guid>item-{i}</guid><description>body {i}</description></item>"
                )
            })
            .collect();
        (
            [("content-type", "application/rss+xml")],
            format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>grow</title><link>http://feed.test/</link><description>d</description>{items}</channel></rss>"),
        )
    }
    let app = Router::new()
        .route("/feed.xml", get(feed))
        .with_state((count, requests));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A `livestrom run --role <role>` child; killed (SIGKILL) on drop.
pub(crate) struct Node {
    pub(crate) child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `livestrom run` with `config` in `role`, its log in `log`.
pub(crate) fn start_node(
    config: &Path,
    role: &str,
    listen: Option<SocketAddr>,
    log: &Path,
) -> Node {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("log file: {e}"));
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--role", role, "-c"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(l) = listen {
        cmd.arg("--listen").arg(l.to_string());
    }
    Node {
        child: cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}")),
    }
}

/// Every event in the stream, in stream order.
pub(crate) async fn stream_events(
    js: &jetstream::Context,
) -> Result<Vec<(u64, StreamEvent)>, async_nats::Error> {
    let stream = js.get_stream("LIVESTROM").await?;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: "LIVESTROM.ev.>".into(),
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    if c.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut msgs = c.messages().await?;
    while let Some(m) = msgs.next().await {
        let m = m?;
        let info = m.info()?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        out.push((seq, serde_json::from_slice(&m.payload)?));
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}

/// The newest item number in the stream (0: none).
pub(crate) async fn newest(js: &jetstream::Context) -> u64 {
    newest_in(&stream_events(js).await.unwrap_or_default())
}

/// The newest item number among `events` (0: none).
fn newest_in(events: &[(u64, StreamEvent)]) -> u64 {
    events
        .iter()
        .filter_map(|(_, e)| e.item_id.strip_prefix("item-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Waits (at most `within`) until the stream holds item `n` or a later
/// one; panics otherwise with `what`, the newest item read, the last read
/// error and the end of each of `logs` (the nodes' logs).
pub(crate) async fn wait_for_item(
    js: &jetstream::Context,
    n: u64,
    within: Duration,
    what: &str,
    logs: &[&Path],
) {
    let deadline = Instant::now() + within;
    let mut seen = 0;
    loop {
        let error = match stream_events(js).await {
            Ok(events) => {
                seen = newest_in(&events);
                None
            }
            Err(e) => Some(e.to_string()),
        };
        if seen >= n {
            return;
        }
        if Instant::now() >= deadline {
            let tails: String = logs
                .iter()
                .map(|l| format!("\n--- end of {} ---\n{}", l.display(), tail(l, 40)))
                .collect();
            panic!(
                "{what} (newest item read: {seen}, wanted {n}; last read error: {error:?}){tails}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last `lines` lines of a file (or why it cannot be read).
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// Grows the feed by one item every `period` until aborted.
pub(crate) fn grow_every(count: Arc<AtomicU64>, period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// The pid of the engine holding `source`'s lease, from the leases and
/// nodes buckets.
pub(crate) async fn holder_pid(js: &jetstream::Context, source: &str) -> Option<u32> {
    let leases = js.get_key_value("LIVESTROM_LEASES").await.ok()?;
    let holder = leases.get(source).await.ok()??;
    let holder = String::from_utf8_lossy(&holder).into_owned();
    let nodes = js.get_key_value("LIVESTROM_NODES").await.ok()?;
    let node = nodes.get(format!("engine.{holder}")).await.ok()??;
    let v: serde_json::Value = serde_json::from_slice(&node).ok()?;
    v.get("pid")?.as_u64().map(|p| p as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_engine_that_holds_a_source_loses_and_doubles_nothing() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let count = Arc::new(AtomicU64::new(5));
    let upstream = growing_feed(count.clone(), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    write_config(&config, &nats.url, upstream)?;
    let mut a = start_node(&config, "engine", None, &dir.path().join("a.log"));
    let mut b = start_node(&config, "engine", None, &dir.path().join("b.log"));
    let js = jetstream::new(async_nats::connect(&nats.url).await?);

    // The feed grows by one item every 200 ms for the whole test.
    let grower = grow_every(count.clone(), Duration::from_millis(200));
    let deadline = Instant::now() + WAIT;
    // Wait for the first events and a holder.
    let pid = loop {
        if let Some(pid) = holder_pid(&js, "grow.feed").await {
            if !stream_events(&js).await?.is_empty() {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "no engine ever published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (victim, survivor) = if pid == a.child.id() {
        (&mut a, &mut b)
    } else {
        assert_eq!(pid, b.child.id(), "the holder is neither engine");
        (&mut b, &mut a)
    };
    victim.child.kill()?; // SIGKILL
    victim.child.wait()?;
    let killed_at = count.load(Ordering::SeqCst);

    // The survivor takes over and publishes items that appeared later.
    let deadline = Instant::now() + WAIT;
    loop {
        let events = stream_events(&js).await?;
        let newest = events
            .iter()
            .filter_map(|(_, e)| e.item_id.strip_prefix("item-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        if newest > killed_at + 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the surviving engine never took over (newest item {newest}, killed at {killed_at})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        holder_pid(&js, "grow.feed").await,
        Some(survivor.child.id()),
        "the survivor holds the lease"
    );
    // Stop growing; let the survivor publish everything up to the last item.
    grower.abort();
    let last = count.load(Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    let events = loop {
        let events = stream_events(&js).await?;
        let has_last = events
            .iter()
            .any(|(_, e)| e.item_id == format!("item-{last}"));
        if has_last {
            break events;
        }
        assert!(Instant::now() < deadline, "item {last} never published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_each_item_once(&events, last);

    // What an operator sees: the survivor holds the lease, the source is ok.
    let leases = js.get_key_value("LIVESTROM_LEASES").await?;
    let holder = leases
        .get("grow.feed")
        .await?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let status = Command::new(BIN)
        .args(["cluster", "status", "-c"])
        .arg(&config)
        .output()?;
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(out.contains("stream     LIVESTROM"), "{out}");
    let lease_line = out
        .lines()
        .find(|l| l.starts_with("grow.feed"))
        .unwrap_or_default();
    assert!(!holder.is_empty() && lease_line.ends_with(&holder), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("engine") && l.contains(&holder)),
        "{out}"
    );
    let list = Command::new(BIN)
        .args(["sources", "list", "-c"])
        .arg(&config)
        .output()?;
    let out = String::from_utf8_lossy(&list.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("grow.feed"))
        .unwrap_or_default();
    assert!(line.contains(" ok "), "{out}");
    Ok(())
}

/// A cluster config for one growing feed, lease 4 s (renewals keep up on a
/// loaded 2-core machine running the whole suite), polled every second.
pub(crate) fn write_config(path: &Path, nats: &str, upstream: SocketAddr) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            r#"
[engine]
retention = "1h"
[fetch]
allow_private_networks = true
per_host_rps = 100
[cluster]
nats = ["{nats}"]
lease = "4s"
[tiers]
rss = "1s"
[[source]]
id = "grow.feed"
type = "rss"
url = "http://{upstream}/feed.xml"
"#
        ),
    )
}

/// Stops the feed growing, waits for its last item and checks every item
/// was stored exactly once.
pub(crate) async fn stop_growing_and_check(
    js: &jetstream::Context,
    grower: tokio::task::JoinHandle<()>,
    count: &AtomicU64,
    logs: &[&Path],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    grower.abort();
    let last = count.load(Ordering::SeqCst);
    wait_for_item(
        js,
        last,
        WAIT,
        &format!("item {last} never published"),
        logs,
    )
    .await;
    assert_each_item_once(&stream_events(js).await?, last);
    Ok(())
}

/// Every item from the first stored one to `last` is stored exactly once,
/// as version 1.
pub(crate) fn assert_each_item_once(events: &[(u64, StreamEvent)], last: u64) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, e) in events {
        assert_eq!(e.version, 1, "an unchanged item got a new version: {e:?}");
        let n: u64 = e
            .item_id
            .strip_prefix("item-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected item id {}", e.item_id));
        *seen.entry(n).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(doubled.is_empty(), "items stored twice: {doubled:?}");
    let first = *seen.keys().next().unwrap_or(&0);
    let missing: Vec<u64> = (first..=last).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "items lost across the failover: {missing:?}"
    );
}

/// Sends `signal` (e.g. `-STOP`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {signal} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_paused_past_its_lease_wakes_up_without_doubling_or_losing() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let count = Arc::new(AtomicU64::new(5));
    let upstream = growing_feed(count.clone(), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    write_config(&config, &nats.url, upstream)?;
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let logs = [a_log.as_path(), b_log.as_path()];
    let _a = start_node(&config, "engine", None, &a_log);
    let _b = start_node(&config, "engine", None, &b_log);
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let grower = grow_every(count.clone(), Duration::from_millis(200));
    let deadline = Instant::now() + WAIT;
    let pid = loop {
        if let Some(pid) = holder_pid(&js, "grow.feed").await {
            if newest(&js).await >= 5 {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "no engine ever published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The holder freezes (SIGSTOP) mid-work until the other engine has
    // taken the source over (which needs the lease TTL to pass) and
    // published ten more items.
    signal(pid, "-STOP");
    let stopped_at = count.load(Ordering::SeqCst);
    wait_for_item(
        &js,
        stopped_at + 10,
        WAIT,
        "nobody took over from the paused engine",
        &logs,
    )
    .await;
    // It wakes up with its old view of the lease and whatever poll it was in.
    signal(pid, "-CONT");
    let woke_at = count.load(Ordering::SeqCst);
    wait_for_item(
        &js,
        woke_at + 15,
        WAIT,
        "publishing stopped after the wake-up",
        &logs,
    )
    .await;
    stop_growing_and_check(&js, grower, &count, &logs).await
}
