//! IPv4 and IPv6 networks in canonical form (host bits cleared, lower case), the form
//! access rules are stored and looked up in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One network: an address with its host bits cleared and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    addr: IpAddr,
    len: u8,
}

impl Network {
    /// The network of `len` bits around `ip` (`len` is clamped to the family's width).
    pub fn new(ip: IpAddr, len: u8) -> Network {
        let len = len.min(width(ip));
        Network {
            addr: mask(ip, len),
            len,
        }
    }

    /// A single host (`/32` or `/128`).
    pub fn host(ip: IpAddr) -> Network {
        Network::new(ip, width(ip))
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_host(&self) -> bool {
        self.len == width(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        width(ip) == width(self.addr) && mask(ip, self.len) == self.addr
    }

    /// Whether `other` lies wholly inside this network.
    pub fn covers(&self, other: &Network) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

fn width(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Every network that contains `ip`, most specific first, in canonical text: the bare
/// address, then `a.b.c.d/32` … `0.0.0.0/0`. An SQL table matches ranges by equality on
/// these keys, since SQL cannot match a CIDR range itself.
pub fn lookup_keys(ip: IpAddr) -> Vec<String> {
    let ip = canonical_ip(ip);
    let mut keys = vec![ip.to_string()];
    for len in (0..=width(ip)).rev() {
        keys.push(Network::new(ip, len).to_string());
    }
    keys
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or network: {0}")]
pub struct BadNetwork(pub String);

impl FromStr for Network {
    type Err = BadNetwork;

    /// `192.0.2.0/24`, `2001:db8::/32`, a bare address, or OpenSMTPD's `[2001:db8::]/32`.
    fn from_str(s: &str) -> Result<Network, BadNetwork> {
        let bad = || BadNetwork(s.to_string());
        let t = s.trim();
        let (addr, len) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (t, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let len = len.unwrap_or(width(ip));
        if len > width(ip) {
            return Err(bad());
        }
        Ok(Network::new(ip, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_canonical() {
        let n: Network = "192.0.2.77/24".parse().unwrap();
        assert_eq!(n.to_string(), "192.0.2.0/24");
        let n: Network = "2001:DB8:1::5/32".parse().unwrap();
        assert_eq!(n.to_string(), "2001:db8::/32");
        let n: Network = "[2001:db8::1]/64".parse().unwrap();
        assert_eq!(n.to_string(), "2001:db8::/64");
        assert_eq!(
            "10.0.0.1".parse::<Network>().unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("example.org".parse::<Network>().is_err());
    }

    #[test]
    fn containment_respects_family_and_prefix() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::a01:1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(all.covers(&n));
        assert!(!n.covers(&all));
    }

    #[test]
    fn lookup_keys_list_every_enclosing_network() {
        let keys = lookup_keys("192.0.2.77".parse().unwrap());
        assert_eq!(keys.len(), 34);
        assert_eq!(keys[0], "192.0.2.77");
        assert_eq!(keys[1], "192.0.2.77/32");
        assert!(keys.contains(&"192.0.2.0/24".to_string()));
        assert_eq!(keys[33], "0.0.0.0/0");
        let keys = lookup_keys("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(keys[0], "192.0.2.1");
        let keys = lookup_keys("2001:db8::1".parse().unwrap());
        assert_eq!(keys.len(), 130);
        assert!(keys.contains(&"2001:db8::/32".to_string()));
    }
}
