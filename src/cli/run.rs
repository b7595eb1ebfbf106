//! `livestrom run`: the engine and the edge in one process until SIGINT or
//! SIGTERM, then a clean, lossless shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use livestrom_edge::catalog::Catalog;
use livestrom_engine::{Bus, Config, Metrics, Store};
use tokio_util::sync::CancellationToken;

use super::{load_config, ConfigArgs};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) cfg: ConfigArgs,
    /// Listen address of the edge (overrides [edge] listen).
    #[arg(long, env = "LIVESTROM_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// What this process does: `all` polls and serves, `engine` polls and
    /// stores only (no HTTP listener), `edge` serves only.
    #[arg(long, env = "LIVESTROM_ROLE", value_enum, default_value_t = Role::All)]
    pub(crate) role: Role,
}

/// The jobs of one `livestrom run` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// Engine and edge in one process (one node).
    All,
    /// Polls sources and stores events; serves no HTTP.
    Engine,
    /// Serves streams from a log other processes write.
    Edge,
}

/// `livestrom run`.
pub(crate) async fn main(args: RunArgs) -> Result<ExitCode> {
    let config = load_config(&args.cfg, args.listen)?;
    if let Some(cluster) = config.cluster.clone() {
        super::cluster_run::run(
            config,
            cluster,
            (args.cfg.db.clone(), args.listen),
            args.role,
            None,
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.role == Role::Edge {
        // On one node the edge follows the engine's in-process live feed:
        // an edge of its own needs a shared log to read.
        bail!(
            "`--role edge` serves a log that engines in other processes write, which needs a [cluster] table in {} (a NATS JetStream log shared by every node); on one node run `--role all` (the default), where the engine and the edge share the process",
            args.cfg.config.display()
        );
    }
    run(config, (args.cfg.db.clone(), args.listen), args.role, None).await?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGINT or SIGTERM, then fires `cancel`.
pub(super) fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
        cancel.cancel();
    });
}

/// The engine, and the edge unless `role` is [`Role::Engine`], until a
/// signal (or `stop`) fires; a clean, lossless shutdown.
pub(crate) async fn run(
    config: Config,
    overrides: (Option<PathBuf>, Option<SocketAddr>),
    role: Role,
    stop: Option<CancellationToken>,
) -> Result<()> {
    let cancel = stop.unwrap_or_default();
    spawn_signal_handler(cancel.clone());
    raise_open_file_limit();
    let _instance = lock_instance(&config.engine.database)?;
    let bus = Bus::new();
    let store = Store::open_synchronous(
        &config.engine.database,
        config.engine.retention,
        config.engine.synchronous,
        bus,
        Metrics::new(),
    )
    .with_context(|| "cannot start: the database is unusable")?;
    let (edge, catalog) = match role {
        Role::Engine => {
            tracing::info!(
                sources = config.sources.len(),
                by_type = %sources_by_type(&config),
                database = %config.engine.database.display(),
                "livestrom {} engine only (no HTTP listener) — {} sources ({}), database {}",
                env!("CARGO_PKG_VERSION"),
                config.sources.len(),
                sources_by_type(&config),
                config.engine.database.display()
            );
            (None, None)
        }
        Role::All | Role::Edge => {
            let (edge, catalog) = start_edge(
                &config,
                livestrom_engine::Backend::sqlite(&store),
                Loaded {
                    log: format!("database {}", config.engine.database.display()),
                    apikey: apikey_command(&config, overrides.0.as_deref()),
                },
                cancel.clone(),
            )
            .await?;
            (Some(edge), Some(catalog))
        }
    };
    // Webhooks are the engine's: they deliver what this node stores.
    // A reload that changes [fetch] replaces their fetcher too.
    let transport = livestrom_engine::webhooks::SharedTransport::fetcher(&config.fetch)
        .context("cannot start the webhooks' http client")?;
    let webhooks =
        livestrom_engine::webhooks::spawn(store.clone(), transport.clone(), cancel.clone());
    let reload = reloads(&config, overrides, catalog, Some(transport), cancel.clone());
    let engine =
        livestrom_engine::runtime::run(config, store.clone(), reload, None, cancel.clone()).await;
    cancel.cancel();
    if let Some(edge) = edge {
        match tokio::time::timeout(Duration::from_secs(10), edge).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "edge stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "edge task failed"),
            Err(_) => tracing::warn!("edge did not stop within 10 s"),
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), webhooks)
        .await
        .is_err()
    {
        tracing::warn!("webhooks did not stop within 10 s");
    }
    store
        .flush()
        .await
        .context("flushing the store at shutdown")?;
    engine.context("engine failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The config file's changes (file watch, SIGHUP), each given the same
/// flag/env overrides as the first load; None (logged) when the file
/// cannot be watched. Each config that loaded also refreshes `catalog`
/// (the edge's list of sources with their type and tags) and hands its
/// `[fetch]` to the webhooks' `transport`, where there are.
pub(super) fn reloads(
    config: &Config,
    overrides: (Option<PathBuf>, Option<SocketAddr>),
    catalog: Option<Catalog>,
    transport: Option<livestrom_engine::webhooks::SharedTransport>,
    cancel: CancellationToken,
) -> Option<tokio::sync::mpsc::Receiver<Result<Config, livestrom_engine::config::ConfigError>>> {
    match livestrom_engine::config::watch::watch(config.path.clone(), cancel) {
        Ok(mut rx) => {
            let (tx, out) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(mut update) = rx.recv().await {
                    if let Ok(c) = &mut update {
                        c.apply_overrides(overrides.0.clone(), overrides.1);
                        if let Some(catalog) = &catalog {
                            catalog.set(&c.sources);
                        }
                        if let Some(transport) = &transport {
                            transport.reload(&c.fetch);
                        }
                    }
                    if tx.send(update).await.is_err() {
                        break;
                    }
                }
            });
            Some(out)
        }
        Err(e) => {
            tracing::warn!(error = %e, "config reload disabled");
            None
        }
    }
}

/// What the start-up lines say beyond the config: where events are kept
/// and the command that mints a key for this node.
pub(super) struct Loaded {
    /// `database <path>` or `events in JetStream stream <name>`.
    pub(super) log: String,
    /// The `livestrom apikey create …` command line for this config.
    pub(super) apikey: String,
}

/// `rss 3, html 1` — the configured sources per type, in a fixed order.
pub(super) fn sources_by_type(config: &Config) -> String {
    let parts: Vec<String> = livestrom_engine::SourceType::ALL
        .iter()
        .filter_map(|t| {
            let n = config
                .sources
                .iter()
                .filter(|s| s.source_type == *t)
                .count();
            (n > 0).then(|| format!("{t} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The exact command that mints a stream key for this node's config (and
/// database, when it came from `--db`/`LIVESTROM_DB`).
pub(super) fn apikey_command(config: &Config, db: Option<&std::path::Path>) -> String {
    let mut cmd = format!(
        "livestrom apikey create --config {}",
        shell_quote(&config.path.display().to_string())
    );
    if let Some(db) = db {
        cmd.push_str(" --db ");
        cmd.push_str(&shell_quote(&db.display().to_string()));
    }
    cmd.push_str(" --name reader");
    cmd
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The address a client on this machine reaches `local` at (a wildcard
/// listen address is reached on loopback).
fn reachable(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    }
}

/// Binds the edge's listener and serves `backend` until `cancel` fires;
/// `loaded` is what the start-up lines say about the node. Returns the
/// server task and the edge's catalog of sources (filled from `config`;
/// the caller refreshes it on reload).
pub(super) async fn start_edge(
    config: &Config,
    backend: livestrom_engine::Backend,
    loaded: Loaded,
    cancel: CancellationToken,
) -> Result<(tokio::task::JoinHandle<std::io::Result<()>>, Catalog)> {
    let listener = tokio::net::TcpListener::bind(config.edge.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (in use? set --listen or LIVESTROM_LISTEN)",
                config.edge.listen
            )
        })?;
    let local = listener.local_addr().unwrap_or(config.edge.listen);
    let settings = livestrom_edge::Settings {
        keepalive: config.edge.keepalive,
        cors_origins: config.edge.cors_origins.clone(),
        metrics_token: metrics_token(config)?,
    };
    let metrics_open = settings.metrics_token.is_none();
    let state = livestrom_edge::AppState::new(backend, settings, cancel.clone())
        .await
        .context("cannot start the edge")?;
    state.catalog.set(&config.sources);
    let catalog = state.catalog.clone();
    let Loaded { log, apikey } = loaded;
    let by_type = sources_by_type(config);
    tracing::info!(
        listen = %local,
        sources = config.sources.len(),
        by_type = %by_type,
        log = %log,
        "livestrom {} listening on http://{local} — {} sources ({by_type}), {log}",
        env!("CARGO_PKG_VERSION"),
        config.sources.len(),
    );
    let at = reachable(local);
    let subscribe = format!("curl -N -H \"X-API-Key: $KEY\" http://{at}/v1/stream");
    let mint = format!("KEY=$({apikey})");
    tracing::info!(command = %mint, "mint a stream key: {mint}");
    tracing::info!(command = %subscribe, "subscribe: {subscribe}");
    tracing::info!(
        metrics = %format!("http://{at}/metrics"),
        ready = %format!("http://{at}/readyz"),
        metrics_open,
        "probes: GET /healthz (alive), GET /readyz (ready), GET /metrics ({})",
        if metrics_open { "open" } else { "bearer token: edge.metrics_token" }
    );
    let edge_cancel = cancel.clone();
    let server_opts = livestrom_edge::server::Options {
        max_connections: config.edge.max_connections,
        ..Default::default()
    };
    let connections = state.connections.clone();
    let edge = tokio::spawn(async move {
        livestrom_edge::server::serve_counted(
            listener,
            livestrom_edge::app(state),
            edge_cancel,
            server_opts,
            connections,
        )
        .await
    });
    Ok((edge, catalog))
}

/// The `/metrics` bearer token: `LIVESTROM_METRICS_TOKEN` over
/// `edge.metrics_token`; None leaves `/metrics` open.
fn metrics_token(config: &Config) -> Result<Option<String>> {
    match std::env::var("LIVESTROM_METRICS_TOKEN") {
        Ok(t) if !t.is_empty() => {
            let token = livestrom_engine::config::Secret::metrics_token(&t)
                .map_err(|e| anyhow::anyhow!("LIVESTROM_METRICS_TOKEN {e}"))?;
            Ok(Some(token.expose().to_owned()))
        }
        _ => Ok(config
            .edge
            .metrics_token
            .as_ref()
            .map(|t| t.expose().to_owned())),
    }
}

/// One `livestrom run` per database: a second one would double-poll every
/// source. The OS releases the lock when the process dies, even on kill -9.
fn lock_instance(db: &std::path::Path) -> Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "database {} is already in use by another `livestrom run` (lock file {}); stop it first or use another --db",
            db.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Below this many open files a warning says how many streams fit.
const LOW_OPEN_FILE_LIMIT: u64 = 4096;

/// Raises the soft open-file limit to the hard limit: every subscriber is a
/// socket, and the common default soft limit of 1024 would cap the server at
/// about a thousand concurrent streams.
pub(super) fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < LOW_OPEN_FILE_LIMIT => tracing::warn!(
            limit = n,
            "the open-file limit allows fewer than {n} concurrent streams; raise it (ulimit -n, systemd LimitNOFILE=)"
        ),
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
