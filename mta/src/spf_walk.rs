//! `spf walk`, like `smtpctl spf walk`: every IPv4/IPv6 network a domain's SPF record
//! allows, following `include:`, `redirect=`, `a` and `mx` (with their `/cidr` suffixes).
//! The result feeds allow lists, so large senders skip greylisting.
//!
//! Only pass mechanisms (no qualifier or `+`) are listed: `-`, `~` and `?` ones allow
//! nothing. `ptr`, `exists` and macros cannot be turned into networks; they are counted
//! against the limits and reported. Limits per walked domain: RFC 7208 §4.6.4 (10
//! DNS-querying terms, 2 void lookups, 10 MX names); a domain met again on its own
//! include/redirect chain is a loop, reported and not followed.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use crate::access::net::Network;

/// RFC 7208 §4.6.4: at most 10 terms that cause DNS queries.
pub const MAX_DNS_TERMS: u32 = 10;
/// RFC 7208 §4.6.4: at most 2 lookups answering NXDOMAIN or no records.
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// RFC 7208 §4.6.4: an `mx` looks up at most 10 exchangers.
pub const MAX_MX_NAMES: usize = 10;

/// What a walk found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walk {
    pub networks: BTreeSet<Network>,
    /// Loops, limits, records that cannot be listed, lookups that failed.
    pub problems: Vec<String>,
}

struct Budget {
    terms: u32,
    voids: u32,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Walks each domain (its own limits each), merging the networks.
pub async fn walk(resolver: &TokioResolver, domains: &[String]) -> Walk {
    let mut out = Walk::default();
    for d in domains {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() {
            continue;
        }
        let mut budget = Budget { terms: 0, voids: 0 };
        let mut chain = Vec::new();
        walk_domain(resolver, d, &mut chain, &mut budget, &mut out).await;
    }
    out
}

fn walk_domain<'a>(
    r: &'a TokioResolver,
    domain: String,
    chain: &'a mut Vec<String>,
    budget: &'a mut Budget,
    out: &'a mut Walk,
) -> Boxed<'a> {
    Box::pin(async move {
        if chain.contains(&domain) {
            out.problems
                .push(format!("loop: {} -> {domain}", chain.join(" -> ")));
            return;
        }
        let record = match spf_record(r, &domain, budget).await {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                out.problems.push(format!("{domain}: no SPF record"));
                return;
            }
            Err(e) => {
                out.problems.push(format!("{domain}: {e}"));
                return;
            }
        };
        chain.push(domain.clone());
        let mut redirect = None;
        let mut has_all = false;
        for term in record.split_ascii_whitespace().skip(1) {
            if let Some(target) = term.strip_prefix("redirect=") {
                redirect = Some(target.to_ascii_lowercase());
                continue;
            }
            if term.contains('=') {
                // Other modifiers (exp=) do not allow anything.
                continue;
            }
            let (pass, mech) = match term.as_bytes().first() {
                Some(b'+') => (true, &term[1..]),
                Some(b'-' | b'~' | b'?') => (false, &term[1..]),
                _ => (true, term),
            };
            let lower = mech.to_ascii_lowercase();
            let (name, arg) = match lower.split_once([':', '/']) {
                Some((n, _)) => (n, &lower[n.len()..]),
                None => (lower.as_str(), ""),
            };
            let queries_dns = matches!(name, "include" | "a" | "mx" | "ptr" | "exists");
            if queries_dns {
                budget.terms += 1;
                if budget.terms > MAX_DNS_TERMS {
                    out.problems.push(format!(
                        "{domain}: more than {MAX_DNS_TERMS} DNS-querying terms, stopped"
                    ));
                    break;
                }
            }
            match name {
                "all" => has_all = true,
                "ip4" | "ip6" if pass => match arg.trim_start_matches(':').parse::<Network>() {
                    Ok(n) => {
                        out.networks.insert(n);
                    }
                    Err(_) => out.problems.push(format!("{domain}: bad {term}")),
                },
                "include" if pass => {
                    let target = arg.trim_start_matches(':').to_string();
                    if target.contains('%') {
                        out.problems
                            .push(format!("{domain}: macro in {term} not walked"));
                        continue;
                    }
                    walk_domain(r, target, chain, budget, out).await;
                }
                "a" | "mx" if pass => {
                    let Some((target, c4, c6)) = parse_target(arg, &domain) else {
                        out.problems.push(format!("{domain}: bad {term}"));
                        continue;
                    };
                    if target.contains('%') {
                        out.problems
                            .push(format!("{domain}: macro in {term} not walked"));
                        continue;
                    }
                    let hosts = if name == "mx" {
                        match mx_names(r, &target, budget).await {
                            Ok(h) => h,
                            Err(e) => {
                                out.problems.push(format!("{domain}: {term}: {e}"));
                                continue;
                            }
                        }
                    } else {
                        vec![target]
                    };
                    for h in hosts {
                        for ip in addresses(r, &h, budget).await {
                            let len = if ip.is_ipv4() { c4 } else { c6 };
                            out.networks.insert(Network::new(ip, len));
                        }
                    }
                }
                "ptr" | "exists" if pass => {
                    out.problems
                        .push(format!("{domain}: {term} cannot be listed as networks"));
                }
                _ => {}
            }
            if budget.voids > MAX_VOID_LOOKUPS {
                out.problems.push(format!(
                    "{domain}: more than {MAX_VOID_LOOKUPS} void lookups, stopped"
                ));
                break;
            }
        }
        // RFC 7208 §6.1: redirect applies only when no `all` mechanism matched.
        if let Some(target) = redirect
            && !has_all
        {
            budget.terms += 1;
            if budget.terms > MAX_DNS_TERMS {
                out.problems.push(format!(
                    "{domain}: more than {MAX_DNS_TERMS} DNS-querying terms, stopped"
                ));
            } else {
                // The redirect replaces this record: it is still on the chain for loops.
                walk_domain(r, target, chain, budget, out).await;
            }
        }
        chain.pop();
    })
}

/// `:domain/c4//c6` after `a` or `mx`; defaults to the current domain, /32 and /128.
fn parse_target(arg: &str, domain: &str) -> Option<(String, u8, u8)> {
    let (spec, cidrs) = match arg.find('/') {
        Some(i) => (&arg[..i], &arg[i..]),
        None => (arg, ""),
    };
    let target = match spec.strip_prefix(':') {
        Some(t) if !t.is_empty() => t.trim_end_matches('.').to_string(),
        Some(_) => return None,
        None if spec.is_empty() => domain.to_string(),
        None => return None,
    };
    let (c4, c6) = match cidrs.split_once("//") {
        Some((v4, v6)) => (v4, Some(v6)),
        None => (cidrs, None),
    };
    let c4 = match c4.strip_prefix('/') {
        Some(n) => n.parse().ok().filter(|n| *n <= 32)?,
        None if c4.is_empty() => 32,
        None => return None,
    };
    let c6 = match c6 {
        Some(n) => n.parse().ok().filter(|n| *n <= 128)?,
        None => 128,
    };
    Some((target, c4, c6))
}

fn is_void(e: &hickory_resolver::net::NetError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

async fn spf_record(
    r: &TokioResolver,
    domain: &str,
    budget: &mut Budget,
) -> Result<Option<String>, String> {
    let lookup = match r.txt_lookup(format!("{domain}.")).await {
        Ok(l) => l,
        Err(e) if is_void(&e) => {
            budget.voids += 1;
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut found: Vec<String> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .filter(|t| {
            let l = t.to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect();
    match found.len() {
        0 => Ok(None),
        // RFC 7208 §4.5: more than one record is a permerror.
        1 => Ok(found.pop()),
        n => Err(format!("{n} SPF records (permerror)")),
    }
}

async fn mx_names(
    r: &TokioResolver,
    domain: &str,
    budget: &mut Budget,
) -> Result<Vec<String>, String> {
    match r.mx_lookup(format!("{domain}.")).await {
        Ok(l) => {
            let mut names: Vec<(u16, String)> = l
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_ascii().trim_end_matches('.').to_string(),
                    )),
                    _ => None,
                })
                .collect();
            names.sort();
            Ok(names
                .into_iter()
                .map(|(_, n)| n)
                .take(MAX_MX_NAMES)
                .collect())
        }
        Err(e) if is_void(&e) => {
            budget.voids += 1;
            Ok(Vec::new())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A and AAAA of `host`; a host with neither is one void lookup.
async fn addresses(r: &TokioResolver, host: &str, budget: &mut Budget) -> Vec<IpAddr> {
    let name = format!("{host}.");
    let mut ips = Vec::new();
    if let Ok(l) = r.ipv4_lookup(name.as_str()).await {
        ips.extend(l.answers().iter().filter_map(|rec| match &rec.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        }));
    }
    if let Ok(l) = r.ipv6_lookup(name.as_str()).await {
        ips.extend(l.answers().iter().filter_map(|rec| match &rec.data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        }));
    }
    if ips.is_empty() {
        budget.voids += 1;
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_and_mx_targets_take_dual_cidr_suffixes() {
        assert_eq!(
            parse_target("", "example.org"),
            Some(("example.org".into(), 32, 128))
        );
        assert_eq!(
            parse_target(":mail.example.org/24//64", "x"),
            Some(("mail.example.org".into(), 24, 64))
        );
        assert_eq!(
            parse_target("//48", "example.org"),
            Some(("example.org".into(), 32, 48))
        );
        assert_eq!(parse_target("/33", "example.org"), None);
        assert_eq!(parse_target(":", "example.org"), None);
    }
}
