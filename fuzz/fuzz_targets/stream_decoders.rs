//! Fuzz target `stream_decoders`: NDJSON / SSE upstream decoders under random chunking; the properties are
//! `livestrom_checks::stream::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::stream::check(data));
