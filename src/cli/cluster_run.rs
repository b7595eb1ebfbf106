//! `livestrom run` with a `[cluster]` table: the event log is NATS
//! JetStream. `engine` (or `all`) runs the lease loop and polls the
//! sources it holds, publishing through the cluster sink; `edge` (or
//! `all`) serves streams read from JetStream. No SQLite file is opened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use livestrom_engine::cluster::live::JetStreamFeed;
use livestrom_engine::cluster::log::JetStreamLog;
use livestrom_engine::cluster::poller::{self, new_node_id, NodeInfo};
use livestrom_engine::cluster::sink::{ClusterSink, Holdings};
use livestrom_engine::cluster::status::ClusterSourceStates;
use livestrom_engine::cluster::wire::Bucket;
use livestrom_engine::cluster::Cluster;
use livestrom_engine::config::ClusterConfig;
use livestrom_engine::keys::NatsKeys;
use livestrom_engine::Config;
use tokio_util::sync::CancellationToken;

use super::run::{
    apikey_command, raise_open_file_limit, reloads, spawn_signal_handler,
    start_edge as start_edge_on, Loaded, Role,
};

/// Runs the node's `role` in the cluster until a signal (or `stop`).
pub(crate) async fn run(
    config: Config,
    cluster_cfg: ClusterConfig,
    overrides: (Option<PathBuf>, Option<SocketAddr>),
    role: Role,
    stop: Option<CancellationToken>,
) -> Result<()> {
    let cancel = stop.unwrap_or_default();
    spawn_signal_handler(cancel.clone());
    raise_open_file_limit();
    tracing::info!(
        servers = ?cluster_cfg.nats.iter().map(|u| livestrom_engine::redact::redact_url_text(u)).collect::<Vec<_>>(),
        stream = cluster_cfg.stream,
        ?role,
        "connecting to the cluster"
    );
    let Some(cluster) =
        Cluster::connect_retrying(&cluster_cfg, config.engine.retention, &cancel).await
    else {
        tracing::info!("stopped before the cluster was reachable");
        return Ok(());
    };
    tracing::info!(
        stream = cluster_cfg.stream,
        tag = cluster.tag().get(),
        "cluster connected"
    );
    let node_id = new_node_id();
    // One registry for the process: an `all` node's edge renders the
    // engine's series too.
    let metrics = livestrom_engine::Metrics::new();
    let mut tasks = Vec::new();
    if matches!(role, Role::Edge | Role::All) {
        let scheduler = (role == Role::All).then(|| metrics.clone());
        tasks.push((
            "edge",
            start_edge(
                &cluster,
                &config,
                &node_id,
                (metrics.clone(), scheduler),
                cancel.clone(),
            )
            .await?,
        ));
    }
    if matches!(role, Role::Engine | Role::All) {
        let engine = start_engine(
            cluster.clone(),
            config,
            overrides,
            node_id,
            metrics,
            cancel.clone(),
        )
        .await?;
        tasks.push(("engine", engine));
    }
    cancel.cancelled().await;
    for (what, task) in tasks {
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "{what} stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "{what} task failed"),
            Err(_) => tracing::warn!("{what} did not stop within 15 s"),
        }
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The lease loop and the runtime, polling only the held sources.
async fn start_engine(
    cluster: Cluster,
    config: Config,
    overrides: (Option<PathBuf>, Option<SocketAddr>),
    node_id: String,
    metrics: livestrom_engine::Metrics,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let holdings = Arc::new(Holdings::default());
    let sink = ClusterSink::open(
        cluster.clone(),
        &node_id,
        holdings.clone(),
        config.engine.retention,
    )
    .await
    .context("cannot open the cluster's buckets")?
    .with_metrics(metrics);
    tracing::info!(
        engine = node_id,
        sources = config.sources.len(),
        "engine started: polling the sources whose leases it holds"
    );
    let (to_runtime, from_leases) = tokio::sync::mpsc::channel(4);
    // The edge's catalog keeps the config it started with: in a cluster the
    // engine and the edge may be different processes.
    let watched = reloads(&config, overrides, None, None, cancel.clone());
    let mut nothing = config.clone();
    nothing.sources.clear();
    let stop = cancel.clone();
    let leases = tokio::spawn(async move {
        let out = poller::run(
            cluster,
            node_id,
            holdings,
            config,
            watched,
            to_runtime,
            stop.clone(),
        )
        .await;
        if let Err(e) = &out {
            tracing::error!(error = %e, "the lease loop cannot run: stopping");
            stop.cancel();
        }
        out
    });
    let sink: Arc<dyn livestrom_engine::Sink> = Arc::new(sink);
    Ok(tokio::spawn(async move {
        let engine =
            livestrom_engine::runtime::run(nothing, sink, Some(from_leases), None, cancel.clone())
                .await;
        cancel.cancel();
        if let Err(e) = leases.await {
            tracing::error!(error = %e, "lease loop task failed");
        }
        engine.context("engine failed")
    }))
}

/// The edge on the cluster's log, live feed, keys and source state, with
/// its heartbeat in the nodes bucket. `metrics` is the process's registry
/// and, when this process also runs the engine, the one whose scheduler
/// heartbeat readiness checks.
async fn start_edge(
    cluster: &Cluster,
    config: &Config,
    node_id: &str,
    metrics: (livestrom_engine::Metrics, Option<livestrom_engine::Metrics>),
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let log = JetStreamLog::new(cluster.clone(), tokio::runtime::Handle::current());
    let live = JetStreamFeed::start(cluster.clone(), cancel.clone())
        .await
        .context("cannot follow the cluster's event stream")?;
    let keys_kv = cluster
        .bucket(Bucket::Keys, Duration::ZERO)
        .await
        .context("cannot open the cluster's keys bucket")?;
    let keys = NatsKeys::open(keys_kv)
        .await
        .context("cannot read the cluster's API keys")?;
    let sources = ClusterSourceStates::open(cluster, config.engine.retention)
        .await
        .context("cannot open the cluster's sources bucket")?;
    let backend = livestrom_engine::Backend {
        log: Arc::new(log),
        live: Arc::new(live),
        keys: Arc::new(keys),
        sources: Arc::new(sources),
        readiness: Arc::new(livestrom_engine::readiness::ClusterReadiness::new(
            cluster.clone(),
            metrics.1,
        )),
        metrics: metrics.0,
        webhooks: livestrom_engine::webhooks::WebhookAdmin::unsupported(
            livestrom_engine::webhooks::CLUSTER_UNSUPPORTED,
        ),
    };
    let (served, _catalog) = start_edge_on(
        config,
        backend,
        Loaded {
            log: format!("events in JetStream stream {}", cluster.names().stream()),
            apikey: apikey_command(config, None),
        },
        cancel.clone(),
    )
    .await?;
    let beat = tokio::spawn(poller::heartbeat(
        cluster.clone(),
        NodeInfo::this_process("edge", node_id),
        cancel,
    ));
    Ok(tokio::spawn(async move {
        let out = served.await;
        let _ = beat.await;
        match out {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("edge stopped with an error")),
            Err(e) => Err(anyhow::Error::new(e).context("edge task failed")),
        }
    }))
}
