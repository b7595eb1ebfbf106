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
pub(crate) mod webhook;

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
