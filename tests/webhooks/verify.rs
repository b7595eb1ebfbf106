//! Every delivery verified by an implementation that is not ours: the
//! receivers of docs/examples — Python with the `standardwebhooks` package
//! from PyPI, Node.js with node:crypto — through a secret rotation.
//!
//! The Python package comes from `LIVESTROM_PYTHONPATH` (`.ci/run` installs
//! it there, pinned) or the interpreter's own packages. Without it the test
//! says so and passes, unless `LIVESTROM_REQUIRE_WEBHOOK_VERIFIER=1`
//! (`.ci/run` sets it). Without `node` the Node.js part is skipped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::harness::*;

/// A receiver process; killed on drop.
struct Proc {
    child: Child,
    url: String,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with `secret`; waits for its "listening on" line.
    fn start(mut cmd: Command, secret: &str) -> Result<Self, AnyError> {
        let mut child = cmd
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out: Arc<Mutex<Vec<String>>> = Arc::default();
        let err: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lock(&o).push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let e = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(format!("{url}/hook"));
                }
                lock(&e).push(line);
            }
        });
        let url = rx
            .recv_timeout(WAIT)
            .map_err(|e| format!("the receiver never listened: {e}; stderr: {:?}", lock(&err)))?;
        Ok(Self {
            child,
            url,
            out,
            err,
        })
    }

    /// What it printed for each verified delivery.
    fn got(&self) -> Vec<Value> {
        lock(&self.out)
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn rejected(&self) -> Vec<String> {
        lock(&self.err)
            .iter()
            .filter(|l| l.starts_with("rejected"))
            .cloned()
            .collect()
    }
}

fn example(name: &str) -> std::path::PathBuf {
    crate::helpers::fixture_path("docs/examples").join(name)
}

/// `python3` with `standardwebhooks` importable, or None (skipped, said why).
fn python() -> Option<Command> {
    let with_path = || {
        let mut c = Command::new("python3");
        if let Some(p) = std::env::var_os("LIVESTROM_PYTHONPATH") {
            c.env("PYTHONPATH", p);
        }
        c
    };
    let importable = with_path()
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return Some(with_path());
    }
    let required = std::env::var("LIVESTROM_REQUIRE_WEBHOOK_VERIFIER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "LIVESTROM_REQUIRE_WEBHOOK_VERIFIER=1 but python3 cannot import standardwebhooks: \
         python3 -m pip install --target DIR standardwebhooks==1.1.0 and set LIVESTROM_PYTHONPATH=DIR"
    );
    eprintln!(
        "notice: python3 cannot import standardwebhooks (pip install standardwebhooks==1.1.0, or set LIVESTROM_PYTHONPATH); skipping the independent signature verification test"
    );
    None
}

fn node() -> Option<Command> {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("notice: no `node` on PATH; skipping the Node.js receiver example");
    }
    ok.then(|| Command::new("node"))
}

/// What `receivers` printed is exactly the stored events from `from` on,
/// each once, in order, with `webhook-id` = the event's id.
fn check_exactly(receivers: &[&Proc], stored: &[(String, String)], from: usize) {
    let got: Vec<Value> = receivers.iter().flat_map(|r| r.got()).collect();
    let want = &stored[from..];
    assert_eq!(got.len(), want.len(), "deliveries: {got:#?}");
    for (g, (id, json)) in got.iter().zip(want) {
        assert_eq!(g["webhook_id"], id.as_str());
        assert_eq!(g["duplicate"], false);
        let stored: Value = serde_json::from_str(json).unwrap_or_default();
        assert_eq!(g["event"], stored, "the body is the stored event");
    }
    for r in receivers {
        assert!(r.rejected().is_empty(), "rejected: {:?}", r.rejected());
    }
}

/// Adds events one at a time until `r` verified one (the URL change
/// reached the worker) and every event was delivered somewhere.
async fn until_switched(
    feed: &Feed,
    setup: &Setup,
    r: &Proc,
    all: &[&Proc],
) -> Result<(), AnyError> {
    for _ in 0..100 {
        feed.add(1);
        let n = feed.count() as usize;
        stored_at_least(&setup.db, n).await;
        until("the event delivered", || {
            all.iter().map(|p| p.got().len()).sum::<usize>() >= n
        })
        .await;
        if !r.got().is_empty() {
            return Ok(());
        }
    }
    Err("the new url never got a delivery".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receivers_verify_every_delivery_through_a_secret_rotation() -> TestResult {
    let Some(py) = python() else {
        return Ok(());
    };
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let old = setup.create("verified", "http://127.0.0.1:9/hook", &[])?;
    let mut py_cmd = py;
    py_cmd.arg(example("webhook_receiver.py"));
    let a = Proc::start(py_cmd, &old)?;
    setup.ok(&["update", "verified", "--url", &a.url])?;
    let _node = setup.start();

    feed.add(10);
    until("10 verified", || a.got().len() >= 10).await;
    check_exactly(&[&a], &stored(&setup.db)?, 0);

    // Rotated: the old secret still signs beside the new one.
    let new = setup.ok(&["rotate-secret", "verified"])?.trim().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(setup.endpoint("verified")?["previous_secret_until"].is_string());
    feed.add(5);
    until("15 verified with the old secret", || a.got().len() >= 15).await;

    // A receiver that only knows the new secret verifies them too.
    let Some(python) = python() else {
        return Ok(());
    };
    let mut py_cmd = python;
    py_cmd.arg(example("webhook_receiver.py"));
    let b = Proc::start(py_cmd, &new)?;
    setup.ok(&["update", "verified", "--url", &b.url])?;
    until_switched(&feed, &setup, &b, &[&a, &b]).await?;
    check_exactly(&[&a, &b], &stored(&setup.db)?, 0);

    if let Some(mut node_cmd) = node() {
        node_cmd.arg(example("webhook_receiver.mjs"));
        let n = Proc::start(node_cmd, &new)?;
        setup.ok(&["update", "verified", "--url", &n.url])?;
        until_switched(&feed, &setup, &n, &[&a, &b, &n]).await?;
        check_exactly(&[&a, &b, &n], &stored(&setup.db)?, 0);
    }
    Ok(())
}
