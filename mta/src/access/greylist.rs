//! Greylisting with spamd(8)'s semantics, kept in `<spool>/state.db`.
//!
//! A first delivery attempt for a triplet (client network, sender, recipient) is refused
//! with `451 4.7.1` and recorded GREY. A retry after the pass time (25 min) and before the
//! grey expiry (4 h) passes and makes the client network WHITE for the white expiry
//! (36 days), renewed by every later message. The client network is the /24 of an IPv4
//! address and the /64 of an IPv6 one, because large senders retry from a pool of
//! neighbouring addresses. Hosts the server itself delivered to are made WHITE at once
//! (as spamlogd does from outbound traffic), so replies to our users are not delayed.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::GreylistSettings;
use super::net::{Network, canonical_ip};

/// The greylist's answer for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreyVerdict {
    /// WHITE, or the retry that makes it WHITE.
    Pass,
    /// GREY: try again later.
    Grey,
}

/// The network a client is greylisted as.
pub fn client_network(ip: IpAddr) -> Network {
    let ip = canonical_ip(ip);
    match ip {
        IpAddr::V4(_) => Network::new(ip, 24),
        IpAddr::V6(_) => Network::new(ip, 64),
    }
}

/// The open greylist database.
#[derive(Debug)]
pub struct Greylist {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS grey (
    network TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (network, sender, recipient)
);
CREATE TABLE IF NOT EXISTS white (
    network TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    outbound INTEGER NOT NULL DEFAULT 0
);
";

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

impl Greylist {
    /// Opens (creating) the database at `path`, usually `<spool>/state.db`.
    pub fn open(path: &Path) -> rusqlite::Result<Greylist> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Greylist {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One recipient of a transaction from `ip`, at `now` (Unix seconds). The sender is
    /// empty for `<>`.
    pub fn check(
        &self,
        settings: &GreylistSettings,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        now: i64,
    ) -> rusqlite::Result<GreyVerdict> {
        let network = client_network(ip).to_string();
        let sender = sender.to_ascii_lowercase();
        let recipient = recipient.to_ascii_lowercase();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let white: Option<i64> = tx
            .query_row(
                "SELECT expires_at FROM white WHERE network = ?1",
                [&network],
                |r| r.get(0),
            )
            .optional()?;
        let white_until = now + secs(settings.white_expiry);
        if white.is_some_and(|e| e > now) {
            tx.execute(
                "UPDATE white SET expires_at = max(expires_at, ?2) WHERE network = ?1",
                params![network, white_until],
            )?;
            tx.commit()?;
            return Ok(GreyVerdict::Pass);
        }
        let grey: Option<i64> = tx
            .query_row(
                "SELECT first_seen FROM grey WHERE network = ?1 AND sender = ?2 AND recipient = ?3",
                params![network, sender, recipient],
                |r| r.get(0),
            )
            .optional()?;
        let verdict = match grey {
            Some(first) if now - first >= secs(settings.grey_expiry) => {
                // Expired GREY entry: the client starts over.
                tx.execute(
                    "UPDATE grey SET first_seen = ?4, last_seen = ?4, attempts = 1
                     WHERE network = ?1 AND sender = ?2 AND recipient = ?3",
                    params![network, sender, recipient, now],
                )?;
                GreyVerdict::Grey
            }
            Some(first) if now - first >= secs(settings.pass) => {
                tx.execute(
                    "DELETE FROM grey WHERE network = ?1 AND sender = ?2 AND recipient = ?3",
                    params![network, sender, recipient],
                )?;
                tx.execute(
                    "INSERT INTO white (network, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (network) DO UPDATE SET expires_at = excluded.expires_at",
                    params![network, white_until],
                )?;
                GreyVerdict::Pass
            }
            Some(_) => {
                tx.execute(
                    "UPDATE grey SET last_seen = ?4, attempts = attempts + 1
                     WHERE network = ?1 AND sender = ?2 AND recipient = ?3",
                    params![network, sender, recipient, now],
                )?;
                GreyVerdict::Grey
            }
            None => {
                tx.execute(
                    "INSERT INTO grey (network, sender, recipient, first_seen, last_seen, attempts)
                     VALUES (?1, ?2, ?3, ?4, ?4, 1)",
                    params![network, sender, recipient, now],
                )?;
                GreyVerdict::Grey
            }
        };
        tx.commit()?;
        Ok(verdict)
    }

    /// spamlogd: a host we delivered mail to is WHITE for the white expiry.
    pub fn record_outbound(
        &self,
        settings: &GreylistSettings,
        ip: IpAddr,
        now: i64,
    ) -> rusqlite::Result<()> {
        let network = client_network(ip).to_string();
        self.conn().execute(
            "INSERT INTO white (network, expires_at, outbound) VALUES (?1, ?2, 1)
             ON CONFLICT (network) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at),
             outbound = 1",
            params![network, now + secs(settings.white_expiry)],
        )?;
        Ok(())
    }

    /// Drops expired entries (GREY past the grey expiry, WHITE past the white expiry).
    pub fn expire(&self, settings: &GreylistSettings, now: i64) -> rusqlite::Result<usize> {
        let conn = self.conn();
        let grey = conn.execute(
            "DELETE FROM grey WHERE first_seen <= ?1",
            [now - secs(settings.grey_expiry)],
        )?;
        let white = conn.execute("DELETE FROM white WHERE expires_at <= ?1", [now])?;
        Ok(grey + white)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_grouped_by_slash_24_and_slash_64() {
        assert_eq!(
            client_network("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            client_network("2001:db8:1:2:3::9".parse().unwrap()).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn spamd_life_cycle_grey_pass_white_expire() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open(&dir.path().join("state.db")).unwrap();
        let s = GreylistSettings::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.200".parse().unwrap();
        let t0 = 1_000_000;
        let check = |ip, t| {
            g.check(&s, ip, "a@example.net", "b@example.org", t)
                .unwrap()
        };
        assert_eq!(check(ip, t0), GreyVerdict::Grey);
        assert_eq!(check(ip, t0 + 24 * 60), GreyVerdict::Grey);
        // The retry may come from a neighbour in the sender's pool.
        assert_eq!(check(neighbour, t0 + 25 * 60), GreyVerdict::Pass);
        // WHITE now covers other triplets from that network.
        assert_eq!(
            g.check(&s, ip, "other@example.net", "c@example.org", t0 + 30 * 60)
                .unwrap(),
            GreyVerdict::Pass
        );
        let later = t0 + 30 * 60 + 37 * 86400;
        assert_eq!(check(ip, later), GreyVerdict::Grey);
    }

    #[test]
    fn a_retry_after_the_grey_expiry_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open(&dir.path().join("state.db")).unwrap();
        let s = GreylistSettings::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            g.check(&s, ip, "", "b@example.org", 0).unwrap(),
            GreyVerdict::Grey
        );
        let t = 4 * 3600 + 1;
        assert_eq!(
            g.check(&s, ip, "", "b@example.org", t).unwrap(),
            GreyVerdict::Grey
        );
        assert_eq!(
            g.check(&s, ip, "", "b@example.org", t + 25 * 60).unwrap(),
            GreyVerdict::Pass
        );
    }

    #[test]
    fn the_triplet_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = GreylistSettings::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        {
            let g = Greylist::open(&path).unwrap();
            assert_eq!(
                g.check(&s, ip, "a@x.example", "b@example.org", 0).unwrap(),
                GreyVerdict::Grey
            );
        }
        let g = Greylist::open(&path).unwrap();
        assert_eq!(
            g.check(&s, ip, "a@x.example", "b@example.org", 26 * 60)
                .unwrap(),
            GreyVerdict::Pass
        );
    }

    #[test]
    fn a_host_we_sent_to_is_not_greylisted() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open(&dir.path().join("state.db")).unwrap();
        let s = GreylistSettings::default();
        g.record_outbound(&s, "203.0.113.25".parse().unwrap(), 0)
            .unwrap();
        let reply_from: IpAddr = "203.0.113.26".parse().unwrap();
        assert_eq!(
            g.check(
                &s,
                reply_from,
                "friend@remote.example",
                "us@example.org",
                60
            )
            .unwrap(),
            GreyVerdict::Pass
        );
        assert_eq!(
            g.check(
                &s,
                "203.0.114.1".parse().unwrap(),
                "x@remote.example",
                "us@example.org",
                60
            )
            .unwrap(),
            GreyVerdict::Grey
        );
    }
}
