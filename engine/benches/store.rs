//! Store benchmark: batched inserts (events/s through the writer thread,
//! group commit, JSON serialisation included) and log replay (events/s of
//! `read_after` pages), plus one-event commits one after another (what a
//! quiet poll or an idle firehose costs: commit latency).
//! Run: `cargo bench -p livestrom-engine --bench store`;
//! `BENCH_SYNCHRONOUS=full` measures `[engine] synchronous = "full"`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use livestrom_engine::config::Synchronous;
use livestrom_engine::event::SourceType;
use livestrom_engine::store::{NewEvent, ReadScope, WriteBatch};
use livestrom_engine::{Bus, EventLog, Metrics, Store, StreamEvent};
use uuid::Uuid;

fn total() -> usize {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const BATCH: usize = 1_000;
const SUBMITTERS: usize = 4;

fn event(i: usize) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: format!("bench.source-{}", i % 1000),
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
        aliases: vec![format!("https://example.com/articles/{i}")],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bench.db");
        let synchronous = match std::env::var("BENCH_SYNCHRONOUS").as_deref() {
            Ok("full") => Synchronous::Full,
            _ => Synchronous::Normal,
        };
        println!("synchronous = {}", synchronous.pragma());
        let store = Store::open_synchronous(
            &path,
            Duration::from_secs(7 * 86400),
            synchronous,
            Bus::new(),
            Metrics::new(),
        )?;

        // One-event commits, one at a time: each pays a whole commit (and
        // with FULL an fsync of the WAL).
        let singles = 2_000;
        let mut lat = Vec::with_capacity(singles);
        let start = Instant::now();
        for i in 0..singles {
            let t = Instant::now();
            store.write(WriteBatch { events: vec![event(10_000_000 + i)], ..Default::default() }).await?;
            lat.push(t.elapsed());
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort();
        println!(
            "single commits: {singles} in {secs:.2} s = {:.0} commits/s, latency p50 {:.3} ms p99 {:.3} ms",
            singles as f64 / secs,
            lat[singles / 2].as_secs_f64() * 1e3,
            lat[singles * 99 / 100].as_secs_f64() * 1e3
        );

        // Pre-build batches so the measurement is the store, not the generator.
        let batches: Vec<Vec<NewEvent>> = (0..total() / BATCH).map(|b| (0..BATCH).map(|i| event(b * BATCH + i)).collect()).collect();
        let per: Vec<Vec<Vec<NewEvent>>> = {
            let mut per = vec![Vec::new(); SUBMITTERS];
            for (i, b) in batches.into_iter().enumerate() {
                per[i % SUBMITTERS].push(b);
            }
            per
        };
        let start = Instant::now();
        let mut tasks = Vec::new();
        for chunk in per {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for events in chunk {
                    store.write(WriteBatch { events, ..Default::default() }).await?;
                }
                Ok::<_, livestrom_engine::store::StoreError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("insert: {} events in {secs:.2} s = {:.0} events/s (batches of {BATCH}, {SUBMITTERS} submitters)", total(), total() as f64 / secs);

        let log: Arc<dyn EventLog> = Arc::new(store.clone());
        let start = Instant::now();
        let mut cursor = Uuid::nil();
        let mut n = 0usize;
        let mut bytes = 0usize;
        loop {
            let page = log.read_after(cursor, 10_000, &ReadScope::default())?;
            let Some(last) = page.last() else { break };
            cursor = last.id;
            n += page.len();
            bytes += page.iter().map(|r| r.json.len()).sum::<usize>();
        }
        let secs = start.elapsed().as_secs_f64();
        println!("replay: {n} events ({} MB of JSON) in {secs:.2} s = {:.0} events/s (pages of 10,000)", bytes / 1_000_000, n as f64 / secs);

        // The hourly item-state sweep over every item row (all fresh, so it
        // reads everything and deletes nothing), with each source marked as
        // polled successfully just now so none is skipped.
        for i in 0..1000 {
            store
                .write(WriteBatch {
                    source: Some(livestrom_engine::store::SourceState {
                        source_id: format!("bench.source-{i}"),
                        last_success_at: Some(chrono::Utc::now()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
        }
        let start = Instant::now();
        let configured: std::collections::HashSet<String> =
            (0..1000).map(|i| format!("bench.source-{i}")).collect();
        let forgotten = store.prune_items(&configured).await?;
        let secs = start.elapsed().as_secs_f64();
        println!("item sweep: {} item rows in {secs:.2} s = {:.0} rows/s ({forgotten} forgotten)", total(), total() as f64 / secs);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
