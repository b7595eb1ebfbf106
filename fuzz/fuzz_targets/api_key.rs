//! Fuzz target `api_key`: presented API keys and key settings; the properties are
//! `livestrom_checks::keys::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::keys::check(data));
