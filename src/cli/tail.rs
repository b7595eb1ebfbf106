//! `livestrom tail`: a resuming SSE client for the terminal. Reconnects with
//! backoff and `Last-Event-ID`, so nothing is missed across drops.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use eventsource_stream::Eventsource;
use futures::StreamExt;

/// Flags of `livestrom tail`.
#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Base URL of the edge.
    #[arg(long, env = "LIVESTROM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (prefer the env var: flags show up in `ps`).
    #[arg(long, env = "LIVESTROM_API_KEY", hide_env_values = true)]
    key: String,
    /// Source id or `prefix.*` (repeatable).
    #[arg(long)]
    source: Vec<String>,
    /// rss, json, html or firehose (repeatable).
    #[arg(long)]
    source_type: Vec<String>,
    /// Tag (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Case-insensitive keyword in title or content (repeatable).
    #[arg(long)]
    keyword: Vec<String>,
    /// Start after this event id instead of now.
    #[arg(long)]
    since: Option<String>,
    /// Print each event's raw JSON line instead of a summary.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: TailArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (name, values) in [
        ("source", &args.source),
        ("source_type", &args.source_type),
        ("tag", &args.tag),
        ("keyword", &args.keyword),
    ] {
        for v in values {
            query.push((name, v));
        }
    }
    let url = format!("{}/v1/stream", args.url.trim_end_matches('/'));
    let mut cursor = args.since.clone();
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut req = client
            .get(&url)
            .query(&query)
            .header("X-API-Key", &args.key)
            .header("Accept", "text/event-stream");
        if let Some(c) = &cursor {
            req = req.header("Last-Event-ID", c);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tail: cannot connect to {url}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let status = res.status();
        if status == reqwest::StatusCode::GONE {
            eprintln!(
                "tail: cursor {} is older than the retention window; resuming from now",
                cursor.as_deref().unwrap_or("-")
            );
            cursor = None;
            continue;
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(backoff);
            eprintln!("tail: rate limited; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            continue;
        }
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or(body);
            if status.is_server_error() {
                eprintln!("tail: server error {status}: {detail}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            bail!("{status}: {detail}");
        }
        eprintln!(
            "tail: connected to {url}{}",
            cursor
                .as_ref()
                .map(|c| format!(" (resuming after {c})"))
                .unwrap_or_default()
        );
        backoff = Duration::from_millis(500);
        let mut events = res.bytes_stream().eventsource();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => {
                    if !ev.id.is_empty() {
                        cursor = Some(ev.id.clone());
                    }
                    if ev.data.is_empty() {
                        continue;
                    }
                    if args.json {
                        println!("{}", ev.data);
                    } else {
                        print_summary(&ev.event, &ev.data);
                    }
                }
                Err(e) => {
                    eprintln!("tail: stream error: {e}");
                    break;
                }
            }
        }
        eprintln!("tail: disconnected; reconnecting");
    }
}

fn print_summary(event: &str, data: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
        println!("{data}");
        return;
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(1);
    let mark = if version > 1 {
        format!(" (v{version})")
    } else {
        String::new()
    };
    println!(
        "{} {:<24} [{event}] {}{mark}  {}",
        s("emitted_at"),
        s("source_id"),
        s("title").replace('\n', " "),
        s("url")
    );
}
