//! Fuzz target `filter_query`: stream / events query strings; the properties are
//! `livestrom_checks::query::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::query::check(data));
