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

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::SystemTime;

use super::TlsInfo;
use crate::clock::rfc5322_date;
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

/// `[192.0.2.7]`, `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3 address literals), or `[local]`,
/// written where it is used (the HELO reply and `Received:`) without a string of its own.
pub struct PeerLiteral<'a>(pub &'a Origin);

impl fmt::Display for PeerLiteral<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Origin::Inet(sa) => match sa.ip() {
                IpAddr::V4(v4) => write!(f, "[{v4}]"),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => write!(f, "[{v4}]"),
                    None => write!(f, "[IPv6:{v6}]"),
                },
            },
            Origin::Local => f.write_str("[local]"),
        }
    }
}

/// The whole header, folded, ending in CRLF.
pub fn received_header(r: &ReceivedInfo<'_>) -> String {
    // One buffer, written in place: this runs for every message.
    let mut h = String::with_capacity(256);
    h.push_str("Received:");
    if !r.mask_src {
        let rdns = match (r.rdns, r.origin) {
            (Some(n), _) => n,
            (None, Origin::Local) => "localhost",
            (None, _) => "unknown",
        };
        let _ = write!(
            h,
            " from {} ({} {})\r\n\t",
            Clean(r.helo),
            Clean(rdns),
            PeerLiteral(r.origin)
        );
    } else {
        h.push(' ');
    }
    let _ = write!(h, "by {} (fugu) with {}", Clean(r.hostname), r.protocol);
    if let Some(tls) = r.tls {
        let verified = tls.client_cert.as_ref().is_some_and(|c| c.verified);
        let _ = write!(
            h,
            "\r\n\t({}:{}:{}:{})",
            Clean(&tls.version),
            Clean(&tls.cipher),
            tls.bits,
            if verified { "YES" } else { "NO" }
        );
        if let Some(user) = r.received_auth {
            match user {
                Some(u) => {
                    let _ = write!(h, " auth=yes user={}", Clean(u));
                }
                None => h.push_str(" auth=no"),
            }
        }
    }
    if let Some(rcpt) = r.single_rcpt {
        let _ = write!(h, "\r\n\tfor <{}>", Clean(rcpt));
    }
    let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(r.now));
    h
}

/// Client-supplied text in a header: no controls, no folding tricks, at most 255
/// characters.
struct Clean<'a>(&'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= 255 && !s.chars().any(char::is_control) {
            return f.write_str(s);
        }
        for c in s.chars().take(255) {
            f.write_char(if c.is_control() { '?' } else { c })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_loses_its_controls_and_is_cut_at_255_characters() {
        assert_eq!(Clean("a\r\nb\tc").to_string(), "a??b?c");
        let long = "é".repeat(300);
        assert_eq!(Clean(&long).to_string(), "é".repeat(255));
        assert_eq!(Clean("mx.example.org").to_string(), "mx.example.org");
    }
}
