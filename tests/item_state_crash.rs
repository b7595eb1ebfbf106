//! Item state written behind the events, against `kill -9`: four firehose
//! sources whose upstream resumes 30 items early after every reconnect, so
//! after each restart the engine is sent items it already stored, and only
//! their item state keeps them from being stored again. The engine runs with
//! `LIVESTROM_ITEM_STATE_BEHIND_FROM=1`: every commit's item state goes to
//! `item_log` first, to be folded later, so a kill between two folds leaves
//! it there for the next start to fold. Afterwards, for every source: no
//! item is stored twice, none is missing, and the file is consistent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crash::{firehose_resuming_early, item_number, random, start_with, Upstream};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const SOURCES: usize = 4;
const WAIT: Duration = Duration::from_secs(60);
/// What the open logs when it folds rows a killed process left.
const RECOVERED: &str = "item state the last run had not folded";

/// Item numbers stored per source, in id order.
fn stored_items(
    db: &Path,
) -> Result<BTreeMap<String, Vec<u64>>, Box<dyn std::error::Error + Send + Sync>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT source_id, json FROM events ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in rows {
        let (source, json) = row?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        out.entry(source).or_default().push(item_number(&v));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_item_state_behind_never_stores_an_item_twice() -> TestResult {
    let rounds: u32 = std::env::var("LIVESTROM_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(20, |n: u32| n.div_ceil(2));
    let up = Arc::new(Upstream::new(Duration::from_millis(5)));
    let upstream = firehose_resuming_early(up.clone(), 30).await;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("behind.db");
    let config = dir.path().join("sources.toml");
    let mut toml = format!(
        "[engine]\ndatabase = \"{}\"\nretention = \"1h\"\n[fetch]\nallow_private_networks = true\n",
        db.display()
    );
    for k in 0..SOURCES {
        toml.push_str(&format!(
            "[[source]]\nid = \"behind.fire-{k}\"\ntype = \"firehose\"\nformat = \"sse\"\n\
             url = \"http://{upstream}/events?s={k}\"\nfields = {{ id = \"/id\", title = \"/title\" }}\n"
        ));
    }
    std::fs::write(&config, toml)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let env = [("LIVESTROM_ITEM_STATE_BEHIND_FROM", "1")];

    let mut node = start_with(&config, listen, &env);
    // Starts that folded rows a killed process had left in `item_log`.
    let mut recovered = 0;
    for _ in 0..rounds {
        // Under a second: the writer folds on its own only once it has
        // been idle a second after the last fold (here, the open's).
        let run_for = Duration::from_millis(150 + random() % 350);
        tokio::time::sleep(run_for).await;
        if node
            .1
            .lock()
            .is_ok_and(|log| log.iter().any(|l| l.contains(RECOVERED)))
        {
            recovered += 1;
        }
        node.0.kill()?;
        node.0.wait()?;
        node = start_with(&config, listen, &env);
    }
    // Let every source catch up with the upstream, then compare.
    let last = up.freeze();
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = stored_items(&db)?;
        let behind: Vec<_> = (0..SOURCES)
            .map(|k| format!("behind.fire-{k}"))
            .filter(|s| stored.get(s).and_then(|v| v.iter().max()) < Some(&last))
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sources {behind:?} never stored item {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(node);

    let conn = rusqlite::Connection::open(&db)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    drop(conn);
    for (source, items) in stored_items(&db)? {
        let distinct: BTreeSet<u64> = items.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            items.len(),
            "{source}: an item was stored twice after a kill -9"
        );
        assert_eq!(
            distinct,
            (1..=last).collect::<BTreeSet<_>>(),
            "{source}: stored items have a gap"
        );
    }
    // The rows were there to fold: the path this test is about was taken.
    assert!(
        recovered > 0,
        "no start of {rounds} found item state left in item_log"
    );
    eprintln!(
        "{rounds} kill -9 rounds, {SOURCES} sources × {last} items, {recovered} starts folded what the killed process left"
    );
    Ok(())
}
