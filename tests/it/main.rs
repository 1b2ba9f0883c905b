//! End-to-end tests: the real `fugu` binary beside real peers. One binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod harness;
mod mail;
mod smtpd;
mod up;
