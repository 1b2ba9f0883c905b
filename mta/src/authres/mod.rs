//! Inbound authentication results: SPF (RFC 7208) for the MAIL FROM identity (HELO for
//! the null sender), DKIM verification (RFC 6376) of every signature, and DMARC
//! (RFC 7489) with the organisational domain from the Public Suffix List shipped in
//! `mta/data/`; rendered as one `Authentication-Results` field (RFC 8601) and a
//! disposition (deliver, junk, reject) from the sender's DMARC policy and the operator's
//! `authres dmarc` setting.
//!
//! DNS goes through mail-auth's resolver, built on the configuration's `resolver`.
//! The checks take the message bytes; the daemon's `MessageWriter` wrapper buffers them
//! (up to [`DKIM_BUFFER_LIMIT`]) and strips forged fields ([`headers::HeaderFilter`]).
//! Nothing here is consulted for authenticated or local submissions.

pub mod headers;
pub mod psl;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mail_auth::common::cache::NoCache;
use mail_auth::dmarc::{Alignment, Dmarc};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfResult, Txt};

/// A message larger than this is not held in memory for DKIM: its signatures are
/// reported `dkim=neutral (message too large to verify)` and a DMARC failure is not
/// acted on (the signature might have passed). SPF and DMARC still run on the headers.
pub const DKIM_BUFFER_LIMIT: usize = 4 * 1024 * 1024;

/// `authres dmarc reject|quarantine|none`: the most fugu does about a DMARC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcMode {
    /// Results are recorded only.
    None,
    /// `p=quarantine` failures (and `p=reject` ones, downgraded) are marked as junk.
    #[default]
    Quarantine,
    /// `p=reject` failures get `550 5.7.1` at the end of DATA; `p=quarantine` junk.
    Reject,
}

impl DmarcMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcMode::None => "none",
            DmarcMode::Quarantine => "quarantine",
            DmarcMode::Reject => "reject",
        }
    }
}

/// The `authres` directives (fugu extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `authres on|off`: checks and the header for inbound sessions (default on).
    pub enabled: bool,
    pub dmarc: DmarcMode,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            dmarc: DmarcMode::default(),
        }
    }
}

/// RFC 8601 §2.7 result keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::SoftFail => "softfail",
            Verdict::Neutral => "neutral",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
        }
    }
}

/// The identity SPF checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfIdentity {
    MailFrom(String),
    /// The null reverse-path: the HELO name is checked.
    Helo(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: Verdict,
    pub identity: SpfIdentity,
}

impl SpfCheck {
    /// The domain DMARC aligns with the From domain.
    fn domain(&self) -> String {
        match &self.identity {
            SpfIdentity::MailFrom(a) => a.rsplit_once('@').map_or(a.as_str(), |(_, d)| d),
            SpfIdentity::Helo(h) => h.as_str(),
        }
        .to_ascii_lowercase()
    }
}

/// One DKIM-Signature's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimCheck {
    pub result: Verdict,
    /// `d=`, `s=` and `a=`; empty for a signature that did not parse.
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    /// Why it did not pass, for the comment.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimChecks {
    /// Every signature verified (none: `dkim=none`).
    Verified(Vec<DkimCheck>),
    /// Signed, but larger than [`DKIM_BUFFER_LIMIT`].
    TooLarge,
}

/// A DMARC policy (`p=`/`sp=`, after `t=y` downgrades).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: Verdict,
    /// The RFC 5322.From domain, when there is exactly one.
    pub from_domain: Option<String>,
    /// The policy that applies, when a record was found.
    pub policy: Option<Policy>,
}

/// What happens to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Deliver,
    /// Marked with `X-Spam-Flag: YES` and `X-Spam: yes`.
    Junk,
    /// `550 5.7.1` at the end of DATA.
    Reject,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Disposition::Deliver => "none",
            Disposition::Junk => "quarantine",
            Disposition::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    pub spf: SpfCheck,
    pub dkim: DkimChecks,
    pub dmarc: DmarcCheck,
    pub disposition: Disposition,
}

/// The disposition for a DMARC outcome. A failure is acted on only when every DKIM
/// signature could be verified: an unverified one might have aligned and passed.
pub fn disposition(dmarc: &DmarcCheck, dkim: &DkimChecks, mode: DmarcMode) -> Disposition {
    if dmarc.result != Verdict::Fail || matches!(dkim, DkimChecks::TooLarge) {
        return Disposition::Deliver;
    }
    match (dmarc.policy, mode) {
        (_, DmarcMode::None) | (None | Some(Policy::None), _) => Disposition::Deliver,
        (Some(Policy::Reject), DmarcMode::Reject) => Disposition::Reject,
        (Some(Policy::Reject | Policy::Quarantine), _) => Disposition::Junk,
    }
}

/// The header fields to put on top of the message: `Authentication-Results`, then the
/// junk marks when the disposition is [`Disposition::Junk`]. Lines end in CRLF.
pub fn render(authserv_id: &str, r: &Results) -> String {
    let mut parts = Vec::new();
    parts.push(match &r.spf.identity {
        SpfIdentity::MailFrom(a) => {
            format!("spf={} smtp.mailfrom={}", r.spf.result.as_str(), value(a))
        }
        SpfIdentity::Helo(h) => format!("spf={} smtp.helo={}", r.spf.result.as_str(), value(h)),
    });
    match &r.dkim {
        DkimChecks::Verified(v) if v.is_empty() => parts.push("dkim=none".into()),
        DkimChecks::Verified(v) => {
            for d in v {
                let mut p = format!("dkim={}", d.result.as_str());
                if let Some(why) = &d.reason {
                    p.push_str(&format!(" ({})", comment(why)));
                }
                if !d.domain.is_empty() {
                    p.push_str(&format!(
                        " header.d={} header.s={} header.a={}",
                        value(&d.domain),
                        value(&d.selector),
                        d.algorithm
                    ));
                }
                parts.push(p);
            }
        }
        DkimChecks::TooLarge => parts.push("dkim=neutral (message too large to verify)".into()),
    }
    let mut p = format!("dmarc={}", r.dmarc.result.as_str());
    if let Some(policy) = r.dmarc.policy {
        p.push_str(&format!(
            " (p={} dis={})",
            policy.as_str(),
            r.disposition.as_str()
        ));
    }
    if let Some(d) = &r.dmarc.from_domain {
        p.push_str(&format!(" header.from={}", value(d)));
    }
    parts.push(p);
    // RFC 8601 §2.2: `authserv-id *( CFWS ";" resinfo )`, one result per folded line.
    let mut h = format!("Authentication-Results: {}", value(authserv_id));
    for p in parts {
        h.push_str(";\r\n\t");
        h.push_str(&p);
    }
    h.push_str("\r\n");
    if r.disposition == Disposition::Junk {
        // SpamAssassin's mark (what the provisioner's Sieve rule files into Junk) and
        // OpenSMTPD's `junk` mark (what `mail.maildir -j` looks for).
        h.push_str("X-Spam-Flag: YES\r\nX-Spam: yes\r\n");
    }
    h
}

/// A property value: an address or domain as is when it is plain, else quoted.
fn value(s: &str) -> String {
    let is_plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.@".contains(c))
    };
    // RFC 8601 §2.3: `[local-part] "@" domain`, the local part possibly a quoted-string.
    let quoted_local = s.rsplit_once('@').is_some_and(|(l, d)| {
        l.len() >= 2
            && l.starts_with('"')
            && l.ends_with('"')
            && !l[1..l.len() - 1].contains(['"', '\\'])
            && !l.chars().any(char::is_control)
            && is_plain(d)
    });
    if is_plain(s) || quoted_local {
        s.to_string()
    } else {
        let escaped: String = s
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// Comment text without parentheses, backslashes or line breaks.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The SMTP facts the checks need.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// `None` is the null reverse-path.
    pub mail_from: Option<&'a str>,
    /// Our name, SPF's `%{r}`.
    pub hostname: &'a str,
}

/// Runs SPF, DKIM and DMARC. `message` is the whole message when `complete`, else at
/// least its header section (DKIM is then not verified).
pub async fn authenticate(
    auth: &MessageAuthenticator,
    client: &Client<'_>,
    message: &[u8],
    complete: bool,
    dkim_signed: bool,
    mode: DmarcMode,
) -> Results {
    let spf = spf(auth, client).await;
    let parsed = AuthenticatedMessage::parse(message);
    let dkim = match (&parsed, complete) {
        (Some(m), true) => {
            let out = auth.verify_dkim(m).await;
            DkimChecks::Verified(out.iter().map(dkim_check).collect())
        }
        (_, false) if dkim_signed => DkimChecks::TooLarge,
        _ => DkimChecks::Verified(Vec::new()),
    };
    let from = parsed.as_ref().map(|m| m.from.clone()).unwrap_or_default();
    let dmarc = dmarc(auth, &from, &spf, &dkim).await;
    let disposition = disposition(&dmarc, &dkim, mode);
    Results {
        spf,
        dkim,
        dmarc,
        disposition,
    }
}

async fn spf(auth: &MessageAuthenticator, c: &Client<'_>) -> SpfCheck {
    let (params, identity) = match c.mail_from.filter(|a| a.contains('@')) {
        Some(a) => (
            SpfParameters::verify_mail_from(c.ip, c.helo, c.hostname, a),
            SpfIdentity::MailFrom(a.to_string()),
        ),
        None => (
            SpfParameters::verify_ehlo(c.ip, c.helo, c.hostname),
            SpfIdentity::Helo(c.helo.to_string()),
        ),
    };
    let out = auth.verify_spf(params).await;
    let result = match out.result() {
        SpfResult::Pass => Verdict::Pass,
        SpfResult::Fail => Verdict::Fail,
        SpfResult::SoftFail => Verdict::SoftFail,
        SpfResult::Neutral => Verdict::Neutral,
        SpfResult::TempError => Verdict::TempError,
        SpfResult::PermError => Verdict::PermError,
        SpfResult::None => Verdict::None,
    };
    SpfCheck { result, identity }
}

fn dkim_check(o: &mail_auth::DkimOutput<'_>) -> DkimCheck {
    let (result, reason) = match o.result() {
        DkimResult::Pass => (Verdict::Pass, None),
        // RFC 6376 §6.1.3: a body hash mismatch is a failed verification (mail-auth
        // calls it neutral); RFC 8601 §2.7.1 reports that as `fail`.
        DkimResult::Neutral(
            e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch),
        ) => (Verdict::Fail, Some(e.to_string())),
        DkimResult::Neutral(e) => (Verdict::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (Verdict::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (Verdict::PermError, Some(e.to_string())),
        DkimResult::TempError(e) => (Verdict::TempError, Some(e.to_string())),
        DkimResult::None => (Verdict::None, None),
    };
    let (domain, selector, algorithm) = match o.signature() {
        Some(s) => (
            s.d.to_ascii_lowercase(),
            s.s.clone(),
            match s.a {
                mail_auth::common::crypto::Algorithm::RsaSha1 => "rsa-sha1",
                mail_auth::common::crypto::Algorithm::RsaSha256 => "rsa-sha256",
                mail_auth::common::crypto::Algorithm::Ed25519Sha256 => "ed25519-sha256",
            },
        ),
        None => (String::new(), String::new(), ""),
    };
    DkimCheck {
        result,
        domain,
        selector,
        algorithm,
        reason,
    }
}

enum Lookup {
    Found(Arc<Dmarc>),
    NotFound,
    TempError,
}

async fn lookup(auth: &MessageAuthenticator, domain: &str) -> Lookup {
    let name = format!("_dmarc.{domain}.");
    match auth
        .txt_lookup::<Dmarc>(name, None::<&NoCache<Box<str>, Txt>>)
        .await
    {
        Ok(r) => Lookup::Found(r),
        Err(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(_))) => Lookup::TempError,
        // No record, a TXT that is not DMARC, or one that does not parse: RFC 7489
        // §6.6.3 treats them all as "no policy".
        Err(_) => Lookup::NotFound,
    }
}

fn aligned(domain: &str, from: &str, mode: Alignment) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domain == from
        || (mode == Alignment::Relaxed
            && psl::organizational_domain(&domain) == psl::organizational_domain(from))
}

/// RFC 7489 §6.6: policy discovery at the From domain, then at its organisational
/// domain (whose `sp=` applies), and identifier alignment (§3.1).
async fn dmarc(
    auth: &MessageAuthenticator,
    from: &[String],
    spf: &SpfCheck,
    dkim: &DkimChecks,
) -> DmarcCheck {
    let mut domains: Vec<String> = from
        .iter()
        .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .collect();
    domains.dedup();
    // RFC 7489 §6.6.1: no From domain, or several, gets no DMARC verdict here.
    let [from_domain] = domains.as_slice() else {
        return DmarcCheck {
            result: Verdict::None,
            from_domain: None,
            policy: None,
        };
    };
    let from_domain = from_domain.trim_end_matches('.').to_string();
    let org = psl::organizational_domain(&from_domain);
    let mut found = lookup(auth, &from_domain).await;
    let mut at_org = false;
    if matches!(found, Lookup::NotFound) && org != from_domain {
        found = lookup(auth, &org).await;
        at_org = true;
    }
    let record = match found {
        Lookup::Found(r) => r,
        Lookup::NotFound => {
            return DmarcCheck {
                result: Verdict::None,
                from_domain: Some(from_domain),
                policy: None,
            };
        }
        Lookup::TempError => {
            return DmarcCheck {
                result: Verdict::TempError,
                from_domain: Some(from_domain),
                policy: None,
            };
        }
    };
    let p = if at_org { &record.sp } else { &record.p };
    let mut policy = match p {
        mail_auth::dmarc::Policy::Reject => Policy::Reject,
        mail_auth::dmarc::Policy::Quarantine => Policy::Quarantine,
        _ => Policy::None,
    };
    // `t=y` (testing): apply one level less.
    if record.t {
        policy = match policy {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        };
    }
    let spf_aligned =
        spf.result == Verdict::Pass && aligned(&spf.domain(), &from_domain, record.aspf);
    let (dkim_aligned, dkim_temp) = match dkim {
        DkimChecks::Verified(v) => (
            v.iter().any(|d| {
                d.result == Verdict::Pass && aligned(&d.domain, &from_domain, record.adkim)
            }),
            v.iter().any(|d| d.result == Verdict::TempError),
        ),
        DkimChecks::TooLarge => (false, false),
    };
    let result = if spf_aligned || dkim_aligned {
        Verdict::Pass
    } else if spf.result == Verdict::TempError || dkim_temp {
        Verdict::TempError
    } else {
        Verdict::Fail
    };
    DmarcCheck {
        result,
        from_domain: Some(from_domain),
        policy: Some(policy),
    }
}

/// One authenticator per resolver address, kept across messages (and rebuilt when a
/// reload changes `resolver`).
#[derive(Default)]
pub struct Verifier {
    current: Mutex<Option<(Option<String>, Arc<MessageAuthenticator>)>>,
}

impl Verifier {
    pub fn authenticator(
        &self,
        resolver: Option<&str>,
    ) -> Result<Arc<MessageAuthenticator>, String> {
        let mut g = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, a)) = g.as_ref()
            && r.as_deref() == resolver
        {
            return Ok(a.clone());
        }
        let a = Arc::new(MessageAuthenticator(crate::access::dnsbl::resolver(
            resolver,
        )?));
        *g = Some((resolver.map(str::to_string), a.clone()));
        Ok(a)
    }
}
