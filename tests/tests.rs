//! The one integration test binary: each module covers one area end to end,
//! over real HTTP on 127.0.0.1 against fixtures (no network).

mod helpers;

mod architecture;
mod auth;
mod cli;
mod cluster;
mod config;
mod corpus;
mod cors;
mod crash;
mod disk_full;
mod fetch;
mod firehose;
mod fuzz_corpus;
mod hostile_input;
mod hostile_upstream;
mod html;
mod ingest;
mod item_state_crash;
mod key_hygiene;
mod openapi;
mod ops;
mod replay;
mod slow_consumer;
mod sse_roundtrip;
mod status_page;
mod stream;
mod webhooks;
mod wire;
