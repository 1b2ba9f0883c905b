//! The console's configuration: a typed value the binary builds from `fugu.toml` and its
//! command line, passed into [`crate::serve`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// An address range in the allow-list, e.g. `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client reaching an IPv6 socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Loopback and private ranges: the console's default audience.
    pub fn private_defaults() -> Vec<Cidr> {
        [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Where the console's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files written by the provisioner (ACME or manual).
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed ECDSA certificate kept in `dir` (`console-cert.pem`,
    /// `console-key.pem`), generated at first start for `names`.
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// HTTPS listeners (the console and API).
    pub listen: Vec<SocketAddr>,
    /// Plain HTTP listeners that redirect to HTTPS (port 80 on a real box).
    pub http_listen: Vec<SocketAddr>,
    pub db_path: PathBuf,
    /// Console sessions, kept apart from fugu.db so that logins do not bump its counter.
    pub sessions_path: PathBuf,
    /// Clients outside these ranges get 403 from the console and API.
    pub allow: Vec<Cidr>,
    pub tls: TlsSource,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however active.
    pub absolute_timeout: Duration,
    /// Failed sign-ins allowed per account, and per client address, within `login_window`.
    pub login_max_failures_account: i64,
    pub login_max_failures_ip: i64,
    pub login_window: Duration,
    /// The mta's control socket (`<spool>/control.sock`) for the queue page; `None` shows
    /// "the mta is not running on this box".
    pub control_socket: Option<PathBuf>,
    /// The mail host name (`hostname` in fugu.toml): MX target, MTA-STS `mx:`, TLSA owner.
    pub mail_hostname: String,
    /// The server's public addresses (`public_addresses` in fugu.toml): A/AAAA hints,
    /// reverse-DNS and block-list checks.
    pub public_addrs: Vec<IpAddr>,
    /// The DNS server live checks ask (`resolver`); `None` uses /etc/resolv.conf.
    pub resolver: Option<SocketAddr>,
    /// DNS block lists the public addresses are checked against.
    pub dnsbls: Vec<String>,
    /// Which client services the box offers, for SRV hints and autoconfig.
    pub services: MailServices,
    /// What "now" is for certificate renewal (a manual clock in tests).
    pub clock: crate::clock::SharedClock,
    /// ACME: the CA trusted for the directory, the renewal schedule, HTTP-01 answers.
    pub acme: crate::acme::AcmeConfig,
}

/// Ports of the client services announced in DNS (RFC 6186) and autoconfig; `None` for
/// a service the box does not offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailServices {
    pub submissions: Option<u16>,
    pub submission: Option<u16>,
    pub imaps: Option<u16>,
    pub pop3s: Option<u16>,
}

impl Default for MailServices {
    /// RFC 8314: implicit TLS for submission and IMAP, STARTTLS submission for older
    /// clients, no POP3.
    fn default() -> MailServices {
        MailServices {
            submissions: Some(465),
            submission: Some(587),
            imaps: Some(993),
            pop3s: None,
        }
    }
}

impl Config {
    /// A configuration with the defaults: private networks allowed, a self-signed
    /// certificate next to the database, 30 minutes idle, 12 hours absolute.
    pub fn new(listen: SocketAddr, db_path: PathBuf) -> Config {
        let dir = db_path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        Config {
            listen: vec![listen],
            http_listen: Vec::new(),
            sessions_path: dir.join("sessions.db"),
            db_path,
            allow: Cidr::private_defaults(),
            tls: TlsSource::SelfSigned {
                dir,
                names: vec!["localhost".to_string()],
            },
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            login_max_failures_account: 5,
            login_max_failures_ip: 20,
            login_window: Duration::from_secs(15 * 60),
            control_socket: None,
            mail_hostname: "localhost".to_string(),
            public_addrs: Vec::new(),
            resolver: None,
            dnsbls: vec!["zen.spamhaus.org".to_string(), "bl.spamcop.net".to_string()],
            services: MailServices::default(),
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            acme: crate::acme::AcmeConfig::default(),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_defaults_admit_loopback_and_lan_but_not_the_internet() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            PathBuf::from("/tmp/x/fugu.db"),
        );
        assert!(c.allows("127.0.0.1".parse().unwrap()));
        assert!(c.allows("::ffff:192.168.1.9".parse().unwrap()));
        assert!(c.allows("fd00::5".parse().unwrap()));
        assert!(!c.allows("203.0.113.7".parse().unwrap()));
        c.allow = vec!["203.0.113.0/24".parse().unwrap()];
        assert!(c.allows("203.0.113.7".parse().unwrap()));
        assert!(!c.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn cidr_rejects_nonsense() {
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.org".parse::<Cidr>().is_err());
        assert_eq!(
            "10.0.0.1".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.1/32"
        );
    }
}
