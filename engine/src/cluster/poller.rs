//! An engine's life in a cluster: it announces itself in the nodes bucket
//! (a heartbeat that expires with the lease TTL), runs the lease rounds of
//! [`super::lease`] on the leases bucket, keeps [`Holdings`] (what the
//! sink may write) current, and hands the runtime the configured sources
//! it holds — the runtime polls exactly those and nothing else. A source
//! that is lost (or that cannot be renewed because NATS is gone) leaves the
//! runtime's set as soon as its pollable window ends, so nothing is fetched
//! that could not be stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bucket::LeaseBucket;
use super::conn::{Cluster, ClusterError};
use super::lease::{plan, pollable, LeaseTiming, Step};
use super::scan;
use super::sink::Holdings;
use super::wire::Bucket;
use crate::config::{Config, ConfigError};

/// A node as the nodes bucket shows it (`engine.<id>` / `edge.<id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// `engine` or `edge`.
    pub role: String,
    /// The node id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Livestrom version.
    pub version: String,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// The last heartbeat.
    pub seen_at: DateTime<Utc>,
}

impl NodeInfo {
    /// This process in `role` under `id`.
    pub fn this_process(role: &str, id: &str) -> Self {
        let now = Utc::now();
        Self {
            role: role.to_owned(),
            id: id.to_owned(),
            host: hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            seen_at: now,
        }
    }

    /// The key in the nodes bucket.
    pub fn key(&self) -> String {
        format!("{}.{}", self.role, self.id)
    }
}

/// A fresh node id: host and a random suffix (a restarted process is a new
/// node; its old leases expire after the TTL).
pub fn new_node_id() -> String {
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// Every node whose heartbeat has not expired.
pub async fn live_nodes(
    nodes: &async_nats::jetstream::kv::Store,
) -> Result<Vec<NodeInfo>, async_nats::Error> {
    Ok(scan::latest(nodes, ">")
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Keeps a node's heartbeat in the nodes bucket until `cancel` fires (for
/// edges; engines beat inside [`run`]). The key is deleted on a clean stop.
pub async fn heartbeat(cluster: Cluster, info: NodeInfo, cancel: CancellationToken) {
    let nodes = match cluster.bucket(Bucket::Nodes, Duration::ZERO).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the nodes bucket; this node will not be listed");
            return;
        }
    };
    let every = (cluster.config().lease / 4).max(Duration::from_millis(250));
    let mut info = info;
    loop {
        info.seen_at = Utc::now();
        if let Ok(body) = serde_json::to_vec(&info) {
            if let Err(e) = nodes.put(info.key(), body.into()).await {
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    let _ = nodes.delete(info.key()).await;
}

/// A lease round that has not ended after this long fails (and the next
/// one starts): every request in it has a timeout of its own, so this only
/// bounds what would otherwise hang. Until a round succeeds again the
/// leases seen go stale and their sources stop being polled.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

/// Runs engine `me`'s lease rounds until `cancel` fires. Config updates
/// arrive on `configs` (the file watcher's channel, forwarded); the
/// runtime gets, on `runtime`, the config restricted to the sources this
/// engine holds, each time that set changes (an empty set first).
pub async fn run(
    cluster: Cluster,
    me: String,
    holdings: Arc<Holdings>,
    mut config: Config,
    mut configs: Option<mpsc::Receiver<Result<Config, ConfigError>>>,
    runtime: mpsc::Sender<Result<Config, ConfigError>>,
    cancel: CancellationToken,
) -> Result<(), ClusterError> {
    let timing = LeaseTiming {
        ttl: cluster.config().lease,
    };
    let nodes = cluster.bucket(Bucket::Nodes, Duration::ZERO).await?;
    let mut bucket = LeaseBucket::open(
        cluster.js(),
        &cluster.names().bucket(Bucket::Leases),
        timing,
        cluster.config().replicas,
    )
    .await
    .map_err(|e| ClusterError::JetStream {
        action: "open the leases bucket".into(),
        source: Box::new(e),
    })?;
    let mut info = NodeInfo::this_process("engine", &me);
    let every = (timing.ttl / 10).max(Duration::from_millis(100));
    let mut sent: Option<BTreeSet<String>> = None;
    let mut engines_seen: Vec<String> = Vec::new();
    let mut leases = HashMap::new();
    let mut failing = false;
    loop {
        let sources: Vec<String> = config
            .sources
            .iter()
            .map(|s| s.id.as_str().to_owned())
            .collect();
        let result = tokio::time::timeout(
            ROUND_LIMIT,
            round(
                &mut bucket,
                &nodes,
                &mut info,
                &me,
                &sources,
                &holdings,
                timing,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!("the lease round took longer than {ROUND_LIMIT:?}").into())
        });
        match result {
            Ok((seen, engines)) => {
                // The membership this engine plans with, whenever it
                // changes: what an operator (or a failing test) needs to
                // tell who sees whom.
                if engines != engines_seen {
                    tracing::info!(engines = ?engines, "live engines changed");
                    engines_seen = engines;
                }
                if failing {
                    tracing::info!("cluster reachable again: lease rounds resumed");
                    failing = false;
                }
                leases = seen;
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "lease round failed: sources stop being polled when their leases lapse");
                    failing = true;
                }
            }
        }
        // What may be polled now: held leases inside their pollable window.
        let now = Instant::now();
        let held: BTreeSet<String> = sources
            .iter()
            .filter(|s| pollable(&me, leases.get(*s), now, timing))
            .cloned()
            .collect();
        for s in &sources {
            match leases.get(s).filter(|_| held.contains(s)) {
                Some(l) => holdings.hold(s, l.seen_at + timing.pollable_for()),
                None => holdings.drop_source(s),
            }
        }
        holdings.retain(&held.iter().cloned().collect());
        if sent.as_ref() != Some(&held) {
            let mut restricted = config.clone();
            restricted.sources.retain(|s| held.contains(s.id.as_str()));
            tracing::info!(
                sources = held.len(),
                "polling the sources whose leases this engine holds"
            );
            if runtime.send(Ok(restricted)).await.is_err() {
                break;
            }
            sent = Some(held);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
            Some(update) = recv_or_pending(&mut configs) => match update {
                Ok(new) => {
                    config = new;
                    sent = None;
                }
                Err(e) => {
                    if runtime.send(Err(e)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    // A clean stop gives every lease back at once, so another engine takes
    // over without waiting for the TTL.
    let held: Vec<Step> = leases
        .iter()
        .filter(|(_, l)| l.holder == me)
        .map(|(s, l)| Step::Release {
            source: s.clone(),
            revision: l.revision,
        })
        .collect();
    for step in &held {
        if let Step::Release { source, .. } = step {
            holdings.drop_source(source);
        }
    }
    if let Err(e) = bucket.apply(&me, &held).await {
        tracing::warn!(error = %e, "could not release the leases at shutdown; they expire after the TTL");
    }
    let _ = nodes.delete(info.key()).await;
    Ok(())
}

/// One round: heartbeat, live engines, leases, steps. Returns the leases
/// as seen after the steps and the live engines it planned with.
async fn round(
    bucket: &mut LeaseBucket,
    nodes: &async_nats::jetstream::kv::Store,
    info: &mut NodeInfo,
    me: &str,
    sources: &[String],
    holdings: &Holdings,
    timing: LeaseTiming,
) -> Result<(HashMap<String, super::lease::Lease>, Vec<String>), async_nats::Error> {
    info.seen_at = Utc::now();
    nodes
        .put(info.key(), serde_json::to_vec(info)?.into())
        .await?;
    let mut engines: Vec<String> = live_nodes(nodes)
        .await?
        .into_iter()
        .filter(|n| n.role == "engine")
        .map(|n| n.id)
        .collect();
    if !engines.iter().any(|e| e == me) {
        engines.push(me.to_owned());
    }
    engines.sort();
    let leases = bucket.leases(sources).await?;
    let steps = plan(me, &engines, sources, &leases, Instant::now(), timing);
    // Stop writing before giving a lease back.
    for step in &steps {
        if let Step::Release { source, .. } = step {
            holdings.drop_source(source);
        }
    }
    if !steps.is_empty() {
        let applied = bucket.apply(me, &steps).await?;
        if !applied.released.is_empty() {
            tracing::info!(sources = ?applied.released, "released leases: another engine owns these sources now");
        }
        if !applied.lost.is_empty() {
            tracing::debug!(sources = ?applied.lost, "lease steps lost to another engine");
        }
    }
    Ok((bucket.leases(sources).await?, engines))
}

async fn recv_or_pending<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
