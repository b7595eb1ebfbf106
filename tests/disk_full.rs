//! A full disk, for real: `livestrom run` keeps its database on a small
//! tmpfs mounted in a private mount namespace (`unshare`), ingesting a local
//! SSE firehose while an SSE client records every event; the test then fills
//! that file system to the last byte (through `/proc/<pid>/root`). Ingestion
//! stops with a clear error (the log and `/readyz`), the source's stored
//! cursor does not move, streams keep serving what is stored, and once the
//! space is freed ingestion resumes where it stopped: every upstream item
//! stored exactly once, in order, and the client got exactly what is stored.
//!
//! Needs unprivileged user namespaces (`unshare -rm`). Without them the test
//! says so and passes only when `LIVESTROM_REQUIRE_NAMESPACES` is not `1`
//! (`.ci/run` sets it where `unshare` works).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::crash::{client, firehose, stored, write_firehose_config, Got, Upstream};
use crate::helpers::wait_for_value;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_livestrom");
/// Generous bound for anything waited on (a slow, shared 2-core box).
const WAIT: Duration = Duration::from_secs(120);

/// Whether this machine lets an unprivileged process mount a tmpfs in its
/// own namespaces.
fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `livestrom run` in its own mount namespace with `mnt` a `size` tmpfs;
/// SIGKILLed on drop. Its stderr lines are collected in `log`.
struct Node {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Mounts the tmpfs, mints a key with the CLI (the database is only
    /// visible inside), then execs `livestrom run`: the child's pid is the
    /// server's.
    fn start(
        mnt: &Path,
        size: &str,
        config: &Path,
        listen: SocketAddr,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let script = r#"mount -t tmpfs -o "size=$1" tmpfs "$2" || exit 97
"$3" apikey create --name disk --rate 1000/s --config "$4" || exit 98
exec "$3" run --config "$4" --listen "$5""#;
        let mut child = Command::new("unshare")
            .args(["-rm", "sh", "-c", script, "sh", size])
            .arg(mnt)
            .arg(BIN)
            .arg(config)
            .arg(listen.to_string())
            .env("LIVESTROM_LOG", "warn,livestrom=info,livestrom_engine=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (key_tx, key_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            if let Some(key) = lines.next() {
                let _ = key_tx.send(key.trim().to_owned());
            }
            for _ in lines {}
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http://") {
                    let _ = up_tx.send(());
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let key = key_rx
            .recv_timeout(WAIT)
            .map_err(|e| format!("no key from `apikey create` in the namespace: {e}"))?;
        let node = Self { child, log, key };
        if up_rx.recv_timeout(WAIT).is_err() {
            return Err(format!("livestrom run never listened:\n{}", node.log_text()).into());
        }
        Ok(node)
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .map(|l| l.iter().filter(|line| line.contains(needle)).count())
            .unwrap_or(0)
    }

    /// Waits for `condition` like [`wait_for`], failing with the server's
    /// log.
    async fn wait<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = std::time::Instant::now();
        while !condition().await {
            assert!(
                start.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for {what}; the server's log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `path` (inside the namespace) as seen from here.
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id()))
            .join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// A copy of the database `db` (inside the namespace) and its WAL, to read
/// from here: SQLite resolves the `/proc/<pid>/root` link to a path in this
/// namespace, so it cannot open the file in place. Taken while the server
/// is not committing (the disk is full, or the upstream is frozen and
/// everything delivered), the copy is the database as stored; SQLite
/// rebuilds the WAL index of the copy when it opens it.
fn snapshot(
    node: &Node,
    db: &Path,
    into: &Path,
) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let copy = into.join("snapshot.db");
    let _ = std::fs::remove_file(into.join("snapshot.db-wal"));
    let _ = std::fs::remove_file(into.join("snapshot.db-shm"));
    std::fs::copy(node.inside(db), &copy)?;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if let Ok(bytes) = std::fs::read(node.inside(&wal)) {
        std::fs::write(into.join("snapshot.db-wal"), bytes)?;
    }
    Ok(copy)
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let mut f = std::fs::File::create(path)?;
    let mut written = 0u64;
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0u8; size];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e.into()),
            }
        }
        // Pages the write already took may still be accounted for: flush.
        if f.flush().is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// `(upstream_cursor, event_count)` of `source` as stored.
fn source_row(
    db: &Path,
    source: &str,
) -> Result<(Option<String>, i64), Box<dyn std::error::Error + Send + Sync>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row(
        "SELECT upstream_cursor, event_count FROM sources WHERE source_id = ?1",
        [source],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_ingestion_keeps_streams_serving_and_loses_nothing() -> TestResult {
    if !namespaces_work() {
        let msg = "a_full_disk_…: `unshare -rm` cannot mount a tmpfs here (no user namespaces)";
        assert!(
            std::env::var("LIVESTROM_REQUIRE_NAMESPACES").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return Ok(());
    }
    let up = Arc::new(Upstream::new(Duration::from_millis(2)));
    let upstream = firehose(up.clone()).await;
    let dir = tempfile::tempdir()?;
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt)?;
    let db = mnt.join("full.db");
    let config = dir.path().join("sources.toml");
    write_firehose_config(&config, &db, upstream)?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // Room for the WAL to grow to its checkpoint size (256 MiB: a commit per
    // item appends whole pages) and more; the test fills the rest.
    let node = Node::start(&mnt, "512m", &config, listen)?;
    let got: Got = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(client(listen, node.key.clone(), got.clone(), stop.clone()));
    let count = |got: &Got| got.lock().map(|g| g.len()).unwrap_or(0);
    node.wait("the client receiving 500 events", || async {
        count(&got) >= 500
    })
    .await;

    // Fill the disk to the last byte.
    let ballast = node.inside(&mnt.join("ballast"));
    let filled = fill(&ballast)?;
    eprintln!("ballast: {} KiB", filled >> 10);
    node.wait("a clear error in the log", || async {
        node.log_count("cannot store upstream items") >= 2
    })
    .await;
    let text = node.log_text();
    assert!(
        text.contains("disk is full"),
        "the log does not say the disk is full:\n{text}"
    );
    let http = reqwest::Client::new();
    let (status, body) = wait_for_value("/readyz failing", WAIT, || async {
        let res = http
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .ok()?;
        let status = res.status().as_u16();
        let body = res.text().await.ok()?;
        (status == 503).then_some((status, body))
    })
    .await;
    assert!(body.contains("disk is full"), "{status} {body}");

    // Paused: what is stored, the cursor and the count stay put while the
    // store keeps failing (two more failed retries).
    let copies = tempfile::tempdir()?;
    let kept = stored(&snapshot(&node, &db, copies.path())?)?;
    let (cursor, events) = source_row(&snapshot(&node, &db, copies.path())?, "crash.fire")?;
    let failures = node.log_count("cannot store upstream items");
    node.wait("two more failed retries", || async {
        node.log_count("cannot store upstream items") >= failures + 2
    })
    .await;
    let now = snapshot(&node, &db, copies.path())?;
    assert_eq!(
        stored(&now)?,
        kept,
        "events changed while the disk was full"
    );
    assert_eq!(source_row(&now, "crash.fire")?, (cursor.clone(), events));
    let last_kept = kept.last().map(|(_, n)| *n).unwrap_or(0);
    assert_eq!(
        cursor.as_deref(),
        Some(last_kept.to_string().as_str()),
        "the stored upstream cursor is not the last stored item"
    );
    assert_eq!(events, kept.len() as i64);

    // Streams keep serving what is stored: a fresh client replays it all.
    let first = kept.first().map(|(id, _)| *id).ok_or("nothing stored")?;
    let res = http
        .get(format!("http://{listen}/v1/stream"))
        .header("X-API-Key", &node.key)
        .header("Last-Event-ID", first.to_string())
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let mut replay = res.bytes_stream().eventsource();
    let mut replayed = Vec::new();
    while replayed.len() + 1 < kept.len() {
        match tokio::time::timeout(WAIT, replay.next()).await {
            Ok(Some(Ok(ev))) if !ev.id.is_empty() => replayed.push(ev.id.parse::<uuid::Uuid>()?),
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("replay ended early: {other:?}").into()),
        }
    }
    let want: Vec<uuid::Uuid> = kept.iter().skip(1).map(|(id, _)| *id).collect();
    assert_eq!(
        replayed, want,
        "the replay while full is not what is stored"
    );
    drop(replay);

    // Space returns: ingestion resumes where it stopped.
    std::fs::remove_file(&ballast)?;
    node.wait("ingestion resuming", || async {
        got.lock()
            .map(|g| g.last().is_some_and(|(_, n)| *n > last_kept))
            .unwrap_or(false)
    })
    .await;
    wait_for_value("/readyz ok again", WAIT, || async {
        let res = http
            .get(format!("http://{listen}/readyz"))
            .send()
            .await
            .ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    let last = up.freeze();
    node.wait("the client getting the last item", || async {
        got.lock()
            .map(|g| g.last().is_some_and(|(_, n)| *n >= last))
            .unwrap_or(false)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = reader.await;

    let all = stored(&snapshot(&node, &db, copies.path())?)?;
    let items: Vec<u64> = all.iter().map(|(_, n)| *n).collect();
    let distinct: BTreeSet<u64> = items.iter().copied().collect();
    assert_eq!(distinct.len(), items.len(), "an item was stored twice");
    assert_eq!(
        distinct,
        (1..=last).collect::<BTreeSet<_>>(),
        "stored items have a gap"
    );
    let got: Vec<uuid::Uuid> = got
        .lock()
        .map(|g| g.iter().map(|(id, _)| *id).collect())
        .unwrap_or_default();
    let first = *got.first().ok_or("the client got nothing")?;
    assert_eq!(
        got,
        all.iter()
            .map(|(id, _)| *id)
            .filter(|id| *id >= first)
            .collect::<Vec<_>>(),
        "the client did not get exactly what is stored from where it started"
    );
    let conn = rusqlite::Connection::open(snapshot(&node, &db, copies.path())?)?;
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    Ok(())
}
