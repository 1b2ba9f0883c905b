//! DKIM keys in the console: generation (RSA-2048 with the `rsa` crate, because ring
//! cannot generate RSA keys; Ed25519 with ring), import of PEM keys as `opendkim-genkey`
//! and `openssl` write them, the DNS record each key needs, and the rotation flow
//! (pending → active once DNS publishes the record → retired → deleted).
//!
//! Private keys enter the database and never leave it through the console or the API:
//! every view and JSON body here is built from the selector, state and public key only.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{DkimAlgorithm, DkimKey, DkimState, DomainName, NewDkimKey};

use crate::AppState;
use crate::auth::{self, Console};
use crate::error::AppError;
use crate::ops::Actor;
use crate::pages::{Errors, Nav};

/// RFC 8301 §3.2: signers must use RSA keys of at least 1024 bits; 2048 is what every
/// large receiver expects today, and ring (the mta's verifier) refuses anything smaller.
pub(crate) const MIN_RSA_BITS: usize = 2048;
const RSA_BITS: usize = 2048;
/// A retired key stays published this long, so that mail signed just before the
/// rotation still verifies at receivers that queue or re-check it.
pub(crate) const RETIRED_GRACE_SECS: i64 = 7 * 86_400;

/// A freshly generated or imported key, ready to store.
pub(crate) struct KeyMaterial {
    pub algorithm: DkimAlgorithm,
    /// PKCS#8 PEM.
    pub private_pem: String,
    /// Base64 of the `p=` value: the DER SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1),
    /// the raw 32-byte key for Ed25519 (RFC 8463 §4).
    pub public_b64: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> AppError {
    AppError::Invalid {
        field,
        message: message.into(),
    }
}

pub(crate) fn generate(algorithm: DkimAlgorithm) -> Result<KeyMaterial, AppError> {
    match algorithm {
        DkimAlgorithm::RsaSha256 => {
            let mut rng = rsa::rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, RSA_BITS)
                .map_err(|e| AppError::Internal(format!("RSA key generation failed: {e}")))?;
            rsa_material(&key)
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let rng = ring::rand::SystemRandom::new();
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| AppError::Internal("Ed25519 key generation failed".to_string()))?;
            ed25519_material(doc.as_ref())
        }
    }
}

fn rsa_material(key: &rsa::RsaPrivateKey) -> Result<KeyMaterial, AppError> {
    let internal = |e: &dyn std::fmt::Display| AppError::Internal(format!("RSA key encoding: {e}"));
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| internal(&e))?
        .to_string();
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| internal(&e))?;
    Ok(KeyMaterial {
        algorithm: DkimAlgorithm::RsaSha256,
        private_pem,
        public_b64: B64.encode(spki.as_bytes()),
    })
}

/// The OID 1.3.101.112 (id-Ed25519, RFC 8410) as DER.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Stores Ed25519 keys as PKCS#8 v2 (with the public key), the form ring's strict parser
/// accepts; OpenSSL's v1 documents are rebuilt into it.
fn ed25519_material(pkcs8: &[u8]) -> Result<KeyMaterial, AppError> {
    let seed = ed25519_seed(pkcs8).ok_or_else(|| {
        invalid(
            "key",
            "this Ed25519 key is not a PKCS#8 document ring can read",
        )
    })?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|e| invalid("key", format!("this Ed25519 key is unusable: {e}")))?;
    let public = ring::signature::KeyPair::public_key(&pair).as_ref();
    // RFC 5958 OneAsymmetricKey v2: version 1, algorithm, privateKey, [1] publicKey.
    let mut der = vec![0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05];
    der.extend_from_slice(&ED25519_OID);
    der.extend_from_slice(&[0x04, 0x22, 0x04, 0x20]);
    der.extend_from_slice(seed);
    der.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    der.extend_from_slice(public);
    ring::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| AppError::Internal(format!("Ed25519 key encoding: {e}")))?;
    Ok(KeyMaterial {
        algorithm: DkimAlgorithm::Ed25519Sha256,
        private_pem: pem("PRIVATE KEY", &der),
        public_b64: B64.encode(public),
    })
}

/// The 32-byte seed of a PKCS#8 (v1 or v2) Ed25519 document.
fn ed25519_seed(der: &[u8]) -> Option<&[u8]> {
    let info = rsa::pkcs8::PrivateKeyInfo::try_from(der).ok()?;
    if info.algorithm.oid.as_bytes() != &ED25519_OID[2..] {
        return None;
    }
    // RFC 8410 §7: privateKey holds a CurvePrivateKey, itself an OCTET STRING.
    match info.private_key {
        [0x04, 0x20, seed @ ..] if seed.len() == 32 => Some(seed),
        _ => None,
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The first PEM block in `text`: its label and DER body.
fn parse_pem(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    Some((label.to_string(), B64.decode(body).ok()?))
}

/// Reads an existing private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, as opendkim-genkey
/// and older openssl write) or PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519).
pub(crate) fn import(text: &str) -> Result<KeyMaterial, AppError> {
    let (label, der) = parse_pem(text).ok_or_else(|| {
        invalid(
            "key",
            "paste a PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)",
        )
    })?;
    let rsa_key = match label.as_str() {
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .map_err(|e| invalid("key", format!("this PKCS#1 RSA key cannot be read: {e}")))?,
        "PRIVATE KEY" => {
            if ed25519_seed(&der).is_some() {
                return ed25519_material(&der);
            }
            rsa::RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| {
                invalid(
                    "key",
                    format!("this PKCS#8 key is neither RSA nor Ed25519, or is damaged: {e}"),
                )
            })?
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(invalid(
                "key",
                "this key is encrypted: decrypt it first (openssl pkey -in key.pem -out plain.pem)",
            ));
        }
        other => {
            return Err(invalid(
                "key",
                format!("a {other} block is not a DKIM private key (RSA or Ed25519 expected)"),
            ));
        }
    };
    let bits = rsa_key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(invalid(
            "key",
            format!(
                "this RSA key has {bits} bits; DKIM keys must have at least {MIN_RSA_BITS} \
                 (receivers and ring reject shorter ones): generate a new key instead"
            ),
        ));
    }
    rsa_key
        .validate()
        .map_err(|e| invalid("key", format!("this RSA key is inconsistent: {e}")))?;
    rsa_material(&rsa_key)
}

/// The TXT record value (RFC 6376 §3.6.1), unsplit.
pub(crate) fn record_value(algorithm: DkimAlgorithm, public_b64: &str) -> String {
    format!("v=DKIM1; k={}; p={public_b64}", algorithm.key_type())
}

/// RFC 1035 §3.3.14: one TXT character-string holds at most 255 bytes; longer values
/// are published as several strings that receivers concatenate (RFC 6376 §3.6.2.2).
pub(crate) fn split_txt(value: &str) -> Vec<String> {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

/// A date-named selector, `YYYYMMDD` plus `r` (RSA) or `e` (Ed25519), with a counter
/// when the day already has one.
pub(crate) fn selector_for(now: i64, algorithm: DkimAlgorithm, taken: &[String]) -> String {
    let day: String = crate::pages::when(now)
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    let suffix = match algorithm {
        DkimAlgorithm::RsaSha256 => 'r',
        DkimAlgorithm::Ed25519Sha256 => 'e',
    };
    let base = format!("{day}{suffix}");
    (1..)
        .map(|n| {
            if n == 1 {
                base.clone()
            } else {
                format!("{base}{n}")
            }
        })
        .find(|s| !taken.contains(s))
        .unwrap_or(base)
}

/// The owner name of a key's record.
pub(crate) fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

pub(crate) fn key_json(k: &DkimKey) -> Value {
    let algorithm = k.algorithm();
    json!({
        "selector": k.selector, "domain": k.domain, "algorithm": k.algorithm, "state": k.state,
        "record_name": record_name(&k.selector, &k.domain),
        "record_value": record_value(algorithm, &k.public_key),
        "record_strings": split_txt(&record_value(algorithm, &k.public_key)),
        "created_at": k.created_at, "activated_at": k.activated_at, "retired_at": k.retired_at,
    })
}

fn key_audit(k: &DkimKey) -> Value {
    json!({"selector": k.selector, "algorithm": k.algorithm, "state": k.state})
}

// ---- operations (shared by the page and the API) ----------------------------------------

fn domain_for(actor: &Actor, name: &str) -> Result<DomainName, AppError> {
    let domain = DomainName::parse(name)?;
    actor.check_domain(&domain)?;
    Ok(domain)
}

/// Lists a domain's keys, first deleting those retired longer than the grace period.
pub(crate) async fn list(
    state: &AppState,
    actor: &Actor,
    domain: &str,
) -> Result<Vec<DkimKey>, AppError> {
    let domain = domain_for(actor, domain)?;
    if state.store.domain(&domain).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "domain {domain} does not exist"
        )));
    }
    let purged = state
        .store
        .purge_retired_dkim_keys(auth::now(state) - RETIRED_GRACE_SECS)
        .await?;
    for k in &purged {
        state
            .store
            .add_audit(&store::NewAuditEntry {
                actor: "admin-web".to_string(),
                action: "dkim.purge".to_string(),
                object: record_name(&k.selector, &k.domain),
                before: Some(key_audit(k).to_string()),
                after: None,
                remote_addr: None,
            })
            .await?;
    }
    Ok(state.store.dkim_keys(&domain).await?)
}

async fn store_key(
    state: &AppState,
    actor: &Actor,
    domain: &DomainName,
    selector: Option<&str>,
    material: KeyMaterial,
    action: &str,
) -> Result<DkimKey, AppError> {
    let selector = match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => store::parse_selector(s)?,
        None => {
            let taken: Vec<String> = state
                .store
                .dkim_keys(domain)
                .await?
                .into_iter()
                .map(|k| k.selector)
                .collect();
            selector_for(auth::now(state), material.algorithm, &taken)
        }
    };
    let key = state
        .store
        .add_dkim_key(&NewDkimKey {
            domain: domain.clone(),
            selector,
            algorithm: material.algorithm,
            private_key_pem: material.private_pem,
            public_key_b64: material.public_b64,
        })
        .await?;
    actor
        .audit(
            state,
            action,
            &record_name(&key.selector, &key.domain),
            None,
            Some(key_audit(&key)),
        )
        .await?;
    Ok(key)
}

pub(crate) async fn generate_key(
    state: &AppState,
    actor: &Actor,
    domain: &str,
    algorithm: &str,
) -> Result<DkimKey, AppError> {
    let domain = domain_for(actor, domain)?;
    let algorithm = DkimAlgorithm::parse(algorithm)?;
    // RSA generation takes a noticeable fraction of a second: keep it off the reactor.
    let material = tokio::task::spawn_blocking(move || generate(algorithm))
        .await
        .map_err(|e| AppError::Internal(format!("key generation task: {e}")))??;
    store_key(state, actor, &domain, None, material, "dkim.generate").await
}

pub(crate) async fn import_key(
    state: &AppState,
    actor: &Actor,
    domain: &str,
    selector: &str,
    pem_text: &str,
) -> Result<DkimKey, AppError> {
    let domain = domain_for(actor, domain)?;
    let material = import(pem_text)?;
    store_key(
        state,
        actor,
        &domain,
        Some(selector),
        material,
        "dkim.import",
    )
    .await
}

/// Activates a pending key once live DNS publishes its record (or when `force`d),
/// retiring the previous active key of the same algorithm.
pub(crate) async fn activate_key(
    state: &AppState,
    actor: &Actor,
    domain: &str,
    selector: &str,
    force: bool,
) -> Result<(DkimKey, Option<DkimKey>), AppError> {
    let domain = domain_for(actor, domain)?;
    let key = state
        .store
        .dkim_key(&domain, selector)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{domain} has no key {selector}")))?;
    if key.state() == DkimState::Pending && !force {
        let name = record_name(&key.selector, &key.domain);
        let expected = record_value(key.algorithm(), &key.public_key);
        let check = state.checks.check_txt(&name, &expected).await;
        if !check.status.is_ok() {
            return Err(invalid(
                "activate",
                format!(
                    "DNS does not publish the record for {} yet ({}): publish TXT {name} \
                     \"{expected}\", wait for it to appear, or activate anyway",
                    key.selector,
                    check.status.as_str()
                ),
            ));
        }
    }
    let (active, retired) = state
        .store
        .activate_dkim_key(&domain, &key.selector)
        .await?;
    actor
        .audit(
            state,
            "dkim.activate",
            &record_name(&active.selector, &active.domain),
            Some(key_audit(&key)),
            Some(json!({"state": active.state, "forced": force,
                        "retired": retired.as_ref().map(|r| r.selector.clone())})),
        )
        .await?;
    Ok((active, retired))
}

pub(crate) async fn retire_key(
    state: &AppState,
    actor: &Actor,
    domain: &str,
    selector: &str,
) -> Result<DkimKey, AppError> {
    let domain = domain_for(actor, domain)?;
    let key = state.store.retire_dkim_key(&domain, selector).await?;
    actor
        .audit(
            state,
            "dkim.retire",
            &record_name(&key.selector, &key.domain),
            None,
            Some(key_audit(&key)),
        )
        .await?;
    Ok(key)
}

pub(crate) async fn delete_key(
    state: &AppState,
    actor: &Actor,
    domain: &str,
    selector: &str,
) -> Result<(), AppError> {
    let domain = domain_for(actor, domain)?;
    let before = state.store.dkim_key(&domain, selector).await?;
    state.store.delete_dkim_key(&domain, selector).await?;
    actor
        .audit(
            state,
            "dkim.delete",
            &record_name(&selector.to_ascii_lowercase(), domain.as_str()),
            before.as_ref().map(key_audit),
            None,
        )
        .await?;
    Ok(())
}

// ---- the page -----------------------------------------------------------------------------

pub(crate) struct KeyRow {
    pub selector: String,
    pub algorithm: String,
    pub state: String,
    pub record_name: String,
    /// The value as zone-file strings, each at most 255 bytes.
    pub record_zone: String,
    pub created: String,
    pub activated: String,
    pub retired: String,
    pub deletable_after: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/dkim.html")]
struct DkimPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    domain: String,
    keys: Vec<KeyRow>,
    form_selector: String,
    errors: Errors,
}

pub(crate) fn zone_strings(value: &str) -> String {
    split_txt(value)
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn render_page(
    state: &AppState,
    c: &Console,
    domain: &str,
    form_selector: String,
    errors: Errors,
) -> Result<Response, AppError> {
    let keys = list(state, &c.actor, domain).await?;
    let rows = keys
        .iter()
        .map(|k| KeyRow {
            selector: k.selector.clone(),
            algorithm: k.algorithm.clone(),
            state: k.state.clone(),
            record_name: record_name(&k.selector, &k.domain),
            record_zone: zone_strings(&record_value(k.algorithm(), &k.public_key)),
            created: crate::pages::when(k.created_at),
            activated: crate::pages::when(k.activated_at),
            retired: crate::pages::when(k.retired_at),
            deletable_after: crate::pages::when(k.retired_at.map(|t| t + RETIRED_GRACE_SECS)),
        })
        .collect();
    let status = crate::pages::page_errors(&errors);
    let view = DkimPage {
        title: "DKIM keys",
        nav: crate::pages::nav(c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        domain: DomainName::parse(domain)?.to_string(),
        keys: rows,
        form_selector,
        errors,
    };
    Ok(crate::pages::rerender(view, &status))
}

fn page_path(domain: &str) -> String {
    format!("/domains/{domain}/dkim")
}

pub(crate) async fn page(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
) -> Result<Response, AppError> {
    render_page(&state, &c, &domain, String::new(), Errors::default()).await
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct GenerateForm {
    #[serde(default)]
    pub algorithm: String,
}

pub(crate) async fn page_generate(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
    Form(f): Form<GenerateForm>,
) -> Result<Response, AppError> {
    match generate_key(&state, &c.actor, &domain, &f.algorithm).await {
        Ok(k) => {
            crate::pages::done(
                &c.session,
                format!(
                    "New {} key {}: publish its TXT record, then activate it.",
                    k.algorithm, k.selector
                ),
                &page_path(&k.domain),
            )
            .await
        }
        Err(e) => render_page(&state, &c, &domain, String::new(), Errors::from_error(e)?).await,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ImportForm {
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub key: String,
}

pub(crate) async fn page_import(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
    Form(f): Form<ImportForm>,
) -> Result<Response, AppError> {
    match import_key(&state, &c.actor, &domain, &f.selector, &f.key).await {
        Ok(k) => {
            crate::pages::done(
                &c.session,
                format!("Imported {} key {}.", k.algorithm, k.selector),
                &page_path(&k.domain),
            )
            .await
        }
        // The pasted key is never echoed back into the form.
        Err(e) => render_page(&state, &c, &domain, f.selector, Errors::from_error(e)?).await,
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActivateForm {
    #[serde(default)]
    pub force: Option<String>,
}

pub(crate) async fn page_activate(
    State(state): State<AppState>,
    c: Console,
    Path((domain, selector)): Path<(String, String)>,
    Form(f): Form<ActivateForm>,
) -> Result<Response, AppError> {
    let force = f.force.is_some_and(|v| !v.is_empty());
    match activate_key(&state, &c.actor, &domain, &selector, force).await {
        Ok((k, retired)) => {
            let also = retired
                .map(|r| format!("; {} is retired", r.selector))
                .unwrap_or_default();
            crate::pages::done(
                &c.session,
                format!("{} is now active{also}.", k.selector),
                &page_path(&k.domain),
            )
            .await
        }
        Err(e) => render_page(&state, &c, &domain, String::new(), Errors::from_error(e)?).await,
    }
}

pub(crate) async fn page_retire(
    State(state): State<AppState>,
    c: Console,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let k = retire_key(&state, &c.actor, &domain, &selector).await?;
    crate::pages::done(
        &c.session,
        format!(
            "{} is retired; its record can be removed after {}.",
            k.selector,
            crate::pages::when(k.retired_at.map(|t| t + RETIRED_GRACE_SECS))
        ),
        &page_path(&k.domain),
    )
    .await
}

pub(crate) async fn page_delete(
    State(state): State<AppState>,
    c: Console,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<Response, AppError> {
    match delete_key(&state, &c.actor, &domain, &selector).await {
        Ok(()) => {
            crate::pages::done(
                &c.session,
                format!("Deleted {selector}: remove its TXT record from DNS."),
                &page_path(&domain),
            )
            .await
        }
        Err(e) => render_page(&state, &c, &domain, String::new(), Errors::from_error(e)?).await,
    }
}

// ---- the API (routes and callers live in api.rs) ------------------------------------------

pub(crate) fn keys_json(keys: &[DkimKey]) -> Value {
    Value::Array(keys.iter().map(key_json).collect())
}

pub(crate) fn activated_json(active: &DkimKey, retired: Option<&DkimKey>) -> Value {
    json!({"key": key_json(active), "retired": retired.map(key_json)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_named_by_date_and_algorithm_and_unique() {
        let day = 1_795_737_600; // 2026-11-27 00:00 UTC
        assert_eq!(
            selector_for(day, DkimAlgorithm::RsaSha256, &[]),
            "20261127r"
        );
        assert_eq!(
            selector_for(day, DkimAlgorithm::Ed25519Sha256, &["20261127r".into()]),
            "20261127e"
        );
        assert_eq!(
            selector_for(
                day,
                DkimAlgorithm::RsaSha256,
                &["20261127r".into(), "20261127r2".into()]
            ),
            "20261127r3"
        );
    }

    #[test]
    fn long_txt_values_are_split_into_255_byte_strings() {
        let key = generate(DkimAlgorithm::RsaSha256).unwrap();
        let value = record_value(DkimAlgorithm::RsaSha256, &key.public_b64);
        let parts = split_txt(&value);
        assert!(parts.len() >= 2, "an RSA-2048 record needs two strings");
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts[0].len(), 255);
        assert_eq!(parts.concat(), value);
    }

    #[test]
    fn generated_ed25519_key_signs_and_matches_its_published_key() {
        let key = generate(DkimAlgorithm::Ed25519Sha256).unwrap();
        let (_, der) = parse_pem(&key.private_pem).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap();
        let sig = pair.sign(b"hello");
        let public = B64.decode(&key.public_b64).unwrap();
        assert_eq!(public.len(), 32);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(b"hello", sig.as_ref())
            .unwrap();
    }

    #[test]
    fn imports_pkcs1_rsa_as_pkcs8_with_the_same_public_key() {
        let generated = generate(DkimAlgorithm::RsaSha256).unwrap();
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&generated.private_pem).unwrap();
        let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&key, LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let imported = import(&pkcs1).unwrap();
        assert!(
            imported
                .private_pem
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(imported.public_b64, generated.public_b64);
    }

    #[test]
    fn refuses_rsa_keys_under_2048_bits() {
        let mut rng = rsa::rand_core::OsRng;
        let small = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        let err = import(&pem).err().unwrap();
        assert!(err.message().contains("1024 bits"), "{}", err.message());
        assert!(err.message().contains("at least 2048"), "{}", err.message());
    }

    #[test]
    fn refuses_what_is_not_a_private_key() {
        assert!(import("hello").is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            import(cert)
                .err()
                .unwrap()
                .message()
                .contains("CERTIFICATE")
        );
    }
}
