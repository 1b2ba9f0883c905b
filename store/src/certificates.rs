//! TLS certificates (ACME-issued, uploaded by hand, or self-signed), the ACME accounts
//! they were ordered with (one per directory URL), and the ACME requests the console's
//! renewal task keeps current.
//!
//! The store checks only what SQL can; parsing and validating PEM is the console's job.

use crate::error::is_unique_violation;
use crate::{Error, Store};

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateSource {
    Acme,
    Manual,
    SelfSigned,
}

impl CertificateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateSource::Acme => "acme",
            CertificateSource::Manual => "manual",
            CertificateSource::SelfSigned => "self-signed",
        }
    }
}

/// A stored certificate. `key_pem` is the private key: never show it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Certificate {
    pub id: i64,
    /// Space-separated, lower-case; the first is the primary name.
    pub names: String,
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `acme`, `manual` or `self-signed`.
    pub source: String,
    pub acme_account_id: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

// The key stays out of logs and panic messages.
impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("names", &self.names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("source", &self.source)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    pub fn name_list(&self) -> Vec<&str> {
        self.names.split_whitespace().collect()
    }
}

/// A certificate to store; names are lower-cased here.
#[derive(Clone)]
pub struct NewCertificate {
    pub names: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    pub source: CertificateSource,
    pub acme_account_id: Option<i64>,
}

/// An ACME account on one directory. `credentials` is instant-acme's serialised
/// `AccountCredentials` (it holds the account key: never show it).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AcmeAccount {
    pub id: i64,
    pub directory_url: String,
    pub contact: String,
    pub credentials: String,
    pub created_at: i64,
}

impl std::fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("id", &self.id)
            .field("directory_url", &self.directory_url)
            .field("contact", &self.contact)
            .finish_non_exhaustive()
    }
}

/// A certificate the operator asked an ACME directory for, and its renewal state.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AcmeRequest {
    pub id: i64,
    pub names: String,
    pub acme_account_id: i64,
    pub directory_url: String,
    /// The certificate key kept for the next renewal (PKCS#8 PEM).
    pub key_pem: Option<String>,
    pub reuse_key: bool,
    pub certificate_id: Option<i64>,
    pub last_error: Option<String>,
    pub failures: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for AcmeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeRequest")
            .field("id", &self.id)
            .field("names", &self.names)
            .field("directory_url", &self.directory_url)
            .field("certificate_id", &self.certificate_id)
            .field("last_error", &self.last_error)
            .field("failures", &self.failures)
            .field("next_attempt_at", &self.next_attempt_at)
            .finish_non_exhaustive()
    }
}

impl AcmeRequest {
    pub fn name_list(&self) -> Vec<&str> {
        self.names.split_whitespace().collect()
    }
}

const CERT_COLUMNS: &str = "id, names, chain_pem, key_pem, not_before, not_after, source,
    acme_account_id, last_error, created_at, updated_at";

const REQUEST_SELECT: &str = "SELECT r.id, r.names, r.acme_account_id, a.directory_url, r.key_pem,
    r.reuse_key, r.certificate_id, r.last_error, r.failures, r.next_attempt_at, r.created_at,
    r.updated_at FROM acme_requests r JOIN acme_accounts a ON a.id = r.acme_account_id";

/// Lower-cases, drops duplicates (keeping the first, the primary name) and refuses empty
/// or space-containing names.
fn name_text(names: &[String]) -> Result<String, Error> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if n.is_empty() || n.contains(char::is_whitespace) {
            return Err(Error::Invalid {
                field: "names",
                reason: format!("{n:?} is not a host name"),
            });
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid {
            field: "names",
            reason: "a certificate needs at least one name".to_string(),
        });
    }
    Ok(out.join(" "))
}

impl Store {
    pub async fn add_certificate(&self, c: &NewCertificate) -> Result<Certificate, Error> {
        let names = name_text(&c.names)?;
        Ok(sqlx::query_as::<_, Certificate>(&format!(
            "INSERT INTO certificates (names, chain_pem, key_pem, not_before, not_after, source,
                 acme_account_id) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {CERT_COLUMNS}"
        ))
        .bind(names)
        .bind(&c.chain_pem)
        .bind(&c.key_pem)
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(c.source.as_str())
        .bind(c.acme_account_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Every certificate, newest first.
    pub async fn certificates(&self) -> Result<Vec<Certificate>, Error> {
        Ok(sqlx::query_as::<_, Certificate>(&format!(
            "SELECT {CERT_COLUMNS} FROM certificates ORDER BY id DESC"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn certificate(&self, id: i64) -> Result<Option<Certificate>, Error> {
        Ok(sqlx::query_as::<_, Certificate>(&format!(
            "SELECT {CERT_COLUMNS} FROM certificates WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records (or clears) the last renewal failure shown beside a certificate.
    pub async fn set_certificate_error(&self, id: i64, error: Option<&str>) -> Result<(), Error> {
        sqlx::query(
            "UPDATE certificates SET last_error = ?, updated_at = unixepoch()
              WHERE id = ? AND last_error IS NOT ?",
        )
        .bind(error)
        .bind(id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn acme_account(&self, directory_url: &str) -> Result<Option<AcmeAccount>, Error> {
        Ok(sqlx::query_as::<_, AcmeAccount>(
            "SELECT id, directory_url, contact, credentials, created_at
               FROM acme_accounts WHERE directory_url = ?",
        )
        .bind(directory_url)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn acme_accounts(&self) -> Result<Vec<AcmeAccount>, Error> {
        Ok(sqlx::query_as::<_, AcmeAccount>(
            "SELECT id, directory_url, contact, credentials, created_at
               FROM acme_accounts ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a newly registered account; fails if the directory already has one.
    pub async fn add_acme_account(
        &self,
        directory_url: &str,
        contact: &str,
        credentials: &str,
    ) -> Result<AcmeAccount, Error> {
        sqlx::query_as::<_, AcmeAccount>(
            "INSERT INTO acme_accounts (directory_url, contact, credentials) VALUES (?, ?, ?)
             RETURNING id, directory_url, contact, credentials, created_at",
        )
        .bind(directory_url)
        .bind(contact)
        .bind(credentials)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Invalid {
                    field: "directory",
                    reason: format!("an account for {directory_url} already exists"),
                }
            } else {
                e.into()
            }
        })
    }

    /// Adds a request for `names` on `account_id`, or returns the existing one (made due
    /// again, so that asking twice retries at once).
    pub async fn upsert_acme_request(
        &self,
        names: &[String],
        account_id: i64,
    ) -> Result<AcmeRequest, Error> {
        let names = name_text(names)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO acme_requests (names, acme_account_id) VALUES (?, ?)
             ON CONFLICT (names, acme_account_id) DO UPDATE
                SET next_attempt_at = 0, updated_at = unixepoch()
             RETURNING id",
        )
        .bind(names)
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        self.acme_request(id).await?.ok_or(Error::Invalid {
            field: "names",
            reason: "the request vanished while being saved".to_string(),
        })
    }

    pub async fn acme_request(&self, id: i64) -> Result<Option<AcmeRequest>, Error> {
        Ok(
            sqlx::query_as::<_, AcmeRequest>(&format!("{REQUEST_SELECT} WHERE r.id = ?"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every ACME request, oldest first.
    pub async fn acme_requests(&self) -> Result<Vec<AcmeRequest>, Error> {
        Ok(
            sqlx::query_as::<_, AcmeRequest>(&format!("{REQUEST_SELECT} ORDER BY r.id"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Stores a certificate issued for `request` and resets its failure count, in one
    /// transaction: the provisioner never sees the certificate without the request
    /// pointing at it.
    pub async fn acme_issued(
        &self,
        request: i64,
        certificate: &NewCertificate,
    ) -> Result<Certificate, Error> {
        let names = name_text(&certificate.names)?;
        let mut tx = self.pool.begin().await?;
        let cert = sqlx::query_as::<_, Certificate>(&format!(
            "INSERT INTO certificates (names, chain_pem, key_pem, not_before, not_after, source,
                 acme_account_id) VALUES (?, ?, ?, ?, ?, 'acme', ?) RETURNING {CERT_COLUMNS}"
        ))
        .bind(names)
        .bind(&certificate.chain_pem)
        .bind(&certificate.key_pem)
        .bind(certificate.not_before)
        .bind(certificate.not_after)
        .bind(certificate.acme_account_id)
        .fetch_one(&mut *tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE acme_requests SET key_pem = ?, certificate_id = ?, last_error = NULL,
                 failures = 0, next_attempt_at = 0, updated_at = unixepoch() WHERE id = ?",
        )
        .bind(&certificate.key_pem)
        .bind(cert.id)
        .bind(request)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(Error::Invalid {
                field: "request",
                reason: format!("ACME request {request} does not exist"),
            });
        }
        tx.commit().await?;
        Ok(cert)
    }

    /// Records a failed attempt: the error, one more failure, and when to try again. The
    /// request's current certificate (if any) shows the same error.
    pub async fn acme_failed(
        &self,
        request: i64,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let cert: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE acme_requests SET last_error = ?, failures = failures + 1,
                 next_attempt_at = ?, updated_at = unixepoch() WHERE id = ?
             RETURNING certificate_id",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Some(id)) = cert {
            sqlx::query(
                "UPDATE certificates SET last_error = ?, updated_at = unixepoch() WHERE id = ?",
            )
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], not_after: i64) -> NewCertificate {
        NewCertificate {
            names: names.iter().map(|s| s.to_string()).collect(),
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
            not_before: 0,
            not_after,
            source: CertificateSource::Manual,
            acme_account_id: None,
        }
    }

    #[tokio::test]
    async fn certificates_are_stored_with_lower_case_names_and_listed_newest_first() {
        let s = Store::open_in_memory().await.unwrap();
        let before = s.change_counter().await.unwrap();
        let a = s
            .add_certificate(&cert(&["Mail.Example.org.", "mail.example.org"], 10))
            .await
            .unwrap();
        assert_eq!(a.names, "mail.example.org");
        let b = s.add_certificate(&cert(&["b.example"], 20)).await.unwrap();
        let all = s.certificates().await.unwrap();
        assert_eq!(all.iter().map(|c| c.id).collect::<Vec<_>>(), [b.id, a.id]);
        assert!(s.change_counter().await.unwrap() > before);
        assert!(!format!("{a:?}").contains("KEY"));
        assert!(s.add_certificate(&cert(&[], 1)).await.is_err());
    }

    #[tokio::test]
    async fn a_request_keeps_its_key_across_issues_and_counts_failures() {
        let s = Store::open_in_memory().await.unwrap();
        let acct = s
            .add_acme_account("https://acme.test/dir", "mailto:a@b", "{}")
            .await
            .unwrap();
        assert!(
            s.add_acme_account("https://acme.test/dir", "", "{}")
                .await
                .is_err()
        );
        let names = vec!["mail.example.org".to_string()];
        let r = s.upsert_acme_request(&names, acct.id).await.unwrap();
        assert_eq!(r.directory_url, "https://acme.test/dir");
        assert!(r.key_pem.is_none() && r.reuse_key);
        s.acme_failed(r.id, "connection refused", 500)
            .await
            .unwrap();
        let r = s.acme_request(r.id).await.unwrap().unwrap();
        assert_eq!(
            (r.failures, r.next_attempt_at, r.last_error.as_deref()),
            (1, 500, Some("connection refused"))
        );
        let mut new = cert(&["mail.example.org"], 99);
        new.key_pem = "K1".into();
        new.acme_account_id = Some(acct.id);
        let c = s.acme_issued(r.id, &new).await.unwrap();
        assert_eq!(c.source, "acme");
        let r = s.acme_request(r.id).await.unwrap().unwrap();
        assert_eq!(
            (r.failures, r.key_pem.as_deref(), r.certificate_id),
            (0, Some("K1"), Some(c.id))
        );
        assert!(r.last_error.is_none());
        // A later failure shows beside the certificate in use.
        s.acme_failed(r.id, "timeout", 900).await.unwrap();
        let c = s.certificate(c.id).await.unwrap().unwrap();
        assert_eq!(c.last_error.as_deref(), Some("timeout"));
        // Asking again for the same names reuses the request and makes it due now.
        let again = s.upsert_acme_request(&names, acct.id).await.unwrap();
        assert_eq!((again.id, again.next_attempt_at), (r.id, 0));
    }
}
