//! `fugu ctl spf walk | allowlist import | blocklist import | ingest-log`: filling the
//! access lists from SPF records, files and other programs' logs.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use mta::access::BanSettings;
use mta::access::bans::{BanBook, Failure};
use mta::access::logscan::{dovecot_failure, place_in_year};
use mta::access::net::Network;
use store::{AccessAction, AccessKind, RuleSource, Store};

/// The domains of large senders whose outbound networks are worth allow-listing
/// (as seed 000's `common_domains`), walked by `spf walk --common`.
pub const COMMON_SENDERS: &str = include_str!("../mta/data/common-senders.txt");

#[derive(Debug, clap::Subcommand)]
pub enum AccessCommand {
    /// SPF records as lists of networks.
    Spf {
        #[command(subcommand)]
        command: SpfCommand,
    },
    /// Networks that are never blocked, banned, greylisted or checked against DNSBLs.
    Allowlist {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Networks refused at connect, from files in spamd.conf's `method=file` style.
    Blocklist {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Bans addresses with repeated failed logins in Dovecot's log (IMAP, POP3,
    /// ManageSieve, submission) and the console's failed sign-ins.
    IngestLog(IngestArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum SpfCommand {
    /// Prints every IPv4/IPv6 network the SPF records of DOMAINs allow, following
    /// include, redirect, a and mx, like `smtpctl spf walk`. Without DOMAIN, reads
    /// domains from standard input, one per line.
    Walk {
        domains: Vec<String>,
        /// Also walk the shipped list of large senders' domains.
        #[arg(long)]
        common: bool,
        /// The DNS server to ask (IP or IP:port) [default: /etc/resolv.conf's].
        #[arg(long, value_name = "ADDR")]
        resolver: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ListCommand {
    /// Adds every address, network (`192.0.2.0/24`, `2001:db8::/32`) or range
    /// (`192.0.2.10 - 192.0.2.20`) of FILE (`-` for standard input), one per line,
    /// `#` comments allowed, as rules in the database.
    Import {
        file: String,
        /// The rules end after this long (`30d`, `12h`, `90m`).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Mark the rules as coming from a feed (replaced by the next import) rather
        /// than by hand. Block lists are always feeds.
        #[arg(long)]
        feed: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Dovecot's log file (`log_path`).
    pub file: PathBuf,
    /// Keep reading as the log grows (and is rotated), and re-check the console's
    /// failed sign-ins every few seconds.
    #[arg(long)]
    pub follow: bool,
    /// Failed logins from one address that earn a ban.
    #[arg(long, default_value_t = 10)]
    pub failures: u32,
    /// ... within this window.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub within: String,
    /// How long a ban lasts.
    #[arg(long = "ban-for", default_value = "24h", value_name = "DURATION")]
    pub ban_for: String,
}

pub fn run(cmd: AccessCommand, db: &Path, spool: &Path) -> ExitCode {
    let _ = spool;
    match run_inner(cmd, db) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fugu: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run_inner(cmd: AccessCommand, db: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        AccessCommand::Spf {
            command:
                SpfCommand::Walk {
                    domains,
                    common,
                    resolver,
                },
        } => {
            let mut domains = domains;
            if common {
                domains.extend(domain_lines(COMMON_SENDERS));
            }
            if domains.is_empty() {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                domains.extend(domain_lines(&text));
            }
            let rt = runtime()?;
            let walk = rt.block_on(async {
                let r = mta::access::dnsbl::resolver(resolver.as_deref())
                    .map_err(|e| anyhow::anyhow!(e))?;
                anyhow::Ok(mta::spf_walk::walk(&r, &domains).await)
            })?;
            print!("{}", format_networks(walk.networks.iter()));
            for p in &walk.problems {
                eprintln!("spf walk: {p}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AccessCommand::Allowlist {
            command:
                ListCommand::Import {
                    file,
                    expires,
                    feed,
                },
        } => {
            let source = if feed {
                RuleSource::Feed
            } else {
                RuleSource::Manual
            };
            import(db, &file, expires.as_deref(), AccessAction::Allow, source)
        }
        AccessCommand::Blocklist {
            command: ListCommand::Import { file, expires, .. },
        } => import(
            db,
            &file,
            expires.as_deref(),
            AccessAction::Block,
            RuleSource::Feed,
        ),
        AccessCommand::IngestLog(args) => ingest(db, &args),
    }
}

fn domain_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// One network per line; a single host as its bare address (what `smtpctl spf walk`
/// prints, and what a table file or `allowlist import` reads back).
pub fn format_networks<'a>(nets: impl Iterator<Item = &'a Network>) -> String {
    let mut out = String::new();
    for n in nets {
        if n.is_host() {
            out.push_str(&n.addr().to_string());
        } else {
            out.push_str(&n.to_string());
        }
        out.push('\n');
    }
    out
}

/// `30d`, `12h`, `90m`, `45s` or bare seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('d') => (&s[..s.len() - 1], 86400),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('s') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 30d, 12h or 90m"))?;
    Ok(Duration::from_secs(n * mult))
}

/// The networks of a list file: addresses, CIDR networks and `A - B` ranges (spamd.conf
/// `method=file` lists), `#` comments. Bad lines are returned with their numbers.
pub fn parse_list(text: &str) -> (Vec<Network>, Vec<String>) {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parsed = match line.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => range_to_networks(a, b),
                _ => None,
            },
            None => line.parse::<Network>().ok().map(|n| vec![n]),
        };
        match parsed {
            Some(v) => nets.extend(v),
            None => bad.push(format!("line {}: {line:?}", i + 1)),
        }
    }
    (nets, bad)
}

/// The fewest CIDR networks covering `first..=last` (same family, first <= last).
pub fn range_to_networks(first: IpAddr, last: IpAddr) -> Option<Vec<Network>> {
    let (a, b, width) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    if a > b {
        return None;
    }
    let to_ip = |v: u128| -> IpAddr {
        if width == 32 {
            IpAddr::V4(std::net::Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(v))
        }
    };
    let mut out = Vec::new();
    let mut cur = a;
    loop {
        // The largest aligned block starting at `cur` that does not pass `b`.
        let mut size_bits = if cur == 0 {
            width
        } else {
            cur.trailing_zeros().min(width)
        };
        while size_bits > 0 {
            let span = if size_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << size_bits) - 1
            };
            if cur.checked_add(span).is_some_and(|end| end <= b) {
                break;
            }
            size_bits -= 1;
        }
        out.push(Network::new(to_ip(cur), (width - size_bits) as u8));
        let span = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        match cur.checked_add(span).and_then(|e| e.checked_add(1)) {
            Some(next) if next <= b => cur = next,
            _ => break,
        }
    }
    Some(out)
}

fn now() -> i64 {
    mta::clock::unix_seconds(std::time::SystemTime::now())
}

fn import(
    db: &Path,
    file: &str,
    expires: Option<&str>,
    action: AccessAction,
    source: RuleSource,
) -> anyhow::Result<ExitCode> {
    let text = if file == "-" {
        let mut t = String::new();
        std::io::stdin().read_to_string(&mut t)?;
        t
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let expires_at = match expires {
        Some(e) => Some(now() + i64::try_from(parse_duration(e)?.as_secs())?),
        None => None,
    };
    let (nets, bad) = parse_list(&text);
    for b in &bad {
        eprintln!("fugu: {file}: skipped {b}: not an address, network or range");
    }
    let name = if file == "-" { "standard input" } else { file };
    let reason = format!("imported from {name}");
    let n = nets.len();
    runtime()?.block_on(async {
        let store = Store::open(db).await?;
        for net in &nets {
            let (kind, value) = rule_value(net);
            store
                .upsert_access_rule(kind, &value, action, source, &reason, expires_at)
                .await?;
        }
        anyhow::Ok(())
    })?;
    println!("{n} {} rule(s) imported from {name}", action.as_str());
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rule_value(net: &Network) -> (AccessKind, String) {
    if net.is_host() {
        (AccessKind::Ip, net.addr().to_string())
    } else {
        (AccessKind::Cidr, net.to_string())
    }
}

/// Reads `file` from `pos`, returning complete lines and the new position. A file that
/// shrank (rotated or truncated) is read from its start again.
fn read_new_lines(file: &Path, pos: &mut u64) -> anyhow::Result<Vec<String>> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let len = f.metadata()?.len();
    if len < *pos {
        *pos = 0;
    }
    f.seek(SeekFrom::Start(*pos))?;
    let mut lines = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        // A line still being written waits for the next pass.
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        *pos += n as u64;
        lines.push(line.trim_end().to_string());
    }
    Ok(lines)
}

/// The ingester's memory: failures per address, and console bans already written.
pub struct Ingester {
    pub settings: BanSettings,
    book: BanBook,
    console_banned: HashSet<String>,
}

/// One ban to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginBan {
    pub ip: IpAddr,
    pub reason: String,
    pub expires_at: i64,
}

impl Ingester {
    pub fn new(settings: BanSettings) -> Ingester {
        Ingester {
            settings,
            book: BanBook::default(),
            console_banned: HashSet::new(),
        }
    }

    /// Dovecot log lines → bans still in force at `now`.
    pub fn dovecot_lines(&mut self, lines: &[String], now: i64) -> Vec<LoginBan> {
        let mut bans = Vec::new();
        for line in lines {
            let Some(f) = dovecot_failure(line) else {
                continue;
            };
            let at = f.time_of_year.map_or(now, |t| place_in_year(t, now));
            for _ in 0..f.attempts {
                if let Some(b) = self.book.record(f.ip, Failure::Auth, at, &self.settings)
                    && b.expires_at > now
                {
                    bans.push(LoginBan {
                        ip: b.ip,
                        reason: format!(
                            "{} failed {} logins within {}s (dovecot log)",
                            self.settings.auth_failures,
                            f.service,
                            self.settings.within.as_secs()
                        ),
                        expires_at: b.expires_at,
                    });
                }
            }
        }
        bans
    }

    /// The console's failed sign-ins (count and latest time per address) → new bans.
    pub fn console_failures(&mut self, rows: &[(String, i64, i64)]) -> Vec<LoginBan> {
        let mut bans = Vec::new();
        for (ip, count, latest) in rows {
            if *count < i64::from(self.settings.auth_failures) {
                continue;
            }
            let Ok(addr) = ip.parse::<IpAddr>() else {
                continue;
            };
            if !self.console_banned.insert(format!("{ip}@{latest}")) {
                continue;
            }
            bans.push(LoginBan {
                ip: addr,
                reason: format!(
                    "{count} failed console sign-ins within {}s",
                    self.settings.within.as_secs()
                ),
                expires_at: latest + i64::try_from(self.settings.duration.as_secs()).unwrap_or(0),
            });
        }
        bans
    }
}

async fn write_bans(store: &Store, bans: &[LoginBan]) -> anyhow::Result<()> {
    for b in bans {
        store
            .upsert_access_rule(
                AccessKind::Ip,
                &b.ip.to_string(),
                AccessAction::Block,
                RuleSource::Auto,
                &b.reason,
                Some(b.expires_at),
            )
            .await?;
        println!("banned {} until {}: {}", b.ip, b.expires_at, b.reason);
    }
    Ok(())
}

fn ingest(db: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let settings = BanSettings {
        auth_failures: args.failures,
        within: parse_duration(&args.within)?,
        duration: parse_duration(&args.ban_for)?,
        ..BanSettings::default()
    };
    if settings.auth_failures == 0 {
        bail!("--failures must be at least 1");
    }
    let within = i64::try_from(settings.within.as_secs())?;
    let mut ingester = Ingester::new(settings);
    let mut pos = 0u64;
    runtime()?.block_on(async {
        let store = Store::open(db).await?;
        loop {
            let lines = read_new_lines(&args.file, &mut pos)?;
            let now = now();
            let mut bans = ingester.dovecot_lines(&lines, now);
            let rows = store.console_login_failures(now - within).await?;
            bans.extend(ingester.console_failures(&rows));
            write_bans(&store, &bans).await?;
            if !args.follow {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[Network]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn ranges_become_the_fewest_networks() {
        let r = |a: &str, b: &str| {
            nets(&range_to_networks(a.parse().unwrap(), b.parse().unwrap()).unwrap())
        };
        assert_eq!(r("192.0.2.0", "192.0.2.255"), ["192.0.2.0/24"]);
        assert_eq!(
            r("192.0.2.10", "192.0.2.20"),
            [
                "192.0.2.10/31",
                "192.0.2.12/30",
                "192.0.2.16/30",
                "192.0.2.20/32"
            ]
        );
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("2001:db8::", "2001:db8::1"), ["2001:db8::/127"]);
        assert!(range_to_networks("1.2.3.4".parse().unwrap(), "::1".parse().unwrap()).is_none());
    }

    #[test]
    fn list_files_take_addresses_networks_ranges_and_comments() {
        let (n, bad) = parse_list(
            "# spamd.conf method=file list\n192.0.2.7\n198.51.100.0/24 # a comment\n\
             203.0.113.0 - 203.0.113.127\n2001:db8::/32\nnot-an-address\n\n",
        );
        assert_eq!(
            nets(&n),
            [
                "192.0.2.7/32",
                "198.51.100.0/24",
                "203.0.113.0/25",
                "2001:db8::/32"
            ]
        );
        assert_eq!(bad, ["line 6: \"not-an-address\""]);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn ten_failed_logins_in_the_real_dovecot_log_ban_the_client() {
        let text = include_str!("../mta/tests/fixtures/access/dovecot-2.3.19.log");
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        // The fixture was written at 2026-11-21 01:18 UTC; read it a minute later.
        let now = 1_795_223_990;
        let mut ing = Ingester::new(BanSettings::default());
        let bans = ing.dovecot_lines(&lines, now);
        assert_eq!(bans.len(), 1, "{bans:?}");
        assert_eq!(bans[0].ip, "127.0.0.3".parse::<IpAddr>().unwrap());
        assert!(bans[0].reason.contains("failed imap logins"));
        // The same log read again a few days later: the ban is over, nothing is written.
        let mut ing = Ingester::new(BanSettings::default());
        assert!(ing.dovecot_lines(&lines, now + 3 * 86400).is_empty());
    }

    #[test]
    fn console_failures_ban_once_per_burst() {
        let mut ing = Ingester::new(BanSettings::default());
        let rows = vec![
            ("192.0.2.1".to_string(), 12, 1000),
            ("192.0.2.2".to_string(), 3, 1000),
        ];
        let bans = ing.console_failures(&rows);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].expires_at, 1000 + 86400);
        assert!(ing.console_failures(&rows).is_empty());
    }
}
