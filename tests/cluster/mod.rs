//! Cluster building blocks against a real nats-server (JetStream) started on
//! 127.0.0.1 by the test and stopped by PID. `.ci/run` installs a pinned
//! nats-server and sets `LIVESTROM_REQUIRE_NATS=1`; elsewhere a missing
//! server is reported and the test returns early.

use std::collections::HashMap;
use std::time::Duration;

use livestrom_engine::cluster::bucket::LeaseBucket;
use livestrom_engine::cluster::lease::{plan, pollable, Lease, LeaseTiming};
use tokio::time::Instant;

mod e2e;
mod edge;
mod failover;
mod faults;
mod keys;
mod log;
mod nats;
mod publisher;
mod replicas;
mod spread;

use nats::{start_nats, WAIT};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One engine's view: its id and its handle on the bucket.
struct Engine {
    id: String,
    bucket: LeaseBucket,
    view: HashMap<String, Lease>,
}

impl Engine {
    /// One round: read the leases, plan, apply, read again.
    async fn round(
        &mut self,
        live: &[String],
        sources: &[String],
        timing: LeaseTiming,
    ) -> TestResult {
        let leases = self.bucket.leases(sources).await?;
        let steps = plan(&self.id, live, sources, &leases, Instant::now(), timing);
        self.bucket.apply(&self.id, &steps).await?;
        self.view = self.bucket.leases(sources).await?;
        Ok(())
    }

    fn polling(&self, sources: &[String], timing: LeaseTiming) -> Vec<String> {
        let now = Instant::now();
        sources
            .iter()
            .filter(|s| pollable(&self.id, self.view.get(*s), now, timing))
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_in_a_jetstream_bucket_are_exclusive_and_taken_over_after_the_ttl() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let timing = LeaseTiming {
        ttl: Duration::from_secs(2),
    };
    let sources: Vec<String> = (0..20).map(|i| format!("src.{i}")).collect();
    let mut engines = Vec::new();
    for id in ["engine-a", "engine-b"] {
        let client = async_nats::connect(&nats.url).await?;
        let js = async_nats::jetstream::new(client);
        engines.push(Engine {
            id: id.into(),
            bucket: LeaseBucket::open(&js, "LIVESTROM_LEASES", timing, 1).await?,
            view: HashMap::new(),
        });
    }
    let live: Vec<String> = engines.iter().map(|e| e.id.clone()).collect();

    // Both engines run rounds until every source is polled by exactly one.
    let deadline = Instant::now() + WAIT;
    loop {
        for e in &mut engines {
            e.round(&live, &sources, timing).await?;
        }
        let a = engines[0].polling(&sources, timing);
        let b = engines[1].polling(&sources, timing);
        assert!(
            a.iter().all(|s| !b.contains(s)),
            "a source polled by both: {a:?} {b:?}"
        );
        if a.len() + b.len() == sources.len() && !a.is_empty() && !b.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases never settled: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // engine-b dies (kill -9: no more rounds). engine-a, alone in the live
    // list, takes its sources once their keys expire — not before.
    let b_had = engines[1].polling(&sources, timing);
    let died = Instant::now();
    let alone = vec!["engine-a".to_owned()];
    loop {
        engines[0].round(&alone, &sources, timing).await?;
        let a = engines[0].polling(&sources, timing);
        if a.len() == sources.len() {
            break;
        }
        if died.elapsed() < timing.pollable_for() {
            assert!(
                b_had.iter().all(|s| !a.contains(s)),
                "taken over while the dead engine's lease could still be valid"
            );
        }
        assert!(Instant::now() < deadline + WAIT, "never took over: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead engine wakes up with its old view: it may not poll, and its
    // renewals lose the compare-and-set.
    let stale = &mut engines[1];
    assert!(stale.polling(&sources, timing).is_empty());
    let renew: Vec<_> = b_had
        .iter()
        .filter_map(|s| {
            stale
                .view
                .get(s)
                .map(|l| livestrom_engine::cluster::lease::Step::Renew {
                    source: s.clone(),
                    revision: l.revision,
                })
        })
        .collect();
    let applied = stale.bucket.apply("engine-b", &renew).await?;
    assert!(applied.held.is_empty(), "{applied:?}");
    assert_eq!(applied.lost.len(), renew.len());
    Ok(())
}
