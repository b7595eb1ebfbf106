//! A slow consumer against the real binary: `livestrom run` ingests a
//! 1,000 items/s SSE firehose; one client reads a single event per second
//! (a raw socket with a small receive buffer), another reads at full speed.
//! The slow one is disconnected once its bounded queue overflows (counted as
//! `reason="slow"`), the fast one is never disconnected and gets every
//! event, and the slow one — draining what reached it and resuming with
//! `Last-Event-ID` — ends up with exactly the stored events from where it
//! started, in order. (What it does to the others' latency is measured by
//! `cargo bench --bench cluster_delivery` with `BENCH_SLOW=1`; no timing is
//! asserted here.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::crash::{client, firehose, mint, start, stored, write_config, Got, Upstream};
use crate::helpers::{metric, wait_for, wait_for_value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Generous bound for anything waited on (a slow, shared 2-core box).
const WAIT: Duration = Duration::from_secs(180);

/// `livestrom_stream_disconnects_total{reason}` from `/metrics`.
async fn disconnects(
    http: &reqwest::Client,
    listen: std::net::SocketAddr,
    reason: &str,
) -> Option<f64> {
    let series = format!("livestrom_stream_disconnects_total{{reason=\"{reason}\"}}");
    metric(http, listen, &series).await
}

/// The ids of complete events in `buf` (SSE frames end with a blank line),
/// and how many bytes they took.
fn complete_ids(buf: &[u8]) -> (Vec<uuid::Uuid>, usize) {
    let mut ids = Vec::new();
    let mut used = 0;
    while let Some(end) = buf[used..].windows(2).position(|w| w == b"\n\n") {
        let frame = String::from_utf8_lossy(&buf[used..used + end]);
        if let Some(id) = frame
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .and_then(|v| v.parse().ok())
        {
            ids.push(id);
        }
        used += end + 2;
    }
    (ids, used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_others_are_not_and_it_resumes_losing_nothing() -> TestResult
{
    let up = Arc::new(Upstream::new(Duration::from_millis(1)));
    let upstream = firehose(up.clone()).await;
    let dir = tempfile::tempdir()?;
    let (config, db) = write_config(dir.path(), upstream)?;
    let key = mint(&config, &["--name", "slow", "--rate", "1000/s"])?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _node = start(&config, listen);
    let http = reqwest::Client::new();

    // The fast client (resumes on its own if ever dropped; it must not be).
    let fast: Got = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let fast_task = tokio::spawn(client(listen, key.clone(), fast.clone(), stop.clone()));

    // The slow client: a 4 KiB receive buffer, one event a second.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut slow = socket.connect(listen).await?;
    slow.write_all(
        format!("GET /v1/stream HTTP/1.1\r\nHost: {listen}\r\nX-API-Key: {key}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    let mut slow_ids: Vec<uuid::Uuid> = Vec::new();
    let mut chunk = [0u8; 512];
    let mut head_done = false;
    let mut chunked = false;
    let mut ended = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Read about one event per second until the server gives up on it.
    let started = std::time::Instant::now();
    loop {
        if disconnects(&http, listen, "slow").await.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the slow client was never disconnected"
        );
        tick.tick().await;
        let n = slow.read(&mut chunk).await?;
        if n == 0 {
            ended = true;
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                chunked = head.contains("transfer-encoding: chunked");
                buf.drain(..p + 4);
                head_done = true;
            }
        }
    }
    // Disconnected: drain what reached the socket at full speed, to its end.
    if !ended {
        loop {
            let n = tokio::time::timeout(WAIT, slow.read(&mut chunk)).await??;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    if !head_done {
        let p = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no response head")?;
        chunked = String::from_utf8_lossy(&buf[..p])
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        buf.drain(..p + 4);
    }
    let body = if chunked { dechunk(&buf) } else { buf };
    let (ids, _) = complete_ids(&body);
    slow_ids.extend(ids);
    let first = *slow_ids
        .first()
        .ok_or("the slow client got no event at all")?;
    let received_before = body.len();

    // Resume from the last complete event, at full speed, to the end.
    let last_item = up.freeze();
    let mut resume_from = *slow_ids.last().ok_or("no event")?;
    loop {
        let res = http
            .get(format!("http://{listen}/v1/stream"))
            .header("X-API-Key", &key)
            .header("Last-Event-ID", resume_from.to_string())
            .send()
            .await?;
        assert_eq!(res.status(), 200);
        let mut events = res.bytes_stream().eventsource();
        let mut done = false;
        while let Ok(Some(Ok(ev))) =
            tokio::time::timeout(Duration::from_secs(5), events.next()).await
        {
            if ev.data.is_empty() {
                continue;
            }
            let id: uuid::Uuid = ev.id.parse()?;
            slow_ids.push(id);
            resume_from = id;
            if ev
                .data
                .contains(&format!("\"item_id\":\"item-{last_item}\""))
            {
                done = true;
                break;
            }
        }
        if done {
            break;
        }
    }
    wait_for("the fast client getting the last item", WAIT, || async {
        fast.lock()
            .map(|g| g.last().is_some_and(|(_, n)| *n >= last_item))
            .unwrap_or(false)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = fast_task.await;

    let all: Vec<uuid::Uuid> = stored(&db)?.into_iter().map(|(id, _)| id).collect();
    let want: Vec<uuid::Uuid> = all.iter().copied().filter(|id| *id >= first).collect();
    assert_eq!(
        slow_ids.len(),
        want.len(),
        "the slow client lost or doubled events"
    );
    assert_eq!(
        slow_ids, want,
        "the slow client's events are not the stored ones in order"
    );
    let fast_ids: Vec<uuid::Uuid> = fast
        .lock()
        .map(|g| g.iter().map(|(id, _)| *id).collect())
        .unwrap_or_default();
    let fast_first = *fast_ids.first().ok_or("the fast client got nothing")?;
    let fast_want: Vec<uuid::Uuid> = all.iter().copied().filter(|id| *id >= fast_first).collect();
    assert_eq!(fast_ids, fast_want, "the fast client missed events");
    let slow_drops = wait_for_value("the disconnect counters", WAIT, || async {
        disconnects(&http, listen, "slow").await
    })
    .await;
    assert_eq!(
        slow_drops, 1.0,
        "only the slow client is disconnected as slow"
    );
    eprintln!(
        "slow client: {} bytes reached it before the disconnect; {} events in all",
        received_before,
        slow_ids.len()
    );
    Ok(())
}

/// The payload of an HTTP/1.1 chunked body (a truncated last chunk keeps
/// what arrived).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        raw = &raw[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size {
            break;
        }
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}
