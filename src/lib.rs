//! The `livestrom` binary's library: pieces the CLI, the demo and the
//! integration tests share.
//!
//! - `replay`: the fixture upstream — recorded responses replayed over HTTP on
//!   127.0.0.1, used by tests and by `livestrom demo`.

pub mod replay;
