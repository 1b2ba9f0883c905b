//! DNS record hints and live checks for one domain.
//!
//! Every record is computed from the database (keys, policy, certificate, ACME account)
//! and the console's settings (mail host name, public addresses, offered services),
//! never typed by hand. The same list renders the page, the downloadable BIND snippet
//! and the expectations of the live checks, so the three cannot disagree.
//!
//! Live checks ask the configured resolver (hickory-resolver), cache raw answers for
//! [`CACHE_TTL`], and compare them with the expectations: found, missing or different.
//! They also check forward-confirmed reverse DNS of the server's addresses and its
//! addresses against DNS block lists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use store::{DkimKey, DomainName, DomainPolicy};

use crate::AppState;
use crate::auth::{self, Console};
use crate::config::{Config, MailServices};
use crate::error::AppError;
use crate::pages::Nav;

/// How long raw DNS answers are reused before the page asks again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);
const TTL: u32 = 3600;

/// One record the domain should publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    /// What the record is for, shown beside it.
    pub purpose: String,
    /// Owner name, fully qualified, without the trailing dot.
    pub name: String,
    pub rtype: &'static str,
    /// Record data in zone-file syntax.
    pub rdata: String,
    /// Whether the owner lies inside the domain's own zone (others are printed as
    /// comments in the snippet, for the zone they belong to).
    pub in_zone: bool,
}

impl Hint {
    /// The value live checks compare: TXT strings joined, everything else normalised.
    pub fn expected(&self) -> String {
        if self.rtype == "TXT" {
            unquote_txt(&self.rdata)
        } else {
            normalise(&self.rdata)
        }
    }
}

/// Everything the hints are computed from.
pub(crate) struct Facts<'a> {
    pub domain: &'a str,
    pub hostname: &'a str,
    pub addrs: &'a [IpAddr],
    pub services: &'a MailServices,
    pub policy: &'a DomainPolicy,
    pub keys: &'a [DkimKey],
    /// CAA issuer domain and account URI (RFC 8657), when an ACME account exists.
    pub caa: Option<(String, String)>,
    /// Hex SHA-256 of the current certificate's SubjectPublicKeyInfo.
    pub tlsa: Option<String>,
}

fn within(name: &str, domain: &str) -> bool {
    name == domain || name.ends_with(&format!(".{domain}"))
}

fn txt(value: &str) -> String {
    crate::dkim::zone_strings(value)
}

/// The reverse-DNS owner name of an address (RFC 1035 §3.5, RFC 3596 §2.5).
pub(crate) fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut nibbles: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect();
            nibbles.reverse();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}

/// The reporting address: the policy's, or postmaster (RFC 5321 §4.5.1 makes it exist).
fn report_address(f: &Facts) -> String {
    if f.policy.report_address.is_empty() {
        format!("postmaster@{}", f.domain)
    } else {
        f.policy.report_address.clone()
    }
}

pub(crate) fn hints(f: &Facts) -> Vec<Hint> {
    let d = f.domain;
    let h = f.hostname;
    let mut out = Vec::new();
    let mut add = |purpose: String, name: String, rtype: &'static str, rdata: String| {
        let in_zone = within(&name, d);
        out.push(Hint {
            purpose,
            name,
            rtype,
            rdata,
            in_zone,
        });
    };
    // RFC 5321 §5.1
    add("mail exchanger".into(), d.into(), "MX", format!("10 {h}."));
    for ip in f.addrs {
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        add(
            "address of the mail host".into(),
            h.into(),
            rtype,
            ip.to_string(),
        );
    }
    // RFC 7208 §4.6: only the MX hosts may send for the domain; everything else fails.
    add("SPF".into(), d.into(), "TXT", txt("v=spf1 mx -all"));
    for k in f.keys {
        let value = crate::dkim::record_value(k.algorithm(), &k.public_key);
        add(
            format!("DKIM {} ({}, {})", k.selector, k.algorithm, k.state),
            crate::dkim::record_name(&k.selector, d),
            "TXT",
            txt(&value),
        );
    }
    let report = report_address(f);
    // RFC 7489 §6.3
    add(
        "DMARC".into(),
        format!("_dmarc.{d}"),
        "TXT",
        txt(&format!(
            "v=DMARC1; p={}; rua=mailto:{report}",
            f.policy.dmarc_policy.as_str()
        )),
    );
    if f.policy.mta_sts_enabled {
        let policy = crate::wellknown::mta_sts_policy(h, f.policy);
        // RFC 8461 §3.1
        add(
            "MTA-STS policy id".into(),
            format!("_mta-sts.{d}"),
            "TXT",
            txt(&format!(
                "v=STSv1; id={}",
                crate::wellknown::mta_sts_id(&policy)
            )),
        );
        add(
            "MTA-STS policy host".into(),
            format!("mta-sts.{d}"),
            "CNAME",
            format!("{h}."),
        );
    }
    // RFC 8460 §3
    add(
        "TLS reporting".into(),
        format!("_smtp._tls.{d}"),
        "TXT",
        txt(&format!("v=TLSRPTv1; rua=mailto:{report}")),
    );
    // RFC 6186 §3 and RFC 8314 §5.1: implicit TLS first; "0 0 0 ." says "not offered".
    let srv = |port: Option<u16>| match port {
        Some(p) => format!("0 1 {p} {h}."),
        None => "0 0 0 .".to_string(),
    };
    let s = f.services;
    for (label, port) in [
        ("_submissions", s.submissions),
        ("_submission", s.submission),
        ("_imaps", s.imaps),
        ("_imap", None),
        ("_pop3s", s.pop3s),
        ("_pop3", None),
    ] {
        let what = if port.is_some() {
            "client service"
        } else {
            "service not offered"
        };
        add(
            format!("{what} ({label})"),
            format!("{label}._tcp.{d}"),
            "SRV",
            srv(port),
        );
    }
    if f.policy.autoconfig_enabled {
        add(
            "mail client autoconfiguration".into(),
            format!("autoconfig.{d}"),
            "CNAME",
            format!("{h}."),
        );
    }
    if let Some((issuer, account)) = &f.caa {
        // RFC 8659 §4.2, RFC 8657 §3: only our ACME account may obtain certificates.
        add(
            "CAA (certificate issuer)".into(),
            d.into(),
            "CAA",
            format!("0 issue \"{issuer}; accounturi={account}\""),
        );
    }
    if let Some(hash) = &f.tlsa {
        // RFC 7672 §3.1.1: DANE-EE, SPKI, SHA-256 — survives renewals that keep the key.
        add(
            "DANE TLSA for SMTP".into(),
            format!("_25._tcp.{h}"),
            "TLSA",
            format!("3 1 1 {hash}"),
        );
    }
    out
}

/// The PTR records the operator must ask the address's provider for.
pub(crate) fn ptr_hints(f: &Facts) -> Vec<Hint> {
    f.addrs
        .iter()
        .map(|ip| Hint {
            purpose: format!("reverse DNS of {ip} (set by your provider)"),
            name: reverse_name(*ip),
            rtype: "PTR",
            rdata: format!("{}.", f.hostname),
            in_zone: false,
        })
        .collect()
}

/// The BIND zone-file snippet (RFC 1035 §5) for the domain.
pub(crate) fn zone_snippet(f: &Facts) -> String {
    let mut out = format!(
        "; DNS records for {d}, computed by fugu for the mail host {h}.\n\
         ; Add them to the zone of {d}; records for other zones are commented out.\n",
        d = f.domain,
        h = f.hostname
    );
    let mut last = String::new();
    for hint in hints(f).iter().chain(ptr_hints(f).iter()) {
        if hint.purpose != last {
            out.push_str(&format!("; {}\n", hint.purpose));
            last.clone_from(&hint.purpose);
        }
        let line = format!(
            "{}.\t{TTL}\tIN\t{}\t{}\n",
            hint.name, hint.rtype, hint.rdata
        );
        if hint.in_zone {
            out.push_str(&line);
        } else {
            out.push_str(&format!("; (in another zone) {line}"));
        }
    }
    out
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .map(|w| {
            w.trim_matches('"')
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>()
        .join(" ")
        .replace('"', "")
}

fn unquote_txt(rdata: &str) -> String {
    rdata
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect()
}

/// The tag that says which kind of TXT record a value is (`v=spf1`, `v=DKIM1`, …).
fn txt_kind(value: &str) -> String {
    value
        .split([';', ' '])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

// ---- live checks ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Found,
    Missing,
    Different,
    /// On a block list, with the code it answered.
    Listed(String),
    NotListed,
    /// The check could not decide (a failing resolver, a list refusing the query).
    Unknown(String),
}

impl Status {
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Found | Status::NotListed)
    }

    pub fn as_str(&self) -> String {
        match self {
            Status::Found => "found".into(),
            Status::Missing => "missing".into(),
            Status::Different => "different".into(),
            Status::Listed(code) => format!("listed ({code})"),
            Status::NotListed => "not listed".into(),
            Status::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub purpose: String,
    pub name: String,
    pub rtype: String,
    pub expected: String,
    pub found: Vec<String>,
    pub status: Status,
}

impl Check {
    pub fn json(&self) -> Value {
        json!({"purpose": self.purpose, "name": self.name, "type": self.rtype,
               "expected": self.expected, "found": self.found, "status": self.status.as_str(),
               "ok": self.status.is_ok()})
    }
}

/// A DNS answer as the checks use it: the data of matching records, or why there is none.
#[derive(Debug, Clone)]
enum Answer {
    Records(Vec<String>),
    NoRecords,
    Failed(String),
}

/// The resolver and the short-lived cache of its answers, shared by every request.
pub(crate) struct LiveChecks {
    resolver: Result<TokioResolver, String>,
    cache: Mutex<HashMap<(String, RecordType), (Instant, Answer)>>,
}

impl LiveChecks {
    pub fn new(config: &Config) -> LiveChecks {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        // Our own cache decides freshness; a re-check must really ask again.
        opts.cache_size = 0;
        opts.ndots = 0;
        let resolver = match config.resolver {
            Some(addr) => {
                let cfg = ResolverConfig::from_parts(None, vec![], vec![name_server(addr)]);
                TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default())
                    .with_options(opts)
                    .build()
                    .map_err(|e| e.to_string())
            }
            None => TokioResolver::builder_tokio()
                .map(|b| b.with_options(opts))
                .and_then(|b| b.build())
                .map_err(|e| format!("no system resolver: {e}")),
        };
        LiveChecks {
            resolver,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every cached answer (the re-check button).
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    async fn lookup(&self, name: &str, rtype: RecordType, fresh: bool) -> Answer {
        let key = (name.to_ascii_lowercase(), rtype);
        if !fresh
            && let Ok(c) = self.cache.lock()
            && let Some((at, answer)) = c.get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return answer.clone();
        }
        let answer = match &self.resolver {
            Err(e) => Answer::Failed(e.clone()),
            Ok(r) => match r.lookup(format!("{name}."), rtype).await {
                Ok(lookup) => {
                    let found: Vec<String> = lookup
                        .answers()
                        .iter()
                        .filter(|rec| rec.record_type() == rtype)
                        .map(|rec| match &rec.data {
                            RData::TXT(t) => t
                                .txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect(),
                            other => other.to_string(),
                        })
                        .collect();
                    if found.is_empty() {
                        Answer::NoRecords
                    } else {
                        Answer::Records(found)
                    }
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Answer::NoRecords,
                Err(e) => Answer::Failed(e.to_string()),
            },
        };
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn check_hint(&self, hint: &Hint, fresh: bool) -> Check {
        let rtype = match hint.rtype.parse::<RecordType>() {
            Ok(t) => t,
            Err(e) => {
                return Check {
                    purpose: hint.purpose.clone(),
                    name: hint.name.clone(),
                    rtype: hint.rtype.to_string(),
                    expected: hint.expected(),
                    found: vec![],
                    status: Status::Unknown(e.to_string()),
                };
            }
        };
        let expected = hint.expected();
        let answer = self.lookup(&hint.name, rtype, fresh).await;
        let (found, status) = match answer {
            Answer::Failed(e) => (vec![], Status::Unknown(e)),
            Answer::NoRecords => (vec![], Status::Missing),
            Answer::Records(values) => {
                let (found, matches) = if rtype == RecordType::TXT {
                    // Other TXT records (site verifications, …) share these names:
                    // compare only those of the same kind.
                    let kind = txt_kind(&expected);
                    let same: Vec<String> =
                        values.into_iter().filter(|v| txt_kind(v) == kind).collect();
                    let m = same.contains(&expected);
                    (same, m)
                } else {
                    let m = values.iter().any(|v| normalise(v) == expected);
                    (values, m)
                };
                let status = if matches {
                    Status::Found
                } else if found.is_empty() {
                    Status::Missing
                } else {
                    Status::Different
                };
                (found, status)
            }
        };
        Check {
            purpose: hint.purpose.clone(),
            name: hint.name.clone(),
            rtype: hint.rtype.to_string(),
            expected,
            found,
            status,
        }
    }

    /// Checks one TXT record without the cache (activation of a DKIM key).
    pub async fn check_txt(&self, name: &str, value: &str) -> Check {
        let hint = Hint {
            purpose: "TXT".into(),
            name: name.into(),
            rtype: "TXT",
            rdata: txt(value),
            in_zone: true,
        };
        self.check_hint(&hint, true).await
    }

    /// RFC 8601 §3 "iprev": the address's PTR names the mail host, and the mail host
    /// resolves back to the address.
    async fn check_reverse(&self, ip: IpAddr, hostname: &str) -> Check {
        let name = reverse_name(ip);
        let mut check = Check {
            purpose: format!("forward-confirmed reverse DNS of {ip}"),
            name: name.clone(),
            rtype: "PTR".into(),
            expected: hostname.to_string(),
            found: vec![],
            status: Status::Missing,
        };
        match self.lookup(&name, RecordType::PTR, false).await {
            Answer::Failed(e) => check.status = Status::Unknown(e),
            Answer::NoRecords => {}
            Answer::Records(names) => {
                check.found = names.iter().map(|n| normalise(n)).collect();
                check.status = Status::Different;
                if check
                    .found
                    .iter()
                    .any(|n| n == &hostname.to_ascii_lowercase())
                {
                    let rtype = if ip.is_ipv4() {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    };
                    check.status = match self.lookup(hostname, rtype, false).await {
                        Answer::Records(addrs)
                            if addrs.iter().any(|a| a.parse::<IpAddr>() == Ok(ip)) =>
                        {
                            Status::Found
                        }
                        Answer::Failed(e) => Status::Unknown(e),
                        _ => {
                            check
                                .found
                                .push(format!("{hostname} does not resolve to {ip}"));
                            Status::Different
                        }
                    };
                }
            }
        }
        check
    }

    /// RFC 5782 §2.1: a listing answers 127.0.0.2 or above; Spamhaus answers
    /// 127.255.255.x to queries it refuses (public resolvers, rate limits), which says
    /// nothing about the address.
    async fn check_blocklist(&self, ip: IpAddr, list: &str) -> Check {
        let rev = reverse_name(ip);
        let base = rev
            .trim_end_matches(".in-addr.arpa")
            .trim_end_matches(".ip6.arpa");
        let name = format!("{base}.{list}");
        let mut check = Check {
            purpose: format!("{ip} on {list}"),
            name: name.clone(),
            rtype: "A".into(),
            expected: "no record".into(),
            found: vec![],
            status: Status::NotListed,
        };
        match self.lookup(&name, RecordType::A, false).await {
            Answer::NoRecords => {}
            Answer::Failed(e) => check.status = Status::Unknown(e),
            Answer::Records(codes) => {
                check.status = blocklist_verdict(&codes);
                check.found = codes;
            }
        }
        check
    }
}

/// Classifies a block list's answer codes.
pub(crate) fn blocklist_verdict(codes: &[String]) -> Status {
    let parsed: Vec<std::net::Ipv4Addr> = codes.iter().filter_map(|c| c.parse().ok()).collect();
    if let Some(code) = parsed.iter().find(|a| {
        let o = a.octets();
        o[0] == 127 && !(o[1] == 255 && o[2] == 255) && u32::from(**a) >= 0x7f00_0002
    }) {
        return Status::Listed(code.to_string());
    }
    if parsed.iter().any(|a| a.octets()[..3] == [127, 255, 255]) {
        return Status::Unknown("the list refused the query".into());
    }
    Status::Unknown(format!("unexpected answer {}", codes.join(", ")))
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Every check's result for a domain.
pub(crate) struct Report {
    pub records: Vec<Check>,
    pub reverse: Vec<Check>,
    pub blocklists: Vec<Check>,
}

impl Report {
    pub fn json(&self) -> Value {
        let list = |c: &[Check]| Value::Array(c.iter().map(Check::json).collect());
        json!({"records": list(&self.records), "reverse": list(&self.reverse),
               "blocklists": list(&self.blocklists),
               "ok": self.records.iter().chain(&self.reverse).chain(&self.blocklists)
                        .all(|c| c.status.is_ok())})
    }
}

/// Runs every check concurrently (a slow or silent resolver costs one timeout, not one
/// per record), keeping the order of the hints.
pub(crate) async fn run_checks(state: &AppState, facts: &Facts<'_>) -> Report {
    async fn all(tasks: Vec<tokio::task::JoinHandle<Check>>) -> Vec<Check> {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(c) = t.await {
                out.push(c);
            }
        }
        out
    }
    let records = hints(facts)
        .into_iter()
        .map(|hint| {
            let checks = state.checks.clone();
            tokio::spawn(async move { checks.check_hint(&hint, false).await })
        })
        .collect();
    let mut reverse = Vec::new();
    let mut blocklists = Vec::new();
    for ip in facts.addrs.iter().copied() {
        let checks = state.checks.clone();
        let host = facts.hostname.to_string();
        reverse.push(tokio::spawn(async move {
            checks.check_reverse(ip, &host).await
        }));
        for list in &state.config.dnsbls {
            let checks = state.checks.clone();
            let list = list.clone();
            blocklists.push(tokio::spawn(async move {
                checks.check_blocklist(ip, &list).await
            }));
        }
    }
    Report {
        records: all(records).await,
        reverse: all(reverse).await,
        blocklists: all(blocklists).await,
    }
}

// ---- gathering the facts --------------------------------------------------------------------

/// The owned inputs of [`Facts`], read from the store and the configuration.
pub(crate) struct Gathered {
    pub domain: String,
    pub policy: DomainPolicy,
    pub keys: Vec<DkimKey>,
    pub caa: Option<(String, String)>,
    pub tlsa: Option<String>,
}

impl Gathered {
    pub fn facts<'a>(&'a self, config: &'a Config) -> Facts<'a> {
        Facts {
            domain: &self.domain,
            hostname: &config.mail_hostname,
            addrs: &config.public_addrs,
            services: &config.services,
            policy: &self.policy,
            keys: &self.keys,
            caa: self.caa.clone(),
            tlsa: self.tlsa.clone(),
        }
    }
}

/// The CAA issuer domain for an ACME directory URL.
pub(crate) fn caa_issuer(directory_url: &str) -> String {
    let host = directory_url
        .split("://")
        .nth(1)
        .unwrap_or(directory_url)
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if within(&host, "letsencrypt.org") {
        "letsencrypt.org".into()
    } else {
        host
    }
}

/// SHA-256 of the leaf certificate's SubjectPublicKeyInfo, in hex (TLSA 3 1 1).
pub(crate) fn spki_sha256(chain_pem: &str) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) async fn gather(
    state: &AppState,
    c_actor: &crate::ops::Actor,
    domain: &str,
) -> Result<Gathered, AppError> {
    let name = DomainName::parse(domain)?;
    c_actor.check_domain(&name)?;
    if state.store.domain(&name).await?.is_none() {
        return Err(AppError::NotFound(format!("domain {name} does not exist")));
    }
    let keys = crate::dkim::list(state, c_actor, domain).await?;
    let policy = state.store.domain_policy(&name).await?;
    let caa = state
        .store
        .acme_account_uri()
        .await?
        .map(|(dir, uri)| (caa_issuer(&dir), uri));
    let tlsa = state
        .store
        .certificate_chain_for(&state.config.mail_hostname)
        .await?
        .and_then(|pem| spki_sha256(&pem));
    Ok(Gathered {
        domain: name.to_string(),
        policy,
        keys,
        caa,
        tlsa,
    })
}

// ---- pages and downloads --------------------------------------------------------------------

pub(crate) struct Row {
    pub purpose: String,
    pub name: String,
    pub rtype: String,
    pub value: String,
    pub status: String,
    pub ok: bool,
    pub found: String,
}

fn rows(checks: &[Check]) -> Vec<Row> {
    checks
        .iter()
        .map(|c| Row {
            purpose: c.purpose.clone(),
            name: c.name.clone(),
            rtype: c.rtype.clone(),
            value: c.expected.clone(),
            status: c.status.as_str(),
            ok: c.status.is_ok(),
            found: c.found.join(" | "),
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/dns.html")]
struct DnsPage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    domain: String,
    hostname: String,
    snippet: String,
    records: Vec<Row>,
    ptrs: Vec<Hint>,
    reverse: Vec<Row>,
    blocklists: Vec<Row>,
    all_ok: bool,
    policy: DomainPolicy,
}

pub(crate) async fn page(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
) -> Result<Response, AppError> {
    let g = gather(&state, &c.actor, &domain).await?;
    let facts = g.facts(&state.config);
    let report = run_checks(&state, &facts).await;
    let all_ok = report
        .records
        .iter()
        .chain(&report.reverse)
        .chain(&report.blocklists)
        .all(|c| c.status.is_ok());
    let view = DnsPage {
        title: "DNS records",
        nav: crate::pages::nav(&c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        domain: g.domain.clone(),
        hostname: state.config.mail_hostname.clone(),
        snippet: zone_snippet(&facts),
        records: rows(&report.records),
        ptrs: ptr_hints(&facts),
        reverse: rows(&report.reverse),
        blocklists: rows(&report.blocklists),
        all_ok,
        policy: g.policy.clone(),
    };
    Ok(view.into_response())
}

pub(crate) async fn recheck(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
) -> Result<Response, AppError> {
    let name = DomainName::parse(&domain)?;
    c.actor.check_domain(&name)?;
    state.checks.clear();
    crate::pages::done(
        &c.session,
        "Checked again just now.".to_string(),
        &format!("/domains/{name}/dns"),
    )
    .await
}

pub(crate) async fn zone_file(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
) -> Result<Response, AppError> {
    let g = gather(&state, &c.actor, &domain).await?;
    Ok(zone_response(&g, &state.config))
}

pub(crate) fn zone_response(g: &Gathered, config: &Config) -> Response {
    let body = zone_snippet(&g.facts(config));
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.zone\"", g.domain),
            ),
        ],
        body,
    )
        .into_response()
}

// ---- the domain's policy ------------------------------------------------------------------

/// The editable part of [`DomainPolicy`], from the policy form or the API.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyInput {
    pub mta_sts_mode: String,
    pub mta_sts_max_age: u32,
    pub dmarc_policy: String,
    #[serde(default)]
    pub report_address: String,
    #[serde(default = "yes")]
    pub mta_sts_enabled: bool,
    #[serde(default = "yes")]
    pub autoconfig_enabled: bool,
}

fn yes() -> bool {
    true
}

pub(crate) fn policy_json(p: &DomainPolicy) -> Value {
    json!({"domain": p.domain, "mta_sts_mode": p.mta_sts_mode.as_str(),
           "mta_sts_max_age": p.mta_sts_max_age, "dmarc_policy": p.dmarc_policy.as_str(),
           "report_address": p.report_address, "mta_sts_enabled": p.mta_sts_enabled,
           "autoconfig_enabled": p.autoconfig_enabled})
}

pub(crate) async fn policy(
    state: &AppState,
    actor: &crate::ops::Actor,
    domain: &str,
) -> Result<DomainPolicy, AppError> {
    let name = DomainName::parse(domain)?;
    actor.check_domain(&name)?;
    if state.store.domain(&name).await?.is_none() {
        return Err(AppError::NotFound(format!("domain {name} does not exist")));
    }
    Ok(state.store.domain_policy(&name).await?)
}

pub(crate) async fn set_policy(
    state: &AppState,
    actor: &crate::ops::Actor,
    domain: &str,
    input: &PolicyInput,
) -> Result<DomainPolicy, AppError> {
    let before = policy(state, actor, domain).await?;
    let wanted = DomainPolicy {
        domain: before.domain.clone(),
        mta_sts_mode: store::MtaStsMode::parse(&input.mta_sts_mode)?,
        mta_sts_max_age: input.mta_sts_max_age,
        dmarc_policy: store::DmarcPolicy::parse(&input.dmarc_policy)?,
        report_address: input.report_address.clone(),
        mta_sts_enabled: input.mta_sts_enabled,
        autoconfig_enabled: input.autoconfig_enabled,
    };
    let after = state.store.set_domain_policy(&wanted).await?;
    actor
        .audit(
            state,
            "domain.policy",
            &after.domain,
            Some(policy_json(&before)),
            Some(policy_json(&after)),
        )
        .await?;
    Ok(after)
}

/// The hints, snippet and live checks as JSON (`GET /api/v1/domains/{name}/dns`).
pub(crate) async fn api_report(
    state: &AppState,
    actor: &crate::ops::Actor,
    domain: &str,
) -> Result<Value, AppError> {
    let g = gather(state, actor, domain).await?;
    let facts = g.facts(&state.config);
    let report = run_checks(state, &facts).await;
    let hint =
        |h: &Hint| json!({"purpose": h.purpose, "name": h.name, "type": h.rtype, "value": h.rdata});
    let mut v = report.json();
    v["domain"] = g.domain.clone().into();
    v["zone"] = zone_snippet(&facts).into();
    v["ptr"] = Value::Array(ptr_hints(&facts).iter().map(hint).collect());
    Ok(v)
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PolicyForm {
    pub mta_sts_mode: String,
    pub mta_sts_max_age: String,
    pub dmarc_policy: String,
    #[serde(default)]
    pub report_address: String,
    #[serde(default)]
    pub mta_sts_enabled: Option<String>,
    #[serde(default)]
    pub autoconfig_enabled: Option<String>,
}

pub(crate) async fn page_policy(
    State(state): State<AppState>,
    c: Console,
    Path(domain): Path<String>,
    axum::extract::Form(f): axum::extract::Form<PolicyForm>,
) -> Result<Response, AppError> {
    let input = PolicyInput {
        mta_sts_mode: f.mta_sts_mode,
        mta_sts_max_age: f
            .mta_sts_max_age
            .trim()
            .parse()
            .map_err(|_| AppError::Invalid {
                field: "mta_sts_max_age",
                message: "max_age is a number of seconds".to_string(),
            })?,
        dmarc_policy: f.dmarc_policy,
        report_address: f.report_address,
        mta_sts_enabled: f.mta_sts_enabled.is_some(),
        autoconfig_enabled: f.autoconfig_enabled.is_some(),
    };
    let p = set_policy(&state, &c.actor, &domain, &input).await?;
    crate::pages::done(
        &c.session,
        "Policy saved: publish the records that changed.".to_string(),
        &format!("/domains/{}/dns", p.domain),
    )
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Compares with `tests/golden/NAME`, or rewrites it when `BLESS=1`.
    pub(crate) fn golden(name: &str, actual: &str) {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var("BLESS").as_deref() == Ok("1") {
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing golden file {}; run with BLESS=1", path.display()));
        assert!(
            expected == actual,
            "{name} differs from its golden file; re-bless with BLESS=1 after review\n{actual}"
        );
    }

    fn key(selector: &str, algorithm: &str, public_key: String, state: &str) -> DkimKey {
        DkimKey {
            id: 1,
            domain: "example.org".into(),
            selector: selector.into(),
            algorithm: algorithm.into(),
            private_key: String::new(),
            public_key,
            state: state.into(),
            created_at: 0,
            activated_at: None,
            retired_at: None,
        }
    }

    /// The fixed test domain of the golden snippet: two addresses, an active RSA key
    /// long enough to need two strings, a pending Ed25519 key, CAA and TLSA.
    pub(crate) fn with_test_facts<T>(f: impl FnOnce(&Facts) -> T) -> T {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let rsa_p = b64.encode((0..294u16).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let ed_p = b64.encode([7u8; 32]);
        let keys = vec![
            key("20261121r", "rsa-sha256", rsa_p, "active"),
            key("20261121e", "ed25519-sha256", ed_p, "pending"),
        ];
        let domain = DomainName::parse("example.org").unwrap();
        let policy = DomainPolicy::defaults(&domain);
        let addrs: Vec<IpAddr> = vec![
            "192.0.2.25".parse().unwrap(),
            "2001:db8::25".parse().unwrap(),
        ];
        let services = MailServices::default();
        let facts = Facts {
            domain: "example.org",
            hostname: "mail.example.org",
            addrs: &addrs,
            services: &services,
            policy: &policy,
            keys: &keys,
            caa: Some((
                "letsencrypt.org".into(),
                "https://acme-v02.api.letsencrypt.org/acme/acct/123456".into(),
            )),
            tlsa: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
        };
        f(&facts)
    }

    #[test]
    fn zone_snippet_for_the_test_domain_matches_its_golden_file() {
        with_test_facts(|f| golden("dns.zone", &zone_snippet(f)));
    }

    #[test]
    fn every_hint_expects_what_its_zone_line_publishes() {
        with_test_facts(|f| {
            let hints = hints(f);
            let dkim = hints
                .iter()
                .find(|h| h.name == "20261121r._domainkey.example.org")
                .unwrap();
            assert!(dkim.rdata.starts_with("\"v=DKIM1; k=rsa; p="));
            assert_eq!(
                dkim.rdata.matches('"').count(),
                4,
                "two strings: {}",
                dkim.rdata
            );
            assert!(!dkim.expected().contains('"'));
            let null = hints
                .iter()
                .find(|h| h.name == "_pop3s._tcp.example.org")
                .unwrap();
            assert_eq!(null.rdata, "0 0 0 .");
            assert_eq!(normalise("0 0 0 ."), null.expected());
        });
    }

    #[test]
    fn block_list_codes_count_only_when_they_are_listing_codes() {
        let s =
            |v: &[&str]| blocklist_verdict(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["127.0.0.2"]), Status::Listed("127.0.0.2".into()));
        assert_eq!(s(&["127.0.0.255"]), Status::Listed("127.0.0.255".into()));
        assert_eq!(
            s(&["127.255.255.254"]),
            Status::Unknown("the list refused the query".into())
        );
        assert!(matches!(s(&["127.0.0.1"]), Status::Unknown(_)));
        assert!(matches!(s(&["10.0.0.2"]), Status::Unknown(_)));
    }

    #[test]
    fn reverse_names_follow_in_addr_and_ip6_arpa() {
        assert_eq!(
            reverse_name("192.0.2.25".parse().unwrap()),
            "25.2.0.192.in-addr.arpa"
        );
        assert!(
            reverse_name("2001:db8::1".parse().unwrap())
                .starts_with("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2")
        );
    }

    #[test]
    fn caa_issuer_names_lets_encrypt_for_both_directories() {
        assert_eq!(
            caa_issuer("https://acme-v02.api.letsencrypt.org/directory"),
            "letsencrypt.org"
        );
        assert_eq!(
            caa_issuer("https://acme-staging-v02.api.letsencrypt.org/directory"),
            "letsencrypt.org"
        );
        assert_eq!(caa_issuer("https://localhost:14000/dir"), "localhost");
    }
}
