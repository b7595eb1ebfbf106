//! Integration tests: stream.
