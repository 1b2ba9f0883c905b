//! Static tables: `file:` files and inline `{ … }` lists and maps (table_static.c).

use std::net::IpAddr;

use super::{LookupError, Service, Table};

/// A list (`values` with no map values) or a map; keys are stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StaticTable {
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

/// Parse OpenSMTPD's file table format: `key<ws or ':'>value` lines make a map, bare
/// values a list; the first entry decides unless the file opens with `# @list`.
pub fn parse_file_table(text: &str) -> Result<StaticTable, (usize, String)> {
    let mut is_map: Option<bool> = None;
    let mut list = Vec::new();
    let mut map = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if is_map.is_none() && line == "# @list" {
            is_map = Some(false);
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = line
            .find(|c: char| c.is_ascii_whitespace() || c == ':')
            .map(|i| {
                let value =
                    line[i..].trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ':');
                (&line[..i], value)
            });
        let (key, value) = match split {
            Some((k, v)) if !v.is_empty() => (k, Some(v)),
            Some((k, _)) => (k, None),
            None => (line, None),
        };
        let this_is_map = *is_map.get_or_insert(value.is_some());
        match (this_is_map, value) {
            (true, Some(v)) => map.push((key.to_ascii_lowercase(), v.to_owned())),
            (false, _) => list.push(line.to_ascii_lowercase()),
            (true, None) => return Err((n + 1, format!("missing value for key {key}"))),
        }
    }
    Ok(if is_map == Some(true) {
        StaticTable::Map(map)
    } else {
        StaticTable::List(list)
    })
}

impl StaticTable {
    pub fn is_map(&self) -> bool {
        matches!(self, StaticTable::Map(_))
    }

    fn keys(&self) -> Box<dyn Iterator<Item = (&str, Option<&str>)> + '_> {
        match self {
            StaticTable::List(v) => Box::new(v.iter().map(|k| (k.as_str(), None))),
            StaticTable::Map(v) => {
                Box::new(v.iter().map(|(k, val)| (k.as_str(), Some(val.as_str()))))
            }
        }
    }
}

impl Table for StaticTable {
    fn check(&self, service: Service, key: &str) -> Result<bool, LookupError> {
        let key = key.to_ascii_lowercase();
        Ok(self.keys().any(|(k, _)| entry_matches(service, k, &key)))
    }

    fn lookup(&self, service: Service, key: &str) -> Result<Option<String>, LookupError> {
        let key = key.to_ascii_lowercase();
        Ok(self
            .keys()
            .find(|(k, _)| entry_matches(service, k, &key))
            .and_then(|(_, v)| v.map(str::to_owned)))
    }

    fn fetch(&self, service: Service) -> Result<Option<String>, LookupError> {
        let _ = service;
        Ok(self.keys().next().map(|(k, _)| k.to_owned()))
    }

    fn serves(&self, service: Service) -> bool {
        match service {
            // Services that need a value: a list cannot serve them.
            Service::Alias
            | Service::Credentials
            | Service::Userinfo
            | Service::Addrname
            | Service::Mailaddrmap => self.is_map(),
            _ => true,
        }
    }
}

/// Does table entry `entry` match lookup key `key` for `service` (table_static.c match funcs)?
pub(crate) fn entry_matches(service: Service, entry: &str, key: &str) -> bool {
    match service {
        Service::Domain | Service::Relayhost => hostname_match(key, entry),
        Service::Netaddr => netaddr_match(entry, key),
        Service::Mailaddr => mailaddr_match(entry, key),
        Service::Regex => regex_match(entry, key),
        _ => entry == key,
    }
}

/// `hostname_match`: `*` matches any run of characters.
pub(crate) fn hostname_match(name: &str, pattern: &str) -> bool {
    let (n, p) = (name.as_bytes(), pattern.as_bytes());
    glob(n, p)
}

fn glob(n: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|i| glob(&n[i..], rest)),
        Some((c, rest)) => n
            .split_first()
            .is_some_and(|(d, nrest)| d.eq_ignore_ascii_case(c) && glob(nrest, rest)),
    }
}

/// Parse an address as table files write it: `1.2.3.4`, `[v6]`, `v6`, `ipv6:v6`.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.strip_prefix("ipv6:").unwrap_or(s);
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Parse `addr[/len]` (`[v6]/len` too) into a network and prefix length.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.rsplit_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip = parse_ip(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

pub(crate) fn netaddr_match(entry: &str, key: &str) -> bool {
    if entry == key {
        return true;
    }
    let (Some((net, len)), Some(ip)) = (parse_cidr(entry), parse_ip(key)) else {
        return false;
    };
    in_network(ip, net, len)
}

pub(crate) fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// `mailaddr_match`: entry `user`, `@domain`, `user@domain` or `user@*.domain` against a
/// full address key.
pub(crate) fn mailaddr_match(entry: &str, key: &str) -> bool {
    let (kuser, kdom) = key.rsplit_once('@').unwrap_or((key, ""));
    match entry.rsplit_once('@') {
        None => entry.eq_ignore_ascii_case(kuser),
        Some((euser, edom)) => {
            (euser.is_empty() || euser.eq_ignore_ascii_case(kuser))
                && (edom.is_empty() || hostname_match(kdom, edom))
        }
    }
}

pub(crate) fn regex_match(entry: &str, key: &str) -> bool {
    // OpenSMTPD: a `(?i)` prefix makes the ERE case-insensitive; the regex crate reads
    // that syntax natively.
    regex::Regex::new(entry).is_ok_and(|re| re.is_match(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_table_map_list_and_comments() {
        let t = parse_file_table("# aliases\nroot: alice\n\nPostmaster   root, bob\n").unwrap();
        assert_eq!(
            t.lookup(Service::Alias, "ROOT").unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            t.lookup(Service::Alias, "postmaster").unwrap().as_deref(),
            Some("root, bob")
        );
        let l = parse_file_table("example.org\n*.example.net\n").unwrap();
        assert!(!l.is_map());
        assert!(l.check(Service::Domain, "mx.example.net").unwrap());
        assert!(!l.check(Service::Domain, "example.com").unwrap());
        let forced = parse_file_table("# @list\nkey value\n").unwrap();
        assert!(!forced.is_map());
    }

    #[test]
    fn netaddr_cidr_and_v6() {
        let t = StaticTable::List(vec![
            "192.0.2.0/24".into(),
            "[2001:db8::]/32".into(),
            "::1".into(),
        ]);
        assert!(t.check(Service::Netaddr, "192.0.2.77").unwrap());
        assert!(!t.check(Service::Netaddr, "192.0.3.1").unwrap());
        assert!(t.check(Service::Netaddr, "2001:db8:1::5").unwrap());
        assert!(t.check(Service::Netaddr, "::1").unwrap());
    }

    #[test]
    fn mailaddr_patterns() {
        assert!(mailaddr_match("@example.org", "x@example.org"));
        assert!(mailaddr_match(
            "alice@*.example.org",
            "alice@mx.example.org"
        ));
        assert!(mailaddr_match("alice", "alice@anything"));
        assert!(!mailaddr_match("alice@example.org", "bob@example.org"));
    }
}
