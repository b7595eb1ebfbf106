//! A three-node JetStream cluster with `replicas = 3`: the node leading the
//! event stream is killed (SIGKILL) while an engine publishes; the stream
//! elects another leader and not one event is lost or doubled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use super::failover::{
    grow_every, growing_feed, start_node, stop_growing_and_check, wait_for_item,
};
use super::nats::{start_trio, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_of_three_replicas_loses_no_event() -> TestResult {
    let Some(mut trio) = start_trio() else {
        return Ok(());
    };
    let count = Arc::new(AtomicU64::new(5));
    let upstream = growing_feed(count.clone(), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    let urls = trio
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
retention = "1h"
[fetch]
allow_private_networks = true
per_host_rps = 100
[cluster]
nats = [{urls}]
replicas = 3
lease = "2s"
[tiers]
rss = "1s"
[[source]]
id = "grow.feed"
type = "rss"
url = "http://{upstream}/feed.xml"
"#
        ),
    )?;
    let log = dir.path().join("engine.log");
    let logs = [log.as_path()];
    let _engine = start_node(&config, "engine", None, &log);
    let urls = trio.urls();
    let client = async_nats::ConnectOptions::new()
        .connect(urls.as_slice())
        .await?;
    let js = jetstream::new(client);
    wait_for_item(
        &js,
        5,
        WAIT * 2,
        "no events on the three-node cluster",
        &logs,
    )
    .await;
    let info = js.get_stream("LIVESTROM").await?.info().await?.clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .unwrap_or_else(|| panic!("the stream has no leader"));
    let i: usize = leader
        .strip_prefix('n')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected leader name {leader}"));
    // The feed grows while the leader dies.
    let grower = grow_every(count.clone(), Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(600)).await;
    trio.nodes[i].stop();
    let killed_at = count.load(Ordering::SeqCst);
    wait_for_item(
        &js,
        killed_at + 10,
        WAIT * 2,
        &format!("nothing published after the leader {leader} died"),
        &logs,
    )
    .await;
    stop_growing_and_check(&js, grower, &count, &logs).await
}
