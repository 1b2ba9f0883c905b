//! Where mail for a domain goes: RFC 5321 §5.1. MX records in preference order, random
//! among equal preferences; the domain's own A/AAAA when it has no MX; a null MX
//! (RFC 7505) refuses mail for good. `backup` keeps only MX hosts preferred over us.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::queue::Outcome;

/// One host to try, with its addresses (IPv6 and IPv4, as DNS gave them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// RFC 7505 §3: the domain accepts no mail.
    #[error("556 5.1.10 domain {0} has a null MX and accepts no mail")]
    NullMx(String),
    #[error("550 5.1.2 domain {0} does not exist (NXDOMAIN)")]
    NoDomain(String),
    #[error("550 5.1.2 domain {0} has no MX and no address")]
    NoAddress(String),
    /// DNS trouble, or nothing usable this time: try again later.
    #[error("451 4.4.3 {0}")]
    Temp(String),
}

impl MxError {
    pub fn outcome(&self) -> Outcome {
        match self {
            MxError::Temp(_) => Outcome::TempFail(self.to_string()),
            _ => Outcome::PermFail(self.to_string()),
        }
    }
}

/// The MX names to try, in order: lowest preference first, shuffled among equals with
/// `rand(n)` (a number below n). With `backup` set to our own name, only hosts with a
/// lower preference than ours remain (RFC 5321 §5.1: never relay to ourselves or worse).
pub fn order(
    domain: &str,
    mut records: Vec<(u16, String)>,
    backup: Option<&str>,
    rand: &mut dyn FnMut(usize) -> usize,
) -> Result<Vec<(u16, String)>, MxError> {
    for r in &mut records {
        r.1 = r.1.trim_end_matches('.').to_ascii_lowercase();
    }
    if records.iter().any(|(_, n)| n.is_empty()) {
        return Err(MxError::NullMx(domain.to_string()));
    }
    // Fisher–Yates first, then a stable sort by preference keeps equals shuffled.
    for i in (1..records.len()).rev() {
        let j = rand(i + 1);
        records.swap(i, j);
    }
    records.sort_by_key(|r| r.0);
    if let Some(me) = backup {
        let me = me.trim_end_matches('.').to_ascii_lowercase();
        if let Some(mine) = records.iter().find(|r| r.1 == me).map(|r| r.0) {
            records.retain(|r| r.0 < mine);
            if records.is_empty() {
                return Err(MxError::Temp(format!(
                    "backup MX for {domain}: no MX with a lower preference than {me}"
                )));
            }
        }
    }
    Ok(records)
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A domain written as an address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// The addresses of `host`: Ok(empty) when it has none.
pub async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    // Boxed: a lookup's future is kilobytes, and it would otherwise be part of every
    // delivery's, also to an address that needs no lookup.
    match Box::pin(resolver.lookup_ip(fqdn(host))).await {
        Ok(l) => Ok(l.iter().collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// The hosts for `domain`, in the order to try them.
pub async fn resolve(
    resolver: &TokioResolver,
    domain: &str,
    backup: Option<&str>,
) -> Result<Vec<MxHost>, MxError> {
    if let Some(ip) = address_literal(domain) {
        return Ok(vec![MxHost {
            name: ip.to_string(),
            preference: 0,
            addrs: vec![ip],
        }]);
    }
    let records = match Box::pin(resolver.lookup(fqdn(domain), RecordType::MX)).await {
        Ok(l) => l
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Err(e) if e.is_nx_domain() => return Err(MxError::NoDomain(domain.to_string())),
        Err(e) if e.is_no_records_found() => Vec::new(),
        Err(e) => {
            return Err(MxError::Temp(format!(
                "cannot look up the MX of {domain}: {e}"
            )));
        }
    };
    if records.is_empty() {
        // RFC 5321 §5.1: no MX, the domain itself is the host (implicit MX, preference 0).
        let addrs = addresses(resolver, domain).await.map_err(MxError::Temp)?;
        if addrs.is_empty() {
            return Err(MxError::NoAddress(domain.to_string()));
        }
        return Ok(vec![MxHost {
            name: domain.to_ascii_lowercase(),
            preference: 0,
            addrs,
        }]);
    }
    let mut rand = |n: usize| (crate::queue::id::random_u64() % n as u64) as usize;
    let names = order(domain, records, backup, &mut rand)?;
    let mut hosts = Vec::with_capacity(names.len());
    let mut errors = Vec::new();
    for (preference, name) in names {
        match addresses(resolver, &name).await {
            Ok(addrs) if addrs.is_empty() => errors.push(format!("{name} has no address")),
            Ok(addrs) => hosts.push(MxHost {
                name,
                preference,
                addrs,
            }),
            Err(e) => errors.push(e),
        }
    }
    if hosts.is_empty() {
        return Err(MxError::Temp(format!(
            "no usable MX host for {domain}: {}",
            errors.join("; ")
        )));
    }
    Ok(hosts)
}
