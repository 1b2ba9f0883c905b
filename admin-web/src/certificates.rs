//! The certificates page and API: the stored certificates (names, issuer, expiry, source,
//! last error), ACME requests, and manual upload of a chain and key with validation
//! (the key matches the leaf, the chain runs leaf → intermediates, the names cover the
//! host name, nothing is expired).

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::acme::{self, Directory};
use crate::auth::{self, Console};
use crate::error::AppError;
use crate::ops::Actor;
use crate::pages::{Errors, Nav, nav, page_errors, rerender};

/// What the console shows about a certificate chain, read from its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainInfo {
    /// DNS names of the leaf's subjectAltName, lower-case, in certificate order.
    pub names: Vec<String>,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf's SubjectPublicKeyInfo (DER): equal across renewals with a reused key.
    pub spki: Vec<u8>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> AppError {
    AppError::Invalid {
        field,
        message: message.into(),
    }
}

fn chain_ders(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, AppError> {
    let ders = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("chain", format!("the chain is not valid PEM: {e}")))?;
    if ders.is_empty() {
        return Err(invalid(
            "chain",
            "no certificate found: paste the PEM blocks (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(ders)
}

/// Reads the leaf (the first certificate) of a PEM chain.
pub(crate) fn chain_info(chain_pem: &str) -> Result<ChainInfo, AppError> {
    let ders = chain_ders(chain_pem)?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).map_err(|e| {
        invalid(
            "chain",
            format!("the first certificate cannot be read: {e}"),
        )
    })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(ChainInfo {
        names,
        issuer: leaf.issuer().to_string(),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        spki: leaf.public_key().raw.to_vec(),
    })
}

/// Whether a certificate name (possibly `*.example.org`) covers `host`.
pub(crate) fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // RFC 6125 §6.4.3: the wildcard stands for exactly one left-most label.
        Some(base) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
        None => pattern == host,
    }
}

/// Checks an uploaded chain and key; returns what to store. `now` is Unix seconds.
pub(crate) fn validate_upload(
    chain_pem: &str,
    key_pem: &str,
    hostname: &str,
    now: i64,
) -> Result<ChainInfo, AppError> {
    let ders = chain_ders(chain_pem)?;
    let mut parsed = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            invalid(
                "chain",
                format!("certificate {} of the chain cannot be read: {e}", i + 1),
            )
        })?;
        parsed.push(c);
    }
    // Leaf first, then each certificate's issuer: what TLS clients expect (RFC 8446 §4.4.2).
    if parsed[0].is_ca() && parsed.len() > 1 {
        return Err(invalid(
            "chain",
            "wrong order: the first certificate is a CA certificate; put the server (leaf) certificate first, then the intermediates",
        ));
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(invalid(
                "chain",
                format!(
                    "wrong order: certificate {} was not issued by certificate {} ({} ≠ {}); the chain must run leaf → intermediates",
                    i + 1,
                    i + 2,
                    pair[0].issuer(),
                    pair[1].subject()
                ),
            ));
        }
    }
    let info = chain_info(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        invalid(
            "key",
            format!("the key is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        invalid(
            "key",
            format!("unsupported key (RSA of 2048 bits or more, ECDSA P-256/P-384, Ed25519): {e}"),
        )
    })?;
    let key_spki = signing
        .public_key()
        .ok_or_else(|| invalid("key", "cannot derive the public key of this key"))?;
    if key_spki.as_ref() != info.spki.as_slice() {
        return Err(invalid(
            "key",
            "the key does not match the certificate: its public key differs from the leaf's",
        ));
    }
    if info.not_after <= now {
        return Err(invalid(
            "chain",
            format!(
                "the certificate expired on {}",
                crate::pages::when(info.not_after)
            ),
        ));
    }
    if info.not_before > now {
        return Err(invalid(
            "chain",
            format!(
                "the certificate is not valid before {}",
                crate::pages::when(info.not_before)
            ),
        ));
    }
    if !info.names.iter().any(|n| covers(n, hostname)) {
        return Err(invalid(
            "chain",
            format!(
                "the certificate's names ({}) do not cover the host name {hostname}",
                if info.names.is_empty() {
                    "none".to_string()
                } else {
                    info.names.join(", ")
                }
            ),
        ));
    }
    Ok(info)
}

// ---- routes ---------------------------------------------------------------------------

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/certificates", get(page))
        .route("/certificates/request", post(request_form))
        .route("/certificates/upload", post(upload_form))
}

pub(crate) fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/certificates", get(api_list))
        .route("/api/v1/certificates/request", post(api_request))
        .route("/api/v1/certificates/upload", post(api_upload))
}

fn require_superadmin(actor: &Actor) -> Result<(), AppError> {
    if actor.is_superadmin() {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only superadmins manage certificates".to_string(),
        ))
    }
}

/// One row of the list, as the page and the API show it (never the key).
pub(crate) struct CertRow {
    pub id: i64,
    pub names: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub source: String,
    pub last_error: Option<String>,
    pub renew_at: Option<i64>,
}

pub(crate) struct RequestRow {
    pub id: i64,
    pub names: String,
    pub directory_url: String,
    pub last_error: Option<String>,
    pub failures: i64,
    pub next_attempt_at: i64,
    pub certificate_id: Option<i64>,
}

async fn rows(state: &AppState) -> Result<(Vec<CertRow>, Vec<RequestRow>), AppError> {
    let certs = state.store.certificates().await?;
    let requests = state.store.acme_requests().await?;
    let cert_rows = certs
        .into_iter()
        .map(|c| {
            let managed = requests.iter().any(|r| r.certificate_id == Some(c.id));
            CertRow {
                id: c.id,
                issuer: chain_info(&c.chain_pem)
                    .map(|i| i.issuer)
                    .unwrap_or_else(|_| "unreadable".to_string()),
                renew_at: managed.then(|| acme::renew_at(c.not_before, c.not_after)),
                names: c.names,
                not_before: c.not_before,
                not_after: c.not_after,
                source: c.source,
                last_error: c.last_error,
            }
        })
        .collect();
    let req_rows = requests
        .into_iter()
        .map(|r| RequestRow {
            id: r.id,
            names: r.names,
            directory_url: r.directory_url,
            last_error: r.last_error,
            failures: r.failures,
            next_attempt_at: r.next_attempt_at,
            certificate_id: r.certificate_id,
        })
        .collect();
    Ok((cert_rows, req_rows))
}

/// Names the operator may add beside the host name: `mta-sts.` and `autoconfig.` of every
/// domain whose policy publishes them (the DNS records page enables or disables each).
async fn optional_names(state: &AppState) -> Result<Vec<String>, AppError> {
    let mut out = Vec::new();
    for d in state.store.list_domains().await? {
        let policy = state
            .store
            .domain_policy(&store::DomainName::parse(&d.name)?)
            .await?;
        if policy.mta_sts_enabled {
            out.push(format!("mta-sts.{}", d.name));
        }
        if policy.autoconfig_enabled {
            out.push(format!("autoconfig.{}", d.name));
        }
    }
    Ok(out)
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/certificates.html")]
struct CertificatesPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    hostname: String,
    certs: Vec<CertRow>,
    requests: Vec<RequestRow>,
    optional: Vec<String>,
    chosen: Vec<String>,
    directory: String,
    custom_url: String,
    contact: String,
    errors: Errors,
}

#[derive(Deserialize, Default)]
struct RequestForm {
    #[serde(default)]
    directory: String,
    #[serde(default)]
    custom_url: String,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    agree_tos: String,
    /// Extra names, one per checked box (a form may repeat the field).
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize, Default)]
struct UploadForm {
    #[serde(default)]
    chain: String,
    #[serde(default)]
    key: String,
}

async fn render(
    state: &AppState,
    c: &Console,
    form: RequestForm,
    errors: Errors,
) -> Result<Response, AppError> {
    let (certs, requests) = rows(state).await?;
    let status = page_errors(&errors);
    let view = CertificatesPage {
        title: "Certificates",
        nav: nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        hostname: state.config.mail_hostname.clone(),
        certs,
        requests,
        optional: optional_names(state).await?,
        chosen: form.names,
        directory: if form.directory.is_empty() {
            "letsencrypt".to_string()
        } else {
            form.directory
        },
        custom_url: form.custom_url,
        contact: form.contact,
        errors,
    };
    Ok(rerender(view, &status))
}

async fn page(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    require_superadmin(&c.actor)?;
    render(&state, &c, RequestForm::default(), Errors::default()).await
}

/// The parts of a request both the form and the API take.
struct RequestInput<'a> {
    directory: &'a str,
    custom_url: &'a str,
    contact: &'a str,
    agree_tos: bool,
    names: &'a [String],
}

async fn do_request(
    state: &AppState,
    actor: &Actor,
    input: RequestInput<'_>,
) -> Result<store::Certificate, AppError> {
    require_superadmin(actor)?;
    let directory = Directory::parse(input.directory, input.custom_url)?;
    if !input.agree_tos {
        return Err(invalid(
            "agree_tos",
            "you must agree to the ACME directory's terms of service",
        ));
    }
    let allowed = optional_names(state).await?;
    let mut names = vec![state.config.mail_hostname.clone()];
    for n in input.names {
        let n = n.trim().to_ascii_lowercase();
        if n.is_empty() {
            continue;
        }
        if !allowed.contains(&n) {
            return Err(invalid(
                "names",
                format!("{n} is not an mta-sts or autoconfig name of a domain here"),
            ));
        }
        names.push(n);
    }
    let account = acme::ensure_account(state, directory.url(), input.contact.trim()).await?;
    let turn = acme::turn(state).await;
    let request = state.store.upsert_acme_request(&names, account.id).await?;
    actor
        .audit(
            state,
            "certificate.request",
            &request.names,
            None,
            Some(json!({"names": request.names, "directory": request.directory_url})),
        )
        .await?;
    acme::attempt(state, &turn, &request)
        .await
        .map_err(|message| invalid("request", message))
}

async fn request_form(
    State(state): State<AppState>,
    c: Console,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    // serde_urlencoded cannot collect a repeated field into a Vec; read pairs by hand.
    let mut f = RequestForm::default();
    for (k, v) in form_pairs(&body) {
        match k.as_str() {
            "directory" => f.directory = v,
            "custom_url" => f.custom_url = v,
            "contact" => f.contact = v,
            "agree_tos" => f.agree_tos = v,
            "names" => f.names.push(v),
            _ => {}
        }
    }
    let input = RequestInput {
        directory: &f.directory,
        custom_url: &f.custom_url,
        contact: &f.contact,
        agree_tos: !f.agree_tos.is_empty(),
        names: &f.names,
    };
    match do_request(&state, &c.actor, input).await {
        Ok(cert) => {
            auth::set_flash(
                &c.session,
                format!(
                    "Certificate issued for {}, valid until {}.",
                    cert.names,
                    crate::pages::when(cert.not_after)
                ),
            )
            .await?;
            Ok(axum::response::Redirect::to("/certificates").into_response())
        }
        Err(e) => render(&state, &c, f, Errors::from_error(e)?).await,
    }
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &[u8]) -> String {
        let hex = |b: u8| char::from(b).to_digit(16);
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|b| *b == b'=') {
            Some(at) => (decode(&p[..at]), decode(&p[at + 1..])),
            None => (decode(p), String::new()),
        })
        .collect()
}

async fn do_upload(
    state: &AppState,
    actor: &Actor,
    chain: &str,
    key: &str,
) -> Result<store::Certificate, AppError> {
    require_superadmin(actor)?;
    let info = validate_upload(
        chain,
        key,
        &state.config.mail_hostname,
        state.config.clock.unix(),
    )?;
    let cert = state
        .store
        .add_certificate(&store::NewCertificate {
            names: info.names.clone(),
            chain_pem: chain.trim().to_string() + "\n",
            key_pem: key.trim().to_string() + "\n",
            not_before: info.not_before,
            not_after: info.not_after,
            source: store::CertificateSource::Manual,
            acme_account_id: None,
        })
        .await?;
    acme::refresh_console_certs(state).await;
    actor
        .audit(
            state,
            "certificate.upload",
            &cert.names,
            None,
            Some(json!({"names": cert.names, "issuer": info.issuer, "not_after": cert.not_after})),
        )
        .await?;
    Ok(cert)
}

async fn upload_form(
    State(state): State<AppState>,
    c: Console,
    Form(f): Form<UploadForm>,
) -> Result<Response, AppError> {
    match do_upload(&state, &c.actor, &f.chain, &f.key).await {
        Ok(cert) => {
            auth::set_flash(
                &c.session,
                format!(
                    "Certificate for {} uploaded, valid until {}.",
                    cert.names,
                    crate::pages::when(cert.not_after)
                ),
            )
            .await?;
            Ok(axum::response::Redirect::to("/certificates").into_response())
        }
        Err(e) => render(&state, &c, RequestForm::default(), Errors::from_error(e)?).await,
    }
}

// ---- JSON API -------------------------------------------------------------------------

fn cert_json(c: &CertRow) -> Value {
    json!({
        "id": c.id, "names": c.names.split_whitespace().collect::<Vec<_>>(), "issuer": c.issuer,
        "not_before": c.not_before, "not_after": c.not_after, "source": c.source,
        "last_error": c.last_error, "renew_at": c.renew_at,
    })
}

fn stored_json(c: &store::Certificate) -> Value {
    json!({
        "id": c.id, "names": c.name_list(),
        "issuer": chain_info(&c.chain_pem).map(|i| i.issuer).unwrap_or_default(),
        "not_before": c.not_before, "not_after": c.not_after, "source": c.source,
        "last_error": c.last_error,
    })
}

async fn api_list(
    State(state): State<AppState>,
    c: crate::api::ApiCaller,
) -> Result<Response, crate::api::ApiError> {
    require_superadmin(&c.actor)?;
    let (certs, requests) = rows(&state).await?;
    Ok(Json(json!({
        "certificates": certs.iter().map(cert_json).collect::<Vec<_>>(),
        "acme_requests": requests.iter().map(|r| json!({
            "id": r.id, "names": r.names.split_whitespace().collect::<Vec<_>>(),
            "directory": r.directory_url, "certificate_id": r.certificate_id,
            "last_error": r.last_error, "failures": r.failures,
            "next_attempt_at": r.next_attempt_at,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiRequest {
    directory: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    agree_tos: bool,
    #[serde(default)]
    names: Vec<String>,
}

async fn api_request(
    State(state): State<AppState>,
    c: crate::api::ApiCaller,
    body: Result<Json<ApiRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, crate::api::ApiError> {
    c.require_write()?;
    let Json(r) = body.map_err(crate::api::bad_json)?;
    let cert = do_request(
        &state,
        &c.actor,
        RequestInput {
            directory: &r.directory,
            custom_url: &r.url,
            contact: &r.contact,
            agree_tos: r.agree_tos,
            names: &r.names,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored_json(&cert))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiUpload {
    chain: String,
    key: String,
}

async fn api_upload(
    State(state): State<AppState>,
    c: crate::api::ApiCaller,
    body: Result<Json<ApiUpload>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, crate::api::ApiError> {
    c.require_write()?;
    let Json(u) = body.map_err(crate::api::bad_json)?;
    let cert = do_upload(&state, &c.actor, &u.chain, &u.key).await?;
    Ok((StatusCode::CREATED, Json(stored_json(&cert))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(covers("*.example.org", "mail.example.org"));
        assert!(!covers("*.example.org", "a.mail.example.org"));
        assert!(!covers("*.example.org", "example.org"));
        assert!(covers("mail.example.org", "mail.example.org"));
    }

    #[test]
    fn repeated_form_fields_are_all_kept_and_decoded() {
        assert_eq!(
            form_pairs(b"names=mta-sts.a.org&names=autoconfig.a.org&contact=a%40b.org+x"),
            [
                ("names".to_string(), "mta-sts.a.org".to_string()),
                ("names".to_string(), "autoconfig.a.org".to_string()),
                ("contact".to_string(), "a@b.org x".to_string()),
            ]
        );
    }
}
