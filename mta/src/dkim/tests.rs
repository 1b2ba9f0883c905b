//! The signer against mail-auth's own verifier, with the committed test keys in
//! `mta/tests/data/dkim/` (RSA-2048, Ed25519 and a refused RSA-1024).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use super::*;
use crate::table::parse_file_table;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dkim")
        .join(name)
}

fn pubkey(name: &str) -> String {
    std::fs::read_to_string(data(name))
        .unwrap()
        .trim()
        .to_owned()
}

/// A key table with one line, as the provisioner writes it, opened as `<dkimkeys>`.
fn keys(line: &str) -> (Tables, TableRef) {
    let mut tables = Tables::new();
    tables.insert(
        "dkimkeys",
        std::sync::Arc::new(parse_file_table(&format!("{line}\n")).unwrap()),
    );
    (tables, TableRef::Named("dkimkeys".into()))
}

fn both_keys() -> (Tables, TableRef) {
    keys(&format!(
        "example.org e2026:ed25519-sha256:{},s2026:rsa-sha256:{}",
        data("ed25519.key").display(),
        data("rsa2048.key").display()
    ))
}

const MESSAGE: &str = concat!(
    "Received: from client (localhost [127.0.0.1])\r\n",
    "From: \"Alice (the sender)\" <alice@Example.ORG>\r\n",
    "To: bob@example.net,\r\n",
    "  carol@example.net\r\n",
    "Subject: Quarterly  numbers\r\n",
    "Date: Fri, 20 Nov 2026 10:00:00 +0000\r\n",
    "Message-ID: <1@example.org>\r\n",
    "List-Id: <numbers.example.org>\r\n",
    "X-Mailer: test\r\n",
    "\r\n",
    "Numbers attached.  \r\n",
    "\r\n",
    "\r\n",
);

#[derive(Default)]
struct TxtRecords(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtRecords {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// mail-auth's verdicts for `signed`, with the two test keys published for example.org.
async fn verify(signed: &[u8]) -> Vec<(String, DkimResult)> {
    let records = TxtRecords::default();
    let later = Instant::now() + Duration::from_secs(3600);
    let rsa = format!("v=DKIM1; k=rsa; p={}", pubkey("rsa2048.pub.b64"));
    let ed = format!("v=DKIM1; k=ed25519; p={}", pubkey("ed25519.pub.b64"));
    records.insert(
        "s2026._domainkey.example.org.".into(),
        DomainKey::parse(rsa.as_bytes()).unwrap().into(),
        later,
    );
    records.insert(
        "e2026._domainkey.example.org.".into(),
        DomainKey::parse(ed.as_bytes()).unwrap().into(),
        later,
    );
    // No DNS server is ever asked: every record is in the cache above.
    let resolver = MessageAuthenticator::new(
        ResolverConfig::from_parts(None, vec![], vec![]),
        ResolverOpts::default(),
    )
    .unwrap();
    let message = AuthenticatedMessage::parse(signed).unwrap();
    let out = resolver
        .verify_dkim(Parameters::new(&message).with_txt_cache(&records))
        .await;
    out.iter()
        .map(|o| {
            let s = o.signature().map(|s| s.s.clone()).unwrap_or_default();
            (s, o.result().clone())
        })
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(headers: &[u8], message: &str) -> Vec<u8> {
    let mut out = headers.to_vec();
    out.extend_from_slice(message.as_bytes());
    out
}

#[tokio::test]
async fn signs_with_rsa_and_ed25519_and_both_verify() {
    let (tables, table) = both_keys();
    let signer = DkimSigner::new();
    let headers = signer.sign(&tables, &table, MESSAGE.as_bytes(), now());
    let text = String::from_utf8(headers.clone()).unwrap();
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    assert!(text.contains("a=ed25519-sha256"), "{text}");
    assert!(text.contains("a=rsa-sha256"), "{text}");
    assert!(text.contains("c=relaxed/relaxed"), "{text}");
    assert!(text.contains("d=example.org"), "{text}");
    let verdicts = verify(&signed(&headers, MESSAGE)).await;
    assert_eq!(
        verdicts,
        vec![
            ("e2026".to_owned(), DkimResult::Pass),
            ("s2026".to_owned(), DkimResult::Pass)
        ]
    );
}

#[tokio::test]
async fn a_from_field_added_in_transit_breaks_the_signature() {
    let (tables, table) = both_keys();
    let headers = DkimSigner::new().sign(&tables, &table, MESSAGE.as_bytes(), now());
    // Over-signing: a second From above the original must not verify.
    let forged = signed(&headers, &format!("From: mallory@example.org\r\n{MESSAGE}"));
    for (selector, result) in verify(&forged).await {
        assert!(
            matches!(result, DkimResult::Fail(_)),
            "{selector}: {result:?}"
        );
    }
}

#[test]
fn h_tag_lists_present_fields_and_oversigns_from_to_subject() {
    let (tables, table) = keys(&format!(
        "example.org e2026:ed25519-sha256:{}",
        data("ed25519.key").display()
    ));
    let text = String::from_utf8(DkimSigner::new().sign(
        &tables,
        &table,
        MESSAGE.as_bytes(),
        1_790_000_000,
    ))
    .unwrap();
    let unfolded: String = text.replace("\r\n\t", "").replace("\r\n ", "");
    let h = unfolded
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .unwrap();
    let mut fields: Vec<String> = h
        .split(':')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "date",
            "from",
            "from",
            "list-id",
            "message-id",
            "subject",
            "subject",
            "to",
            "to"
        ]
    );
    assert!(unfolded.contains("t=1790000000;"), "{unfolded}");
}

#[test]
fn rsa_keys_under_2048_bits_are_refused_and_logged_once() {
    let (tables, table) = keys(&format!(
        "example.org s1:rsa-sha256:{}",
        data("rsa1024.key").display()
    ));
    let signer = DkimSigner::new();
    for _ in 0..3 {
        assert!(
            signer
                .sign(&tables, &table, MESSAGE.as_bytes(), now())
                .is_empty()
        );
    }
    assert_eq!(
        signer.logged(),
        [
            "dkim: example.org selector s1: RSA key is 1024 bits; 2048 or more is required; mail goes unsigned"
        ]
    );
}

#[test]
fn a_missing_key_leaves_the_mail_unsigned_with_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.key");
    let (tables, table) = keys(&format!("example.org s1:rsa-sha256:{}", path.display()));
    let signer = DkimSigner::new();
    assert!(
        signer
            .sign(&tables, &table, MESSAGE.as_bytes(), now())
            .is_empty()
    );
    assert!(
        signer
            .sign(&tables, &table, MESSAGE.as_bytes(), now())
            .is_empty()
    );
    assert_eq!(
        signer.logged(),
        [format!(
            "dkim: example.org selector s1: cannot read key file {}; mail goes unsigned",
            path.display()
        )]
    );
}

#[tokio::test]
async fn a_key_file_that_appears_later_is_loaded_then() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s2026.key");
    let (tables, table) = keys(&format!("example.org s2026:rsa-sha256:{}", path.display()));
    let signer = DkimSigner::new();
    assert!(
        signer
            .sign(&tables, &table, MESSAGE.as_bytes(), now())
            .is_empty()
    );
    std::fs::copy(data("rsa2048.key"), &path).unwrap();
    let headers = signer.sign(&tables, &table, MESSAGE.as_bytes(), now());
    assert_eq!(
        verify(&signed(&headers, MESSAGE)).await,
        [("s2026".to_owned(), DkimResult::Pass)]
    );
}

#[tokio::test]
async fn a_replaced_key_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s2026.key");
    std::fs::copy(data("rsa1024.key"), &path).unwrap();
    let (tables, table) = keys(&format!("example.org s2026:rsa-sha256:{}", path.display()));
    let signer = DkimSigner::new();
    assert!(
        signer
            .sign(&tables, &table, MESSAGE.as_bytes(), now())
            .is_empty()
    );
    std::fs::copy(data("rsa2048.key"), &path).unwrap();
    let headers = signer.sign(&tables, &table, MESSAGE.as_bytes(), now());
    assert_eq!(
        verify(&signed(&headers, MESSAGE)).await,
        [("s2026".to_owned(), DkimResult::Pass)]
    );
}

#[test]
fn other_domains_and_unparseable_from_fields_are_not_signed() {
    let (tables, table) = both_keys();
    let signer = DkimSigner::new();
    for message in [
        "From: someone@example.com\r\nSubject: x\r\n\r\nbody\r\n",
        "Subject: no from\r\n\r\nbody\r\n",
        "From: a@example.org, b@example.org\r\n\r\nbody\r\n",
        "From: a@example.org\r\nFrom: b@example.org\r\n\r\nbody\r\n",
        "From: undisclosed:;\r\n\r\nbody\r\n",
    ] {
        assert!(
            signer
                .sign(&tables, &table, message.as_bytes(), now())
                .is_empty(),
            "{message}"
        );
    }
    assert!(signer.logged().is_empty());
}

#[test]
fn from_domain_reads_display_names_comments_and_encoded_words() {
    for (field, domain) in [
        ("From: alice@example.org", "example.org"),
        ("From: \"Doe, John\" <john@Example.ORG>", "example.org"),
        (
            "From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>",
            "example.org",
        ),
        (
            "From: (comment) bob@sub.example.org (more)",
            "sub.example.org",
        ),
        ("From: Team: carol@example.org;", "example.org"),
        ("From:\r\n  dave@example.org", "example.org"),
        ("FROM: eve@example.org.", "example.org"),
    ] {
        let message = format!("{field}\r\nSubject: x\r\n\r\nbody\r\n");
        assert_eq!(
            from_domain(message.as_bytes()).as_deref(),
            Ok(domain),
            "{field}"
        );
    }
}

#[test]
fn key_table_values_parse_and_bad_entries_are_reported() {
    let (good, bad) =
        parse_selectors("s1:rsa-sha256:/k/s1.key, e1:ED25519-SHA256:/k/e1.key,x:dsa:/k,junk");
    assert_eq!(
        good,
        [
            Selector {
                selector: "s1".into(),
                algorithm: Algorithm::RsaSha256,
                path: "/k/s1.key".into()
            },
            Selector {
                selector: "e1".into(),
                algorithm: Algorithm::Ed25519Sha256,
                path: "/k/e1.key".into()
            }
        ]
    );
    assert_eq!(bad, ["x:dsa:/k", "junk"]);
}

#[test]
fn rsa_modulus_sizes_are_read_from_the_der() {
    let bits = |name: &str| {
        let pem = std::fs::read(data(name)).unwrap();
        let PrivateKeyDer::Pkcs8(k) = PrivateKeyDer::from_pem_slice(&pem).unwrap() else {
            panic!("not pkcs8")
        };
        rsa_bits_pkcs8(k.secret_pkcs8_der())
    };
    assert_eq!(bits("rsa2048.key"), Some(2048));
    assert_eq!(bits("rsa1024.key"), Some(1024));
    assert_eq!(bits("ed25519.key"), None);
}

/// Golden file under `mta/tests/golden/dkim/`, re-blessed with `BLESS=1`.
#[track_caller]
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/dkim")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create)", path.display()));
    assert_eq!(expected, actual, "golden file {} differs", path.display());
}

#[test]
fn the_signature_fields_render_as_in_the_golden_file() {
    // Ed25519 and RSA PKCS#1 v1.5 signatures are deterministic, so with a fixed t= the
    // whole output is.
    let (tables, table) = both_keys();
    let headers = DkimSigner::new().sign(&tables, &table, MESSAGE.as_bytes(), 1_795_255_200);
    golden(
        "signed.eml",
        &String::from_utf8(signed(&headers, MESSAGE)).unwrap(),
    );
}
