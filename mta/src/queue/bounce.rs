//! Delivery status notifications: RFC 3464 `multipart/report` messages for recipients
//! that failed permanently or expired in the queue, delay warnings after `bounce
//! warn-interval`, and success notices for `NOTIFY=SUCCESS`.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::format::StoredEnvelope;
use crate::clock::rfc5322_date;
use crate::envelope::DsnRet;

/// One recipient in a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRcpt {
    pub address: String,
    /// RFC 3461 ORCPT as received (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
    /// The last reply or error, e.g. `550 5.1.1 <bob@example.net>: no such user`.
    pub diagnostic: String,
    /// Failed because the queue ttl ran out rather than by a permanent reply.
    pub expired: bool,
    /// Unix seconds of the last attempt, if any.
    pub last_attempt: Option<i64>,
}

pub struct DsnInput<'a> {
    pub hostname: &'a str,
    pub now: SystemTime,
    pub boundary: &'a str,
    /// Without angle brackets.
    pub message_id: &'a str,
    pub envelope: &'a StoredEnvelope,
    pub failed: &'a [FailedRcpt],
    /// The original message as spooled (CRLF).
    pub original: &'a [u8],
}

/// The enhanced status code for a failed recipient: the one in its diagnostic if there is
/// one (`550 5.1.1 …`), else 4.4.7 for expiry (RFC 3463 §3.5) or 5.0.0.
pub fn status_of(f: &FailedRcpt) -> String {
    let mut words = f.diagnostic.split_whitespace();
    let _code = words.next();
    if let Some(w) = words.next() {
        let parts: Vec<&str> = w.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            // An expired recipient is a permanent failure even if its last reply was 4xx.
            if f.expired && parts[0] == "4" {
                return "4.4.7".into();
            }
            return w.to_string();
        }
    }
    if f.expired {
        "4.4.7".into()
    } else {
        "5.0.0".into()
    }
}

fn headers_of(msg: &[u8]) -> &[u8] {
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| msg.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(msg.len());
    &msg[..end]
}

/// What a report tells the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The recipients failed permanently or expired (`Action: failed`).
    Failure,
    /// The recipients are still queued after `waited` seconds and are retried until
    /// `until` (unix seconds) (`Action: delayed`).
    Delay { waited: u64, until: i64 },
    /// Delivered (`Action: delivered`), or handed to another MTA (`relayed`, RFC 3464
    /// §2.3.3: the next hop may not send DSNs).
    Success { relayed: bool },
}

/// Renders the failure DSN with CRLF line ends.
pub fn render(i: &DsnInput<'_>) -> Vec<u8> {
    render_report(i, ReportKind::Failure)
}

fn unix_time(t: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64)
}

/// Renders a DSN of `kind` with CRLF line ends. `failed` carries the recipients with
/// their last reply (the delivery reply for a success, the last error for a delay).
pub fn render_report(i: &DsnInput<'_>, kind: ReportKind) -> Vec<u8> {
    let env = i.envelope;
    let any_perm = i.failed.iter().any(|f| !f.expired);
    let subject = match kind {
        ReportKind::Failure if any_perm => "error",
        ReportKind::Failure => "expired",
        ReportKind::Delay { .. } => "delayed",
        ReportKind::Success { .. } => "success",
    };
    let mut h = String::new();
    let mut l = |s: &str| {
        h.push_str(s);
        h.push_str("\r\n");
    };
    l(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>",
        i.hostname
    ));
    l(&format!(
        "To: {}",
        env.header.mail_from.as_deref().unwrap_or("")
    ));
    l(&format!("Subject: Delivery status notification: {subject}"));
    l(&format!("Date: {}", rfc5322_date(i.now)));
    l(&format!("Message-ID: <{}>", i.message_id));
    l("MIME-Version: 1.0");
    l(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{}\"",
        i.boundary
    ));
    // RFC 3834 §5: automatic responses say so, which keeps vacation responders quiet.
    l("Auto-Submitted: auto-replied");
    l("");
    l("This is a MIME-encapsulated message.");
    l("");
    l(&format!("--{}", i.boundary));
    l("Content-Type: text/plain; charset=us-ascii");
    l("Content-Description: Notification");
    l("");
    l("Hi!");
    l("");
    l("This is the MAILER-DAEMON, please DO NOT REPLY to this email.");
    l("");
    // OpenSMTPD's notice texts (bounce.c).
    match kind {
        ReportKind::Failure => {
            l("An error has occurred while attempting to deliver a message for");
            l("the following list of recipients:");
        }
        ReportKind::Delay { waited, .. } => {
            l(&format!(
                "A message is delayed for more than {} for the following",
                crate::control::duration_text(waited)
            ));
            l("list of recipients:");
        }
        ReportKind::Success { relayed: false } => {
            l("Your message was successfully delivered to these recipients.")
        }
        ReportKind::Success { relayed: true } => l("Your message was relayed to these recipients."),
    }
    l("");
    for f in i.failed {
        let why = if f.expired {
            format!("message expired in the queue; last error: {}", f.diagnostic)
        } else {
            f.diagnostic.clone()
        };
        l(&format!("{}: {}", f.address, why));
    }
    l("");
    if let ReportKind::Delay { until, .. } = kind {
        l("Please note that this is only a temporary failure report.");
        l(&format!(
            "The message is kept in the queue until {}.",
            rfc5322_date(unix_time(until))
        ));
        l("You DO NOT NEED to re-send the message to these recipients.");
        l("");
    }
    l("Below is a copy of the original message:");
    l("");
    l(&format!("--{}", i.boundary));
    l("Content-Type: message/delivery-status");
    l("");
    // RFC 3464 §2.2: per-message fields.
    l(&format!("Reporting-MTA: dns; {}", i.hostname));
    if let Some(envid) = &env.header.dsn_envid {
        l(&format!("Original-Envelope-Id: {envid}"));
    }
    l(&format!(
        "Arrival-Date: {}",
        rfc5322_date(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(env.ctime.max(0) as u64)
        )
    ));
    for f in i.failed {
        // RFC 3464 §2.3: per-recipient fields, each group after a blank line.
        l("");
        if let Some(o) = &f.orcpt {
            l(&format!("Original-Recipient: {o}"));
        }
        l(&format!("Final-Recipient: rfc822; {}", f.address));
        let (action, status) = match kind {
            ReportKind::Failure => ("failed", status_of(f)),
            ReportKind::Delay { .. } => ("delayed", transient_status(f)),
            ReportKind::Success { relayed } => (
                if relayed { "relayed" } else { "delivered" },
                success_status(f),
            ),
        };
        l(&format!("Action: {action}"));
        l(&format!("Status: {status}"));
        if f.diagnostic.len() >= 3 && f.diagnostic.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            l(&format!(
                "Diagnostic-Code: smtp; {}",
                one_line(&f.diagnostic)
            ));
        } else {
            l(&format!(
                "Diagnostic-Code: x-local; {}",
                one_line(&f.diagnostic)
            ));
        }
        if let Some(t) = f.last_attempt {
            l(&format!(
                "Last-Attempt-Date: {}",
                rfc5322_date(unix_time(t))
            ));
        }
        // RFC 3464 §2.3.9.
        if let ReportKind::Delay { until, .. } = kind {
            l(&format!(
                "Will-Retry-Until: {}",
                rfc5322_date(unix_time(until))
            ));
        }
    }
    l("");
    l(&format!("--{}", i.boundary));
    // Failures return the message unless RET=HDRS; warnings and success notices only
    // its headers unless RET=FULL asked for it (the sender still has the message).
    let full = match kind {
        ReportKind::Failure => env.header.dsn_ret != Some(DsnRet::Headers),
        _ => env.header.dsn_ret == Some(DsnRet::Full),
    };
    if full {
        l("Content-Type: message/rfc822");
    } else {
        l("Content-Type: text/rfc822-headers");
    }
    l("");
    let mut out = h.into_bytes();
    let body = if full {
        i.original
    } else {
        headers_of(i.original)
    };
    out.extend_from_slice(body);
    if !body.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    let mut tail = String::new();
    let _ = write!(tail, "\r\n--{}--\r\n", i.boundary);
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The 4.x.x code of a delayed recipient's last error, else 4.0.0.
fn transient_status(f: &FailedRcpt) -> String {
    let s = status_of(f);
    if s.starts_with("4.") {
        s
    } else {
        "4.0.0".into()
    }
}

/// The 2.x.x code of the delivery reply (`250 2.1.5 Ok`), else 2.0.0.
fn success_status(f: &FailedRcpt) -> String {
    let s = status_of(f);
    if s.starts_with("2.") {
        s
    } else {
        "2.0.0".into()
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::asctime;
    use std::time::Duration;

    #[test]
    fn dates_render_in_rfc5322_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc5322_date(t), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(
            rfc5322_date(SystemTime::UNIX_EPOCH),
            "Thu, 1 Jan 1970 00:00:00 +0000"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(asctime(leap), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(SystemTime::UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn status_comes_from_the_reply_or_the_failure_kind() {
        let f = |d: &str, expired| FailedRcpt {
            address: "a@b".into(),
            orcpt: None,
            diagnostic: d.into(),
            expired,
            last_attempt: None,
        };
        assert_eq!(status_of(&f("550 5.1.1 no such user", false)), "5.1.1");
        assert_eq!(status_of(&f("452 4.2.2 Quota exceeded", true)), "4.4.7");
        assert_eq!(status_of(&f("Envelope expired", true)), "4.4.7");
        assert_eq!(status_of(&f("mda exited 1", false)), "5.0.0");
        assert_eq!(status_of(&f("550 5.x.1 odd", false)), "5.0.0");
    }
}
