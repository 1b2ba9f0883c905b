use std::path::PathBuf;

/// Everything that can stop the provisioner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the database: {0}")]
    Store(#[from] store::Error),
    #[error("{path}: {action}: {source}")]
    Write {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: unknown {what} {name:?}")]
    UnknownOwner {
        path: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error("{path} is outside the output root {root}")]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("unknown output {0:?} (expected dovecot, smtpd, dkim, tls, pf or nftables)")]
    UnknownOutput(String),
}
