//! `livestrom cluster status`: the JetStream stream, the engines and edges
//! seen, and which engine holds each source's lease. Also the connection
//! the other subcommands use when the config has a `[cluster]` table.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use livestrom_engine::cluster::status::ClusterStatus;
use livestrom_engine::cluster::{Cluster, ClusterError};
use livestrom_engine::config::ClusterConfig;
use livestrom_engine::Config;

use super::{load_config, ConfigArgs};

/// How long a one-shot command waits for the cluster.
const CLI_CONNECT: Duration = Duration::from_secs(20);

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// The stream, the nodes seen and the lease of each source.
    Status {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

/// `livestrom cluster …`.
pub(crate) async fn main(command: ClusterCommand) -> Result<ExitCode> {
    match command {
        ClusterCommand::Status { cfg } => {
            let config = load_config(&cfg, None)?;
            let cluster = connect(&config).await?;
            print_status(&config, &ClusterStatus::read(&cluster).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Connects a one-shot command to the config's cluster: an error (not a
/// hang) when there is no `[cluster]` table or NATS cannot be reached.
pub(crate) async fn connect(config: &Config) -> Result<Cluster> {
    let Some(cc) = &config.cluster else {
        bail!(
            "{} has no [cluster] table: this node keeps its events in SQLite ({})",
            config.path.display(),
            config.engine.database.display()
        );
    };
    connect_to(cc, config.engine.retention).await
}

/// Connects to `cluster` within [`CLI_CONNECT`]; the error names the
/// servers (credentials redacted), the cause and what to check.
pub(crate) async fn connect_to(cluster: &ClusterConfig, retention: Duration) -> Result<Cluster> {
    let servers = cluster
        .nats
        .iter()
        .map(|u| livestrom_engine::redact::redact_url_text(u))
        .collect::<Vec<_>>()
        .join(", ");
    match tokio::time::timeout(CLI_CONNECT, Cluster::connect(cluster, retention)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e @ ClusterError::Connect { .. })) => {
            let hint = e.hint();
            let ClusterError::Connect { source, .. } = e else {
                unreachable!("matched above")
            };
            bail!("cannot reach the cluster at {servers}: {source}; {hint}")
        }
        Ok(Err(e)) => bail!("cannot use the cluster at {servers}: {e}; {}", e.hint()),
        Err(_) => bail!(
            "cannot reach the cluster at {servers}: no answer within {}s; is nats-server running there (with JetStream, -js)?",
            CLI_CONNECT.as_secs()
        ),
    }
}

fn print_status(config: &Config, s: &ClusterStatus) {
    let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "stream     {} (tag {}, replicas {}, max age {})",
        s.stream,
        s.tag,
        s.replicas,
        humantime_secs(s.max_age)
    );
    println!("messages   {} ({} bytes)", s.messages, s.bytes);
    println!("first      #{} {}", s.first.0, t(s.first.1));
    println!("last       #{} {}", s.last.0, t(s.last.1));
    if !s.servers.is_empty() {
        println!("servers    {}", s.servers.join(", "));
    }
    println!();
    println!(
        "{:<8} {:<32} {:<20} {:>8} LAST SEEN",
        "ROLE", "NODE", "HOST", "PID"
    );
    if s.nodes.is_empty() {
        println!("(no engine or edge seen within the lease TTL)");
    }
    for n in &s.nodes {
        println!(
            "{:<8} {:<32} {:<20} {:>8} {}",
            n.role,
            n.id,
            n.host,
            n.pid,
            t(Some(n.seen_at))
        );
    }
    println!();
    println!("{:<32} LEASE HELD BY", "SOURCE");
    for src in &config.sources {
        let holder = s
            .leases
            .iter()
            .find(|(k, _)| k == src.id.as_str())
            .map(|(_, v)| v.as_str())
            .unwrap_or("- (nobody: not polled)");
        println!("{:<32} {holder}", src.id.as_str());
    }
}

/// `90s` → `1m 30s`, for a duration of whole seconds.
fn humantime_secs(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(days, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}
