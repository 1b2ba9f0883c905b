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
