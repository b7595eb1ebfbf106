//! The whole cluster as real processes: two engines, two edges, one
//! nats-server and a local feed that keeps growing. A client reads from
//! edge A; edge A is killed (SIGKILL) mid-stream and the client resumes on
//! edge B with `Last-Event-ID`; then the engine holding the source is
//! killed and the other takes it over. The union of what the client got is
//! every item, each once, ids increasing. Finally a key revoked through
//! the CLI is refused by both edges.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use livestrom_engine::StreamEvent;
use tokio::time::Instant;

use super::failover::{grow_every, growing_feed, holder_pid, start_node, write_config};
use super::nats::{start_nats, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_livestrom");

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until the edge at `addr` answers `/healthz`.
async fn ready(http: &reqwest::Client, addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "edge {addr} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decides, after each event, whether a read has what it waited for.
type Until<'a> = dyn FnMut(&[(String, StreamEvent)]) -> bool + 'a;

/// The item number of an event.
fn item(e: &StreamEvent) -> u64 {
    e.item_id
        .strip_prefix("item-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected item {}", e.item_id))
}

/// Reads `addr`'s stream from `last` until `until` says stop or the
/// connection ends; appends what it got. Returns true if it ended by `until`.
async fn read(
    http: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    got: &mut Vec<(String, StreamEvent)>,
    until: &mut Until<'_>,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let mut req = http
        .get(format!("http://{addr}/v1/stream"))
        .header("X-API-Key", key);
    if let Some((id, _)) = got.last() {
        req = req.header("Last-Event-ID", id.as_str());
    }
    let res = req.send().await?;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let mut events = res.bytes_stream().eventsource();
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { return Ok(false) };
        if ev.event == "error" {
            return Ok(false);
        }
        if ev.data.is_empty() {
            continue;
        }
        let e: StreamEvent = serde_json::from_str(&ev.data)?;
        assert_eq!(ev.id, e.id.to_string(), "the SSE id is the event's id");
        got.push((ev.id, e));
        if until(got) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_edge_and_survives_an_engine_failover() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let count = Arc::new(AtomicU64::new(3));
    let upstream = growing_feed(count.clone(), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    write_config(&config, &nats.url, upstream)?;
    let created = Command::new(BIN)
        .args(["apikey", "create", "--name", "e2e", "--rate", "100/s", "-c"])
        .arg(&config)
        .output()?;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();

    let (edge_a, edge_b) = (free_addr(), free_addr());
    let mut a = start_node(
        &config,
        "edge",
        Some(edge_a),
        &dir.path().join("edge-a.log"),
    );
    let _b = start_node(
        &config,
        "edge",
        Some(edge_b),
        &dir.path().join("edge-b.log"),
    );
    let e1 = start_node(&config, "engine", None, &dir.path().join("engine-1.log"));
    let e2 = start_node(&config, "engine", None, &dir.path().join("engine-2.log"));
    let mut engines = vec![e1, e2];
    let http = reqwest::Client::new();
    ready(&http, edge_a).await;
    ready(&http, edge_b).await;
    let js = jetstream::new(async_nats::connect(&nats.url).await?);

    // The feed grows by one item every 250 ms for the whole test.
    let grower = grow_every(count.clone(), Duration::from_millis(250));

    // On edge A until 8 events arrived, then edge A dies mid-stream.
    let mut got = Vec::new();
    let mut first_eight = |g: &[(String, StreamEvent)]| g.len() >= 8;
    let reader = tokio::time::timeout(WAIT, read(&http, edge_a, &key, &mut got, &mut first_eight));
    assert!(reader.await??, "edge A's stream ended early");
    a.child.kill()?;
    a.child.wait()?;

    // Resume on edge B from the last id; the engine holding the source
    // dies while the client reads.
    let pid = holder_pid(&js, "grow.feed")
        .await
        .unwrap_or_else(|| panic!("no engine holds the source"));
    let idx = engines
        .iter()
        .position(|e| e.child.id() == pid)
        .unwrap_or_else(|| panic!("the holder is not one of the engines"));
    let mut victim = engines.remove(idx);
    let seen_before = got.len();
    let mut killed_at = None;
    let count_now = count.clone();
    let mut kill_the_holder = |g: &[(String, StreamEvent)]| {
        if killed_at.is_none() && g.len() >= seen_before + 4 {
            let _ = victim.child.kill();
            let _ = victim.child.wait();
            killed_at = Some(count_now.load(Ordering::SeqCst));
        }
        killed_at.is_some_and(|k| g.last().is_some_and(|(_, e)| item(e) > k + 8))
    };
    let done = tokio::time::timeout(
        WAIT * 2,
        read(&http, edge_b, &key, &mut got, &mut kill_the_holder),
    );
    assert!(done.await??, "edge B's stream ended early");
    grower.abort();
    let last = count.load(Ordering::SeqCst);
    let mut through_last =
        |g: &[(String, StreamEvent)]| g.last().is_some_and(|(_, e)| item(e) >= last);
    let tail = tokio::time::timeout(WAIT, read(&http, edge_b, &key, &mut got, &mut through_last));
    assert!(tail.await??, "the last item never arrived");

    // Every item from the first one received to the last, each once, in
    // order, ids increasing.
    let items: Vec<u64> = got.iter().map(|(_, e)| item(e)).collect();
    let first = items[0];
    let mut sorted = items.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        items.len(),
        "an item arrived twice: {items:?}"
    );
    assert_eq!(
        sorted,
        (first..=last).collect::<Vec<_>>(),
        "a gap: {items:?}"
    );
    let ids: Vec<uuid::Uuid> = got.iter().map(|(_, e)| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");

    // Revoked through the CLI: both edges (A restarted) refuse the key.
    let _a = start_node(
        &config,
        "edge",
        Some(edge_a),
        &dir.path().join("edge-a2.log"),
    );
    ready(&http, edge_a).await;
    for edge in [edge_a, edge_b] {
        let r = http
            .get(format!("http://{edge}/v1/whoami"))
            .header("X-API-Key", &key)
            .send()
            .await?;
        assert_eq!(r.status(), 200, "edge {edge} before the revoke");
    }
    let revoked_at = Instant::now();
    let out = Command::new(BIN)
        .args(["apikey", "revoke", "e2e", "-c"])
        .arg(&config)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for edge in [edge_a, edge_b] {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = http
                .get(format!("http://{edge}/v1/whoami"))
                .header("X-API-Key", &key)
                .send()
                .await?;
            if r.status() == 403 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "edge {edge} still accepts a revoked key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("revoked key refused after {:?}", revoked_at.elapsed());
    Ok(())
}
