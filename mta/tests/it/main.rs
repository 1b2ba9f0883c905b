//! The mta's integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod config;
mod deliver;
mod expand;
mod queue;
mod session;
mod table;
