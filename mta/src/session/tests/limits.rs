//! max-rcpt, max-mails, max errors, timeouts, shutdown and disconnects.
use super::*;

#[test]
fn max_rcpt_limits_recipients_per_transaction() {
    let mut cfg = config();
    cfg.max_rcpt = 2;
    let mut t = T::ehlo(cfg);
    t.send("MAIL FROM:<a@c.example>");
    t.expect("250 *");
    t.send("RCPT TO:<x@example.org>");
    t.expect("250 *");
    t.send("RCPT TO:<y@example.org>");
    t.expect("250 *");
    t.send("RCPT TO:<z@example.org>");
    t.expect("452 4.5.3 Too many recipients");
}

#[test]
fn max_mails_limits_messages_per_session() {
    let mut cfg = config();
    cfg.max_mails = 1;
    let mut t = T::ehlo(cfg);
    t.start_data("x@example.org");
    t.send_raw(b".\r\n");
    t.expect("250 *");
    t.send("MAIL FROM:<a@c.example>");
    t.expect("452 4.5.3 Too many messages sent");
}

#[test]
fn too_many_errors_end_the_session() {
    let mut cfg = config();
    cfg.max_errors = 3;
    let mut t = T::ehlo(cfg);
    t.send_raw(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    t.expect("500 *");
    t.expect("500 *");
    t.expect("500 *");
    t.expect("421 4.7.0 mx.example.org Too many errors, closing connection");
    t.expect_silence();
    assert!(t.closed);
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=too-many-errors")
    );
}

#[test]
fn a_timeout_mid_message_aborts_it() {
    let mut t = T::ehlo(config());
    t.start_data("x@example.org");
    t.send_raw(b"partial");
    t.event(Event::Timeout);
    t.expect("421 4.4.2 mx.example.org Timeout exceeded, closing connection");
    assert_eq!(t.aborted, 1);
    assert!(t.closed);
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=timeout")
    );
}

#[test]
fn shutdown_says_421() {
    let mut t = T::ehlo(config());
    t.event(Event::Shutdown);
    t.expect("421 4.3.0 mx.example.org Server shutting down");
    assert!(t.closed);
}

#[test]
fn a_disconnect_mid_message_aborts_it_and_loses_nothing_committed() {
    let mut t = T::ehlo(config());
    t.start_data("x@example.org");
    t.send_raw(b"first\r\n.\r\n");
    t.expect("250 *");
    t.start_data("x@example.org");
    t.send_raw(b"second, never finished\r\n");
    t.event(Event::Disconnected);
    assert_eq!(t.aborted, 1);
    assert_eq!(t.stored.len(), 1);
    assert!(t.s.is_closed());
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=disconnect")
    );
}

#[test]
fn a_disconnect_while_the_commit_is_pending_leaves_the_commit_to_the_queue() {
    let mut t = T::ehlo(config());
    t.start_data("x@example.org");
    t.auto = false;
    t.send_raw(b"body\r\n.\r\n");
    t.event(Event::Disconnected);
    assert_eq!(t.aborted, 0);
    assert!(matches!(t.pending.front(), Some(Action::MessageEnd)));
}

fn header_limits(section: usize, field: usize) -> SessionConfig {
    let mut cfg = config();
    cfg.max_header_size = section;
    cfg.max_header_field = field;
    cfg
}

#[test]
fn an_oversized_header_section_is_refused_at_the_end_of_data() {
    let mut t = T::ehlo(header_limits(200, 200));
    t.start_data("x@example.org");
    for i in 0..20 {
        t.send(&format!("X-Filler-{i}: 0123456789"));
    }
    t.send("");
    t.send("a small body");
    // The limit is known early, but the reply waits for the end of data (RFC 5321 §4.2.5).
    t.expect_silence();
    t.send_raw(b".\r\n");
    t.expect("552 5.3.4 Message header too large");
    assert_eq!((t.stored.len(), t.aborted), (0, 1));
    // The session goes on: the next message is fine.
    t.start_data("x@example.org");
    t.send_raw(b"Subject: ok\r\n\r\nbody\r\n.\r\n");
    t.expect("250 *");
}

#[test]
fn one_folded_field_over_the_field_limit_is_refused() {
    let mut t = T::ehlo(header_limits(10_000, 100));
    t.start_data("x@example.org");
    t.send("Subject: short");
    t.send("X-Long: start");
    for _ in 0..10 {
        t.send(" continued 0123456789");
    }
    t.send("");
    t.send_raw(b"body\r\n.\r\n");
    t.expect("552 5.3.4 Message header too large");
}

#[test]
fn a_big_body_does_not_count_toward_the_header_limit() {
    let mut t = T::ehlo(header_limits(100, 100));
    t.start_data("x@example.org");
    t.send("Subject: small header");
    t.send("");
    for _ in 0..50 {
        t.send("a body line that is long enough to add up past the header limits");
    }
    t.send_raw(b".\r\n");
    t.expect("250 *");
}

#[test]
fn bdat_header_over_the_limit_fails_its_chunk() {
    let mut t = T::ehlo(header_limits(100, 100));
    t.send("MAIL FROM:<a@c.example>");
    t.expect("250 *");
    t.send("RCPT TO:<x@example.org>");
    t.expect("250 *");
    let msg = format!("X-Big: {}\r\n\r\nbody\r\n", "y".repeat(150));
    t.send_raw(format!("BDAT {} LAST\r\n{msg}", msg.len()).as_bytes());
    t.expect("552 5.3.4 Message header too large");
    assert_eq!(t.stored.len(), 0);
}

#[test]
fn a_message_that_has_made_more_than_a_hundred_hops_is_refused_as_a_loop() {
    let mut t = T::ehlo(config());
    t.start_data("x@example.org");
    for i in 0..=crate::session::framing::MAX_HOPS {
        t.send(&format!(
            "Received: from relay{i}.example by relay{}.example",
            i + 1
        ));
    }
    t.send("Subject: round and round");
    t.send("");
    t.send("body");
    t.send_raw(b".\r\n");
    // RFC 5321 §6.3: the loop is refused, never bounced back into it.
    t.expect("554 5.4.6 Too many hops");
    assert_eq!((t.stored.len(), t.aborted), (0, 1));

    // A hundred hops is still a message.
    t.start_data("x@example.org");
    for i in 0..crate::session::framing::MAX_HOPS {
        t.send(&format!("Received: from relay{i}.example"));
    }
    t.send_raw(b"\r\nbody\r\n.\r\n");
    t.expect("250 *");
}
