//! ACME (RFC 8555) with instant-acme: one account per directory URL, HTTP-01 challenges
//! answered by the port-80 listener from a shared map, a CSR made with rcgen (an ECDSA
//! P-256 key, reused across renewals so TLSA records stay valid), the certificate stored
//! in the database for the provisioner, and a renewal task driven by the injected clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::AppState;
use crate::error::AppError;

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

const DAY: i64 = 86_400;

/// The console's ACME settings.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// PEM file of the root CA(s) trusted for the ACME directory's HTTPS, for a private
    /// CA such as pebble (`acme_ca_file` in fugu.toml). Unset: the system's trust store.
    /// Verification is never switched off.
    pub ca_file: Option<PathBuf>,
    /// How often the renewal task looks for due certificates.
    pub check_interval: Duration,
    /// The first retry delay after a failed attempt; it doubles with every further
    /// failure, up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// HTTP-01 answers in flight, shared with the port-80 listener.
    pub challenges: Challenges,
}

impl Default for AcmeConfig {
    fn default() -> AcmeConfig {
        AcmeConfig {
            ca_file: None,
            check_interval: Duration::from_secs(3600),
            first_retry: Duration::from_secs(600),
            max_retry: Duration::from_secs(DAY as u64),
            challenges: Challenges::default(),
        }
    }
}

/// HTTP-01 key authorizations by token, and how many challenge requests were answered.
/// Clones share the same map.
#[derive(Debug, Clone, Default)]
pub struct Challenges {
    inner: Arc<Mutex<ChallengeState>>,
    /// One ACME conversation at a time: a request from the page and the renewal task
    /// must not order the same certificate twice.
    busy: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct ChallengeState {
    answers: HashMap<String, String>,
    served: u64,
}

impl Challenges {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChallengeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, token: &str, key_authorization: &str) {
        self.lock()
            .answers
            .insert(token.to_string(), key_authorization.to_string());
    }

    fn remove(&self, token: &str) {
        self.lock().answers.remove(token);
    }

    /// The key authorization for `token`, counting the request when there is one.
    pub(crate) fn answer(&self, token: &str) -> Option<String> {
        let mut s = self.lock();
        let a = s.answers.get(token).cloned();
        if a.is_some() {
            s.served += 1;
        }
        a
    }

    /// How many challenge requests the port-80 listener has answered.
    pub fn served(&self) -> u64 {
        self.lock().served
    }
}

/// Which ACME directory a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Directory {
    LetsEncrypt,
    LetsEncryptStaging,
    Custom(String),
}

impl Directory {
    /// From the form: `letsencrypt`, `letsencrypt-staging` or `custom` with its URL.
    pub fn parse(choice: &str, custom_url: &str) -> Result<Directory, AppError> {
        match choice {
            "letsencrypt" => Ok(Directory::LetsEncrypt),
            "letsencrypt-staging" => Ok(Directory::LetsEncryptStaging),
            "custom" => {
                let url = custom_url.trim();
                if !url.starts_with("https://") || url.len() <= "https://".len() {
                    return Err(AppError::Invalid {
                        field: "custom_url",
                        message: "an ACME directory URL starts with https://".to_string(),
                    });
                }
                url.parse::<axum::http::Uri>()
                    .map_err(|e| AppError::Invalid {
                        field: "custom_url",
                        message: format!("not a URL: {e}"),
                    })?;
                Ok(Directory::Custom(url.to_string()))
            }
            other => Err(AppError::Invalid {
                field: "directory",
                message: format!(
                    "{other:?} is not one of letsencrypt, letsencrypt-staging, custom"
                ),
            }),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Directory::LetsEncrypt => LETSENCRYPT,
            Directory::LetsEncryptStaging => LETSENCRYPT_STAGING,
            Directory::Custom(u) => u,
        }
    }
}

/// When a certificate should be renewed: once less than a third of its lifetime or 30
/// days remain, whichever comes sooner — but never in the first half of its life, so a
/// short-lived certificate (a few days) is not renewed the moment it is issued.
pub(crate) fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let window = (lifetime / 3).max(30 * DAY).min(lifetime / 2);
    not_after - window
}

/// The delay before retry number `failures` (1 for the first failure).
fn retry_delay(config: &AcmeConfig, failures: i64) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    config
        .first_retry
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(config.max_retry)
}

/// An error and its causes on one line: hyper's "client error (Connect)" says nothing
/// without the "connection refused" underneath.
fn chain_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !msg.contains(&s_text) {
            msg.push_str(": ");
            msg.push_str(&s_text);
        }
        source = s.source();
    }
    msg
}

/// instant-acme's HTTP client for a private CA: hyper-rustls whose root store holds
/// exactly the certificates of the configured CA file.
fn http_client(path: &Path) -> Result<Box<dyn HttpClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ACME CA file {}: {e}", path.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("ACME CA file {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ACME CA file {} holds no certificate",
            path.display()
        ));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    Ok(Box::new(client))
}

/// An account builder: the system's trust store, or only the configured CA file.
fn builder(ca_file: Option<&Path>) -> Result<instant_acme::AccountBuilder, String> {
    match ca_file {
        None => Account::builder().map_err(|e| chain_message(&e)),
        Some(path) => Ok(Account::builder_with_http(http_client(path)?)),
    }
}

/// The stored account for `directory_url`, registering one (agreeing to the terms of
/// service) if there is none yet.
pub(crate) async fn ensure_account(
    state: &AppState,
    directory_url: &str,
    contact: &str,
) -> Result<store::AcmeAccount, AppError> {
    if let Some(a) = state.store.acme_account(directory_url).await? {
        return Ok(a);
    }
    let contact = contact.trim();
    let contact_uri = match contact {
        "" => None,
        c if c.contains('@') && !c.contains(char::is_whitespace) => {
            Some(format!("mailto:{}", c.trim_start_matches("mailto:")))
        }
        _ => {
            return Err(AppError::Invalid {
                field: "contact",
                message: format!("{contact:?} is not an email address"),
            });
        }
    };
    let contacts: Vec<&str> = contact_uri.iter().map(String::as_str).collect();
    let failed = |m: String| AppError::Invalid {
        field: "directory",
        message: format!("cannot create an ACME account at {directory_url}: {m}"),
    };
    let (_, credentials) = builder(state.config.acme.ca_file.as_deref())
        .map_err(failed)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory_url.to_string(),
            None,
        )
        .await
        .map_err(|e| failed(chain_message(&e)))?;
    let text = serde_json::to_string(&credentials)
        .map_err(|e| AppError::Internal(format!("cannot serialise ACME credentials: {e}")))?;
    let account = state
        .store
        .add_acme_account(directory_url, contact_uri.as_deref().unwrap_or(""), &text)
        .await?;
    tracing::info!(directory = directory_url, "ACME account created");
    Ok(account)
}

/// The right to order: one order at a time, so that the renewal task never picks up a
/// request the page has just stored and is about to order itself.
pub(crate) struct Turn<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

/// Waits for the right to order.
pub(crate) async fn turn(state: &AppState) -> Turn<'_> {
    Turn {
        _held: state.config.acme.challenges.busy.lock().await,
    }
}

/// Orders a certificate for `request` now, storing it or the failure (with the next
/// retry time). Returns the new certificate, or the error as the operator should read it.
pub(crate) async fn attempt(
    state: &AppState,
    _turn: &Turn<'_>,
    request: &store::AcmeRequest,
) -> Result<store::Certificate, String> {
    let outcome = tokio::time::timeout(Duration::from_secs(180), order(state, request))
        .await
        .unwrap_or_else(|_| Err("the ACME server did not finish within 3 minutes".to_string()));
    match outcome {
        Ok(cert) => {
            tracing::info!(names = %cert.names, not_after = cert.not_after, "certificate issued");
            refresh_console_certs(state).await;
            audit(
                state,
                "certificate.issue",
                &cert.names,
                serde_json::json!({"id": cert.id, "not_after": cert.not_after,
                    "directory": request.directory_url}),
            )
            .await;
            Ok(cert)
        }
        Err(message) => {
            let failures = request.failures + 1;
            let next = state.config.clock.unix()
                + i64::try_from(retry_delay(&state.config.acme, failures).as_secs()).unwrap_or(DAY);
            tracing::warn!(names = %request.names, error = %message, failures, "ACME order failed");
            if let Err(e) = state.store.acme_failed(request.id, &message, next).await {
                tracing::error!(error = %e, "cannot record the ACME failure");
            }
            audit(
                state,
                "certificate.fail",
                &request.names,
                serde_json::json!({"error": message, "failures": failures, "next_attempt_at": next}),
            )
            .await;
            Err(message)
        }
    }
}

/// An audit entry by the ACME machinery itself (`acme`), for issuances and failures
/// whether the page or the renewal task started them.
async fn audit(state: &AppState, action: &str, object: &str, after: serde_json::Value) {
    let entry = store::NewAuditEntry {
        actor: "acme".to_string(),
        action: action.to_string(),
        object: object.to_string(),
        before: None,
        after: Some(after.to_string()),
        remote_addr: None,
    };
    if let Err(e) = state.store.add_audit(&entry).await {
        tracing::error!(error = %e, "cannot write the audit entry");
    }
}

async fn order(
    state: &AppState,
    request: &store::AcmeRequest,
) -> Result<store::Certificate, String> {
    let account_row = state
        .store
        .acme_accounts()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|a| a.id == request.acme_account_id)
        .ok_or("the ACME account of this request is gone")?;
    let credentials: AccountCredentials = serde_json::from_str(&account_row.credentials)
        .map_err(|e| format!("stored ACME credentials are unreadable: {e}"))?;
    let account = builder(state.config.acme.ca_file.as_deref())?
        .from_credentials(credentials)
        .await
        .map_err(|e| {
            format!(
                "ACME directory {}: {}",
                request.directory_url,
                chain_message(&e)
            )
        })?;

    let names: Vec<String> = request.name_list().iter().map(|s| s.to_string()).collect();
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order refused: {}", chain_message(&e)))?;

    let challenges = &state.config.acme.challenges;
    let mut tokens = Vec::new();
    let result = async {
        let mut refused = None;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| chain_message(&e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(format!(
                        "{}: authorization is {other:?}",
                        authz.identifier()
                    ));
                }
            }
            let who = authz.identifier().to_string();
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| format!("{who}: the ACME server offers no HTTP-01 challenge"))?;
            challenges.insert(&challenge.token, challenge.key_authorization().as_str());
            tokens.push(challenge.token.clone());
            if let Err(e) = challenge.set_ready().await {
                refused = Some(format!("{who}: {}", chain_message(&e)));
                break;
            }
        }
        if let Some(refused) = refused {
            // A validation that fails at once (a refused connection) can finish before
            // the server answers the POST, whose reply then carries the challenge's error:
            // report it as a poll would have.
            return Err(challenge_errors(&mut order).await.unwrap_or(refused));
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await;
        match status {
            Ok(OrderStatus::Ready) => Ok(()),
            other => {
                let detail = challenge_errors(&mut order).await;
                Err(match (other, detail) {
                    (_, Some(d)) => d,
                    (Err(e), None) => chain_message(&e),
                    (Ok(s), None) => format!("the order ended {s:?}"),
                })
            }
        }
    }
    .await;
    for t in &tokens {
        challenges.remove(t);
    }
    result?;

    let key = match (&request.key_pem, request.reuse_key) {
        (Some(pem), true) => rcgen::KeyPair::from_pem(pem)
            .map_err(|e| format!("the stored certificate key is unreadable: {e}"))?,
        _ => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?,
    };
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|e| format!("cannot build the CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot sign the CSR: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize refused: {}", chain_message(&e)))?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
        .await
        .map_err(|e| format!("no certificate: {}", chain_message(&e)))?;
    let info = crate::certificates::chain_info(&chain).map_err(|e| e.message())?;
    state
        .store
        .acme_issued(
            request.id,
            &store::NewCertificate {
                names,
                chain_pem: chain,
                key_pem: key.serialize_pem(),
                not_before: info.not_before,
                not_after: info.not_after,
                source: store::CertificateSource::Acme,
                acme_account_id: Some(request.acme_account_id),
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// What the ACME server said about each failed challenge, e.g. "mail.example.org:
/// HTTP-01 failed: … connection refused".
async fn challenge_errors(order: &mut instant_acme::Order) -> Option<String> {
    let mut out = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        let who = state.identifier().to_string();
        for c in &state.challenges {
            if let (ChallengeType::Http01, Some(p)) = (&c.r#type, &c.error) {
                out.push(format!(
                    "{who}: HTTP-01 challenge failed: {}",
                    p.detail.as_deref().unwrap_or("no detail given")
                ));
            }
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// Makes the console serve the newest stored certificates (by SNI).
pub(crate) async fn refresh_console_certs(state: &AppState) {
    if let Err(e) = state
        .certs
        .refresh(&state.store, state.config.clock.unix())
        .await
    {
        tracing::error!(error = %e, "cannot reload certificates for the console");
    }
}

/// One pass of the renewal task: every request whose certificate is missing or due, and
/// whose retry time has come, gets an attempt.
pub(crate) async fn renew_due(state: &AppState) {
    let requests = match state.store.acme_requests().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot list ACME requests");
            return;
        }
    };
    for r in requests {
        if !is_due(state, &r).await {
            continue;
        }
        // A request from the page may have been served meanwhile: look again under the lock.
        let turn = turn(state).await;
        let Ok(Some(r)) = state.store.acme_request(r.id).await else {
            continue;
        };
        if is_due(state, &r).await {
            tracing::info!(names = %r.names, "ordering certificate (renewal or retry)");
            let _ = attempt(state, &turn, &r).await;
        }
    }
}

/// Whether `r` needs an order now: its retry time has come and its certificate is
/// missing or inside the renewal window.
async fn is_due(state: &AppState, r: &store::AcmeRequest) -> bool {
    let now = state.config.clock.unix();
    if r.next_attempt_at > now {
        return false;
    }
    let current = match r.certificate_id {
        Some(id) => state.store.certificate(id).await.ok().flatten(),
        None => None,
    };
    current
        .as_ref()
        .is_none_or(|c| now >= renew_at(c.not_before, c.not_after))
}

/// Runs [`renew_due`] every `check_interval` until `stop` fires.
pub(crate) async fn renewal_task(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        // Also drops certificates that expired from what the console serves.
        refresh_console_certs(&state).await;
        renew_due(&state).await;
        tokio::select! {
            _ = tokio::time::sleep(state.config.acme.check_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_window_is_a_third_or_thirty_days_whichever_is_sooner() {
        // Let's Encrypt's 90 days: both rules say 30 days before expiry.
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        // A year: a third (121⅔ days) comes before 30 days.
        assert_eq!(renew_at(0, 366 * DAY), 244 * DAY);
        // 45 days: 30 days remaining would come after only a third of the life; the
        // half-life cap applies.
        assert_eq!(renew_at(0, 45 * DAY), 45 * DAY / 2);
        // Six days: never in the first half of the life.
        assert_eq!(renew_at(0, 6 * DAY), 3 * DAY);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let c = AcmeConfig::default();
        assert_eq!(retry_delay(&c, 1), Duration::from_secs(600));
        assert_eq!(retry_delay(&c, 2), Duration::from_secs(1200));
        assert_eq!(retry_delay(&c, 4), Duration::from_secs(4800));
        assert_eq!(retry_delay(&c, 50), Duration::from_secs(86_400));
    }

    #[test]
    fn directories_are_chosen_by_name_or_custom_https_url() {
        assert_eq!(
            Directory::parse("letsencrypt-staging", "").unwrap().url(),
            LETSENCRYPT_STAGING
        );
        assert_eq!(
            Directory::parse("custom", " https://127.0.0.1:14000/dir ")
                .unwrap()
                .url(),
            "https://127.0.0.1:14000/dir"
        );
        assert!(Directory::parse("custom", "http://insecure/dir").is_err());
        assert!(Directory::parse("zerossl", "").is_err());
    }
}
