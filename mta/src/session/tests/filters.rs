//! Filter phases answered at their own command (smtpd-filters(7)): the session puts the
//! command to the filters, reads nothing more until the verdict, and the verdict
//! answers that command.
use super::*;

fn filtered() -> SessionConfig {
    let mut cfg = config();
    cfg.filtered = true;
    cfg
}

impl T {
    /// The command the session put to the filters: the only request waiting, and no
    /// input is read meanwhile.
    #[track_caller]
    fn asked(&mut self, phase: FilterPhase, param: &str) {
        match self.pending.pop_front() {
            Some(Action::FilterPhase { phase: p, param: q }) => {
                assert_eq!((p, q.as_str()), (phase, param))
            }
            other => panic!("expected the {} phase, got {other:?}", phase.name()),
        }
        assert!(self.pending.is_empty(), "{:?}", self.pending);
        assert!(!self.s.wants_input());
    }

    fn verdict(&mut self, v: FilterVerdict) {
        self.event(Event::FilterVerdict(v));
    }

    #[track_caller]
    fn proceed(&mut self, phase: FilterPhase, param: &str) {
        self.asked(phase, param);
        self.verdict(FilterVerdict::Proceed);
    }

    /// MAIL and RCPT, both let through.
    #[track_caller]
    fn envelope(&mut self, from: &str, to: &str) {
        self.send(&format!("MAIL FROM:<{from}>"));
        self.proceed(FilterPhase::MailFrom, from);
        self.expect("250 2.0.0 Ok");
        self.send(&format!("RCPT TO:<{to}>"));
        self.proceed(FilterPhase::RcptTo, to);
        self.expect("250 2.1.5 *");
    }

    fn message(&mut self) {
        self.send("DATA");
        self.expect("354 *");
        self.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n");
        self.expect("250 2.0.0 * Message accepted for delivery");
    }
}

fn reject(code: u16, text: &str) -> FilterVerdict {
    FilterVerdict::Reject(Reply::new(
        code,
        format!("{}.7.1", code / 100),
        text.to_owned(),
    ))
}

/// A filtered session past the banner and an EHLO the filters let through.
fn greeted(cfg: SessionConfig, tls: Option<TlsInfo>) -> T {
    let mut t = T::with_peer(cfg, "192.0.2.7:40000".parse().unwrap(), tls);
    t.expect("220 mx.example.org ESMTP fugu");
    t.send("EHLO client.example.net");
    t.proceed(FilterPhase::Ehlo, "client.example.net");
    t.expect("250-mx.example.org Hello*");
    t
}

#[test]
fn a_listener_without_filters_is_never_asked() {
    let mut t = T::ehlo(config());
    t.start_data("bob@example.org");
    t.send_raw(b"Subject: x\r\n\r\nhi\r\n.\r\n");
    t.expect("250 2.0.0 * Message accepted for delivery");
    t.send("RSET");
    t.expect("250 2.0.0 Reset state");
    t.send("NOOP");
    t.expect("250 2.0.0 Ok");
    t.send("QUIT");
    t.expect("221 2.0.0 Bye");
    let asked = t
        .actions
        .iter()
        .filter(|a| matches!(a, Action::FilterPhase { .. } | Action::ClientLine(_)));
    assert_eq!(asked.count(), 0);
}

#[test]
fn an_ehlo_reject_answers_the_ehlo_and_leaves_the_session_before_helo() {
    let mut t = T::new(filtered());
    t.expect("220 mx.example.org ESMTP fugu");
    t.send("EHLO client.example.net");
    t.asked(FilterPhase::Ehlo, "client.example.net");
    t.expect_silence();
    t.verdict(reject(550, "not you"));
    t.expect("550 5.7.1 not you");
    assert!(
        t.logs().last().unwrap().ends_with(
            "smtp failed-command command=\"EHLO client.example.net\" result=\"550 5.7.1 not you\""
        ),
        "{:?}",
        t.logs()
    );
    t.send("MAIL FROM:<a@b.example>");
    t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
    t.send("HELO client.example.net");
    t.proceed(FilterPhase::Helo, "client.example.net");
    t.expect("250 mx.example.org Hello client.example.net*");
}

#[test]
fn a_disconnect_at_helo_closes_and_drops_what_was_pipelined() {
    let mut t = T::new(filtered());
    t.expect("220 *");
    t.send_raw(b"HELO client.example.net\r\nMAIL FROM:<a@b.example>\r\n");
    t.asked(FilterPhase::Helo, "client.example.net");
    t.verdict(FilterVerdict::Disconnect(Reply::new(
        421, "4.7.0", "go away",
    )));
    t.expect("421 4.7.0 go away");
    t.expect_silence();
    assert!(t.closed && t.s.is_closed());
    assert!(t.pending.is_empty());
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=filter")
    );

    // smtpd-filters(7): a reject carrying 421 closes too.
    let mut t = T::new(filtered());
    t.expect("220 *");
    t.send("EHLO client.example.net");
    t.asked(FilterPhase::Ehlo, "client.example.net");
    t.verdict(reject(421, "busy"));
    t.expect("421 4.7.1 busy");
    assert!(t.closed);
}

#[test]
fn a_rewritten_helo_name_is_the_one_greeted_and_recorded() {
    let mut t = T::new(filtered());
    t.expect("220 *");
    t.send("EHLO raw.example");
    t.asked(FilterPhase::Ehlo, "raw.example");
    t.verdict(FilterVerdict::Rewrite("not a name!".into()));
    t.expect("501 5.5.4 *");
    t.send("EHLO raw.example");
    t.asked(FilterPhase::Ehlo, "raw.example");
    t.verdict(FilterVerdict::Rewrite("cooked.example".into()));
    t.expect("250-mx.example.org Hello cooked.example*");
    t.envelope("a@b.example", "bob@example.org");
    t.message();
    assert_eq!(t.stored[0].envelope.helo, "cooked.example");
}

#[test]
fn pipelined_commands_wait_while_the_filters_decide() {
    let mut t = T::new(filtered());
    t.expect("220 *");
    t.send_raw(
        b"EHLO client.example.net\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.org>\r\nNOOP\r\n",
    );
    t.asked(FilterPhase::Ehlo, "client.example.net");
    // Input arriving meanwhile is kept, not read.
    t.send_raw(b"RSET\r\n");
    t.expect_silence();
    t.verdict(FilterVerdict::Proceed);
    t.expect("250-mx.example.org Hello*");
    t.asked(FilterPhase::MailFrom, "a@b.example");
    t.expect_silence();
    t.verdict(FilterVerdict::Proceed);
    t.expect("250 2.0.0 Ok");
    t.asked(FilterPhase::RcptTo, "bob@example.org");
    t.verdict(reject(550, "no thanks"));
    t.expect("550 5.7.1 no thanks");
    t.proceed(FilterPhase::Noop, "");
    t.expect("250 2.0.0 Ok");
    t.proceed(FilterPhase::Rset, "");
    t.expect("250 2.0.0 Reset state");
    t.expect_silence();
    assert!(t.s.wants_input());
}

#[test]
fn a_refused_sender_leaves_no_transaction() {
    let mut t = greeted(filtered(), None);
    t.send("MAIL FROM:<spammer@evil.example>");
    t.asked(FilterPhase::MailFrom, "spammer@evil.example");
    t.verdict(reject(550, "not from there"));
    t.expect("550 5.7.1 not from there");
    t.send("RCPT TO:<bob@example.org>");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
    let checked = t
        .actions
        .iter()
        .filter(|a| matches!(a, Action::CheckSender { .. }));
    assert_eq!(checked.count(), 0);
}

#[test]
fn a_rewritten_sender_and_recipient_are_checked_and_queued() {
    let mut t = greeted(filtered(), None);
    t.send("MAIL FROM:<a@b.example> SIZE=100");
    t.asked(FilterPhase::MailFrom, "a@b.example");
    t.verdict(FilterVerdict::Rewrite("<bounces@b.example>".into()));
    t.expect("250 2.0.0 Ok");
    t.send("RCPT TO:<bob@example.org>");
    t.asked(FilterPhase::RcptTo, "bob@example.org");
    t.verdict(FilterVerdict::Rewrite("archive@example.org".into()));
    t.expect("250 2.1.5 *");
    t.message();
    let env = &t.stored[0].envelope;
    assert_eq!(env.mail_from.as_deref(), Some("bounces@b.example"));
    assert_eq!(env.recipients[0].address, "archive@example.org");
    assert!(t.actions.iter().any(|a| matches!(
        a,
        Action::CheckRecipient { address, .. } if address == "archive@example.org"
    )));
}

#[test]
fn a_rewrite_that_is_not_an_address_is_refused_like_the_clients_would_be() {
    let mut t = greeted(filtered(), None);
    t.send("MAIL FROM:<a@b.example>");
    t.asked(FilterPhase::MailFrom, "a@b.example");
    t.verdict(FilterVerdict::Rewrite("not an address".into()));
    t.expect("553 5.1.7 Sender address syntax error");
    t.send("RCPT TO:<bob@example.org>");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
    t.send("MAIL FROM:<a@b.example>");
    t.asked(FilterPhase::MailFrom, "a@b.example");
    t.verdict(FilterVerdict::Rewrite("<>".into()));
    t.expect("250 2.0.0 Ok");
    t.send("RCPT TO:<bob@example.org>");
    t.asked(FilterPhase::RcptTo, "bob@example.org");
    t.verdict(FilterVerdict::Rewrite("<>".into()));
    t.expect("501 5.1.3 Recipient address syntax error");
    t.send("RCPT TO:<bob@example.org>");
    t.proceed(FilterPhase::RcptTo, "bob@example.org");
    t.expect("250 2.1.5 *");
    t.message();
    assert_eq!(t.stored[0].envelope.mail_from, None);
}

#[test]
fn starttls_is_put_to_the_filters_before_the_220() {
    let mut cfg = filtered();
    cfg.tls = TlsPolicy::StartTls;
    let mut t = greeted(cfg, None);
    t.send("STARTTLS");
    t.asked(FilterPhase::StartTls, "");
    t.expect_silence();
    t.verdict(FilterVerdict::Reject(Reply::new(
        454,
        "4.7.0",
        "TLS not available",
    )));
    t.expect("454 4.7.0 TLS not available");
    assert_eq!(t.starttls_count, 0);
    // RFC 3207 §4: what was pipelined after STARTTLS is dropped once TLS starts, even
    // though it arrived while the filters were deciding.
    t.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n");
    t.proceed(FilterPhase::StartTls, "");
    t.expect("220 2.0.0 Ready to start TLS");
    assert_eq!(t.starttls_count, 1);
    t.expect_silence();
    assert!(t.pending.is_empty());
    t.send("EHLO client.example.net");
    t.proceed(FilterPhase::Ehlo, "client.example.net");
    t.expect("250-mx.example.org Hello*");
}

#[test]
fn auth_is_put_to_the_filters_with_its_raw_arguments() {
    // base64("\0alice\0secret")
    const ALICE: &str = "AGFsaWNlAHNlY3JldA==";
    let mut cfg = filtered();
    cfg.tls = TlsPolicy::Implicit;
    cfg.auth = AuthPolicy::Optional;
    let mut t = greeted(cfg, Some(tls13()));
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.asked(FilterPhase::Auth, &format!("PLAIN {ALICE}"));
    t.verdict(FilterVerdict::Reject(Reply::new(535, "5.7.8", "not here")));
    t.expect("535 5.7.8 not here");
    let verified = t
        .actions
        .iter()
        .filter(|a| matches!(a, Action::VerifyCredentials { .. }));
    assert_eq!(verified.count(), 0);
    t.send(&format!("AUTH PLAIN {ALICE}"));
    t.proceed(FilterPhase::Auth, &format!("PLAIN {ALICE}"));
    t.expect("235 2.0.0 Authentication succeeded");
}

#[test]
fn quit_noop_and_rset_wait_for_the_filters() {
    let mut t = greeted(filtered(), None);
    t.envelope("a@b.example", "bob@example.org");
    t.send("RSET");
    t.asked(FilterPhase::Rset, "");
    t.verdict(reject(550, "keep it"));
    t.expect("550 5.7.1 keep it");
    // The refused RSET left the transaction as it was.
    t.message();
    t.send("NOOP");
    t.asked(FilterPhase::Noop, "");
    t.verdict(reject(550, "no"));
    t.expect("550 5.7.1 no");
    t.send("QUIT");
    t.asked(FilterPhase::Quit, "");
    t.verdict(reject(550, "stay"));
    t.expect("550 5.7.1 stay");
    assert!(!t.closed);
    t.send("QUIT");
    t.proceed(FilterPhase::Quit, "");
    t.expect("221 2.0.0 Bye");
    assert!(t.closed);
}

#[test]
fn client_lines_go_to_the_filters_with_auth_secrets_masked() {
    let mut cfg = filtered();
    cfg.tls = TlsPolicy::Implicit;
    cfg.auth = AuthPolicy::Optional;
    let mut t = greeted(cfg, Some(tls13()));
    t.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
    t.asked(FilterPhase::Auth, "PLAIN AGFsaWNlAHNlY3JldA==");
    t.verdict(FilterVerdict::Reject(Reply::new(535, "5.7.8", "not now")));
    t.expect("535 5.7.8 not now");
    t.send("AUTH LOGIN");
    t.proceed(FilterPhase::Auth, "LOGIN");
    t.expect("334 VXNlcm5hbWU6");
    t.send("YWxpY2U=");
    t.expect("334 UGFzc3dvcmQ6");
    t.send("c2VjcmV0");
    t.expect("235 2.0.0 Authentication succeeded");
    t.send("NOOP");
    let lines: Vec<&str> = t
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::ClientLine(l) => Some(l.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "EHLO client.example.net",
            "AUTH PLAIN ********",
            "AUTH LOGIN",
            "********",
            "********",
            "NOOP",
        ]
    );
}
