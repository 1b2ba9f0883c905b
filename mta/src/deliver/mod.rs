//! Delivery agents: LMTP, maildir, mbox and mda (relay comes with the SMTP client).
//!
//! Each agent takes one message and its recipients and returns one
//! [`Outcome`](crate::queue::Outcome) per recipient; the scheduler applies them. Agents do
//! not expand aliases or look up users: the daemon's [`Dispatch`](crate::queue::Dispatch)
//! resolves an action and its recipients to an agent call.

pub mod lmtp;
pub mod maildir;
pub mod mbox;
pub mod mda;

pub use crate::queue::Outcome;

/// Classifies an SMTP/LMTP reply line by its first digit (RFC 5321 §4.2.1).
pub fn outcome_of_reply(code: u16, text: String) -> Outcome {
    match code {
        200..=299 => Outcome::Delivered(text),
        400..=499 => Outcome::TempFail(text),
        _ => Outcome::PermFail(text),
    }
}

/// Converts CRLF line ends to LF, as files on disk and pipes to local programs expect.
pub fn crlf_to_lf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let mut i = 0;
    while i < msg.len() {
        if msg[i] == b'\r' && msg.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(msg[i]);
        i += 1;
    }
    out
}

/// `Return-Path` and `Delivered-To` lines prepended by local delivery (RFC 5321 §4.4).
pub fn trace_headers(sender: Option<&str>, delivered_to: &str) -> Vec<u8> {
    format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        sender.unwrap_or(""),
        delivered_to
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_and_lone_cr_stays() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\r\n\r\n"), b"a\nb\rc\n\n");
    }

    #[test]
    fn reply_codes_classify() {
        assert!(matches!(
            outcome_of_reply(250, String::new()),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            outcome_of_reply(452, String::new()),
            Outcome::TempFail(_)
        ));
        assert!(matches!(
            outcome_of_reply(550, String::new()),
            Outcome::PermFail(_)
        ));
    }
}
