//! Per registrable-domain politeness: `a.tumblr.com` and `b.tumblr.com` share
//! one rate limiter, one concurrency limit and one Retry-After deadline.
//!
//! CONTRACT (owned by the fetch module's owner). Used inside `Fetcher::fetch`.

/// The registrable domain (eTLD+1) of a host; IP literals and unknown
/// suffixes map to themselves.
pub fn registrable_domain(host: &str) -> String {
    host.to_ascii_lowercase()
}
