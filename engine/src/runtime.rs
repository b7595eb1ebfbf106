//! The engine runtime: wires config, scheduler, fetcher, parsers, normaliser and store.
