//! Unit tests of the webhooks table.
