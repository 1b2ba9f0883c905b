//! Feeds arbitrary bytes, in arbitrary splits, to a session whose every request is
//! answered positively. Checks that it never panics and that no message ever ends
//! unless the client sent a real `CRLF . CRLF` (or used BDAT).
//!
//! The first byte picks the read size and the mode: in raw mode the whole input is the
//! client's stream; in body mode the input is the body of a DATA command whose every
//! `CRLF . CRLF` has been defused, so only smuggling sequences (`LF . LF`, `CR . CR`,
//! `LF . CRLF`, …) could end it, and no message may be committed at all.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mta::clock::SystemClock;
use mta::envelope::{Origin, Target};
use mta::session::*;

const BODY_PREFIX: &[u8] =
    b"EHLO fuzz\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let body_mode = first & 0x80 != 0;
    let step = usize::from(first & 0x7f).max(1);
    let input = if body_mode {
        let mut v = [BODY_PREFIX, data].concat();
        defuse_end_of_data(&mut v, BODY_PREFIX.len());
        v
    } else {
        data.to_vec()
    };
    let ended = run(&input, step);
    if body_mode {
        assert_eq!(ended, 0, "a message ended without CRLF.CRLF: {input:?}");
    } else if ended > 0 {
        assert!(
            input.windows(5).any(|w| w == b"\r\n.\r\n")
                || input.windows(4).any(|w| w.eq_ignore_ascii_case(b"BDAT")),
            "a message ended without CRLF.CRLF or BDAT: {input:?}"
        );
    }
});

/// Turns the `.` of every `CRLF . CRLF` that starts at or after `from - 2` into `x`
/// (turning dots into letters can never create a new terminator).
fn defuse_end_of_data(v: &mut [u8], from: usize) {
    for i in from.max(2)..v.len() {
        if v[i] == b'.' && &v[i - 2..i] == b"\r\n" && v.get(i + 1..i + 3) == Some(&b"\r\n"[..]) {
            v[i] = b'x';
        }
    }
}

/// Runs one session over `input` read `step` bytes at a time; returns how many
/// messages it handed to the queue for commit.
fn run(input: &[u8], step: usize) -> usize {
    let mut cfg = SessionConfig::new("fuzz.example");
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Optional;
    cfg.max_errors = usize::MAX;
    // Small limits, so inputs of a few KiB reach the SIZE and header-limit paths.
    cfg.max_message_size = 2048;
    cfg.max_header_size = 512;
    cfg.max_header_field = 128;
    let peer = Peer {
        session_id: 1,
        origin: Origin::Local,
        rdns: None,
        tls: None,
    };
    let (mut s, _) = Session::new(Arc::new(cfg), peer, Arc::new(SystemClock));
    let mut ended = 0;
    for chunk in input.chunks(step) {
        let mut queue: Vec<Action> = s.handle(Event::Input(chunk));
        while let Some(a) = queue.pop() {
            let ev = match a {
                Action::StartTls => Event::TlsEstablished(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher: "TLS_AES_128_GCM_SHA256".into(),
                    bits: 128,
                    sni: None,
                    client_cert: None,
                }),
                Action::CheckSender { .. } => Event::SenderVerdict(SenderVerdict::Accept),
                Action::CheckRecipient { address, .. } => {
                    Event::RecipientVerdict(RecipientVerdict::Accept {
                        targets: vec![Target {
                            action: "a".into(),
                            dest: address,
                            user: None,
                        }],
                    })
                }
                Action::VerifyCredentials { .. } => Event::AuthVerdict(AuthVerdict::Ok),
                Action::MessageEnd => {
                    ended += 1;
                    Event::MessageCommitted {
                        queue_id: "1".into(),
                    }
                }
                _ => continue,
            };
            queue.extend(s.handle(ev));
        }
    }
    s.handle(Event::Disconnected);
    ended
}
