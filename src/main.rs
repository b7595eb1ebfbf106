//! The `livestrom` CLI: clap → tracing → one subcommand (`src/cli/`, a file
//! each); the crates do the work.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

use cli::{apikey, cluster, demo, run, sources, tail, webhook};

/// jemalloc keeps an idle SSE connection's untouched buffer pages out of RSS
/// (docs/PERFORMANCE.md, "Edge" (d)); the fanout bench's server uses it too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Livestrom watches feeds, pages and firehoses and streams every change over SSE.
#[derive(Debug, Parser)]
#[command(name = "livestrom", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for one JSON object
    /// per line (log shippers; field names in docs/OPERATIONS.md).
    #[arg(long, global = true, env = "LIVESTROM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's own fields at the top level.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine and the edge in one process.
    Run(run::RunArgs),
    /// Manage API keys (works while `livestrom run` is running).
    Apikey {
        #[command(subcommand)]
        command: apikey::ApikeyCommand,
    },
    /// Manage webhook endpoints: signed push delivery of the stream's events
    /// (works while `livestrom run` is running).
    Webhook {
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
    /// Validate the config or show each source's health.
    Sources {
        #[command(subcommand)]
        command: sources::SourcesCommand,
    },
    /// The cluster's stream, nodes and leases (needs a [cluster] table).
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Follow a stream in the terminal, resuming after disconnects.
    Tail(tail::TailArgs),
    /// Offline demo: fixtures replayed by a built-in upstream, a fresh key, the curl line.
    Demo(demo::DemoArgs),
}

/// `/v1/events`) and feed/page parsing. tokio's default of 512 lets a
/// reconnect storm after a restart open hundreds of SQLite connections at
/// once, which only adds memory (docs/PERFORMANCE.md, edge (d)); the work is
/// short and CPU-bound, so more threads than this gain nothing.
pub const MAX_BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
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

/// Logs to stderr, filtered by `LIVESTROM_LOG` (or `RUST_LOG`), `info` by
/// default (the NATS client's own connection lines at `warn`: Livestrom logs
/// connection changes itself).
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVESTROM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    if format == LogFormat::Json {
        // Flat objects with fixed names (docs/OPERATIONS.md, "JSON logs"):
        // the event's fields beside `message`, no span lists.
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return;
    }
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
        Command::Run(args) => run::main(args).await,
        Command::Sources { command } => sources::main(command).await,
        Command::Apikey { command } => apikey::main(command).await,
        Command::Webhook { command } => webhook::main(command).await,
        Command::Cluster { command } => cluster::main(command).await,
        Command::Tail(args) => tail::run(args).await.map(|_| ExitCode::SUCCESS),
        Command::Demo(args) => demo::main(args).await,
    }
}
