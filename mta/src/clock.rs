//! Time, injected: retry schedules, expiry, greylist windows and timeouts are tested
//! by moving a [`ManualClock`] instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds since the Unix epoch, as stored in envelopes and shown by `fugu ctl`.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month 1-12, day 1-31), after
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (weekday name, day, month name, year, seconds of the day) in UTC.
fn parts(t: SystemTime) -> (&'static str, u32, &'static str, i64, i64) {
    let secs = unix_seconds(t);
    let days = secs.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // DAYS starts on Thursday: 1970-01-01 was one.
    let wday = DAYS[days.rem_euclid(7) as usize];
    (
        wday,
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs.rem_euclid(86_400),
    )
}

/// RFC 5322 §3.3 date-time in UTC: `Tue, 14 Nov 2023 22:13:20 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let (wday, d, mon, y, r) = parts(t);
    format!(
        "{wday}, {d} {mon} {y} {:02}:{:02}:{:02} +0000",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// asctime(3) form in UTC, as in mbox `From ` lines: `Tue Nov 14 22:13:20 2023`.
pub fn asctime(t: SystemTime) -> String {
    let (wday, d, mon, y, r) = parts(t);
    format!(
        "{wday} {mon} {d:>2} {:02}:{:02}:{:02} {y}",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

#[cfg(test)]
mod date_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc5322_dates() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(rfc5322_date(t), "Thu, 1 Jan 1970 00:00:00 +0000");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_255_200);
        assert_eq!(rfc5322_date(t), "Sat, 21 Nov 2026 10:00:00 +0000");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for days in [-800_000, -1, 0, 59, 19_782, 20_413, 3_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }
}
