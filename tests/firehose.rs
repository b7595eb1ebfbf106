//! Integration tests: firehose. JSON documents from `fixtures/firehose/` and
//! generated NDJSON / SSE upstreams are served on 127.0.0.1 (dropped
//! connections, Last-Event-ID resume, malformed lines, bursts); the in-memory
//! tests drive the decoder with `tokio::time::pause()` instead of sleeping.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{stream, Stream, StreamExt};
use livestrom_engine::config::{FirehoseSettings, SourceKind};
use livestrom_engine::runtime::upstream::{
    drive_stream, run_upstream_with, Health, StreamEnd, UpstreamBatch, UpstreamOptions, RECONNECT,
};
use livestrom_engine::scheduler::{Backoff, BackoffPolicy};
use livestrom_engine::sources::firehose::{self, StreamDecoder, StreamSpec};
use livestrom_engine::sources::Item;
use livestrom_engine::Config;
use reqwest::Url;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous bound for "this should happen": never reached on a healthy run.
const PATIENCE: Duration = Duration::from_secs(60);

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/firehose")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn settings(extra: &str) -> FirehoseSettings {
    let toml = format!("[[source]]\nid = \"hose\"\ntype = \"firehose\"\nurl = \"https://example.org/api/recent.json\"\n{extra}\n");
    let cfg = Config::from_toml(Path::new("sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("config: {e}"));
    match &cfg.source("hose").expect("source").kind {
        SourceKind::Firehose(f) => f.clone(),
        other => panic!("not a firehose source: {other:?}"),
    }
}

fn base() -> Url {
    Url::parse("https://example.org/api/recent.json").expect("base url")
}

async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The byte stream of an upstream response.
type Upstream = BoxStream<'static, Result<Bytes, reqwest::Error>>;

/// Opens the upstream with reqwest directly (the engine's fetcher is not
/// involved), sending `Last-Event-ID` when resuming.
fn connector(
    url: String,
) -> impl FnMut(Option<String>) -> BoxFuture<'static, Result<Upstream, String>> {
    let client = reqwest::Client::new();
    move |cursor| {
        let client = client.clone();
        let url = url.clone();
        Box::pin(async move {
            let mut req = client.get(&url).header(header::ACCEPT, "text/event-stream");
            if let Some(c) = cursor {
                req = req.header("Last-Event-ID", c);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            Ok(resp.bytes_stream().boxed())
        })
    }
}

/// Receives batches until `n` items arrived.
async fn collect(rx: &mut mpsc::Receiver<UpstreamBatch>, n: usize) -> Vec<UpstreamBatch> {
    let mut batches = Vec::new();
    let mut got = 0;
    while got < n {
        let batch = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("items within the patience bound")
            .expect("upstream task alive");
        got += batch.items.len();
        batches.push(batch);
    }
    batches
}

fn guids(batches: &[UpstreamBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.items.iter().map(|i| i.guid.clone().unwrap_or_default()))
        .collect()
}

fn fast() -> UpstreamOptions {
    UpstreamOptions {
        reconnect: BackoffPolicy {
            initial: Duration::from_millis(20),
            ..RECONNECT
        },
        min_backoff: Duration::from_millis(10),
        ..UpstreamOptions::default()
    }
}

// ---------------------------------------------------------------- json

#[tokio::test]
async fn json_documents_map_fields_and_show_new_items_on_the_next_poll() {
    let app = axum::Router::new()
        .route(
            "/api/recent-1.json",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    fixture("recent-1.json"),
                )
            }),
        )
        .route(
            "/api/recent-2.json",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    fixture("recent-2.json"),
                )
            }),
        );
    let server = listen(app).await;
    let s = settings("format = \"json\"\nitems = \"/items\"\nfields = { id = \"/id\", title = \"/title\", url = \"/link\", content = \"/summary\" }");

    let url1 = Url::parse(&format!("{server}/api/recent-1.json")).expect("url");
    let body = reqwest::get(url1.clone())
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    let doc = firehose::parse_json_document(&body, &s, &url1).expect("maps");
    let item = |guid: &str, url: Option<String>, title: &str, content: &str| Item {
        guid: (!guid.is_empty()).then(|| guid.to_owned()),
        url,
        title: title.to_owned(),
        content: content.to_owned(),
        ..Item::default()
    };
    assert_eq!(
        doc.parsed.items,
        vec![
            item(
                "1001",
                Some(format!("{server}/wiki/Stockholm?diff=1001")),
                "Edit: Stockholm",
                "+12 bytes"
            ),
            item(
                "rc-1002",
                Some("https://example.org/wiki/G%C3%B6teborg".to_owned()),
                "Edit: Göteborg",
                r#"{"added":40,"removed":2}"#
            ),
            item("1003", None, "42", ""),
            item(
                "",
                Some(format!("{server}/talk/Malm%C3%B6")),
                "No id, relative link",
                ""
            ),
            item("1004", None, "", "true"),
        ]
    );
    assert_eq!(
        doc.skipped, 3,
        "a string, an array and an object with none of the fields"
    );
    assert_eq!(
        firehose::parse_json(&body, &s, &url1).expect("maps"),
        doc.parsed
    );

    let url2 = Url::parse(&format!("{server}/api/recent-2.json")).expect("url");
    let body2 = reqwest::get(url2.clone())
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    let second = firehose::parse_json(&body2, &s, &url2).expect("maps");
    let seen: Vec<_> = doc
        .parsed
        .items
        .iter()
        .filter_map(|i| i.guid.clone())
        .collect();
    let new: Vec<_> = second
        .items
        .iter()
        .filter_map(|i| i.guid.clone())
        .filter(|g| !seen.contains(g))
        .collect();
    assert_eq!(new, vec!["1006".to_owned(), "1005".to_owned()]);
    let old_again = second
        .items
        .iter()
        .find(|i| i.guid.as_deref() == Some("rc-1002"))
        .expect("old item still listed");
    assert_eq!(
        Some(old_again),
        doc.parsed
            .items
            .iter()
            .find(|i| i.guid.as_deref() == Some("rc-1002")),
        "an old item maps identically"
    );
}

#[test]
fn json_root_array_default_fields_and_bad_documents() {
    let s = settings("format = \"json\"");
    let parsed =
        firehose::parse_json(&fixture("root-array.json"), &s, &base()).expect("root array");
    assert_eq!(
        parsed
            .items
            .iter()
            .map(|i| (i.guid.as_deref(), i.title.as_str(), i.content.as_str()))
            .collect::<Vec<_>>(),
        vec![(Some("a"), "First", "one"), (Some("b"), "Second", "two")]
    );

    let err = firehose::parse_json(&fixture("recent-1.json"), &s, &base())
        .expect_err("root is an object");
    assert!(matches!(err, firehose::FirehoseError::NoItems(_)), "{err}");
    let err = firehose::parse_json(b"{\"items\": [", &settings("items = \"/items\""), &base())
        .expect_err("truncated");
    assert!(matches!(err, firehose::FirehoseError::Json(_)), "{err}");
    let err = firehose::parse_json(
        b"{\"items\": {\"a\": 1}}",
        &settings("items = \"/items\""),
        &base(),
    )
    .expect_err("not an array");
    assert!(err.to_string().contains("/items"), "{err}");
    // Elements that all map to nothing: an error with the count, not an
    // empty success; an empty array is a healthy empty document.
    let err = firehose::parse_json(br#"[{"name": "x"}, "y", {"id": null}]"#, &s, &base())
        .expect_err("nothing maps");
    assert_eq!(
        err.to_string(),
        "the array at \"\" (the document root) has 3 elements but none was kept: none is an object with a value at the mapped id, title, url or content"
    );
    assert!(firehose::parse_json(b"[]", &s, &base())
        .expect("empty")
        .items
        .is_empty());
    for hostile in [&b""[..], b"\xff\xfe", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["] {
        assert!(firehose::parse_json(hostile, &s, &base()).is_err());
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(
        firehose::parse_json(deep.as_bytes(), &s, &base()).is_err(),
        "serde_json's recursion limit refuses it"
    );
}

// ---------------------------------------------------------------- ndjson

#[tokio::test]
async fn ndjson_upstream_handles_split_blank_malformed_and_oversized_lines() {
    let connections = Arc::new(AtomicUsize::new(0));
    let handler = |State(n): State<Arc<AtomicUsize>>| async move {
        if n.fetch_add(1, Ordering::SeqCst) > 0 {
            // Later connections stay open and quiet.
            return Body::from_stream(stream::pending::<Result<Bytes, Infallible>>())
                .into_response();
        }
        let long = format!("{{\"id\": 99, \"title\": \"{}\"}}\n", "x".repeat(3000));
        let chunks: Vec<Result<Bytes, Infallible>> = vec![
            Ok(Bytes::from_static(
                b"\xEF\xBB\xBF{\"id\":1,\"title\":\"a\"}\n{\"id\":2,",
            )),
            Ok(Bytes::from_static(b"\"title\":\"b\"}\r\n\n   \n")),
            Ok(Bytes::from_static(b"not json\n")),
            Ok(Bytes::from(long[..1000].to_owned())),
            Ok(Bytes::from(long[1000..].to_owned())),
            Ok(Bytes::from_static(
                b"[1, 2]\n{\"id\":3,\"title\":\"c\",\"url\":\"/items/3\"}",
            )),
        ];
        Body::from_stream(stream::iter(chunks)).into_response()
    };
    let server = listen(
        axum::Router::new()
            .route("/stream", axum::routing::get(handler))
            .with_state(connections.clone()),
    )
    .await;
    let (tx, mut rx) = mpsc::channel(8);
    let (htx, mut hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let opts = UpstreamOptions {
        max_line: 1024,
        ..fast()
    };
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(settings("format = \"ndjson\"")),
        base(),
        None,
        connector(format!("{server}/stream")),
        tx,
        htx,
        cancel.clone(),
        opts,
    ));

    let batches = collect(&mut rx, 3).await;
    assert_eq!(guids(&batches), vec!["1", "2", "3"]);
    let last = batches
        .last()
        .and_then(|b| b.items.last())
        .expect("an item");
    assert_eq!(last.url.as_deref(), Some("https://example.org/items/3"));
    assert!(
        batches.iter().all(|b| b.cursor.is_none()),
        "ndjson has no cursor"
    );

    let mut reports = Vec::new();
    while let Ok(r) = hrx.try_recv() {
        reports.push(r.map_err(|e| e.to_string()));
    }
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Err(e) if e.contains("malformed"))),
        "{reports:?}"
    );
    cancel.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops when cancelled")
        .expect("no panic");
}

#[tokio::test]
async fn a_burst_of_ten_thousand_items_arrives_batched() {
    const N: usize = 10_000;
    let handler = || async {
        let lines: Vec<String> = (0..N)
            .map(|i| format!("{{\"id\":{i},\"title\":\"item {i}\"}}\n"))
            .collect();
        let chunks: Vec<Result<Bytes, Infallible>> = lines
            .chunks(500)
            .map(|c| Ok(Bytes::from(c.concat())))
            .collect();
        Body::from_stream(stream::iter(chunks).chain(stream::pending())).into_response()
    };
    let server = listen(axum::Router::new().route("/burst", axum::routing::get(handler))).await;
    let (tx, mut rx) = mpsc::channel(2);
    let (htx, _hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(settings("format = \"ndjson\"")),
        base(),
        None,
        connector(format!("{server}/burst")),
        tx,
        htx,
        cancel.clone(),
        fast(),
    ));
    let batches = collect(&mut rx, N).await;
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(guids(&batches), want, "every item once, in order");
    assert!(
        batches.iter().all(|b| b.items.len() <= 1000),
        "no batch over the cap"
    );
    assert!(
        batches.len() <= N / 10,
        "{} batches for {N} items: not batched",
        batches.len()
    );
    cancel.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops when cancelled")
        .expect("no panic");
}

#[tokio::test]
async fn large_items_are_batched_by_size_not_only_by_count() {
    // 40 items of ~700 KiB: a count-only batch would hold all 40 (28 MiB);
    // batches close at 4 MiB of text.
    const N: usize = 40;
    let handler = || async {
        let body = "b".repeat(700 * 1024);
        let chunks: Vec<Result<Bytes, Infallible>> = (0..N)
            .map(|i| {
                Ok(Bytes::from(format!(
                    "{{\"id\":{i},\"content\":\"{body}\"}}\n"
                )))
            })
            .collect();
        Body::from_stream(stream::iter(chunks).chain(stream::pending())).into_response()
    };
    let server = listen(axum::Router::new().route("/big", axum::routing::get(handler))).await;
    let (tx, mut rx) = mpsc::channel(64);
    let (htx, _hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(settings("format = \"ndjson\"")),
        base(),
        None,
        connector(format!("{server}/big")),
        tx,
        htx,
        cancel.clone(),
        fast(),
    ));
    let batches = collect(&mut rx, N).await;
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(guids(&batches), want, "every item once, in order");
    for b in &batches {
        let bytes: usize = b.items.iter().map(|i| i.content.len()).sum();
        assert!(
            bytes < (4 << 20) + 700 * 1024 + 1024,
            "a batch of {bytes} bytes"
        );
    }
    assert!(batches.len() >= 7, "{} batches", batches.len());
    cancel.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops when cancelled")
        .expect("no panic");
}

// ---------------------------------------------------------------- sse

/// An SSE upstream of events 1..=50 that drops the first connection in the
/// middle of event 21 and resumes later connections after `Last-Event-ID`.
#[derive(Clone, Default)]
struct SseUpstream {
    /// `Last-Event-ID` of each connection, in order.
    seen: Arc<Mutex<Vec<Option<String>>>>,
    /// The test says when to drop the first connection (after it received
    /// events up to 20), so the drop point does not depend on timing.
    drop_now: Arc<tokio::sync::Notify>,
}

const LAST: u32 = 50;

fn sse_event(n: u32) -> String {
    format!("id: {n}\nevent: change\ndata: {{\"id\": {n},\ndata:  \"title\": \"event {n}\"}}\n\n")
}

async fn sse_handler(State(up): State<SseUpstream>, headers: HeaderMap) -> impl IntoResponse {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let first_connection = {
        let mut seen = up.seen.lock().expect("seen");
        seen.push(last.clone());
        seen.len() == 1
    };
    let from = last
        .as_deref()
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    let body = if first_connection {
        let mut text = String::from("\u{FEFF}: hello\r\nretry: 10\r\n\r\n");
        text.extend((from..=20).map(sse_event));
        text.push_str("id: 21\ndata: {\"id\": 21,");
        // Split the text at awkward places (inside events, between CR and LF).
        let bytes = text.into_bytes();
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let drop_now = up.drop_now.clone();
        let drop = stream::once(async move {
            drop_now.notified().await;
            Err(std::io::Error::other("upstream dropped the connection"))
        });
        Body::from_stream(stream::iter(chunks).chain(drop))
    } else {
        let text: String = (from..=LAST).map(sse_event).collect::<String>() + ": keep-alive\n\n";
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from(text))]);
        Body::from_stream(chunks.chain(stream::pending()))
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body)
}

#[tokio::test]
async fn sse_upstream_resumes_with_last_event_id_after_a_drop_without_loss_or_repeats() {
    let up = SseUpstream::default();
    let server = listen(
        axum::Router::new()
            .route("/events", axum::routing::get(sse_handler))
            .with_state(up.clone()),
    )
    .await;
    let (tx, mut rx) = mpsc::channel(4);
    let (htx, mut hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let s = settings("format = \"sse\"\nfields = { id = \"/id\", title = \"/title\" }");
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(s),
        base(),
        None,
        connector(format!("{server}/events")),
        tx,
        htx,
        cancel.clone(),
        UpstreamOptions::default(),
    ));

    let mut batches = collect(&mut rx, 20).await;
    up.drop_now.notify_one();
    batches.extend(collect(&mut rx, LAST as usize - 20).await);
    let want: Vec<String> = (1..=LAST).map(|n| n.to_string()).collect();
    assert_eq!(
        guids(&batches),
        want,
        "no item lost or repeated across the reconnect"
    );
    assert_eq!(batches.last().and_then(|b| b.cursor.as_deref()), Some("50"));
    for b in &batches {
        assert_eq!(
            b.cursor.as_deref(),
            b.items.last().and_then(|i| i.guid.as_deref()),
            "cursor = last id in the batch"
        );
    }
    assert_eq!(batches[0].items[0].title, "event 1");
    assert_eq!(
        *up.seen.lock().expect("seen"),
        vec![None, Some("20".to_owned())],
        "resumed after the last complete event"
    );
    let mut reports = Vec::new();
    while let Ok(r) = hrx.try_recv() {
        reports.push(r.map_err(|e| e.to_string()));
    }
    assert!(
        reports.iter().any(
            |r| matches!(r, Err(e) if e.contains("dropped the connection") || e.contains("failed"))
        ),
        "{reports:?}"
    );
    cancel.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops when cancelled")
        .expect("no panic");
}

#[tokio::test]
async fn sse_upstream_starts_from_a_stored_cursor() {
    let up = SseUpstream::default();
    let server = listen(
        axum::Router::new()
            .route("/events", axum::routing::get(sse_handler))
            .with_state(up.clone()),
    )
    .await;
    let (tx, mut rx) = mpsc::channel(4);
    let (htx, _hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(settings("format = \"sse\"")),
        base(),
        Some("17".to_owned()),
        connector(format!("{server}/events")),
        tx,
        htx,
        cancel.clone(),
        fast(),
    ));
    let batches = collect(&mut rx, 3).await;
    assert_eq!(guids(&batches), ["18", "19", "20"]);
    assert_eq!(
        up.seen
            .lock()
            .expect("seen")
            .first()
            .cloned()
            .flatten()
            .as_deref(),
        Some("17")
    );
    cancel.cancel();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stops when cancelled")
        .expect("no panic");
}

// ---------------------------------------------------------------- in memory

fn chunks(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, Infallible>> {
    stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_stops_the_read_so_memory_stays_bounded() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let source = stream::iter(0..100).map(move |c| {
        p.fetch_add(1, Ordering::SeqCst);
        let lines: String = (0..1000)
            .map(|i| format!("{{\"id\":{}}}\n", c * 1000 + i))
            .collect();
        Ok::<_, Infallible>(Bytes::from(lines))
    });
    let s = settings("format = \"ndjson\"");
    let (tx, mut rx) = mpsc::channel(1);
    let (htx, _hrx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let driver = tokio::spawn(async move {
        let mut dec = StreamDecoder::new(&s, base(), None, 1 << 20);
        let mut health = Health::new(htx);
        drive_stream(
            source,
            &mut dec,
            &tx,
            &mut health,
            &UpstreamOptions::default(),
            &c,
        )
        .await
    });
    // With the clock paused, this returns only once every task is idle: the driver is parked on the full channel.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        pulled.load(Ordering::SeqCst) <= 3,
        "read ahead {} chunks into a full channel",
        pulled.load(Ordering::SeqCst)
    );
    let mut total = 0;
    while let Some(b) = rx.recv().await {
        assert!(b.items.len() <= 1000);
        total += b.items.len();
    }
    assert_eq!(total, 100_000);
    let (end, sent) = driver.await.expect("driver");
    assert_eq!((end, sent), (StreamEnd::Eof, 100_000));
}

#[tokio::test(start_paused = true)]
async fn items_go_out_within_the_batch_window_and_before_an_error_ends_the_stream() {
    let s = settings("format = \"sse\"");
    let (tx, mut rx) = mpsc::channel(8);
    let (htx, _hrx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let (feed_tx, feed_rx) = mpsc::channel::<Result<Bytes, String>>(8);
    let source = tokio_stream_from(feed_rx);
    let c = cancel.clone();
    let driver = tokio::spawn(async move {
        let mut dec = StreamDecoder::new(&s, base(), None, 1 << 20);
        let mut health = Health::new(htx);
        drive_stream(
            source,
            &mut dec,
            &tx,
            &mut health,
            &UpstreamOptions::default(),
            &c,
        )
        .await
    });
    feed_tx
        .send(Ok(Bytes::from_static(b"id: a\ndata: {\"id\":\"x\"}\n\n")))
        .await
        .expect("feed");
    // The first item waits at most the batch window, then goes out alone.
    let first = rx.recv().await.expect("batch");
    assert_eq!((first.items.len(), first.cursor.as_deref()), (1, Some("a")));
    feed_tx
        .send(Ok(Bytes::from_static(
            b"id: b\ndata: {\"id\":\"y\"}\n\ndata: not json\n\n",
        )))
        .await
        .expect("feed");
    feed_tx
        .send(Err("connection reset".to_owned()))
        .await
        .expect("feed");
    let second = rx
        .recv()
        .await
        .expect("flushed before the error ends the stream");
    assert_eq!(
        (second.items[0].guid.as_deref(), second.cursor.as_deref()),
        (Some("y"), Some("b"))
    );
    let (end, sent) = driver.await.expect("driver");
    assert_eq!(
        (end, sent),
        (StreamEnd::Error("connection reset".to_owned()), 2)
    );
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(start_paused = true)]
async fn an_idle_upstream_is_reconnected_and_cancel_stops_everything() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let connect = move |_cursor: Option<String>| {
        let n = a.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                // Silent forever: only the idle timeout gets us out.
                Ok::<_, String>(chunks(vec![]).chain(stream::pending()).boxed())
            } else if n == 1 {
                Err("connection refused".to_owned())
            } else {
                Ok(chunks(vec![b"{\"id\":\"after-idle\"}\n".to_vec()])
                    .chain(stream::pending())
                    .boxed())
            }
        }
    };
    let (tx, mut rx) = mpsc::channel(4);
    let (htx, mut hrx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_upstream_with(
        StreamSpec::new(settings("format = \"ndjson\"")),
        base(),
        None,
        connect,
        tx,
        htx,
        cancel.clone(),
        UpstreamOptions::default(),
    ));
    let batch = rx.recv().await.expect("item after the reconnects");
    assert_eq!(batch.items[0].guid.as_deref(), Some("after-idle"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let mut reports = Vec::new();
    while let Ok(r) = hrx.try_recv() {
        reports.push(r.map_err(|e| e.to_string()));
    }
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Err(e) if e.contains("no data from the upstream for 90s"))),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| matches!(r, Err(e) if e.contains("connection refused"))),
        "{reports:?}"
    );
    assert_eq!(reports.last(), Some(&Ok(())));
    cancel.cancel();
    task.await.expect("returns once cancelled");
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
    let mut b = Backoff::new(RECONNECT);
    let mut delays = Vec::new();
    for _ in 0..10 {
        delays.push(b.next_delay());
    }
    for (i, d) in delays.iter().enumerate() {
        let full = Duration::from_secs(1u64 << i.min(6)).min(Duration::from_secs(60));
        assert!(
            *d >= full / 2 && *d <= full,
            "attempt {i}: {d:?} not in [{:?}, {full:?}]",
            full / 2
        );
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_secs(1));
}

/// Waiting on a slow store is not upstream idleness: the idle timeout counts
/// from the last bytes or the last delivered batch, whichever is later.
#[tokio::test(start_paused = true)]
async fn time_blocked_on_a_full_channel_does_not_count_as_idle() {
    let lines: String = (0..2000).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let source = chunks(vec![lines.into_bytes()]).chain(stream::pending());
    let s = settings("format = \"ndjson\"");
    let (tx, mut rx) = mpsc::channel(1);
    let (htx, _hrx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let opts = UpstreamOptions::default();
    let idle = opts.idle_timeout;
    let driver = tokio::spawn(async move {
        let mut dec = StreamDecoder::new(&s, base(), None, 1 << 20);
        let mut health = Health::new(htx);
        drive_stream(source, &mut dec, &tx, &mut health, &opts, &cancel).await
    });
    // The store is stalled for longer than the idle timeout.
    tokio::time::sleep(idle * 3).await;
    let mut got = 0;
    while got < 2000 {
        got += rx.recv().await.expect("batch").items.len();
    }
    let drained_at = tokio::time::Instant::now();
    let (end, sent) = driver.await.expect("driver");
    assert_eq!((end, sent), (StreamEnd::Idle, 2000));
    assert!(
        drained_at.elapsed() >= idle,
        "idle was declared {:?} after the stall ended",
        drained_at.elapsed()
    );
}

/// Group commit on the upstream side: an item that arrives while the store
/// has nothing queued goes out at once (no batch window); items arriving
/// while a batch waits for the store gather into one batch, sent as soon as
/// the store takes the queued one — long before the window ends.
#[tokio::test(start_paused = true)]
async fn an_item_for_an_idle_store_goes_out_at_once_and_a_busy_store_gets_one_batch() {
    let s = settings("format = \"sse\"");
    let (tx, mut rx) = mpsc::channel(8);
    let (htx, _hrx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let (feed_tx, feed_rx) = mpsc::channel::<Result<Bytes, String>>(8);
    let source = tokio_stream_from(feed_rx);
    let c = cancel.clone();
    let opts = UpstreamOptions {
        batch_window: Duration::from_secs(10),
        ..UpstreamOptions::default()
    };
    let driver = tokio::spawn(async move {
        let mut dec = StreamDecoder::new(&s, base(), None, 1 << 20);
        let mut health = Health::new(htx);
        drive_stream(source, &mut dec, &tx, &mut health, &opts, &c).await
    });
    let start = tokio::time::Instant::now();
    let item = |n: u32| {
        Ok(Bytes::from(format!(
            "id: {n}\ndata: {{\"id\":\"i{n}\"}}\n\n"
        )))
    };
    feed_tx.send(item(1)).await.expect("feed");
    // Nothing queued for the store: out at once, not after the window.
    let first = rx.recv().await.expect("batch");
    assert_eq!(first.items.len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        start.elapsed()
    );
    // The store is busy: item 2 goes out and stays queued (not received)…
    feed_tx.send(item(2)).await.expect("feed");
    tokio::task::yield_now().await;
    // …and items 3..=5 arrive while it is queued.
    for n in 3..=5 {
        feed_tx.send(item(n)).await.expect("feed");
    }
    // Let the reader absorb them (paused time: these sleeps are instant and
    // far shorter than the window).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = rx.recv().await.expect("batch");
    assert_eq!(second.cursor.as_deref(), Some("2"));
    // The store took the queued batch: the three gathered items follow as one.
    let third = rx.recv().await.expect("batch");
    assert_eq!((third.items.len(), third.cursor.as_deref()), (3, Some("5")));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        start.elapsed()
    );
    cancel.cancel();
    drop(feed_tx);
    let _ = driver.await;
}
