//! Fuzz target `sources_toml`: sources.toml loading and validation; the properties are
//! `livestrom_checks::config::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::config::check(data));
