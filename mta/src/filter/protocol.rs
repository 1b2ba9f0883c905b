//! The OpenSMTPD filter protocol, version 0.6 (smtpd-filters(7), OpenSMTPD 6.7 – 7.3), as
//! pure encoding and decoding: no processes, no sockets.
//!
//! Lines are LF-terminated and split on `|`; only the last field may contain `|`. Data
//! lines are bytes (8-bit mail passes through unchanged), everything else is text.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::session::Reply;

/// The protocol version fugu speaks. Debian bookworm's filters (filter-rspamd 0.1.7,
/// filter-dkimsign 0.5 on libopensmtpd) read it from every line; 0.6 keeps
/// `tx-mail`/`tx-rcpt` as `msgid|result|address` and `link-auth` as `username|result`.
pub const VERSION: &str = "0.6";

/// The smtpd version announced in `config|smtpd-version`.
pub const SMTPD_VERSION: &str = "6.8.0p2";

/// Filter phases fugu emits requests for.
pub const PHASES: &[&str] = &[
    "connect",
    "helo",
    "ehlo",
    "mail-from",
    "rcpt-to",
    "data",
    "data-line",
    "commit",
];

/// Phases a filter may register although fugu never asks them (smtpd-filters(7) lists
/// them; libopensmtpd registers some of them blindly).
const REGISTRABLE_PHASES: &[&str] = &[
    "connect",
    "helo",
    "ehlo",
    "starttls",
    "auth",
    "mail-from",
    "rcpt-to",
    "data",
    "data-line",
    "rset",
    "quit",
    "noop",
    "help",
    "wiz",
    "commit",
];

/// Report events a filter may subscribe to.
pub const EVENTS: &[&str] = &[
    "link-connect",
    "link-disconnect",
    "link-greeting",
    "link-identify",
    "link-tls",
    "link-auth",
    "tx-reset",
    "tx-begin",
    "tx-mail",
    "tx-rcpt",
    "tx-envelope",
    "tx-data",
    "tx-commit",
    "tx-rollback",
    "protocol-client",
    "protocol-server",
    "filter-report",
    "filter-response",
    "timeout",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed line {0:?}")]
    Malformed(String),
    #[error("unknown report event {0:?}")]
    UnknownEvent(String),
    #[error("unknown filter phase {0:?}")]
    UnknownPhase(String),
    #[error("unknown subsystem {0:?}, expected smtp-in")]
    UnknownSubsystem(String),
    #[error("unknown decision {0:?}")]
    UnknownDecision(String),
}

/// `SEC.USEC` as in every report and request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: u64,
    pub micros: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            micros: d.subsec_micros(),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.secs, self.micros)
    }
}

/// The `config|…` block smtpd sends each process before anything else.
pub fn config_lines(session_timeout_secs: u64, admd: &str) -> Vec<String> {
    vec![
        format!("config|smtpd-version|{SMTPD_VERSION}"),
        format!("config|smtp-session-timeout|{session_timeout_secs}"),
        "config|subsystem|smtp-in".to_owned(),
        format!("config|admd|{admd}"),
        "config|ready".to_owned(),
    ]
}

/// One line a filter sends during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// `register|report|smtp-in|EVENT` (`*` for all).
    Report(String),
    /// `register|filter|smtp-in|PHASE`.
    Filter(String),
    Ready,
}

pub fn parse_registration(line: &str) -> Result<Registration, ProtocolError> {
    let bad = || ProtocolError::Malformed(line.to_owned());
    let f: Vec<&str> = line.splitn(4, '|').collect();
    match f.as_slice() {
        ["register", "ready"] => Ok(Registration::Ready),
        ["register", kind @ ("report" | "filter"), subsystem, name] => {
            if *kind == "report" {
                // Reports for smtp-out may be registered; fugu has none to send.
                if !matches!(*subsystem, "smtp-in" | "smtp-out") {
                    return Err(ProtocolError::UnknownSubsystem((*subsystem).to_owned()));
                }
                if *name != "*" && !EVENTS.contains(name) {
                    return Err(ProtocolError::UnknownEvent((*name).to_owned()));
                }
                Ok(Registration::Report((*name).to_owned()))
            } else {
                if *subsystem != "smtp-in" {
                    return Err(ProtocolError::UnknownSubsystem((*subsystem).to_owned()));
                }
                if !REGISTRABLE_PHASES.contains(name) {
                    return Err(ProtocolError::UnknownPhase((*name).to_owned()));
                }
                Ok(Registration::Filter((*name).to_owned()))
            }
        }
        _ => Err(bad()),
    }
}

/// `report|0.6|TIME|smtp-in|EVENT|SID[|params…]`; no trailing `|` without params.
pub fn report(time: Timestamp, event: &str, sid: u64, params: &[&str]) -> String {
    let mut s = format!("report|{VERSION}|{time}|smtp-in|{event}|{sid:016x}");
    for p in params {
        s.push('|');
        s.push_str(p);
    }
    s
}

/// `filter|0.6|TIME|smtp-in|PHASE|SID|TOKEN|param`: the param is always present.
pub fn request(time: Timestamp, phase: &str, sid: u64, token: u64, param: &str) -> String {
    format!("filter|{VERSION}|{time}|smtp-in|{phase}|{sid:016x}|{token:016x}|{param}")
}

/// A data-line request: the line as bytes, still dot-stuffed, without line ending.
pub fn data_line(time: Timestamp, sid: u64, token: u64, line: &[u8]) -> Vec<u8> {
    let mut v = request(time, "data-line", sid, token, "").into_bytes();
    v.extend_from_slice(line);
    v
}

/// A filter's answer to a phase request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Proceed,
    Junk,
    /// A 4xx/5xx reply; invalid text has already become `421 Internal server error`.
    Reject(Reply),
    Disconnect(Reply),
    Rewrite(String),
    Report(String),
}

/// A line a filter sends after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Result {
        sid: u64,
        token: u64,
        decision: Decision,
    },
    DataLine {
        sid: u64,
        token: u64,
        /// Dot-stuffed; a lone `.` ends the message.
        line: Vec<u8>,
    },
}

fn hex(s: &str, line: &str) -> Result<u64, ProtocolError> {
    u64::from_str_radix(s, 16).map_err(|_| ProtocolError::Malformed(line.to_owned()))
}

/// smtpd substitutes this when a filter's reject text is not a 4xx/5xx reply.
fn internal_error() -> Reply {
    Reply::new(421, "", "Internal server error")
}

fn reply_text(text: &str) -> Reply {
    Reply::parse(text).unwrap_or_else(internal_error)
}

/// Parses `filter-result|SID|TOKEN|…` or `filter-dataline|SID|TOKEN|line` (0.5+ order).
pub fn parse_response(line: &[u8]) -> Result<Response, ProtocolError> {
    let text_of = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut parts = line.splitn(4, |&b| b == b'|');
    let (Some(kind), Some(sid), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ProtocolError::Malformed(text_of(line)));
    };
    let rest = parts.next();
    let whole = text_of(line);
    let sid = hex(&text_of(sid), &whole)?;
    let token = hex(&text_of(token), &whole)?;
    match kind {
        b"filter-dataline" => Ok(Response::DataLine {
            sid,
            token,
            line: rest.unwrap_or_default().to_vec(),
        }),
        b"filter-result" => {
            let rest = text_of(rest.ok_or_else(|| ProtocolError::Malformed(whole.clone()))?);
            let (verb, param) = match rest.split_once('|') {
                Some((v, p)) => (v, Some(p)),
                None => (rest.as_str(), None),
            };
            let decision = match (verb, param) {
                ("proceed", _) => Decision::Proceed,
                ("junk", _) => Decision::Junk,
                ("reject", Some(p)) => Decision::Reject(reply_text(p)),
                ("disconnect", Some(p)) => Decision::Disconnect(reply_text(p)),
                ("rewrite", Some(p)) => Decision::Rewrite(p.to_owned()),
                ("report", Some(p)) => Decision::Report(p.to_owned()),
                _ => return Err(ProtocolError::UnknownDecision(rest.clone())),
            };
            Ok(Response::Result {
                sid,
                token,
                decision,
            })
        }
        _ => Err(ProtocolError::Malformed(whole)),
    }
}

/// The `src` field of `link-connect`: `1.2.3.4:25`, `[::1]:25` or `unix:…`.
pub fn link_address(addr: Option<std::net::SocketAddr>) -> String {
    match addr {
        Some(std::net::SocketAddr::V4(a)) => a.to_string(),
        Some(std::net::SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
        None => "unix:/var/run/smtpd.sock".to_owned(),
    }
}

/// The `src` parameter of the `connect` request: no port, `local` for the enqueuer.
pub fn connect_address(addr: Option<std::net::SocketAddr>) -> String {
    match addr {
        Some(std::net::SocketAddr::V4(a)) => a.ip().to_string(),
        Some(std::net::SocketAddr::V6(a)) => format!("[{}]", a.ip()),
        None => "local".to_owned(),
    }
}

/// Dot-stuffs one message line for the data-line stream (RFC 5321 §4.5.2).
pub fn stuff(line: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(line.len() + 1);
    if line.first() == Some(&b'.') {
        v.push(b'.');
    }
    v.extend_from_slice(line);
    v
}

/// Undoes [`stuff`] on a line a filter sent back.
pub fn unstuff(line: &[u8]) -> &[u8] {
    match line {
        [b'.', rest @ ..] if rest.first() == Some(&b'.') => rest,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp {
        secs: 1700000000,
        micros: 42,
    };

    #[test]
    fn handshake_announces_version_subsystem_and_admd() {
        assert_eq!(
            config_lines(300, "mx.example.org"),
            [
                "config|smtpd-version|6.8.0p2",
                "config|smtp-session-timeout|300",
                "config|subsystem|smtp-in",
                "config|admd|mx.example.org",
                "config|ready",
            ]
        );
    }

    #[test]
    fn dkimsign_registration_transcript_parses() {
        let lines = [
            "register|filter|smtp-in|data-line",
            "register|filter|smtp-in|commit",
            "register|report|smtp-in|link-disconnect",
            "register|ready",
        ];
        let got: Vec<_> = lines
            .iter()
            .map(|l| parse_registration(l).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                Registration::Filter("data-line".into()),
                Registration::Filter("commit".into()),
                Registration::Report("link-disconnect".into()),
                Registration::Ready,
            ]
        );
    }

    #[test]
    fn registration_refuses_garbage_and_unknown_names() {
        assert!(matches!(
            parse_registration("hello"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            parse_registration("register|filter|smtp-in|dance"),
            Err(ProtocolError::UnknownPhase(_))
        ));
        assert!(matches!(
            parse_registration("register|report|smtp-in|link-dance"),
            Err(ProtocolError::UnknownEvent(_))
        ));
        assert!(matches!(
            parse_registration("register|filter|smtp-out|commit"),
            Err(ProtocolError::UnknownSubsystem(_))
        ));
        assert_eq!(
            parse_registration("register|report|smtp-in|*"),
            Ok(Registration::Report("*".into()))
        );
    }

    #[test]
    fn reports_end_after_the_session_id_without_params() {
        assert_eq!(
            report(T, "link-disconnect", 0xab, &[]),
            "report|0.6|1700000000.000042|smtp-in|link-disconnect|00000000000000ab"
        );
        assert_eq!(
            report(
                T,
                "link-connect",
                1,
                &["<unknown>", "pass", "192.0.2.1:4242", "192.0.2.2:25"]
            ),
            "report|0.6|1700000000.000042|smtp-in|link-connect|0000000000000001|<unknown>|pass|192.0.2.1:4242|192.0.2.2:25"
        );
        assert_eq!(
            report(T, "tx-mail", 1, &["0badcafe", "ok", "a@example.org"]),
            "report|0.6|1700000000.000042|smtp-in|tx-mail|0000000000000001|0badcafe|ok|a@example.org"
        );
    }

    #[test]
    fn requests_always_carry_a_param_field() {
        assert_eq!(
            request(T, "commit", 1, 2, ""),
            "filter|0.6|1700000000.000042|smtp-in|commit|0000000000000001|0000000000000002|"
        );
        assert_eq!(
            data_line(T, 1, 2, b"..hidden dot"),
            b"filter|0.6|1700000000.000042|smtp-in|data-line|0000000000000001|0000000000000002|..hidden dot"
        );
    }

    #[test]
    fn results_parse_in_0_6_order() {
        assert_eq!(
            parse_response(b"filter-result|0000000000000001|0000000000000002|proceed"),
            Ok(Response::Result {
                sid: 1,
                token: 2,
                decision: Decision::Proceed
            })
        );
        assert_eq!(
            parse_response(b"filter-result|1|2|reject|550 5.7.1 spam|really"),
            Ok(Response::Result {
                sid: 1,
                token: 2,
                decision: Decision::Reject(Reply::new(550, "5.7.1", "spam|really"))
            })
        );
        assert_eq!(
            parse_response(b"filter-result|1|2|disconnect|421 bye"),
            Ok(Response::Result {
                sid: 1,
                token: 2,
                decision: Decision::Disconnect(Reply::new(421, "", "bye"))
            })
        );
    }

    #[test]
    fn a_reject_that_is_not_an_error_reply_becomes_421() {
        assert_eq!(
            parse_response(b"filter-result|1|2|reject|250 fine"),
            Ok(Response::Result {
                sid: 1,
                token: 2,
                decision: Decision::Reject(Reply::new(421, "", "Internal server error"))
            })
        );
    }

    #[test]
    fn datalines_keep_bytes_and_pipes() {
        assert_eq!(
            parse_response(b"filter-dataline|1|2|Subject: a|b \xe9"),
            Ok(Response::DataLine {
                sid: 1,
                token: 2,
                line: b"Subject: a|b \xe9".to_vec()
            })
        );
        assert_eq!(
            parse_response(b"filter-dataline|1|2|"),
            Ok(Response::DataLine {
                sid: 1,
                token: 2,
                line: Vec::new()
            })
        );
    }

    #[test]
    fn garbage_responses_are_errors() {
        assert!(parse_response(b"hello world").is_err());
        assert!(parse_response(b"filter-result|zz|2|proceed").is_err());
        assert!(parse_response(b"filter-result|1|2|maybe").is_err());
        assert!(parse_response(b"filter-result|1|2|reject").is_err());
    }

    #[test]
    fn addresses_take_opensmtpd_forms() {
        let v4: std::net::SocketAddr = "192.0.2.1:2525".parse().unwrap();
        let v6: std::net::SocketAddr = "[2001:db8::1]:25".parse().unwrap();
        assert_eq!(link_address(Some(v4)), "192.0.2.1:2525");
        assert_eq!(link_address(Some(v6)), "[2001:db8::1]:25");
        assert_eq!(link_address(None), "unix:/var/run/smtpd.sock");
        assert_eq!(connect_address(Some(v4)), "192.0.2.1");
        assert_eq!(connect_address(Some(v6)), "[2001:db8::1]");
        assert_eq!(connect_address(None), "local");
    }

    #[test]
    fn stuffing_round_trips() {
        assert_eq!(stuff(b".x"), b"..x");
        assert_eq!(stuff(b"x."), b"x.");
        assert_eq!(unstuff(b"..x"), b".x");
        assert_eq!(unstuff(b".x"), b".x");
        assert_eq!(unstuff(b"x"), b"x");
    }
}
