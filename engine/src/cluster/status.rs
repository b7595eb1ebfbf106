//! What an operator asks of a cluster (`livestrom cluster status`,
//! `livestrom sources list`, the edge's `/v1/admin/sources`): the event
//! stream's state, the nodes seen, who holds each lease, the sources'
//! stored state.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::conn::{Cluster, ClusterError};
use super::poller::{live_nodes, NodeInfo};
use super::scan;
use super::sink;
use super::wire::Bucket;
use crate::backend::SourceStates;
use crate::log::LogError;
use crate::store::{item_horizon, SourceState};

/// The cluster as `livestrom cluster status` shows it.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    /// The stream's name.
    pub stream: String,
    /// The tag in its event ids.
    pub tag: u32,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// First sequence and its time.
    pub first: (u64, Option<DateTime<Utc>>),
    /// Last sequence and its time.
    pub last: (u64, Option<DateTime<Utc>>),
    /// Replicas of the stream.
    pub replicas: usize,
    /// Max age of events.
    pub max_age: Duration,
    /// The stream's leader and replicas, when clustered.
    pub servers: Vec<String>,
    /// Engines and edges whose heartbeat has not expired.
    pub nodes: Vec<NodeInfo>,
    /// Source → the engine holding its lease.
    pub leases: Vec<(String, String)>,
}

/// A JetStream time (unix nanoseconds) as a UTC time.
fn time(unix_nanos: i128) -> Option<DateTime<Utc>> {
    Some(DateTime::from_timestamp_nanos(
        i64::try_from(unix_nanos).ok()?,
    ))
}

impl ClusterStatus {
    /// Reads the status.
    pub async fn read(cluster: &Cluster) -> Result<Self, ClusterError> {
        let js_err = |action: &str, e: async_nats::Error| ClusterError::JetStream {
            action: action.to_owned(),
            source: e,
        };
        let mut stream = cluster.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| js_err("read the stream's info", e.into()))?
            .clone();
        let nodes_kv = cluster.bucket(Bucket::Nodes, Duration::ZERO).await?;
        let mut nodes = live_nodes(&nodes_kv)
            .await
            .map_err(|e| js_err("read the nodes", e))?;
        nodes.sort_by(|a, b| {
            (a.role.as_str(), a.id.as_str()).cmp(&(b.role.as_str(), b.id.as_str()))
        });
        let leases_kv = cluster.bucket(Bucket::Leases, Duration::ZERO).await?;
        let leases = scan::latest(&leases_kv, ">")
            .await
            .map_err(|e| js_err("read the leases", e))?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let servers = info
            .cluster
            .as_ref()
            .map(|c| {
                let mut s: Vec<String> = c.leader.iter().map(|l| format!("{l} (leader)")).collect();
                s.extend(c.replicas.iter().map(|r| {
                    format!(
                        "{}{}",
                        r.name,
                        if r.current { "" } else { " (catching up)" }
                    )
                }));
                s
            })
            .unwrap_or_default();
        let st = &info.state;
        Ok(Self {
            stream: info.config.name.clone(),
            tag: cluster.tag().get(),
            messages: st.messages,
            bytes: st.bytes,
            first: (
                st.first_sequence,
                time(st.first_timestamp.unix_timestamp_nanos()),
            ),
            last: (
                st.last_sequence,
                time(st.last_timestamp.unix_timestamp_nanos()),
            ),
            replicas: info.config.num_replicas,
            max_age: info.config.max_age,
            servers,
            nodes,
            leases,
        })
    }
}

/// Every source's stored state in the cluster.
pub async fn source_states(
    cluster: &Cluster,
    retention: Duration,
) -> Result<Vec<SourceState>, ClusterError> {
    let kv = cluster
        .bucket(Bucket::Sources, item_horizon(retention))
        .await?;
    sink::source_states(&kv)
        .await
        .map_err(|e| ClusterError::JetStream {
            action: "read the sources' state".into(),
            source: Box::new(e),
        })
}

/// The edge's [`SourceStates`] on a cluster (blocking: runs on the
/// runtime captured at construction, from a blocking thread).
pub struct ClusterSourceStates {
    kv: async_nats::jetstream::kv::Store,
    runtime: tokio::runtime::Handle,
}

impl ClusterSourceStates {
    /// Opens the sources bucket; call inside the runtime.
    pub async fn open(cluster: &Cluster, retention: Duration) -> Result<Self, ClusterError> {
        Ok(Self {
            kv: cluster
                .bucket(Bucket::Sources, item_horizon(retention))
                .await?,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl SourceStates for ClusterSourceStates {
    fn source_states(&self) -> Result<Vec<SourceState>, LogError> {
        self.runtime
            .block_on(sink::source_states(&self.kv))
            .map_err(LogError::from)
    }
}
