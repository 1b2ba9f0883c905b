//! The SMTP daemon of fugu, in the spirit of OpenSMTPD.
//!
//! It reads an OpenSMTPD 6.4+ `smtpd.conf` ([`config`]) with its tables ([`table`]:
//! `file:`, inline and `sqlite:` through table-sqlite's config format), speaks SMTP through
//! a sans-IO session core ([`session`]) behind a thin tokio listener, keeps accepted mail
//! in a durable spool ([`queue`]) and delivers it ([`deliver`]: LMTP, maildir, relay).
//!
//! It does not know about the admin console or the appliance schema: everything it looks
//! up goes through the table queries in its configuration.

pub mod access;
pub mod authres;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deliver;
pub mod dkim;
pub mod envelope;
pub mod error;
pub mod expand;
pub mod filter;
pub mod mtasts;
pub mod queue;
pub mod rdns;
pub mod relay;
pub mod server;
pub mod session;
pub mod spf_walk;
pub mod table;

pub use error::Error;
