//! The configuration's `listen on` lines as bound listeners, plus the always-present
//! local enqueue socket.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::{StartError, State};
use crate::config::{Config, Family, ListenAuth, ListenOn, ListenTls, Listener as ListenConf};
use crate::server::tls::{CertSwitch, Pki, TlsOptions, reloadable_server_config_with};
use crate::server::{Limits, ListenAddr, Listener};
use crate::session::{AuthPolicy, SessionConfig, TlsPolicy};

/// The local enqueuer's socket in the spool (`fugu sendmail` connects here).
pub const ENQUEUE_SOCKET: &str = "enqueue.sock";

/// A TLS listener's certificates, for reload: the `pki` names it was configured with and
/// the switch that swaps them.
pub(super) struct TlsHandle {
    pub pki: Vec<String>,
    pub switch: Arc<CertSwitch>,
}

pub(super) fn listeners(
    state: &State,
    spool: &Path,
) -> Result<(Vec<Listener>, Vec<TlsHandle>), StartError> {
    let cfg = &state.config;
    let mut out = Vec::new();
    let mut handles = Vec::new();
    let mut socket_options = None;
    for (i, l) in cfg.listeners.iter().enumerate() {
        if l.on == ListenOn::Socket {
            socket_options = Some(i);
            continue;
        }
        let session = Arc::new(session_config(cfg, l, i, &state.hostname));
        let tls = match l.tls {
            ListenTls::Plain => None,
            _ => {
                let opts = TlsOptions {
                    client_ca: client_ca(cfg, l)?,
                    ciphers: l.ciphers.as_deref().or(cfg.smtp.ciphers.as_deref()),
                    protocols: l.protocols.as_deref(),
                };
                let (config, switch) = reloadable_server_config_with(&pkis(cfg, &l.pki)?, &opts)?;
                handles.push(TlsHandle {
                    pki: l.pki.clone(),
                    switch,
                });
                Some(config)
            }
        };
        let port = l
            .port
            .unwrap_or(if matches!(l.tls, ListenTls::Smtps { .. }) {
                465
            } else {
                25
            });
        for ip in addresses(l)? {
            out.push(Listener {
                addr: ListenAddr::Tcp(SocketAddr::new(ip, port)),
                session: session.clone(),
                tls: tls.clone(),
                filters: None,
            });
        }
    }
    // `listen on socket` only adds options: the enqueuer is always there.
    let session = match socket_options {
        Some(i) => session_config(cfg, &cfg.listeners[i], i, &state.hostname),
        None => {
            let mut s = SessionConfig::new(state.hostname.clone());
            s.listener = cfg.listeners.len();
            s.max_message_size = cfg.max_message_size();
            s
        }
    };
    out.push(Listener {
        addr: ListenAddr::Unix(spool.join(ENQUEUE_SOCKET)),
        session: Arc::new(session),
        tls: None,
        filters: None,
    });
    Ok((out, handles))
}

/// The server-wide connection limits from `smtp limit` (fugu extensions).
pub(super) fn limits(cfg: &Config) -> Limits {
    Limits {
        max_sessions: usize::try_from(cfg.max_sessions()).unwrap_or(usize::MAX),
        max_sessions_per_ip: usize::try_from(cfg.max_sessions_per_ip()).unwrap_or(usize::MAX),
        per_ip_covers_loopback: cfg.smtp.max_sessions_per_ip.is_some(),
        max_conn_rate_per_ip: u32::try_from(cfg.max_conn_rate()).unwrap_or(u32::MAX),
        ..Limits::default()
    }
}

fn session_config(cfg: &Config, l: &ListenConf, index: usize, hostname: &str) -> SessionConfig {
    let mut s = SessionConfig::new(l.hostname.clone().unwrap_or_else(|| hostname.to_string()));
    s.listener = index;
    s.max_message_size = cfg.max_message_size();
    s.max_rcpt = usize::try_from(cfg.max_rcpt()).unwrap_or(usize::MAX);
    s.max_mails = usize::try_from(cfg.max_mails()).unwrap_or(usize::MAX);
    s.max_header_size = usize::try_from(cfg.max_header_size()).unwrap_or(usize::MAX);
    s.max_header_field = usize::try_from(cfg.max_header_field()).unwrap_or(usize::MAX);
    s.tls = match l.tls {
        ListenTls::Plain => TlsPolicy::None,
        ListenTls::Starttls => TlsPolicy::StartTls,
        ListenTls::Require { .. } => TlsPolicy::StartTlsRequired,
        ListenTls::Smtps { .. } => TlsPolicy::Implicit,
    };
    s.auth = match l.auth {
        None => AuthPolicy::None,
        Some(ListenAuth::Required(_)) => AuthPolicy::Required,
        Some(ListenAuth::Optional(_)) => AuthPolicy::Optional,
    };
    s.dsn = !l.no_dsn;
    s.tag = l.tag.clone();
    s.mask_src = l.mask_src;
    s.received_auth = l.received_auth;
    s
}

/// `smtps verify` / `tls-require verify`: the listener's `ca` file, which client
/// certificates must chain to.
fn client_ca<'c>(cfg: &'c Config, l: &ListenConf) -> Result<Option<&'c Path>, StartError> {
    let verify = matches!(
        l.tls,
        ListenTls::Require { verify: true } | ListenTls::Smtps { verify: true }
    );
    if !verify {
        return Ok(None);
    }
    let Some(name) = &l.ca else {
        return Err(StartError::Other(
            "a listener with verify needs a ca for its client certificates".into(),
        ));
    };
    match cfg.ca.get(name) {
        Some(ca) => Ok(Some(ca.cert.as_path())),
        None => Err(StartError::Other(format!(
            "listener uses unknown ca {name}"
        ))),
    }
}

/// The `pki` blocks named `names` in `cfg`, as certificate and key paths.
pub(super) fn pkis(cfg: &Config, names: &[String]) -> Result<Vec<Pki>, StartError> {
    let mut pkis = Vec::new();
    for name in names {
        let Some(p) = cfg.pki.get(name) else {
            return Err(StartError::Other(format!(
                "listener uses unknown pki {name}"
            )));
        };
        let (Some(cert), Some(key)) = (&p.cert, &p.key) else {
            return Err(StartError::Other(format!(
                "pki {name} needs both cert and key"
            )));
        };
        pkis.push(Pki {
            name: name.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    Ok(pkis)
}

/// The addresses a `listen on` names: an address, an interface (its addresses), or a
/// host name (what it resolves to), filtered by `inet4`/`inet6`.
fn addresses(l: &ListenConf) -> Result<Vec<IpAddr>, StartError> {
    let mut ips: Vec<IpAddr> = match &l.on {
        ListenOn::Addr(ip) => vec![*ip],
        ListenOn::Socket => Vec::new(),
        ListenOn::Name(name) => {
            let mut found = interface_addresses(name);
            if found.is_empty() {
                use std::net::ToSocketAddrs;
                found = (name.as_str(), 25)
                    .to_socket_addrs()
                    .map_err(|e| {
                        StartError::Other(format!(
                            "listen on {name}: no such interface, and it does not resolve: {e}"
                        ))
                    })?
                    .map(|sa| sa.ip())
                    .collect();
            }
            found
        }
    };
    ips.retain(|ip| match l.family {
        Some(Family::Inet4) => ip.is_ipv4(),
        Some(Family::Inet6) => ip.is_ipv6(),
        None => true,
    });
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(StartError::Other(format!(
            "listen on {:?}: no address to listen on",
            l.on
        )));
    }
    Ok(ips)
}

fn interface_addresses(name: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        // Link-local IPv6 addresses need a scope id to bind; OpenSMTPD skips them too.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect()
}

/// `queue encryption KEY` (32 characters) or `queue encryption` (key on standard input).
pub(super) fn queue_key(cfg: &Config) -> Result<Option<[u8; 32]>, StartError> {
    let text = match &cfg.queue.encryption {
        None => return Ok(None),
        Some(Some(k)) => k.clone(),
        Some(None) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| {
                StartError::Other(format!(
                    "queue encryption: cannot read the key on standard input: {e}"
                ))
            })?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    <[u8; 32]>::try_from(text.as_bytes())
        .map(Some)
        .map_err(|_| {
            StartError::Other(format!(
                "queue encryption: the key must be 32 characters, not {}",
                text.len()
            ))
        })
}
