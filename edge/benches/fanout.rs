//! Fan-out benchmark of the edge (not a test): many SSE subscribers on
//! 127.0.0.1, measured from a separate client process.
//!
//! `cargo bench -p livestrom-edge --bench fanout` runs the client; it starts
//! this same binary again with `serve` as the server process (store + edge +
//! an event writer driven over stdin), so the server's RSS is measured alone.
//! Scenarios: (a) N all-matching subscribers at 10 events/s, (b) N
//! subscribers each matching ~1% of 1,000 events/s, (c) delivery ceiling,
//! (d) server memory per idle subscriber, (e) replay of a large backlog.
//! Environment: `FANOUT_N` (default 10000), `FANOUT_BACKLOG` (default 1000000),
//! `FANOUT_SECS` (default 10), `FANOUT_ONLY` (scenario letters to run, e.g.
//! `de`; default all; (d) always runs with (a)), `FANOUT_HTTP10=1` (clients
//! speak HTTP/1.0, close-delimited, instead of HTTP/1.1 chunked),
//! `FANOUT_SETTLE` (seconds between the last connect and (d)'s RSS sample,
//! default 2).

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use livestrom_edge::{AppState, Settings};
use livestrom_engine::event::uuid_floor_at;
use livestrom_engine::keys::{self, NewKey};
use livestrom_engine::store::{NewEvent, WriteBatch};
use livestrom_engine::{Bus, SourceType, Store, StreamEvent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The same global allocator as the `livestrom` binary, so the server
/// process measures what production runs.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const KEYS: usize = 8;

#[path = "fanout/measure.rs"]
mod measure;
use measure::{Dechunk, Hist};

fn main() -> BoxResult<()> {
    // Each process holds ~N sockets: raise the soft open-file limit to the
    // hard one (a soft limit of 1024 is common); the server child inherits it.
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    if limit < 10_100 {
        eprintln!(
            "note: open-file limit {limit}; FANOUT_N above ~{} will fail (raise the hard limit)",
            limit.saturating_sub(100)
        );
    }
    let serve = std::env::args().any(|a| a == "serve");
    // The same blocking-pool bound as the `livestrom` binary
    // (`MAX_BLOCKING_THREADS`); `FANOUT_BLOCKING` overrides it.
    let blocking = std::env::var("FANOUT_BLOCKING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().max_blocking_threads(blocking);
    let rt = builder.build()?;
    if serve {
        rt.block_on(server())
    } else {
        rt.block_on(client_main())
    }
}

// ---------------------------------------------------------------- server --

async fn server() -> BoxResult<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let mut keys_out = Vec::new();
    {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        for i in 0..KEYS {
            let mut nk = NewKey::new(format!("bench-{i}"));
            nk.max_streams = keys::MAX_MAX_STREAMS;
            nk.rate = keys::MAX_RATE;
            keys_out.push(keys::create(&conn, &nk)?);
        }
    }
    let store = Store::open(&db, Duration::from_secs(86_400), Bus::new())?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        livestrom_engine::Backend::sqlite(&store),
        Settings {
            keepalive: Duration::from_secs(25),
            cors_origins: vec!["*".into()],
            metrics_token: None,
        },
        shutdown.clone(),
    )
    .await?;
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind("127.0.0.1:0".parse()?)?;
    let listener = sock.listen(4096)?;
    let addr = listener.local_addr()?;
    tokio::spawn(livestrom_edge::serve(
        listener,
        state.clone(),
        shutdown.clone(),
    ));
    println!("READY {addr} {}", keys_out.join(" "));
    std::io::stdout().flush()?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["rss"] => println!("RSS {}", rss_kib()),
            ["subs"] => println!("SUBS {}", state.hub.subscribers()),
            ["write", rate, secs, nsources, batch] => {
                let n = write_at(
                    &store,
                    rate.parse()?,
                    secs.parse()?,
                    nsources.parse()?,
                    batch.parse()?,
                )
                .await?;
                println!("DONE {n}");
            }
            ["backlog", n] => {
                let n: usize = n.parse()?;
                let mut k = 0;
                while k < n {
                    let b = 5000.min(n - k);
                    store
                        .write(WriteBatch {
                            events: (0..b)
                                .map(|i| event(&format!("s{}", (k + i) % 100)))
                                .collect(),
                            ..Default::default()
                        })
                        .await?;
                    k += b;
                }
                println!("DONE {n}");
            }
            ["quit"] | [] => break,
            other => println!("ERR unknown command {other:?}"),
        }
        std::io::stdout().flush()?;
    }
    shutdown.cancel();
    Ok(())
}

fn event(source: &str) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: source.into(),
            source_type: SourceType::Rss,
            url: "https://example.com/articles/2026/07/01/some-article".into(),
            title: "Kommunfullmäktige beslutar om ny budget".into(),
            content: "Budgeten för nästa år innebär satsningar på skola och omsorg, enligt ett pressmeddelande.".into(),
            tags: vec!["kommun".into(), "nyheter".into()],
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: Uuid::now_v7().to_string(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        },
        fingerprint: "fp".into(),
        aliases: vec![],
    }
}

/// Writes `rate` events/s (0 = as fast as possible) for `secs`, in batches,
/// sources round-robin over `nsources`.
async fn write_at(
    store: &Store,
    rate: f64,
    secs: f64,
    nsources: usize,
    batch: usize,
) -> BoxResult<usize> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut n = 0usize;
    let mut tick =
        (rate > 0.0).then(|| tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate)));
    while Instant::now() < end {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let evs = (0..batch)
            .map(|i| event(&format!("s{}", (n + i) % nsources)))
            .collect();
        store
            .write(WriteBatch {
                events: evs,
                ..Default::default()
            })
            .await?;
        n += batch;
    }
    Ok(n)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- client --

#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    connected: AtomicUsize,
    ended: AtomicUsize,
}

struct Server {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    addr: String,
    keys: Vec<String>,
}

impl Server {
    async fn cmd(&mut self, line: &str, want: &str) -> BoxResult<String> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        while let Some(l) = self.out.next_line().await? {
            if let Some(rest) = l.strip_prefix(want) {
                return Ok(rest.trim().to_string());
            }
            eprintln!("server: {l}");
        }
        Err("server exited".into())
    }
}

async fn spawn_server() -> BoxResult<Server> {
    let exe = std::env::current_exe()?;
    // `FANOUT_SERVER_WRAP=heaptrack` (or any profiler taking a command line)
    // runs the server process under it.
    let mut cmd = match std::env::var("FANOUT_SERVER_WRAP") {
        Ok(w) if !w.is_empty() => {
            let mut c = tokio::process::Command::new(w);
            c.arg(exe);
            c
        }
        _ => tokio::process::Command::new(exe),
    };
    let mut child = cmd
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    // A wrapper may print its own lines first.
    let mut ready = out.next_line().await?.ok_or("server did not start")?;
    while !ready.starts_with("READY") && std::env::var_os("FANOUT_SERVER_WRAP").is_some() {
        ready = out.next_line().await?.ok_or("server did not start")?;
    }
    let mut w = ready.split_whitespace();
    if w.next() != Some("READY") {
        return Err(format!("unexpected: {ready}").into());
    }
    let addr = w.next().ok_or("no addr")?.to_string();
    let keys = w.map(str::to_owned).collect();
    Ok(Server {
        child,
        stdin,
        out,
        addr,
        keys,
    })
}

/// One raw SSE client: HTTP/1.1 with chunked framing (what curl and
/// browsers get), or HTTP/1.0 (close-delimited) with `FANOUT_HTTP10=1`.
/// `latency`: parse each event's `emitted_at` into the histogram; otherwise
/// count frames cheaply by newlines (4 per event frame).
async fn sse_client(
    addr: String,
    path: String,
    key: String,
    latency: bool,
    hist: Arc<Hist>,
    c: Arc<Counters>,
) -> BoxResult<()> {
    let http10 = std::env::var_os("FANOUT_HTTP10").is_some_and(|v| v == "1");
    let mut s = TcpStream::connect(&addr).await?;
    s.set_nodelay(true)?;
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    s.write_all(
        format!("GET {path} {version}\r\nHost: bench\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut header_done = false;
    let mut newlines: u64 = 0;
    let mut dechunk = (!http10).then(Dechunk::default);
    let mut body = Vec::with_capacity(16 * 1024);
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            c.ended.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut data = &buf[..n];
        if !header_done {
            pending.extend_from_slice(data);
            let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !pending.starts_with(b"HTTP/1.1 200") && !pending.starts_with(b"HTTP/1.0 200") {
                return Err(
                    format!("bad response: {}", String::from_utf8_lossy(&pending[..p])).into(),
                );
            }
            header_done = true;
            pending.drain(..p + 4);
            c.connected.fetch_add(1, Ordering::Relaxed);
            // The :connected comment has 2 newlines.
            newlines = 0u64.wrapping_sub(2);
            body = std::mem::take(&mut pending);
            data = &[];
        }
        if let Some(d) = dechunk.as_mut() {
            let raw = std::mem::take(&mut body);
            let mut out = raw;
            out.extend_from_slice(data);
            body.clear();
            d.feed(&out, &mut body);
        } else {
            body.extend_from_slice(data);
        }
        handle(&body, latency, &hist, &c, &mut pending, &mut newlines);
        body.clear();
    }
}

fn handle(
    data: &[u8],
    latency: bool,
    hist: &Hist,
    c: &Counters,
    pending: &mut Vec<u8>,
    newlines: &mut u64,
) {
    if !latency {
        let nl = data.iter().filter(|b| **b == b'\n').count() as u64;
        let before = *newlines;
        *newlines = newlines.wrapping_add(nl);
        let frames_before = if (before as i64) < 0 { 0 } else { before / 4 };
        let frames_after = if (*newlines as i64) < 0 {
            0
        } else {
            *newlines / 4
        };
        c.frames
            .fetch_add(frames_after - frames_before, Ordering::Relaxed);
        return;
    }
    pending.extend_from_slice(data);
    let now = Utc::now();
    let mut start = 0;
    while let Some(p) = pending[start..].windows(2).position(|w| w == b"\n\n") {
        let frame = &pending[start..start + p];
        start += p + 2;
        if !frame.starts_with(b"id: ") {
            continue;
        }
        const KEY: &[u8] = b"\"emitted_at\":\"";
        if let Some(i) = frame.windows(KEY.len()).position(|w| w == KEY) {
            let ts = &frame[i + KEY.len()..];
            if let Some(end) = ts.iter().position(|b| *b == b'"') {
                if let Some(t) = std::str::from_utf8(&ts[..end])
                    .ok()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                {
                    hist.record(
                        (now - t.with_timezone(&Utc))
                            .num_microseconds()
                            .unwrap_or(i64::MAX),
                    );
                    c.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    pending.drain(..start);
}

struct Fleet {
    tasks: Vec<tokio::task::JoinHandle<BoxResult<()>>>,
    counters: Arc<Counters>,
}

impl Fleet {
    fn abort(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Connects `n` subscribers in waves (the listen backlog is finite) and
/// waits until all have their 200.
async fn connect(
    addr: &str,
    key: &str,
    n: usize,
    query: impl Fn(usize) -> String,
    latency: bool,
    hist: &Arc<Hist>,
) -> BoxResult<Fleet> {
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(n);
    let wave = 500;
    for i in 0..n {
        let path = format!("/v1/stream?{}", query(i));
        tasks.push(tokio::spawn(sse_client(
            addr.to_string(),
            path,
            key.to_string(),
            latency,
            hist.clone(),
            counters.clone(),
        )));
        if (i + 1) % wave == 0 || i + 1 == n {
            let deadline = Instant::now() + Duration::from_secs(60);
            while counters.connected.load(Ordering::Relaxed) < i + 1 {
                if Instant::now() > deadline {
                    return Err(format!(
                        "only {} of {} connected",
                        counters.connected.load(Ordering::Relaxed),
                        i + 1
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Ok(Fleet { tasks, counters })
}

async fn wait_frames(c: &Counters, want: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let got = c.frames.load(Ordering::Relaxed);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client_main() -> BoxResult<()> {
    let n: usize = std::env::var("FANOUT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let backlog: usize = std::env::var("FANOUT_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let secs: f64 = std::env::var("FANOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let only = std::env::var("FANOUT_ONLY").unwrap_or_else(|_| "abcde".into());
    let run = |c: char| only.contains(c);
    let mut srv = spawn_server().await?;
    let addr = srv.addr.clone();
    let hist = Arc::new(Hist::new());
    println!(
        "fanout bench: N={n} subscribers, {secs} s per rate, backlog {backlog}, server {addr}"
    );

    // (d) memory per idle subscriber, then (a) on the same connections.
    if run('a') || run('d') {
        let rss0: u64 = srv.cmd("rss", "RSS").await?.parse()?;
        let t = Instant::now();
        let fleet = connect(&addr, &srv.keys[0], n, |_| String::new(), true, &hist).await?;
        let connect_s = t.elapsed().as_secs_f64();
        let settle: f64 = std::env::var("FANOUT_SETTLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2.0);
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        let rss1: u64 = srv.cmd("rss", "RSS").await?.parse()?;
        println!(
        "(d) idle subscribers: server RSS {rss0} KiB -> {rss1} KiB, {:.2} KiB per subscriber (connected {n} in {connect_s:.1} s)",
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );

        if run('a') {
            hist.reset();
            let written: u64 = srv
                .cmd(&format!("write 10 {secs} 1 1"), "DONE")
                .await?
                .parse()?;
            let got =
                wait_frames(&fleet.counters, written * n as u64, Duration::from_secs(30)).await;
            let (cnt, p50, p99, max) = hist.summary();
            println!(
        "(a) {n} subs all matching, 10 ev/s: {written} events, {got}/{} deliveries, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({cnt} samples), disconnects {}",
        written * n as u64,
        fleet.counters.ended.load(Ordering::Relaxed)
    );
        }
        fleet.abort();
    }

    // (b) each subscriber matches 1 of 100 sources; 1000 ev/s round-robin.
    if run('b') {
        hist.reset();
        let fleet = connect(
            &addr,
            &srv.keys[1],
            n,
            |i| format!("source=s{}", i % 100),
            true,
            &hist,
        )
        .await?;
        let written: u64 = srv
            .cmd(&format!("write 1000 {secs} 100 10"), "DONE")
            .await?
            .parse()?;
        let want = written * n as u64 / 100;
        let got = wait_frames(&fleet.counters, want, Duration::from_secs(30)).await;
        let (cnt, p50, p99, max) = hist.summary();
        println!(
        "(b) {n} subs each ~1%, 1000 ev/s: {written} events, {got}/{want} deliveries, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({cnt} samples), disconnects {}",
        fleet.counters.ended.load(Ordering::Relaxed)
    );
        fleet.abort();
    }

    // (c) delivery ceiling: all-matching subscribers at rising event rates.
    if run('c') {
        let fleet = connect(&addr, &srv.keys[2], n, |_| String::new(), false, &hist).await?;
        for rate in [25u64, 50, 100, 200] {
            let before = fleet.counters.frames.load(Ordering::Relaxed);
            let ended_before = fleet.counters.ended.load(Ordering::Relaxed);
            let t = Instant::now();
            let batch = (rate / 25).max(1);
            let written: u64 = srv
                .cmd(&format!("write {rate} {secs} 1 {batch}"), "DONE")
                .await?
                .parse()?;
            let alive = (n - fleet.counters.ended.load(Ordering::Relaxed)) as u64;
            let got = wait_frames(
                &fleet.counters,
                before + written * alive,
                Duration::from_secs(20),
            )
            .await
                - before;
            let el = t.elapsed().as_secs_f64();
            let ended = fleet.counters.ended.load(Ordering::Relaxed) - ended_before;
            println!(
            "(c) {rate} ev/s x {n} subs: {got} deliveries in {el:.1} s = {:.0} deliveries/s (offered {:.0}/s), disconnected {ended}",
            got as f64 / el,
            (written * n as u64) as f64 / secs
        );
            if ended > 0 {
                break;
            }
        }
        fleet.abort();
    }

    // (e) replay of a backlog.
    if run('e') {
        let cursor = uuid_floor_at((Utc::now().timestamp_millis() - 1000).max(0) as u64);
        let t = Instant::now();
        srv.cmd(&format!("backlog {backlog}"), "DONE").await?;
        println!(
            "(e) wrote backlog of {backlog} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let c = Arc::new(Counters::default());
        let t = Instant::now();
        let task = tokio::spawn(sse_client(
            addr.clone(),
            format!("/v1/stream?since={cursor}"),
            srv.keys[3].clone(),
            false,
            hist.clone(),
            c.clone(),
        ));
        let got = wait_frames(&c, backlog as u64, Duration::from_secs(600)).await;
        let el = t.elapsed().as_secs_f64();
        println!(
            "(e) replayed {got} events in {el:.2} s = {:.0} events/s",
            got as f64 / el
        );
        task.abort();
    }

    srv.cmd("quit", "NEVER").await.ok();
    let _ = srv.child.wait().await;
    Ok(())
}
