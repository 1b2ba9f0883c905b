//! The appliance database: the only Rust code with SQL for fugu's schema.
//!
//! `store` opens `fugu.db` (SQLite, WAL, `busy_timeout`, `foreign_keys`), applies the
//! migrations in `migrations/`, and offers typed rows and operations to the CLI, the
//! admin console and the provisioner. Every value is validated by the types in
//! [`address`] before it reaches SQL, and the schema enforces the same rules again.
//!
//! It does not render files or talk SMTP; the mta does not link it (its lookups are the
//! table queries in its configuration).

pub mod address;
mod error;
mod records;
// The admin console's records.
mod access;
mod access_import;
mod admins;
mod audit;
mod certificates;
mod dkim;
pub mod snapshot;
mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use access::{AccessAction, AccessKind, AccessQuery, AccessRule, NewAccessRule};
pub use access_import::RuleSource;
pub use address::{AliasSource, DomainName, EmailAddress, LocalPart};
pub use admins::{Admin, Role, Username};
pub use audit::{AuditEntry, AuditPage, AuditQuery, NewAuditEntry};
pub use certificates::{AcmeAccount, AcmeRequest, Certificate, CertificateSource, NewCertificate};
pub use dkim::{
    DkimAlgorithm, DkimKey, DkimState, DmarcPolicy, DomainPolicy, MtaStsMode, NewDkimKey,
    parse_selector,
};
pub use error::Error;
pub use records::{Alias, Domain, DomainCounts, NewUser, User, UserPage, UserQuery, UserSort};
pub use snapshot::Snapshot;
pub use tokens::{ApiToken, TokenScope};

/// How long a writer waits for another connection's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A handle on the appliance database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Open {
                path: path.to_path_buf(),
                reason: source.to_string(),
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across application crashes; FULL also across power loss,
            // which is what an appliance's only copy of its accounts deserves.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|e| Error::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    /// Opens an in-memory database (for tests of code built on the store).
    pub async fn open_in_memory() -> Result<Store, Error> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every in-memory connection would be a separate database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The change counter: bumped by triggers on every write to a provisioned table.
    pub async fn change_counter(&self) -> Result<i64, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM change_counter WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE value <> excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(self) {
        // Fold the WAL back into the database first: a short-lived command (quickstart,
        // the CLI) may exit before the pool's last connection has finished closing, and a
        // WAL left behind would make an unchanged database look changed on disk.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::debug!("store: WAL checkpoint on close failed: {e}");
        }
        self.pool.close().await;
    }
}
