//! `livestrom webhook create|list|update|enable|disable|rotate-secret|delete|replay`:
//! works on the database while `livestrom run` is using it (the running
//! node notices each change within a second). Filters are checked by the
//! stream's parser and refused in its words. Single node only: a
//! configuration with `[cluster]` is refused.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use livestrom_engine::config::{parse_duration, ConfigError};
use livestrom_engine::webhooks::{
    EndpointInfo, EndpointUpdate, FilterTerms, NewEndpoint, Since, State, WebhookAdmin,
    CLUSTER_UNSUPPORTED, DEFAULT_TIMEOUT,
};
use livestrom_engine::Config;

use super::ConfigArgs;

/// Retention assumed when no configuration can be read (the default of `[engine] retention`).
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The filters of an endpoint: the names and meaning of `/v1/stream`'s.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Source id, or a prefix `group.*` (repeatable; OR).
    #[arg(long = "source", value_name = "S")]
    source: Vec<String>,
    /// rss, json, html or firehose (repeatable; OR).
    #[arg(long = "source-type", value_name = "T")]
    source_type: Vec<String>,
    /// Tag (repeatable; OR).
    #[arg(long = "tag", value_name = "T")]
    tag: Vec<String>,
    /// Case-insensitive word or phrase in title or content (repeatable; OR).
    #[arg(long = "keyword", value_name = "K")]
    keyword: Vec<String>,
}

impl FilterArgs {
    fn terms(self) -> FilterTerms {
        FilterTerms {
            source: self.source,
            source_type: self.source_type,
            tag: self.tag,
            keyword: self.keyword,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Create an endpoint; its signing secret is printed once.
    Create {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Where events are POSTed (http or https).
        #[arg(long)]
        url: String,
        #[command(flatten)]
        filters: FilterArgs,
        /// Deliver the events after this id, or `now` (the default): from
        /// the next event committed.
        #[arg(long, default_value = "now", value_name = "ID|now")]
        since: String,
        /// Deliveries in flight at once; above 1 they may arrive out of order.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// An attempt that has not answered in this long failed.
        #[arg(long, default_value = "10s")]
        timeout: String,
    },
    /// List endpoints: state, cursor, last success and error (never a secret).
    List {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change an endpoint's url, filters, concurrency or timeout (its cursor is kept).
    Update {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
        /// New url.
        #[arg(long)]
        url: Option<String>,
        /// New filters: any filter flag replaces all of the endpoint's filters.
        #[command(flatten)]
        filters: FilterArgs,
        /// Remove every filter: deliver every event.
        #[arg(long, conflicts_with_all = ["source", "source_type", "tag", "keyword"])]
        no_filters: bool,
        /// New concurrency.
        #[arg(long)]
        concurrency: Option<usize>,
        /// New attempt timeout.
        #[arg(long)]
        timeout: Option<String>,
    },
    /// Resume delivery from the cursor (also after failing or a 410).
    Enable {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
    },
    /// Stop delivering (the cursor is kept).
    Disable {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
    },
    /// A new signing secret, printed once; the old one still signs beside it for 24 hours.
    RotateSecret {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
    },
    /// Delete an endpoint.
    Delete {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
    },
    /// Deliver again from a retained position (or skip ahead to it).
    Replay {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The endpoint's name.
        name: String,
        /// The events after this id are delivered (`now`: skip to the newest).
        #[arg(long, value_name = "ID|now")]
        since: String,
    },
}

/// `livestrom webhook …`.
pub(crate) async fn main(command: WebhookCommand) -> Result<ExitCode> {
    match command {
        WebhookCommand::Create {
            cfg,
            name,
            url,
            filters,
            since,
            concurrency,
            timeout,
        } => {
            let new = NewEndpoint {
                name: name.clone(),
                url,
                filters: filters.terms(),
                since: Since::parse(&since)?,
                concurrency,
                timeout: parse_timeout(&timeout)?,
            };
            let (secret, info) = open(&cfg)?.create(new).await?;
            println!("{}", secret.expose());
            eprintln!(
                "created webhook `{name}` → {} ({}), delivering the events after {} — store the secret now, it is not shown again",
                info.url,
                info.filters.describe(),
                info.cursor
            );
        }
        WebhookCommand::List { cfg, json } => {
            let list = open(&cfg)?.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&list);
            }
        }
        WebhookCommand::Update {
            cfg,
            name,
            url,
            filters,
            no_filters,
            concurrency,
            timeout,
        } => {
            let terms = filters.terms();
            let change = EndpointUpdate {
                url,
                filters: if no_filters || !terms.is_empty() {
                    Some(terms)
                } else {
                    None
                },
                concurrency,
                timeout: timeout.as_deref().map(parse_timeout).transpose()?,
            };
            let info = open(&cfg)?.update(&name, change).await?;
            eprintln!(
                "updated webhook `{name}`: {} ({}), concurrency {}, timeout {}s",
                info.url,
                info.filters.describe(),
                info.concurrency,
                info.timeout_secs
            );
        }
        WebhookCommand::Enable { cfg, name } => {
            let info = open(&cfg)?.set_enabled(&name, true).await?;
            eprintln!(
                "enabled webhook `{name}`: delivering the events after {}",
                info.cursor
            );
        }
        WebhookCommand::Disable { cfg, name } => {
            let info = open(&cfg)?.set_enabled(&name, false).await?;
            eprintln!(
                "disabled webhook `{name}` (its cursor {} is kept; `webhook enable {name}` resumes)",
                info.cursor
            );
        }
        WebhookCommand::RotateSecret { cfg, name } => {
            let rotated = open(&cfg)?.rotate_secret(&name).await?;
            println!("{}", rotated.secret.expose());
            eprintln!(
                "rotated the secret of webhook `{name}`: deliveries carry both signatures until {} — store the new secret now, it is not shown again",
                rotated.previous_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        WebhookCommand::Delete { cfg, name } => {
            open(&cfg)?.delete(&name).await?;
            eprintln!("deleted webhook `{name}`");
        }
        WebhookCommand::Replay { cfg, name, since } => {
            let info = open(&cfg)?.replay(&name, Since::parse(&since)?).await?;
            eprintln!(
                "webhook `{name}` delivers the events after {}{}",
                info.cursor,
                if info.state == State::Disabled {
                    " once enabled (it is disabled)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_timeout(s: &str) -> Result<Duration> {
    parse_duration(s).with_context(|| format!("--timeout {s}"))
}

/// The endpoints as a table; the reason of each endpoint not active below it.
fn print_table(list: &[EndpointInfo]) {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "never".to_owned())
    };
    println!(
        "{:<20} {:<40} {:<24} {:<9} {:<36} {:<20} {:>5} LAST ERROR",
        "NAME", "URL", "FILTERS", "STATE", "CURSOR", "LAST SUCCESS", "FAILS"
    );
    for w in list {
        println!(
            "{:<20} {:<40} {:<24} {:<9} {:<36} {:<20} {:>5} {}",
            w.name,
            w.url,
            w.filters.describe(),
            w.state.as_str(),
            w.cursor,
            time(w.last_success_at),
            w.failures_in_a_row,
            w.last_error.as_deref().unwrap_or("-")
        );
        if let Some(reason) = w
            .state_reason
            .as_deref()
            .filter(|_| w.state != State::Active)
        {
            println!(
                "  └ {} since {}: {reason}",
                w.state.as_str(),
                time(w.state_since)
            );
        }
    }
}

/// Opens the database the configuration names (or `--db`); refuses a cluster.
fn open(args: &ConfigArgs) -> Result<WebhookAdmin> {
    let (db, retention) = database(args)?;
    WebhookAdmin::open(&db, retention)
        .with_context(|| format!("cannot open database {}", db.display()))
}

/// Where the endpoints are, and the retention to check cursors against: as
/// `apikey` decides (a `--db` works without a valid config).
fn database(args: &ConfigArgs) -> Result<(PathBuf, Duration)> {
    match Config::load(&args.config) {
        Ok(c) => {
            if c.cluster.is_some() {
                bail!("{CLUSTER_UNSUPPORTED} ({})", args.config.display());
            }
            Ok((
                args.db.clone().unwrap_or(c.engine.database),
                c.engine.retention,
            ))
        }
        Err(ConfigError::Io { .. }) => Ok((
            args.db
                .clone()
                .unwrap_or_else(|| PathBuf::from("livestrom.db")),
            DEFAULT_RETENTION,
        )),
        Err(_) if args.db.is_some() => Ok((args.db.clone().unwrap_or_default(), DEFAULT_RETENTION)),
        Err(e) => Err(e).with_context(|| {
            format!(
                "invalid configuration {} (pass --db to use a database directly)",
                args.config.display()
            )
        }),
    }
}

/// Keeps `DEFAULT_TIMEOUT` and the flag's default in step.
const _: () = assert!(DEFAULT_TIMEOUT.as_secs() == 10);
