//! A test publisher writing events the way engines do (the fixed message
//! format): the StreamEvent JSON with the nil id on
//! `<prefix>.ev.<type>.<source>`, with a message id and an item-state
//! header beside it. It reads each message back to know the id readers
//! must give it: `cursor::encode(tag, sequence, stream timestamp in ms)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use livestrom_engine::cluster::wire::{msg_id, STATE_HEADER};
use livestrom_engine::cluster::{cursor, Cluster};
use livestrom_engine::config::ClusterConfig;
use livestrom_engine::{CommittedEvent, SourceType, StreamEvent};
use uuid::Uuid;

use super::nats::{Nats, WAIT};
use super::TestResult;

/// Connects to `nats` as a node would, with the stream prefix `LIVESTROM`.
pub(crate) async fn connect(
    nats: &Nats,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    connect_to(nats, "LIVESTROM").await
}

/// Connects with the stream prefix `stream`.
pub(crate) async fn connect_to(
    nats: &Nats,
    stream: &str,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    let config = ClusterConfig {
        nats: vec![nats.url.clone()],
        stream: stream.to_owned(),
        replicas: 1,
        lease: Duration::from_secs(30),
    };
    Ok(Cluster::connect(&config, Duration::from_secs(24 * 3600)).await?)
}

/// Connects to the JetStream cluster at `url` with a stream of `replicas`
/// copies, retrying while the cluster is still forming (bounded by WAIT).
pub(crate) async fn connect_replicated(
    url: &str,
    replicas: usize,
) -> Result<Cluster, Box<dyn std::error::Error + Send + Sync>> {
    let config = ClusterConfig {
        nats: vec![url.to_owned()],
        stream: "LIVESTROM".to_owned(),
        replicas,
        lease: Duration::from_secs(30),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Cluster::connect(&config, Duration::from_secs(24 * 3600)).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("cluster not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What was published, and the id readers must give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) seq: u64,
    pub(crate) id: Uuid,
    pub(crate) source_id: String,
    pub(crate) source_type: SourceType,
    pub(crate) title: String,
}

/// Publishes one event of `source_id` titled `title`.
pub(crate) async fn publish(
    cluster: &Cluster,
    source_id: &str,
    source_type: SourceType,
    title: &str,
) -> Result<Published, Box<dyn std::error::Error + Send + Sync>> {
    let now = Utc::now();
    let ev = CommittedEvent::new(StreamEvent {
        id: Uuid::nil(),
        schema_version: 1,
        source_id: source_id.to_owned(),
        source_type,
        url: format!("https://example.com/{source_id}/{title}"),
        title: title.to_owned(),
        content: format!("content of {title}"),
        tags: vec!["t".to_owned()],
        fetched_at: now,
        emitted_at: now,
        item_id: title.to_owned(),
        version: 1,
        supersedes: None,
        diff: None,
        added: None,
        published_at: None,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id(source_id, title, 1).as_str());
    headers.insert(STATE_HEADER, "{\"fp\":\"x\",\"aliases\":[]}");
    let ack = cluster
        .js()
        .publish_with_headers(
            cluster.names().subject(source_type, source_id),
            headers,
            ev.json.to_string().into(),
        )
        .await?
        .await?;
    if ack.duplicate {
        return Err(format!("{source_id}/{title} was published before (same message id)").into());
    }
    let stored = cluster
        .stream()
        .await?
        .get_raw_message(ack.sequence)
        .await?;
    let ms = u64::try_from(stored.time.unix_timestamp_nanos() / 1_000_000)?;
    Ok(Published {
        seq: ack.sequence,
        id: cursor::encode(cluster.tag(), ack.sequence, ms)?,
        source_id: source_id.to_owned(),
        source_type,
        title: title.to_owned(),
    })
}

/// Publishes `(source, type)` pairs in order, each with a title of its
/// own (`e<n>`; titles are the item ids, hence the message ids).
pub(crate) async fn publish_all(
    cluster: &Cluster,
    events: &[(&str, SourceType)],
) -> Result<Vec<Published>, Box<dyn std::error::Error + Send + Sync>> {
    static TITLES: AtomicU64 = AtomicU64::new(0);
    let mut out = Vec::with_capacity(events.len());
    for (source, ty) in events {
        let n = TITLES.fetch_add(1, Ordering::Relaxed);
        out.push(publish(cluster, source, *ty, &format!("e{n}")).await?);
    }
    Ok(out)
}

/// The ids of `published`.
pub(crate) fn ids(published: &[Published]) -> Vec<Uuid> {
    published.iter().map(|p| p.id).collect()
}

/// Checks that `json` is the StreamEvent published as `p`, with its id.
pub(crate) fn assert_is(json: &str, p: &Published) -> TestResult {
    let ev: StreamEvent = serde_json::from_str(json)?;
    assert_eq!(ev.id, p.id, "{json}");
    assert_eq!(ev.title, p.title, "{json}");
    assert_eq!(ev.source_id, p.source_id, "{json}");
    assert_eq!(ev.source_type, p.source_type, "{json}");
    Ok(())
}
