//! RFC 6409 §8.2/§8.3: Date and Message-ID added to submitted mail when missing.
use super::*;

// base64("\0alice\0secret")
const ALICE: &str = "AGFsaWNlAHNlY3JldA==";
/// The harness clock's time, as the Date field shows it.
const DATE: &str = "Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n";

/// An authenticated session on an implicit-TLS submission listener.
fn submission() -> T {
    let mut cfg = config();
    cfg.tls = TlsPolicy::Implicit;
    cfg.auth = AuthPolicy::Required;
    let mut t = T::with_peer(cfg, "192.0.2.7:1".parse().unwrap(), Some(tls13()));
    t.expect("220 *");
    t.send("EHLO client.example.net");
    t.expect("250-*");
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.expect("235 2.0.0 Authentication succeeded");
    t
}

/// A session from the local enqueuer (`fugu sendmail`).
fn local() -> T {
    let mut t = T::new(config());
    t.expect("220 *");
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_255_200),
    ));
    let peer = Peer {
        session_id: 1,
        origin: Origin::Local,
        rdns: None,
        tls: None,
    };
    let (s, actions) = Session::new(Arc::new(config()), peer, clock);
    t.s = s;
    t.run(actions);
    t.expect("220 *");
    t.send("EHLO localhost");
    t.expect("250-*");
    t
}

fn data(t: &mut T, message: &[u8]) -> String {
    t.start_data("bob@example.net");
    t.send_raw(message);
    t.expect("250 2.0.0 * Message accepted for delivery");
    String::from_utf8(t.last_body()).unwrap()
}

/// The first message's Message-ID in [`submission`]'s session (its id and clock).
const ID: &str = "Message-ID: <1795255200.123456789abcdef0.1@mx.example.org>\r\n";

#[test]
fn authenticated_mail_gets_a_missing_date_and_message_id() {
    let mut t = submission();
    let body = data(
        &mut t,
        b"From: alice@example.org\r\nSubject: hi\r\n\r\nbody\r\n.\r\n",
    );
    assert_eq!(
        body,
        format!("From: alice@example.org\r\nSubject: hi\r\n{DATE}{ID}\r\nbody\r\n")
    );
}

#[test]
fn two_messages_get_two_different_message_ids() {
    let mut t = submission();
    let a = data(&mut t, b"Subject: a\r\n\r\nx\r\n.\r\n");
    let b = data(&mut t, b"Subject: b\r\n\r\nx\r\n.\r\n");
    let id = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(id(&a), id(&b));
}

#[test]
fn fields_already_present_are_left_alone() {
    let mut t = submission();
    let message =
        "DATE: Fri, 20 Nov 2026 09:00:00 +0100\r\nmessage-id : <own@example.org>\r\n\r\nbody\r\n";
    let body = data(&mut t, format!("{message}.\r\n").as_bytes());
    assert_eq!(body, message);
}

#[test]
fn only_the_missing_one_is_added() {
    let mut t = submission();
    let body = data(
        &mut t,
        b"Message-ID: <own@example.org>\r\n\r\nbody\r\n.\r\n",
    );
    assert_eq!(
        body,
        format!("Message-ID: <own@example.org>\r\n{DATE}\r\nbody\r\n")
    );
}

#[test]
fn unauthenticated_mail_on_port_25_is_not_touched() {
    let mut t = T::ehlo(config());
    let body = data(&mut t, b"Subject: relayed\r\n\r\nbody\r\n.\r\n");
    assert_eq!(body, "Subject: relayed\r\n\r\nbody\r\n");
}

#[test]
fn local_enqueue_gets_them_too() {
    let mut t = local();
    let body = data(&mut t, b"Subject: cron\r\n\r\noutput\r\n.\r\n");
    assert_eq!(
        body,
        format!(
            "Subject: cron\r\n{DATE}Message-ID: <1795255200.0000000000000001.1@mx.example.org>\r\n\r\noutput\r\n"
        )
    );
}

#[test]
fn folded_fields_are_followed_to_their_end() {
    let mut t = submission();
    // The continuation lines look like fields but belong to Subject and X-Note; the
    // body's Date line is not a header field either.
    let message = "Subject: a long\r\n Date: not a field\r\nX-Note: x\r\n\tMessage-ID: <no@x>\r\n\r\nDate: in the body\r\n";
    let body = data(&mut t, format!("{message}.\r\n").as_bytes());
    assert_eq!(
        body,
        format!(
            "Subject: a long\r\n Date: not a field\r\nX-Note: x\r\n\tMessage-ID: <no@x>\r\n{DATE}{ID}\r\nDate: in the body\r\n"
        )
    );
}

#[test]
fn a_message_without_a_body_gets_them_at_the_end() {
    let mut t = submission();
    let body = data(&mut t, b"Subject: header only\r\n.\r\n");
    assert_eq!(body, format!("Subject: header only\r\n{DATE}{ID}"));
}

#[test]
fn bdat_chunks_split_inside_field_names_and_the_blank_line() {
    let mut t = submission();
    t.send("MAIL FROM:<alice@example.org>");
    t.expect("250 *");
    t.send("RCPT TO:<bob@example.net>");
    t.expect("250 *");
    let chunks: [&[u8]; 5] = [
        b"Subject: x\r\nMess",
        b"age-",
        b"ID: <own@example.org>\r\nDa",
        b"te-Like: no\r\n\r",
        b"\nbody\r\n",
    ];
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        t.send_raw(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
        t.send_raw(c);
        if last.is_empty() {
            t.expect("250 2.0.0 * octets received");
        }
    }
    t.expect("250 2.0.0 * Message accepted for delivery");
    let body = String::from_utf8(t.last_body()).unwrap();
    assert_eq!(
        body,
        format!(
            "Subject: x\r\nMessage-ID: <own@example.org>\r\nDate-Like: no\r\n{DATE}\r\nbody\r\n"
        )
    );
}

#[test]
fn a_bdat_message_ending_mid_header_line_is_completed() {
    let mut t = submission();
    t.send("MAIL FROM:<alice@example.org>");
    t.expect("250 *");
    t.send("RCPT TO:<bob@example.net>");
    t.expect("250 *");
    t.send_raw(b"BDAT 10 LAST\r\nSubject: x");
    t.expect("250 2.0.0 * Message accepted for delivery");
    let body = String::from_utf8(t.last_body()).unwrap();
    assert_eq!(body, format!("Subject: x\r\n{DATE}{ID}"));
}

#[test]
fn a_first_line_that_is_not_a_field_starts_the_body() {
    let mut t = submission();
    let body = data(&mut t, b"just text, no header\r\nmore\r\n.\r\n");
    assert_eq!(
        body,
        format!("{DATE}{ID}\r\njust text, no header\r\nmore\r\n")
    );
}
