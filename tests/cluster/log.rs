//! The JetStream event log and live feed an edge reads in a cluster, against
//! a real nats-server: events published the way engines publish them are
//! read back with the ids every edge gives them, cursors are checked by
//! sequence, and the one live consumer delivers each message once, in
//! order, also across a server restart.

use std::time::Duration;

use futures::StreamExt;
use livestrom_engine::bus::{Live, LiveFeed};
use livestrom_engine::cluster::cursor::{self, Position, StreamTag};
use livestrom_engine::cluster::{JetStreamFeed, JetStreamLog};
use livestrom_engine::event::{ms_of, uuid_floor_at};
use livestrom_engine::log::{CursorCheck, LogError, LogRow, ReadScope};
use livestrom_engine::{EventLog, SourceType};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::nats::{start_nats, WAIT};
use super::publisher::{assert_is, connect, connect_to, ids, publish, publish_all, Published};
use super::TestResult;

use SourceType::{Firehose, Html, Json, Rss};

/// Runs `f` on the log from a blocking thread (the trait is blocking).
pub(crate) async fn blocking<T: Send + 'static>(
    log: &JetStreamLog,
    f: impl FnOnce(&JetStreamLog) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || f(&log)).await
}

async fn read(
    log: &JetStreamLog,
    after: Uuid,
    limit: usize,
    scope: ReadScope,
) -> Result<Vec<LogRow>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(blocking(log, move |l| l.read_after(after, limit, &scope)).await??)
}

fn row_ids(rows: &[LogRow]) -> Vec<Uuid> {
    rows.iter().map(|r| r.id).collect()
}

fn scope(sources: &[&str], prefixes: &[&str], types: &[SourceType]) -> ReadScope {
    ReadScope {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        types: types.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_nil_a_sequence_and_a_time_cursor_return_exactly_the_following_events(
) -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let log = JetStreamLog::new(cluster.clone(), Handle::current());
    let kinds = [Rss, Json, Html, Firehose];
    let events: Vec<(String, SourceType)> = (0..12)
        .map(|i| (format!("src.{}", i % 3), kinds[i % 4]))
        .collect();
    let refs: Vec<(&str, SourceType)> = events.iter().map(|(s, t)| (s.as_str(), *t)).collect();
    let published = publish_all(&cluster, &refs).await?;

    // From the start: every event, with the id its sequence and stamp give.
    let rows = read(&log, Uuid::nil(), 100, ReadScope::default()).await?;
    assert_eq!(row_ids(&rows), ids(&published));
    assert!(
        rows.windows(2).all(|w| w[0].id < w[1].id),
        "ids not increasing"
    );
    for (row, p) in rows.iter().zip(&published) {
        assert_eq!(
            cursor::decode(cluster.tag(), row.id),
            Position::AfterSeq(p.seq)
        );
        assert_eq!(
            (row.source_id.as_str(), row.source_type),
            (p.source_id.as_str(), p.source_type)
        );
        assert_is(&row.json, p)?;
    }

    // After the third event: the fourth on, exactly; paged by `limit`.
    let rows = read(&log, published[2].id, 100, ReadScope::default()).await?;
    assert_eq!(row_ids(&rows), ids(&published[3..]));
    let rows = read(&log, published[2].id, 4, ReadScope::default()).await?;
    assert_eq!(row_ids(&rows), ids(&published[3..7]));
    let mut visited = Vec::new();
    let n = blocking(&log, {
        let after = published[6].id;
        move |l| {
            l.read_after_with(after, 3, &ReadScope::default(), &mut |id, _, _, json| {
                visited.push((id, json.to_owned()));
            })
            .map(|n| (n, visited))
        }
    })
    .await??;
    assert_eq!(n.0, 3);
    assert_eq!(
        n.1.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids(&published[7..10])
    );

    // A time cursor: every event stamped at or after its millisecond (what
    // `id > uuid_floor_at(ms)` means on one node).
    let ms = ms_of(published[5].id);
    let expected: Vec<Uuid> = published
        .iter()
        .filter(|p| ms_of(p.id) >= ms)
        .map(|p| p.id)
        .collect();
    assert!(expected.contains(&published[5].id));
    let rows = read(&log, uuid_floor_at(ms), 100, ReadScope::default()).await?;
    assert_eq!(row_ids(&rows), expected);
    assert_eq!(
        blocking(&log, move |l| l.check_cursor(uuid_floor_at(ms))).await??,
        CursorCheck::Ok
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_restricted_to_the_scope_by_source_prefix_and_type() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let log = JetStreamLog::new(cluster.clone(), Handle::current());
    let published = publish_all(
        &cluster,
        &[
            ("kommun", Rss),
            ("kommun.sthlm", Rss),
            ("kommun.sthlm.press", Html),
            ("kommunal", Json),
            ("news", Rss),
            ("news", Html),
            ("kommun.gbg", Json),
            ("other", Firehose),
        ],
    )
    .await?;
    let pick = |f: &dyn Fn(&Published) -> bool| -> Vec<Uuid> {
        published.iter().filter(|p| f(p)).map(|p| p.id).collect()
    };
    let cases: Vec<(ReadScope, Vec<Uuid>)> = vec![
        (scope(&["news"], &[], &[]), pick(&|p| p.source_id == "news")),
        (
            scope(&[], &["kommun."], &[]),
            pick(&|p| p.source_id.starts_with("kommun.")),
        ),
        (scope(&[], &[], &[Rss]), pick(&|p| p.source_type == Rss)),
        (
            scope(&["news", "kommun"], &["kommun."], &[Rss]),
            pick(&|p| {
                p.source_type == Rss
                    && (p.source_id == "news"
                        || p.source_id == "kommun"
                        || p.source_id.starts_with("kommun."))
            }),
        ),
        (
            scope(&["kommun.sthlm"], &["kommun.sthlm."], &[Html, Json]),
            pick(&|p| {
                (p.source_type == Html || p.source_type == Json)
                    && (p.source_id == "kommun.sthlm" || p.source_id.starts_with("kommun.sthlm."))
            }),
        ),
        (scope(&["nobody"], &[], &[]), Vec::new()),
    ];
    for (s, want) in cases {
        let rows = read(&log, Uuid::nil(), 100, s.clone()).await?;
        assert_eq!(row_ids(&rows), want, "{s:?}");
    }

    // Too many subjects for a consumer filter (70 sources × 2 types): the
    // same rows, filtered in process, and a page is still `limit` rows
    // whenever more match (a short page means the end of the log).
    let mut many: Vec<String> = (0..68).map(|i| format!("none.{i}")).collect();
    many.push("news".into());
    many.push("kommun".into());
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let wide = scope(&refs, &[], &[Rss, Html]);
    let want =
        pick(&|p| (p.source_id == "news" || p.source_id == "kommun") && p.source_type != Json);
    assert_eq!(want.len(), 3);
    let rows = read(&log, Uuid::nil(), 100, wide.clone()).await?;
    assert_eq!(row_ids(&rows), want);
    let rows = read(&log, Uuid::nil(), 2, wide).await?;
    assert_eq!(row_ids(&rows), want[..2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_checked_by_sequence_foreign_expired_and_ahead() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let log = JetStreamLog::new(cluster.clone(), Handle::current());

    // An empty stream: no head; the watermark is the start and misses nothing.
    assert_eq!(blocking(&log, |l| l.head()).await??, None);
    let w0 = blocking(&log, |l| l.watermark()).await??;
    assert_eq!(cursor::decode(cluster.tag(), w0), Position::AfterSeq(0));
    assert_eq!(
        blocking(&log, move |l| l.check_cursor(w0)).await??,
        CursorCheck::Ok
    );
    assert!(read(&log, w0, 10, ReadScope::default()).await?.is_empty());

    let events: Vec<(&str, SourceType)> = (0..6).map(|_| ("a", Rss)).collect();
    let p = publish_all(&cluster, &events).await?;
    assert_eq!(
        row_ids(&read(&log, w0, 10, ReadScope::default()).await?),
        ids(&p)
    );
    assert_eq!(blocking(&log, |l| l.head()).await??, Some(p[5].id));
    let w = blocking(&log, |l| l.watermark()).await??;
    assert_eq!(w, p[5].id);
    assert!(read(&log, w, 10, ReadScope::default()).await?.is_empty());
    let p6 = publish(&cluster, "a", Rss, "after the watermark").await?;
    assert_eq!(
        row_ids(&read(&log, w, 10, ReadScope::default()).await?),
        vec![p6.id]
    );

    // Another stream's id — another cluster's tag, or a single node's id.
    let other = cursor::encode(StreamTag::of("OTHER", 1), 3, ms_of(p[2].id))?;
    for c in [other, Uuid::now_v7()] {
        match blocking(&log, move |l| l.check_cursor(c)).await?? {
            CursorCheck::Foreign { why } => assert!(why.contains("tag"), "{why}"),
            x => panic!("{c} is not foreign: {x:?}"),
        }
        assert!(matches!(
            read(&log, c, 10, ReadScope::default()).await,
            Err(e) if e.downcast_ref::<LogError>().is_some_and(|e| matches!(e, LogError::Cursor(_)))
        ));
    }
    // The log's order is the sequence, whatever the stamps say (the
    // leader's clock may step back); a time cursor orders by time.
    let stepped_back = cursor::encode(cluster.tag(), p6.seq + 1, ms_of(p[0].id) - 1000)?;
    assert!(stepped_back < p6.id);
    assert!(log.is_after(stepped_back, p6.id));
    assert!(!log.is_after(p6.id, stepped_back));
    assert!(log.is_after(p[1].id, p[0].id) && !log.is_after(p[0].id, p[1].id));
    assert!(log.is_after(p[0].id, uuid_floor_at(ms_of(p[0].id))));
    assert!(!log.is_after(p[0].id, uuid_floor_at(ms_of(p[0].id) + 1)));
    // Past the newest message: no event has been there.
    let ahead = cursor::position(cluster.tag(), p6.seq + 5, ms_of(p6.id))?;
    assert_eq!(
        blocking(&log, move |l| l.check_cursor(ahead)).await??,
        CursorCheck::Ahead { head: Some(p6.id) }
    );

    // Delete the first three messages, as retention does from the start.
    let purged = cluster.stream().await?.purge().sequence(p[3].seq).await?;
    assert_eq!(purged.purged, 3);
    let floor = cursor::position(cluster.tag(), p[2].seq, ms_of(p[3].id))?;
    for gone in [p[0].id, p[1].id, uuid_floor_at(ms_of(p[0].id))] {
        assert_eq!(
            blocking(&log, move |l| l.check_cursor(gone)).await??,
            CursorCheck::Expired { floor },
            "{gone}"
        );
        assert_eq!(
            blocking(&log, move |l| l.missed_after(gone)).await??,
            Some(floor)
        );
    }
    // After the last deleted message nothing is missing.
    let kept = p[2].id;
    assert_eq!(
        blocking(&log, move |l| l.check_cursor(kept)).await??,
        CursorCheck::Ok
    );
    assert_eq!(blocking(&log, move |l| l.missed_after(kept)).await??, None);
    assert_eq!(
        row_ids(&read(&log, kept, 10, ReadScope::default()).await?),
        [ids(&p[3..]), vec![p6.id]].concat()
    );
    assert_eq!(blocking(&log, |l| l.pruned_below()).await??, floor);
    assert_eq!(blocking(&log, |l| l.retention_floor()).await?, floor);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_makes_old_ids_foreign_and_the_old_reader_refuse() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let before = connect_to(&nats, "RECREATED").await?;
    let old = publish(&before, "a", Rss, "old").await?;
    let stale = JetStreamLog::new(before.clone(), Handle::current());
    before.js().delete_stream("RECREATED").await?;
    let after = connect_to(&nats, "RECREATED").await?;
    assert_ne!(before.tag(), after.tag());
    let log = JetStreamLog::new(after.clone(), Handle::current());
    let id = old.id;
    assert!(matches!(
        blocking(&log, move |l| l.check_cursor(id)).await??,
        CursorCheck::Foreign { .. }
    ));
    // A node still holding the old tag would hand out wrong ids: it refuses.
    let e = blocking(&stale, |l| l.head())
        .await?
        .err()
        .ok_or("stale head read")?;
    assert!(e.to_string().contains("recreated"), "{e}");
    Ok(())
}

/// Reads from `feed` until `n` events arrived; fails on `Lagged`.
async fn take_events(
    feed: &mut (impl futures::Stream<Item = Live> + Unpin),
    n: usize,
) -> Result<
    Vec<std::sync::Arc<livestrom_engine::CommittedEvent>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(WAIT, feed.next()).await? {
            Some(Live::Batch(b)) => out.extend(b.iter().cloned()),
            Some(Live::Lagged(k)) => return Err(format!("lagged by {k}").into()),
            None => return Err("feed ended".into()),
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_delivers_new_messages_once_in_order_to_every_follower() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    // Published before the feed starts: not live (the hub starts after
    // the log's head).
    publish_all(&cluster, &[("early", Rss), ("early", Json)]).await?;
    let cancel = CancellationToken::new();
    let feed = JetStreamFeed::start(cluster.clone(), cancel.clone()).await?;
    let mut a = feed.follow();
    let mut b = feed.follow();
    let events: Vec<(String, SourceType)> = (0..40).map(|i| (format!("s{}", i % 5), Rss)).collect();
    let refs: Vec<(&str, SourceType)> = events.iter().map(|(s, t)| (s.as_str(), *t)).collect();
    let published = publish_all(&cluster, &refs).await?;
    for follower in [&mut a, &mut b] {
        let got = take_events(follower, published.len()).await?;
        assert_eq!(
            got.iter().map(|e| e.event.id).collect::<Vec<_>>(),
            ids(&published)
        );
        for (e, p) in got.iter().zip(&published) {
            assert_is(&e.json, p)?;
        }
    }
    // Both followers share the feed's one consumer.
    let consumers = cluster.stream().await?.info().await?.state.consumer_count;
    assert_eq!(consumers, 1);
    // Stopping the feed ends its followers.
    cancel.cancel();
    let ended = tokio::time::timeout(WAIT, a.next()).await?;
    assert!(ended.is_none(), "{ended:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_resumes_where_it_stopped_when_nats_comes_back() -> TestResult {
    let Some(mut nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let cancel = CancellationToken::new();
    let feed = JetStreamFeed::start(cluster.clone(), cancel.clone()).await?;
    let mut follower = feed.follow();
    let first = publish_all(&cluster, &[("a", Rss), ("b", Rss), ("c", Rss)]).await?;
    let got = take_events(&mut follower, 3).await?;
    assert_eq!(
        got.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        ids(&first)
    );

    // The server dies and comes back (the stream is on disk; the feed's
    // consumer, in memory, is gone). Wait until the stream answers again.
    nats.stop();
    nats.start_again();
    let deadline = Instant::now() + WAIT;
    while cluster.stream().await.is_err() {
        assert!(Instant::now() < deadline, "NATS never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = Vec::new();
    for (i, s) in ["d", "e", "f"].iter().enumerate() {
        second.push(publish(&cluster, s, Json, &format!("after restart {i}")).await?);
    }
    // Exactly the new ones, once, in order — nothing skipped, no `Lagged`
    // (the consumer was created again at the next sequence).
    let got = take_events(&mut follower, 3).await?;
    assert_eq!(
        got.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        ids(&second)
    );
    cancel.cancel();
    Ok(())
}

// One thread: the feed's task cannot run before the test follows it.
#[tokio::test]
async fn messages_deleted_before_the_feed_reached_them_are_a_lag_not_a_silent_skip() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let events: Vec<(&str, SourceType)> = (0..5).map(|_| ("a", Rss)).collect();
    let p = publish_all(&cluster, &events).await?;
    // Sequences 1–3 are gone before a feed that starts at 1 reads them.
    cluster.stream().await?.purge().sequence(p[3].seq).await?;
    let cancel = CancellationToken::new();
    let feed = JetStreamFeed::start_at(cluster.clone(), 1, cancel.clone());
    let mut f = feed.follow();
    match tokio::time::timeout(WAIT, f.next()).await? {
        Some(Live::Lagged(3)) => {}
        other => panic!("expected Lagged(3) before anything, got {other:?}"),
    }
    let got = take_events(&mut f, 2).await?;
    assert_eq!(
        got.iter().map(|e| e.event.id).collect::<Vec<_>>(),
        ids(&p[3..])
    );
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_engines_sink_publishes_read_back_with_the_ids_it_gave_them() -> TestResult {
    use livestrom_engine::cluster::sink::{ClusterSink, Holdings};
    use livestrom_engine::sink::Sink;
    use livestrom_engine::store::{NewEvent, WriteBatch};
    use livestrom_engine::StreamEvent;

    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let holdings = std::sync::Arc::new(Holdings::default());
    let sink = ClusterSink::open(
        cluster.clone(),
        "engine-a",
        holdings.clone(),
        Duration::from_secs(24 * 3600),
    )
    .await?;
    let cancel = CancellationToken::new();
    let feed = JetStreamFeed::start(cluster.clone(), cancel.clone()).await?;
    let mut live = feed.follow();
    let log = JetStreamLog::new(cluster.clone(), Handle::current());
    let mut written = Vec::new();
    for source in ["news.a", "news.b"] {
        holdings.hold(source, Instant::now() + WAIT);
        let now = chrono::Utc::now();
        let events = (0..3)
            .map(|i| NewEvent {
                event: StreamEvent {
                    id: Uuid::nil(),
                    schema_version: 1,
                    source_id: source.to_owned(),
                    source_type: Rss,
                    url: format!("https://example.com/{source}/{i}"),
                    title: format!("{source} {i}"),
                    content: String::new(),
                    tags: vec![],
                    fetched_at: now,
                    emitted_at: now,
                    item_id: format!("item-{i}"),
                    version: 1,
                    supersedes: None,
                    diff: None,
                    added: None,
                    published_at: None,
                },
                fingerprint: format!("fp{i}"),
                aliases: vec![],
            })
            .collect();
        written.extend(
            sink.write(WriteBatch {
                events,
                ..Default::default()
            })
            .await?,
        );
    }
    let want: Vec<Uuid> = written.iter().map(|e| e.event.id).collect();
    let rows = read(&log, Uuid::nil(), 100, ReadScope::default()).await?;
    assert_eq!(row_ids(&rows), want);
    for (row, e) in rows.iter().zip(&written) {
        assert_eq!(
            &*row.json, &*e.json,
            "replay carries what the engine announced"
        );
    }
    let got = take_events(&mut live, written.len()).await?;
    assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), want);
    for (g, e) in got.iter().zip(&written) {
        assert_eq!(&*g.json, &*e.json);
    }
    cancel.cancel();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_reads_and_follows_the_same_through_another_node() -> TestResult {
    let Some(trio) = super::nats::start_trio() else {
        return Ok(());
    };
    let urls = trio.urls();
    let engine = super::publisher::connect_replicated(&urls[0], 3).await?;
    let edge = super::publisher::connect_replicated(&urls[2], 3).await?;
    assert_eq!(engine.tag(), edge.tag(), "one stream, one tag");
    let cancel = CancellationToken::new();
    let feed = JetStreamFeed::start(edge.clone(), cancel.clone()).await?;
    let mut live = feed.follow();
    let log = JetStreamLog::new(edge.clone(), Handle::current());
    let events: Vec<(&str, SourceType)> = (0..10).map(|i| (["a", "b"][i % 2], Rss)).collect();
    let p = publish_all(&engine, &events).await?;
    // What the feed delivered through one node, a read through it has: the
    // replay-to-live hand-over relies on that.
    let mut delivered = Vec::new();
    while delivered.len() < p.len() {
        let before = delivered.len();
        delivered.extend(take_events(&mut live, 1).await?.iter().map(|e| e.event.id));
        let after = if before == 0 {
            Uuid::nil()
        } else {
            delivered[before - 1]
        };
        let rows = read(&log, after, 100, ReadScope::default()).await?;
        for id in &delivered[before..] {
            assert!(
                row_ids(&rows).contains(id),
                "{id} delivered but not readable"
            );
        }
    }
    assert_eq!(delivered, ids(&p));
    let rows = read(&log, Uuid::nil(), 100, scope(&["b"], &[], &[])).await?;
    assert_eq!(
        row_ids(&rows),
        ids(&p).into_iter().skip(1).step_by(2).collect::<Vec<_>>()
    );
    cancel.cancel();
    Ok(())
}

/// Reads while the stream's leader changes (three times, each asked to step
/// down) return every event: requests that fail during an election are
/// tried again, not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_leader_elections_return_every_event() -> TestResult {
    let Some(trio) = super::nats::start_trio() else {
        return Ok(());
    };
    let urls = trio.urls();
    let engine = super::publisher::connect_replicated(&urls[0], 3).await?;
    let edge = super::publisher::connect_replicated(&urls[2], 3).await?;
    let events: Vec<(&str, SourceType)> = (0..20).map(|i| (["a", "b"][i % 2], Rss)).collect();
    let p = publish_all(&engine, &events).await?;
    let log = JetStreamLog::new(edge.clone(), Handle::current());
    // Reads back to back, through another node, until told to stop.
    let stop = CancellationToken::new();
    let reader = tokio::spawn({
        let (log, stop, want) = (log.clone(), stop.clone(), ids(&p));
        async move {
            let mut reads = 0;
            while !stop.is_cancelled() {
                let rows = read(&log, Uuid::nil(), 100, ReadScope::default()).await?;
                assert_eq!(row_ids(&rows), want, "read {reads}");
                let head = blocking(&log, |l| l.head()).await??;
                assert_eq!(head, want.last().copied(), "read {reads}");
                reads += 1;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(reads)
        }
    });
    let stepdown = format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", engine.names().stream());
    for _ in 0..3 {
        // A request while the last election is still on gets a 503 or no
        // answer: ask until one is accepted.
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = match engine.client().request(stepdown.clone(), "".into()).await {
                Ok(reply) => serde_json::from_slice::<serde_json::Value>(&reply.payload)?,
                Err(e) => serde_json::Value::String(e.to_string()),
            };
            if answer["success"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "no stepdown accepted: {answer}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.cancel();
    let reads = tokio::time::timeout(WAIT, reader).await???;
    assert!(reads > 0);
    Ok(())
}
