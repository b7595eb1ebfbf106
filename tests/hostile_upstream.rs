//! Hostile upstreams against the real binary (`livestrom run`):
//! - compression bombs (gzip, deflate and brotli bodies that expand to
//!   10 GiB), a 1 GiB body, a Content-Length declaring 1 GiB and one that
//!   lies (declares 1,000 bytes and sends without end): each poll is cut off
//!   at `fetch.max_body` (or its declared length) with the reason on the
//!   source — a brotli bomb whose window is larger than the cap is refused
//!   from its header instead — and the process's peak memory grows by less
//!   than twice the cap;
//! - slowloris upstreams (one byte every 5 s, in the head or in the body):
//!   each poll is aborted by `fetch.timeout` with the reason on the source,
//!   the upstream sees every connection closed, and once the sources are
//!   removed the runtime is back to the tasks it had before them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::crash::{mint, start};
use crate::helpers::{metric, wait_for, wait_for_value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Generous bound for anything waited on (a slow, shared 2-core box).
const WAIT: Duration = Duration::from_secs(120);
/// What every bomb expands to.
const EXPANDED: u64 = 10 << 30;
/// Input bytes behind each repeated unit of a bomb.
const UNIT: usize = 1 << 20;
/// `fetch.max_body` of these tests (the default).
const CAP: u64 = 10_000_000;

/// A compressed body expanding to [`EXPANDED`] bytes of `a`: `prefix`, then
/// `unit` repeated. The encoder's output for one more megabyte of input is
/// the same bytes once it reaches a steady state, so the body costs the
/// server nothing to produce however large it claims to be. It ends without
/// the format's trailer: a client that read it all would see a truncated
/// stream, but a client that obeys its cap stops long before.
struct Bomb {
    prefix: Bytes,
    unit: Bytes,
    units: u64,
}

/// A `Write` that collects what an encoder emits, so it can be taken out
/// after each flush.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// Builds the bomb for `encoding` (`gzip`, `deflate` — zlib-wrapped, as HTTP
/// means it — or `br`, whose stream declares a window of `1 << lgwin`
/// bytes) and checks it: decoding the prefix and three units gives exactly
/// that many megabytes of `a`.
fn bomb(encoding: &str, lgwin: u32) -> Result<Bomb, Box<dyn std::error::Error + Send + Sync>> {
    let sink = Sink::default();
    let mut enc: Box<dyn Write> = match encoding {
        "gzip" => Box::new(flate2::write::GzEncoder::new(
            sink.clone(),
            flate2::Compression::best(),
        )),
        "deflate" => Box::new(flate2::write::ZlibEncoder::new(
            sink.clone(),
            flate2::Compression::best(),
        )),
        "br" => Box::new(brotli::CompressorWriter::new(
            sink.clone(),
            64 * 1024,
            5,
            lgwin,
        )),
        other => return Err(format!("no bomb for {other}").into()),
    };
    let input = vec![b'a'; UNIT];
    let mut prefix = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    let mut fed = 0u64;
    let unit = loop {
        enc.write_all(&input)?;
        enc.flush()?;
        fed += 1;
        let out = sink.take();
        if previous.as_ref() == Some(&out) {
            break out;
        }
        if let Some(p) = previous.take() {
            prefix.extend_from_slice(&p);
        }
        previous = Some(out);
        if fed > 16 {
            return Err(format!("{encoding}: the encoder never reached a steady state").into());
        }
    };
    // `previous` (equal to `unit`) was fed but is not in the prefix: it is
    // the first repetition.
    let fed_before_units = fed - 2;
    let bomb = Bomb {
        prefix: Bytes::from(prefix),
        unit: Bytes::from(unit),
        units: EXPANDED / UNIT as u64 - fed_before_units,
    };
    // The bytes are what they claim to be.
    let mut sample = bomb.prefix.to_vec();
    for _ in 0..3 {
        sample.extend_from_slice(&bomb.unit);
    }
    let want = (fed_before_units as usize + 3) * UNIT;
    let mut decoded = vec![0u8; want];
    let mut reader: Box<dyn Read> = match encoding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(&sample[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&sample[..])),
        _ => Box::new(brotli::Decompressor::new(&sample[..], 64 * 1024)),
    };
    reader.read_exact(&mut decoded)?;
    assert!(
        decoded.iter().all(|&b| b == b'a'),
        "{encoding} bomb decodes to something else"
    );
    let compressed = bomb.prefix.len() as u64 + bomb.unit.len() as u64 * bomb.units;
    let window = if encoding == "br" {
        format!(", a {} MiB window", (1u64 << lgwin) >> 20)
    } else {
        String::new()
    };
    eprintln!(
        "{encoding} bomb{window}: {compressed} bytes expanding to {EXPANDED} ({}:1)",
        EXPANDED / compressed.max(1)
    );
    Ok(bomb)
}

/// The bomb server: each route waits for the gate, so the test can read the
/// process's memory before the first body arrives.
#[derive(Clone)]
struct Bombs {
    gate: watch::Receiver<bool>,
    arrived: Arc<AtomicUsize>,
    gzip: Arc<Bomb>,
    deflate: Arc<Bomb>,
    /// A 4 MiB window (lgwin 22, what most encoders use): under the cap.
    br: Arc<Bomb>,
    /// A 16 MiB window (lgwin 24, the largest RFC 7932 allows): over the cap.
    br_wide: Arc<Bomb>,
}

impl Bombs {
    async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
    }
}

fn bomb_response(b: &Bomb, encoding: &'static str) -> Response {
    let prefix = b.prefix.clone();
    let unit = b.unit.clone();
    let chunks = std::iter::once(prefix).chain(std::iter::repeat_n(unit, b.units as usize));
    let body = Body::from_stream(futures::stream::iter(chunks.map(Ok::<_, std::io::Error>)));
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml"),
            (header::CONTENT_ENCODING, encoding),
        ],
        body,
    )
        .into_response()
}

/// 1 GiB of `x`, streamed (chunked, no length).
fn gibibyte() -> Body {
    let chunk = Bytes::from(vec![b'x'; UNIT]);
    Body::from_stream(futures::stream::iter(
        std::iter::repeat_n(chunk, 1024).map(Ok::<_, std::io::Error>),
    ))
}

async fn bomb_server(bombs: Bombs) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/gzip",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                bomb_response(&s.gzip, "gzip")
            }),
        )
        .route(
            "/deflate",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                bomb_response(&s.deflate, "deflate")
            }),
        )
        .route(
            "/br",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                bomb_response(&s.br, "br")
            }),
        )
        .route(
            "/br-wide",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                bomb_response(&s.br_wide, "br")
            }),
        )
        .route(
            "/huge",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                ([(header::CONTENT_TYPE, "application/rss+xml")], gibibyte()).into_response()
            }),
        )
        .route(
            "/declared",
            get(|State(s): State<Bombs>| async move {
                s.pass().await;
                (
                    [
                        (header::CONTENT_TYPE, "application/rss+xml".to_owned()),
                        (header::CONTENT_LENGTH, (1u64 << 30).to_string()),
                    ],
                    gibibyte(),
                )
                    .into_response()
            }),
        )
        .with_state(bombs);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Reads a request head (up to the blank line); false if the client went away.
async fn read_head(sock: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return false;
        }
    }
    true
}

/// A server whose Content-Length says 1,000 bytes and which then sends
/// without end, until the client closes.
async fn lying_server(bombs: Bombs) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let bombs = bombs.clone();
            tokio::spawn(async move {
                if !read_head(&mut sock).await {
                    return;
                }
                bombs.pass().await;
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 1000\r\n\r\n";
                if sock.write_all(head).await.is_err() {
                    return;
                }
                let junk = vec![b'x'; 64 * 1024];
                while sock.write_all(&junk).await.is_ok() {}
            });
        }
    });
    Ok(addr)
}

/// What a slowloris upstream has seen: connections accepted, and closed by
/// the client.
#[derive(Default)]
struct Loris {
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

/// A slowloris upstream: `/head` trickles the response head one byte every
/// 5 s, `/body` sends the head at once and trickles the body. Each
/// connection counts as closed when a read sees the client hang up.
async fn slowloris(seen: Arc<Loris>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            seen.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body_slow = head.starts_with(b"GET /body");
                let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n<rss version=\"2.0\"><channel><title>slow</title>";
                let (fast, slow) = if body_slow {
                    response.split_at(response.len() - 20)
                } else {
                    response.split_at(0)
                };
                if sock.write_all(fast).await.is_err() {
                    seen.closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                // One byte every 5 s, and watch for the client hanging up
                // in between (a read of 0 bytes).
                let mut rest = slow.iter().chain(std::iter::repeat(&b' '));
                loop {
                    tokio::select! {
                        r = sock.read(&mut buf) => {
                            if matches!(r, Ok(0) | Err(_)) {
                                seen.closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        () = tokio::time::sleep(Duration::from_secs(5)) => {
                            let b = rest.next().copied().unwrap_or(b' ');
                            if sock.write_all(&[b]).await.is_err() {
                                seen.closed.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// `(VmHWM, VmRSS)` of `pid` in bytes: its peak and current resident size.
fn memory(pid: u32) -> Result<(u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Ok((
        field("VmHWM:").ok_or("no VmHWM")?,
        field("VmRSS:").ok_or("no VmRSS")?,
    ))
}

/// The sources' `(id, consecutive_failures, last_error)` from `/v1/admin/sources`.
async fn source_errors(
    http: &reqwest::Client,
    listen: SocketAddr,
    key: &str,
) -> Vec<(String, u64, String)> {
    let Ok(res) = http
        .get(format!("http://{listen}/v1/admin/sources"))
        .header("X-API-Key", key)
        .send()
        .await
    else {
        return Vec::new();
    };
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    body["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["source_id"].as_str().unwrap_or_default().to_owned(),
                        s["consecutive_failures"].as_u64().unwrap_or(0),
                        s["last_error"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every source whose id starts with `prefix` (`count` of them)
/// failed at least once; returns their errors by id.
async fn wait_failed(
    http: &reqwest::Client,
    listen: SocketAddr,
    key: &str,
    prefix: &str,
    count: usize,
) -> Vec<(String, String)> {
    wait_for_value(
        &format!("all {count} `{prefix}` sources failed"),
        WAIT,
        || async {
            let failed: Vec<(String, String)> = source_errors(http, listen, key)
                .await
                .into_iter()
                .filter(|(id, n, _)| id.starts_with(prefix) && *n >= 1)
                .map(|(id, _, e)| (id, e))
                .collect();
            (failed.len() == count).then_some(failed)
        },
    )
    .await
}

fn source(id: &str, url: &str) -> String {
    format!("[[source]]\nid = \"{id}\"\ntype = \"rss\"\nurl = \"{url}\"\ninterval = \"1h\"\n")
}

fn config_head(dir: &Path, timeout: &str) -> String {
    format!(
        "[engine]\ndatabase = \"{}\"\n[fetch]\nallow_private_networks = true\ntimeout = \"{timeout}\"\n\
         max_body = {CAP}\nper_host_rps = 1000\nper_host_concurrency = 1\n",
        dir.join("hostile.db").display()
    )
}

/// Serves the bombs named by `ids` (of `bomb.gzip`, `bomb.deflate`,
/// `bomb.brotli`, `bomb.brotli-wide`, `bomb.huge`, `bomb.declared`,
/// `bomb.lying`) to a fresh `livestrom run`, one fetch at a time
/// (`per_host_concurrency = 1`, all on 127.0.0.1); checks each failed with
/// its reason and the process's peak RSS grew by less than `bound` bytes.
async fn run_bombs(ids: &[&str], bound: u64) -> TestResult {
    let (open, gate) = watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let bombs = Bombs {
        gate,
        arrived: arrived.clone(),
        gzip: Arc::new(bomb("gzip", 0)?),
        deflate: Arc::new(bomb("deflate", 0)?),
        br: Arc::new(bomb("br", 22)?),
        br_wide: Arc::new(bomb("br", 24)?),
    };
    let up = bomb_server(bombs.clone()).await?;
    let liar = lying_server(bombs).await?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    let mut text = config_head(dir.path(), "60s");
    for id in ids {
        let url = match *id {
            "bomb.gzip" => format!("http://{up}/gzip"),
            "bomb.deflate" => format!("http://{up}/deflate"),
            "bomb.brotli" => format!("http://{up}/br"),
            "bomb.brotli-wide" => format!("http://{up}/br-wide"),
            "bomb.huge" => format!("http://{up}/huge"),
            "bomb.declared" => format!("http://{up}/declared"),
            "bomb.lying" => format!("http://{liar}/feed"),
            other => return Err(format!("no bomb {other}").into()),
        };
        text.push_str(&source(id, &url));
    }
    std::fs::write(&config, text)?;
    let key = mint(&config, &["--name", "ops", "--scopes", "admin"])?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let node = start(&config, listen);
    let pid = node.0.id();

    // The first poll is waiting at the gate: the process is warmed up.
    wait_for("the first bomb request", WAIT, || async {
        arrived.load(Ordering::SeqCst) >= 1
    })
    .await;
    let (before, _) = memory(pid)?;
    open.send(true)?;

    let http = reqwest::Client::new();
    let failed = wait_failed(&http, listen, &key, "bomb.", ids.len()).await;
    let (peak, now) = memory(pid)?;
    for (id, error) in &failed {
        if id == "bomb.lying" {
            // Read up to its declared 1,000 bytes of junk: not a feed.
            assert!(!error.is_empty(), "{id} failed without a reason");
        } else if id == "bomb.brotli-wide" {
            // Refused from the stream's header, before any of it is decoded.
            assert!(
                error.contains(
                    "brotli window of 16 MiB is larger than the body cap of 10 MB (fetch.max_body)"
                ),
                "{id}: {error}"
            );
        } else {
            assert!(
                error.contains(&format!(
                    "larger than the {CAP}-byte limit (fetch.max_body)"
                )),
                "{id}: {error}"
            );
        }
    }
    let grew = peak.saturating_sub(before);
    eprintln!(
        "{ids:?}: peak RSS {} MiB before the bodies, {} MiB after ({} MiB growth; {} MiB now), cap {} MB",
        before >> 20,
        peak >> 20,
        grew >> 20,
        now >> 20,
        CAP / 1_000_000
    );
    assert!(
        grew < bound,
        "peak memory grew by {grew} bytes, not under {bound} (cap {CAP})"
    );
    // Still serving.
    let ready = http.get(format!("http://{listen}/healthz")).send().await?;
    assert_eq!(ready.status(), 200);
    Ok(())
}

/// Each in its own process: the bound is per fetch. (Run one after another
/// in one process, freed buffers the allocator has not yet returned to the
/// system add up: about 21 MiB of growth for all five here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_and_huge_bodies_are_cut_off_at_the_cap_with_memory_under_twice_it() -> TestResult {
    for id in [
        "bomb.gzip",
        "bomb.deflate",
        "bomb.huge",
        "bomb.declared",
        "bomb.lying",
    ] {
        run_bombs(&[id], 2 * CAP).await?;
    }
    Ok(())
}

/// A brotli decoder keeps its stream's window of history beside the body.
/// The fetcher refuses windows larger than the cap from the stream's header,
/// so a bomb is either refused there (16 MiB window, the largest RFC 7932
/// allows) or decoded with a window under the cap (4 MiB) and cut off at
/// the cap: both under twice the cap, as gzip and deflate. Each in its own
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brotli_bombs_are_cut_off_at_the_cap_or_refused_by_window_with_memory_under_twice_it(
) -> TestResult {
    for id in ["bomb.brotli", "bomb.brotli-wide"] {
        run_bombs(&[id], 2 * CAP).await?;
    }
    Ok(())
}

/// `livestrom_runtime_tasks` from `/metrics`.
async fn tasks(http: &reqwest::Client, listen: SocketAddr) -> Option<f64> {
    metric(http, listen, "livestrom_runtime_tasks").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_upstreams_time_out_close_their_connections_and_leave_no_task() -> TestResult {
    const SOURCES: usize = 40;
    let seen = Arc::new(Loris::default());
    let loris = slowloris(seen.clone()).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    let calm = |dir: &Path| {
        // Concurrency high enough for all of them at once.
        config_head(dir, "1s").replace("per_host_concurrency = 1", "per_host_concurrency = 64")
    };
    std::fs::write(&config, calm(dir.path()))?;
    let key = mint(&config, &["--name", "ops", "--scopes", "admin"])?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _node = start(&config, listen);
    let http = reqwest::Client::new();

    // Tasks with no slow source (settled: two scrapes agree).
    let base = wait_for_value("a settled task count", WAIT, || async {
        let a = tasks(&http, listen).await?;
        let b = tasks(&http, listen).await?;
        (a == b).then_some(a)
    })
    .await;

    // Add them: half trickle the head, half the body.
    let mut text = calm(dir.path());
    for i in 0..SOURCES {
        let path = if i % 2 == 0 { "head" } else { "body" };
        text.push_str(&source(
            &format!("loris.{i}"),
            &format!("http://{loris}/{path}"),
        ));
    }
    std::fs::write(&config, text)?;
    let failed = wait_failed(&http, listen, &key, "loris.", SOURCES).await;
    for (id, error) in &failed {
        assert!(error.contains("timed out after 1s"), "{id}: {error}");
    }
    wait_for(
        "every slow connection closed by the client",
        WAIT,
        || async {
            let accepted = seen.accepted.load(Ordering::SeqCst);
            accepted >= SOURCES && seen.closed.load(Ordering::SeqCst) == accepted
        },
    )
    .await;

    // Remove them: the runtime returns to where it was.
    std::fs::write(&config, calm(dir.path()))?;
    let after = wait_for_value("the task count back to its level before", WAIT, || async {
        let now = tasks(&http, listen).await?;
        (now <= base + 2.0).then_some(now)
    })
    .await;
    eprintln!(
        "runtime tasks: {base} before, {after} after {} slow connections",
        seen.accepted.load(Ordering::SeqCst)
    );
    Ok(())
}
