//! The running state behind the access decisions: in-process bans, the greylist
//! database and the block list resolver. One per daemon, kept across reloads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::bans::{Ban, BanBook, Failure};
use super::dnsbl::{Dnsbl, Score};
use super::greylist::{GreyVerdict, Greylist};
use super::{AccessSettings, BanSettings, GreylistSettings};
use crate::clock::{Clock, unix_seconds};

pub struct Guard {
    clock: Arc<dyn Clock>,
    bans: Mutex<BanBook>,
    greylist: Option<Greylist>,
    /// The block list resolver, for the `resolver` address it was built for (rebuilt
    /// when a reload changes it).
    dnsbl: Mutex<Option<(Option<String>, Arc<Dnsbl>)>>,
    /// How long a host we delivered to stays WHITE (the greylist setting at start).
    outbound_white: GreylistSettings,
    /// When each relay peer was last written WHITE: one database write per host per
    /// [`OUTBOUND_REFRESH`] instead of one per delivered message (a synchronous SQLite
    /// commit on the relay's task, measured at 3% of the daemon's time relaying to one
    /// host).
    outbound_seen: Mutex<HashMap<IpAddr, i64>>,
}

/// A WHITE entry lasts weeks; refreshing it once an hour (or at half its lifetime, if
/// shorter) loses nothing.
const OUTBOUND_REFRESH: i64 = 3600;
/// Past this many peers the memo starts afresh rather than growing without bound.
const OUTBOUND_MEMO_MAX: usize = 10_000;

impl Guard {
    /// Opens `<spool>/state.db`. A database that cannot open is logged and greylisting
    /// left off, so a broken state database does not stop mail.
    pub fn open(settings: &AccessSettings, spool: &Path, clock: Arc<dyn Clock>) -> Guard {
        let path = spool.join("state.db");
        let greylist = match Greylist::open(&path) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!("greylist: cannot open {}: {e}", path.display());
                None
            }
        };
        Guard {
            clock,
            bans: Mutex::new(BanBook::default()),
            greylist,
            dnsbl: Mutex::new(None),
            outbound_white: settings.greylist.unwrap_or_default(),
            outbound_seen: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> i64 {
        unix_seconds(self.clock.now())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BanBook> {
        self.bans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Banned in this process (acts before any export to pf/nftables).
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let now = self.now();
        self.book().is_banned(ip, now)
    }

    /// Counts a failure; returns the ban when this one crosses the threshold.
    pub fn record_failure(
        &self,
        settings: &BanSettings,
        ip: IpAddr,
        failure: Failure,
    ) -> Option<Ban> {
        let now = self.now();
        self.book().record(ip, failure, now, settings)
    }

    /// The block lists' verdict on `ip`, asked through `resolver` (the configuration's
    /// `resolver` line); `None` when no list is configured or no resolver can be built.
    pub async fn dnsbl(
        &self,
        settings: &AccessSettings,
        resolver: Option<&str>,
        ip: IpAddr,
    ) -> Option<Score> {
        if settings.dnsbl_zones.is_empty() {
            return None;
        }
        let d = {
            let mut g = self.dnsbl.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some((r, d)) if r.as_deref() == resolver => d.clone(),
                _ => match Dnsbl::new(resolver) {
                    Ok(d) => {
                        let d = Arc::new(d);
                        *g = Some((resolver.map(str::to_string), d.clone()));
                        d
                    }
                    Err(e) => {
                        tracing::warn!("dnsbl: no resolver: {e}");
                        return None;
                    }
                },
            }
        };
        Some(d.score(&settings.dnsbl_zones, ip).await)
    }

    /// One recipient through the greylist (blocking). Without a database every
    /// triplet passes.
    pub fn greylist(
        &self,
        settings: &GreylistSettings,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
    ) -> Result<GreyVerdict, String> {
        let Some(g) = &self.greylist else {
            return Ok(GreyVerdict::Pass);
        };
        g.check(settings, ip, sender, recipient, self.now())
            .map_err(|e| e.to_string())
    }

    /// spamlogd: the relay calls this after a successful delivery to `ip`, so the
    /// host's replies to our users are not greylisted.
    pub fn record_outbound(&self, ip: IpAddr) {
        let Some(g) = &self.greylist else { return };
        let now = self.now();
        let white = i64::try_from(self.outbound_white.white_expiry.as_secs()).unwrap_or(i64::MAX);
        let refresh = (white / 2).min(OUTBOUND_REFRESH);
        {
            let mut seen = self.outbound_seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen
                .get(&ip)
                .is_some_and(|t| (0..refresh).contains(&(now - t)))
            {
                return;
            }
            if seen.len() >= OUTBOUND_MEMO_MAX {
                seen.clear();
            }
            seen.insert(ip, now);
        }
        if let Err(e) = g.record_outbound(&self.outbound_white, ip, now) {
            tracing::warn!("greylist: cannot record outbound host {ip}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn greylist_and_bans_follow_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30),
        ));
        let settings = AccessSettings {
            greylist: Some(GreylistSettings::default()),
            ..AccessSettings::default()
        };
        let guard = Guard::open(&settings, dir.path(), clock.clone());
        let g = GreylistSettings::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let check = || {
            guard
                .greylist(&g, ip, "a@remote.example", "b@example.org")
                .unwrap()
        };
        assert_eq!(check(), GreyVerdict::Grey);
        clock.advance(Duration::from_secs(24 * 60));
        assert_eq!(check(), GreyVerdict::Grey);
        clock.advance(Duration::from_secs(60));
        assert_eq!(check(), GreyVerdict::Pass);

        // spamlogd: a host we delivered to passes at once.
        let peer: IpAddr = "198.51.100.25".parse().unwrap();
        guard.record_outbound(peer);
        assert_eq!(
            guard
                .greylist(&g, peer, "reply@remote.example", "b@example.org")
                .unwrap(),
            GreyVerdict::Pass
        );

        let bans = BanSettings {
            auth_failures: 2,
            ..BanSettings::default()
        };
        assert!(guard.record_failure(&bans, ip, Failure::Auth).is_none());
        assert!(guard.record_failure(&bans, ip, Failure::Auth).is_some());
        assert!(guard.is_banned(ip));
        clock.advance(Duration::from_secs(86400));
        assert!(!guard.is_banned(ip));
    }
}
