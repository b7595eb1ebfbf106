//! Building blocks of the clustered backend (several engines and edges on
//! NATS JetStream, SPEC §7) that need no server: how a client's cursor names
//! a message of the stream (`cursor`), and which engine polls which source
//! (`lease`), both pure and unit-tested; and the lease steps carried out on a
//! JetStream key-value bucket (`bucket`), tested against a real nats-server;
//! and what an edge reads through in a cluster: the event log (`log`) and
//! the live feed (`live`) on the JetStream stream.

pub mod bucket;
pub mod conn;
pub mod cursor;
pub mod lease;
pub mod live;
pub mod log;
mod message;
pub mod poller;
pub mod scan;
pub mod scope;
pub mod sink;
pub mod status;
mod stored;
pub mod wire;

pub use conn::{Cluster, ClusterError};
pub use live::JetStreamFeed;
pub use log::JetStreamLog;
