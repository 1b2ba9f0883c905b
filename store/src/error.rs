/// Everything that can go wrong in the store, named for what the operator did.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid domain {input:?}: {reason}")]
    InvalidDomain { input: String, reason: String },
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress { input: String, reason: String },
    #[error("domain {0} already exists")]
    DomainExists(String),
    #[error("domain {0} does not exist")]
    DomainNotFound(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("user {0} does not exist")]
    UserNotFound(String),
    #[error("alias {from} -> {to} already exists")]
    AliasExists { from: String, to: String },
    #[error("no alias {0}")]
    AliasNotFound(String),
    #[error("an alias cannot point at itself ({0})")]
    AliasLoop(String),
    #[error("{0}")]
    Password(#[from] password::Error),
    // The console's records (admins, access rules, API tokens): admins.rs, access.rs, tokens.rs.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("admin {0} already exists")]
    AdminExists(String),
    #[error("admin {0} does not exist")]
    AdminNotFound(String),
    #[error("{kind} rule for {value} ({action}) already exists")]
    AccessRuleExists {
        kind: String,
        value: String,
        action: String,
    },
    #[error("access rule {0} does not exist")]
    AccessRuleNotFound(i64),
    #[error("API token {0} does not exist")]
    TokenNotFound(i64),
    #[error("cannot open database {path}: {reason}")]
    Open {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("database schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// True for errors caused by the input (shown to the operator beside the field),
    /// as opposed to failures of the database itself.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Open { .. } | Error::Migrate(_) | Error::Database(_)
        )
    }
}

/// Whether a database error is a UNIQUE constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
