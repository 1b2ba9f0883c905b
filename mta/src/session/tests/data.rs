//! DATA and BDAT: framing, commit ordering, SIZE, and the Received header.
use super::*;

#[test]
fn a_message_is_stored_with_received_first_and_dots_unstuffed() {
    let mut t = T::ehlo(config());
    t.start_data("alice@example.org");
    t.send_raw(b"Subject: hi\r\n\r\n..dot\r\nline\r\n.\r\n");
    t.expect("250 2.0.0 00000001 Message accepted for delivery");
    let body = String::from_utf8(t.stored[0].body.clone()).unwrap();
    golden("received-plain.txt", &body);
    assert_eq!(t.last_body(), b"Subject: hi\r\n\r\n.dot\r\nline\r\n");
    let log = t
        .logs()
        .iter()
        .find(|l| l.contains("smtp message"))
        .unwrap();
    assert_eq!(
        log,
        &format!(
            "123456789abcdef0 smtp message msgid=00000001 size={} nrcpt=1 proto=ESMTP",
            body.len()
        )
    );
}

#[test]
fn the_250_waits_for_the_queue_commit() {
    let mut t = T::ehlo(config());
    t.start_data("alice@example.org");
    t.auto = false;
    t.send_raw(b"body\r\n.\r\nNOOP\r\n");
    t.expect_silence();
    assert!(matches!(t.pending.front(), Some(Action::MessageEnd)));
    assert!(!t.s.wants_input());
    t.answer_pending();
    t.expect("250 2.0.0 00000001 Message accepted for delivery");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn a_failed_commit_is_reported_and_the_session_goes_on() {
    let mut t = T::ehlo(config());
    t.start_data("alice@example.org");
    t.auto = false;
    t.send_raw(b"body\r\n.\r\n");
    assert!(matches!(t.pending.pop_front(), Some(Action::MessageEnd)));
    t.event(Event::MessageFailed(Reply::new(
        452,
        "4.3.1",
        "Insufficient system storage",
    )));
    t.expect("452 4.3.1 Insufficient system storage");
    t.auto = true;
    t.start_data("alice@example.org");
    t.send_raw(b"again\r\n.\r\n");
    t.expect("250 2.0.0 00000001 *");
}

#[test]
fn a_queue_failure_while_streaming_is_reported_at_the_end_of_data() {
    let mut t = T::ehlo(config());
    t.start_data("alice@example.org");
    t.event(Event::MessageFailed(reply::queue_tempfail()));
    t.send_raw(b"more\r\n");
    t.expect_silence();
    t.send_raw(b".\r\n");
    t.expect("451 4.3.0 Temporary failure: message not queued");
    assert_eq!(t.aborted, 1);
    assert!(t.stored.is_empty());
}

#[test]
fn size_is_enforced_while_streaming() {
    let mut cfg = config();
    cfg.max_message_size = 100;
    let mut t = T::ehlo(cfg);
    t.start_data("alice@example.org");
    let chunks_before = t.actions.len();
    t.send_raw(&[b'a'; 60]);
    t.send_raw(b"\r\n");
    t.send_raw(&[b'b'; 60]);
    t.send_raw(b"\r\n.\r\n");
    t.expect("552 5.3.4 Message too big");
    assert_eq!(t.aborted, 1);
    assert!(t.stored.is_empty());
    // Nothing past the limit was handed to the queue.
    let given: usize = t.actions[chunks_before..]
        .iter()
        .map(|a| match a {
            Action::MessageChunk(c) => c.len(),
            _ => 0,
        })
        .sum();
    assert!(given <= 100, "{given}");
    t.send("NOOP");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn lines_over_1000_octets_are_refused() {
    let mut t = T::ehlo(config());
    t.start_data("alice@example.org");
    t.send_raw(&[b'x'; 999]);
    t.send_raw(b"\r\n.\r\n");
    t.expect("552 5.5.2 Line too long in message data*");
    t.start_data("alice@example.org");
    t.send_raw(&[b'x'; 998]);
    t.send_raw(b"\r\n.\r\n");
    t.expect("250 *");
}

#[test]
fn data_needs_a_transaction_and_no_arguments() {
    let mut t = T::ehlo(config());
    t.send("DATA");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
    t.send("MAIL FROM:<a@b.example>");
    t.expect("250 *");
    t.send("DATA");
    t.expect("503 5.5.1 Invalid command: No recipient specified");
    t.send("RCPT TO:<a@example.org>");
    t.expect("250 *");
    t.send("DATA now");
    t.expect("500 5.5.4 *");
}

#[test]
fn a_pipelined_transaction_is_answered_in_order() {
    let mut t = T::new(config());
    t.expect("220 *");
    t.send_raw(
        b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\n\
          RCPT TO:<unknown@example.org>\r\nRCPT TO:<y@example.org>\r\nDATA\r\n",
    );
    t.expect("250-*");
    t.expect("250 2.0.0 Ok");
    t.expect("250 2.1.5 *");
    t.expect("550 5.1.1 *");
    t.expect("250 2.1.5 *");
    t.expect("354 *");
    t.send_raw(b"hello\r\n.\r\nQUIT\r\n");
    t.expect("250 2.0.0 00000001 *");
    t.expect("221 2.0.0 Bye");
    assert_eq!(t.stored[0].envelope.recipients.len(), 2);
}

#[test]
fn received_header_over_tls_with_auth() {
    let mut cfg = config();
    cfg.tls = TlsPolicy::Implicit;
    cfg.auth = AuthPolicy::Optional;
    cfg.received_auth = true;
    let mut t = T::with_peer(cfg, "192.0.2.7:4000".parse().unwrap(), Some(tls13()));
    t.expect("220 *");
    t.send("EHLO laptop");
    t.expect("250-*");
    t.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
    t.expect("235 *");
    t.send("MAIL FROM:<alice@example.org>");
    t.expect("250 *");
    t.send("RCPT TO:<bob@example.net>");
    t.expect("250 *");
    t.send("RCPT TO:<carol@example.net>");
    t.expect("250 *");
    t.send("DATA");
    t.expect("354 *");
    t.send_raw(b"x\r\n.\r\n");
    t.expect("250 *");
    let body = String::from_utf8(t.stored[0].body.clone()).unwrap();
    golden("received-tls-auth.txt", &body);
    assert_eq!(t.stored[0].envelope.protocol, "ESMTPSA");
    assert_eq!(t.stored[0].envelope.auth_user.as_deref(), Some("alice"));
}

#[test]
fn received_header_with_mask_src() {
    let mut cfg = config();
    cfg.mask_src = true;
    let mut t = T::new(cfg);
    t.expect("220 *");
    t.send("HELO old.example");
    t.expect("250 *");
    t.start_data("a@example.org");
    t.send_raw(b".\r\n");
    t.expect("250 *");
    let body = String::from_utf8(t.stored[0].body.clone()).unwrap();
    golden("received-mask-src-helo.txt", &body);
}

#[test]
fn bdat_chunks_make_one_message() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM:<a@c.example>");
    t.expect("250 *");
    t.send("RCPT TO:<x@example.org>");
    t.expect("250 *");
    t.send_raw(b"BDAT 7\r\n.a\r\nb\r\n");
    t.expect("250 2.0.0 7 octets received");
    t.send_raw(b"BDAT 4 LAST\r\n.\r\ncNOOP\r\n");
    t.expect("250 2.0.0 00000001 Message accepted for delivery");
    t.expect("250 2.0.0 Ok");
    // No dot-unstuffing in BDAT; the unterminated last line gets its CRLF.
    assert_eq!(t.last_body(), b".a\r\nb\r\n.\r\nc\r\n");
}

#[test]
fn bdat_zero_last_ends_the_message() {
    let mut t = T::ehlo(config());
    t.send_raw(b"MAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 3\r\nab\n");
    t.expect("250 *");
    t.expect("250 *");
    t.expect("250 2.0.0 3 octets received");
    t.send("BDAT 0 LAST");
    t.expect("250 2.0.0 00000001 *");
    assert_eq!(t.last_body(), b"ab\r\n");
}

#[test]
fn a_refused_bdat_chunk_is_swallowed_not_executed() {
    let mut t = T::ehlo(config());
    // Without a transaction the chunk is read and thrown away: the QUIT inside it is data.
    t.send_raw(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
    t.expect("250 2.0.0 Ok");
    assert!(!t.closed);
    t.send("MAIL FROM:<a@c.example>");
    t.expect("250 *");
    t.send_raw(b"BDAT 4\r\nRSET");
    t.expect("503 5.5.1 Invalid command: No recipient specified");
}

#[test]
fn bdat_syntax_errors_end_the_session() {
    let mut t = T::ehlo(config());
    t.send("BDAT many");
    t.expect("501 5.5.4 Syntax: BDAT <size> [LAST]");
    assert!(t.closed);
}

#[test]
fn bdat_over_size_is_refused_and_the_transaction_ends() {
    let mut cfg = config();
    cfg.max_message_size = 10;
    let mut t = T::ehlo(cfg);
    t.send_raw(b"MAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\n");
    t.expect("250 *");
    t.expect("250 *");
    t.send_raw(b"BDAT 20 LAST\r\n01234567890123456789");
    t.expect("552 5.3.4 Message too big");
    assert_eq!(t.aborted, 1);
    t.send("BDAT 1 LAST");
    t.send_raw(b"x");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
}

#[test]
fn data_and_rcpt_after_bdat_are_out_of_sequence_and_rset_aborts() {
    let mut t = T::ehlo(config());
    t.send_raw(b"MAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 2\r\nab");
    t.expect("250 *");
    t.expect("250 *");
    t.expect("250 2.0.0 2 octets received");
    t.send("DATA");
    t.expect("503 5.5.1 Invalid command: DATA not allowed after BDAT");
    t.send("RCPT TO:<y@example.org>");
    t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
    t.send("RSET");
    t.expect("250 2.0.0 Reset state");
    assert_eq!(t.aborted, 1);
    assert!(t.stored.is_empty());
}
