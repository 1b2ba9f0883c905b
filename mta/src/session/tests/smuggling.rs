//! The 2023 SMTP smuggling payloads (SEC Consult, CVE-2023-51764/51765/51766): none of
//! them may end a message, so the smuggled second transaction stays inside the first.
use super::*;

const PAYLOADS: [&[u8]; 6] = [
    b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r",
];

fn smuggle(t: &mut T, end: &[u8]) {
    t.start_data("victim@example.org");
    let mut payload = b"Subject: legit\r\n\r\nhello".to_vec();
    payload.extend_from_slice(end);
    payload.extend_from_slice(
        b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n\
          From: admin@example.org\r\n\r\nsmuggled\r\n.\r\n",
    );
    t.send_raw(&payload);
}

#[test]
fn smuggled_end_of_data_sequences_do_not_end_the_message() {
    for end in PAYLOADS {
        let mut t = T::ehlo(config());
        smuggle(&mut t, end);
        // Exactly one message: the injected MAIL/RCPT/DATA were never commands.
        t.expect("250 2.0.0 00000001 Message accepted for delivery");
        t.expect_silence();
        assert_eq!(t.stored.len(), 1, "{end:?}");
        let body = t.last_body();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("MAIL FROM:<admin@example.org>"),
            "{end:?}: {text}"
        );
        assert!(text.ends_with("smuggled\r\n"), "{end:?}: {text}");
        // What is stored holds no bare CR or LF for a next hop to misread.
        let ok_crlf = body.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => body.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && body[i - 1] == b'\r',
            _ => true,
        });
        assert!(ok_crlf, "{end:?}");
    }
}

#[test]
fn listeners_may_reject_bare_line_endings_outright() {
    for end in PAYLOADS {
        let mut cfg = config();
        cfg.bare_newline = BareNewline::Reject;
        let mut t = T::ehlo(cfg);
        smuggle(&mut t, end);
        t.expect("550 5.5.2 Message contains bare CR or LF*");
        t.expect_silence();
        assert!(t.stored.is_empty());
    }
}
