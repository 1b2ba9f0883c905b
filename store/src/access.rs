//! Block and allow rules: IP addresses, CIDR ranges, senders, recipients and domains, set
//! by hand in the console (`manual`), by the mta's auto-bans (`auto`) or by a feed.

use std::net::IpAddr;

use crate::error::is_unique_violation;
use crate::{AliasSource, DomainName, Error, Store};

/// Longest reason kept with a rule.
pub const MAX_REASON: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Ip,
    Cidr,
    Sender,
    Recipient,
    Domain,
}

impl AccessKind {
    pub const ALL: [AccessKind; 5] = [
        AccessKind::Ip,
        AccessKind::Cidr,
        AccessKind::Sender,
        AccessKind::Recipient,
        AccessKind::Domain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Ip => "ip",
            AccessKind::Cidr => "cidr",
            AccessKind::Sender => "sender",
            AccessKind::Recipient => "recipient",
            AccessKind::Domain => "domain",
        }
    }

    pub fn parse(input: &str) -> Result<AccessKind, Error> {
        AccessKind::ALL
            .into_iter()
            .find(|k| k.as_str() == input)
            .ok_or_else(|| Error::Invalid {
                field: "kind",
                reason: format!("{input:?} is not one of ip, cidr, sender, recipient, domain"),
            })
    }

    /// Validates `value` for this kind and returns the form stored (and matched) in the
    /// table: canonical IP text, a CIDR with its host bits cleared, lower-case addresses.
    pub fn normalise(self, value: &str) -> Result<String, Error> {
        let value = value.trim();
        let bad = |reason: String| Error::Invalid {
            field: "value",
            reason,
        };
        match self {
            AccessKind::Ip => value
                .parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| bad(format!("{value:?} is not an IPv4 or IPv6 address"))),
            AccessKind::Cidr => {
                let (addr, len) = value
                    .split_once('/')
                    .ok_or_else(|| bad(format!("{value:?} is not a range like 192.0.2.0/24")))?;
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| bad(format!("{addr:?} is not an IPv4 or IPv6 address")))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad(format!("prefix length must be 0 to {max}")))?;
                Ok(format!("{}/{len}", network(ip, len)))
            }
            AccessKind::Sender | AccessKind::Recipient => AliasSource::parse(value)
                .map(|a| a.to_string())
                .map_err(|e| bad(format!("{e} (use an address or @domain)"))),
            AccessKind::Domain => DomainName::parse(value)
                .map(|d| d.to_string())
                .map_err(|e| bad(e.to_string())),
        }
    }
}

fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    Block,
    Allow,
}

impl AccessAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessAction::Block => "block",
            AccessAction::Allow => "allow",
        }
    }

    pub fn parse(input: &str) -> Result<AccessAction, Error> {
        match input {
            "block" => Ok(AccessAction::Block),
            "allow" => Ok(AccessAction::Allow),
            _ => Err(Error::Invalid {
                field: "action",
                reason: format!("{input:?} is neither block nor allow"),
            }),
        }
    }
}

/// A rule to add by hand. Build it with [`NewAccessRule::parse`].
#[derive(Debug, Clone)]
pub struct NewAccessRule {
    kind: AccessKind,
    value: String,
    action: AccessAction,
    reason: String,
    expires_at: Option<i64>,
}

impl NewAccessRule {
    pub fn parse(
        kind: AccessKind,
        value: &str,
        action: AccessAction,
        reason: &str,
        expires_at: Option<i64>,
    ) -> Result<NewAccessRule, Error> {
        let value = kind.normalise(value)?;
        let reason = reason.trim();
        if reason.chars().count() > MAX_REASON {
            return Err(Error::Invalid {
                field: "reason",
                reason: format!("it is longer than {MAX_REASON} characters"),
            });
        }
        Ok(NewAccessRule {
            kind,
            value,
            action,
            reason: reason.to_string(),
            expires_at,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessRule {
    pub id: i64,
    pub kind: String,
    pub value: String,
    pub action: String,
    /// `manual`, `auto` (an mta auto-ban) or `feed`.
    pub source: String,
    pub reason: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// Which rules to list.
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    pub kind: Option<AccessKind>,
    pub source: Option<String>,
    /// Substring of the value or reason.
    pub search: Option<String>,
    /// Rules whose expiry passed are hidden unless this is set.
    pub include_expired: bool,
    pub now: i64,
}

const RULE_COLUMNS: &str = "id, kind, value, action, source, reason, created_at, expires_at";

impl Store {
    pub async fn add_access_rule(&self, rule: &NewAccessRule) -> Result<AccessRule, Error> {
        sqlx::query_as::<_, AccessRule>(&format!(
            "INSERT INTO access_rules (kind, value, action, source, reason, expires_at)
             VALUES (?, ?, ?, 'manual', ?, ?) RETURNING {RULE_COLUMNS}"
        ))
        .bind(rule.kind.as_str())
        .bind(&rule.value)
        .bind(rule.action.as_str())
        .bind(&rule.reason)
        .bind(rule.expires_at)
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::AccessRuleExists {
                    kind: rule.kind.as_str().to_string(),
                    value: rule.value.clone(),
                    action: rule.action.as_str().to_string(),
                }
            } else {
                e.into()
            }
        })
    }

    pub async fn access_rule(&self, id: i64) -> Result<Option<AccessRule>, Error> {
        Ok(sqlx::query_as::<_, AccessRule>(&format!(
            "SELECT {RULE_COLUMNS} FROM access_rules WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn list_access_rules(&self, q: &AccessQuery) -> Result<Vec<AccessRule>, Error> {
        let pattern = q.search.as_ref().map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        Ok(sqlx::query_as::<_, AccessRule>(&format!(
            "SELECT {RULE_COLUMNS} FROM access_rules
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR source = ?2)
               AND (?3 IS NULL OR value LIKE ?3 ESCAPE '\\' OR lower(reason) LIKE ?3 ESCAPE '\\')
               AND (?4 OR expires_at IS NULL OR expires_at > ?5)
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(q.kind.map(AccessKind::as_str))
        .bind(q.source.as_deref())
        .bind(pattern)
        .bind(q.include_expired)
        .bind(q.now)
        .fetch_all(self.pool())
        .await?)
    }

    /// Removes a rule (lifting a block or an auto-ban) and returns what it was.
    pub async fn remove_access_rule(&self, id: i64) -> Result<AccessRule, Error> {
        sqlx::query_as::<_, AccessRule>(&format!(
            "DELETE FROM access_rules WHERE id = ? RETURNING {RULE_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(Error::AccessRuleNotFound(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_is_stored_as_its_network() {
        assert_eq!(
            AccessKind::Cidr.normalise("192.0.2.77/24").unwrap(),
            "192.0.2.0/24"
        );
        assert_eq!(
            AccessKind::Cidr.normalise("2001:db8::1/32").unwrap(),
            "2001:db8::/32"
        );
        assert_eq!(
            AccessKind::Cidr.normalise("10.1.2.3/0").unwrap(),
            "0.0.0.0/0"
        );
        assert!(AccessKind::Cidr.normalise("10.0.0.0/33").is_err());
        assert!(AccessKind::Cidr.normalise("10.0.0.0").is_err());
    }

    #[test]
    fn sender_accepts_address_or_domain_wildcard() {
        assert_eq!(
            AccessKind::Sender.normalise("Spam@Example.ORG").unwrap(),
            "spam@example.org"
        );
        assert_eq!(
            AccessKind::Sender.normalise("@example.org").unwrap(),
            "@example.org"
        );
        assert!(AccessKind::Sender.normalise("<script>").is_err());
    }
}
