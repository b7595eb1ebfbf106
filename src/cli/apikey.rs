//! `livestrom apikey create|list|update|revoke`: works on the database
//! while `livestrom run` is using it.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use livestrom_engine::keys::{self, KeyUpdate, NewKey};

use super::{database_path, ConfigArgs};

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
pub(crate) fn main(command: ApikeyCommand) -> Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
