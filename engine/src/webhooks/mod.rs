//! Webhooks (docs/WEBHOOKS.md): the push alternative to a held-open stream.
//! Each endpoint gets the events its filters match (the stream's filters,
//! the stream's parser), POSTed one by one in id order, signed per the
//! Standard Webhooks specification, retried on its schedule, with a cursor
//! stored durably that only moves past a 2xx.
//!
//! One file per job:
//! - `model`: what an endpoint is, what operators give and see, [`WebhookError`];
//! - `signing`: secrets (`whsec_…`) and `webhook-signature`;
//! - `schedule`: the retry schedule, `Retry-After`, the verdict on a status;
//! - `sqlite`: the `webhooks` table — every operator change and the
//!   workers' progress, one short transaction each;
//! - `admin`: [`WebhookAdmin`], what `livestrom webhook` and the edge's
//!   `/v1/admin/webhooks` call;
//! - `deliver`: one attempt — the request, the [`Transport`] (the fetcher's
//!   guarded client, a [`SharedTransport`] a config reload replaces), the answer;
//! - `metrics`: [`WebhookMetrics`], the series on `GET /metrics`;
//! - `worker`: one endpoint's delivery loop (read after the cursor, send,
//!   retry, move the cursor, change state);
//! - `runtime`: the workers of a running node, the change watch, the
//!   commit signal and the progress writer ([`spawn`]).
//!
//! Single node only for now: a cluster refuses webhook operations
//! ([`CLUSTER_UNSUPPORTED`]).

mod admin;
mod deliver;
mod metrics;
mod model;
mod runtime;
mod schedule;
mod signing;
mod sqlite;
#[cfg(test)]
mod tests;
mod worker;

pub use admin::{Rotated, WebhookAdmin, CLUSTER_UNSUPPORTED};
pub use deliver::{Request, Response, SharedTransport, Transport};
pub use metrics::{Outcome, WebhookMetrics};
pub use model::{
    parse_url, validate_name, EndpointInfo, EndpointUpdate, FilterTerms, NewEndpoint, Progress,
    Since, State, WebhookError, DEFAULT_TIMEOUT, MAX_CONCURRENCY, MAX_FILTER_TERMS, MAX_TIMEOUT,
};
pub use runtime::{spawn, CHECK_EVERY};
pub use schedule::{
    retry_delay, verdict, Verdict, DISABLE_AFTER_FAILING, MAX_RETRY_AFTER, RETRY_SCHEDULE,
    ROTATION_OVERLAP,
};
pub use signing::{signature_header, BadSecret, SigningSecret, SECRET_BYTES, SECRET_PREFIX};
