//! Integration tests: `GET /v1/stream` and `GET /v1/events` over real HTTP on
//! 127.0.0.1 with a real SSE client (reqwest + eventsource-stream).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use livestrom_edge::{AppState, Settings};
use livestrom_engine::cluster::cursor::{self, Position, StreamTag};
use livestrom_engine::event::uuid_floor_at;
use livestrom_engine::keys::{self, NewKey};
use livestrom_engine::log::{LogError, LogRow, ReadScope};
use livestrom_engine::store::{NewEvent, WriteBatch};
use livestrom_engine::{Bus, CommittedEvent, EventLog, SourceType, Store, StreamEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Generous bound for anything the test waits on (slow shared CI box).
const WAIT: Duration = Duration::from_secs(60);

struct App {
    base: String,
    key: String,
    key_name: String,
    db: PathBuf,
    store: Store,
    state: AppState,
    shutdown: CancellationToken,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app(
    keepalive: Duration,
    max_filters: usize,
) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
    spawn_app_with(keepalive, max_filters, Duration::from_secs(3600), |store| {
        Arc::new(store.clone())
    })
    .await
}

/// [`spawn_app`] with a retention window and the edge's reads going through
/// `log(store)` (a wrapper can inject faults between the edge's steps).
async fn spawn_app_with(
    keepalive: Duration,
    max_filters: usize,
    retention: Duration,
    log: impl FnOnce(&Store) -> Arc<dyn EventLog>,
) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("stream.db");
    let key_name = "stream-test".to_string();
    let key = {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        let mut nk = NewKey::new(key_name.clone());
        nk.max_filters = max_filters;
        nk.max_streams = 1000;
        nk.rate = 10_000.0;
        keys::create(&conn, &nk)?
    };
    let store = Store::open(&db, retention, Bus::new())?;
    let shutdown = CancellationToken::new();
    let settings = Settings {
        keepalive,
        cors_origins: vec!["*".into()],
        metrics_token: None,
    };
    let state = AppState::new(
        livestrom_engine::Backend {
            log: log(&store),
            ..livestrom_engine::Backend::sqlite(&store)
        },
        settings,
        shutdown.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(livestrom_edge::serve(
        listener,
        state.clone(),
        shutdown.clone(),
    ));
    let http = reqwest::Client::builder().no_proxy().build()?;
    Ok(App {
        base,
        key,
        key_name,
        db,
        store,
        state,
        shutdown,
        http,
        _dir: dir,
    })
}

fn event(source: &str, st: SourceType, tags: &[&str], title: &str, content: &str) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: source.into(),
            source_type: st,
            url: "https://example.com/item".into(),
            title: title.into(),
            content: content.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: format!("{source}/{title}"),
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

async fn write(
    store: &Store,
    events: Vec<NewEvent>,
) -> Result<Vec<Arc<CommittedEvent>>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(store
        .write(WriteBatch {
            events,
            ..Default::default()
        })
        .await?)
}

/// A cursor just before "now": every event written after it comes after it.
fn cursor_now() -> Uuid {
    uuid_floor_at((Utc::now().timestamp_millis() - 1000).max(0) as u64)
}

impl App {
    async fn get(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut rb = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        rb.send().await
    }

    /// Opens a stream and returns its SSE events.
    async fn sse(
        &self,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<
        impl Stream<Item = Result<Event, String>> + Unpin,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let res = self
            .get(&format!("/v1/stream?{query}"), last_event_id)
            .await?;
        if res.status() != 200 {
            return Err(format!("status {}: {}", res.status(), res.text().await?).into());
        }
        Ok(Box::pin(
            res.bytes_stream()
                .eventsource()
                .map(|r| r.map_err(|e| e.to_string())),
        ))
    }

    async fn events(
        &self,
        query: &str,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let res = self.get(&format!("/v1/events?{query}"), None).await?;
        if res.status() != 200 {
            return Err(format!("status {}: {}", res.status(), res.text().await?).into());
        }
        Ok(res.json().await?)
    }

    async fn problem(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
    ) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
        let res = self.get(path_and_query, last_event_id).await?;
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(ct, "application/problem+json", "{path_and_query}");
        Ok((status, res.json().await?))
    }
}

/// Next SSE event, failing after [`WAIT`].
async fn next_event(
    s: &mut (impl Stream<Item = Result<Event, String>> + Unpin),
) -> Result<Option<Event>, Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(WAIT, s.next()).await {
        Ok(Some(Ok(e))) => Ok(Some(e)),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Ok(None),
        Err(_) => Err("timed out waiting for an event".into()),
    }
}

/// Reads events until one with id `last` arrives; returns the ids (data-carrying events only).
async fn collect_until(
    s: &mut (impl Stream<Item = Result<Event, String>> + Unpin),
    last: Uuid,
) -> Result<Vec<Uuid>, Box<dyn std::error::Error + Send + Sync>> {
    let mut ids = Vec::new();
    loop {
        let e = next_event(s).await?.ok_or("stream ended early")?;
        let id = Uuid::parse_str(&e.id)?;
        ids.push(id);
        if id >= last {
            return Ok(ids);
        }
    }
}

fn ids_of(evs: &[Arc<CommittedEvent>]) -> Vec<Uuid> {
    evs.iter().map(|e| e.event.id).collect()
}

fn json_ids(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn sources_of(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["source_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The fixture set for filter tests: (source, type, tags, title, content).
fn corpus() -> Vec<NewEvent> {
    vec![
        event("kommun", SourceType::Rss, &["kommun"], "root", "x"),
        event(
            "kommun.stockholm",
            SourceType::Rss,
            &["kommun", "nyheter"],
            "Stockholm",
            "Budget",
        ),
        event(
            "kommun.stockholm.press",
            SourceType::Html,
            &["kommun"],
            "Press",
            "ÅTERVINNING ökar",
        ),
        event(
            "kommunal",
            SourceType::Json,
            &["fack"],
            "Kommunal",
            "strejk",
        ),
        event("svt", SourceType::Rss, &["nyheter"], "SVT", "Väder"),
        event("wiki.rc", SourceType::Firehose, &[], "Edit", "page changed"),
    ]
}

#[tokio::test]
async fn events_filters_every_kind_and_combination() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let since = cursor_now();
    write(&app.store, corpus()).await?;
    let q = |f: &str| format!("since={since}&{f}");
    let cases: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "kommun",
                "kommun.stockholm",
                "kommun.stockholm.press",
                "kommunal",
                "svt",
                "wiki.rc",
            ],
        ),
        ("source=kommun", &["kommun"]),
        (
            "source=kommun.*",
            &["kommun.stockholm", "kommun.stockholm.press"],
        ),
        ("source=kommun.stockholm.*", &["kommun.stockholm.press"]),
        (
            "source=kommun.*&source=svt",
            &["kommun.stockholm", "kommun.stockholm.press", "svt"],
        ),
        ("source=nope.*", &[]),
        ("source_type=rss", &["kommun", "kommun.stockholm", "svt"]),
        (
            "source_type=html&source_type=firehose",
            &["kommun.stockholm.press", "wiki.rc"],
        ),
        ("tag=nyheter", &["kommun.stockholm", "svt"]),
        (
            "tag=fack&tag=nyheter",
            &["kommun.stockholm", "kommunal", "svt"],
        ),
        ("keyword=%C3%A5tervinning", &["kommun.stockholm.press"]),
        ("keyword=STOCKHOLM", &["kommun.stockholm"]),
        (
            "keyword=budget&keyword=v%C3%A4der",
            &["kommun.stockholm", "svt"],
        ),
        ("source=kommun.*&source_type=rss", &["kommun.stockholm"]),
        ("tag=kommun&source_type=html", &["kommun.stockholm.press"]),
        ("tag=nyheter&keyword=v%C3%A4der", &["svt"]),
        (
            "source=kommun.*&tag=nyheter&keyword=budget&source_type=rss",
            &["kommun.stockholm"],
        ),
        ("source=kommun.*&keyword=strejk", &[]),
    ];
    for (f, want) in cases {
        let v = app.events(&q(f)).await?;
        assert_eq!(sources_of(&v), *want, "filter `{f}`");
    }
    // The same filters on the stream (replay path, SQL pushdown + in-Rust).
    for (f, want) in cases.iter().filter(|(_, w)| !w.is_empty()) {
        let mut s = app.sse(&q(f), None).await?;
        let mut got = Vec::new();
        while got.len() < want.len() {
            let e = next_event(&mut s).await?.ok_or("stream ended")?;
            let ev: StreamEvent = serde_json::from_str(&e.data)?;
            assert_eq!(e.event, ev.source_type.as_str());
            assert_eq!(e.id, ev.id.to_string());
            got.push(ev.source_id);
        }
        assert_eq!(got, *want, "stream filter `{f}`");
    }
    Ok(())
}

#[tokio::test]
async fn live_fan_out_respects_filters() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let mut all = app.sse("", None).await?;
    let mut prefix = app.sse("source=kommun.*", None).await?;
    let mut tagged = app.sse("tag=nyheter&source_type=rss", None).await?;
    let mut kw = app.sse("keyword=%C3%85TERVINNING", None).await?;
    let written = write(&app.store, corpus()).await?;
    let marker = write(
        &app.store,
        vec![event(
            "kommun.z",
            SourceType::Rss,
            &["nyheter"],
            "marker ÅTERVINNING",
            "",
        )],
    )
    .await?;
    let last = marker[0].event.id;
    let name = |id: &Uuid| {
        written
            .iter()
            .chain(marker.iter())
            .find(|e| e.event.id == *id)
            .map(|e| e.event.source_id.clone())
            .unwrap_or_default()
    };
    let got = |ids: Vec<Uuid>| ids.iter().map(name).collect::<Vec<_>>();
    assert_eq!(got(collect_until(&mut all, last).await?).len(), 7);
    assert_eq!(
        got(collect_until(&mut prefix, last).await?),
        ["kommun.stockholm", "kommun.stockholm.press", "kommun.z"]
    );
    assert_eq!(
        got(collect_until(&mut tagged, last).await?),
        ["kommun.stockholm", "svt", "kommun.z"]
    );
    assert_eq!(
        got(collect_until(&mut kw, last).await?),
        ["kommun.stockholm.press", "kommun.z"]
    );
    Ok(())
}

/// One commit queues ~2.4 MB for a live subscriber at once: more than one
/// live write takes (`MAX_DRAIN_BYTES`), less than the queue's bound. It is
/// written in several chunks and every event arrives once, in order.
#[tokio::test]
async fn a_queue_larger_than_one_write_is_delivered_whole_and_in_order() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let mut live = app.sse("", None).await?;
    let body = "x".repeat(1000);
    let batch: Vec<NewEvent> = (0..2000)
        .map(|i| {
            event(
                "bulk",
                SourceType::Firehose,
                &[],
                &format!("bulk {i}"),
                &body,
            )
        })
        .collect();
    let written = write(&app.store, batch).await?;
    let want = ids_of(&written);
    let last = *want.last().ok_or("nothing written")?;
    assert!(
        want.len() * body.len() > 4 * livestrom_edge::stream::MAX_DRAIN_BYTES,
        "the batch must need several writes"
    );
    assert_eq!(collect_until(&mut live, last).await?, want);
    Ok(())
}

#[tokio::test]
async fn bad_requests_are_problems_naming_the_parameter() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 3).await?;
    let v7 = cursor_now();
    let cases: &[(&str, &str)] = &[
        ("/v1/stream?sources=kommun", "sources"),
        ("/v1/stream?source=Kommun", "source"),
        ("/v1/stream?source=kommun*", "source"),
        ("/v1/stream?source=", "source"),
        ("/v1/stream?source=a%0D%0Aid:%209", "source"),
        ("/v1/stream?source_type=xml", "source_type"),
        ("/v1/stream?tag=a%20b", "tag"),
        ("/v1/stream?source=a&source=b&tag=c&keyword=d", "keyword"),
        ("/v1/stream?since=yesterday", "since"),
        (
            "/v1/stream?since=550e8400-e29b-41d4-a716-446655440000",
            "since",
        ),
        ("/v1/stream?limit=5", "limit"),
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=5000", "limit"),
        ("/v1/events?sourc=a", "sourc"),
    ];
    for (pq, param) in cases {
        let (status, body) = app.problem(pq, None).await?;
        assert_eq!(status, 400, "{pq}: {body}");
        assert_eq!(body["parameter"], *param, "{pq}: {body}");
        assert_eq!(body["status"], 400);
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("invalid-parameter")),
            "{body}"
        );
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (status, body) = app.problem("/v1/stream", Some("not-a-uuid")).await?;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("Last-Event-ID"))
    );
    // The header wins over since=.
    let (status, body) = app
        .problem(&format!("/v1/stream?since={v7}"), Some("nope"))
        .await?;
    assert_eq!(
        (status, body["parameter"].as_str()),
        (400, Some("Last-Event-ID"))
    );
    // Older than the retention window (1 h in these tests): 410.
    let old = uuid_floor_at((Utc::now().timestamp_millis() - 2 * 3600 * 1000) as u64);
    for pq in [
        format!("/v1/stream?since={old}"),
        format!("/v1/events?since={old}"),
    ] {
        let (status, body) = app.problem(&pq, None).await?;
        assert_eq!(status, 410, "{pq}: {body}");
        assert!(body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("cursor-expired")));
    }
    let (status, _) = app.problem("/v1/stream", Some(&old.to_string())).await?;
    assert_eq!(status, 410);
    // A cursor a day ahead of the clock and the log cannot be a position of
    // this stream (resuming from it would skip everything until then): 400
    // naming whichever parameter carried it. A minute ahead (clock skew) is fine.
    let ahead = uuid_floor_at((Utc::now().timestamp_millis() + 86_400_000) as u64);
    for (pq, header, param) in [
        (format!("/v1/stream?since={ahead}"), None, "since"),
        (format!("/v1/events?since={ahead}"), None, "since"),
        (
            "/v1/stream".to_owned(),
            Some(ahead.to_string()),
            "Last-Event-ID",
        ),
    ] {
        let (status, body) = app.problem(&pq, header.as_deref()).await?;
        assert_eq!(
            (status, body["parameter"].as_str()),
            (400, Some(param)),
            "{pq}: {body}"
        );
    }
    // An empty Last-Event-ID is no cursor (a client without an id yet).
    let res = app.get("/v1/events", Some("")).await?;
    assert_eq!(res.status(), 200);
    let skewed = uuid_floor_at((Utc::now().timestamp_millis() + 60_000) as u64);
    let res = app.get(&format!("/v1/events?since={skewed}"), None).await?;
    assert_eq!(res.status(), 200);
    // A well-formed id of a source that does not exist is fine.
    let res = app
        .get(
            &format!("/v1/events?since={v7}&source=does.not.exist"),
            None,
        )
        .await?;
    assert_eq!(res.status(), 200);
    Ok(())
}

#[tokio::test]
async fn connect_comment_headers_and_keepalive() -> TestResult {
    let app = spawn_app(Duration::from_millis(100), 20).await?;
    let res = app.get("/v1/stream", None).await?;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(
        h.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-cache")
    );
    assert_eq!(
        h.get("x-accel-buffering").and_then(|v| v.to_str().ok()),
        Some("no")
    );
    assert!(h.get("content-encoding").is_none());
    let rid = h
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while text.matches(": keepalive\n\n").count() < 2 {
        let chunk: Bytes = tokio::time::timeout(WAIT, body.next())
            .await?
            .ok_or("stream ended")??;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    let first = text.split("\n\n").next().unwrap_or_default();
    assert!(first.starts_with(":connected request_id="), "{text}");
    if let Some(rid) = rid {
        assert_eq!(first, format!(":connected request_id={rid}"));
    }
    Ok(())
}

#[tokio::test]
async fn feed_text_cannot_inject_frames() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let mut s = app.sse("", None).await?;
    let title = "evil\n\nid: 9\nevent: admin\ndata: {\"x\":1}\r\n\r\n";
    let evs = write(
        &app.store,
        vec![
            event("a", SourceType::Rss, &[], title, "c\rd\n"),
            event("a", SourceType::Rss, &[], "after", ""),
        ],
    )
    .await?;
    let e = next_event(&mut s).await?.ok_or("ended")?;
    assert_eq!(e.id, evs[0].event.id.to_string());
    assert_eq!(e.event, "rss");
    let back: StreamEvent = serde_json::from_str(&e.data)?;
    assert_eq!(back.title, title);
    assert_eq!(back.content, "c\rd\n");
    let e = next_event(&mut s).await?.ok_or("ended")?;
    assert_eq!(
        e.id,
        evs[1].event.id.to_string(),
        "an extra frame was injected"
    );
    Ok(())
}

/// Writes `batches` × `per` events from a task; sends the id of the event at
/// index `cursor_at` as soon as it is committed; returns every id.
fn spawn_writer(
    store: Store,
    batches: usize,
    per: usize,
    cursor_at: usize,
) -> (
    tokio::sync::oneshot::Receiver<Uuid>,
    tokio::task::JoinHandle<Result<Vec<Uuid>, String>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut all = Vec::with_capacity(batches * per);
        for b in 0..batches {
            let evs = (0..per)
                .map(|i| {
                    event(
                        if i % 2 == 0 { "w.even" } else { "w.odd" },
                        SourceType::Firehose,
                        &["w"],
                        &format!("e{b}-{i}"),
                        "",
                    )
                })
                .collect();
            let out = store
                .write(WriteBatch {
                    events: evs,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            all.extend(out.iter().map(|e| e.event.id));
            if all.len() > cursor_at {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(all[cursor_at]);
                }
            }
        }
        Ok(all)
    });
    (rx, task)
}

#[tokio::test]
async fn replay_hands_over_to_live_without_gap_or_duplicate_under_load() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let (cursor_rx, writer) = spawn_writer(app.store.clone(), 400, 10, 1000);
    let cursor = cursor_rx.await?;
    // Header-borne cursor on one client, since= on another filtered one.
    let mut a = app.sse("", Some(&cursor.to_string())).await?;
    let mut b = app
        .sse(&format!("since={cursor}&source=w.even"), None)
        .await?;
    let all = writer.await??;
    let after: Vec<Uuid> = all.iter().copied().filter(|id| *id > cursor).collect();
    let last = *after.last().ok_or("no events")?;
    let got = collect_until(&mut a, last).await?;
    assert_eq!(got.len(), after.len(), "missing or duplicated events");
    assert_eq!(got, after);
    let evens: Vec<Uuid> = all
        .iter()
        .enumerate()
        .filter(|(i, id)| i % 2 == 0 && **id > cursor)
        .map(|(_, id)| *id)
        .collect();
    let got = collect_until(&mut b, *evens.last().ok_or("no evens")?).await?;
    assert_eq!(got, evens);
    Ok(())
}

#[tokio::test]
async fn replay_overflow_falls_back_to_the_log_and_resume_is_exact() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    // A tiny live queue: it overflows during the replay (log fallback) and
    // may overflow live (disconnect): resuming with the last id must still
    // deliver every event exactly once.
    app.state.hub.set_queue_limit(8 * 1024);
    let mut before = Vec::new();
    for chunk in 0..4 {
        before.extend(
            write(
                &app.store,
                (0..5000)
                    .map(|i| event("r", SourceType::Rss, &[], &format!("b{chunk}-{i}"), ""))
                    .collect(),
            )
            .await?,
        );
    }
    let cursor = before[100].event.id;
    // The client connects, then does not read while the writer runs: the
    // replay is held back by TCP backpressure and its live queue overflows.
    let mut s = app.sse("", Some(&cursor.to_string())).await?;
    let (_, writer) = spawn_writer(app.store.clone(), 300, 10, 0);
    let all = writer.await??;
    let want: Vec<Uuid> = ids_of(&before)
        .into_iter()
        .chain(all)
        .filter(|id| *id > cursor)
        .collect();
    let last = *want.last().ok_or("none")?;
    let mut got: Vec<Uuid> = Vec::new();
    let mut reconnects = 0;
    loop {
        match next_event(&mut s).await? {
            Some(e) => {
                let id = Uuid::parse_str(&e.id)?;
                got.push(id);
                if id >= last {
                    break;
                }
            }
            None => {
                reconnects += 1;
                assert!(reconnects < 10_000, "reconnect loop");
                let resume = got.last().copied().unwrap_or(cursor);
                s = app.sse("", Some(&resume.to_string())).await?;
            }
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "missing or duplicated events (reconnects: {reconnects})"
    );
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test]
async fn slow_consumer_is_disconnected_while_others_keep_receiving() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    app.state.hub.set_queue_limit(1 << 30);
    let mut fast = app.sse("", None).await?;
    app.state.hub.set_queue_limit(64 * 1024);
    let slow_res = app.get("/v1/stream", None).await?;
    assert_eq!(slow_res.status(), 200);
    assert_eq!(app.state.hub.subscribers(), 2);
    let big = "x".repeat(4096);
    let mut written = Vec::new();
    let reader = tokio::spawn(async move {
        let mut n = 0usize;
        let mut last = None;
        while let Ok(Some(Ok(e))) = tokio::time::timeout(WAIT, fast.next()).await {
            n += 1;
            last = Some(e.id.clone());
            if e.data.contains("\"title\":\"end\"") {
                break;
            }
        }
        (n, last)
    });
    // Keep writing until the hub dropped the slow subscriber (bounded).
    let mut rounds = 0;
    while app.state.hub.subscribers() == 2 {
        rounds += 1;
        assert!(rounds <= 4000, "slow subscriber was never disconnected");
        let evs = (0..5)
            .map(|i| event("s", SourceType::Html, &[], &format!("t{rounds}-{i}"), &big))
            .collect();
        written.extend(write(&app.store, evs).await?);
    }
    written.extend(
        write(
            &app.store,
            vec![event("s", SourceType::Html, &[], "end", "")],
        )
        .await?,
    );
    let (n, last) = reader.await?;
    assert_eq!(n, written.len(), "the fast subscriber missed events");
    assert_eq!(last, written.last().map(|e| e.event.id.to_string()));
    // The slow client's stream ends (after what was already buffered).
    // The slow client's stream ends after what was already buffered, and
    // it never gets what was written after the hub dropped it.
    let mut slow = slow_res.bytes_stream();
    let mut body = Vec::new();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = slow.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "slow stream did not end");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("\"title\":\"end\""),
        "slow client got the event written after its disconnect"
    );
    assert!(text.matches("\ndata: ").count() < written.len());
    Ok(())
}

#[tokio::test]
async fn an_event_larger_than_the_queue_bound_is_delivered_not_a_disconnect() -> TestResult {
    // A page snapshot can be bigger than a subscriber's queue bound: alone in
    // an idle queue it must go out, and the stream must stay up.
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    app.state.hub.set_queue_limit(8 * 1024);
    let mut s = app.sse("", None).await?;
    let huge = "y".repeat(64 * 1024);
    let written = write(
        &app.store,
        vec![event("page", SourceType::Html, &[], "huge", &huge)],
    )
    .await?;
    let got = next_event(&mut s).await?.ok_or("stream ended")?;
    assert_eq!(got.id, written[0].event.id.to_string());
    assert!(got.data.len() > huge.len());
    let after = write(
        &app.store,
        vec![event("page", SourceType::Html, &[], "small", "z")],
    )
    .await?;
    let got = next_event(&mut s)
        .await?
        .ok_or("stream ended after the big event")?;
    assert_eq!(got.id, after[0].event.id.to_string());
    assert_eq!(app.state.hub.subscribers(), 1);
    Ok(())
}

#[tokio::test]
async fn huge_events_replay_and_page_completely_within_byte_budgets() -> TestResult {
    // Three 7 MiB snapshots: more than a replay page's 8 MiB budget and a
    // /v1/events page's 16 MiB. Every one arrives once, in order.
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let start = cursor_now();
    let huge = "h".repeat(7 << 20);
    let mut written = Vec::new();
    for i in 0..3 {
        let evs = vec![event(
            "page",
            SourceType::Html,
            &[],
            &format!("snap{i}"),
            &huge,
        )];
        written.extend(write(&app.store, evs).await?);
    }
    let want: Vec<String> = written.iter().map(|e| e.event.id.to_string()).collect();

    let mut s = app.sse(&format!("since={start}"), None).await?;
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = next_event(&mut s).await?.ok_or("stream ended")?;
        assert!(e.data.len() > huge.len());
        got.push(e.id);
    }
    assert_eq!(got, want);

    let mut cursor = start.to_string();
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let v = app.events(&format!("since={cursor}&limit=1000")).await?;
        paged.extend(json_ids(&v));
        cursor = v["next_cursor"]
            .as_str()
            .ok_or("no next_cursor")?
            .to_owned();
        if v["has_more"] != true {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(paged, want);
    assert!(pages >= 2, "a 21 MiB result must span pages");
    Ok(())
}

#[tokio::test]
async fn filtered_out_events_advance_the_cursor_with_id_only_frames() -> TestResult {
    let app = spawn_app(Duration::from_millis(100), 20).await?;
    let since = cursor_now();
    let evs = write(
        &app.store,
        (0..1500)
            .map(|i| event("noise", SourceType::Rss, &[], &format!("n{i}"), ""))
            .collect(),
    )
    .await?;
    let last = evs.last().map(|e| e.event.id).ok_or("none")?;
    // Replay: the keyword filter runs in Rust over 1500 rejected rows.
    let res = app
        .get(
            &format!("/v1/stream?since={since}&keyword=never-matches"),
            None,
        )
        .await?;
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let want = format!("\nid: {last}\n\n");
    while !text.contains(&want) {
        let chunk: Bytes = tokio::time::timeout(WAIT, body.next())
            .await?
            .ok_or("stream ended")??;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    assert!(!text.contains("data:"), "{text}");
    // Live: a checkpoint follows events the filter passed over.
    let res = app.get("/v1/stream?source=other", None).await?;
    let mut body = res.bytes_stream();
    let more = write(
        &app.store,
        (0..10)
            .map(|i| event("noise", SourceType::Rss, &[], &format!("m{i}"), ""))
            .collect(),
    )
    .await?;
    let want = format!("id: {}\n\n", more[9].event.id);
    let mut text = String::new();
    while !text.contains(&want) {
        let chunk: Bytes = tokio::time::timeout(WAIT, body.next())
            .await?
            .ok_or("stream ended")??;
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    assert!(!text.contains("data:"), "{text}");
    Ok(())
}

#[tokio::test]
async fn revocation_and_shutdown_end_streams() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let mut s = app.sse("", None).await?;
    {
        let conn = livestrom_engine::store::open_and_migrate(&app.db)?;
        keys::revoke(&conn, &app.key_name)?;
    }
    assert!(
        next_event(&mut s).await?.is_none(),
        "stream continued after revocation"
    );

    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let mut s = app.sse("", None).await?;
    app.shutdown.cancel();
    assert!(
        next_event(&mut s).await?.is_none(),
        "stream continued after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn events_pages_with_next_cursor() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    // No cursor: nothing, and a cursor meaning "from now on".
    let v = app.events("").await?;
    assert_eq!(json_ids(&v).len(), 0);
    let start = v["next_cursor"].as_str().ok_or("no cursor")?.to_string();
    let evs = write(
        &app.store,
        (0..25)
            .map(|i| {
                event(
                    if i % 5 == 0 { "p.five" } else { "p.other" },
                    SourceType::Json,
                    &[],
                    &format!("p{i}"),
                    "",
                )
            })
            .collect(),
    )
    .await?;
    let ids: Vec<String> = evs.iter().map(|e| e.event.id.to_string()).collect();
    let mut cursor = start.clone();
    let mut pages = Vec::new();
    loop {
        let v = app.events(&format!("since={cursor}&limit=10")).await?;
        let got = json_ids(&v);
        cursor = v["next_cursor"].as_str().ok_or("no cursor")?.to_string();
        let more = v["has_more"].as_bool().ok_or("no has_more")?;
        pages.push(got);
        if !more {
            break;
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    assert_eq!(pages.concat(), ids);
    assert_eq!(cursor, ids[24]);
    // Nothing new: same cursor back.
    let v = app.events(&format!("since={cursor}")).await?;
    assert_eq!(
        (json_ids(&v).len(), v["next_cursor"].as_str()),
        (0, Some(cursor.as_str()))
    );
    // A filter: next_cursor moves past what it passed over.
    let v = app
        .events(&format!("since={start}&keyword=p2&limit=2"))
        .await?;
    assert_eq!(json_ids(&v), [ids[2].clone(), ids[20].clone()]);
    assert_eq!(v["next_cursor"], ids[20]);
    let v = app.events(&format!("since={}&keyword=p2", ids[20])).await?;
    assert_eq!(
        json_ids(&v),
        [
            ids[21].clone(),
            ids[22].clone(),
            ids[23].clone(),
            ids[24].clone()
        ]
    );
    let v = app
        .events(&format!("since={}&source=p.five", ids[20]))
        .await?;
    assert_eq!(json_ids(&v).len(), 0);
    assert_eq!(
        v["next_cursor"], ids[20],
        "pushdown found nothing after the cursor"
    );
    // Events validate as StreamEvents.
    let v = app.events(&format!("since={start}&limit=1")).await?;
    let one: StreamEvent = serde_json::from_value(v["events"][0].clone())?;
    assert_eq!(one.id.to_string(), ids[0]);
    Ok(())
}

/// The store's log, with one prune injected before the first replay read:
/// the prune runs once the clock has passed `prune_after_ms` (so it deletes
/// what the test wrote), after the edge accepted the cursor.
struct PruneBeforeReplay {
    store: Store,
    prune_after_ms: std::sync::atomic::AtomicI64,
}

impl EventLog for PruneBeforeReplay {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        self.store.read_after(after, limit, scope)
    }
    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        let at = self
            .prune_after_ms
            .swap(i64::MAX, std::sync::atomic::Ordering::SeqCst);
        if at != i64::MAX {
            // Waits for the clock (not for another task): the prune can only
            // delete the events once they are older than the retention window.
            while Utc::now().timestamp_millis() <= at {
                std::thread::sleep(Duration::from_millis(5));
            }
            let pruned = tokio::runtime::Handle::current()
                .block_on(self.store.prune())
                .map_err(LogError::from)?;
            assert!(pruned > 0, "the injected prune deleted nothing");
        }
        self.store.read_after_with(after, limit, scope, f)
    }
    fn retention_floor(&self) -> Uuid {
        self.store.retention_floor()
    }
    fn head(&self) -> Result<Option<Uuid>, LogError> {
        self.store.head()
    }
    fn pruned_below(&self) -> Result<Uuid, LogError> {
        self.store.pruned_below()
    }
    fn watermark(&self) -> Result<Uuid, LogError> {
        self.store.watermark()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_between_the_cursor_check_and_the_replay_is_a_410_not_a_gap() -> TestResult {
    let retention = Duration::from_secs(5);
    let prune_at = Arc::new(std::sync::OnceLock::<Arc<PruneBeforeReplay>>::new());
    let slot = prune_at.clone();
    let app = spawn_app_with(Duration::from_millis(200), 20, retention, move |store| {
        let log = Arc::new(PruneBeforeReplay {
            store: store.clone(),
            prune_after_ms: std::sync::atomic::AtomicI64::new(i64::MAX),
        });
        let _ = slot.set(log.clone());
        log
    })
    .await?;
    let written = write(
        &app.store,
        (0..5)
            .map(|i| event("a", SourceType::Rss, &[], &format!("t{i}"), ""))
            .collect(),
    )
    .await?;
    // The cursor is just inside the window: above the floor by the time the
    // request needs to reach the check (the floor follows the clock), below
    // every event written.
    let floor = app.store.retention_floor();
    let floor_ms = livestrom_engine::event::ms_of(floor);
    let cursor = uuid_floor_at(floor_ms + 2000);
    assert!(
        cursor < written[0].event.id,
        "the box was too slow to write and connect within the window"
    );
    let newest_ms = livestrom_engine::event::ms_of(written[4].event.id) as i64;
    let log = prune_at.get().ok_or("log wrapper")?;
    log.prune_after_ms.store(
        newest_ms + retention.as_millis() as i64 + 20,
        std::sync::atomic::Ordering::SeqCst,
    );

    let res = app.get(&format!("/v1/stream?since={cursor}"), None).await?;
    assert_eq!(res.status(), 200);
    let mut res = res;
    let mut text = String::new();
    // With the events pruned the stream must say so; a keep-alive without
    // it means the gap was silent.
    while !text.contains("event: error") && !text.contains(": keepalive") {
        match tokio::time::timeout(WAIT, res.chunk()).await?? {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    assert!(
        text.contains("event: error"),
        "no 410 in the stream: {text}"
    );
    assert!(text.contains("\"status\":410"), "{text}");
    assert!(
        !text.contains("id: "),
        "nothing after the gap may be sent: {text}"
    );
    // The stream ended; the client's reconnect gets the HTTP 410.
    assert!(tokio::time::timeout(WAIT, res.chunk()).await??.is_none());
    let again = app.get(&format!("/v1/stream?since={cursor}"), None).await?;
    assert_eq!(again.status(), 410);
    Ok(())
}

#[tokio::test]
async fn events_without_a_cursor_on_an_empty_log_returns_a_cursor_that_misses_nothing() -> TestResult
{
    let app = spawn_app(Duration::from_secs(15), 20).await?;
    let v: serde_json::Value = app.get("/v1/events", None).await?.json().await?;
    let next = v["next_cursor"].as_str().ok_or("next_cursor")?.to_owned();
    // Whatever is committed after the answer comes after its cursor, and
    // the cursor is a valid position (not refused as ahead or gone).
    let written = write(&app.store, vec![event("a", SourceType::Rss, &[], "t", "")]).await?;
    assert!(Uuid::parse_str(&next)? < written[0].event.id);
    let res = app.get(&format!("/v1/events?since={next}"), None).await?;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await?;
    assert_eq!(json_ids(&v), vec![written[0].event.id.to_string()]);
    Ok(())
}

/// A log ordered by the stream sequence its ids carry (as a cluster's
/// are), not by the ids: their timestamps may step back.
struct SeqLog {
    tag: StreamTag,
    rows: std::sync::Mutex<Vec<LogRow>>,
}

impl SeqLog {
    fn seq(&self, id: Uuid) -> u64 {
        match cursor::decode(self.tag, id) {
            Position::AfterSeq(s) => s,
            _ => 0,
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<LogRow>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores message `seq` stamped `ms`, as the live feed would carry it.
    fn commit(
        &self,
        seq: u64,
        ms: u64,
    ) -> Result<Arc<CommittedEvent>, Box<dyn std::error::Error + Send + Sync>> {
        let mut e = event("s", SourceType::Rss, &[], &format!("e{seq}"), "").event;
        e.id = cursor::encode(self.tag, seq, ms)?;
        let e = CommittedEvent::new(e);
        self.rows().push(LogRow {
            id: e.event.id,
            source_id: "s".into(),
            source_type: SourceType::Rss,
            json: e.json.clone(),
        });
        Ok(Arc::new(e))
    }
}

impl EventLog for SeqLog {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        _scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        let after = self.seq(after);
        Ok(self
            .rows()
            .iter()
            .filter(|r| self.seq(r.id) > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn retention_floor(&self) -> Uuid {
        Uuid::nil()
    }
    fn head(&self) -> Result<Option<Uuid>, LogError> {
        Ok(self.rows().last().map(|r| r.id))
    }
    fn pruned_below(&self) -> Result<Uuid, LogError> {
        Ok(Uuid::nil())
    }
    fn watermark(&self) -> Result<Uuid, LogError> {
        Ok(self.head()?.unwrap_or(Uuid::nil()))
    }
    fn is_after(&self, id: Uuid, pos: Uuid) -> bool {
        self.seq(id) > self.seq(pos)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_step_back_in_time_reach_streams_in_the_logs_order() -> TestResult {
    let log = Arc::new(SeqLog {
        tag: StreamTag::of("LIVESTROM", 1),
        rows: std::sync::Mutex::new(Vec::new()),
    });
    let edge_log = log.clone();
    let app = spawn_app_with(
        Duration::from_secs(25),
        20,
        Duration::from_secs(3600),
        move |_| edge_log,
    )
    .await?;
    let bus = app.store.bus().clone();
    let mut live = app.sse("", None).await?;
    let now = Utc::now().timestamp_millis() as u64;
    // The stream's clock steps back 50 ms between the first two messages.
    let first: Vec<Arc<CommittedEvent>> = vec![
        log.commit(1, now)?,
        log.commit(2, now - 50)?,
        log.commit(3, now + 1)?,
    ];
    for e in &first {
        bus.publish(Arc::from(vec![e.clone()]));
    }
    for e in &first {
        let got = next_event(&mut live).await?.ok_or("stream ended")?;
        assert_eq!(got.id, e.event.id.to_string());
    }
    // Resuming after the first replays the other two, then goes live with
    // a message stamped before all of them.
    let mut resumed = app.sse("", Some(&first[0].event.id.to_string())).await?;
    for e in &first[1..] {
        let got = next_event(&mut resumed).await?.ok_or("stream ended")?;
        assert_eq!(got.id, e.event.id.to_string());
    }
    let back = log.commit(4, now - 100)?;
    bus.publish(Arc::from(vec![back.clone()]));
    for s in [&mut live, &mut resumed] {
        let got = next_event(s).await?.ok_or("stream ended")?;
        assert_eq!(got.id, back.event.id.to_string());
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so the garbage is the same
/// on every run and a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One garbage cursor as raw bytes (what goes on the wire, before any
/// encoding): kind `i % 12` picks the family so every family is exercised.
fn garbage_cursor(i: usize, rng: &mut Rng) -> Vec<u8> {
    let v7 = uuid_floor_at(Utc::now().timestamp_millis() as u64).as_u128() | 0xabcd;
    let with_version = |v: u128, version: u128| (v & !(0xf << 76)) | (version << 76);
    match i % 12 {
        // Not a UUID at all: random printable ASCII of random length.
        0 => (0..1 + rng.below(60))
            .map(|_| b' ' + rng.below(95) as u8)
            .collect(),
        // 10 KB (fits the edge's 16 KB request head).
        1 => vec![b'a' + rng.below(26) as u8; 10 * 1024],
        // A v7 far in the future (beyond the 5-minute skew and the head).
        2 => {
            let ahead_ms = 3_600_000 * (1 + rng.below(10_000) as u64);
            let t = uuid_floor_at(Utc::now().timestamp_millis() as u64 + ahead_ms);
            Uuid::from_u128(t.as_u128() | u128::from(rng.next() & 0xfff))
                .to_string()
                .into_bytes()
        }
        // Other versions (1, 2, 3, 4, 5, 6, 8) of an otherwise valid id.
        3 => {
            let version = [1u128, 2, 3, 4, 5, 6, 8][rng.below(7)];
            Uuid::from_u128(with_version(v7, version))
                .to_string()
                .into_bytes()
        }
        // Nil, max, and upper-case / braced / simple / urn forms of a v4.
        4 => {
            let v4 = Uuid::from_u128(with_version(
                u128::from(rng.next()) << 64 | 0x8000_0000_0000_0000,
                4,
            ));
            match rng.below(6) {
                0 => Uuid::nil().to_string(),
                1 => Uuid::max().to_string(),
                2 => v4.to_string().to_uppercase(),
                3 => v4.braced().to_string(),
                4 => v4.simple().to_string(),
                _ => v4.urn().to_string(),
            }
            .into_bytes()
        }
        // A v7 with the wrong variant bits (not an RFC 4122 UUID).
        5 => Uuid::from_u128(v7 & !(0b11 << 62)).to_string().into_bytes(),
        // A valid v7 with one character cut, added, or replaced by a non-hex one.
        6 => {
            let mut s = Uuid::from_u128(v7).to_string().into_bytes();
            let at = rng.below(s.len());
            match rng.below(3) {
                0 => {
                    s.remove(at);
                }
                1 => s.insert(at, b'0'),
                _ => s[at] = b"gxz!{ "[rng.below(6)],
            }
            if s.iter().all(|b| b.is_ascii_whitespace()) {
                s = b"x".to_vec();
            }
            s
        }
        // Control bytes, NUL among them.
        7 => {
            let mut s = Uuid::from_u128(v7).to_string().into_bytes();
            // Inside the id: leading or trailing blanks are trimmed.
            let at = 1 + rng.below(s.len() - 1);
            s.insert(at, rng.below(32) as u8);
            s
        }
        // Bytes that are not UTF-8.
        8 => (0..1 + rng.below(40))
            .map(|_| 0x80 + rng.below(128) as u8)
            .collect(),
        // A valid v7 followed by junk (SQL, a second id, a frame break).
        9 => {
            let tail = [
                "' OR 1=1 --",
                ",00000000-0000-7000-8000-000000000000",
                "\r\nid: 1",
                "%",
                "/..",
            ];
            let mut s = Uuid::from_u128(v7).to_string();
            s.push_str(tail[rng.below(tail.len())]);
            s.into_bytes()
        }
        // Numbers: an event sequence, negative, huge, float.
        10 => ["0", "-1", "18446744073709551616", "1e9", "NaN"][rng.below(5)]
            .to_owned()
            .into_bytes(),
        // Percent-sign junk that survives one decoding.
        _ => format!("%{:02x}%zz%{}", rng.below(256), rng.below(10)).into_bytes(),
    }
}

/// `bytes` as a query value: unreserved ASCII as is (so 10 KB of letters
/// stays 10 KB on the wire), everything else percent-encoded.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `bytes` can travel as an HTTP header value at all (no NUL, CR,
/// LF or other control bytes but tab; obs-text 0x80-0xFF is allowed).
fn header_safe(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        && !bytes.iter().all(|b| b.is_ascii_whitespace())
}

#[tokio::test]
async fn a_thousand_garbage_cursors_are_400_on_both_endpoints_and_both_carriers() -> TestResult {
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let before = write(
        &app.store,
        vec![event("a", SourceType::Rss, &[], "before", "")],
    )
    .await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut header_cases = 0;
    for i in 0..1000 {
        let raw = garbage_cursor(i, &mut rng);
        let shown = String::from_utf8_lossy(&raw)
            .chars()
            .take(80)
            .collect::<String>();
        for path in ["/v1/stream", "/v1/events"] {
            let pq = format!("{path}?since={}", percent_encode(&raw));
            let (status, body) = app.problem(&pq, None).await?;
            assert_eq!(
                (status, body["parameter"].as_str()),
                (400, Some("since")),
                "case {i} ({shown:?}) as since= on {path}: {body}"
            );
            if header_safe(&raw) {
                header_cases += 1;
                let res = app
                    .http
                    .get(format!("{}{path}", app.base))
                    .header("X-API-Key", &app.key)
                    .header(
                        "Last-Event-ID",
                        reqwest::header::HeaderValue::from_bytes(&raw)?,
                    )
                    .send()
                    .await?;
                let status = res.status().as_u16();
                let ct = res
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body: serde_json::Value = res.json().await?;
                assert_eq!(
                    (status, ct.as_str(), body["parameter"].as_str()),
                    (400, "application/problem+json", Some("Last-Event-ID")),
                    "case {i} ({shown:?}) as Last-Event-ID on {path}: {body}"
                );
            }
        }
    }
    // Most families fit a header; the count guards against a generator bug
    // that would silently skip the header carrier.
    assert!(header_cases > 1200, "only {header_cases} header cases");
    // Still serving: a valid cursor replays what was written.
    let since = uuid_floor_at(livestrom_engine::event::ms_of(before[0].event.id) - 1);
    let page = app.events(&format!("since={since}")).await?;
    assert_eq!(json_ids(&page), vec![before[0].event.id.to_string()]);
    Ok(())
}

#[tokio::test]
async fn any_standard_spelling_of_a_v7_cursor_is_the_same_position() -> TestResult {
    // STREAM-API.md: the cursor is a UUIDv7 in any standard text form
    // (hyphenated, simple, braced, urn, either case, surrounding blanks).
    let app = spawn_app(Duration::from_secs(30), 20).await?;
    let written = write(
        &app.store,
        (0..3)
            .map(|i| event("a", SourceType::Rss, &[], &format!("s{i}"), ""))
            .collect(),
    )
    .await?;
    let cursor = written[0].event.id;
    let want: Vec<String> = written[1..]
        .iter()
        .map(|e| e.event.id.to_string())
        .collect();
    for form in [
        cursor.to_string(),
        cursor.to_string().to_uppercase(),
        cursor.simple().to_string(),
        cursor.braced().to_string(),
        cursor.urn().to_string(),
        format!(" {cursor} "),
    ] {
        let page = app
            .events(&format!("since={}", percent_encode(form.as_bytes())))
            .await?;
        assert_eq!(json_ids(&page), want, "since={form}");
        let res = app.get("/v1/events", Some(&form)).await?;
        assert_eq!(res.status(), 200, "Last-Event-ID: {form}");
        let page: serde_json::Value = res.json().await?;
        assert_eq!(json_ids(&page), want, "Last-Event-ID: {form}");
    }
    Ok(())
}

#[tokio::test]
async fn the_oldest_retained_id_replays_fully_and_the_newest_pruned_one_is_410() -> TestResult {
    // Retention is real (the store's clock-based floor and its prune), so the
    // test waits for the clock to move past the first batch.
    let retention = Duration::from_secs(5);
    let app = spawn_app_with(Duration::from_secs(30), 20, retention, |store| {
        Arc::new(store.clone())
    })
    .await?;
    let old = write(
        &app.store,
        (0..3)
            .map(|i| event("a", SourceType::Rss, &[], &format!("old{i}"), ""))
            .collect(),
    )
    .await?;
    let old_ms = livestrom_engine::event::ms_of(old[2].event.id) as i64;
    crate::helpers::wait_for(
        "the clock to pass the first batch's retention",
        WAIT,
        || async { Utc::now().timestamp_millis() > old_ms + retention.as_millis() as i64 + 1 },
    )
    .await;
    let kept = write(
        &app.store,
        (0..4)
            .map(|i| event("a", SourceType::Rss, &[], &format!("kept{i}"), ""))
            .collect(),
    )
    .await?;
    assert_eq!(
        app.store.prune().await?,
        3,
        "only the first batch is pruned"
    );
    let oldest = kept[0].event.id;
    let newest_pruned = old[2].event.id;
    let kept_ids: Vec<String> = kept.iter().map(|e| e.event.id.to_string()).collect();

    // Just below the oldest retained id: every retained event, the oldest included.
    let below_oldest = Uuid::from_u128(oldest.as_u128() - 1);
    let page = app
        .events(&format!("since={below_oldest}&limit=100"))
        .await?;
    assert_eq!(json_ids(&page), kept_ids);
    // At the oldest retained id: everything after it, on both endpoints.
    let page = app.events(&format!("since={oldest}&limit=100")).await?;
    assert_eq!(json_ids(&page), kept_ids[1..]);
    let mut s = app.sse("", Some(&oldest.to_string())).await?;
    let got = collect_until(&mut s, kept[3].event.id).await?;
    assert_eq!(got, ids_of(&kept[1..]));
    drop(s);
    // The newest pruned id (one older than the oldest retained): 410.
    for (pq, header) in [
        (format!("/v1/events?since={newest_pruned}"), None),
        (format!("/v1/stream?since={newest_pruned}"), None),
        ("/v1/stream".to_owned(), Some(newest_pruned.to_string())),
    ] {
        let (status, body) = app.problem(&pq, header.as_deref()).await?;
        assert_eq!(status, 410, "{pq} {header:?}: {body}");
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("cursor-expired")),
            "{body}"
        );
    }
    // The window still held the kept batch throughout (else the 200s above
    // were luck, not the boundary).
    assert!(
        app.store.retention_floor() <= below_oldest,
        "the box was too slow: the kept batch left the window during the test"
    );
    Ok(())
}
