//! Integration tests: firehose.
