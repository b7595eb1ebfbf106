//! `livestrom demo`: offline, in one command — fixtures replayed by a
//! built-in upstream, a fresh key, the curl line, then `run`.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use livestrom_engine::keys::{self, NewKey};
use livestrom_engine::Config;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Listen address of the demo's edge.
    #[arg(long, env = "LIVESTROM_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
}

/// `livestrom demo`.
pub(crate) async fn main(args: DemoArgs) -> Result<ExitCode> {
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
    let res = super::run::run(config, (None, None), super::run::Role::All, None).await;
    drop(upstream);
    let _ = std::fs::remove_dir_all(&dir);
    res.map(|()| ExitCode::SUCCESS)
}
