//! The client's reverse name, as OpenSMTPD learns it at connect: the first PTR name of
//! the address, then a forward lookup of that name to see whether it leads back to the
//! address (forward-confirmed reverse DNS, "FCrDNS").
//!
//! The name is what `smtp connected … host=` logs, what the Received header shows in
//! its `from` clause and what `match from rdns` looks at; like OpenSMTPD it is the PTR
//! name whether or not it is confirmed (`confirmed` says which). Lookups go to the
//! configuration's `resolver` (a fugu extension) or the system's, and the whole
//! exchange is bounded by [`TIMEOUT`]: a slow DNS server delays the banner, never
//! holds it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;

use crate::access::net::canonical_ip;
use hickory_resolver::proto::rr::RData;

/// The most the PTR and forward lookups together may take before the session starts
/// without a name.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What the reverse lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReverseName {
    /// The PTR name, lower-case, without the final dot; `None` when there is none, it is
    /// not a valid host name, or the lookup failed or timed out.
    pub name: Option<String>,
    /// The name's A/AAAA records include the client's address.
    pub confirmed: bool,
}

/// Looks up `ip`'s reverse name with `resolver`, within `timeout`.
pub async fn lookup(resolver: &TokioResolver, ip: IpAddr, timeout: Duration) -> ReverseName {
    tokio::time::timeout(timeout, lookup_unbounded(resolver, ip))
        .await
        .unwrap_or_default()
}

async fn lookup_unbounded(resolver: &TokioResolver, ip: IpAddr) -> ReverseName {
    let Ok(ptr) = resolver.reverse_lookup(ip).await else {
        return ReverseName::default();
    };
    let name = ptr.answers().iter().find_map(|r| match &r.data {
        RData::PTR(p) => host_name(&p.0.to_ascii()),
        _ => None,
    });
    let Some(name) = name else {
        return ReverseName::default();
    };
    let confirmed = match resolver.lookup_ip(format!("{name}.")).await {
        Ok(addrs) => addrs.iter().any(|a| canonical_ip(a) == canonical_ip(ip)),
        Err(_) => false,
    };
    ReverseName {
        name: Some(name),
        confirmed,
    }
}

/// A PTR target usable as a host name in logs and headers: letters, digits, `-`, `_`
/// and dots only (anything else could forge log fields or a header comment).
fn host_name(ptr: &str) -> Option<String> {
    let name = ptr.trim_end_matches('.').to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(name)
}

/// How long a looked-up name is reused. Many connections from one address (a peer's
/// queue runner, a load of submissions) ask once, and a DNS server that drops queries
/// stalls one banner per address rather than every banner.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// Addresses remembered at most; past it, expired entries go, then all of them.
const CACHE_ENTRIES: usize = 4096;

type Cell = Arc<tokio::sync::OnceCell<ReverseName>>;

/// The daemon's reverse resolver: one hickory resolver for the configured server
/// (rebuilt when a reload changes it) and a cache of answers in which concurrent
/// connections from one address share one lookup.
#[derive(Default)]
pub struct ReverseResolver {
    current: Mutex<Option<(Option<String>, TokioResolver)>>,
    cache: Mutex<HashMap<IpAddr, (Instant, Cell)>>,
}

impl ReverseResolver {
    /// The reverse name of `ip`, asked of `server` (`None`: the system's resolver).
    /// Loopback addresses are this host itself: `localhost`, without asking DNS.
    pub async fn lookup(&self, server: Option<&str>, ip: IpAddr) -> ReverseName {
        let ip = canonical_ip(ip);
        if ip.is_loopback() {
            return ReverseName {
                name: Some("localhost".to_string()),
                confirmed: true,
            };
        }
        let Some(resolver) = self.resolver(server) else {
            return ReverseName::default();
        };
        let cell = self.cell(ip, Instant::now());
        cell.get_or_init(|| lookup(&resolver, ip, TIMEOUT))
            .await
            .clone()
    }

    fn resolver(&self, server: Option<&str>) -> Option<TokioResolver> {
        let mut g = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some((s, r)) if s.as_deref() == server => Some(r.clone()),
            _ => match crate::access::dnsbl::resolver(server) {
                Ok(r) => {
                    *g = Some((server.map(str::to_string), r.clone()));
                    // Answers from the previous server are not this one's.
                    self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!("rdns: no resolver: {e}");
                    None
                }
            },
        }
    }

    /// The cache cell for `ip`: a fresh one when there is none or it is older than
    /// [`CACHE_TTL`].
    fn cell(&self, ip: IpAddr, now: Instant) -> Cell {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, cell)) = cache.get(&ip)
            && now.saturating_duration_since(*at) < CACHE_TTL
        {
            return cell.clone();
        }
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| now.saturating_duration_since(*at) < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        let cell = Cell::default();
        cache.insert(ip, (now, cell.clone()));
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names_are_lowercased_and_checked() {
        assert_eq!(
            host_name("Mail.Example.NET.").as_deref(),
            Some("mail.example.net")
        );
        assert_eq!(
            host_name("a_b-1.example.").as_deref(),
            Some("a_b-1.example")
        );
        assert_eq!(host_name("."), None);
        assert_eq!(host_name("evil\\032host=x.example."), None);
        assert_eq!(host_name("a..b"), None);
        assert_eq!(host_name(&format!("{}.example", "x".repeat(64))), None);
    }

    #[tokio::test]
    async fn loopback_is_localhost_without_asking_dns() {
        let r = ReverseResolver::default();
        // A server nobody answers on: a DNS query would time out, not answer.
        let got = r.lookup(Some("127.0.0.1:9"), "::1".parse().unwrap()).await;
        assert_eq!(got.name.as_deref(), Some("localhost"));
        assert!(got.confirmed);
        assert_eq!(
            r.lookup(Some("127.0.0.1:9"), "127.3.4.5".parse().unwrap())
                .await
                .name
                .as_deref(),
            Some("localhost")
        );
    }

    #[test]
    fn one_address_shares_a_cache_cell_until_it_expires() {
        let r = ReverseResolver::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        let a = r.cell(ip, t0);
        assert!(Arc::ptr_eq(&a, &r.cell(ip, t0 + Duration::from_secs(10))));
        assert!(!Arc::ptr_eq(&a, &r.cell("192.0.2.8".parse().unwrap(), t0)));
        assert!(!Arc::ptr_eq(&a, &r.cell(ip, t0 + CACHE_TTL)));
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), v4);
        assert_eq!(canonical_ip(v4), v4);
    }
}
