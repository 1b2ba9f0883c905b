//! One consistent read of everything the provisioner renders: domains, users, aliases,
//! DKIM keys, certificates, access rules and settings, taken in a single transaction so
//! that a file set rendered from it never mixes two states of the database.

use std::collections::BTreeMap;

use crate::{Alias, Certificate, DkimKey, Domain, Error, Store, User};

// The snapshot carries the stores' own row types: their `Debug` hides private keys, so a
// logged snapshot never leaks one.
impl Certificate {
    /// The first name: the directory its files are provisioned under.
    pub fn primary_name(&self) -> &str {
        self.names.split_whitespace().next().unwrap_or_default()
    }

    pub fn covers(&self, name: &str) -> bool {
        self.names.split_whitespace().any(|n| n == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessRuleRow {
    pub id: i64,
    /// `ip`, `cidr`, `sender`, `recipient` or `domain`.
    pub kind: String,
    pub value: String,
    /// `block` or `allow`.
    pub action: String,
    /// `manual`, `auto` or `feed`.
    pub source: String,
    pub reason: String,
    pub expires_at: Option<i64>,
}

/// Everything provisioned, as of one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The change counter the snapshot corresponds to.
    pub change_counter: i64,
    /// The database's clock (Unix seconds) when the snapshot was taken: expiry is judged
    /// against it, so rendering stays a pure function of the snapshot.
    pub taken_at: i64,
    pub settings: BTreeMap<String, String>,
    /// Ordered by name.
    pub domains: Vec<Domain>,
    /// Every user, active or not, ordered by domain and local part.
    pub users: Vec<User>,
    /// Ordered by source and destination.
    pub aliases: Vec<Alias>,
    /// Ordered by domain and selector.
    pub dkim_keys: Vec<DkimKey>,
    /// Ordered by id.
    pub certificates: Vec<Certificate>,
    /// Ordered by kind, value and action.
    pub access_rules: Vec<AccessRuleRow>,
}

impl Snapshot {
    /// Reads the whole provisioned state in one read transaction.
    pub async fn load(store: &Store) -> Result<Snapshot, Error> {
        let mut tx = store.pool().begin().await?;
        let (change_counter, taken_at): (i64, i64) =
            sqlx::query_as("SELECT (SELECT value FROM change_counter WHERE id = 1), unixepoch()")
                .fetch_one(&mut *tx)
                .await?;
        let settings: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM settings ORDER BY key")
                .fetch_all(&mut *tx)
                .await?;
        let domains = sqlx::query_as::<_, Domain>(
            "SELECT name, active, description, created_at FROM domains ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?;
        let users = sqlx::query_as::<_, User>(
            "SELECT id, address, domain, local_part, password_hash, display_name, quota_bytes,
                    uid, gid, home, active, created_at, updated_at
               FROM users ORDER BY domain, local_part",
        )
        .fetch_all(&mut *tx)
        .await?;
        let aliases = sqlx::query_as::<_, Alias>(
            "SELECT id, source, destination, domain, active, created_at
               FROM aliases ORDER BY source, destination",
        )
        .fetch_all(&mut *tx)
        .await?;
        let dkim_keys = sqlx::query_as::<_, DkimKey>(
            "SELECT id, domain, selector, algorithm, private_key, public_key, state,
                    created_at, activated_at, retired_at
               FROM dkim_keys ORDER BY domain, selector",
        )
        .fetch_all(&mut *tx)
        .await?;
        let certificates = sqlx::query_as::<_, Certificate>(
            "SELECT id, names, chain_pem, key_pem, not_before, not_after, source,
                    acme_account_id, last_error, created_at, updated_at
               FROM certificates ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let access_rules = sqlx::query_as::<_, AccessRuleRow>(
            "SELECT id, kind, value, action, source, reason, expires_at
               FROM access_rules ORDER BY kind, value, action",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Snapshot {
            change_counter,
            taken_at,
            settings: settings.into_iter().collect(),
            domains,
            users,
            aliases,
            dkim_keys,
            certificates,
            access_rules,
        })
    }

    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
}
