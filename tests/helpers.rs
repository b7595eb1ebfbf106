//! Shared test helpers: fresh databases, fixture servers, spawned apps.
