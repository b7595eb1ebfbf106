//! Sources spread across engine processes by rendezvous hashing, and
//! moved when an engine joins: every source held by exactly one engine,
//! every engine holding some.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use livestrom_engine::cluster::lease::owner;

use crate::helpers::print_log_tail;
use tokio::time::Instant;

use super::failover::{growing_feed, start_node};
use super::nats::{start_nats, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Enough that rendezvous hashing gives each of three engines a share all
/// but surely: with 12, one engine of three owned none about 1 run in 130
/// (`(2/3)^12`), and the test failed on chance rather than a defect; with
/// 48 that is about 1 in 10^8.
const SOURCES: usize = 48;

/// Source → holder, from the leases bucket.
async fn holders(js: &jetstream::Context) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(kv) = js.get_key_value("LIVESTROM_LEASES").await else {
        return out;
    };
    for i in 0..SOURCES {
        let key = format!("spread.s{i}");
        if let Ok(Some(v)) = kv.get(&key).await {
            out.insert(key, String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

/// Waits until every source is held and exactly `engines` engines hold some;
/// on failure prints the engines' logs (`*.log` in `logs`).
async fn settled(
    js: &jetstream::Context,
    engines: usize,
    logs: &std::path::Path,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let h = holders(js).await;
        let distinct: Vec<String> = h
            .values()
            .collect::<BTreeSet<&String>>()
            .into_iter()
            .cloned()
            .collect();
        // Settled: every source held by the engine rendezvous hashing
        // names among the holders (not a moment of a hand-over).
        if h.len() == SOURCES
            && distinct.len() == engines
            && h.iter()
                .all(|(source, holder)| owner(source, &distinct) == Some(holder.as_str()))
        {
            return h;
        }
        if Instant::now() >= deadline {
            for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let what = path.display().to_string();
                    print_log_tail(&what, &lines[lines.len().saturating_sub(60)..]);
                }
            }
            panic!("leases never spread over {engines} engines: {h:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_spread_over_engines_and_move_when_one_joins() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let upstream = growing_feed(Arc::new(AtomicU64::new(3)), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    let mut toml = format!(
        "[engine]\nretention = \"1h\"\n[fetch]\nallow_private_networks = true\nper_host_rps = 100\n[cluster]\nnats = [\"{}\"]\nlease = \"2s\"\n[tiers]\nrss = \"1s\"\n",
        nats.url
    );
    for i in 0..SOURCES {
        toml.push_str(&format!(
            "[[source]]\nid = \"spread.s{i}\"\ntype = \"rss\"\nurl = \"http://{upstream}/feed.xml\"\n"
        ));
    }
    std::fs::write(&config, toml)?;
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let _a = start_node(&config, "engine", None, &dir.path().join("a.log"));
    let _b = start_node(&config, "engine", None, &dir.path().join("b.log"));
    let two = settled(&js, 2, dir.path()).await;
    let _c = start_node(&config, "engine", None, &dir.path().join("c.log"));
    let three = settled(&js, 3, dir.path()).await;
    // Only the newcomer's share moved: a source moved between the two
    // first engines would be churn rendezvous hashing avoids.
    let newcomer: BTreeSet<&String> = three
        .values()
        .filter(|h| !two.values().any(|old| old == *h))
        .collect();
    assert_eq!(newcomer.len(), 1, "{three:?}");
    for (source, holder) in &three {
        if !newcomer.contains(holder) {
            assert_eq!(
                Some(holder),
                two.get(source),
                "{source} moved between the old engines"
            );
        }
    }
    Ok(())
}
