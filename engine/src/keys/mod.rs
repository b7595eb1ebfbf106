//! API keys, in one place: the key format, the model and its validation, the
//! storage seam ([`KeyBackend`]) with its SQLite implementation, and the
//! in-memory cache the edge verifies requests against.
//!
//! One file per job:
//! - `format`: what a key looks like (`lstr_` + 44 base62 characters with a
//!   checksum tail), minting ([`generate`]), [`check_format`], [`hash_key`];
//! - `model`: [`Scope`], [`KeyInfo`], what `apikey create`/`update` ask for
//!   ([`NewKey`], [`KeyUpdate`]) and how they are validated, the limits,
//!   [`KeyError`];
//! - `backend`: the [`KeyBackend`] trait the cache reads keys through and
//!   records use through, and the [`KeyRow`] it returns;
//! - `sqlite`: the `api_keys` table — [`create`], [`list`], [`update`],
//!   [`revoke`] for `livestrom apikey`, and [`SqliteKeys`], the backend that
//!   notices changes with `PRAGMA data_version` and a generation row;
//! - `nats`: the same in a cluster, one entry per key in the JetStream
//!   key-value bucket `<prefix>_KEYS` — its admin operations and
//!   [`NatsKeys`], the backend that notices changes with a watcher on the
//!   bucket (`nats/stored.rs`: the entry's key and JSON value);
//! - `admin`: [`KeyAdmin`], what `livestrom apikey` calls on either store;
//! - `cache`: [`KeyCache`] ([`KeyCache::check`], [`KeyCache::check_fresh`],
//!   [`Verdict`]) with its refresher and last-used loops.
//!
//! # Key format
//! `lstr_` + 38 random base62 characters + a 6-character base62 CRC32 of
//! those 38 characters. The checksum lets the edge reject a mistyped or
//! truncated key without touching the cache or the database; it is not a
//! secret. The 38 random characters carry ~226 bits of entropy. Only
//! `sha256(whole key)` is stored.
//!
//! # How a change reaches open streams
//! - revoked (or deleted) key: removed from the active set and its
//!   [`KeyInfo::revoked`] token is cancelled, so open streams close;
//! - `stream:read` scope removed: same as revoked for open streams (token
//!   cancelled), the key stays usable for its other scopes;
//! - other changes (limits, adding scopes): a new `Arc<KeyInfo>` replaces the
//!   old one for new requests and **shares the old token**: open streams keep
//!   running under the limits they were opened with.

mod admin;
mod backend;
mod cache;
mod format;
mod model;
mod nats;
mod sqlite;

pub use admin::KeyAdmin;
pub use backend::{KeyBackend, KeyRow};
pub use cache::{KeyCache, Verdict, FRESH_CHECK_WAIT, LAST_USED_EVERY, REFRESH_EVERY};
pub use format::{check_format, generate, hash_key, FormatError, KEY_BODY_LEN, KEY_PREFIX};
pub use model::{
    parse_rate, parse_scopes, validate_name, KeyError, KeyInfo, KeyRecord, KeyUpdate, NewKey,
    Scope, DEFAULT_MAX_FILTERS, DEFAULT_MAX_STREAMS, DEFAULT_RATE, MAX_MAX_FILTERS,
    MAX_MAX_STREAMS, MAX_RATE, MIN_RATE,
};
pub use nats::{NatsKeys, CALL_TIMEOUT};
pub use sqlite::{create, list, revoke, update, SqliteKeys, FULL_RELOAD_EVERY};
