//! Fixture replay server (owned by the fixtures helper).
