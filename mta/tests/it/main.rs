//! The mta's integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod access;
mod config;
mod deliver;
mod expand;
mod queue;
mod relay;
mod session;
mod spf_walk;
mod table;
