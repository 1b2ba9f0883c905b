//! OpenSMTPD's builtin tables: `<localhost>`, `<anyhost>`, `<localnames>`,
//! `<anydestination>` and `<getpwnam>`.

use std::net::IpAddr;

use super::static_table::{hostname_match, in_network, parse_ip};
use super::{LookupError, Service, Table};

/// What the local tables need to know about this host: its server name and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIdentity {
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
}

impl LocalIdentity {
    /// The server name as smtpd picks it: first line of `/etc/mail/mailname`, else the
    /// kernel host name. Addresses: loopback only (interfaces are the listener's business).
    pub fn system() -> LocalIdentity {
        let hostname = std::fs::read_to_string("/etc/mail/mailname")
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "localhost".to_owned());
        LocalIdentity {
            hostname,
            addresses: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Builtin {
    Localhost,
    Anyhost,
    Localnames,
    Anydestination,
    Getpwnam,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "localhost" => Builtin::Localhost,
            "anyhost" => Builtin::Anyhost,
            "localnames" => Builtin::Localnames,
            "anydestination" => Builtin::Anydestination,
            "getpwnam" => Builtin::Getpwnam,
            _ => return None,
        })
    }

    /// The key in [`super::Tables`]: `<localhost>` etc., which no declared table can
    /// shadow (a config may declare its own `table localhost`).
    pub fn table_name(self) -> &'static str {
        match self {
            Builtin::Localhost => "<localhost>",
            Builtin::Anyhost => "<anyhost>",
            Builtin::Localnames => "<localnames>",
            Builtin::Anydestination => "<anydestination>",
            Builtin::Getpwnam => "<getpwnam>",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Localhost => "localhost",
            Builtin::Anyhost => "anyhost",
            Builtin::Localnames => "localnames",
            Builtin::Anydestination => "anydestination",
            Builtin::Getpwnam => "getpwnam",
        }
    }
}

/// A builtin table bound to this host's identity.
#[derive(Debug, Clone)]
pub struct BuiltinTable {
    pub kind: Builtin,
    pub local: LocalIdentity,
}

impl Table for BuiltinTable {
    fn check(&self, service: Service, key: &str) -> Result<bool, LookupError> {
        let key = key.to_ascii_lowercase();
        Ok(match self.kind {
            Builtin::Anyhost | Builtin::Anydestination => true,
            Builtin::Localhost => {
                key == "local"
                    || parse_ip(&key).is_some_and(|ip| {
                        ip.is_loopback()
                            || in_network(ip, IpAddr::from([127, 0, 0, 0]), 8)
                            || self.local.addresses.contains(&ip)
                    })
            }
            Builtin::Localnames => {
                key == "localhost"
                    || hostname_match(&key, &self.local.hostname)
                    || parse_ip(&key).is_some_and(|ip| self.local.addresses.contains(&ip))
            }
            Builtin::Getpwnam => {
                service == Service::Userinfo && self.lookup(service, &key)?.is_some()
            }
        })
    }

    fn lookup(&self, service: Service, key: &str) -> Result<Option<String>, LookupError> {
        if self.kind != Builtin::Getpwnam || service != Service::Userinfo {
            return Ok(None);
        }
        match nix::unistd::User::from_name(&key.to_ascii_lowercase()) {
            Ok(Some(u)) => Ok(Some(format!("{}:{}:{}", u.uid, u.gid, u.dir.display()))),
            Ok(None) => Ok(None),
            Err(e) => Err(LookupError::Backend {
                table: "getpwnam".into(),
                message: e.to_string(),
            }),
        }
    }

    fn serves(&self, service: Service) -> bool {
        match self.kind {
            Builtin::Localhost | Builtin::Anyhost => service == Service::Netaddr,
            Builtin::Localnames | Builtin::Anydestination => service == Service::Domain,
            Builtin::Getpwnam => service == Service::Userinfo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(kind: Builtin) -> BuiltinTable {
        BuiltinTable {
            kind,
            local: LocalIdentity {
                hostname: "mx.example.org".into(),
                addresses: vec![IpAddr::from([192, 0, 2, 1])],
            },
        }
    }

    #[test]
    fn localhost_is_loopback_local_addresses_and_the_enqueuer() {
        let lh = t(Builtin::Localhost);
        assert!(lh.check(Service::Netaddr, "127.0.0.5").unwrap());
        assert!(lh.check(Service::Netaddr, "::1").unwrap());
        assert!(lh.check(Service::Netaddr, "192.0.2.1").unwrap());
        assert!(lh.check(Service::Netaddr, "local").unwrap());
        assert!(!lh.check(Service::Netaddr, "198.51.100.1").unwrap());
    }

    #[test]
    fn localnames_and_getpwnam() {
        let ln = t(Builtin::Localnames);
        assert!(ln.check(Service::Domain, "MX.example.org").unwrap());
        assert!(ln.check(Service::Domain, "localhost").unwrap());
        assert!(!ln.check(Service::Domain, "example.org").unwrap());
        let pw = t(Builtin::Getpwnam);
        let root = pw.lookup(Service::Userinfo, "root").unwrap().unwrap();
        assert!(root.starts_with("0:0:"), "{root}");
        assert_eq!(
            pw.lookup(Service::Userinfo, "no-such-user-here").unwrap(),
            None
        );
    }
}
