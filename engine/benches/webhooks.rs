//! Webhook delivery benchmark (not a test): deliveries/s from a store of
//! `BENCH_EVENTS` events (default 20,000) to a fast local receiver on
//! 127.0.0.1 (answers 204 at once), through the real runtime — the
//! fetcher's guarded client, signing, the worker, progress written through
//! the store's writer. Cases: one endpoint in order (concurrency 1); one
//! endpoint with concurrency 16; `BENCH_ENDPOINTS` endpoints (default 100)
//! of concurrency 1 each, every one getting every event; and the same 100
//! while the store ingests `BENCH_EVENTS` events none of them matches,
//! measuring the writer's insert rate beside them.
//! Run: `cargo bench -p livestrom-engine --bench webhooks`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use livestrom_engine::config::Config;
use livestrom_engine::event::SourceType;
use livestrom_engine::store::{NewEvent, WriteBatch};
use livestrom_engine::webhooks::{NewEndpoint, Since, WebhookAdmin};
use livestrom_engine::{Bus, Store, StreamEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: usize, group: &str) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: format!("{group}.source-{}", i % 100),
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
        fingerprint: "fp".into(),
        aliases: vec![],
    }
}

async fn write(store: &Store, from: usize, n: usize, group: &str) -> BoxResult<()> {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(1000) {
        store
            .write(WriteBatch {
                events: chunk.iter().map(|i| event(*i, group)).collect(),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// A receiver that counts requests and answers 204.
async fn receiver() -> BoxResult<(String, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = Router::new().route(
        "/hook",
        post(move |_body: String| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, count))
}

/// Delivers `events` stored events to `endpoints` endpoints of `concurrency`;
/// with `ingest`, the store takes that many more events meanwhile.
async fn case(
    name: &str,
    events: usize,
    endpoints: usize,
    concurrency: usize,
    ingest: usize,
) -> BoxResult<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        &dir.path().join("bench.db"),
        Duration::from_secs(86_400),
        Bus::new(),
    )?;
    let admin = WebhookAdmin::with_store(&store);
    let (url, count) = receiver().await?;
    for i in 0..endpoints {
        let mut new = NewEndpoint::new(format!("bench-{i}"), url.clone());
        new.since = Since::Now;
        new.concurrency = concurrency;
        new.filters.source = vec!["bench.*".into()];
        admin.create(new).await?;
    }
    write(&store, 0, events, "bench").await?;
    let config = Config::from_toml(
        std::path::Path::new("bench/sources.toml"),
        "[fetch]\nallow_private_networks = true\n",
    )?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let runtime = livestrom_engine::webhooks::spawn(
        store.clone(),
        livestrom_engine::webhooks::SharedTransport::fetcher(&config.fetch)?,
        cancel.clone(),
    );
    let mut ingested = None;
    if ingest > 0 {
        let t = Instant::now();
        // Events no endpoint wants: the writer's rate while 100 workers deliver.
        write(&store, events, ingest, "ingest").await?;
        ingested = Some(ingest as f64 / t.elapsed().as_secs_f64());
    }
    let want = (events * endpoints) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            return Err(format!(
                "{name}: only {} of {want} delivered",
                count.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    cancel.cancel();
    let _ = runtime.await;
    let list = admin.list().await?;
    let behind = list.iter().filter(|e| e.delivered < events as u64).count();
    println!(
        "{name}: {want} deliveries in {:.2} s = {:.0} deliveries/s ({endpoints} endpoint(s), concurrency {concurrency}){}{}",
        took.as_secs_f64(),
        want as f64 / took.as_secs_f64(),
        ingested.map(|r| format!("; the writer stored {ingest} more events meanwhile at {r:.0} events/s")).unwrap_or_default(),
        if behind > 0 { format!("; {behind} endpoint(s) not yet saved as done") } else { String::new() },
    );
    Ok(())
}

fn main() -> BoxResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let events = env_or("BENCH_EVENTS", 20_000);
        let endpoints = env_or("BENCH_ENDPOINTS", 100);
        {
            // The writer alone, the same batches: what "while ingesting" compares with.
            let dir = tempfile::tempdir()?;
            let store = Store::open(
                &dir.path().join("base.db"),
                Duration::from_secs(86_400),
                Bus::new(),
            )?;
            let t = Instant::now();
            write(&store, 0, events, "ingest").await?;
            println!(
                "baseline: the writer alone stores {events} events at {:.0} events/s",
                events as f64 / t.elapsed().as_secs_f64()
            );
        }
        case("one endpoint, in order", events, 1, 1, 0).await?;
        case("one endpoint, concurrency 16", events, 1, 16, 0).await?;
        let per = (events / endpoints).max(200);
        case(
            &format!("{endpoints} endpoints, {per} events each"),
            per,
            endpoints,
            1,
            0,
        )
        .await?;
        case(
            &format!("{endpoints} endpoints while ingesting"),
            per,
            endpoints,
            1,
            events,
        )
        .await?;
        Ok(())
    })
}
