//! The provisioner's integration tests: golden files for every output, apply's atomicity
//! and idempotence, and the rendered files checked by the real programs that read them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod apply;
mod fixture;
mod golden;
mod programs;
mod snapshot;
