//! Reading the current values of many keys of a key-value bucket at once:
//! one ordered consumer delivering the last message per key under a filter
//! (`LastPerSubject`), read until nothing is pending. Used for all item
//! states of a source, all sources and all nodes; a key-by-key `get` would
//! be one round trip per key.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;

/// The header a deleted or purged key's last message carries.
const OPERATION_HEADER: &str = "KV-Operation";

/// How long a read waits for its next message while some are pending
/// before it fails: a consumer whose stream lost its leader in the middle
/// of the read can otherwise wait for ever (seen with three servers, one
/// killed), and the lease round that reads would never end.
const IDLE: Duration = Duration::from_secs(5);

/// Every live `(key, value)` of `kv` whose key matches `filter` (a NATS
/// subject pattern over keys: `a.b.*`, `>`), in stream order.
pub async fn latest(
    kv: &kv::Store,
    filter: &str,
) -> Result<Vec<(String, Bytes)>, async_nats::Error> {
    let consumer = kv
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}{filter}", kv.prefix),
            deliver_policy: DeliverPolicy::LastPerSubject,
            headers_only: false,
            ..Default::default()
        })
        .await?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = tokio::time::timeout(IDLE, messages.next())
            .await
            .map_err(|_| {
                format!(
                    "no message from bucket {} for {IDLE:?} while reading its keys ({} read)",
                    kv.name,
                    out.len()
                )
            })?;
        let Some(msg) = next else { break };
        let msg = msg?;
        let pending = msg.info()?.pending;
        let deleted = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(OPERATION_HEADER))
            .is_some_and(|op| op.as_str() != "PUT");
        if !deleted {
            if let Some(key) = msg.subject.strip_prefix(kv.prefix.as_str()) {
                out.push((key.to_owned(), msg.payload.clone()));
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(out)
}
