//! Access rules written in bulk by `fugu ctl allowlist|blocklist import` and the log
//! ingester (auto-bans), and the console's failed sign-ins read back for it.

use crate::access::{AccessAction, AccessKind};
use crate::{Error, Store};

/// Who wrote an imported rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    Manual,
    Auto,
    Feed,
}

impl RuleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSource::Manual => "manual",
            RuleSource::Auto => "auto",
            RuleSource::Feed => "feed",
        }
    }
}

impl Store {
    /// Adds a rule, or refreshes the reason and expiry of the same (kind, value, action).
    /// A manual rule is never taken over by an automatic or feed one: an operator's
    /// permanent decision does not start to expire because a list also carries it.
    /// `value` must already be in canonical form ([`AccessKind::normalise`]).
    pub async fn upsert_access_rule(
        &self,
        kind: AccessKind,
        value: &str,
        action: AccessAction,
        source: RuleSource,
        reason: &str,
        expires_at: Option<i64>,
    ) -> Result<(), Error> {
        let value = kind.normalise(value)?;
        sqlx::query(
            "INSERT INTO access_rules (kind, value, action, source, reason, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (kind, value, action) DO UPDATE SET
                 source = excluded.source, reason = excluded.reason,
                 expires_at = excluded.expires_at
             WHERE access_rules.source <> 'manual' OR excluded.source = 'manual'",
        )
        .bind(kind.as_str())
        .bind(&value)
        .bind(action.as_str())
        .bind(source.as_str())
        .bind(reason)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Failed console sign-ins per client address since `since` (keys `ip:ADDR` that
    /// admin-web records), as (address, count, latest).
    pub async fn console_login_failures(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64, i64)>, Error> {
        Ok(sqlx::query_as(
            "SELECT substr(key, 4), count(*), max(at) FROM login_failures
             WHERE key LIKE 'ip:%' AND at >= ? GROUP BY key ORDER BY key",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }
}
