//! Live reload: re-load `sources.toml` when it changes on disk or on SIGHUP,
//! and [`diff`] two configs so the engine only restarts what changed.
//!
//! The folder is watched, not the file: editors save by writing a temporary
//! file and renaming it over the original, which replaces the inode a
//! file watch would be attached to. Events are debounced (an editor's save is
//! several events) and a file-change reload whose bytes equal the last ones
//! sent is dropped (a `touch`, or our own reads). Every result is sent, valid
//! or not: the receiver keeps its running config on `Err` and reports it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Config, ConfigError, SourceConfig, SourceId};

/// Quiet time after the last file event before reloading: long enough to
/// cover an editor's write-rename-chmod sequence, short enough to feel instant.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `path` and sends a freshly loaded config (or why it is invalid) on
/// every change of the file and on every SIGHUP (unix), until `cancel` fires
/// or the receiver is dropped.
///
/// Must be called inside a tokio runtime. Changes made after this returns are
/// never missed; the first change is always sent (even when it rewrites the
/// same bytes), later ones only when the bytes differ from the last sent.
pub fn watch(
    path: PathBuf,
    cancel: CancellationToken,
) -> Result<mpsc::Receiver<Result<Config, ConfigError>>, ConfigError> {
    let fail = |source: io::Error| ConfigError::Watch {
        path: path.clone(),
        source,
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        fail(io::Error::other(
            "config::watch must be called inside a tokio runtime",
        ))
    })?;
    let Some(name) = path.file_name().map(|n| n.to_owned()) else {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path does not name a file",
        )));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };

    // Capacity 1: a pending "something changed" is all the loop needs to know.
    let (changed_tx, changed_rx) = mpsc::channel::<()>(1);
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_relevant(&event, &name) => {
            let _ = changed_tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "config file watcher error; reloading to be safe");
            let _ = changed_tx.try_send(());
        }
    };
    let watcher = watch_folder(&dir, &path, handler).map_err(fail)?;

    #[cfg(unix)]
    let hangup = {
        let _guard = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(&fail)?
    };
    #[cfg(not(unix))]
    let hangup = ();

    let (tx, rx) = mpsc::channel(4);
    let task = Reloader {
        path,
        changed: changed_rx,
        hangup,
        out: tx,
        cancel,
        last_sent: None,
        _watcher: watcher,
    };
    runtime.spawn(task.run());
    Ok(rx)
}

/// What differs between two configs, by source id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Ids only in the new config, in its file order.
    pub added: Vec<SourceId>,
    /// Ids only in the old config, in its file order.
    pub removed: Vec<SourceId>,
    /// Ids in both whose settings differ in any field (including the resolved
    /// cadence, so a changed `[tiers]` value changes every source using it).
    pub changed: Vec<SourceId>,
    /// Dotted names of changed non-source settings (`engine.database`,
    /// `fetch.timeout`, …), so the caller can apply or report them.
    pub settings: Vec<&'static str>,
}

impl ConfigDiff {
    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.settings.is_empty()
    }
}

/// Compares two configs source by source (by id) and setting by setting.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let old_by_id: BTreeMap<&SourceId, &SourceConfig> =
        old.sources.iter().map(|s| (&s.id, s)).collect();
    let new_by_id: BTreeMap<&SourceId, &SourceConfig> =
        new.sources.iter().map(|s| (&s.id, s)).collect();
    let mut d = ConfigDiff::default();
    for s in &new.sources {
        match old_by_id.get(&s.id) {
            None => d.added.push(s.id.clone()),
            Some(before) if *before != s => d.changed.push(s.id.clone()),
            Some(_) => {}
        }
    }
    d.removed = old
        .sources
        .iter()
        .filter(|s| !new_by_id.contains_key(&s.id))
        .map(|s| s.id.clone())
        .collect();

    let (a, b) = (old, new);
    let settings = [
        ("engine.database", a.engine.database != b.engine.database),
        ("engine.retention", a.engine.retention != b.engine.retention),
        ("edge.listen", a.edge.listen != b.edge.listen),
        ("edge.keepalive", a.edge.keepalive != b.edge.keepalive),
        (
            "edge.max_connections",
            a.edge.max_connections != b.edge.max_connections,
        ),
        (
            "edge.cors_origins",
            a.edge.cors_origins != b.edge.cors_origins,
        ),
        (
            "edge.metrics_token",
            a.edge.metrics_token != b.edge.metrics_token,
        ),
        ("fetch.user_agent", a.fetch.user_agent != b.fetch.user_agent),
        ("fetch.timeout", a.fetch.timeout != b.fetch.timeout),
        (
            "fetch.connect_timeout",
            a.fetch.connect_timeout != b.fetch.connect_timeout,
        ),
        ("fetch.max_body", a.fetch.max_body != b.fetch.max_body),
        (
            "fetch.per_host_rps",
            a.fetch.per_host_rps != b.fetch.per_host_rps,
        ),
        (
            "fetch.per_host_concurrency",
            a.fetch.per_host_concurrency != b.fetch.per_host_concurrency,
        ),
        (
            "fetch.allow_private_networks",
            a.fetch.allow_private_networks != b.fetch.allow_private_networks,
        ),
        (
            "fetch.max_redirects",
            a.fetch.max_redirects != b.fetch.max_redirects,
        ),
        ("fetch.proxy", a.fetch.proxy != b.fetch.proxy),
        ("tiers.firehose", a.tiers.firehose != b.tiers.firehose),
        ("tiers.rss", a.tiers.rss != b.tiers.rss),
        ("tiers.json", a.tiers.json != b.tiers.json),
        ("tiers.html", a.tiers.html != b.tiers.html),
    ];
    d.settings = settings
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| *name)
        .collect();
    d
}

/// How often the fallback watcher looks at the folder.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches `dir` with the platform's notifications (inotify, FSEvents, …);
/// where those cannot be had — inotify's per-user instance or watch limit
/// reached, a file system that sends none — falls back to looking at the
/// config file `file` every [`POLL_INTERVAL`] (contents compared), with a
/// warning.
fn watch_folder<H>(dir: &Path, file: &Path, handler: H) -> io::Result<Box<dyn Watcher + Send>>
where
    H: notify::EventHandler + Clone,
{
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the folder does not exist or is not a folder",
        ));
    }
    let native = notify::recommended_watcher(handler.clone()).and_then(|mut w| {
        w.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match native {
        Ok(w) => Ok(Box::new(w)),
        Err(e) => {
            tracing::warn!(
                error = %e,
                folder = %dir.display(),
                interval = ?POLL_INTERVAL,
                "file change notifications unavailable; looking at the config file on an interval instead"
            );
            poll_file(file, handler)
        }
    }
}

/// The fallback of [`watch_folder`]: a polling watcher on the config file
/// alone (by path, so a rename over it is seen), comparing contents.
///
/// Never the folder: the database may live beside the config, and opening
/// and closing a SQLite file in the process that holds it releases SQLite's
/// POSIX locks on it.
fn poll_file<H>(file: &Path, handler: H) -> io::Result<Box<dyn Watcher + Send>>
where
    H: notify::EventHandler,
{
    let config = notify::Config::default()
        .with_poll_interval(POLL_INTERVAL)
        .with_compare_contents(true);
    let mut w = notify::PollWatcher::new(handler, config).map_err(notify_to_io)?;
    w.watch(file, RecursiveMode::NonRecursive)
        .map_err(notify_to_io)?;
    Ok(Box::new(w))
}

/// Why a reload happened: a file change is deduplicated, a SIGHUP never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    FileChanged,
    Hangup,
}

/// The reload loop's state, owned by its task.
struct Reloader {
    path: PathBuf,
    /// "The folder changed", from the notify thread.
    changed: mpsc::Receiver<()>,
    /// SIGHUP: "re-read the config now" (no-op off unix).
    hangup: Hangup,
    /// Results to the engine; bounded, a slow receiver just delays reloads.
    out: mpsc::Sender<Result<Config, ConfigError>>,
    cancel: CancellationToken,
    /// Bytes of the last file-change reload sent, to drop no-op events.
    last_sent: Option<Vec<u8>>,
    /// Kept alive for as long as the loop runs; dropping it stops the watch.
    _watcher: Box<dyn Watcher + Send>,
}

impl Reloader {
    async fn run(mut self) {
        loop {
            let trigger = tokio::select! {
                _ = self.cancel.cancelled() => return,
                Some(()) = self.changed.recv() => Trigger::FileChanged,
                Some(()) = next_hangup(&mut self.hangup) => Trigger::Hangup,
            };
            if trigger == Trigger::FileChanged && !self.debounce().await {
                return;
            }
            let path = self.path.clone();
            let loaded = tokio::task::spawn_blocking(move || load_bytes(&path)).await;
            let (bytes, result) = match loaded {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(error = %e, "config reload task failed");
                    continue;
                }
            };
            if trigger == Trigger::FileChanged {
                if bytes.is_some() && bytes == self.last_sent {
                    continue;
                }
                self.last_sent = bytes;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                sent = self.out.send(result) => if sent.is_err() { return },
            }
        }
    }

    /// Waits until no file event arrived for [`DEBOUNCE`]; false on cancel.
    async fn debounce(&mut self) -> bool {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = tokio::time::sleep(DEBOUNCE) => return true,
                more = self.changed.recv() => if more.is_none() { return true },
            }
        }
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
async fn next_hangup(signal: &mut Hangup) -> Option<()> {
    signal.recv().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// Reads and validates the file, keeping its bytes for deduplication.
fn load_bytes(path: &Path) -> (Option<Vec<u8>>, Result<Config, ConfigError>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(source) => {
            return (
                None,
                Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                }),
            )
        }
    };
    let result = match std::str::from_utf8(&bytes) {
        Ok(text) => Config::from_toml(path, text),
        Err(e) => Err(ConfigError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")),
        }),
    };
    (Some(bytes), result)
}

/// Whether a folder event can have changed the config file: it names the file
/// (written, created, renamed over, removed) or Kubernetes' `..data` symlink
/// swap of a mounted ConfigMap. Reads (including our own) are not changes.
fn is_relevant(event: &notify::Event, name: &OsString) -> bool {
    let is_read = matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write));
    !is_read
        && event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == name.as_os_str() || n.to_string_lossy().starts_with("..data"))
        })
}

fn notify_to_io(e: notify::Error) -> io::Error {
    match e.kind {
        notify::ErrorKind::Io(io) => io,
        _ => io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback sees a write and a rename over the file, without any
    /// notification from the kernel.
    #[tokio::test]
    async fn the_polling_fallback_sees_a_change() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sources.toml");
        std::fs::write(&path, "# one\n")?;
        let name = OsString::from("sources.toml");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let file = path.clone();
        let _watcher = poll_file(&path, move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if is_relevant(&event, &name) {
                    let _ = tx.send(std::fs::read_to_string(&file).unwrap_or_default());
                }
            }
        })?;
        std::fs::write(&path, "# two, longer\n")?;
        assert!(
            seen(&mut rx, "# two, longer\n").await,
            "no write seen within 30 s"
        );

        // Editors rename a temporary file over the config.
        let tmp = dir.path().join(".sources.toml.swp");
        std::fs::write(&tmp, "# three\n")?;
        std::fs::rename(&tmp, &path)?;
        assert!(
            seen(&mut rx, "# three\n").await,
            "no rename seen within 30 s"
        );
        Ok(())
    }

    /// Whether the file's text `want` arrives within a generous bound.
    async fn seen(rx: &mut mpsc::UnboundedReceiver<String>, want: &str) -> bool {
        let wait = async {
            while let Some(text) = rx.recv().await {
                if text == want {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await == Ok(true)
    }
}
