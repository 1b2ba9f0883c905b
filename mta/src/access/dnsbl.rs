//! DNS block lists at connect: each configured zone is asked for the client's reversed
//! address; a listing adds the zone's weight, and a client whose weights reach the
//! threshold is refused.
//!
//! Only listing codes count: an A record in 127.0.0.2–127.0.0.255 (RFC 5782 §2.1),
//! except 127.255.255.0/24, which Spamhaus answers to queries through public or
//! unregistered resolvers ("your query was refused"). Such an answer is "unknown",
//! logged once per zone, never a listing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use super::DnsblZone;
use super::net::canonical_ip;

/// What one A record from a block list means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Listed,
    /// 127.255.255.x: the list refused to answer (public resolver, rate limit…).
    Unknown,
    /// Anything else is not a listing code.
    Ignored,
}

pub fn classify(a: Ipv4Addr) -> Answer {
    let [a0, a1, a2, a3] = a.octets();
    match (a0, a1, a2, a3) {
        (127, 255, 255, _) => Answer::Unknown,
        (127, 0, 0, 2..=255) => Answer::Listed,
        _ => Answer::Ignored,
    }
}

/// The name to ask `zone` about `ip`: reversed octets, or reversed nibbles for IPv6
/// (RFC 5782 §2.1, §2.4).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + zone.len());
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str(zone);
            s.push('.');
            s
        }
    }
}

/// The zones that list a client and their summed weight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    pub weight: u32,
    pub listed_by: Vec<String>,
}

/// A resolver for block list queries and the zones already reported as "unknown".
pub struct Dnsbl {
    resolver: TokioResolver,
    unknown_logged: Mutex<HashSet<String>>,
}

/// `resolver ADDR` (an IP, or IP:port): the DNS server to ask. `None` uses the system's
/// `/etc/resolv.conf`, the path the libc resolver takes too.
pub fn resolver(server: Option<&str>) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let builder = match server {
        Some(s) => {
            let sa: SocketAddr = s
                .parse()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| format!("invalid resolver address: {s}"))?;
            let conn = |p: ProtocolConfig| {
                let mut c = ConnectionConfig::new(p);
                c.port = sa.port();
                c
            };
            let ns = NameServerConfig::new(
                sa.ip(),
                true,
                vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
            );
            let cfg = ResolverConfig::from_parts(None, vec![], vec![ns]);
            TokioResolver::builder_with_config(cfg, provider)
        }
        None => TokioResolver::builder(provider).map_err(|e| e.to_string())?,
    };
    let mut opts = ResolverOpts::default();
    opts.timeout = std::time::Duration::from_secs(5);
    opts.attempts = 1;
    builder
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())
}

impl Dnsbl {
    pub fn new(server: Option<&str>) -> Result<Dnsbl, String> {
        Ok(Dnsbl {
            resolver: resolver(server)?,
            unknown_logged: Mutex::new(HashSet::new()),
        })
    }

    /// Asks every zone about `ip` (in parallel). A zone that cannot be asked counts as
    /// not listing: a broken list must not stop all mail.
    pub async fn score(&self, zones: &[DnsblZone], ip: IpAddr) -> Score {
        let lookups = zones.iter().map(|z| {
            let name = query_name(ip, &z.zone);
            async move { (z, self.resolver.ipv4_lookup(name.as_str()).await) }
        });
        let mut score = Score::default();
        for (zone, result) in futures_join(lookups).await {
            let Ok(lookup) = result else { continue };
            let answers: Vec<Answer> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(classify(a.0)),
                    _ => None,
                })
                .collect();
            if answers.contains(&Answer::Listed) {
                score.weight += zone.weight;
                score.listed_by.push(zone.zone.clone());
            } else if answers.contains(&Answer::Unknown) {
                let first = self
                    .unknown_logged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(zone.zone.clone());
                if first {
                    tracing::warn!(
                        "dnsbl zone={} answered 127.255.255.x: the list refuses this resolver; \
                         its answers are ignored",
                        zone.zone
                    );
                }
            }
        }
        score
    }
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listing_codes_count() {
        assert_eq!(classify(Ipv4Addr::new(127, 0, 0, 2)), Answer::Listed);
        assert_eq!(classify(Ipv4Addr::new(127, 0, 0, 11)), Answer::Listed);
        assert_eq!(classify(Ipv4Addr::new(127, 255, 255, 254)), Answer::Unknown);
        assert_eq!(classify(Ipv4Addr::new(127, 0, 0, 1)), Answer::Ignored);
        assert_eq!(classify(Ipv4Addr::new(10, 0, 0, 2)), Answer::Ignored);
    }

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "zen.example"),
            "99.2.0.192.zen.example."
        );
        assert_eq!(
            query_name("2001:db8::1".parse().unwrap(), "bl.example."),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }
}
