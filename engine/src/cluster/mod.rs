//! Building blocks of the clustered backend (several engines and edges on
//! NATS JetStream, SPEC §7) that need no server: how a client's cursor names
//! a message of the stream (`cursor`), and which engine polls which source
//! (`lease`). Both are pure and unit-tested; the JetStream implementation of
//! the engine's seams builds on them.

pub mod cursor;
pub mod lease;
