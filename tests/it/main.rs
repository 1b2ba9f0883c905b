//! End-to-end tests: the real `fugu` binary beside real peers. One binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod authres;
mod chains;
mod cli;
mod ctl;
mod dkim;
mod filters;
mod harness;
mod limits;
mod mail;
mod mtasts;
mod openbsd;
mod package;
mod peers;
mod quickstart;
mod relay;
mod smtpd;
mod up;
