//! DKIM keys and each domain's deliverability policy (MTA-STS, DMARC, optional names).
//!
//! Keys arrive here already generated or imported (PKCS#8 PEM and the base64 `p=` value):
//! the store only enforces the naming and state rules. A key moves pending → active →
//! retired; activating one retires the domain's previously active key of the same
//! algorithm in the same transaction, so a domain never signs with two keys of one kind.

use std::fmt;

use crate::error::is_unique_violation;
use crate::{DomainName, Error, Store};

/// RFC 6376 §3.3 and RFC 8463: the two signing algorithms the appliance offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl DkimAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    pub fn parse(input: &str) -> Result<DkimAlgorithm, Error> {
        match input {
            "rsa-sha256" | "rsa" => Ok(DkimAlgorithm::RsaSha256),
            "ed25519-sha256" | "ed25519" => Ok(DkimAlgorithm::Ed25519Sha256),
            _ => Err(Error::Invalid {
                field: "algorithm",
                reason: format!("{input:?} is neither rsa-sha256 nor ed25519-sha256"),
            }),
        }
    }

    /// The `k=` tag of the DNS record (RFC 6376 §3.6.1).
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa",
            DkimAlgorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimState {
    Pending,
    Active,
    Retired,
}

impl DkimState {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimState::Pending => "pending",
            DkimState::Active => "active",
            DkimState::Retired => "retired",
        }
    }
}

/// A stored key. `Debug` leaves the private key out so that it never reaches a log.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DkimKey {
    pub id: i64,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// PKCS#8 PEM. Only the provisioner (key files) may read this.
    pub private_key: String,
    /// Base64 of the `p=` value.
    pub public_key: String,
    pub state: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("id", &self.id)
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<redacted>")
            .field("public_key", &self.public_key)
            .field("state", &self.state)
            .finish()
    }
}

impl DkimKey {
    pub fn algorithm(&self) -> DkimAlgorithm {
        if self.algorithm == DkimAlgorithm::Ed25519Sha256.as_str() {
            DkimAlgorithm::Ed25519Sha256
        } else {
            DkimAlgorithm::RsaSha256
        }
    }

    pub fn state(&self) -> DkimState {
        match self.state.as_str() {
            "active" => DkimState::Active,
            "retired" => DkimState::Retired,
            _ => DkimState::Pending,
        }
    }
}

/// A key to store (state pending).
#[derive(Clone)]
pub struct NewDkimKey {
    pub domain: DomainName,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    pub private_key_pem: String,
    pub public_key_b64: String,
}

/// Validates a selector: RFC 6376 §3.1 makes it a sub-domain; we keep to lower-case
/// letters, digits, `-` and `.`-separated labels, as the schema does.
pub fn parse_selector(input: &str) -> Result<String, Error> {
    let s = input.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(s)
    } else {
        Err(Error::Invalid {
            field: "selector",
            reason: format!(
                "{input:?} is not a selector: use 1 to 63 letters, digits and hyphens (dots between labels)"
            ),
        })
    }
}

const KEY_COLUMNS: &str = "id, domain, selector, algorithm, private_key, public_key, state, \
     created_at, activated_at, retired_at";

fn key_not_found(domain: &DomainName, selector: &str) -> Error {
    Error::Invalid {
        field: "selector",
        reason: format!("{domain} has no DKIM key with selector {selector}"),
    }
}

/// MTA-STS mode (RFC 8461 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaStsMode {
    None,
    Testing,
    Enforce,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::None => "none",
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
        }
    }

    pub fn parse(input: &str) -> Result<MtaStsMode, Error> {
        match input {
            "none" => Ok(MtaStsMode::None),
            "testing" => Ok(MtaStsMode::Testing),
            "enforce" => Ok(MtaStsMode::Enforce),
            _ => Err(Error::Invalid {
                field: "mta_sts_mode",
                reason: format!("{input:?} is not none, testing or enforce"),
            }),
        }
    }
}

/// DMARC `p=` (RFC 7489 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }

    pub fn parse(input: &str) -> Result<DmarcPolicy, Error> {
        match input {
            "none" => Ok(DmarcPolicy::None),
            "quarantine" => Ok(DmarcPolicy::Quarantine),
            "reject" => Ok(DmarcPolicy::Reject),
            _ => Err(Error::Invalid {
                field: "dmarc_policy",
                reason: format!("{input:?} is not none, quarantine or reject"),
            }),
        }
    }
}

/// A domain's deliverability settings; domains without a stored row get [`DomainPolicy::defaults`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPolicy {
    pub domain: String,
    pub mta_sts_mode: MtaStsMode,
    /// Seconds (RFC 8461 §3.2: at most 31557600).
    pub mta_sts_max_age: u32,
    pub dmarc_policy: DmarcPolicy,
    /// Where DMARC aggregate and TLS-RPT reports go; empty for nowhere.
    pub report_address: String,
    pub mta_sts_enabled: bool,
    pub autoconfig_enabled: bool,
}

impl DomainPolicy {
    pub const MIN_MAX_AGE: u32 = 86_400;
    pub const MAX_MAX_AGE: u32 = 31_557_600;

    pub fn defaults(domain: &DomainName) -> DomainPolicy {
        DomainPolicy {
            domain: domain.to_string(),
            mta_sts_mode: MtaStsMode::Testing,
            mta_sts_max_age: 604_800,
            dmarc_policy: DmarcPolicy::None,
            report_address: String::new(),
            mta_sts_enabled: true,
            autoconfig_enabled: true,
        }
    }
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    domain: String,
    mta_sts_mode: String,
    mta_sts_max_age: i64,
    dmarc_policy: String,
    report_address: String,
    mta_sts_enabled: bool,
    autoconfig_enabled: bool,
}

impl Store {
    /// Stores a new key in state pending. The selector must be unused in the domain.
    pub async fn add_dkim_key(&self, key: &NewDkimKey) -> Result<DkimKey, Error> {
        let selector = parse_selector(&key.selector)?;
        if self.domain(&key.domain).await?.is_none() {
            return Err(Error::DomainNotFound(key.domain.to_string()));
        }
        sqlx::query_as::<_, DkimKey>(&format!(
            "INSERT INTO dkim_keys (domain, selector, algorithm, private_key, public_key)
             VALUES (?, ?, ?, ?, ?) RETURNING {KEY_COLUMNS}"
        ))
        .bind(key.domain.as_str())
        .bind(&selector)
        .bind(key.algorithm.as_str())
        .bind(&key.private_key_pem)
        .bind(&key.public_key_b64)
        .fetch_one(self.pool())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Invalid {
                    field: "selector",
                    reason: format!("{} already has a key with selector {selector}", key.domain),
                }
            } else {
                e.into()
            }
        })
    }

    /// A domain's keys, newest first.
    pub async fn dkim_keys(&self, domain: &DomainName) -> Result<Vec<DkimKey>, Error> {
        Ok(sqlx::query_as::<_, DkimKey>(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain = ? ORDER BY created_at DESC, id DESC"
        ))
        .bind(domain.as_str())
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn dkim_key(
        &self,
        domain: &DomainName,
        selector: &str,
    ) -> Result<Option<DkimKey>, Error> {
        Ok(sqlx::query_as::<_, DkimKey>(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain = ? AND selector = ?"
        ))
        .bind(domain.as_str())
        .bind(selector.to_ascii_lowercase())
        .fetch_optional(self.pool())
        .await?)
    }

    /// Makes a pending key active and retires the previously active key of the same
    /// algorithm. Returns the activated key and the one it retired, if any.
    pub async fn activate_dkim_key(
        &self,
        domain: &DomainName,
        selector: &str,
    ) -> Result<(DkimKey, Option<DkimKey>), Error> {
        let selector = selector.to_ascii_lowercase();
        let mut tx = self.pool().begin().await?;
        let key = sqlx::query_as::<_, DkimKey>(&format!(
            "SELECT {KEY_COLUMNS} FROM dkim_keys WHERE domain = ? AND selector = ?"
        ))
        .bind(domain.as_str())
        .bind(&selector)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| key_not_found(domain, &selector))?;
        if key.state() != DkimState::Pending {
            return Err(Error::Invalid {
                field: "selector",
                reason: format!(
                    "{selector} is {}: only a pending key can be activated",
                    key.state
                ),
            });
        }
        let retired = sqlx::query_as::<_, DkimKey>(&format!(
            "UPDATE dkim_keys SET state = 'retired', retired_at = unixepoch()
             WHERE domain = ? AND algorithm = ? AND state = 'active' RETURNING {KEY_COLUMNS}"
        ))
        .bind(domain.as_str())
        .bind(&key.algorithm)
        .fetch_optional(&mut *tx)
        .await?;
        let active = sqlx::query_as::<_, DkimKey>(&format!(
            "UPDATE dkim_keys SET state = 'active', activated_at = unixepoch()
             WHERE id = ? RETURNING {KEY_COLUMNS}"
        ))
        .bind(key.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((active, retired))
    }

    /// Retires an active (or abandons a pending) key: it stops signing but stays
    /// published until it is deleted.
    pub async fn retire_dkim_key(
        &self,
        domain: &DomainName,
        selector: &str,
    ) -> Result<DkimKey, Error> {
        let selector = selector.to_ascii_lowercase();
        sqlx::query_as::<_, DkimKey>(&format!(
            "UPDATE dkim_keys SET state = 'retired', retired_at = unixepoch()
             WHERE domain = ? AND selector = ? AND state <> 'retired' RETURNING {KEY_COLUMNS}"
        ))
        .bind(domain.as_str())
        .bind(&selector)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| Error::Invalid {
            field: "selector",
            reason: format!("{domain} has no pending or active key with selector {selector}"),
        })
    }

    /// Deletes a key. An active key must be retired first, so that deleting never
    /// silently stops signing.
    pub async fn delete_dkim_key(&self, domain: &DomainName, selector: &str) -> Result<(), Error> {
        let selector = selector.to_ascii_lowercase();
        let key = self
            .dkim_key(domain, &selector)
            .await?
            .ok_or_else(|| key_not_found(domain, &selector))?;
        if key.state() == DkimState::Active {
            return Err(Error::Invalid {
                field: "selector",
                reason: format!("{selector} is active: retire it before deleting it"),
            });
        }
        sqlx::query("DELETE FROM dkim_keys WHERE id = ?")
            .bind(key.id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deletes every key retired at or before `retired_before` (Unix seconds), returning them.
    pub async fn purge_retired_dkim_keys(
        &self,
        retired_before: i64,
    ) -> Result<Vec<DkimKey>, Error> {
        Ok(sqlx::query_as::<_, DkimKey>(&format!(
            "DELETE FROM dkim_keys WHERE state = 'retired' AND retired_at <= ? RETURNING {KEY_COLUMNS}"
        ))
        .bind(retired_before)
        .fetch_all(self.pool())
        .await?)
    }

    /// The domain's policy, or the defaults when none was stored.
    pub async fn domain_policy(&self, domain: &DomainName) -> Result<DomainPolicy, Error> {
        let row = sqlx::query_as::<_, PolicyRow>(
            "SELECT domain, mta_sts_mode, mta_sts_max_age, dmarc_policy, report_address,
                    mta_sts_enabled, autoconfig_enabled
             FROM domain_policies WHERE domain = ?",
        )
        .bind(domain.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else {
            return Ok(DomainPolicy::defaults(domain));
        };
        Ok(DomainPolicy {
            domain: r.domain,
            mta_sts_mode: MtaStsMode::parse(&r.mta_sts_mode)?,
            mta_sts_max_age: u32::try_from(r.mta_sts_max_age).unwrap_or(604_800),
            dmarc_policy: DmarcPolicy::parse(&r.dmarc_policy)?,
            report_address: r.report_address,
            mta_sts_enabled: r.mta_sts_enabled,
            autoconfig_enabled: r.autoconfig_enabled,
        })
    }

    pub async fn set_domain_policy(&self, policy: &DomainPolicy) -> Result<DomainPolicy, Error> {
        let domain = DomainName::parse(&policy.domain)?;
        if self.domain(&domain).await?.is_none() {
            return Err(Error::DomainNotFound(domain.to_string()));
        }
        if !(DomainPolicy::MIN_MAX_AGE..=DomainPolicy::MAX_MAX_AGE)
            .contains(&policy.mta_sts_max_age)
        {
            return Err(Error::Invalid {
                field: "mta_sts_max_age",
                reason: format!(
                    "max_age must be between {} (a day) and {} seconds (RFC 8461 §3.2)",
                    DomainPolicy::MIN_MAX_AGE,
                    DomainPolicy::MAX_MAX_AGE
                ),
            });
        }
        let report = policy.report_address.trim().to_ascii_lowercase();
        if !report.is_empty() {
            crate::EmailAddress::parse(&report)?;
        }
        sqlx::query(
            "INSERT INTO domain_policies (domain, mta_sts_mode, mta_sts_max_age, dmarc_policy,
                 report_address, mta_sts_enabled, autoconfig_enabled)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (domain) DO UPDATE SET mta_sts_mode = excluded.mta_sts_mode,
                 mta_sts_max_age = excluded.mta_sts_max_age, dmarc_policy = excluded.dmarc_policy,
                 report_address = excluded.report_address,
                 mta_sts_enabled = excluded.mta_sts_enabled,
                 autoconfig_enabled = excluded.autoconfig_enabled, updated_at = unixepoch()",
        )
        .bind(domain.as_str())
        .bind(policy.mta_sts_mode.as_str())
        .bind(i64::from(policy.mta_sts_max_age))
        .bind(policy.dmarc_policy.as_str())
        .bind(&report)
        .bind(policy.mta_sts_enabled)
        .bind(policy.autoconfig_enabled)
        .execute(self.pool())
        .await?;
        self.domain_policy(&domain).await
    }
}

// The DNS hints need two facts from the ACME records (written by the certificates code):
// read-only, so that the hints never depend on how those rows are managed.
impl Store {
    /// The ACME account to name in CAA `accounturi=` (RFC 8657): the one that issued a
    /// stored certificate, else the newest. Returns its directory URL and account URI.
    pub async fn acme_account_uri(&self) -> Result<Option<(String, String)>, Error> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT directory_url, json_extract(credentials, '$.id') FROM acme_accounts
             WHERE json_valid(credentials)
             ORDER BY id IN (SELECT acme_account_id FROM certificates
                             WHERE acme_account_id IS NOT NULL) DESC, id DESC
             LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|(dir, id)| id.filter(|i| !i.is_empty()).map(|i| (dir, i))))
    }

    /// The chain PEM of the newest certificate whose names include `name`.
    pub async fn certificate_chain_for(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT chain_pem FROM certificates
             WHERE ' ' || names || ' ' LIKE '% ' || ? || ' %'
             ORDER BY not_after DESC, id DESC LIMIT 1",
        )
        .bind(name.to_ascii_lowercase())
        .fetch_optional(self.pool())
        .await?)
    }
}
