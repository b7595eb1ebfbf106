//! Scheduler benchmark: one engine keeping 10,000 sources polled against a
//! local fixture upstream (run in a child process so only the engine's CPU is
//! measured). Reports the engine process's CPU use while polling steadily and
//! while idle between polls.
//!
//! Run: `cargo bench --bench scheduler` (env: SOURCES, INTERVAL_SECS, WINDOW_SECS).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use livestrom::replay::{ReplayServer, Scenario, Step};
use livestrom_engine::runtime;
use livestrom_engine::{Bus, Config, Store};
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" of the command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn upstream_main() -> Result<(), Box<dyn std::error::Error>> {
    let body = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title><link>https://example.org/</link>\
                <description>d</description><item><guid>a</guid><title>A</title><link>https://example.org/a</link>\
                <description>x</description></item></channel></rss>";
    let scenario = Scenario::new("bench").dynamic("/feed.xml", move |_| {
        Step::ok(body)
            .content_type("application/rss+xml")
            .etag("v1")
            .into()
    });
    let server = ReplayServer::start(scenario)?;
    println!("{}", server.url("/feed.xml"));
    std::io::stdout().flush()?;
    // Serve until the parent closes our stdin.
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    println!("hits {}", server.total_hits());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--upstream") {
        return upstream_main();
    }
    let n = env_num("SOURCES", 10_000);
    let interval = env_num("INTERVAL_SECS", 60);
    let window = env_num("WINDOW_SECS", 60);

    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--upstream")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut url = String::new();
    out.read_line(&mut url)?;
    let url = url.trim().to_owned();

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let mut toml = format!(
        "[engine]\ndatabase = {db:?}\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 100\n"
    );
    for i in 0..n {
        toml.push_str(&format!("[[source]]\nid = \"bench.s{i}\"\ntype = \"rss\"\nurl = \"{url}?s={i}\"\ninterval = \"{interval}s\"\n"));
    }
    let config = Config::from_toml(std::path::Path::new("bench.toml"), &toml)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::open(&db, Duration::from_secs(86400), Bus::new())?;
        let cancel = CancellationToken::new();
        let engine = tokio::spawn(runtime::run(config, store.clone(), None, None, cancel.clone()));

        // First round: every source polled once (200, then 304s afterwards).
        let t0 = Instant::now();
        loop {
            let polled = store.source_states().await?.iter().filter(|s| s.last_poll_at.is_some()).count();
            if polled as u64 >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("first round: {n} sources polled in {:.1} s", t0.elapsed().as_secs_f64());

        // Steady state: polls every `interval` seconds per source.
        let (c0, w0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(window)).await;
        let (c1, wall) = (cpu_seconds(), w0.elapsed().as_secs_f64());
        let states = store.source_states().await?;
        let recent = states
            .iter()
            .filter(|s| s.last_poll_at.is_some_and(|t| (chrono::Utc::now() - t).num_seconds() < window as i64 + interval as i64))
            .count();
        let failing = states.iter().filter(|s| s.last_error.is_some()).count();
        let expected = n as f64 * wall / interval as f64;
        println!(
            "steady: {:.1}% of one core over {wall:.0} s ({:.0} polls expected at {interval}s intervals; {recent} sources polled recently, {failing} failing)",
            100.0 * (c1 - c0) / wall,
            expected
        );
        cancel.cancel();
        let _ = engine.await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    // Idle: the same sources with a long interval, measured between polls.
    let mut toml = format!("[engine]\ndatabase = {:?}\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 100\n", dir.path().join("idle.db"));
    for i in 0..n {
        toml.push_str(&format!("[[source]]\nid = \"bench.s{i}\"\ntype = \"rss\"\nurl = \"{url}?s={i}\"\ninterval = \"1h\"\n"));
    }
    let config = Config::from_toml(std::path::Path::new("bench-idle.toml"), &toml)?;
    rt.block_on(async {
        let store = Store::open(
            &dir.path().join("idle.db"),
            Duration::from_secs(86400),
            Bus::new(),
        )?;
        let cancel = CancellationToken::new();
        let engine = tokio::spawn(runtime::run(
            config,
            store.clone(),
            None,
            None,
            cancel.clone(),
        ));
        loop {
            let polled = store
                .source_states()
                .await?
                .iter()
                .filter(|s| s.last_poll_at.is_some())
                .count();
            if polled as u64 >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (c0, w0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(window.min(30))).await;
        let (c1, wall) = (cpu_seconds(), w0.elapsed().as_secs_f64());
        println!(
            "idle between polls: {:.2}% of one core over {wall:.0} s with {n} sources scheduled",
            100.0 * (c1 - c0) / wall
        );
        cancel.cancel();
        let _ = engine.await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    drop(child.stdin.take());
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    println!("upstream {}", line.trim());
    let _ = child.wait();
    Ok(())
}
