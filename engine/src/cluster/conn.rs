//! Connecting a node to its cluster: the NATS client (servers from
//! `[cluster] nats`, credentials from the URL or `LIVESTROM_NATS_CREDS`),
//! the JetStream context, the event stream (created or brought in line with
//! `engine.retention` and `replicas`) and the key-value buckets, each opened
//! or created with its settings. [`Cluster`] is what every clustered part
//! holds.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tokio_util::sync::CancellationToken;

use super::cursor::StreamTag;
use super::wire::{Bucket, Names};
use crate::config::ClusterConfig;
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};

/// Environment variable naming a NATS `.creds` file.
pub const CREDS_ENV: &str = "LIVESTROM_NATS_CREDS";

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest duplicate window of the stream (see [`Cluster::connect`]).
const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// A failure to reach or set up the cluster, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The servers could not be reached.
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        /// The configured servers (credentials redacted).
        servers: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// `LIVESTROM_NATS_CREDS` names a file that cannot be read.
    #[error("cannot read the NATS credentials file {path} ({CREDS_ENV}): {source}")]
    Creds {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JetStream call failed (JetStream disabled, no permission, a
    /// server gone, a conflicting existing stream, …).
    #[error("JetStream: cannot {action}: {source}")]
    JetStream {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

impl ClusterError {
    /// What the operator should check, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Connect { source, .. }
                if matches!(
                    source.kind(),
                    async_nats::ConnectErrorKind::AuthorizationViolation
                        | async_nats::ConnectErrorKind::Authentication
                ) =>
            {
                "NATS refused the credentials: check the user:password@ (or token@) in the [cluster] nats URLs, or the file named by LIVESTROM_NATS_CREDS"
            }
            Self::Creds { .. } => "LIVESTROM_NATS_CREDS must name a readable NATS .creds file",
            Self::Connect { .. } => {
                "is nats-server running at the [cluster] nats URLs, and reachable from here?"
            }
            Self::JetStream { .. } => {
                "is JetStream enabled on the servers (nats-server -js), with room for the stream and buckets?"
            }
        }
    }

    fn js(action: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        Self::JetStream {
            action: action.into(),
            source: source.into(),
        }
    }
}

/// A node's connection to its cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    config: ClusterConfig,
    tag: StreamTag,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stream", &self.names.stream())
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects and makes sure the event stream exists with max age
    /// `retention`. The duplicate window (message ids that JetStream drops
    /// when seen again) is at least 10 minutes and four lease TTLs — a
    /// failover re-polls well inside it — and never longer than `retention`.
    pub async fn connect(
        config: &ClusterConfig,
        retention: Duration,
    ) -> Result<Self, ClusterError> {
        let client = connect_client(config).await?;
        let js = jetstream::new(client.clone());
        let names = Names::new(&config.stream);
        let duplicate_window = MIN_DUPLICATE_WINDOW.max(config.lease * 4).min(retention);
        let want = stream::Config {
            name: names.stream().to_owned(),
            subjects: vec![names.all_events()],
            max_age: retention,
            duplicate_window,
            num_replicas: config.replicas,
            allow_direct: true,
            storage: stream::StorageType::File,
            description: Some("Livestrom events".to_owned()),
            ..Default::default()
        };
        let info = match js.get_stream(names.stream()).await {
            Ok(mut s) => {
                let have = s
                    .info()
                    .await
                    .map_err(|e| ClusterError::js("read the stream's info", e))?
                    .clone();
                let c = &have.config;
                if c.max_age != want.max_age
                    || c.duplicate_window != want.duplicate_window
                    || c.num_replicas != want.num_replicas
                    || c.subjects != want.subjects
                {
                    tracing::info!(
                        stream = names.stream(),
                        "updating the stream's retention, duplicate window or replicas to the config"
                    );
                    js.update_stream(want)
                        .await
                        .map_err(|e| ClusterError::js("update the stream to the config", e))?
                } else {
                    have
                }
            }
            // Not there (or not readable): create it; if that fails too,
            // the create's error says why.
            Err(_) => js
                .create_stream(want)
                .await
                .map_err(|e| ClusterError::js(format!("create stream {}", names.stream()), e))?
                .cached_info()
                .clone(),
        };
        let tag = StreamTag::of(&info.config.name, info.created.unix_timestamp_nanos());
        Ok(Self {
            client,
            js,
            names,
            config: config.clone(),
            tag,
        })
    }

    /// [`Cluster::connect`], retried with backoff (1 s doubling to 30 s)
    /// until it succeeds or `cancel` fires; every failure is logged with
    /// what to check. None when cancelled.
    pub async fn connect_retrying(
        config: &ClusterConfig,
        retention: Duration,
        cancel: &CancellationToken,
    ) -> Option<Self> {
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            factor: 2,
            jitter: Jitter::EQUAL,
        });
        loop {
            match Self::connect(config, retention).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::error!(error = %e, retry_in = ?wait, "cluster unavailable: {}", e.hint());
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// The names of the stream, subjects and buckets.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The `[cluster]` settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The tag of this incarnation of the stream (carried in event ids).
    pub fn tag(&self) -> StreamTag {
        self.tag
    }

    /// The event stream's handle.
    pub async fn stream(&self) -> Result<jetstream::stream::Stream, ClusterError> {
        self.js
            .get_stream(self.names.stream())
            .await
            .map_err(|e| ClusterError::js("open the event stream", e))
    }

    /// Opens `bucket`, creating it with its settings if it does not exist:
    /// leases and nodes expire after the lease TTL, items after
    /// `item_max_age` (refreshed by polls that still see them), keys and
    /// sources never.
    pub async fn bucket(
        &self,
        bucket: Bucket,
        item_max_age: Duration,
    ) -> Result<kv::Store, ClusterError> {
        let name = self.names.bucket(bucket);
        if let Ok(kv) = self.js.get_key_value(&name).await {
            return Ok(kv);
        }
        let max_age = match bucket {
            Bucket::Leases | Bucket::Nodes => self.config.lease,
            Bucket::Items => item_max_age,
            Bucket::Keys | Bucket::Sources => Duration::ZERO,
        };
        let created = self
            .js
            .create_key_value(kv::Config {
                bucket: name.clone(),
                history: 1,
                max_age,
                num_replicas: self.config.replicas,
                ..Default::default()
            })
            .await;
        match created {
            Ok(kv) => Ok(kv),
            // Another node created it first.
            Err(e) => match self.js.get_key_value(&name).await {
                Ok(kv) => Ok(kv),
                Err(_) => Err(ClusterError::js(format!("create bucket {name}"), e)),
            },
        }
    }
}

/// The NATS client for `config`: its servers, a clear name, credentials
/// from `LIVESTROM_NATS_CREDS` if set, reconnecting forever once connected.
async fn connect_client(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("livestrom {}", env!("CARGO_PKG_VERSION")))
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS connection lost; reconnecting")
                }
                async_nats::Event::Connected => tracing::info!("NATS connection (re)established"),
                other => tracing::debug!(event = %other, "NATS client event"),
            }
        });
    // The client does not read credentials written in a URL: take them
    // from the first URL that has some (`user:password@` or `token@`).
    if let Some((user, pass)) = config.nats.iter().find_map(|u| url_credentials(u)) {
        opts = match pass {
            Some(pass) => opts.user_and_password(user, pass),
            None => opts.token(user),
        };
    }
    if let Some(path) = std::env::var_os(CREDS_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        opts = opts
            .credentials_file(&path)
            .await
            .map_err(|source| ClusterError::Creds { path, source })?;
    }
    let servers: Vec<async_nats::ServerAddr> =
        config.nats.iter().filter_map(|u| u.parse().ok()).collect();
    opts.connect(servers.as_slice())
        .await
        .map_err(|source| ClusterError::Connect {
            servers: config
                .nats
                .iter()
                .map(|u| crate::redact::redact_url_text(u))
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })
}

/// `(user, Some(password))` or `(token, None)` written in a NATS URL.
fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let u = url::Url::parse(url.trim()).ok()?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    if u.username().is_empty() {
        return None;
    }
    Some((decode(u.username()), u.password().map(decode)))
}

#[cfg(test)]
mod tests {
    use super::url_credentials;

    #[test]
    fn credentials_are_read_from_a_nats_url() {
        assert_eq!(
            url_credentials("nats://lv:s3%40cret@h:4222"),
            Some(("lv".into(), Some("s3@cret".into())))
        );
        assert_eq!(
            url_credentials("nats://tok@h:4222"),
            Some(("tok".into(), None))
        );
        assert_eq!(url_credentials("nats://h:4222"), None);
    }
}
