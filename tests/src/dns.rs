//! A real DNS server on loopback: unbound serving zone files the test writes, with
//! `auth-zone` (authoritative answers, no recursion to the outside world).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Child, require_program};

/// A TXT record value in zone-file syntax: character strings of at most 255 octets.
pub fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One of the mta crate's committed DKIM test keys (`rsa2048.key`, `rsa2048.pub.b64`, …).
pub fn dkim_test_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mta/tests/data/dkim")
        .join(name)
}

/// The base64 public key of a committed test key, for a `p=` tag.
pub fn dkim_test_public_key(name: &str) -> String {
    std::fs::read_to_string(dkim_test_key(name))
        .unwrap_or_else(|e| panic!("read DKIM test key {name}: {e}"))
        .trim()
        .to_string()
}

/// One zone: its origin (`example.org`) and its records in zone-file syntax, relative
/// names allowed. A SOA and NS are added when the text has none.
pub struct Zone {
    pub origin: String,
    pub records: String,
}

impl Zone {
    pub fn new(origin: &str, records: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_string(),
            records: records.to_string(),
        }
    }
}

pub struct Unbound {
    addr: SocketAddr,
    dir: PathBuf,
    zones: Vec<String>,
    _child: Child,
}

impl Unbound {
    /// Starts unbound on 127.0.0.1:`port` serving `zones`, with state under `dir`.
    pub fn start(dir: &Path, port: u16, zones: &[Zone]) -> Unbound {
        Unbound::start_on(dir, "127.0.0.1".parse().unwrap(), port, zones)
    }

    /// Starts unbound on `ip`:`port` (port 53 inside a test's own network namespace).
    pub fn start_on(dir: &Path, ip: std::net::IpAddr, port: u16, zones: &[Zone]) -> Unbound {
        let unbound = require_program("unbound", "unbound");
        std::fs::create_dir_all(dir).unwrap();
        let mut conf = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  \
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  \
             access-control: 0.0.0.0/0 allow\n  access-control: ::/0 allow\n  do-ip6: {v6}\n  module-config: \"iterator\"\n  \
             # Tests only ask about their own zones; never go out to the root servers.\n  \
             do-not-query-localhost: yes\n  harden-referral-path: no\n  qname-minimisation: no\n  \
             num-threads: 1\n  outgoing-range: 64\n  so-reuseport: no\n\
             remote-control:\n  control-enable: no\n",
            d = dir.display(),
            v6 = if ip.is_ipv6() { "yes" } else { "no" },
        );
        let mut names = Vec::new();
        for z in zones {
            let file = dir.join(format!("{}.zone", z.origin));
            std::fs::write(&file, zone_text(z)).unwrap();
            // Unbound answers NXDOMAIN for RFC 6761 names (`test.`, `invalid.`) from its
            // default local zones before looking at auth zones: let the zone through.
            conf.push_str(&format!(
                "server:\n  local-zone: \"{}.\" transparent\n",
                z.origin
            ));
            conf.push_str(&format!(
                "auth-zone:\n  name: \"{}.\"\n  zonefile: \"{}\"\n  for-downstream: yes\n  for-upstream: no\n  fallback-enabled: no\n",
                z.origin,
                file.display()
            ));
            names.push(z.origin.clone());
        }
        let conf_path = dir.join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(unbound);
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let child = Child::spawn("unbound", cmd, &dir.join("unbound.log"));
        let addr = SocketAddr::new(ip, port);
        let u = Unbound {
            addr,
            dir: dir.to_path_buf(),
            zones: names,
            _child: child,
        };
        u.wait_ready();
        u
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the server with dig(1) and returns the answer lines' data (`+short`).
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let dig = require_program("dig", "dnsutils");
        let out = Command::new(dig)
            .args([
                format!("@{}", self.addr.ip()),
                "-p".into(),
                self.addr.port().to_string(),
            ])
            .args(["+short", "+time=2", "+tries=1", name, rtype])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        let probe = self.zones.first().cloned();
        while start.elapsed() < Duration::from_secs(10) {
            match &probe {
                Some(z) if !self.dig(z, "SOA").is_empty() => return,
                None => return,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let log = std::fs::read_to_string(self.dir.join("unbound.log")).unwrap_or_default();
        panic!(
            "unbound on {} did not answer for {probe:?}; log:\n{log}",
            self.addr
        );
    }
}

fn zone_text(z: &Zone) -> String {
    let mut t = format!("$ORIGIN {}.\n$TTL 300\n", z.origin);
    let has = |kind: &str| {
        z.records
            .lines()
            .any(|l| l.split_whitespace().any(|w| w.eq_ignore_ascii_case(kind)))
    };
    if !has("SOA") {
        t.push_str("@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n");
    }
    if !has("NS") {
        t.push_str("@ IN NS ns.test.\n");
    }
    t.push_str(&z.records);
    t.push('\n');
    t
}
