//! Console administrators, the domains a domain admin may manage, TOTP state and recovery
//! codes, and the failed-login record behind the console's sign-in throttling.

use crate::error::is_unique_violation;
use crate::{DomainName, Error, Store};

/// What an administrator may do: everything, or only the domains assigned to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Superadmin,
    DomainAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::DomainAdmin => "domain_admin",
        }
    }

    pub fn parse(input: &str) -> Result<Role, Error> {
        match input {
            "superadmin" => Ok(Role::Superadmin),
            "domain_admin" => Ok(Role::DomainAdmin),
            _ => Err(Error::Invalid {
                field: "role",
                reason: format!("{input:?} is neither superadmin nor domain_admin"),
            }),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A console login name: lower-case letters, digits and `._@+-`, 1 to 254 characters
/// (an e-mail address fits, so operators can use theirs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(input: &str) -> Result<Username, Error> {
        let bad = |reason: &str| Error::Invalid {
            field: "username",
            reason: reason.to_string(),
        };
        let lower = input.trim().to_lowercase();
        if lower.is_empty() {
            return Err(bad("it is empty"));
        }
        if lower.len() > 254 {
            return Err(bad("it is longer than 254 characters"));
        }
        if !lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@+-".contains(&b))
        {
            return Err(bad(
                "use only letters, digits and . _ @ + - (no spaces or other characters)",
            ));
        }
        Ok(Username(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    /// Base32 secret (RFC 4648 §6) once enrolment started; used only when `totp_enabled`.
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AdminRow {
    id: i64,
    username: String,
    password_hash: String,
    role: String,
    totp_secret: Option<String>,
    totp_enabled: bool,
    created_at: i64,
    last_login_at: Option<i64>,
}

impl TryFrom<AdminRow> for Admin {
    type Error = Error;
    fn try_from(r: AdminRow) -> Result<Admin, Error> {
        Ok(Admin {
            id: r.id,
            username: r.username,
            password_hash: r.password_hash,
            role: Role::parse(&r.role)?,
            totp_secret: r.totp_secret,
            totp_enabled: r.totp_enabled,
            created_at: r.created_at,
            last_login_at: r.last_login_at,
        })
    }
}

const ADMIN_COLUMNS: &str =
    "id, username, password_hash, role, totp_secret, totp_enabled, created_at, last_login_at";

impl Store {
    pub async fn add_admin(
        &self,
        username: &Username,
        password_hash: &str,
        role: Role,
    ) -> Result<Admin, Error> {
        if password::family(password_hash).is_none() {
            return Err(password::Error::UnsupportedHash.into());
        }
        let row = sqlx::query_as::<_, AdminRow>(&format!(
            "INSERT INTO admins (username, password_hash, role) VALUES (?, ?, ?)
             RETURNING {ADMIN_COLUMNS}"
        ))
        .bind(username.as_str())
        .bind(password_hash)
        .bind(role.as_str())
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AdminExists(username.to_string())
            } else {
                e.into()
            }
        })?;
        row.try_into()
    }

    pub async fn admin_count(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM admins")
            .fetch_one(self.pool())
            .await?)
    }

    /// Creates the first superadmin, atomically refusing when any admin already exists
    /// (two browsers racing through the first-run page must not both win).
    pub async fn add_first_superadmin(
        &self,
        username: &Username,
        password_hash: &str,
    ) -> Result<Option<Admin>, Error> {
        if password::family(password_hash).is_none() {
            return Err(password::Error::UnsupportedHash.into());
        }
        let row = sqlx::query_as::<_, AdminRow>(&format!(
            "INSERT INTO admins (username, password_hash, role)
             SELECT ?, ?, 'superadmin' WHERE NOT EXISTS (SELECT 1 FROM admins)
             RETURNING {ADMIN_COLUMNS}"
        ))
        .bind(username.as_str())
        .bind(password_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(Admin::try_from).transpose()
    }

    pub async fn admin_by_username(&self, username: &str) -> Result<Option<Admin>, Error> {
        sqlx::query_as::<_, AdminRow>(&format!(
            "SELECT {ADMIN_COLUMNS} FROM admins WHERE username = ?"
        ))
        .bind(username.trim().to_lowercase())
        .fetch_optional(self.pool())
        .await?
        .map(Admin::try_from)
        .transpose()
    }

    pub async fn admin_by_id(&self, id: i64) -> Result<Option<Admin>, Error> {
        sqlx::query_as::<_, AdminRow>(&format!("SELECT {ADMIN_COLUMNS} FROM admins WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .map(Admin::try_from)
            .transpose()
    }

    pub async fn list_admins(&self) -> Result<Vec<Admin>, Error> {
        sqlx::query_as::<_, AdminRow>(&format!(
            "SELECT {ADMIN_COLUMNS} FROM admins ORDER BY username"
        ))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(Admin::try_from)
        .collect()
    }

    pub async fn set_admin_password_hash(&self, id: i64, hash: &str) -> Result<(), Error> {
        if password::family(hash).is_none() {
            return Err(password::Error::UnsupportedHash.into());
        }
        let done = sqlx::query("UPDATE admins SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::AdminNotFound(id.to_string()));
        }
        Ok(())
    }

    pub async fn remove_admin(&self, id: i64) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM admins WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::AdminNotFound(id.to_string()));
        }
        Ok(())
    }

    pub async fn record_admin_login(&self, id: i64) -> Result<(), Error> {
        sqlx::query("UPDATE admins SET last_login_at = unixepoch() WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The domains a domain admin may manage, sorted.
    pub async fn admin_domains(&self, admin_id: i64) -> Result<Vec<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT domain FROM admin_domains WHERE admin_id = ? ORDER BY domain",
        )
        .bind(admin_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Replaces the set of domains assigned to an admin, in one transaction.
    pub async fn set_admin_domains(
        &self,
        admin_id: i64,
        domains: &[DomainName],
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM admin_domains WHERE admin_id = ?")
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        for d in domains {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM domains WHERE name = ?")
                .bind(d.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(Error::DomainNotFound(d.to_string()));
            }
            sqlx::query("INSERT OR IGNORE INTO admin_domains (admin_id, domain) VALUES (?, ?)")
                .bind(admin_id)
                .bind(d.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- TOTP ----------------------------------------------------------------------

    /// Starts (or restarts) enrolment: stores the secret, not yet enforced.
    pub async fn set_admin_totp_secret(&self, id: i64, secret: Option<&str>) -> Result<(), Error> {
        sqlx::query("UPDATE admins SET totp_secret = ?, totp_enabled = 0 WHERE id = ?")
            .bind(secret)
            .bind(id)
            .execute(self.pool())
            .await?;
        if secret.is_none() {
            sqlx::query("DELETE FROM admin_recovery_codes WHERE admin_id = ?")
                .bind(id)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Turns the second factor on and replaces the recovery codes (given hashed).
    pub async fn enable_admin_totp(
        &self,
        id: i64,
        recovery_hashes: &[String],
    ) -> Result<(), Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE admins SET totp_enabled = 1 WHERE id = ? AND totp_secret IS NOT NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM admin_recovery_codes WHERE admin_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for h in recovery_hashes {
            sqlx::query("INSERT INTO admin_recovery_codes (admin_id, code_hash) VALUES (?, ?)")
                .bind(id)
                .bind(h)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The hashed recovery codes still unused: (row id, hash).
    pub async fn admin_recovery_codes(&self, admin_id: i64) -> Result<Vec<(i64, String)>, Error> {
        Ok(sqlx::query_as(
            "SELECT id, code_hash FROM admin_recovery_codes WHERE admin_id = ? ORDER BY id",
        )
        .bind(admin_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Spends a recovery code; false when it was already spent (a concurrent login).
    pub async fn use_recovery_code(&self, code_id: i64) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM admin_recovery_codes WHERE id = ?")
            .bind(code_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- sign-in throttling --------------------------------------------------------

    pub async fn record_login_failure(&self, key: &str, at: i64) -> Result<(), Error> {
        sqlx::query("INSERT INTO login_failures (key, at) VALUES (?, ?)")
            .bind(key)
            .bind(at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Failures for `key` at or after `since`, and the oldest of them (to say when the
    /// lock lifts). Older rows are pruned on the way.
    pub async fn login_failures_since(
        &self,
        key: &str,
        since: i64,
    ) -> Result<(i64, Option<i64>), Error> {
        sqlx::query("DELETE FROM login_failures WHERE at < ?")
            .bind(since)
            .execute(self.pool())
            .await?;
        Ok(
            sqlx::query_as(
                "SELECT count(*), min(at) FROM login_failures WHERE key = ? AND at >= ?",
            )
            .bind(key)
            .bind(since)
            .fetch_one(self.pool())
            .await?,
        )
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
