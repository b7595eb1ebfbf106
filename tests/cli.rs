//! Integration tests through the real `livestrom` binary: `run` with a
//! config, `apikey create` while it runs, an SSE client, SIGTERM / kill -9,
//! restart, and resume with `Last-Event-ID`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use livestrom::replay::{ReplayServer, Scenario, Step};

use crate::helpers::print_log_tail;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_livestrom");
const WAIT: Duration = Duration::from_secs(60);

/// A `livestrom run` child process and the address it listens on.
pub(crate) struct Running {
    child: Child,
    pub(crate) addr: String,
    /// Every stderr line so far (logs), for assertions.
    pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// Starts `livestrom run` and waits for its "listening on" line.
    fn start(config: &Path) -> Running {
        Self::start_with(config, &[], "listening on http://")
    }

    /// Starts `livestrom run` with `extra` arguments and waits for a log
    /// line containing `ready`; `addr` is what follows "listening on", if any.
    fn start_with(config: &Path, extra: &[&str], ready: &'static str) -> Running {
        Self::start_logging(config, extra, ready, "info")
    }

    /// [`start_with`](Self::start_with) with `LIVESTROM_LOG` set to `level`.
    pub(crate) fn start_logging(
        config: &Path,
        extra: &[&str],
        ready: &'static str,
        level: &str,
    ) -> Running {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("LIVESTROM_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line.clone());
                }
                if !sent && line.contains(ready) {
                    let addr = line
                        .split("listening on http://")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
                // Keep draining so the child never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("livestrom run never logged {ready:?}: {e}"));
        Running { child, addr, log }
    }

    /// Waits until a log line contains `needle`.
    pub(crate) fn wait_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if self
                .log
                .lock()
                .map(|l| l.iter().any(|x| x.contains(needle)))
                .unwrap_or(false)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{sig} failed: {status:?}"
        );
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub(crate) fn wait(mut self) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => panic!("livestrom run did not exit: {other:?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the node said (its last lines).
        if std::thread::panicking() {
            if let Ok(log) = self.log.lock() {
                print_log_tail("livestrom run's log", &log[log.len().saturating_sub(200)..]);
            }
        }
    }
}

pub(crate) fn write_config(dir: &Path, feed_url: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("live.db");
    let config = dir.join("sources.toml");
    let text = format!(
        "[engine]\ndatabase = {db:?}\nretention = \"1d\"\n[edge]\nkeepalive = \"1s\"\n\
         [fetch]\nallow_private_networks = true\nper_host_rps = 100\n\
         [[source]]\nid = \"news.grow\"\ntype = \"rss\"\nurl = \"{feed_url}\"\ninterval = \"1s\"\n"
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    (config, db)
}

/// A feed that gains one item on every request: item N is `story-N`.
pub(crate) fn growing_feed() -> ReplayServer {
    let scenario = Scenario::new("growing").dynamic("/feed.xml", |req| {
        let n = req.hit;
        let mut body = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>grow</title><link>https://example.org/</link><description>d</description>");
        for i in (1..=n).rev() {
            body.push_str(&format!(
                "<item><guid>story-{i}</guid><title>Story {i}</title><link>https://example.org/{i}</link><description>Body {i}</description></item>"
            ));
        }
        body.push_str("</channel></rss>");
        Step::ok(body).content_type("application/rss+xml").into()
    });
    ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"))
}

fn create_key(config: &Path) -> String {
    let out = Command::new(BIN)
        .args([
            "apikey",
            "create",
            "--name",
            "tester",
            "--scopes",
            "stream:read",
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "apikey create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        key.starts_with("lstr_") && key.len() == 49,
        "unexpected key {key:?}"
    );
    key
}

/// Reads `n` events (id, title) from the stream, optionally resuming.
async fn read_events(
    addr: &str,
    key: &str,
    last_event_id: Option<&str>,
    n: usize,
) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut req = client
        .get(format!("http://{addr}/v1/stream"))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream().eventsource();
    let mut out = Vec::new();
    let fut = async {
        while let Some(ev) = stream.next().await {
            let ev = ev.unwrap_or_else(|e| panic!("{e}"));
            if ev.data.is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                v["id"].as_str(),
                Some(ev.id.as_str()),
                "frame id and event id differ"
            );
            out.push((
                ev.id.clone(),
                v["title"].as_str().unwrap_or_default().to_owned(),
            ));
            if out.len() == n {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("only {} of {n} events arrived", out.len()));
    out
}

fn story_number(title: &str) -> u32 {
    title
        .trim_start_matches("Story ")
        .parse()
        .unwrap_or_else(|e| panic!("{title}: {e}"))
}

#[tokio::test]
async fn run_streams_survives_sigterm_and_kill_9_and_resumes_without_gaps() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, _db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let key = create_key(&config);

    let run = Running::start(&config);
    let first = read_events(&run.addr, &key, None, 3).await;
    run.signal("TERM");
    assert!(run.wait(), "livestrom run did not exit cleanly on SIGTERM");

    // Restart and resume after the last event seen: the next stories, in order.
    let run = Running::start(&config);
    let last = first.last().map(|e| e.0.clone()).unwrap_or_default();
    let second = read_events(&run.addr, &key, Some(&last), 3).await;
    run.signal("KILL");
    let _ = run.wait();

    // kill -9 mid-work: the database is intact and a resume still has no gap.
    let run = Running::start(&config);
    let last2 = second.last().map(|e| e.0.clone()).unwrap_or_default();
    let third = read_events(&run.addr, &key, Some(&last2), 2).await;
    drop(run);

    let all: Vec<&(String, String)> = first.iter().chain(&second).chain(&third).collect();
    let numbers: Vec<u32> = all.iter().map(|e| story_number(&e.1)).collect();
    for w in all.windows(2) {
        assert!(w[0].0 < w[1].0, "ids not increasing across restarts: {w:?}");
    }
    for w in numbers.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "gap or duplicate across restarts: {numbers:?}"
        );
    }
}

#[test]
fn sources_check_reports_every_problem_with_its_line_and_fails() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("sources.toml");
    std::fs::write(
        &path,
        "[[source]]\nid = \"ok\"\ntype = \"rss\"\nurl = \"https://example.org/feed\"\n\n[[source]]\nid = \"ok\"\ntype = \"rss\"\nurl = \"ftp://example.org/\"\ninterval = \"soon\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["sources", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sources.toml:7: source[1].id: duplicate id"),
        "{err}"
    );
    assert!(err.contains("sources.toml:9: source[1].url"), "{err}");
    assert!(err.contains("sources.toml:10: source[1].interval"), "{err}");
    assert!(err.contains("3 problems"), "{err}");

    std::fs::write(
        &path,
        "[[source]]\nid = \"ok\"\ntype = \"rss\"\nurl = \"https://example.org/feed\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["sources", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_run_on_the_same_database_is_refused_clearly() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, _db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let _run = Running::start(&config);
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use by another `livestrom run`"),
        "{err}"
    );
}

#[tokio::test]
async fn an_edited_config_is_reloaded_and_an_invalid_edit_keeps_the_running_one() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let run = Running::start(&config);
    run.wait_log("engine started");

    // Add a second source: it is polled without a restart.
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let added = format!(
        "{text}[[source]]\nid = \"news.added\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n",
        upstream.url("/feed.xml")
    );
    std::fs::write(&config, &added).unwrap_or_else(|e| panic!("{e}"));
    run.wait_log("config reloaded");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let conn = livestrom_engine::store::open_and_migrate(&db).unwrap_or_else(|e| panic!("{e}"));
        let polled: i64 = conn
            .query_row("SELECT COUNT(*) FROM sources WHERE source_id = 'news.added' AND last_poll_at IS NOT NULL", [], |r| r.get(0))
            .unwrap_or(0);
        if polled == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the added source was never polled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An invalid edit is reported with its line and the running config is kept.
    std::fs::write(&config, format!("{added}[[source]]\nid = \"Bad Id\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    run.wait_log("config reload rejected");
    run.wait_log("source[2].id");
    // …and keeps polling with it (news.grow polls every second).
    let before = upstream.hits("/feed.xml");
    let deadline = std::time::Instant::now() + WAIT;
    while upstream.hits("/feed.xml") < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "polling stopped after an invalid edit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(run);
}

#[test]
fn a_corrupt_database_is_a_clear_error_at_start_up() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, db) = write_config(dir.path(), "http://127.0.0.1:9/feed.xml");
    std::fs::write(&db, vec![0x5au8; 16384]).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a SQLite database or is corrupt"), "{err}");
    assert!(err.contains("live.db"), "the message names the file: {err}");
    // The file is left as it was for the operator to inspect.
    assert_eq!(
        std::fs::read(&db).map(|b| b.len()).unwrap_or_default(),
        16384
    );
}

#[tokio::test]
async fn tail_prints_the_stream_as_json_lines() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, _db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let key = create_key(&config);
    let run = Running::start(&config);
    let mut tail = Command::new(BIN)
        .args(["tail", "--json", "--source", "news.*", "--url"])
        .arg(format!("http://{}", run.addr))
        .env("LIVESTROM_API_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = tail.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok).take(2) {
            let _ = tx.send(line);
        }
    });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let line = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("tail printed nothing: {e}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["source_id"].as_str(), Some("news.grow"));
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    assert!(ids[0] < ids[1], "{ids:?}");
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn role_engine_polls_and_stores_without_serving_http() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, _db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let run = Running::start_with(
        &config,
        &["--role", "engine"],
        "engine only (no HTTP listener)",
    );
    // It polls and stores: `sources list` (another process) sees events.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = Command::new(BIN)
            .args(["sources", "list", "--config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let events = text
            .lines()
            .find(|l| l.starts_with("news.grow"))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if events >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no events stored: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged = run.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(!logged.contains("listening on"), "{logged}");
    run.signal("TERM");
    assert!(run.wait(), "a clean exit on SIGTERM");
}

#[test]
fn role_edge_without_a_cluster_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, _db) = write_config(dir.path(), "http://127.0.0.1:9/feed.xml");
    for (args, env) in [(vec!["--role", "edge"], None), (vec![], Some("edge"))] {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(&args);
        if let Some(role) = env {
            cmd.env("LIVESTROM_ROLE", role);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs a [cluster] table"), "{err}");
    }
    let out = Command::new(BIN)
        .args(["run", "--role", "bogus", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("all") && err.contains("engine") && err.contains("edge"),
        "{err}"
    );
}

/// `livestrom apikey` without `[cluster]` works on the database: create,
/// list (no key shown), update, revoke; `--db` still works next to an
/// invalid config, and an invalid config without it says to pass `--db`.
#[test]
fn apikey_manages_keys_in_the_database_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, db) = write_config(dir.path(), "http://127.0.0.1:9/feed.xml");
    let apikey = |args: &[&str], config: &Path| {
        Command::new(BIN)
            .arg("apikey")
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let key = create_key(&config);
    assert!(db.exists(), "the key is not in the configured database");
    let out = apikey(&["update", "tester", "--max-streams", "3"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = apikey(&["revoke", "tester"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = apikey(&["list"], &config);
    let listed = String::from_utf8_lossy(&out.stdout);
    let line = listed
        .lines()
        .find(|l| l.starts_with("tester "))
        .unwrap_or_else(|| panic!("not listed:\n{listed}"));
    assert!(
        line.contains(" 3 ") && line.contains("revoked 20"),
        "{line}"
    );
    assert!(!listed.contains(&key[5..]));

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[engine\n").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BIN)
        .args(["apikey", "list", "--config"])
        .arg(&broken)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tester "));
    let out = apikey(&["list"], &broken);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --db"));
}

#[tokio::test]
async fn run_with_json_logs_writes_one_object_per_line_and_says_what_it_loaded() {
    let upstream = growing_feed();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (config, db) = write_config(dir.path(), &upstream.url("/feed.xml"));
    let run = Running::start_with(&config, &["--log-format", "json"], "subscribe: ");
    run.wait_log("\"message\":\"stored new events\"");
    run.signal("TERM");
    let log = run.log.clone();
    assert!(run.wait(), "livestrom run did not exit cleanly");
    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
    let mut objects = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not one JSON object ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v[field].is_string(), "no string `{field}` in {line}");
        }
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "timestamp {ts:?} is not RFC 3339"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or_default()),
            "{line}"
        );
        objects.push(v);
    }
    let find = |needle: &str| {
        objects
            .iter()
            .find(|v| v["message"].as_str().unwrap_or_default().contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in {lines:#?}"))
    };
    // What it loaded: sources per type, the database, the listen address.
    let start = find("listening on http://");
    assert_eq!(start["sources"], 1, "{start}");
    assert_eq!(start["by_type"], "rss 1", "{start}");
    assert_eq!(
        start["log"],
        format!("database {}", db.display()),
        "{start}"
    );
    let listen = start["listen"].as_str().unwrap_or_default().to_owned();
    assert!(listen.starts_with("127.0.0.1:"), "{start}");
    // How to mint a key and subscribe, as commands that work.
    let mint = find("mint a stream key")["command"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let create = mint
        .strip_prefix("KEY=$(")
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{mint}"));
    assert!(
        create.starts_with("livestrom apikey create --config "),
        "{create}"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(create.replacen("livestrom", BIN, 1))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{create}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("lstr_"));
    let subscribe = find("subscribe: ")["command"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        subscribe,
        format!("curl -N -H \"X-API-Key: $KEY\" http://{listen}/v1/stream")
    );
    // An event's own fields sit beside the message.
    let stored = find("stored new events");
    assert_eq!(stored["source"], "news.grow", "{stored}");
    assert!(stored["events"].as_u64().unwrap_or(0) >= 1, "{stored}");
}

/// The allocator setting of `.cargo/config.toml` is compiled into the
/// binary: jemalloc runs one arena per CPU (docs/PERFORMANCE.md, "Burst: a
/// bounded number of reads, one arena per CPU"). Asked to, jemalloc prints
/// its options when the process exits.
#[test]
fn the_allocator_runs_one_arena_per_cpu() {
    let out = Command::new(BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stderr);
    assert!(
        printed.contains(r#"config.malloc_conf: "percpu_arena:percpu""#)
            && printed.contains(r#"opt.percpu_arena: "percpu""#),
        "jemalloc's options at exit:\n{}",
        printed
            .lines()
            .filter(|l| l.contains("malloc_conf") || l.contains("opt."))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
