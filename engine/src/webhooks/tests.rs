//! Unit tests of the delivery worker.
