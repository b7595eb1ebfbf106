//! Stream filters from the query string: `source` (exact or `prefix.*`),
//! `source_type`, `tag`, `keyword`; OR within a name, AND across names.
//!
//! CONTRACT (owned by the stream module's owner).
