//! Unit tests of retention: the event prune and its floor, the item-state
//! sweep (chunked, per source, forgetting removed sources) and the refresh
//! that keeps an unchanged feed's items.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::bus::Bus;
use crate::event::{SourceType, StreamEvent};
use crate::store::tests::{ev, TestResult};
use crate::store::{
    open_connection, EventLog, ItemState, NewEvent, ReadScope, SourceState, Store, WriteBatch,
};

#[tokio::test]
async fn prune_items_forgets_stale_state_of_sources_polled_since() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("items.db");
    let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
    let polled_now = |id: &str| SourceState {
        source_id: id.into(),
        last_success_at: Some(Utc::now()),
        ..Default::default()
    };
    // "live": polled just now; "down": last success long ago.
    for (sid, source) in [
        ("live", polled_now("live")),
        (
            "down",
            SourceState {
                source_id: "down".into(),
                last_success_at: Some(Utc::now() - chrono::Duration::days(30)),
                ..Default::default()
            },
        ),
    ] {
        store
            .write(WriteBatch {
                events: (0..10).map(|i| ev(sid, &format!("item{i:02}"))).collect(),
                source: Some(source),
                ..Default::default()
            })
            .await?;
    }
    // Age every even item of both sources past the horizon (in `items`,
    // where the writer folds item state: flushed first).
    store.flush().await?;
    let old = (Utc::now() - chrono::Duration::days(30)).timestamp();
    let conn = open_connection(&path)?;
    conn.execute(
        "UPDATE items SET seen_at = ?1 WHERE CAST(substr(item_id, 5) AS INTEGER) % 2 = 0",
        [old],
    )?;
    drop(conn);

    // "gone": no longer configured, last polled long ago; "just-removed":
    // no longer configured but polled an hour ago.
    for (sid, polled) in [
        ("gone", Utc::now() - chrono::Duration::days(30)),
        ("just-removed", Utc::now() - chrono::Duration::hours(1)),
    ] {
        store
            .write(WriteBatch {
                events: (0..4).map(|i| ev(sid, &format!("item{i:02}"))).collect(),
                source: Some(SourceState {
                    source_id: sid.into(),
                    last_poll_at: Some(polled),
                    last_success_at: Some(polled),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
    }
    let configured: HashSet<String> = ["live", "down"].map(String::from).into();

    // Small steps: the sweep has to carry its position across chunks.
    let deleted = store.prune_items_chunked(&configured, 3).await?;
    assert_eq!(deleted, 5 + 4);
    assert!(store.items("gone").await?.is_empty());
    assert_eq!(
        store.source_state("gone").await?,
        None,
        "forgotten entirely"
    );
    assert_eq!(store.items("just-removed").await?.len(), 4);
    assert!(store.source_state("just-removed").await?.is_some());
    let ids = |items: Vec<ItemState>| -> Vec<String> {
        let mut v: Vec<String> = items.into_iter().map(|i| i.item_id).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(store.items("live").await?),
        ["item01", "item03", "item05", "item07", "item09"]
    );
    assert_eq!(
        store.items("down").await?.len(),
        10,
        "a source that was down keeps its items"
    );
    // Nothing left to do.
    assert_eq!(store.prune_items(&configured).await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_unchanged_source_refreshes_its_items_so_they_are_not_pruned() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("refresh.db");
    let store = Store::open(&path, Duration::from_secs(3600), Bus::new())?;
    let polled = || SourceState {
        source_id: "quiet".into(),
        last_success_at: Some(Utc::now()),
        ..Default::default()
    };
    store
        .write(WriteBatch {
            events: (0..3).map(|i| ev("quiet", &format!("i{i}"))).collect(),
            source: Some(polled()),
            ..Default::default()
        })
        .await?;
    // A week of 304s: the items were last written long ago.
    let old = (Utc::now() - chrono::Duration::days(7)).timestamp();
    store.flush().await?;
    open_connection(&path)?.execute("UPDATE items SET seen_at = ?1", [old])?;
    // Another 304.
    store
        .write(WriteBatch {
            source: Some(polled()),
            refresh_items: true,
            ..Default::default()
        })
        .await?;
    let configured: HashSet<String> = ["quiet".to_owned()].into();
    assert_eq!(store.prune_items(&configured).await?, 0);
    assert_eq!(store.items("quiet").await?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn prune_removes_events_outside_retention_and_raises_the_floor() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let store = Store::open(&path, Duration::from_millis(200), Bus::new())?;
    let ev = |n: u32| NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: "s".into(),
            source_type: SourceType::Rss,
            url: String::new(),
            title: format!("{n}"),
            content: String::new(),
            tags: vec![],
            fetched_at: Utc::now(),
            emitted_at: Utc::now(),
            item_id: format!("{n}"),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        },
        fingerprint: String::new(),
        aliases: vec![],
    };
    let old = store
        .write(WriteBatch {
            events: vec![ev(1), ev(2)],
            ..Default::default()
        })
        .await?;
    // Let the first two events age past the 200 ms window (wall-clock
    // retention is what is under test, so real time has to pass).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.retention_floor() <= old[1].event.id {
        assert!(
            std::time::Instant::now() < deadline,
            "retention floor never passed the old events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = store
        .write(WriteBatch {
            events: vec![ev(3)],
            ..Default::default()
        })
        .await?;
    assert_eq!(store.prune().await?, 2);
    let left = store.read_after(Uuid::nil(), 10, &ReadScope::default())?;
    assert_eq!(
        left.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![fresh[0].event.id]
    );
    assert!(store.retention_floor() > old[1].event.id);
    // Item state survives pruning: an old item is still known.
    assert_eq!(store.items("s").await?.len(), 3);
    Ok(())
}
