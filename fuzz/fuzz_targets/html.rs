//! Fuzz target `html`: HTML extraction and snapshot diff; the properties are
//! `livestrom_checks::html::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::html::check(data));
