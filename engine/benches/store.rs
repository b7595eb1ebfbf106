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

/// The allocator the `livestrom` binary runs with, so the figures are the
/// shipped writer's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn total() -> usize {
    std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
/// Sources the events belong to.
const SOURCES: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: usize, source: usize) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: format!("bench.source-{source}"),
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
            store.write(WriteBatch { events: vec![event(10_000_000 + i, i % SOURCES)], ..Default::default() }).await?;
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
        let batch = env_usize("BENCH_BATCH", 1_000);
        let submitters = env_usize("BENCH_SUBMITTERS", 4).max(1);
        let per_source = std::env::var("BENCH_SHAPE").as_deref() == Ok("per-source");
        let source = |b: usize, i: usize| if per_source { b % SOURCES } else { (b * batch + i) % SOURCES };
        let batches: Vec<Vec<NewEvent>> = (0..total() / batch)
            .map(|b| (0..batch).map(|i| event(b * batch + i, source(b, i))).collect())
            .collect();
        let per: Vec<Vec<Vec<NewEvent>>> = {
            let mut per = vec![Vec::new(); submitters];
            for (i, b) in batches.into_iter().enumerate() {
                per[i % submitters].push(b);
            }
            per
        };
        let cpu_before = store_threads_cpu();
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
        let shape = if per_source { "each batch one source's items" } else { "each batch spread over 1,000 sources" };
        println!("insert: {} events in {secs:.2} s = {:.0} events/s (batches of {batch}, {submitters} submitters, {shape})", total(), total() as f64 / secs);
        // On a shared box wall time moves with the neighbours; a thread's
        // CPU time per event moves much less.
        let cpu_after = store_threads_cpu();
        for (name, after) in &cpu_after {
            let before = cpu_before.iter().find(|(n, _)| n == name).map_or(0.0, |(_, c)| *c);
            let cpu = after - before;
            println!("insert: thread {name}: {cpu:.2} CPU s = {:.2} µs per event", cpu * 1e6 / total() as f64);
        }

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

/// CPU seconds used so far by this process's store threads (writer,
/// checkpointer), by thread name, from `/proc/self/task/*/{comm,schedstat}`.
fn store_threads_cpu() -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let name = comm.trim().to_owned();
        if !name.starts_with("livestrom-") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        let ns: f64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += ns / 1e9,
            None => out.push((name, ns / 1e9)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
