//! A burst of events arriving at once (not a test): the real `livestrom run`
//! process with two streamed firehoses served by this bench on 127.0.0.1 —
//! `bench.steady`, a trickle of `BENCH_RATE` events/s, and `bench.burst`,
//! idle until it sends `BENCH_BURST` events in one go. `BENCH_STEADY_SUBS`
//! subscribers follow the steady source and `BENCH_BURST_SUBS` the burst
//! source. Measured: the process's RSS in steady state and its peak during
//! the burst, how fast the burst is stored (ingest, events/s, from the
//! events' `emitted_at`), every subscriber's latency (the upstream's
//! creation time carried in the event → the client read it) before and
//! during the burst, and that every subscriber saw every event of its
//! source once, in order (ids strictly increasing, sequence without gaps).
//!
//! Run: `cargo bench --bench burst` (builds the release binary first).
//!
//! Environment (defaults in brackets):
//! - `BENCH_LIVESTROM_BIN` — the binary to run instead of this build's
//!   (`target/release/livestrom`), e.g. an older build for a before/after
//!   comparison in one session;
//! - `BENCH_BURST` [100000] — events in the burst;
//! - `BENCH_STEADY_SUBS` [200] — subscribers of the steady source;
//! - `BENCH_BURST_SUBS` [10] — subscribers of the burst source;
//! - `BENCH_RATE` [50] — steady events/s;
//! - `BENCH_STEADY_SECS` [10] — steady phase before the burst (RSS is
//!   sampled over its second half);
//! - `BENCH_AFTER_SECS` [3] — how long the steady trickle is still measured
//!   after every burst subscriber has the whole burst;
//! - `BENCH_TIMEOUT_SECS` [180] — give up on the burst after this long;
//! - `BENCH_PAD` [200] — bytes of padding in each event's content;
//! - `BENCH_LOG` — keep the server's log at this path (default: a
//!   temporary directory, removed at the end);
//! - `BENCH_WARM` [0] — before the steady phase, this many events arrive
//!   at once on a third source, `bench.warm` (no subscribers), and the bench
//!   waits `BENCH_WARM_SETTLE_SECS` [10] after they are stored: the steady
//!   size is then that of a process that has been running under load for a
//!   while (its writer's page cache filled to its bound, as it is after some
//!   minutes of any steady trickle), not of one just started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

mod common;
use common::{bin, env_or, free_addr, now_us, BoxResult, Proc};

/// One upstream SSE event: `{"id":"<p><n>","title":"<p><n>","body":"<created µs> <pad>"}`.
fn sse_event(out: &mut String, prefix: char, n: u64, pad: &str) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "id: {n}\ndata: {{\"id\":\"{prefix}{n}\",\"title\":\"{prefix}{n}\",\"body\":\"{} {pad}\"}}\n\n",
        now_us()
    );
}

fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(tokio_stream_from(rx).map(Ok::<Bytes, std::convert::Infallible>));
    let mut res = Response::new(body);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    res
}

fn tokio_stream_from(rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// What the upstream serves and when.
struct Upstream {
    rate: u64,
    burst: u64,
    pad: String,
    steady_seq: AtomicU64,
    /// Flipped to true to send the burst.
    go: watch::Receiver<bool>,
    /// When the burst's first event was created (µs).
    burst_started_us: AtomicU64,
    /// Events of the warm-up (`/warm`).
    warm: u64,
    /// Flipped to true to send the warm-up.
    warm_go: watch::Receiver<bool>,
}

/// A one-shot upstream: keep-alive comments until `go`, then `n` events
/// (title prefix `prefix`) created up front and written as fast as the
/// reader takes them, then keep-alive comments again. `started_us` gets
/// the first event's creation time.
fn one_shot(
    mut go: watch::Receiver<bool>,
    n: u64,
    prefix: char,
    pad: String,
    started_us: impl FnOnce(u64) + Send + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        while !*go.borrow_and_update() {
            let ping = tokio::time::timeout(Duration::from_secs(5), go.changed());
            match ping.await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
        // All of it exists before the first byte is sent.
        started_us(now_us());
        let mut chunks = Vec::new();
        let mut s = String::new();
        for i in 0..n {
            sse_event(&mut s, prefix, i, &pad);
            if s.len() >= 256 << 10 {
                chunks.push(Bytes::from(std::mem::take(&mut s)));
            }
        }
        chunks.push(Bytes::from(s));
        for c in chunks {
            if tx.send(c).await.is_err() {
                return;
            }
        }
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if tx.send(Bytes::from_static(b": ping\n\n")).await.is_err() {
                return;
            }
        }
    });
    sse_response(rx)
}

/// `/steady`: `rate` events/s; `/burst` and `/warm`: [`one_shot`].
async fn upstream(up: Arc<Upstream>) -> BoxResult<SocketAddr> {
    let steady = up.clone();
    let burst = up.clone();
    let warm = up;
    let app = Router::new()
        .route(
            "/steady",
            get(move || {
                let up = steady.clone();
                async move {
                    let (tx, rx) = mpsc::channel::<Bytes>(64);
                    tokio::spawn(async move {
                        let every = Duration::from_micros(1_000_000 / up.rate.max(1));
                        let mut tick = tokio::time::interval(every);
                        loop {
                            tick.tick().await;
                            let n = up.steady_seq.fetch_add(1, Ordering::SeqCst);
                            let mut s = String::new();
                            sse_event(&mut s, 's', n, &up.pad);
                            if tx.send(Bytes::from(s)).await.is_err() {
                                return;
                            }
                        }
                    });
                    sse_response(rx)
                }
            }),
        )
        .route(
            "/burst",
            get(move || {
                let up = burst.clone();
                async move {
                    let at = up.clone();
                    one_shot(up.go.clone(), up.burst, 'b', up.pad.clone(), move |t| {
                        at.burst_started_us.store(t, Ordering::SeqCst);
                    })
                }
            }),
        )
        .route(
            "/warm",
            get(move || {
                let up = warm.clone();
                async move { one_shot(up.warm_go.clone(), up.warm, 'w', up.pad.clone(), |_| {}) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn config(dir: &Path, upstream: SocketAddr) -> BoxResult<PathBuf> {
    let path = dir.join("burst.toml");
    let source = |id: &str, path: &str| {
        format!(
            "[[source]]\nid = \"{id}\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{upstream}/{path}\"\n\
             fields = {{ id = \"/id\", title = \"/title\", content = \"/body\" }}\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "[engine]\ndatabase = \"{}\"\nretention = \"1h\"\n\
             [fetch]\nallow_private_networks = true\nper_host_rps = 100\nper_host_concurrency = 8\n{}{}{}",
            dir.join("burst.db").display(),
            source("bench.steady", "steady"),
            source("bench.burst", "burst"),
            source("bench.warm", "warm"),
        ),
    )?;
    Ok(path)
}

fn key(config: &Path) -> BoxResult<String> {
    let out = Command::new(bin())
        .args(["apikey", "create", "--name", "bench", "--rate", "10000/s"])
        .args(["--max-streams", "10000", "-c"])
        .arg(config)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn ready(addr: SocketAddr) -> BoxResult<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("edge {addr} not ready").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `VmRSS` and `VmHWM` of a process, KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let r = Rss::read(pid)?;
    Some((r.rss, r.hwm))
}

/// A process's memory from `/proc/PID/status`, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    rss: u64,
    hwm: u64,
    /// Anonymous memory (heap, stacks).
    anon: u64,
    /// Pages of mapped files (the SQLite database through `mmap_size`, the binary).
    file: u64,
}

impl Rss {
    fn read(pid: u32) -> Option<Self> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        };
        Some(Self {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// (created µs, received µs) per event.
    lat: Vec<(u64, u64)>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    events: u64,
    /// Events whose sequence number was not the previous one's + 1.
    out_of_sequence: u64,
    /// Events whose id was not above the previous one's.
    ids_not_increasing: u64,
    /// `emitted_at` of the last burst event, when seen.
    last_emitted_at: Option<String>,
    /// The stream ended before the bench stopped it.
    ended_early: Option<String>,
}

/// The string value of `"key":"…"` in a flat JSON object (no escapes in what the bench sends).
fn json_str<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let at = json.find(&pat)? + pat.len();
    let rest = &json[at..];
    Some(&rest[..rest.find('"')?])
}

/// One subscriber: reads frames until `stop`, or until it has the burst's
/// last event when `until_seq` is set.
async fn subscriber(
    http: reqwest::Client,
    edge: SocketAddr,
    key: String,
    source: &'static str,
    until_seq: Option<u64>,
    connected: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> BoxResult<Seen> {
    let res = http
        .get(format!("http://{edge}/v1/stream?source={source}"))
        .header("X-API-Key", key)
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("stream refused: {}", res.status()).into());
    }
    let mut body = res.bytes_stream();
    let mut seen = Seen::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut last_id = String::new();
    let mut connected = Some(connected);
    loop {
        let chunk = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            c = body.next() => c,
        };
        let chunk = match chunk {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                seen.ended_early = Some(e.to_string());
                break;
            }
            None => {
                seen.ended_early = Some("the server ended the stream".into());
                break;
            }
        };
        let at = now_us();
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = find(&buf[start..], b"\n\n") {
            let frame = std::str::from_utf8(&buf[start..start + end]).unwrap_or("");
            start += end + 2;
            if frame.starts_with(":connected") {
                if let Some(c) = connected.take() {
                    let _ = c.send(()).await;
                }
                continue;
            }
            let (mut id, mut data) = (None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v);
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v);
                }
            }
            let (Some(id), Some(data)) = (id, data) else {
                continue;
            };
            if id <= last_id.as_str() {
                seen.ids_not_increasing += 1;
            }
            last_id.clear();
            last_id.push_str(id);
            let Some(title) = json_str(data, "title") else {
                continue; // a checkpoint or something else without an event
            };
            let seq: u64 = title
                .get(1..)
                .and_then(|t| t.parse().ok())
                .unwrap_or(u64::MAX);
            let created: u64 = json_str(data, "content")
                .and_then(|c| c.split(' ').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(at);
            seen.lat.push((created, at));
            seen.events += 1;
            match seen.last_seq {
                Some(prev) if seq != prev + 1 => seen.out_of_sequence += 1,
                None => seen.first_seq = Some(seq),
                _ => {}
            }
            seen.last_seq = Some(seq);
            if until_seq == Some(seq) {
                seen.last_emitted_at = json_str(data, "emitted_at").map(str::to_owned);
            }
        }
        buf.drain(..start);
        if until_seq.is_some() && seen.last_emitted_at.is_some() {
            break;
        }
    }
    Ok(seen)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Quantile of sorted latencies, in ms.
fn q(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// Pooled p50/p99/max and the worst subscriber's p99 of latencies whose
/// creation time falls in `[from, to)`.
fn latency_line(name: &str, subs: &[Seen], from: u64, to: u64) {
    let mut all = Vec::new();
    let mut worst_p99: f64 = 0.0;
    for s in subs {
        let mut mine: Vec<u64> = s
            .lat
            .iter()
            .filter(|(c, _)| *c >= from && *c < to)
            .map(|(c, r)| r.saturating_sub(*c))
            .collect();
        mine.sort_unstable();
        worst_p99 = worst_p99.max(q(&mine, 0.99));
        all.extend(mine);
    }
    all.sort_unstable();
    println!(
        "  {name:<38} {:>9} deliveries  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  worst subscriber's p99 {:>8.1} ms",
        all.len(),
        q(&all, 0.5),
        q(&all, 0.99),
        q(&all, 1.0),
        worst_p99
    );
}

/// Checks every subscriber of a source saw a gapless, duplicate-free, ordered run.
fn check_order(name: &str, subs: &[Seen], expect: Option<(u64, u64)>) -> bool {
    let mut ok = true;
    let (mut oos, mut ids, mut ended, mut short) = (0, 0, 0, 0);
    for s in subs {
        oos += s.out_of_sequence;
        ids += s.ids_not_increasing;
        if s.ended_early.is_some() {
            ended += 1;
        }
        if let Some((first, count)) = expect {
            if s.first_seq != Some(first) || s.events != count || s.out_of_sequence > 0 {
                short += 1;
            }
        }
    }
    if oos + ids + ended + short > 0 {
        ok = false;
    }
    let example = subs.iter().find_map(|s| s.ended_early.clone());
    println!(
        "  {name:<38} {} subscribers: {} events out of sequence (gap or duplicate), {} ids not increasing, {} streams ended early{}{}",
        subs.len(),
        oos,
        ids,
        ended,
        if expect.is_some() { format!(", {short} without the whole burst") } else { String::new() },
        example.map(|e| format!(" (e.g. {e})")).unwrap_or_default(),
    );
    ok
}

fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp_micros()).ok()
}

fn main() -> BoxResult<()> {
    let burst = env_or("BENCH_BURST", 100_000);
    let steady_subs = env_or("BENCH_STEADY_SUBS", 200);
    let burst_subs = env_or("BENCH_BURST_SUBS", 10);
    let rate = env_or("BENCH_RATE", 50);
    let steady_secs = env_or("BENCH_STEADY_SECS", 10);
    let after_secs = env_or("BENCH_AFTER_SECS", 3);
    let timeout = Duration::from_secs(env_or("BENCH_TIMEOUT_SECS", 180));
    let pad = "x".repeat(env_or("BENCH_PAD", 200) as usize);
    let warm = env_or("BENCH_WARM", 0);
    let warm_settle = Duration::from_secs(env_or("BENCH_WARM_SETTLE_SECS", 10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let (go_tx, go) = watch::channel(false);
        let (warm_tx, warm_go) = watch::channel(false);
        let up = Arc::new(Upstream {
            rate,
            burst,
            pad,
            steady_seq: AtomicU64::new(0),
            go,
            burst_started_us: AtomicU64::new(0),
            warm,
            warm_go,
        });
        let up_addr = upstream(up.clone()).await?;
        let cfg = config(dir.path(), up_addr)?;
        let k = key(&cfg)?;
        let edge = free_addr()?;
        let log_path = std::env::var_os("BENCH_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.path().join("server.log"));
        let node = Proc(
            Command::new(bin())
                .args(["run", "-c"])
                .arg(&cfg)
                .arg("--listen")
                .arg(edge.to_string())
                .env(
                    "LIVESTROM_LOG",
                    std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path)?)
                .spawn()?,
        );
        let pid = node.0.id();
        ready(edge).await?;
        println!(
            "burst bench: {} ({burst} events in one go), {steady_subs} steady subscribers at {rate} events/s, {burst_subs} burst subscribers, server pid {pid}",
            bin()
        );

        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let (stop_tx, stop) = watch::channel(false);
        let (conn_tx, mut conn_rx) = mpsc::channel(1024);
        if warm > 0 {
            let t = tokio::spawn(subscriber(
                http.clone(),
                edge,
                k.clone(),
                "bench.warm",
                Some(warm - 1),
                conn_tx.clone(),
                stop.clone(),
            ));
            tokio::time::timeout(Duration::from_secs(60), conn_rx.recv())
                .await
                .map_err(|_| "the warm-up subscriber did not connect within 60 s")?;
            warm_tx.send(true)?;
            let seen = tokio::time::timeout(timeout, t)
                .await
                .map_err(|_| "the warm-up was not stored in time")???;
            if seen.events != warm {
                return Err(format!("warm-up: {} of {warm} events seen", seen.events).into());
            }
            println!("warm-up: {warm} events stored; settling for {warm_settle:?}");
            tokio::time::sleep(warm_settle).await;
        }

        // Subscribers, all connected before the steady phase starts.
        let mut steady_tasks = Vec::new();
        let mut burst_tasks = Vec::new();
        for i in 0..steady_subs + burst_subs {
            let is_burst = i >= steady_subs;
            let (source, until) = if is_burst {
                ("bench.burst", Some(burst.saturating_sub(1)))
            } else {
                ("bench.steady", None)
            };
            let t = tokio::spawn(subscriber(
                http.clone(),
                edge,
                k.clone(),
                source,
                until,
                conn_tx.clone(),
                stop.clone(),
            ));
            if is_burst {
                burst_tasks.push(t);
            } else {
                steady_tasks.push(t);
            }
        }
        for _ in 0..steady_subs + burst_subs {
            tokio::time::timeout(Duration::from_secs(60), conn_rx.recv())
                .await
                .map_err(|_| "subscribers did not connect within 60 s")?;
        }

        // Steady phase: RSS sampled over its second half.
        let steady_from = now_us();
        let mut steady_rss = Vec::new();
        let half = Instant::now() + Duration::from_secs(steady_secs / 2);
        let steady_end = Instant::now() + Duration::from_secs(steady_secs);
        while Instant::now() < steady_end {
            if Instant::now() >= half {
                if let Some(r) = Rss::read(pid) {
                    steady_rss.push((r.rss, r.anon, r.file));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        steady_rss.sort_unstable();
        let (steady_median, steady_anon, steady_file) =
            steady_rss.get(steady_rss.len() / 2).copied().unwrap_or_default();
        let steady_max = steady_rss.last().map_or(0, |r| r.0);

        // The burst: sample RSS every 20 ms until every burst subscriber has it all.
        let t0 = Instant::now();
        go_tx.send(true)?;
        let mut peak = Rss::default();
        let mut burst_tasks = futures::future::join_all(burst_tasks);
        let burst_seen = loop {
            if let Some(r) = Rss::read(pid) {
                if r.rss > peak.rss {
                    peak = r;
                }
            }
            tokio::select! {
                r = &mut burst_tasks => break r,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if t0.elapsed() > timeout {
                let _ = stop_tx.send(true);
            }
        };
        let burst_done = now_us();
        let burst_start = up.burst_started_us.load(Ordering::SeqCst);
        // The steady trickle a little longer (its latency just after the burst counts too).
        let after_end = Instant::now() + Duration::from_secs(after_secs);
        while Instant::now() < after_end {
            if let Some(r) = Rss::read(pid) {
                if r.rss > peak.rss {
                    peak = r;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hwm = rss_kib(pid).map_or(0, |(_, h)| h);
        let _ = stop_tx.send(true);
        let mut steady_seen = Vec::new();
        for t in steady_tasks {
            steady_seen.push(t.await??);
        }
        let burst_seen: Vec<Seen> = burst_seen.into_iter().map(|r| r.map_err(Into::into).and_then(|s| s)).collect::<BoxResult<_>>()?;
        drop(node);

        // Ingest: the burst's first creation → the last event's commit.
        let committed = burst_seen
            .iter()
            .filter_map(|s| s.last_emitted_at.as_deref().and_then(parse_rfc3339_us))
            .max();
        println!("results:");
        match committed {
            Some(c) => {
                let secs = c.saturating_sub(burst_start) as f64 / 1e6;
                println!(
                    "  ingest of the burst: {burst} events stored in {secs:.2} s = {:.0} events/s (first creation → last emitted_at)",
                    burst as f64 / secs.max(1e-6)
                );
            }
            None => println!("  ingest of the burst: INCOMPLETE (no subscriber saw the last burst event within {timeout:?})"),
        }
        println!(
            "  burst delivered to every burst subscriber in {:.2} s",
            burst_done.saturating_sub(burst_start) as f64 / 1e6
        );
        latency_line("steady subs, steady phase", &steady_seen, steady_from, burst_start);
        latency_line("steady subs, during the burst", &steady_seen, burst_start, burst_done);
        latency_line("burst subs, the burst", &burst_seen, burst_start, u64::MAX);
        println!(
            "  RSS: steady {steady_median} KiB (median; max {steady_max}), peak during the burst {} KiB (sampled every 20 ms), VmHWM {hwm} KiB; peak / steady = {:.2}× (VmHWM / steady {:.2}×)",
            peak.rss,
            peak.rss as f64 / steady_median.max(1) as f64,
            hwm as f64 / steady_median.max(1) as f64
        );
        println!(
            "       anonymous / mapped files: steady {steady_anon} / {steady_file} KiB, at the peak {} / {} KiB",
            peak.anon, peak.file
        );
        let a = check_order("order, steady subs", &steady_seen, None);
        let b = check_order("order, burst subs", &burst_seen, Some((0, burst)));
        println!("  every subscriber saw every event once, in order: {}", if a && b { "yes" } else { "NO" });
        if std::env::var_os("BENCH_LOG").is_some() {
            println!("  server log: {}", log_path.display());
        }
        Ok(())
    })
}
