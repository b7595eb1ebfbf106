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
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_relevant(&event, &name) => {
                let _ = changed_tx.try_send(());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "config file watcher error; reloading to be safe");
                let _ = changed_tx.try_send(());
            }
        })
        .map_err(|e| fail(notify_to_io(e)))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| fail(notify_to_io(e)))?;

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
    _watcher: notify::RecommendedWatcher,
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
