//! The `livestrom` CLI: clap → tracing → config → engine + edge → signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use livestrom_edge::keys::{self, KeyUpdate, NewKey};
use livestrom_engine::{Bus, Config, Store};
use tokio_util::sync::CancellationToken;

mod tail;

/// jemalloc keeps an idle SSE connection's untouched buffer pages out of RSS
/// (docs/PERFORMANCE.md, "Edge" (d)); the fanout bench's server uses it too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Livestrom watches feeds, pages and firehoses and streams every change over SSE.
#[derive(Debug, Parser)]
#[command(name = "livestrom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine and the edge in one process.
    Run(RunArgs),
    /// Manage API keys (works while `livestrom run` is running).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Validate the config or show each source's health.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Follow a stream in the terminal, resuming after disconnects.
    Tail(tail::TailArgs),
    /// Offline demo: fixtures replayed by a built-in upstream, a fresh key, the curl line.
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone)]
struct ConfigArgs {
    /// Path of sources.toml.
    #[arg(long, short, env = "LIVESTROM_CONFIG", default_value = "sources.toml")]
    config: PathBuf,
    /// SQLite database file (overrides [engine] database).
    #[arg(long, env = "LIVESTROM_DB")]
    db: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Listen address of the edge (overrides [edge] listen).
    #[arg(long, env = "LIVESTROM_LISTEN")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Listen address of the demo's edge.
    #[arg(long, env = "LIVESTROM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Mint a key; the plaintext is printed once.
    Create {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: stream:read, admin.
        #[arg(long, default_value = "stream:read")]
        scopes: String,
        /// Cap on filter terms per request.
        #[arg(long, default_value_t = 20)]
        max_filters: usize,
        /// Cap on concurrent streams.
        #[arg(long, default_value_t = 10)]
        max_streams: usize,
        /// Requests per second (burst twice that), e.g. 10/s.
        #[arg(long, default_value = "10/s")]
        rate: String,
    },
    /// List keys (never shows the keys themselves).
    List {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Change a key's scopes or limits.
    Update {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The key's name.
        name: String,
        /// New comma-separated scopes.
        #[arg(long)]
        scopes: Option<String>,
        /// New filter cap.
        #[arg(long)]
        max_filters: Option<usize>,
        /// New stream cap.
        #[arg(long)]
        max_streams: Option<usize>,
        /// New rate, e.g. 5/s.
        #[arg(long)]
        rate: Option<String>,
    },
    /// Revoke a key: refused within a second, its streams closed within 5 s.
    Revoke {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The key's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SourcesCommand {
    /// Validate sources.toml; prints every problem and exits non-zero if any.
    Check {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Show each configured source's health.
    List {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

/// Threads for blocking work: SQLite reads (stream connects, replay pages,
/// `/v1/events`) and feed/page parsing. tokio's default of 512 lets a
/// reconnect storm after a restart open hundreds of SQLite connections at
/// once, which only adds memory (docs/PERFORMANCE.md, edge (d)); the work is
/// short and CPU-bound, so more threads than this gain nothing.
pub const MAX_BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Below this many open files a warning says how many streams fit.
const LOW_OPEN_FILE_LIMIT: u64 = 4096;

/// Raises the soft open-file limit to the hard limit: every subscriber is a
/// socket, and the common default soft limit of 1024 would cap the server at
/// about a thousand concurrent streams.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < LOW_OPEN_FILE_LIMIT => tracing::warn!(
            limit = n,
            "the open-file limit allows fewer than {n} concurrent streams; raise it (ulimit -n, systemd LimitNOFILE=)"
        ),
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the
/// message already carries (many errors print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVESTROM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text
    // (`NO_COLOR` is honoured by tracing-subscriber on top of this).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let config = load_config(&args.cfg, args.listen)?;
            run(config, (args.cfg.db.clone(), args.listen), None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sources {
            command: SourcesCommand::Check { cfg },
        } => Ok(sources_check(&cfg)),
        Command::Sources {
            command: SourcesCommand::List { cfg },
        } => {
            sources_list(&cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apikey { command } => {
            apikey(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail(args) => tail::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => {
            demo(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads and validates the config, then applies flag/env overrides
/// (flag > env > sources.toml > default; clap resolves flag vs env).
fn load_config(args: &ConfigArgs, listen: Option<SocketAddr>) -> Result<Config> {
    let mut config = Config::load(&args.config)
        .with_context(|| format!("cannot load configuration {}", args.config.display()))?;
    config.apply_overrides(args.db.clone(), listen);
    Ok(config)
}

/// The database path without requiring a valid config for tools that only
/// need the database (`apikey`): flag/env, else the config's, else the default.
fn database_path(args: &ConfigArgs) -> Result<PathBuf> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    match Config::load(&args.config) {
        Ok(c) => Ok(c.engine.database),
        Err(livestrom_engine::config::ConfigError::Io { .. }) => Ok(PathBuf::from("livestrom.db")),
        Err(e) => Err(e).with_context(|| {
            format!(
                "invalid configuration {} (pass --db to use a database directly)",
                args.config.display()
            )
        }),
    }
}

/// Waits for SIGINT or SIGTERM, then fires `cancel`.
fn spawn_signal_handler(cancel: CancellationToken) {
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

/// Engine + edge until a signal (or `stop`) fires; a clean, lossless shutdown.
async fn run(
    config: Config,
    overrides: (Option<PathBuf>, Option<SocketAddr>),
    stop: Option<CancellationToken>,
) -> Result<()> {
    let cancel = stop.unwrap_or_default();
    spawn_signal_handler(cancel.clone());
    raise_open_file_limit();
    let _instance = lock_instance(&config.engine.database)?;
    let bus = Bus::new();
    let store = Store::open(&config.engine.database, config.engine.retention, bus)
        .with_context(|| "cannot start: the database is unusable")?;
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
    };
    let state = livestrom_edge::AppState::new(&store, settings, cancel.clone())
        .await
        .context("cannot start the edge")?;
    tracing::info!(
        "livestrom {} listening on http://{local} — {} sources, database {}",
        env!("CARGO_PKG_VERSION"),
        config.sources.len(),
        config.engine.database.display()
    );
    let reload = match livestrom_engine::config::watch::watch(config.path.clone(), cancel.clone()) {
        Ok(mut rx) => {
            // Reloaded configs get the same flag/env overrides as the first one.
            let (tx, out) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(mut update) = rx.recv().await {
                    if let Ok(c) = &mut update {
                        c.apply_overrides(overrides.0.clone(), overrides.1);
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
    };
    let edge_cancel = cancel.clone();
    let server_opts = livestrom_edge::server::Options {
        max_connections: config.edge.max_connections,
        ..Default::default()
    };
    let edge = tokio::spawn(async move {
        livestrom_edge::server::serve_with(
            listener,
            livestrom_edge::app(state),
            edge_cancel,
            server_opts,
        )
        .await
    });
    let engine =
        livestrom_engine::runtime::run(config, store.clone(), reload, None, cancel.clone()).await;
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(10), edge).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "edge stopped with an error"),
        Ok(Err(e)) => tracing::error!(error = %e, "edge task failed"),
        Err(_) => tracing::warn!("edge did not stop within 10 s"),
    }
    store
        .flush()
        .await
        .context("flushing the store at shutdown")?;
    engine.context("engine failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
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

fn sources_check(args: &ConfigArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(c) => {
            let by_type = |t: livestrom_engine::SourceType| {
                c.sources.iter().filter(|s| s.source_type == t).count()
            };
            println!(
                "{}: OK — {} sources ({} rss, {} json, {} html, {} firehose)",
                args.config.display(),
                c.sources.len(),
                by_type(livestrom_engine::SourceType::Rss),
                by_type(livestrom_engine::SourceType::Json),
                by_type(livestrom_engine::SourceType::Html),
                by_type(livestrom_engine::SourceType::Firehose)
            );
            ExitCode::SUCCESS
        }
        Err(livestrom_engine::config::ConfigError::Invalid(issues)) => {
            for i in &issues {
                eprintln!("{i}");
            }
            eprintln!(
                "{}: {} problem{} found",
                args.config.display(),
                issues.len(),
                if issues.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sources_list(args: &ConfigArgs) -> Result<()> {
    let config = load_config(args, None)?;
    let store = Store::open(&config.engine.database, config.engine.retention, Bus::new())
        .context("cannot open the database")?;
    let states: std::collections::HashMap<String, livestrom_engine::store::SourceState> = store
        .source_states()
        .await?
        .into_iter()
        .map(|s| (s.source_id.clone(), s))
        .collect();
    let fmt_t = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<28} {:<9} {:<8} {:>6} {:>7} {:<19} {:<19} LAST ERROR",
        "SOURCE", "TYPE", "HEALTH", "ITEMS", "EVENTS", "LAST POLL", "NEXT POLL"
    );
    for src in &config.sources {
        let st = states.get(src.id.as_str());
        let health = match st {
            None => "new",
            Some(s) if s.last_error.is_some() => "failing",
            Some(s) if s.last_success_at.is_some() => "ok",
            Some(_) => "new",
        };
        let err = st
            .and_then(|s| {
                // Redacted again: a message stored by an older version may
                // quote a source URL with its credentials.
                s.last_error.as_deref().map(|e| {
                    format!(
                        "{} ({} in a row)",
                        livestrom_engine::fetch::redact_urls_in(e),
                        s.consecutive_failures
                    )
                })
            })
            .unwrap_or_default();
        println!(
            "{:<28} {:<9} {:<8} {:>6} {:>7} {:<19} {:<19} {}",
            src.id.as_str(),
            src.source_type.as_str(),
            health,
            st.map(|s| s.item_count).unwrap_or(0),
            st.map(|s| s.event_count).unwrap_or(0),
            fmt_t(st.and_then(|s| s.last_poll_at)),
            fmt_t(st.and_then(|s| s.next_poll_at)),
            err
        );
    }
    Ok(())
}

fn apikey(command: ApikeyCommand) -> Result<()> {
    let open = |cfg: &ConfigArgs| -> Result<rusqlite::Connection> {
        let path = database_path(cfg)?;
        livestrom_engine::store::open_and_migrate(&path)
            .with_context(|| format!("cannot open database {}", path.display()))
    };
    match command {
        ApikeyCommand::Create {
            cfg,
            name,
            scopes,
            max_filters,
            max_streams,
            rate,
        } => {
            let conn = open(&cfg)?;
            let new = NewKey {
                name: name.clone(),
                scopes: keys::parse_scopes(&scopes)?,
                max_filters,
                max_streams,
                rate: keys::parse_rate(&rate)?,
            };
            let key = keys::create(&conn, &new)?;
            println!("{key}");
            eprintln!("created key `{name}` — store it now, it is not shown again");
        }
        ApikeyCommand::List { cfg } => {
            let conn = open(&cfg)?;
            let list = keys::list(&conn)?;
            println!(
                "{:<24} {:<20} {:>7} {:>7} {:>7} {:<25} {:<25} STATUS",
                "NAME", "SCOPES", "FILTERS", "STREAMS", "RATE/S", "CREATED", "LAST USED"
            );
            for k in list {
                let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{:<24} {:<20} {:>7} {:>7} {:>7} {:<25} {:<25} {}",
                    k.name,
                    scopes.join(","),
                    k.max_filters,
                    k.max_streams,
                    k.rate,
                    k.created_at,
                    k.last_used_at.as_deref().unwrap_or("never"),
                    k.revoked_at
                        .as_ref()
                        .map(|t| format!("revoked {t}"))
                        .unwrap_or_else(|| "active".into())
                );
            }
        }
        ApikeyCommand::Update {
            cfg,
            name,
            scopes,
            max_filters,
            max_streams,
            rate,
        } => {
            let conn = open(&cfg)?;
            let change = KeyUpdate {
                scopes: scopes.as_deref().map(keys::parse_scopes).transpose()?,
                max_filters,
                max_streams,
                rate: rate.as_deref().map(keys::parse_rate).transpose()?,
            };
            if change.scopes.is_none()
                && change.max_filters.is_none()
                && change.max_streams.is_none()
                && change.rate.is_none()
            {
                bail!("nothing to update: pass --scopes, --max-filters, --max-streams or --rate");
            }
            keys::update(&conn, &name, &change)?;
            eprintln!("updated key `{name}`");
        }
        ApikeyCommand::Revoke { cfg, name } => {
            let conn = open(&cfg)?;
            keys::revoke(&conn, &name)?;
            eprintln!("revoked key `{name}`: refused within a second, open streams closed within 5 seconds");
        }
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    let upstream = livestrom::replay::demo_upstream()
        .await
        .context("cannot start the demo upstream")?;
    let dir = std::env::temp_dir().join(format!("livestrom-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db = dir.join("demo.db");
    let toml =
        livestrom::replay::demo_sources_toml(&upstream.base_url(), &db, &args.listen.to_string());
    let path = dir.join("sources.toml");
    std::fs::write(&path, &toml).with_context(|| format!("cannot write {}", path.display()))?;
    let config = Config::load(&path).context("the generated demo config is invalid (a bug)")?;
    let key = {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        let new = NewKey {
            name: "demo".into(),
            scopes: keys::parse_scopes("stream:read")?,
            max_filters: 20,
            max_streams: 10,
            rate: 10.0,
        };
        keys::create(&conn, &new)?
    };
    println!(
        "Livestrom demo — offline, fixtures replayed by a built-in upstream at {}",
        upstream.base_url()
    );
    println!("config: {}  (database {})", path.display(), db.display());
    println!();
    println!("API key: {key}");
    println!();
    println!("Watch the live stream in another terminal:");
    println!(
        "  curl -N -H 'X-API-Key: {key}' 'http://{}/v1/stream'",
        args.listen
    );
    println!("Only the page and the news feed:");
    println!(
        "  curl -N -H 'X-API-Key: {key}' 'http://{}/v1/stream?source=demo.page&source=demo.news'",
        args.listen
    );
    println!(
        "Or: cargo run --release -- tail --url http://{} --key {key}",
        args.listen
    );
    println!();
    println!("Ctrl-C stops the demo.");
    let res = run(config, (None, None), None).await;
    drop(upstream);
    let _ = std::fs::remove_dir_all(&dir);
    res
}
