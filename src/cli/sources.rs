//! `livestrom sources check|list`: validate the config; show each source's
//! health as the engine stored it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use livestrom_engine::health::{shown_error, Health};
use livestrom_engine::{Bus, Config, Store};

use super::{load_config, ConfigArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum SourcesCommand {
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

/// `livestrom sources …`.
pub(crate) async fn main(command: SourcesCommand) -> Result<ExitCode> {
    match command {
        SourcesCommand::Check { cfg } => Ok(check(&cfg)),
        SourcesCommand::List { cfg } => {
            list(&cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(args: &ConfigArgs) -> ExitCode {
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

async fn list(args: &ConfigArgs) -> Result<()> {
    let config = load_config(args, None)?;
    let states = if config.cluster.is_some() {
        let cluster = super::cluster::connect(&config).await?;
        livestrom_engine::cluster::status::source_states(&cluster, config.engine.retention).await?
    } else {
        let store = Store::open(&config.engine.database, config.engine.retention, Bus::new())
            .context("cannot open the database")?;
        store.source_states().await?
    };
    let states: std::collections::HashMap<String, livestrom_engine::store::SourceState> = states
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
        let health = Health::of(st).as_str();
        let err = st
            .and_then(|s| {
                shown_error(s).map(|e| format!("{e} ({} in a row)", s.consecutive_failures))
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
