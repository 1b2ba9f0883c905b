//! Auto-bans: failures counted per client address in a sliding window; crossing the
//! threshold bans the address at once in this process and writes one row through the
//! ban table's `query_ban`.
//!
//! The one write of the mta into the appliance database is that statement, kept in the
//! table-sqlite config file so that an operator with a hand-made schema can adapt it:
//!
//! ```text
//! query_ban INSERT INTO access_rules (kind, value, action, source, reason, expires_at)
//!   VALUES ('ip', ?1, 'block', 'auto', ?2, ?3) ON CONFLICT (kind, value, action)
//!   DO UPDATE SET reason = excluded.reason, expires_at = excluded.expires_at
//!   WHERE access_rules.source = 'auto'
//! ```
//!
//! `?1` is the client address, `?2` the reason, `?3` the expiry in Unix seconds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::BanSettings;
use super::net::canonical_ip;
use crate::table::SqliteConfig;

/// What went wrong in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A rejected AUTH (535).
    Auth,
    /// Any other 4xx/5xx answer to a command: protocol abuse when it piles up.
    Command,
}

impl Failure {
    fn reason(self) -> &'static str {
        match self {
            Failure::Auth => "smtp auth failures",
            Failure::Command => "smtp protocol errors",
        }
    }
}

/// A ban just decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub reason: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The in-process state: recent failures and current bans, by address.
#[derive(Debug, Default)]
pub struct BanBook {
    failures: HashMap<(IpAddr, Failure), VecDeque<i64>>,
    banned: HashMap<IpAddr, i64>,
}

impl BanBook {
    /// Whether `ip` is banned at `now` (Unix seconds).
    pub fn is_banned(&mut self, ip: IpAddr, now: i64) -> bool {
        let ip = canonical_ip(ip);
        match self.banned.get(&ip) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.banned.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Counts one failure; returns the ban when this one crosses the threshold.
    pub fn record(
        &mut self,
        ip: IpAddr,
        failure: Failure,
        now: i64,
        settings: &BanSettings,
    ) -> Option<Ban> {
        let ip = canonical_ip(ip);
        let limit = match failure {
            Failure::Auth => settings.auth_failures,
            Failure::Command => settings.errors,
        };
        if limit == 0 || self.is_banned(ip, now) {
            return None;
        }
        let window = secs(settings.within);
        let seen = self.failures.entry((ip, failure)).or_default();
        seen.push_back(now);
        while seen.front().is_some_and(|&t| t <= now - window) {
            seen.pop_front();
        }
        if seen.len() < limit as usize {
            // Forget quiet addresses so the map cannot grow without bound.
            if self.failures.len() > 100_000 {
                self.failures
                    .retain(|_, v| v.back().is_some_and(|&t| t > now - window));
            }
            return None;
        }
        let count = seen.len();
        self.failures.remove(&(ip, failure));
        let expires_at = now + secs(settings.duration);
        self.banned.insert(ip, expires_at);
        Some(Ban {
            ip,
            reason: format!("{count} {} within {}s", failure.reason(), window),
            expires_at,
        })
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

/// Runs `query_ban` from a table-sqlite config file (blocking). A config without
/// `query_ban` is an error: the operator asked for persistent bans.
pub fn write_ban(sqlite_conf: &Path, ban: &Ban) -> Result<(), String> {
    let text = std::fs::read_to_string(sqlite_conf)
        .map_err(|e| format!("{}: {e}", sqlite_conf.display()))?;
    let cfg = SqliteConfig::parse(&text)?;
    let sql = cfg
        .ban_query
        .ok_or_else(|| format!("{}: no query_ban", sqlite_conf.display()))?;
    let conn = Connection::open_with_flags(
        &cfg.dbpath,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", cfg.dbpath.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    conn.execute(
        &sql,
        rusqlite::params![ban.ip.to_string(), ban.reason, ban.expires_at],
    )
    .map_err(|e| format!("query_ban: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BanSettings {
        BanSettings {
            auth_failures: 3,
            errors: 5,
            within: Duration::from_secs(600),
            duration: Duration::from_secs(86400),
            table: None,
        }
    }

    #[test]
    fn bans_after_the_threshold_within_the_window() {
        let mut book = BanBook::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(book.record(ip, Failure::Auth, 1000, &settings()), None);
        assert_eq!(book.record(ip, Failure::Auth, 1100, &settings()), None);
        let ban = book.record(ip, Failure::Auth, 1200, &settings()).unwrap();
        assert_eq!(ban.expires_at, 1200 + 86400);
        assert!(book.is_banned(ip, 1300));
        assert!(!book.is_banned("192.0.2.2".parse().unwrap(), 1300));
        assert!(!book.is_banned(ip, 1200 + 86400));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut book = BanBook::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(book.record(ip, Failure::Auth, 0, &settings()), None);
        assert_eq!(book.record(ip, Failure::Auth, 300, &settings()), None);
        assert_eq!(book.record(ip, Failure::Auth, 700, &settings()), None);
        assert!(book.record(ip, Failure::Auth, 800, &settings()).is_some());
    }

    #[test]
    fn kinds_are_counted_apart() {
        let mut book = BanBook::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for t in 0..4 {
            assert_eq!(book.record(ip, Failure::Command, t, &settings()), None);
        }
        assert_eq!(book.record(ip, Failure::Auth, 5, &settings()), None);
        assert!(book.record(ip, Failure::Command, 6, &settings()).is_some());
    }
}
