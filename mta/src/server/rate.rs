//! New connections per client address per minute (`smtp limit max-conn-rate`, a fugu
//! extension). A client may open a minute's allowance at once, then one more every
//! `60 s / rate`; refused connections do not count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

/// Buckets are pruned once the map holds this many addresses; a full bucket is the
/// same as no bucket, so only those are dropped.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
pub(super) struct ConnRate {
    per_minute: u32,
    /// The generic cell rate algorithm's theoretical arrival time per address: the
    /// bucket is full when it is in the past, and each admitted connection pushes it
    /// one interval on. Integer time, so no rounding drifts the allowance.
    tat: HashMap<IpAddr, Instant>,
}

impl ConnRate {
    /// `per_minute == 0` admits everything.
    pub(super) fn new(per_minute: u32) -> ConnRate {
        ConnRate {
            per_minute,
            tat: HashMap::new(),
        }
    }

    /// Whether a new connection from `ip` at `now` is within the rate; counts it if so.
    pub(super) fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        if self.tat.len() >= PRUNE_AT {
            self.tat.retain(|_, t| *t > now);
        }
        let interval = MINUTE / self.per_minute;
        let burst = interval * (self.per_minute - 1);
        let tat = self.tat.get(&ip).map_or(now, |t| (*t).max(now));
        if tat.saturating_duration_since(now) > burst {
            return false;
        }
        self.tat.insert(ip, tat + interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_minutes_allowance_then_one_per_interval() {
        let t0 = Instant::now();
        let mut r = ConnRate::new(6);
        for i in 0..6 {
            assert!(r.admit(A, t0), "connection {i}");
        }
        assert!(!r.admit(A, t0));
        // Another address has its own allowance.
        assert!(r.admit(B, t0));
        // 6 per minute refills one every 10 s.
        assert!(!r.admit(A, t0 + Duration::from_secs(9)));
        assert!(r.admit(A, t0 + Duration::from_secs(10)));
        assert!(!r.admit(A, t0 + Duration::from_secs(11)));
        // A quiet minute restores the whole allowance, never more.
        let later = t0 + Duration::from_secs(600);
        for _ in 0..6 {
            assert!(r.admit(A, later));
        }
        assert!(!r.admit(A, later));
    }

    #[test]
    fn refused_connections_do_not_count() {
        let t0 = Instant::now();
        let mut r = ConnRate::new(1);
        assert!(r.admit(A, t0));
        for s in 1..60 {
            assert!(!r.admit(A, t0 + Duration::from_secs(s)));
        }
        assert!(r.admit(A, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn zero_is_no_limit() {
        let t0 = Instant::now();
        let mut r = ConnRate::new(0);
        assert!((0..10_000).all(|_| r.admit(A, t0)));
    }

    #[test]
    fn prunes_only_full_buckets() {
        let t0 = Instant::now();
        let mut r = ConnRate::new(2);
        for i in 0..PRUNE_AT as u32 {
            assert!(r.admit(IpAddr::V4(i.into()), t0));
        }
        assert!(r.admit(A, t0 + MINUTE));
        // The old buckets were full again after a minute and are gone; A's is not.
        assert_eq!(r.tat.len(), 1);
        assert!(r.admit(A, t0 + MINUTE));
        assert!(!r.admit(A, t0 + MINUTE));
    }
}
