//! `livestrom apikey create|list|update|revoke`: on one node, works on the
//! database while `livestrom run` is using it; with a `[cluster]` table, on
//! the cluster's keys bucket, which every edge watches.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use livestrom_engine::cluster::wire::Bucket;
use livestrom_engine::config::{ClusterConfig, ConfigError};
use livestrom_engine::keys::{self, KeyAdmin, KeyUpdate, NewKey};
use livestrom_engine::Config;

use super::ConfigArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum ApikeyCommand {
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

/// `livestrom apikey …`.
pub(crate) async fn main(command: ApikeyCommand) -> Result<ExitCode> {
    match command {
        ApikeyCommand::Create {
            cfg,
            name,
            scopes,
            max_filters,
            max_streams,
            rate,
        } => {
            let new = NewKey {
                name: name.clone(),
                scopes: keys::parse_scopes(&scopes)?,
                max_filters,
                max_streams,
                rate: keys::parse_rate(&rate)?,
            };
            let key = open(&cfg).await?.create(&new).await?;
            println!("{key}");
            eprintln!("created key `{name}` — store it now, it is not shown again");
        }
        ApikeyCommand::List { cfg } => {
            let list = open(&cfg).await?.list().await?;
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
            open(&cfg).await?.update(&name, &change).await?;
            eprintln!("updated key `{name}`");
        }
        ApikeyCommand::Revoke { cfg, name } => {
            open(&cfg).await?.revoke(&name).await?;
            eprintln!("revoked key `{name}`: refused within a second, open streams closed within 5 seconds");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the keys are: the cluster's bucket when the config has
/// `[cluster]`, else the SQLite database.
#[derive(Debug)]
enum KeysAt {
    Database(PathBuf),
    Cluster {
        cluster: ClusterConfig,
        retention: Duration,
    },
}

/// Decides where the keys are without requiring a valid config on one node:
/// `--db`/`LIVESTROM_DB` alone names the database even next to an invalid
/// or missing config, as before. A valid config with `[cluster]` always
/// means the cluster (also with `--db`): every edge reads keys from there,
/// so a key written to a database would be one no edge knows.
fn keys_at(args: &ConfigArgs) -> Result<KeysAt> {
    match Config::load(&args.config) {
        Ok(c) => Ok(match c.cluster {
            Some(cluster) => KeysAt::Cluster {
                cluster,
                retention: c.engine.retention,
            },
            None => KeysAt::Database(args.db.clone().unwrap_or(c.engine.database)),
        }),
        Err(ConfigError::Io { .. }) => Ok(KeysAt::Database(
            args.db
                .clone()
                .unwrap_or_else(|| PathBuf::from("livestrom.db")),
        )),
        Err(_) if args.db.is_some() => Ok(KeysAt::Database(args.db.clone().unwrap_or_default())),
        Err(e) => Err(e).with_context(|| {
            format!(
                "invalid configuration {} (pass --db to use a database directly)",
                args.config.display()
            )
        }),
    }
}

/// Opens where the keys are (see [`keys_at`]).
async fn open(args: &ConfigArgs) -> Result<KeyAdmin> {
    match keys_at(args)? {
        KeysAt::Database(path) => {
            let p = path.clone();
            let conn =
                tokio::task::spawn_blocking(move || livestrom_engine::store::open_and_migrate(&p))
                    .await?
                    .with_context(|| format!("cannot open database {}", path.display()))?;
            Ok(KeyAdmin::sqlite(conn))
        }
        KeysAt::Cluster { cluster, retention } => keys_bucket(&cluster, retention).await,
    }
}

/// Connects to the cluster and opens its keys bucket.
async fn keys_bucket(cluster: &ClusterConfig, retention: Duration) -> Result<KeyAdmin> {
    let c = super::cluster::connect_to(cluster, retention).await?;
    // The keys bucket has no max age; the second argument is for items.
    let kv = c
        .bucket(Bucket::Keys, Duration::ZERO)
        .await
        .map_err(|e| anyhow!("cannot open the cluster's keys bucket: {e}; {}", e.hint()))?;
    Ok(KeyAdmin::cluster(kv))
}
