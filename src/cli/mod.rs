//! The subcommands of the `livestrom` binary, one file each, and what they
//! share: where the config and the database are.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use livestrom_engine::Config;

pub(crate) mod apikey;
pub(crate) mod cluster;
pub(crate) mod cluster_run;
pub(crate) mod demo;
pub(crate) mod run;
pub(crate) mod sources;
pub(crate) mod tail;

#[derive(Debug, Args, Clone)]
pub(crate) struct ConfigArgs {
    /// Path of sources.toml.
    #[arg(long, short, env = "LIVESTROM_CONFIG", default_value = "sources.toml")]
    pub(crate) config: PathBuf,
    /// SQLite database file (overrides [engine] database).
    #[arg(long, env = "LIVESTROM_DB")]
    pub(crate) db: Option<PathBuf>,
}

/// Loads and validates the config, then applies flag/env overrides
/// (flag > env > sources.toml > default; clap resolves flag vs env).
pub(crate) fn load_config(args: &ConfigArgs, listen: Option<SocketAddr>) -> Result<Config> {
    let mut config = Config::load(&args.config)
        .with_context(|| format!("cannot load configuration {}", args.config.display()))?;
    config.apply_overrides(args.db.clone(), listen);
    Ok(config)
}

/// The database path without requiring a valid config for tools that only
/// need the database (`apikey`): flag/env, else the config's, else the default.
pub(crate) fn database_path(args: &ConfigArgs) -> Result<PathBuf> {
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
