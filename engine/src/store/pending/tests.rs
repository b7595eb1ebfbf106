//! Item state written behind the events: which writes go behind, what
//! readers see before and after a fold, what a killed process leaves,
//! reads racing folds, and when the writer folds on its own.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{FoldPolicy, BEHIND_FROM_SOURCES};
use crate::bus::Bus;
use crate::config::Synchronous;
use crate::metrics::Metrics;
use crate::store::tests::{ev, TestResult};
use crate::store::{ItemState, NewEvent, SourceState, Store, StoreError, WriteBatch};

fn open(path: &std::path::Path, fold: FoldPolicy) -> Result<Store, StoreError> {
    Store::open_folding(
        path,
        Duration::from_secs(3600),
        Synchronous::Normal,
        Bus::new(),
        Metrics::new(),
        fold,
    )
}

fn version(source: &str, item: &str, v: u32) -> NewEvent {
    let mut e = ev(source, item);
    e.event.version = v;
    e.fingerprint = format!("fp{v}");
    e
}

/// Writes `events` in one batch with an event of each of enough other
/// sources that the group spans [`BEHIND_FROM_SOURCES`]: its item state
/// goes behind.
async fn write_behind(store: &Store, mut events: Vec<NewEvent>) -> Result<(), StoreError> {
    static FILLER: AtomicU32 = AtomicU32::new(0);
    let n = FILLER.fetch_add(1, Ordering::Relaxed);
    for f in 1..BEHIND_FROM_SOURCES {
        events.push(version(&format!("filler{f}"), &format!("f{n}"), 1));
    }
    write(store, events).await
}

/// Writes `events` in one batch (one source's: in place, unless pending).
async fn write(store: &Store, events: Vec<NewEvent>) -> Result<(), StoreError> {
    let source = events.first().map(|e| SourceState {
        source_id: e.event.source_id.clone(),
        ..Default::default()
    });
    store
        .write(WriteBatch {
            events,
            source,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Rows of `item_log` and of `items` of source `s`.
fn rows(store: &Store) -> Result<(i64, i64), StoreError> {
    store.read_blocking(|c| {
        let n = |t: &str| {
            c.query_row(
                &format!("SELECT count(*) FROM {t} WHERE source_id = 's'"),
                [],
                |r| r.get(0),
            )
        };
        Ok((n("item_log")?, n("items")?))
    })
}

/// (item id, version, fingerprint) sorted: what item state decides.
fn summary(mut items: Vec<ItemState>) -> Vec<(String, u32, String)> {
    items.sort_by(|a, b| a.item_id.cmp(&b.item_id));
    items
        .into_iter()
        .map(|i| (i.item_id, i.version, i.fingerprint))
        .collect()
}

fn expected(list: &[(&str, u32)]) -> Vec<(String, u32, String)> {
    list.iter()
        .map(|(id, v)| (id.to_string(), *v, format!("fp{v}")))
        .collect()
}

/// Item reads and counts through the store's three ways in.
async fn reads(
    store: &Store,
) -> Result<(Vec<(String, u32, String)>, Vec<(String, u32, String)>, u64), StoreError> {
    let all = summary(store.items("s").await?);
    let some = summary(
        store
            .items_by_ids("s", vec!["a".into(), "c".into(), "nope".into()])
            .await?,
    );
    let count = store.source_state("s").await?.map_or(0, |s| s.item_count);
    let listed = store
        .source_states()
        .await?
        .into_iter()
        .find(|s| s.source_id == "s")
        .map_or(0, |s| s.item_count);
    assert_eq!(count, listed, "source_state and source_states disagree");
    Ok((all, some, count))
}

#[tokio::test]
async fn reads_see_the_newest_item_state_before_and_after_a_fold() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("t.db"), FoldPolicy::NEVER)?;
    write_behind(&store, vec![version("s", "a", 1), version("s", "b", 1)]).await?;
    assert_eq!(rows(&store)?, (2, 0), "many sources: behind");
    store.flush().await?;
    assert_eq!(rows(&store)?, (0, 2), "a flush folds");
    // Not folded: a new version of a folded item, and a new item.
    write_behind(&store, vec![version("s", "a", 2), version("s", "c", 1)]).await?;
    assert_eq!(
        rows(&store)?,
        (2, 2),
        "only a sweep, a flush or an open folds here"
    );

    let want = (
        expected(&[("a", 2), ("b", 1), ("c", 1)]),
        expected(&[("a", 2), ("c", 1)]),
        3,
    );
    assert_eq!(reads(&store).await?, want, "before the fold");
    store.flush().await?;
    assert_eq!(rows(&store)?, (0, 3));
    assert_eq!(reads(&store).await?, want, "after the fold");
    Ok(())
}

#[tokio::test]
async fn item_state_a_killed_process_left_unfolded_is_folded_at_open() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let store = open(&path, FoldPolicy::NEVER)?;
    write_behind(&store, vec![version("s", "a", 1), version("s", "b", 1)]).await?;
    store.flush().await?;
    write_behind(&store, vec![version("s", "a", 2), version("s", "c", 1)]).await?;
    write_behind(&store, vec![version("s", "c", 2)]).await?;
    assert_eq!(rows(&store)?, (3, 2));
    // The files as a process killed now leaves them: the writer is idle
    // (every write above was answered), nothing more is folded.
    let crashed = tempfile::tempdir()?;
    for suffix in ["", "-wal"] {
        std::fs::copy(
            dir.path().join(format!("t.db{suffix}")),
            crashed.path().join(format!("t.db{suffix}")),
        )?;
    }
    let reopened = open(&crashed.path().join("t.db"), FoldPolicy::NEVER)?;
    assert_eq!(rows(&reopened)?, (0, 3), "the open folds what was left");
    assert_eq!(
        summary(reopened.items("s").await?),
        expected(&[("a", 2), ("b", 1), ("c", 2)])
    );
    assert_eq!(reads(&reopened).await?, reads(&store).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_folds_never_misses_acknowledged_state() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("t.db"), FoldPolicy::NEVER)?;
    const VERSIONS: u32 = 300;
    // The newest version whose write was answered.
    let acked = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked) = (store.clone(), acked.clone());
        tokio::spawn(async move {
            // Behind and in place by turns: a one-source write of an item
            // still pending goes behind too, one of a folded item in place.
            for v in 1..=VERSIONS {
                if v % 3 == 0 {
                    write(&store, vec![version("s", "a", v)]).await?;
                } else {
                    write_behind(&store, vec![version("s", "a", v)]).await?;
                }
                acked.store(v, Ordering::SeqCst);
            }
            Ok::<_, StoreError>(())
        })
    };
    let folder = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut folds = 0u32;
            while !done.load(Ordering::SeqCst) {
                store.flush().await?;
                folds += 1;
            }
            Ok::<_, StoreError>(folds)
        })
    };
    let mut checked = 0u32;
    while !done.load(Ordering::SeqCst) {
        let want = acked.load(Ordering::SeqCst);
        if want == VERSIONS {
            done.store(true, Ordering::SeqCst);
        }
        let by_id = store.items_by_ids("s", vec!["a".into()]).await?;
        let all = store.items("s").await?;
        let count = store.source_state("s").await?.map_or(0, |s| s.item_count);
        for (how, got) in [("items_by_ids", &by_id), ("items", &all)] {
            let v = got.first().map_or(0, |i| i.version);
            assert!(
                got.len() <= 1 && v >= want,
                "{how} read version {v} after version {want} was acknowledged: {got:?}"
            );
        }
        if want > 0 {
            assert_eq!(count, 1, "item count after version {want}");
        }
        checked += 1;
    }
    writer.await??;
    let folds = folder.await??;
    assert!(checked > 1 && folds > 1, "reads {checked}, folds {folds}");
    Ok(())
}

#[tokio::test]
async fn the_writer_folds_every_so_many_rows_and_when_idle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let by_rows = open(
        &dir.path().join("rows.db"),
        FoldPolicy {
            rows: 25,
            every: Duration::MAX,
            ..FoldPolicy::NEVER
        },
    )?;
    // Each write appends 3 rows of `s` and BEHIND_FROM_SOURCES - 1 fillers.
    assert_eq!(
        BEHIND_FROM_SOURCES, 8,
        "the counts below assume 10 rows a write"
    );
    for batch in 0..5 {
        let events = (0..3)
            .map(|i| version("s", &format!("{batch}-{i}"), 1))
            .collect();
        write_behind(&by_rows, events).await?;
    }
    // 50 rows: folded at 30 (before the next write was taken).
    assert_eq!(rows(&by_rows)?, (6, 9));

    let idle = open(
        &dir.path().join("idle.db"),
        FoldPolicy {
            rows: usize::MAX,
            every: Duration::ZERO,
            ..FoldPolicy::NEVER
        },
    )?;
    write_behind(&idle, vec![version("s", "a", 1)]).await?;
    // Folded once the writer found nothing queued after the write; it does
    // that on its own, so wait for it (generously: a slow box).
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&idle)? != (0, 1) {
        assert!(
            Instant::now() < deadline,
            "an idle writer did not fold: {:?}",
            rows(&idle)?
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::test]
async fn one_sources_writes_go_in_place_unless_the_item_is_pending() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("t.db"), FoldPolicy::NEVER)?;
    write(&store, vec![version("s", "a", 1), version("s", "b", 1)]).await?;
    assert_eq!(rows(&store)?, (0, 2), "one source: in place");
    write_behind(&store, vec![version("s", "a", 2)]).await?;
    assert_eq!(rows(&store)?, (1, 2));
    // `a` is pending: its next version goes behind as well (in place, its
    // `items` row would be newer than the pending entry readers prefer);
    // `b` is not: in place.
    write(&store, vec![version("s", "a", 3), version("s", "b", 2)]).await?;
    assert_eq!(rows(&store)?, (2, 2));
    let want = expected(&[("a", 3), ("b", 2)]);
    assert_eq!(summary(store.items("s").await?), want);
    store.flush().await?;
    assert_eq!(rows(&store)?, (0, 2));
    assert_eq!(summary(store.items("s").await?), want);
    Ok(())
}

#[tokio::test]
async fn a_failed_fold_loses_nothing_and_the_next_one_folds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.db");
    let store = open(&path, FoldPolicy::NEVER)?;
    write_behind(&store, vec![version("s", "a", 1), version("s", "b", 1)]).await?;
    // Every write to `items` fails (as a full disk or a damaged page would
    // fail the fold's transaction).
    crate::store::open_connection(&path)?.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON items BEGIN SELECT RAISE(ABORT, 'refused'); END;",
    )?;
    store.flush().await?;
    assert_eq!(rows(&store)?, (2, 0), "the failed fold rolled back");
    let want = expected(&[("a", 1), ("b", 1)]);
    assert_eq!(summary(store.items("s").await?), want);
    write_behind(&store, vec![version("s", "a", 2)]).await?;
    crate::store::open_connection(&path)?.execute_batch("DROP TRIGGER refuse;")?;
    store.flush().await?;
    assert_eq!(rows(&store)?, (0, 2));
    assert_eq!(
        summary(store.items("s").await?),
        expected(&[("a", 2), ("b", 1)])
    );
    Ok(())
}
