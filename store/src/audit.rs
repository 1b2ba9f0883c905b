//! The audit log: who changed what, when, from where, with the record before and after.

use crate::{Error, Store};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object: String,
    /// JSON of the record before the change (None for creations).
    pub before: Option<String>,
    /// JSON of the record after the change (None for removals).
    pub after: Option<String>,
    pub remote_addr: Option<String>,
}

/// An entry to write. `before`/`after` are JSON texts made by the caller.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub object: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub remote_addr: Option<String>,
}

/// Which entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// Prefix of the action, e.g. `user.` for every user change.
    pub action: Option<String>,
    /// Substring of the object.
    pub object: Option<String>,
    /// Only entries about these domains' objects (a domain admin's view); None for all.
    pub domains: Option<Vec<String>>,
    pub offset: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub total: i64,
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Store {
    pub async fn add_audit(&self, e: &NewAuditEntry) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(
            "INSERT INTO audit_log (actor, action, object, before, after, remote_addr)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.object)
        .bind(&e.before)
        .bind(&e.after)
        .bind(&e.remote_addr)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn list_audit(&self, q: &AuditQuery) -> Result<AuditPage, Error> {
        let action = q.action.as_ref().map(|a| format!("{}%", like_escape(a)));
        let object = q.object.as_ref().map(|o| format!("%{}%", like_escape(o)));
        // A domain admin sees entries whose object is the domain or inside it
        // (`user@domain`, `@domain`): a JSON array keeps the query one statement.
        let domains = q.domains.as_ref().map(|d| {
            format!(
                "[{}]",
                d.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        });
        let filter = "(?1 IS NULL OR actor = ?1)
             AND (?2 IS NULL OR action LIKE ?2 ESCAPE '\\')
             AND (?3 IS NULL OR object LIKE ?3 ESCAPE '\\')
             AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(?4) d
                   WHERE object = d.value OR object LIKE '%@' || d.value
                      OR object LIKE '%@' || d.value || ' %'))";
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM audit_log WHERE {filter}"))
                .bind(q.actor.as_deref())
                .bind(action.as_deref())
                .bind(object.as_deref())
                .bind(domains.as_deref())
                .fetch_one(self.pool())
                .await?;
        let limit = if q.limit == 0 { -1 } else { i64::from(q.limit) };
        let entries = sqlx::query_as::<_, AuditEntry>(&format!(
            "SELECT id, at, actor, action, object, before, after, remote_addr FROM audit_log
             WHERE {filter} ORDER BY at DESC, id DESC LIMIT ?5 OFFSET ?6"
        ))
        .bind(q.actor.as_deref())
        .bind(action.as_deref())
        .bind(object.as_deref())
        .bind(domains.as_deref())
        .bind(limit)
        .bind(i64::from(q.offset))
        .fetch_all(self.pool())
        .await?;
        Ok(AuditPage { entries, total })
    }
}
