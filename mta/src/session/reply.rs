//! Every reply the SMTP server can send, in one place.
//!
//! Texts follow OpenSMTPD's `smtp_session.c` where OpenSMTPD has the reply (so log tooling
//! and operators see familiar lines); the extensions OpenSMTPD lacks (PIPELINING, CHUNKING,
//! SMTPUTF8) and the places where an RFC names a better code use the RFC's code.
//! Enhanced status codes (RFC 2034, RFC 3463) are always sent.

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply: a code, an optional enhanced status code and one or more text lines.
///
/// Texts are borrowed when they are fixed: a message's `250` and `354` replies then
/// allocate nothing (seven replies for every message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 `class.subject.detail`, e.g. `5.1.1`; empty for replies that carry none
    /// (EHLO capability lines, 334 challenges, 354).
    pub status: Cow<'static, str>,
    /// The first line's text.
    pub text: Cow<'static, str>,
    /// The lines after the first (EHLO capabilities, HELP).
    pub more: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A single-line reply. `status` may be empty.
    pub fn new(
        code: u16,
        status: impl Into<Cow<'static, str>>,
        text: impl Into<Cow<'static, str>>,
    ) -> Reply {
        Reply {
            code,
            status: status.into(),
            text: text.into(),
            more: Vec::new(),
        }
    }

    /// Parses a reply given as text, e.g. from a rule or filter: `550 5.7.1 go away`.
    /// Returns `None` unless it starts with a 4xx/5xx code.
    pub fn parse(text: &str) -> Option<Reply> {
        let code: u16 = text.get(..3)?.parse().ok()?;
        if !(400..600).contains(&code) {
            return None;
        }
        let rest = text[3..].trim_start();
        let (status, text) = match rest.split_once(' ') {
            Some((s, t)) if is_status(s) => (s, t),
            _ if is_status(rest) => (rest, ""),
            _ => ("", rest),
        };
        Some(Reply::new(code, status.to_owned(), text.to_owned()))
    }

    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The first line as it goes on the wire, without CRLF (for logs).
    pub fn first_line(&self) -> String {
        let mut s = self.code.to_string();
        s.push(' ');
        if !self.status.is_empty() {
            s.push_str(&self.status);
            s.push(' ');
        }
        s.push_str(&self.text);
        s
    }

    /// The reply as it goes on the wire, CRLF-terminated, `code-` continuation lines.
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_wire(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`to_wire`](Reply::to_wire)'s bytes to `out`: the session writes its
    /// replies straight into its output buffer, without a string of their own or the
    /// formatting machinery (seven replies for every message).
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let code = [
            b'0' + (self.code / 100 % 10) as u8,
            b'0' + (self.code / 10 % 10) as u8,
            b'0' + (self.code % 10) as u8,
        ];
        let lines = std::iter::once(&self.text).chain(&self.more);
        let n = 1 + self.more.len();
        // One allocation: the shell gives each exchange an empty buffer, and growing it
        // piece by piece took three or four per reply.
        let status = if self.status.is_empty() {
            0
        } else {
            self.status.len() + 1
        };
        out.reserve(lines.clone().map(|t| 6 + status + t.len()).sum());
        for (i, text) in lines.enumerate() {
            out.extend_from_slice(&code);
            out.push(if i + 1 == n { b' ' } else { b'-' });
            if !self.status.is_empty() {
                out.extend_from_slice(self.status.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn is_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(s.as_bytes().first(), Some(b'2' | b'4' | b'5'))
        && ok(parts.next(), 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire())
    }
}

/// Strips CR, LF and other controls from text that goes into a reply (an address, a
/// mechanism name): a client must never be able to inject a reply line.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(256)
        .collect()
}

// ---- greeting and session -------------------------------------------------------------

/// RFC 5321 §4.2: `220 <hostname> ESMTP <banner>`.
pub fn banner(hostname: &str, banner: &str) -> Reply {
    Reply::new(220, "", format!("{hostname} ESMTP {banner}"))
}

pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}

pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} Too many errors, closing connection"),
    )
}

pub fn timeout(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.4.2",
        format!("{hostname} Timeout exceeded, closing connection"),
    )
}

pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(421, "4.3.0", format!("{hostname} Server shutting down"))
}

pub fn temporary_error() -> Reply {
    Reply::new(421, "4.3.0", "Temporary Error")
}

// ---- syntax and sequence ----------------------------------------------------------------

pub fn command_unrecognized() -> Reply {
    Reply::new(500, "5.5.1", "Invalid command: Command unrecognized")
}

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets; extensions raise it.
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}

pub fn invalid_character() -> Reply {
    Reply::new(500, "5.5.2", "Syntax error: invalid character in command")
}

pub fn no_arguments_allowed() -> Reply {
    Reply::new(
        500,
        "5.5.4",
        "Invalid command arguments: command does not accept arguments.",
    )
}

pub fn bad_sequence() -> Reply {
    Reply::new(
        503,
        "5.5.1",
        "Invalid command: Command not allowed at this point.",
    )
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

pub fn reset() -> Reply {
    Reply::new(250, "2.0.0", "Reset state")
}

pub fn help() -> Reply {
    Reply {
        code: 214,
        status: "2.0.0".into(),
        text: "This is fugu, an SMTP server in the spirit of OpenSMTPD".into(),
        more: vec![
            "Commands: HELO EHLO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP HELP QUIT".into(),
            "End of HELP info".into(),
        ],
    }
}

/// RFC 5321 §3.5.3: 252 neither confirms nor denies (no address harvesting).
pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.2",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

pub fn expn_disabled() -> Reply {
    Reply::new(502, "5.5.1", "Invalid command: EXPN not supported")
}

// ---- HELO / EHLO --------------------------------------------------------------------------

pub fn already_identified() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: Already identified")
}

pub fn helo_requires_domain(verb: &str) -> Reply {
    Reply::new(
        501,
        "5.5.1",
        format!("Invalid command: {verb} requires domain name"),
    )
}

pub fn invalid_domain_name() -> Reply {
    Reply::new(
        501,
        "5.5.4",
        "Invalid command arguments: Invalid domain name",
    )
}

/// `250 <hostname> Hello <helo> [<ip>], pleased to meet you`, as OpenSMTPD.
pub fn hello(hostname: &str, helo: &str, peer: impl fmt::Display) -> String {
    format!(
        "{hostname} Hello {} {peer}, pleased to meet you",
        clean(helo)
    )
}

pub fn helo(hostname: &str, helo: &str, peer: impl fmt::Display) -> Reply {
    Reply::new(250, "", hello(hostname, helo, peer))
}

pub fn ehlo(greeting: String, capabilities: Vec<String>) -> Reply {
    Reply {
        code: 250,
        status: "".into(),
        text: greeting.into(),
        more: capabilities.into_iter().map(Cow::Owned).collect(),
    }
}

// ---- STARTTLS -----------------------------------------------------------------------------

pub fn ready_to_start_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

pub fn command_not_supported() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: Command not supported")
}

pub fn already_secured() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: Channel already secured")
}

pub fn no_parameters_allowed() -> Reply {
    Reply::new(
        501,
        "5.5.4",
        "Invalid command arguments: No parameters allowed",
    )
}

/// RFC 3207 §4: 530 5.7.0 for commands refused before TLS.
pub fn starttls_required() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}

// ---- AUTH ---------------------------------------------------------------------------------

/// RFC 4954 §6: 530 5.7.0 Authentication required.
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Must issue an AUTH command first")
}

pub fn already_authenticated() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: Already authenticated")
}

pub fn auth_no_parameters() -> Reply {
    Reply::new(
        501,
        "5.5.4",
        "Invalid command arguments: No parameters given",
    )
}

pub fn auth_mechanism_unsupported(mech: &str) -> Reply {
    Reply::new(
        504,
        "5.5.4",
        format!("AUTH method \"{}\" not supported", clean(mech)),
    )
}

/// A 334 challenge; `text` is already base64 (or empty).
pub fn auth_challenge(text: &str) -> Reply {
    Reply::new(334, "", text.to_owned())
}

pub fn auth_syntax_error() -> Reply {
    Reply::new(501, "5.5.2", "Syntax error")
}

/// RFC 4954 §4: the client cancelled the exchange with `*`.
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.7.0", "Authentication cancelled")
}

pub fn auth_succeeded() -> Reply {
    Reply::new(235, "2.0.0", "Authentication succeeded")
}

/// RFC 4954 §6: 535 5.7.8.
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Authentication failed")
}

/// RFC 4954 §6: 454 4.7.0 Temporary authentication failure.
pub fn auth_tempfail() -> Reply {
    Reply::new(454, "4.7.0", "Temporary authentication failure")
}

// ---- MAIL ---------------------------------------------------------------------------------

pub fn sender_ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

pub fn sender_syntax() -> Reply {
    Reply::new(553, "5.1.7", "Sender address syntax error")
}

/// RFC 5321 §4.1.1.2 grammar: `MAIL FROM:<reverse-path>`, no space after the colon.
pub fn mail_syntax() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>")
}

pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: Only one MAIL FROM allowed")
}

pub fn too_many_messages() -> Reply {
    Reply::new(452, "4.5.3", "Too many messages sent")
}

/// RFC 5321 §4.1.1.11: an unrecognised or unimplemented MAIL/RCPT parameter.
pub fn unsupported_option(opt: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported option {}", clean(opt)))
}

pub fn bad_option_value(opt: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Invalid option value {}", clean(opt)))
}

/// RFC 1870 §6.1: the declared SIZE exceeds the fixed maximum.
pub fn size_exceeds_limit() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}

/// RFC 6531 §3.5: a non-ASCII address without the SMTPUTF8 parameter.
pub fn utf8_needs_smtputf8() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Address is not ASCII and the SMTPUTF8 parameter was not given",
    )
}

pub fn sender_rejected() -> Reply {
    Reply::new(550, "5.7.1", "Sender rejected")
}

pub fn sender_tempfail() -> Reply {
    Reply::new(451, "4.3.0", "Temporary failure checking the sender")
}

// ---- RCPT ---------------------------------------------------------------------------------

pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Destination address valid: Recipient ok")
}

pub fn rcpt_syntax() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>")
}

pub fn recipient_syntax() -> Reply {
    Reply::new(501, "5.1.3", "Recipient address syntax error")
}

pub fn no_mail_from() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: No MAIL FROM given")
}

/// RFC 5321 §4.5.3.1.10: 452 for too many recipients.
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Too many recipients")
}

pub fn notify_never_combined() -> Reply {
    Reply::new(
        501,
        "5.5.4",
        "NOTIFY option NEVER cannot be combined with other options",
    )
}

pub fn orcpt_syntax() -> Reply {
    Reply::new(501, "5.5.4", "ORCPT address syntax error")
}

/// The answer for an address no rule accepts (OpenSMTPD's lka: `550 Invalid recipient`).
pub fn invalid_recipient(address: &str) -> Reply {
    Reply::new(
        550,
        "5.1.1",
        format!("Invalid recipient: <{}>", clean(address)),
    )
}

/// The answer for a `match … reject` rule.
pub fn recipient_rejected(address: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!("Delivery not authorized: <{}>", clean(address)),
    )
}

pub fn recipient_tempfail(address: &str) -> Reply {
    Reply::new(
        451,
        "4.3.0",
        format!("Temporary failure: <{}>", clean(address)),
    )
}

// ---- DATA / BDAT --------------------------------------------------------------------------

pub fn no_recipients() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: No recipient specified")
}

pub fn start_mail_input() -> Reply {
    Reply::new(354, "", "Enter mail, end with \".\" on a line by itself")
}

/// RFC 7489 §6.6.3 / §7.3: the From domain's DMARC policy is `p=reject` and the message
/// failed it (only with `authres dmarc reject`).
pub fn dmarc_rejected(domain: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!("Message rejected: DMARC policy of {domain} says reject"),
    )
}

/// RFC 1870 §6.2: 552 5.3.4 once the streamed data exceeds SIZE.
pub fn message_too_big() -> Reply {
    Reply::new(552, "5.3.4", "Message too big")
}

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
pub fn data_line_too_long() -> Reply {
    Reply::new(
        552,
        "5.5.2",
        "Line too long in message data (RFC 5321 §4.5.3.1.6)",
    )
}

/// The header section (or one header field) is over `smtp limit max-header-size` /
/// `max-header-field`. Sent at the end of data like any size refusal: RFC 5321 §4.5.3.1.10
/// and RFC 1870 use 552 for content over a storage limit, and RFC 3463 §3.4 5.3.4 is
/// "message too big for system" (500 5.5.2 is for a syntax error, which this is not).
pub fn header_too_large() -> Reply {
    Reply::new(552, "5.3.4", "Message header too large")
}

/// RFC 5321 §6.3: a mail loop (OpenSMTPD's reply, with RFC 3463's 5.4.6 "routing loop").
pub fn too_many_hops() -> Reply {
    Reply::new(554, "5.4.6", "Too many hops")
}

/// The 2023 SMTP smuggling advisories: bare CR or LF in DATA, when the listener rejects them.
pub fn bare_newline() -> Reply {
    Reply::new(
        550,
        "5.5.2",
        "Message contains bare CR or LF, which is not allowed (RFC 5321 §2.3.8)",
    )
}

pub fn message_accepted(queue_id: &str) -> Reply {
    Reply::new(
        250,
        "2.0.0",
        format!("{} Message accepted for delivery", clean(queue_id)),
    )
}

pub fn queue_tempfail() -> Reply {
    Reply::new(451, "4.3.0", "Temporary failure: message not queued")
}

/// The reply for a queue failure: a full spool is RFC 3463's 4.3.1 (the client retries
/// later, and nothing was accepted), anything else a plain temporary failure.
pub fn queue_error(e: &crate::Error) -> Reply {
    match e {
        crate::Error::SpoolFull { .. } => Reply::new(452, "4.3.1", "Insufficient system storage"),
        _ => queue_tempfail(),
    }
}

/// A lookup failed while checking a recipient (a table's database was busy or gone).
pub fn lookup_tempfail() -> Reply {
    Reply::new(451, "4.3.0", "Temporary failure: please try again later")
}

pub fn data_after_bdat() -> Reply {
    Reply::new(503, "5.5.1", "Invalid command: DATA not allowed after BDAT")
}

pub fn bdat_syntax() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: BDAT <size> [LAST]")
}

pub fn bdat_received(octets: u64) -> Reply {
    Reply::new(250, "2.0.0", format!("{octets} octets received"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_multiline_with_continuation_markers() {
        let r = ehlo(
            "mx Hello c [1.2.3.4], pleased to meet you".into(),
            vec!["HELP".into()],
        );
        assert_eq!(
            r.to_wire(),
            "250-mx Hello c [1.2.3.4], pleased to meet you\r\n250 HELP\r\n"
        );
    }

    #[test]
    fn parses_replies_given_as_text() {
        assert_eq!(
            Reply::parse("550 5.7.1 go away"),
            Some(Reply::new(550, "5.7.1", "go away"))
        );
        assert_eq!(
            Reply::parse("451 try later"),
            Some(Reply::new(451, "", "try later"))
        );
        assert_eq!(Reply::parse("250 ok"), None);
        assert_eq!(Reply::parse("5x0 bad"), None);
    }

    #[test]
    fn the_wire_form_has_the_code_on_every_line_and_the_status_after_it() {
        let r = Reply {
            code: 451,
            status: "4.3.0".into(),
            text: "first".into(),
            more: vec!["".into(), "last".into()],
        };
        let mut out = b"pending ".to_vec();
        r.write_wire(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "pending 451-4.3.0 first\r\n451-4.3.0 \r\n451 4.3.0 last\r\n"
        );
        let bare = Reply {
            code: 354,
            status: "".into(),
            text: "".into(),
            more: vec![],
        };
        assert_eq!(bare.to_string(), "354 \r\n");
    }

    #[test]
    fn reply_text_never_carries_line_breaks() {
        let r = invalid_recipient("a@b\r\n250 ok");
        assert_eq!(r.to_wire().matches("\r\n").count(), 1);
    }
}
