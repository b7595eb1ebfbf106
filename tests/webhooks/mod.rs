//! Integration tests of webhooks: the real `livestrom run` delivering a
//! local SSE firehose's events to local receivers — the Python and Node
//! receivers of docs/examples verifying every signature independently
//! (the `standardwebhooks` package from PyPI; node:crypto), failures then
//! recovery, 410, `Retry-After`, filters worded and applied as the
//! stream's, the SSRF guard and redirects, kill -9 mid-delivery, and the
//! admin API.

mod admin;
mod crash;
mod delivery;
mod harness;
mod metrics;
mod reload;
mod verify;
