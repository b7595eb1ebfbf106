//! The poll scheduler: due times, jitter, backoff.
