//! The DNS resolver for outbound mail: the system's (`/etc/resolv.conf`) or the one the
//! configuration names with fugu's `resolver ADDR` extension.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// A resolver address that does not parse, or a system configuration that does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resolver {addr:?}: {reason}")]
pub struct ResolverError {
    pub addr: String,
    pub reason: String,
}

/// `ADDR` or `ADDR:PORT` (`[v6]:PORT` for IPv6 with a port); port 53 by default.
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip = s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

/// Builds the resolver: `config_resolver` is the `resolver` line of smtpd.conf, `None`
/// for the system configuration.
pub fn resolver(config_resolver: Option<&str>) -> Result<TokioResolver, ResolverError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match config_resolver {
        Some(addr) => {
            let sa = parse_server(addr).ok_or_else(|| ResolverError {
                addr: addr.to_string(),
                reason: "expected an IP address, optionally with :port".into(),
            })?;
            let conn = |protocol| {
                let mut c = ConnectionConfig::new(protocol);
                c.port = sa.port();
                c
            };
            let ns = NameServerConfig::new(
                sa.ip(),
                true,
                vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
            );
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            )
        }
        None => TokioResolver::builder(provider).map_err(|e| ResolverError {
            addr: "/etc/resolv.conf".into(),
            reason: e.to_string(),
        })?,
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    builder.build().map_err(|e| ResolverError {
        addr: config_resolver.unwrap_or("/etc/resolv.conf").to_string(),
        reason: e.to_string(),
    })
}
