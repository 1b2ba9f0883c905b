//! API tokens: created in the console, shown once, kept only as a SHA-256 digest.
//! The caller computes the digest; the store never sees a token in clear.

use crate::{Error, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    Read,
    ReadWrite,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::ReadWrite => "read-write",
        }
    }

    pub fn parse(input: &str) -> Result<TokenScope, Error> {
        match input {
            "read" => Ok(TokenScope::Read),
            "read-write" => Ok(TokenScope::ReadWrite),
            _ => Err(Error::Invalid {
                field: "scope",
                reason: format!("{input:?} is neither read nor read-write"),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiToken {
    pub id: i64,
    pub admin_id: i64,
    pub name: String,
    pub token_sha256: String,
    pub scope: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, admin_id, name, token_sha256, scope, created_at, last_used_at";

impl Store {
    pub async fn add_api_token(
        &self,
        admin_id: i64,
        name: &str,
        scope: TokenScope,
        token_sha256: &str,
    ) -> Result<ApiToken, Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::Invalid {
                field: "name",
                reason: "give the token a name of 1 to 100 characters".to_string(),
            });
        }
        if token_sha256.len() != 64 || !token_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid {
                field: "token",
                reason: "the digest must be 64 hex digits".to_string(),
            });
        }
        Ok(sqlx::query_as::<_, ApiToken>(&format!(
            "INSERT INTO api_tokens (admin_id, name, token_sha256, scope) VALUES (?, ?, ?, ?)
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(admin_id)
        .bind(name)
        .bind(token_sha256)
        .bind(scope.as_str())
        .fetch_one(self.pool())
        .await?)
    }

    /// Finds a token by digest and notes its use.
    pub async fn use_api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>, Error> {
        Ok(sqlx::query_as::<_, ApiToken>(&format!(
            "UPDATE api_tokens SET last_used_at = unixepoch() WHERE token_sha256 = ?
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(token_sha256)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn list_api_tokens(&self, admin_id: Option<i64>) -> Result<Vec<ApiToken>, Error> {
        Ok(sqlx::query_as::<_, ApiToken>(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE ?1 IS NULL OR admin_id = ?1
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(admin_id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Revokes a token; `admin_id` restricts it to the owner's tokens.
    pub async fn remove_api_token(&self, id: i64, admin_id: Option<i64>) -> Result<(), Error> {
        let done =
            sqlx::query("DELETE FROM api_tokens WHERE id = ?1 AND (?2 IS NULL OR admin_id = ?2)")
                .bind(id)
                .bind(admin_id)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::TokenNotFound(id));
        }
        Ok(())
    }
}
