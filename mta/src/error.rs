//! The mta's one error type. SMTP replies for these are chosen in `session::reply`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spool's filesystem is full or over quota (ENOSPC/EDQUOT): the session answers
    /// `452 4.3.1` and nothing half-written is left behind.
    #[error("{path}: spool full: {source}")]
    SpoolFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored envelope that does not decode (garbage, truncation, unknown version).
    #[error("{path}:{line}: bad envelope: {reason}")]
    BadEnvelope {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Another process (a running daemon) holds the spool's lock.
    #[error("{path}: the spool is in use by another process")]
    SpoolBusy { path: PathBuf },
    /// No queued message or envelope has this id.
    #[error("no such message or envelope: {0}")]
    NoSuchId(String),
    /// The queue's committer or scheduler has stopped (daemon shutting down).
    #[error("the queue is shut down")]
    QueueClosed,
    /// A `pki` certificate or key file that does not load.
    #[error("{path}: {reason}")]
    Pki { path: PathBuf, reason: String },
    /// A TLS listener without any `pki`.
    #[error("a TLS listener needs at least one pki")]
    NoPki,
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A filter (smtpd-filters(7)) that cannot be set up or started.
    #[error("filter {name}: {reason}")]
    Filter { name: String, reason: String },
    /// A listener address that cannot be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}
