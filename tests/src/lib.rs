//! The end-to-end harness: free loopback ports, a temp root per test, the built `fugu`
//! binary, a transcript-style SMTP client, and real peers (Dovecot, a DNS server) started
//! from configs the test writes.
//!
//! Every peer is a real program from Debian's packages, installed by
//! `scripts/install-test-deps`; a missing program is a test failure with a message naming
//! the package, never a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod clamav;
pub mod dns;
pub mod dovecot;
pub mod fugu;
pub mod net;
pub mod netns;
pub mod peer;
pub mod postfix;
pub mod process;
pub mod smtp;
pub mod spampd;

pub use net::{free_port, wait_for_port};
pub use process::{Child, require_program, wait_for_text};
