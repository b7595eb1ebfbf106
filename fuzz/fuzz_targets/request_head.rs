//! Fuzz target `request_head`: the edge's HTTP/1 request-head parser; the properties are
//! `livestrom_checks::head::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::head::check(data));
