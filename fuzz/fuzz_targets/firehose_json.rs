//! Fuzz target `firehose_json`: firehose JSON document mapping; the properties are
//! `livestrom_checks::firehose::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::firehose::check(data));
