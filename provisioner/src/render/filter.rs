//! Packet filter: the `ip` and `cidr` access rules as pf tables in anchor `fugu` (OpenBSD)
//! and as an nftables table `inet fugu` (Linux). Expired rules drop out; networks are
//! normalised (host bits cleared, ranges inside other ranges removed) because nftables
//! interval sets reject overlapping elements.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{GENERATED, RenderedFile};
use crate::{Config, Output, Snapshot};

pub const PF_TABLES: [&str; 3] = ["fugu_allow", "fugu_block", "fugu_bruteforce"];

/// An address range: a network address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    pub fn is_host(&self) -> bool {
        self.prefix == if self.is_ipv4() { 32 } else { 128 }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn contains(&self, other: &Net) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix <= other.prefix
            && mask(other.addr, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.is_ipv4() { 32 } else { 128 };
        if self.prefix == host {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Sorted, with every range that lies inside another removed. Two CIDR ranges are either
/// disjoint or nested, so what is left never overlaps.
pub fn normalise(mut nets: Vec<Net>) -> Vec<Net> {
    // Sorting by (family, address, prefix) puts a covering range before what it covers.
    nets.sort();
    nets.dedup();
    let mut out: Vec<Net> = Vec::with_capacity(nets.len());
    for net in nets {
        if out.last().is_some_and(|last| last.contains(&net)) {
            continue;
        }
        out.push(net);
    }
    out
}

/// The address sets the packet filter enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub allow: Vec<Net>,
    /// Blocked by an operator or a feed.
    pub block: Vec<Net>,
    /// Blocked by the mta itself (auto-bans): the brute-force table, which pf's and
    /// nftables' rate limits also fill.
    pub bruteforce: Vec<Ban>,
}

/// A single address the mta banned, with when the ban ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub net: Net,
    pub expires_at: Option<i64>,
}

pub fn sets(snapshot: &Snapshot) -> Sets {
    let (mut allow, mut block, mut bruteforce) = (Vec::new(), Vec::new(), Vec::new());
    for rule in &snapshot.access_rules {
        if !matches!(rule.kind.as_str(), "ip" | "cidr") {
            continue;
        }
        if rule.expires_at.is_some_and(|t| t <= snapshot.taken_at) {
            continue;
        }
        let Some(net) = Net::parse(&rule.value) else {
            tracing::warn!(rule = rule.id, value = %rule.value, "access rule skipped: not an address or network");
            continue;
        };
        match (rule.action.as_str(), rule.source.as_str()) {
            ("allow", _) => allow.push(net),
            ("block", "auto") if net.is_host() => bruteforce.push(Ban {
                net,
                expires_at: rule.expires_at,
            }),
            ("block", _) => block.push(net),
            _ => {}
        }
    }
    let block = normalise(block);
    // A ban inside a blocked range is already covered.
    bruteforce.retain(|b: &Ban| !block.iter().any(|n| n.contains(&b.net)));
    bruteforce.sort_by_key(|b| b.net);
    bruteforce.dedup_by_key(|b| b.net);
    Sets {
        allow: normalise(allow),
        block,
        bruteforce,
    }
}

fn ports(list: &[u16], sep: &str) -> String {
    list.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

pub fn render_pf(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let paths = &config.paths;
    let f = &config.filter;
    let sets = sets(snapshot);
    let mut files = Vec::new();
    let mut anchor = String::from(GENERATED);
    let _ = writeln!(
        anchor,
        "# Load into pf.conf with:  anchor \"fugu\"  and  load anchor \"fugu\" from \"{}\"\n",
        paths.pf_anchor.display()
    );
    for table in PF_TABLES {
        let _ = writeln!(
            anchor,
            "table <{table}> persist file \"{}\"",
            paths.pf_table(table).display()
        );
    }
    let mail = ports(&f.mail_ports, " ");
    let login = ports(&f.login_ports, " ");
    let _ = writeln!(
        anchor,
        "\n# Allow-listed sources first, then the block lists, then rate-limited logins.\n\
         pass in quick proto tcp from <fugu_allow> to port {{ {mail} }}\n\
         block in quick from <fugu_block>\n\
         block in quick from <fugu_bruteforce>\n\
         pass in proto tcp to port {{ {login} }} keep state \\\n\
         \t(max-src-conn {}, max-src-conn-rate {}/{}, overload <fugu_bruteforce> flush global)",
        f.max_src_conn, f.rate_connections, f.rate_window_secs
    );
    files.push(RenderedFile::new(
        Output::Pf,
        paths.pf_anchor.clone(),
        anchor,
        0o600,
    ));
    for (table, nets) in [
        ("fugu_allow", &sets.allow),
        ("fugu_block", &sets.block),
        (
            "fugu_bruteforce",
            &sets.bruteforce.iter().map(|b| b.net).collect(),
        ),
    ] {
        let mut body = String::from(GENERATED);
        for net in nets {
            let _ = writeln!(body, "{net}");
        }
        files.push(RenderedFile::new(
            Output::Pf,
            paths.pf_table(table),
            body,
            0o600,
        ));
    }
    files
}

fn nft_set(out: &mut String, name: &str, family: &str, nets: &[Net], extra: &str) {
    let v4 = family == "ipv4_addr";
    let elements: Vec<String> = nets
        .iter()
        .filter(|n| n.is_ipv4() == v4)
        .map(Net::to_string)
        .collect();
    let _ = write!(
        out,
        "\tset {name} {{\n\t\ttype {family}\n\t\tflags interval{extra}\n"
    );
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

pub fn render_nft(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let f = &config.filter;
    let sets = sets(snapshot);
    let mut out = String::from(GENERATED);
    out.push_str(
        "# Apply with `nft -f` (atomic: the table is replaced as a whole).\n\
         # Creating then deleting makes the first load work as well as every later one.\n\
         table inet fugu\ndelete table inet fugu\n\ntable inet fugu {\n",
    );
    for (name, nets) in [("allow", &sets.allow), ("block", &sets.block)] {
        nft_set(&mut out, &format!("{name}4"), "ipv4_addr", nets, "");
        nft_set(&mut out, &format!("{name}6"), "ipv6_addr", nets, "");
    }
    // The kernel refuses timeouts on interval sets: the brute-force sets hold single
    // addresses (wider auto-bans went to the block sets), each with its own expiry.
    for (name, family, v4) in [
        ("bruteforce4", "ipv4_addr", true),
        ("bruteforce6", "ipv6_addr", false),
    ] {
        let _ = write!(
            out,
            "\tset {name} {{\n\t\ttype {family}\n\t\tflags dynamic, timeout\n\t\ttimeout {}s\n",
            f.bruteforce_timeout_secs
        );
        let elements: Vec<String> = sets
            .bruteforce
            .iter()
            .filter(|b| b.net.is_ipv4() == v4)
            .map(|b| match b.expires_at {
                Some(t) => format!("{} timeout {}s", b.net, (t - snapshot.taken_at).max(1)),
                None => b.net.to_string(),
            })
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
        }
        out.push_str("\t}\n");
    }
    let mail = ports(&f.mail_ports, ", ");
    let login = ports(&f.login_ports, ", ");
    let window = f.rate_window_secs.max(1);
    // nftables rates are per second/minute/hour: scale the pf-style "N per W seconds".
    let per_minute = (u64::from(f.rate_connections) * 60).div_ceil(u64::from(window));
    let _ = write!(
        out,
        "\n\tchain input {{\n\
         \t\ttype filter hook input priority filter - 5; policy accept;\n\
         \t\tip saddr @allow4 tcp dport {{ {mail} }} accept\n\
         \t\tip6 saddr @allow6 tcp dport {{ {mail} }} accept\n\
         \t\tip saddr @block4 drop\n\
         \t\tip6 saddr @block6 drop\n\
         \t\tip saddr @bruteforce4 drop\n\
         \t\tip6 saddr @bruteforce6 drop\n\
         \t\ttcp dport {{ {login} }} ct state new meter fugu_rate4 {{ ip saddr limit rate over {per_minute}/minute }} add @bruteforce4 {{ ip saddr }} drop\n\
         \t\ttcp dport {{ {login} }} ct state new meter fugu_rate6 {{ ip6 saddr limit rate over {per_minute}/minute }} add @bruteforce6 {{ ip6 saddr }} drop\n\
         \t}}\n}}\n"
    );
    vec![RenderedFile::new(
        Output::Nftables,
        config.paths.nft_ruleset.clone(),
        out,
        0o600,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<String> {
        normalise(list.iter().filter_map(|s| Net::parse(s)).collect())
            .iter()
            .map(Net::to_string)
            .collect()
    }

    #[test]
    fn clears_host_bits_and_drops_ranges_inside_others() {
        assert_eq!(
            nets(&[
                "10.1.2.3/8",
                "10.0.0.0/16",
                "10.9.9.9",
                "192.0.2.7",
                "192.0.2.0/24"
            ]),
            ["10.0.0.0/8", "192.0.2.0/24"]
        );
    }

    #[test]
    fn keeps_disjoint_ranges_and_families_apart() {
        assert_eq!(
            nets(&[
                "2001:db8::1/32",
                "2001:db8:1::/48",
                "198.51.100.0/25",
                "198.51.100.128/25",
                "::1"
            ]),
            [
                "198.51.100.0/25",
                "198.51.100.128/25",
                "::1",
                "2001:db8::/32"
            ]
        );
    }

    #[test]
    fn rejects_what_is_not_a_network() {
        for bad in [
            "example.org",
            "10.0.0.0/33",
            "::/129",
            "1.2.3",
            "10.0.0.0/x",
        ] {
            assert_eq!(Net::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Net::parse("0.0.0.0/0").map(|n| n.to_string()).as_deref(),
            Some("0.0.0.0/0")
        );
    }
}
