//! The lease steps of [`super::lease`] carried out on a JetStream key-value
//! bucket: one key per source, its value the holder's engine id, its
//! revision the fencing token. Create for a free lease, compare-and-set on
//! the revision to renew or take over, delete with the expected revision to
//! release. The bucket's `max_age` is the lease TTL, so the key of a holder
//! that died disappears by itself.

use std::collections::HashMap;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::Context;
use tokio::time::Instant;

use super::lease::{Lease, LeaseTiming, Step};

/// A failure talking to the lease bucket (not a lost race: see [`Applied`]).
#[derive(Debug, thiserror::Error)]
#[error("lease bucket {bucket}: cannot {action}: {source}")]
pub struct BucketError {
    /// The bucket.
    pub bucket: String,
    /// What was being done.
    pub action: &'static str,
    /// The client's error.
    #[source]
    pub source: async_nats::Error,
}

/// What happened to a batch of steps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Leases now held (acquired or renewed), by source.
    pub held: Vec<String>,
    /// Leases released.
    pub released: Vec<String>,
    /// Steps refused because someone else wrote first (compare-and-set lost).
    pub lost: Vec<String>,
}

/// One engine's handle on the lease bucket, with what it has seen.
pub struct LeaseBucket {
    kv: kv::Store,
    bucket: String,
    /// Per source: the revision last seen and when this engine first saw it.
    seen: HashMap<String, (u64, Instant)>,
}

impl std::fmt::Debug for LeaseBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBucket")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl LeaseBucket {
    /// Opens (or creates) the bucket `name` with the lease TTL as its max age.
    pub async fn open(
        js: &Context,
        name: &str,
        timing: LeaseTiming,
        replicas: usize,
    ) -> Result<Self, BucketError> {
        let err = |action, source| BucketError {
            bucket: name.to_owned(),
            action,
            source,
        };
        let kv = match js.get_key_value(name).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.to_owned(),
                    history: 1,
                    max_age: timing.ttl,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| err("create the bucket", e.into()))?,
        };
        Ok(Self {
            kv,
            bucket: name.to_owned(),
            seen: HashMap::new(),
        })
    }

    /// The leases of `sources` as the bucket holds them now.
    pub async fn leases(
        &mut self,
        sources: &[String],
    ) -> Result<HashMap<String, Lease>, BucketError> {
        let now = Instant::now();
        let mut out = HashMap::new();
        for source in sources {
            let entry = self
                .kv
                .entry(source.as_str())
                .await
                .map_err(|e| BucketError {
                    bucket: self.bucket.clone(),
                    action: "read a lease",
                    source: e.into(),
                })?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                self.seen.remove(source);
                continue;
            };
            let seen_at = match self.seen.get(source) {
                Some((rev, at)) if *rev == entry.revision => *at,
                _ => {
                    self.seen.insert(source.clone(), (entry.revision, now));
                    now
                }
            };
            out.insert(
                source.clone(),
                Lease {
                    holder: String::from_utf8_lossy(&entry.value).into_owned(),
                    revision: entry.revision,
                    seen_at,
                },
            );
        }
        Ok(out)
    }

    /// Carries out `steps` as engine `me`.
    pub async fn apply(&mut self, me: &str, steps: &[Step]) -> Result<Applied, BucketError> {
        let mut done = Applied::default();
        for step in steps {
            let err = |action: &'static str, source: async_nats::Error| BucketError {
                bucket: self.bucket.clone(),
                action,
                source,
            };
            match step {
                Step::Acquire {
                    source,
                    expected: None,
                } => match self.kv.create(source.as_str(), me.to_owned().into()).await {
                    Ok(rev) => self.won(source, rev, &mut done),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        done.lost.push(source.clone())
                    }
                    Err(e) => return Err(err("create a lease", e.into())),
                },
                Step::Acquire {
                    source,
                    expected: Some(revision),
                }
                | Step::Renew { source, revision } => {
                    match self
                        .kv
                        .update(source.as_str(), me.to_owned().into(), *revision)
                        .await
                    {
                        Ok(rev) => self.won(source, rev, &mut done),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                            done.lost.push(source.clone())
                        }
                        Err(e) => return Err(err("renew a lease", e.into())),
                    }
                }
                Step::Release { source, revision } => {
                    match self
                        .kv
                        .delete_expect_revision(source.as_str(), Some(*revision))
                        .await
                    {
                        Ok(()) => {
                            self.seen.remove(source);
                            done.released.push(source.clone());
                        }
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                            done.lost.push(source.clone())
                        }
                        Err(e) => return Err(err("release a lease", e.into())),
                    }
                }
            }
        }
        Ok(done)
    }

    fn won(&mut self, source: &str, revision: u64, done: &mut Applied) {
        self.seen
            .insert(source.to_owned(), (revision, Instant::now()));
        done.held.push(source.to_owned());
    }
}
