//! Unit tests of the store: writes, reads and ids across a restart, the
//! watermark under concurrent commits, and the open errors users see.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{
    open_connection, EventLog, ItemState, NewEvent, ReadScope, SourceState, Store, StoreError,
    WriteBatch,
};
use crate::bus::Bus;
use crate::event::{SourceType, StreamEvent};

/// What a test returns: setup failures (temp dirs, channels) are not store
/// errors, so any error ends the test.
pub(super) type TestResult = Result<(), Box<dyn std::error::Error>>;

pub(super) fn ev(source: &str, item: &str) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: source.into(),
            source_type: SourceType::Rss,
            url: "https://example.com/".into(),
            title: format!("title {item}"),
            content: "content".into(),
            tags: vec![],
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: item.into(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        },
        fingerprint: "fp".into(),
        aliases: vec!["a1".into()],
    }
}

/// Events with id at or below `w` visible right now.
fn visible_upto(store: &Store, w: Uuid) -> Result<usize, StoreError> {
    store.read_blocking(|c| {
        Ok(c.query_row(
            "SELECT count(*) FROM events WHERE id <= ?1",
            [w.as_bytes().as_slice()],
            |r| r.get::<_, i64>(0),
        )? as usize)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_never_passes_an_event_minted_but_not_committed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        &dir.path().join("t.db"),
        Duration::from_secs(3600),
        Bus::new(),
    )?;
    // Empty log: the watermark is "now", and later commits are above it.
    let w0 = store.watermark()?;
    let first = store
        .write(WriteBatch {
            events: vec![ev("s", "0")],
            ..Default::default()
        })
        .await?;
    assert!(first[0].event.id > w0);
    // Big transactions in flight while readers take watermarks: every
    // event at or below a watermark must already be visible when it is
    // handed out (nothing below it may appear later).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..4 {
                let events = (0..5000)
                    .map(|i| ev("s", &format!("{round}-{i}")))
                    .collect();
                store
                    .write(WriteBatch {
                        events,
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<_, StoreError>(())
        })
    };
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let w = store.watermark()?;
                seen.push((w, visible_upto(&store, w)?));
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(seen)
        })
    };
    writer.await??;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await?.map_err(|e| e.to_string())?;
    for (w, then) in seen {
        assert_eq!(
            visible_upto(&store, w)?,
            then,
            "an event at or below watermark {w} was committed after it was handed out"
        );
    }
    Ok(())
}

#[tokio::test]
async fn write_read_and_restart_keeps_ids_increasing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let bus = Bus::new();
    let mut live = bus.subscribe();
    let store = Store::open(&path, Duration::from_secs(3600), bus)?;
    let batch = WriteBatch {
        events: vec![ev("a.b", "1"), ev("a.c", "2"), ev("b", "3")],
        source: Some(SourceState {
            source_id: "a.b".into(),
            etag: Some("x".into()),
            initialized: true,
            ..Default::default()
        }),
        touch_items: vec![],
        refresh_items: false,
    };
    let out = store.write(batch).await?;
    assert_eq!(out.len(), 3);
    assert!(out[0].event.id < out[1].event.id && out[1].event.id < out[2].event.id);
    let published = live.recv().await?;
    assert_eq!(published.len(), 3);

    let scope = ReadScope {
        prefixes: vec!["a.".into()],
        ..Default::default()
    };
    let rows = store.read_after(Uuid::nil(), 10, &scope)?;
    assert_eq!(
        rows.iter()
            .map(|r| r.source_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a.b", "a.c"]
    );
    let rows = store.read_after(out[0].event.id, 10, &ReadScope::default())?;
    assert_eq!(rows.len(), 2);

    let items = store.items("a.b").await?;
    assert_eq!(items.len(), 1);
    // A held-back item (version 0, never emitted) reads back as version 0,
    // through both lookups.
    let held = ItemState {
        item_id: "held".into(),
        version: 0,
        last_event_id: Uuid::nil(),
        fingerprint: "f".into(),
        aliases: vec![],
        seen_at: 0,
    };
    // What was written, with the write time the store gave it.
    let unstamped = |v: Vec<ItemState>| -> Vec<ItemState> {
        v.into_iter()
            .map(|i| ItemState { seen_at: 0, ..i })
            .collect()
    };
    store
        .write(WriteBatch {
            source: Some(SourceState {
                source_id: "h".into(),
                ..Default::default()
            }),
            touch_items: vec![held.clone()],
            ..Default::default()
        })
        .await?;
    assert_eq!(unstamped(store.items("h").await?), vec![held.clone()]);
    assert_eq!(
        unstamped(store.items_by_ids("h", vec!["held".into()]).await?),
        vec![held]
    );
    assert_eq!(items[0].aliases, vec!["a1".to_string()]);
    let st = store
        .source_state("a.b")
        .await?
        .ok_or(StoreError::Corrupt("missing".into()))?;
    assert_eq!(st.etag.as_deref(), Some("x"));
    assert_eq!(st.event_count, 3);
    let last = out[2].event.id;
    drop(store);

    let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
    let out2 = store
        .write(WriteBatch {
            events: vec![ev("b", "4")],
            ..Default::default()
        })
        .await?;
    assert!(out2[0].event.id > last);
    assert_eq!(store.head()?, Some(out2[0].event.id));
    Ok(())
}

/// One failed group commit reaches every submitter as the same typed error
/// (the writer shares it), and nothing of the group is stored or published.
#[tokio::test]
async fn a_failed_commit_is_reported_to_every_submitter() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("c.db");
    let bus = Bus::new();
    let mut live = bus.subscribe();
    let store = Store::open(&path, Duration::from_secs(3600), bus)?;
    // Every event insert aborts the transaction, as a full disk would.
    open_connection(&path)?.execute_batch(
        "CREATE TRIGGER fail BEFORE INSERT ON events \
         BEGIN SELECT RAISE(ABORT, 'injected commit failure'); END;",
    )?;
    let batch = |item: &str| WriteBatch {
        events: vec![ev("s", item)],
        ..Default::default()
    };
    let (a, b) = tokio::join!(store.write(batch("1")), store.write(batch("2")));
    for r in [a, b] {
        let e = r.err().ok_or("a write into a failing commit succeeded")?;
        assert!(matches!(e, StoreError::Commit(_)), "{e:?}");
        assert!(e.to_string().contains("injected commit failure"), "{e}");
    }
    assert_eq!(store.head()?, None);
    assert!(live.try_recv().is_err(), "a failed commit was published");
    open_connection(&path)?.execute_batch("DROP TRIGGER fail;")?;
    assert_eq!(store.write(batch("3")).await?.len(), 1);
    Ok(())
}

#[test]
fn locked_database_is_a_clear_open_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("locked.db");
    drop(Store::open(&path, Duration::from_secs(60), Bus::new())?);
    let holder = open_connection(&path)?;
    holder.execute_batch("BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('x', 'y');")?;
    let err = Store::open(&path, Duration::from_secs(60), Bus::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("locked by another process"), "{err}");
    holder.execute_batch("ROLLBACK;")?;
    Ok(())
}

#[test]
fn garbage_file_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bad.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap_or_else(|e| panic!("{e}"));
    let err = Store::open(&path, Duration::from_secs(60), Bus::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not a SQLite database"), "{err}");
}

/// `[engine] synchronous` reaches the writer's connection: `normal` by
/// default, `full` when configured (what a power loss can take back depends
/// on it; RELIABILITY.md *Power loss*).
#[tokio::test]
async fn the_writer_commits_with_the_configured_synchronous_level() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.db");
    let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
    assert_eq!(store.writer_synchronous().await?, 1, "NORMAL by default");
    drop(store);
    let store = Store::open_synchronous(
        &path,
        Duration::from_secs(3600),
        crate::config::Synchronous::Full,
        Bus::new(),
        crate::Metrics::new(),
    )?;
    assert_eq!(store.writer_synchronous().await?, 2, "FULL when configured");
    store
        .write(WriteBatch {
            events: vec![ev("a", "1")],
            ..Default::default()
        })
        .await?;
    Ok(())
}
