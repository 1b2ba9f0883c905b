//! Failed logins in other programs' logs, for auto-bans: Dovecot's login processes
//! (IMAP, POP3, ManageSieve, submission).
//!
//! The pattern, from Dovecot 2.3's `client_get_log_str()`: a `<service>-login:` line
//! whose reason has `(auth failed, N attempts in S secs)` and whose fields name the client
//! as `rip=ADDR`. One line closes a connection and carries all its N failed attempts:
//!
//! ```text
//! Nov 21 01:18:49 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<alice@example.org>, method=PLAIN, rip=127.0.0.3, lip=127.0.0.1, session=<5K6/Ir9g/eZ/AAAD>
//! ```
//!
//! The `auth:` process's own lines (`Password mismatch`, with `auth_verbose`) are not
//! counted: they describe the same attempts again.

use std::net::IpAddr;

use crate::clock::days_from_civil;

/// One closed login connection with failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    /// `imap`, `pop3`, `managesieve`, `submission`.
    pub service: String,
    pub ip: IpAddr,
    pub attempts: u32,
    /// The syslog-style time at the start of the line (`Nov 21 01:18:49`), in seconds
    /// since the start of the year, UTC; `None` when the line has none.
    pub time_of_year: Option<i64>,
}

/// Parses one Dovecot log line; `None` unless it reports failed logins.
pub fn dovecot_failure(line: &str) -> Option<LoginFailure> {
    let login = line.find("-login: ")?;
    let service = line[..login]
        .rsplit(' ')
        .next()
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase()))?;
    let rest = &line[login..];
    let after = &rest[rest.find("(auth failed, ")? + "(auth failed, ".len()..];
    let attempts: u32 = after.split(' ').next()?.parse().ok()?;
    let rip = &rest[rest.find(" rip=")? + " rip=".len()..];
    let ip: IpAddr = rip.split([',', ' ']).next()?.parse().ok()?;
    Some(LoginFailure {
        service: service.to_string(),
        ip,
        attempts: attempts.max(1),
        time_of_year: syslog_time(line),
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 21 01:18:49` (Dovecot's default `log_timestamp = "%b %d %H:%M:%S "`) as seconds
/// since January 1st 00:00 of a non-leap year (the caller places it in a year).
fn syslog_time(line: &str) -> Option<i64> {
    let mut it = line.split_ascii_whitespace();
    let name = it.next()?;
    let month = MONTHS.iter().position(|m| *m == name)?;
    let day: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    const DAYS_BEFORE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((DAYS_BEFORE[month] + day - 1) * 86400 + h * 3600 + m * 60 + s)
}

/// Places a time of year in the year of `now` (Unix seconds, UTC), or the year before
/// when that would be more than a day in the future (a log read just after New Year).
pub fn place_in_year(time_of_year: i64, now: i64) -> i64 {
    let start = |year: i64| days_from_civil(year, 1, 1) * 86400;
    let year = civil_year(now);
    let leap_shift = |year: i64| {
        // Dates after February move one day in leap years.
        if is_leap(year) && time_of_year >= 59 * 86400 {
            86400
        } else {
            0
        }
    };
    let t = start(year) + time_of_year + leap_shift(year);
    if t > now + 86400 {
        start(year - 1) + time_of_year + leap_shift(year - 1)
    } else {
        t
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn civil_year(unix: i64) -> i64 {
    let mut y = 1970 + unix.div_euclid(86400 * 365);
    while days_from_civil(y, 1, 1) * 86400 > unix {
        y -= 1;
    }
    while days_from_civil(y + 1, 1, 1) * 86400 <= unix {
        y += 1;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_client_and_attempts_of_a_failed_login() {
        let f = dovecot_failure(
            "Nov 21 01:18:49 imap-login: Info: Disconnected: Aborted login by logging out \
             (auth failed, 3 attempts in 2 secs): user=<alice@example.org>, method=PLAIN, \
             rip=192.0.2.9, lip=127.0.0.1, session=<5K6/Ir9g/eZ/AAAD>",
        )
        .unwrap();
        assert_eq!(f.service, "imap");
        assert_eq!(f.ip, "192.0.2.9".parse::<IpAddr>().unwrap());
        assert_eq!(f.attempts, 3);
        assert_eq!(
            f.time_of_year,
            Some((304 + 20) * 86400 + 3600 + 18 * 60 + 49)
        );
    }

    #[test]
    fn other_lines_are_not_failures() {
        for line in [
            "Nov 21 01:18:46 imap-login: Info: Disconnected: Connection closed (disconnected before auth was ready, waited 0 secs): user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<FrO8Ir9ggOR/AAAB>",
            "Nov 21 01:18:46 imap-login: Info: Login: user=<alice@example.org>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=2750, session=<x>",
            "Nov 21 01:18:46 lmtp(2720): Info: Connect from 127.0.0.1",
            "Nov 21 01:18:46 auth: Info: passwd-file(alice@example.org,127.0.0.3,<x>): Password mismatch",
        ] {
            assert_eq!(dovecot_failure(line), None, "{line}");
        }
    }

    #[test]
    fn log_times_land_in_the_right_year() {
        // 2026-11-21 01:18:49 UTC.
        let now = 1_795_223_929;
        let t = syslog_time("Nov 21 01:18:49 x").unwrap();
        assert_eq!(place_in_year(t, now), now);
        // A December line read on January 1st belongs to the year before.
        let jan1 = days_from_civil(2027, 1, 1) * 86400 + 60;
        let dec31 = syslog_time("Dec 31 23:59:00 x").unwrap();
        assert_eq!(place_in_year(dec31, jan1), jan1 - 120);
        // Leap years shift dates after February.
        let in_2028 = days_from_civil(2028, 6, 1) * 86400;
        let mar1 = syslog_time("Mar  1 00:00:00 x").unwrap();
        assert_eq!(
            place_in_year(mar1, in_2028),
            days_from_civil(2028, 3, 1) * 86400
        );
    }
}
