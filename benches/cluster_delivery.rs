//! End-to-end delivery through the cluster vs one node (not a test): real
//! `livestrom run` processes on 127.0.0.1, a local SSE firehose upstream
//! sending `RATE` events/s that carry their send time, and `SUBS` SSE
//! subscribers measuring upstream → client latency. Cases, in one run:
//! one node (SQLite, `--role all`); a cluster of one engine and one edge
//! (nats-server, JetStream); the same with two edges (subscribers split).
//! Run: `LIVESTROM_NATS_SERVER=/path/to/nats-server cargo bench --bench cluster_delivery`
//! Environment: `BENCH_SUBS` (default 200), `BENCH_RATE` (default 100),
//! `BENCH_SECS` (default 10), `BENCH_LIVESTROM_BIN` (the binary to run instead
//! of this build's, for a before/after comparison in one session).
//! `BENCH_SLOW=1` adds, on one node, the same case again with one more
//! subscriber that reads about one event a second (a raw socket with a
//! 4 KiB receive buffer), alternating without/with it `BENCH_SLOW_ROUNDS`
//! times (default 3): what a slow consumer does to everyone else's latency.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::sse::{Event, Sse};
use axum::routing::get;
use axum::Router;
use eventsource_stream::Eventsource;
use futures::StreamExt;

mod common;
use common::{bin, env_or, free_addr, now_us, BoxResult, Proc};

/// The upstream: an SSE stream of `rate` events/s while `on` is set, each
/// `{"id": n, "title": "…", "sent_us": t}`.
async fn upstream(rate: u64, seq: Arc<AtomicU64>) -> BoxResult<SocketAddr> {
    let app = Router::new().route(
        "/events",
        get(move || {
            let seq = seq.clone();
            async move {
                let every = Duration::from_micros(1_000_000 / rate.max(1));
                let ticks = tokio_stream_interval(every);
                let events = ticks.map(move |_| {
                    let n = seq.fetch_add(1, Ordering::SeqCst);
                    let body = format!(
                        "{{\"id\":\"e{n}\",\"title\":\"bench event {n}\",\"sent_us\":\"{}\"}}",
                        now_us()
                    );
                    Ok::<_, std::convert::Infallible>(Event::default().id(n.to_string()).data(body))
                });
                Sse::new(events)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A stream of ticks every `every`.
fn tokio_stream_interval(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(every), |mut i| async move {
        i.tick().await;
        Some(((), i))
    })
}

fn nats_server() -> Option<PathBuf> {
    std::env::var_os("LIVESTROM_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        })
}

fn start_nats(bin: &Path, dir: &Path) -> BoxResult<(Proc, String)> {
    let mut child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("Listening for client connections on ").nth(1) {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30))?;
    Ok((Proc(child), format!("nats://{addr}")))
}

fn config(dir: &Path, name: &str, upstream: SocketAddr, nats: Option<&str>) -> BoxResult<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let cluster = nats
        .map(|u| format!("[cluster]\nnats = [\"{u}\"]\nstream = \"B{name}\"\nlease = \"5s\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[engine]\ndatabase = \"{name}.db\"\nretention = \"1h\"\n[fetch]\nallow_private_networks = true\n{cluster}\
             [[source]]\nid = \"bench.fire\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://{upstream}/events\"\n\
             fields = {{ id = \"/id\", title = \"/title\", content = \"/sent_us\" }}\n"
        ),
    )?;
    Ok(path)
}

fn node(config: &Path, role: &str, listen: Option<SocketAddr>, log: &Path) -> BoxResult<Proc> {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--role", role, "-c"])
        .arg(config)
        .env("LIVESTROM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(l) = listen {
        cmd.arg("--listen").arg(l.to_string());
    }
    Ok(Proc(cmd.spawn()?))
}

fn key(config: &Path) -> BoxResult<String> {
    let out = Command::new(bin())
        .args([
            "apikey",
            "create",
            "--name",
            "bench",
            "--rate",
            "10000/s",
            "--max-streams",
            "10000",
            "-c",
        ])
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
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
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

/// `subs` subscribers spread over `edges` for `secs`: latencies (µs).
async fn measure(edges: &[SocketAddr], key: &str, subs: u64, secs: u64) -> BoxResult<Vec<u64>> {
    let lat = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..subs {
        let edge = edges[i as usize % edges.len()];
        let (key, lat) = (key.to_owned(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let res = http
                .get(format!("http://{edge}/v1/stream"))
                .header("X-API-Key", key)
                .send()
                .await?;
            let mut events = res.bytes_stream().eventsource();
            let mut mine = Vec::new();
            loop {
                let left = stop.saturating_duration_since(Instant::now());
                let Ok(Some(Ok(ev))) = tokio::time::timeout(left, events.next()).await else {
                    break;
                };
                if ev.data.is_empty() {
                    continue;
                }
                let at = now_us();
                let v: serde_json::Value = serde_json::from_str(&ev.data)?;
                if let Some(sent) = v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .and_then(|c| c.parse::<u64>().ok())
                {
                    mine.push(at.saturating_sub(sent));
                }
            }
            if let Ok(mut l) = lat.lock() {
                l.extend(mine);
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut v = std::mem::take(&mut *lat.lock().map_err(|_| "poisoned")?);
    v.sort_unstable();
    Ok(v)
}

/// A subscriber reading about one event a second for `secs` (512 bytes a
/// second through a 4 KiB receive buffer); returns the bytes it read
/// before the server cut it off or the time was up.
async fn slow_reader(edge: SocketAddr, key: String, secs: u64) -> BoxResult<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut s = socket.connect(edge).await?;
    s.write_all(
        format!("GET /v1/stream HTTP/1.1\r\nHost: {edge}\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
    )
    .await?;
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 512];
    let mut read = 0;
    while Instant::now() < stop {
        match s.read(&mut buf).await? {
            0 => break,
            n => read += n,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(read)
}

fn report(name: &str, lat: &[u64], secs: u64) {
    let q = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "  {name:<34} {:>7} deliveries ({:>6.0}/s)  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms",
        lat.len(),
        lat.len() as f64 / secs as f64,
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

fn main() -> BoxResult<()> {
    let (subs, rate, secs) = (
        env_or("BENCH_SUBS", 200),
        env_or("BENCH_RATE", 100),
        env_or("BENCH_SECS", 10),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        println!("end-to-end delivery (upstream SSE → engine → log → edge → client), {subs} subscribers, {rate} events/s, {secs} s per case");
        // One node, SQLite.
        {
            let up = upstream(rate, Arc::default()).await?;
            let cfg = config(dir.path(), "single", up, None)?;
            let k = key(&cfg)?;
            let edge = free_addr()?;
            let _n = node(&cfg, "all", Some(edge), &dir.path().join("single.log"))?;
            ready(edge).await?;
            report("one node (SQLite)", &measure(&[edge], &k, subs, secs).await?, secs);
        }
        if env_or("BENCH_SLOW", 0) == 1 {
            for round in 0..env_or("BENCH_SLOW_ROUNDS", 3) {
                for with_slow in [false, true] {
                    let up = upstream(rate, Arc::default()).await?;
                    let name = format!("slow{round}{with_slow}");
                    let cfg = config(dir.path(), &name, up, None)?;
                    let k = key(&cfg)?;
                    let edge = free_addr()?;
                    let _n = node(&cfg, "all", Some(edge), &dir.path().join(format!("{name}.log")))?;
                    ready(edge).await?;
                    let slow = with_slow.then(|| tokio::spawn(slow_reader(edge, k.clone(), secs)));
                    let label = if with_slow { "one node + a slow consumer" } else { "one node, no slow consumer" };
                    report(label, &measure(&[edge], &k, subs, secs).await?, secs);
                    if let Some(slow) = slow {
                        let read = slow.await??;
                        println!("    (the slow consumer read {read} bytes before it was cut off or the case ended)");
                    }
                }
            }
        }
        let Some(bin) = nats_server() else {
            println!("  (cluster cases skipped: set LIVESTROM_NATS_SERVER)");
            return Ok(());
        };
        let nats_dir = tempfile::tempdir()?;
        let (_nats, url) = start_nats(&bin, nats_dir.path())?;
        for edges in [1usize, 2] {
            let up = upstream(rate, Arc::default()).await?;
            let name = format!("c{edges}");
            let cfg = config(dir.path(), &name, up, Some(&url))?;
            let k = key(&cfg)?;
            let addrs: Vec<SocketAddr> = (0..edges).map(|_| free_addr()).collect::<Result<_, _>>()?;
            let mut procs = Vec::new();
            for (i, a) in addrs.iter().enumerate() {
                procs.push(node(&cfg, "edge", Some(*a), &dir.path().join(format!("{name}-edge{i}.log")))?);
            }
            for a in &addrs {
                ready(*a).await?;
            }
            procs.push(node(&cfg, "engine", None, &dir.path().join(format!("{name}-engine.log")))?);
            let label = format!("cluster: 1 engine + {edges} edge(s)");
            report(&label, &measure(&addrs, &k, subs, secs).await?, secs);
        }
        Ok(())
    })
}
