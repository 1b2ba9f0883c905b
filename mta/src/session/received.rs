//! The `Received:` trace header (RFC 5321 §4.4), in OpenSMTPD's layout:
//!
//! ```text
//! Received: from client.example (mail.client.example [192.0.2.7])
//!         by mx.example.org (fugu) with ESMTPS
//!         (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO)
//!         for <alice@example.org>;
//!         Tue, 21 Nov 2026 10:00:00 +0000
//! ```
//!
//! The `with` protocol is RFC 3848's: ESMTP, plus S for TLS and A for an authenticated
//! session (ESMTPS, ESMTPA, ESMTPSA); SMTP for a HELO session.

use std::net::IpAddr;
use std::time::SystemTime;

use super::TlsInfo;
use crate::clock::unix_seconds;
use crate::envelope::Origin;

pub struct ReceivedInfo<'a> {
    pub helo: &'a str,
    pub rdns: Option<&'a str>,
    pub origin: &'a Origin,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub tls: Option<&'a TlsInfo>,
    /// `Some(user)` adds OpenSMTPD's `auth=yes user=…` (listener `received-auth`).
    pub received_auth: Option<Option<&'a str>>,
    /// The one recipient, when there is exactly one (as OpenSMTPD: never leak a list).
    pub single_rcpt: Option<&'a str>,
    /// Hide the client (`mask-src`).
    pub mask_src: bool,
    pub now: SystemTime,
}

/// `[192.0.2.7]`, `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3 address literals), or `[local]`.
pub fn peer_literal(origin: &Origin) -> String {
    match origin {
        Origin::Inet(sa) => match sa.ip() {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("[{v4}]"),
                None => format!("[IPv6:{v6}]"),
            },
        },
        Origin::Local => "[local]".to_string(),
    }
}

/// The whole header, folded, ending in CRLF.
pub fn received_header(r: &ReceivedInfo<'_>) -> String {
    let mut h = String::from("Received:");
    if !r.mask_src {
        let rdns = match (r.rdns, r.origin) {
            (Some(n), _) => n,
            (None, Origin::Local) => "localhost",
            (None, _) => "unknown",
        };
        h.push_str(&format!(
            " from {} ({} {})\r\n\t",
            sanitize(r.helo),
            sanitize(rdns),
            peer_literal(r.origin)
        ));
    } else {
        h.push(' ');
    }
    h.push_str(&format!(
        "by {} (fugu) with {}",
        sanitize(r.hostname),
        r.protocol
    ));
    if let Some(tls) = r.tls {
        let verified = tls.client_cert.as_ref().is_some_and(|c| c.verified);
        h.push_str(&format!(
            "\r\n\t({}:{}:{}:{})",
            sanitize(&tls.version),
            sanitize(&tls.cipher),
            tls.bits,
            if verified { "YES" } else { "NO" }
        ));
        if let Some(user) = r.received_auth {
            match user {
                Some(u) => h.push_str(&format!(" auth=yes user={}", sanitize(u))),
                None => h.push_str(" auth=no"),
            }
        }
    }
    if let Some(rcpt) = r.single_rcpt {
        h.push_str(&format!("\r\n\tfor <{}>", sanitize(rcpt)));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(r.now)));
    h
}

/// Client-supplied text in a header: no controls, no folding tricks.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(255)
        .collect()
}

/// RFC 5322 §3.3 date-time in UTC: `Tue, 21 Nov 2026 10:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let wday = (days + 4).rem_euclid(7) as usize;
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[wday],
        d,
        MONTHS[(m - 1) as usize],
        y,
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
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
}
