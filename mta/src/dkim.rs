//! DKIM signing of outbound mail (RFC 6376) with mail-auth: the fugu extension
//! `action … relay … dkim-sign <table>`.
//!
//! The table maps a domain to its active selectors, `selector:algorithm:path[,…]`
//! (`rsa-sha256` or `ed25519-sha256`, PKCS#8 PEM key files written by the provisioner).
//! The signer picks the selectors of the RFC 5322 From: domain and returns the
//! `DKIM-Signature:` fields to prepend, one per selector. It never refuses a message:
//! no From, several From addresses, no table entry or an unusable key all mean "send
//! unsigned", with the key problems logged once per key file.
//!
//! It does not verify signatures, publish DNS records or generate keys.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderStream, HeaderWriter, Writable, Writer};
use mail_auth::dkim::{Canonicalization, Signature};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::config::TableRef;
use crate::expand;
use crate::table::{Service, Tables};

/// Fields signed when present (RFC 6376 §5.4.1 recommends these), besides `List-*`.
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Fields listed once more than present, so that a copy added in transit breaks the
/// signature (RFC 6376 §8.15).
const OVERSIGNED: &[&str] = &["From", "To", "Subject"];

/// The smallest RSA key we sign with (RFC 8301 §3.2).
const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rsa-sha256" => Some(Algorithm::RsaSha256),
            "ed25519-sha256" => Some(Algorithm::Ed25519Sha256),
            _ => None,
        }
    }
}

/// One `selector:algorithm:path` entry of the key table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub selector: String,
    pub algorithm: Algorithm,
    pub path: PathBuf,
}

/// Parses a key table value, `selector:algorithm:path[,…]`. Entries that do not parse
/// are returned as errors beside the good ones, so one typo does not unsign a domain.
pub fn parse_selectors(value: &str) -> (Vec<Selector>, Vec<String>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some(s), Some(a), Some(p)) if !s.trim().is_empty() && !p.trim().is_empty() => {
                Algorithm::parse(a).map(|algorithm| Selector {
                    selector: s.trim().to_owned(),
                    algorithm,
                    path: PathBuf::from(p.trim()),
                })
            }
            _ => None,
        };
        match parsed {
            Some(s) => good.push(s),
            None => bad.push(entry.to_owned()),
        }
    }
    (good, bad)
}

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

struct Cached {
    /// The file's mtime and length when it was read: a change means a reload.
    stamp: (Option<SystemTime>, u64),
    key: Result<Arc<Key>, String>,
}

/// Signs outbound messages; holds the loaded keys. One per daemon, shared by the
/// delivery tasks (it is `Sync`).
pub struct DkimSigner {
    keys: Mutex<HashMap<PathBuf, Cached>>,
    /// Key files whose problem has been logged; cleared when the key loads again.
    warned: Mutex<HashSet<PathBuf>>,
    #[cfg(test)]
    logged: Mutex<Vec<String>>,
}

impl Default for DkimSigner {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner").finish_non_exhaustive()
    }
}

impl DkimSigner {
    pub fn new() -> Self {
        DkimSigner {
            keys: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            #[cfg(test)]
            logged: Mutex::new(Vec::new()),
        }
    }

    /// The `DKIM-Signature:` fields (CRLF-terminated, folded) to prepend to `message`
    /// for the From: domain's selectors in `table`; empty when nothing is signed.
    /// `now_unix` is the signature's `t=`. Table lookups may block (SQLite): call from
    /// a blocking context.
    pub fn sign(
        &self,
        tables: &Tables,
        table: &TableRef,
        message: &[u8],
        now_unix: u64,
    ) -> Vec<u8> {
        let Some(domain) = self.signing_domain(message) else {
            return Vec::new();
        };
        let Some(t) = expand::resolve(table, tables) else {
            self.log_once(
                Path::new(""),
                format!(
                    "dkim: table {} is not open; {domain} mail goes unsigned",
                    table_name(table)
                ),
            );
            return Vec::new();
        };
        let value = match t.lookup(Service::String, &domain) {
            Ok(Some(v)) => v,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(target: "dkim", "dkim: {e}; {domain} mail goes unsigned");
                return Vec::new();
            }
        };
        let (selectors, bad) = parse_selectors(&value);
        for entry in bad {
            self.log_once(
                Path::new(&entry),
                format!("dkim: {domain}: bad key table entry {entry:?} (selector:algorithm:path)"),
            );
        }
        let mut out = Vec::new();
        for s in &selectors {
            let Some(key) = self.key(&domain, s) else {
                continue;
            };
            match sign_one(&key, &domain, &s.selector, message, now_unix) {
                Ok(header) => out.extend_from_slice(header.as_bytes()),
                Err(e) => tracing::warn!(
                    target: "dkim",
                    "dkim: {domain} selector {}: signing failed: {e}",
                    s.selector
                ),
            }
        }
        out
    }

    /// The domain of the single RFC 5322 From: address, lower-cased.
    fn signing_domain(&self, message: &[u8]) -> Option<String> {
        match from_domain(message) {
            Ok(d) => Some(d),
            Err(why) => {
                tracing::info!(target: "dkim", "dkim: not signing: {why}");
                None
            }
        }
    }

    /// The key for `s`, loaded or reloaded when the file changed; `None` (logged once)
    /// when it cannot be used.
    fn key(&self, domain: &str, s: &Selector) -> Option<Arc<Key>> {
        let stamp = std::fs::metadata(&s.path)
            .map(|m| (m.modified().ok(), m.len()))
            .ok();
        let result = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            match (stamp, keys.get(&s.path)) {
                (Some(st), Some(c)) if c.stamp == st => c.key.clone(),
                (Some(st), _) => {
                    let key = load_key(domain, s).map(Arc::new);
                    keys.insert(
                        s.path.clone(),
                        Cached {
                            stamp: st,
                            key: key.clone(),
                        },
                    );
                    key
                }
                (None, _) => {
                    keys.remove(&s.path);
                    Err(format!(
                        "dkim: {domain} selector {}: cannot read key file {}",
                        s.selector,
                        s.path.display()
                    ))
                }
            }
        };
        match result {
            Ok(k) => {
                self.warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&s.path);
                Some(k)
            }
            Err(msg) => {
                self.log_once(&s.path, format!("{msg}; mail goes unsigned"));
                None
            }
        }
    }

    fn log_once(&self, path: &Path, msg: String) {
        let first = self
            .warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf());
        if first {
            tracing::error!(target: "dkim", "{msg}");
            #[cfg(test)]
            self.logged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(msg);
        }
    }

    #[cfg(test)]
    fn logged(&self) -> Vec<String> {
        self.logged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn table_name(t: &TableRef) -> String {
    match t {
        TableRef::Named(n) => format!("<{n}>"),
        TableRef::Inline(_) => "(inline)".into(),
    }
}

/// The domain of the one and only From: address (RFC 5322 §3.6.2), parsed with
/// mail-parser so display names, comments, groups and encoded words are handled.
pub fn from_domain(message: &[u8]) -> Result<String, String> {
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or_else(|| "the header cannot be parsed".to_owned())?;
    let mut addresses = Vec::new();
    let mut fields = 0;
    for v in parsed.header_values(HeaderName::From) {
        fields += 1;
        if let HeaderValue::Address(a) = v {
            addresses.extend(
                a.iter()
                    .filter_map(|a| a.address.as_deref().map(str::to_owned)),
            );
        }
    }
    match (fields, addresses.as_slice()) {
        (0, _) => Err("no From: field".into()),
        (1, [one]) => one
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("From: address {one:?} has no domain")),
        (1, []) => Err("From: has no address".into()),
        (1, _) => Err(format!("From: has {} addresses", addresses.len())),
        (n, _) => Err(format!("{n} From: fields")),
    }
}

fn load_key(domain: &str, s: &Selector) -> Result<Key, String> {
    let what = format!("dkim: {domain} selector {}", s.selector);
    let pem = std::fs::read(&s.path)
        .map_err(|e| format!("{what}: cannot read key file {}: {e}", s.path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{what}: {} is not a PEM private key: {e}", s.path.display()))?;
    match s.algorithm {
        Algorithm::RsaSha256 => {
            let bits = match &der {
                PrivateKeyDer::Pkcs8(k) => rsa_bits_pkcs8(k.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(k) => rsa_bits_pkcs1(k.secret_pkcs1_der()),
                _ => None,
            }
            .ok_or_else(|| format!("{what}: {} is not an RSA private key", s.path.display()))?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "{what}: RSA key is {bits} bits; {MIN_RSA_BITS} or more is required"
                ));
            }
            RsaKey::<Sha256>::from_key_der(der)
                .map(Key::Rsa)
                .map_err(|e| format!("{what}: unusable RSA key {}: {e}", s.path.display()))
        }
        Algorithm::Ed25519Sha256 => {
            let PrivateKeyDer::Pkcs8(k) = &der else {
                return Err(format!("{what}: {} is not a PKCS#8 key", s.path.display()));
            };
            Ed25519Key::from_pkcs8_maybe_unchecked_der(k.secret_pkcs8_der())
                .map(Key::Ed25519)
                .map_err(|e| format!("{what}: unusable Ed25519 key {}: {e}", s.path.display()))
        }
    }
}

/// Minimal DER reader: (tag, contents, rest).
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, mut rest) = rest.split_first()?;
    let len = if len0 < 0x80 {
        usize::from(len0)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, r) = rest.split_at(n);
        rest = r;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// RFC 5208 PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING }
fn rsa_bits_pkcs8(der: &[u8]) -> Option<usize> {
    let (0x30, seq, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_next(seq)? else {
        return None;
    };
    let (0x30, _, rest) = der_next(rest)? else {
        return None;
    };
    let (0x04, key, _) = der_next(rest)? else {
        return None;
    };
    rsa_bits_pkcs1(key)
}

/// RFC 8017 RSAPrivateKey ::= SEQUENCE { version, modulus INTEGER, … }
fn rsa_bits_pkcs1(der: &[u8]) -> Option<usize> {
    let (0x30, seq, _) = der_next(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_next(seq)? else {
        return None;
    };
    let (0x02, modulus, _) = der_next(rest)? else {
        return None;
    };
    let significant: &[u8] = {
        let start = modulus.iter().position(|b| *b != 0)?;
        &modulus[start..]
    };
    let top = significant.first()?;
    Some((significant.len() - 1) * 8 + (8 - top.leading_zeros() as usize))
}

/// Header fields of a message as mail-auth wants them: name without the colon, value
/// from after the colon through the CRLF that ends the field.
struct Fields<'x> {
    message: &'x [u8],
    pos: usize,
    body: usize,
}

impl<'x> Fields<'x> {
    fn new(message: &'x [u8]) -> Self {
        Fields {
            message,
            pos: 0,
            body: message.len(),
        }
    }

    fn names(message: &'x [u8]) -> Vec<&'x [u8]> {
        let mut f = Fields::new(message);
        std::iter::from_fn(|| f.next_header().map(|(n, _)| n)).collect()
    }
}

impl<'x> HeaderStream<'x> for Fields<'x> {
    fn next_header(&mut self) -> Option<(&'x [u8], &'x [u8])> {
        let rest = self.message.get(self.pos..)?;
        // The blank line (or a line that is not a field) ends the header.
        let line_end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let colon = rest[..line_end].iter().position(|b| *b == b':');
        let Some(colon) =
            // RFC 5322 §4.5.2 (obs-optional): white space may precede the colon.
            colon.filter(|c| {
                let name = rest[..*c].trim_ascii_end();
                !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic())
            })
        else {
            let blank = matches!(&rest[..line_end], b"\r\n" | b"\n");
            self.body = if blank { self.pos + line_end } else { self.pos };
            self.pos = self.message.len();
            return None;
        };
        let mut end = line_end;
        while end < rest.len() && matches!(rest[end], b' ' | b'\t') {
            end = rest[end..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(rest.len(), |i| end + i + 1);
        }
        let (name, value) = (&rest[..colon], &rest[colon + 1..end]);
        self.pos += end;
        if self.pos >= self.message.len() {
            self.body = self.message.len();
        }
        Some((name, value))
    }

    fn body(&mut self) -> &'x [u8] {
        self.message.get(self.body..).unwrap_or_default()
    }
}

/// The `h=` template: every signed field present (each name once; mail-auth signs every
/// instance), plus one more of each over-signed field.
fn header_list(message: &[u8]) -> Vec<String> {
    let names = Fields::names(message);
    let present = |n: &str| names.iter().any(|h| h.eq_ignore_ascii_case(n.as_bytes()));
    let mut list: Vec<String> = Vec::new();
    let push = |n: &str, list: &mut Vec<String>| {
        if !list.iter().any(|l| l.eq_ignore_ascii_case(n)) {
            list.push(n.to_owned());
        }
    };
    for n in SIGNED {
        if present(n) {
            push(n, &mut list);
        }
    }
    for n in &names {
        if n.len() > 5
            && n[..5].eq_ignore_ascii_case(b"list-")
            && let Ok(n) = std::str::from_utf8(n)
        {
            push(n, &mut list);
        }
    }
    for n in OVERSIGNED {
        if present(n) {
            // A second entry for a present field is only matched by a field added later.
            list.push((*n).to_owned());
        } else {
            push(n, &mut list);
        }
    }
    list
}

fn sign_one(
    key: &Key,
    domain: &str,
    selector: &str,
    message: &[u8],
    now: u64,
) -> Result<String, String> {
    let h = header_list(message);
    match key {
        Key::Rsa(k) => sign_with(k, domain, selector, h, message, now),
        Key::Ed25519(k) => sign_with(k, domain, selector, h, message, now),
    }
}

/// mail-auth's `DkimSigner::sign` reads the system clock for `t=`; this is the same
/// sequence with the injected time.
fn sign_with<K: SigningKey>(
    key: &K,
    domain: &str,
    selector: &str,
    h: Vec<String>,
    message: &[u8],
    now: u64,
) -> Result<String, String> {
    let template = template(key, domain, selector, h);
    let (_, headers, signed, body) = template.canonicalize(Fields::new(message));
    let mut signature = template.clone();
    signature.bh = key.hash(body).as_ref().to_vec();
    signature.t = now;
    signature.h = signed;
    signature.b = key
        .sign(Signable {
            headers,
            signature: &signature,
        })
        .map_err(|e| e.to_string())?;
    Ok(signature.to_header())
}

fn template<K: SigningKey>(key: &K, domain: &str, selector: &str, h: Vec<String>) -> Signature {
    Signature {
        v: 1,
        a: key.algorithm(),
        d: domain.to_owned(),
        s: selector.to_owned(),
        h,
        ch: Canonicalization::Relaxed,
        cb: Canonicalization::Relaxed,
        ..Default::default()
    }
}

/// What the key signs: the canonical header fields, then the signature field itself
/// with an empty `b=` (RFC 6376 §3.7).
struct Signable<'a, H: Writable> {
    headers: H,
    signature: &'a Signature,
}

impl<H: Writable> Writable for Signable<'_, H> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

#[cfg(test)]
mod tests;
