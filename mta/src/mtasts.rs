//! MTA-STS for outbound mail (RFC 8461): discovery through the `_mta-sts` TXT record,
//! the policy fetched over HTTPS from `mta-sts.<domain>`, cached until `max_age`.
//!
//! The relay asks [`MtaSts::policy`] before it picks MX hosts and, for `enforce`,
//! refuses MX hosts the policy does not list ([`Policy::allows_mx`]) and requires a
//! verified certificate. This module only finds and caches policies; it does not
//! send TLS reports (RFC 8460).
//!
//! The HTTPS fetch is a minimal HTTP/1.1 GET over tokio-rustls: no redirects (RFC 8461
//! §3.3), only 200 with `text/plain`, at most 64 KiB, one short timeout for all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RFC 8461 §3.2: a policy body is at most 64 KiB.
const MAX_POLICY: usize = 64 * 1024;
/// Room for the status line and response header on top of the body.
const MAX_HEAD: usize = 8 * 1024;
/// RFC 8461 §3.2: `max_age` is at most 31557600 (about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;
/// RFC 8461 §3.3: "a short timeout" for the whole fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to listed MX hosts with verified certificates.
    Enforce,
    /// Report failures but deliver anyway.
    Testing,
    /// No policy in effect.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX patterns, lower-case, without trailing dots; `*.example.net` wildcards.
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
    /// The `id=` of the TXT record the policy was fetched for.
    pub id: String,
}

impl Policy {
    /// Parses a policy body (RFC 8461 §3.2); `id` is the TXT record's id.
    pub fn parse(text: &str, id: &str) -> Result<Policy, String> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        // sts-policy-term = LF / CRLF; fields are `key: value`.
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("policy line {line:?} is not `key: value`"));
            };
            let value = value.trim_matches([' ', '\t']);
            // RFC 8461 §3.2: the first occurrence of a field wins (mx may repeat).
            match key {
                "version" if version.is_none() => version = Some(value.to_owned()),
                "mode" if mode.is_none() => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" if max_age.is_none() => {
                    if value.is_empty()
                        || value.len() > 10
                        || !value.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(format!("max_age {value:?} is not a number"));
                    }
                    let n: u64 = value
                        .parse()
                        .map_err(|_| format!("max_age {value:?} is not a number"))?;
                    if n > MAX_AGE_LIMIT {
                        return Err(format!("max_age {n} exceeds {MAX_AGE_LIMIT}"));
                    }
                    max_age = Some(n);
                }
                "mx" => {
                    let pattern = value.trim_end_matches('.').to_ascii_lowercase();
                    if !valid_mx_pattern(&pattern) {
                        return Err(format!("mx {value:?} is not a host name or *.domain"));
                    }
                    mx.push(pattern);
                }
                // Unknown fields are ignored, for extensions.
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("version is not STSv1".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("no mx".into());
        }
        Ok(Policy {
            mode,
            mx,
            max_age,
            id: id.to_owned(),
        })
    }

    /// Whether `host` (an MX name) matches one of the policy's `mx` patterns: exactly,
    /// or `*.example.net` for exactly one more left-most label (RFC 8461 §4.1),
    /// case-insensitively, trailing dots ignored.
    pub fn allows_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *p == host,
        })
    }
}

fn valid_mx_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `id` of a `_mta-sts` TXT record (RFC 8461 §3.1), or why it is not one.
pub fn parse_txt(record: &str) -> Result<String, String> {
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next() != Some("v=STSv1") {
        return Err("does not start with v=STSv1".into());
    }
    let mut id = None;
    for f in fields.filter(|f| !f.is_empty()) {
        let Some((k, v)) = f.split_once('=') else {
            return Err(format!("field {f:?} is not key=value"));
        };
        if k == "id" && id.is_none() {
            if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("id {v:?} is not 1 to 32 letters and digits"));
            }
            id = Some(v.to_owned());
        }
    }
    id.ok_or_else(|| "no id".into())
}

struct Cached {
    policy: Arc<Policy>,
    until: Instant,
}

/// Finds and caches MTA-STS policies. One per daemon; `Sync`.
pub struct MtaSts {
    resolver: TokioResolver,
    tls: Arc<rustls::ClientConfig>,
    https_port: u16,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("https_port", &self.https_port)
            .finish_non_exhaustive()
    }
}

impl MtaSts {
    /// `roots` are the trust anchors for the policy hosts' certificates.
    pub fn new(resolver: TokioResolver, roots: Arc<RootCertStore>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
            // The ring provider supports the default versions; this cannot happen, but
            // fall back to rustls' defaults rather than panic.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        };
        MtaSts {
            resolver,
            tls: Arc::new(tls),
            https_port: 443,
            timeout: FETCH_TIMEOUT,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Tests only: fetch policies from this port instead of 443.
    pub fn with_https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// The policy for mail to `domain`.
    ///
    /// `Ok(None)`: no `_mta-sts` TXT record and nothing cached (no MTA-STS).
    /// `Err`: a record exists but the policy cannot be fetched and none is cached; the
    /// caller defers the mail. The text says what failed (`https://mta-sts.…: TLS: …`). A failed refetch keeps the cached policy (RFC 8461 §5.1).
    pub async fn policy(&self, domain: &str) -> Result<Option<Arc<Policy>>, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let id = match self.txt_id(&domain).await {
            Ok(Some(id)) => id,
            // RFC 8461 §5.1: without a record, a cached policy stays in force.
            Ok(None) => return Ok(cached),
            Err(e) => {
                tracing::info!(target: "mtasts", "mta-sts: {domain}: {e}");
                return Ok(cached);
            }
        };
        if let Some(p) = &cached
            && p.id == id
        {
            return Ok(cached);
        }
        match self.fetch(&domain, &id).await {
            Ok(policy) => {
                let policy = Arc::new(policy);
                let until = Instant::now() + Duration::from_secs(policy.max_age);
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    domain,
                    Cached {
                        policy: policy.clone(),
                        until,
                    },
                );
                Ok(Some(policy))
            }
            Err(e) => match cached {
                Some(p) => {
                    tracing::warn!(
                        target: "mtasts",
                        "mta-sts: {domain}: refetch for id {id} failed, keeping policy {}: {e}",
                        p.id
                    );
                    Ok(Some(p))
                }
                None => Err(e),
            },
        }
    }

    fn cached(&self, domain: &str) -> Option<Arc<Policy>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(domain) {
            Some(c) if c.until > Instant::now() => Some(c.policy.clone()),
            Some(_) => {
                cache.remove(domain);
                None
            }
            None => None,
        }
    }

    /// The id of the domain's one valid `v=STSv1` record; `Ok(None)` when there is none
    /// (RFC 8461 §3.1: several valid records count as none).
    async fn txt_id(&self, domain: &str) -> Result<Option<String>, String> {
        let name = format!("_mta-sts.{domain}.");
        let lookup = match self.resolver.txt_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(None),
            Err(e) => return Err(format!("TXT {name}: {e}")),
        };
        let mut ids = Vec::new();
        for txt in lookup.answers().iter().filter_map(|r| match &r.data {
            hickory_resolver::proto::rr::RData::TXT(t) => Some(t),
            _ => None,
        }) {
            // RFC 7208-style: the character strings of one record are concatenated.
            let text: String = txt
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect();
            if text.starts_with("v=STSv1") {
                match parse_txt(&text) {
                    Ok(id) => ids.push(id),
                    Err(e) => tracing::info!(target: "mtasts", "mta-sts: {name}: {e}"),
                }
            }
        }
        Ok(match ids.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        })
    }

    async fn fetch(&self, domain: &str, id: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let body = tokio::time::timeout(self.timeout, self.get(&host))
            .await
            .map_err(|_| format!("https://{host}/: timed out"))??;
        let text = std::str::from_utf8(&body)
            .map_err(|_| format!("https://{host}/: policy is not UTF-8"))?;
        Policy::parse(text, id).map_err(|e| format!("https://{host}/: bad policy: {e}"))
    }

    async fn get(&self, host: &str) -> Result<Vec<u8>, String> {
        let url = format!("https://{host}/.well-known/mta-sts.txt");
        let ips = self
            .resolver
            .lookup_ip(format!("{host}.").as_str())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut last = format!("{url}: no address");
        for ip in ips.iter() {
            match self
                .get_from(host, std::net::SocketAddr::new(ip, self.https_port))
                .await
            {
                Ok(body) => return Ok(body),
                Err(e) => last = format!("{url} ({ip}): {e}"),
            }
        }
        Err(last)
    }

    async fn get_from(&self, host: &str, addr: std::net::SocketAddr) -> Result<Vec<u8>, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fugu\r\n\
             Accept: text/plain\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match tls.read(&mut buf).await {
                Ok(n) => n,
                // Servers that close without close_notify: the length checks below
                // still catch a truncated body.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.to_string()),
            };
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if let Some(body) = http::complete_body(&response)? {
                return Ok(body);
            }
            if response.len() > MAX_POLICY + MAX_HEAD {
                return Err(format!("policy larger than {MAX_POLICY} bytes"));
            }
        }
        http::body_at_eof(&response)
    }
}

/// A sans-IO reader for one HTTP/1.1 response to our GET.
pub mod http {
    use super::MAX_POLICY;

    struct Head {
        body_start: usize,
        length: Option<usize>,
        chunked: bool,
    }

    /// Status, `Content-Type` and framing of a complete response head, or `None` when
    /// more bytes are needed.
    fn head(bytes: &[u8]) -> Result<Option<Head>, String> {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&bytes[..end]).map_err(|_| "response head is not text")?;
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let mut parts = status.split(' ');
        let (version, code) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1 response: {status:?}"));
        }
        // RFC 8461 §3.3: redirects are not followed; only 200 is a policy.
        if code != "200" {
            return Err(format!(
                "HTTP status {}",
                status.get(version.len() + 1..).unwrap_or(code)
            ));
        }
        let mut content_type = None;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_ascii_lowercase());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let media = content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned());
        if media.as_deref() != Some("text/plain") {
            return Err(format!(
                "Content-Type is {}, not text/plain",
                content_type.as_deref().unwrap_or("missing")
            ));
        }
        if length.is_some_and(|l| l > MAX_POLICY) {
            return Err(format!("policy larger than {MAX_POLICY} bytes"));
        }
        Ok(Some(Head {
            body_start: end + 4,
            length: if chunked { None } else { length },
            chunked,
        }))
    }

    /// The body once `bytes` holds all of it (by Content-Length or the last chunk).
    pub fn complete_body(bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Some(h) = head(bytes)? else {
            return Ok(None);
        };
        let body = &bytes[h.body_start..];
        if h.chunked {
            return dechunk(body);
        }
        Ok(match h.length {
            Some(l) if body.len() >= l => Some(body[..l].to_vec()),
            _ => None,
        })
    }

    /// The body when the server closed the connection after `bytes`.
    pub fn body_at_eof(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let h = head(bytes)?.ok_or("connection closed before the response head")?;
        let body = &bytes[h.body_start..];
        if h.chunked {
            return dechunk(body)?.ok_or_else(|| "chunked body cut short".into());
        }
        match h.length {
            Some(l) if body.len() < l => Err("body cut short".into()),
            Some(l) => Ok(body[..l].to_vec()),
            None if body.len() > MAX_POLICY => {
                Err(format!("policy larger than {MAX_POLICY} bytes"))
            }
            None => Ok(body.to_vec()),
        }
    }

    /// RFC 9112 §7.1 chunked coding; `None` until the last chunk has arrived.
    fn dechunk(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut out = Vec::new();
        loop {
            let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                return Ok(Some(out));
            }
            if out.len() + size > MAX_POLICY {
                return Err(format!("policy larger than {MAX_POLICY} bytes"));
            }
            let data = eol + 2;
            if body.len() < data + size + 2 {
                return Ok(None);
            }
            out.extend_from_slice(&body[data..data + size]);
            body = &body[data + size + 2..];
        }
    }
}

#[cfg(test)]
mod tests;
