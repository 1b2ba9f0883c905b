//! Transcript tests for the sans-IO client: each test plays the server's side and checks
//! every line the client writes.

use super::client::*;
use crate::queue::Outcome;

fn params() -> Params {
    Params {
        proto: Proto::Smtp,
        helo: "mx.fugu.test".into(),
        tls: TlsPolicy::Opportunistic,
        implicit_tls: false,
        auth: None,
    }
}

fn tx(rcpts: &[&str]) -> Transaction {
    Transaction {
        mail_from: Some("alice@fugu.test".into()),
        rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
        body: b"Subject: hi\r\n\r\n.hello\r\n".to_vec().into(),
        smtputf8: false,
        eight_bit: false,
    }
}

/// A scripted server: feeds replies, collects what the client sent as text.
struct Script {
    s: Session,
    sent: Vec<String>,
    events: Vec<String>,
}

impl Script {
    fn new(p: Params) -> Script {
        Script {
            s: Session::new(p),
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn take(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(b) => self.sent.push(String::from_utf8(b).unwrap()),
                Action::StartTls => self.events.push("starttls".into()),
                Action::Ready => self.events.push("ready".into()),
                Action::Done(o) => self.events.push(format!("done {o:?}")),
                Action::Fail(f) => self.events.push(format!("fail {}", f.text)),
                Action::Closed => self.events.push("closed".into()),
            }
        }
    }

    /// The server says `text` (one or more `\n`-separated reply lines).
    fn server(&mut self, text: &str) {
        let mut r = ReplyReader::default();
        r.feed(format!("{}\r\n", text.replace('\n', "\r\n")).as_bytes());
        let reply = r.next_reply().unwrap().expect("a complete reply");
        let a = self.s.handle(Event::Reply(reply));
        self.take(a);
    }

    fn tls_up(&mut self) {
        let a = self.s.handle(Event::TlsUp);
        self.take(a);
    }

    fn submit(&mut self, t: Transaction) {
        let a = self.s.submit(t);
        self.take(a);
    }

    /// Everything the client sent since the last call, as one string.
    fn client(&mut self) -> String {
        std::mem::take(&mut self.sent).concat()
    }

    fn event(&mut self) -> String {
        assert!(
            !self.events.is_empty(),
            "no event; sent so far: {:?}",
            self.sent
        );
        self.events.remove(0)
    }
}

#[test]
fn plain_delivery_one_command_at_a_time() {
    let mut c = Script::new(params());
    c.server("220 mx.remote.test ESMTP");
    assert_eq!(c.client(), "EHLO mx.fugu.test\r\n");
    c.server("250-mx.remote.test\n250 8BITMIME");
    assert_eq!(c.event(), "ready");
    c.submit(tx(&["bob@remote.test", "carol@remote.test"]));
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test>\r\n");
    c.server("250 2.1.0 Ok");
    assert_eq!(c.client(), "RCPT TO:<bob@remote.test>\r\n");
    c.server("250 2.1.5 Ok");
    assert_eq!(c.client(), "RCPT TO:<carol@remote.test>\r\n");
    c.server("550 5.1.1 <carol@remote.test>: Recipient address rejected");
    assert_eq!(c.client(), "DATA\r\n");
    c.server("354 End data with <CR><LF>.<CR><LF>");
    // RFC 5321 §4.5.2: the leading dot of ".hello" is doubled.
    assert_eq!(c.client(), "Subject: hi\r\n\r\n..hello\r\n.\r\n");
    c.server("250 2.0.0 Ok: queued as ABC123");
    assert_eq!(
        c.event(),
        format!(
            "done {:?}",
            vec![
                Outcome::Delivered("250 2.0.0 Ok: queued as ABC123".into()),
                Outcome::PermFail(
                    "550 5.1.1 <carol@remote.test>: Recipient address rejected".into()
                ),
            ]
        )
    );
    assert!(c.s.is_idle());
}

#[test]
fn pipelining_sends_mail_rcpts_and_data_in_one_group() {
    let mut c = Script::new(params());
    c.server("220 mx.remote.test ESMTP");
    c.client();
    c.server("250-mx.remote.test\n250-PIPELINING\n250 SIZE 10240000");
    assert_eq!(c.event(), "ready");
    c.submit(tx(&["bob@remote.test", "dan@remote.test"]));
    assert_eq!(
        c.client(),
        "MAIL FROM:<alice@fugu.test> SIZE=23\r\nRCPT TO:<bob@remote.test>\r\nRCPT TO:<dan@remote.test>\r\nDATA\r\n"
    );
    c.server("250 2.1.0 Ok");
    c.server("451 4.7.1 <bob@remote.test>: greylisted, try again later");
    c.server("250 2.1.5 Ok");
    assert_eq!(c.client(), "");
    c.server("354 go ahead");
    assert_eq!(c.client(), "Subject: hi\r\n\r\n..hello\r\n.\r\n");
    c.server("250 2.0.0 Ok: queued");
    assert_eq!(
        c.event(),
        format!(
            "done {:?}",
            vec![
                Outcome::TempFail(
                    "451 4.7.1 <bob@remote.test>: greylisted, try again later".into()
                ),
                Outcome::Delivered("250 2.0.0 Ok: queued".into()),
            ]
        )
    );
}

#[test]
fn pipelined_data_accepted_without_recipients_ends_with_a_lone_dot() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 PIPELINING");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test"]));
    c.client();
    c.server("250 ok");
    c.server("550 5.1.1 no such user");
    c.server("354 go ahead");
    assert_eq!(c.client(), ".\r\n");
    c.server("554 5.5.1 no valid recipients");
    assert_eq!(
        c.event(),
        format!(
            "done {:?}",
            vec![Outcome::PermFail("550 5.1.1 no such user".into())]
        )
    );
}

#[test]
fn mail_from_refused_fails_every_recipient_with_its_text() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250 x");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test", "carol@remote.test"]));
    c.server("421 4.3.2 shutting down");
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test>\r\n");
    let t = Outcome::TempFail("421 4.3.2 shutting down".into());
    assert_eq!(c.event(), format!("done {:?}", vec![t.clone(), t]));
}

#[test]
fn ehlo_refused_falls_back_to_helo_without_extensions() {
    let mut c = Script::new(params());
    c.server("220 old.remote.test SMTP");
    assert_eq!(c.client(), "EHLO mx.fugu.test\r\n");
    c.server("502 5.5.2 command not recognized");
    assert_eq!(c.client(), "HELO mx.fugu.test\r\n");
    c.server("250 old.remote.test");
    assert_eq!(c.event(), "ready");
    c.submit(tx(&["bob@remote.test"]));
    // No SIZE, no BODY: HELO servers know no parameters.
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test>\r\n");
}

#[test]
fn opportunistic_starttls_restarts_with_ehlo_and_forgets_old_extensions() {
    let mut c = Script::new(params());
    c.server("220 x ESMTP");
    c.client();
    c.server("250-x\n250-PIPELINING\n250 STARTTLS");
    assert_eq!(c.client(), "STARTTLS\r\n");
    c.server("220 2.0.0 Ready to start TLS");
    assert_eq!(c.event(), "starttls");
    c.tls_up();
    assert!(c.s.tls_active());
    assert_eq!(c.client(), "EHLO mx.fugu.test\r\n");
    c.server("250-x\n250 SIZE 100");
    assert_eq!(c.event(), "ready");
    assert!(!c.s.extensions().pipelining);
    c.submit(tx(&["bob@remote.test"]));
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test> SIZE=23\r\n");
}

#[test]
fn opportunistic_tls_goes_on_in_clear_text_when_not_offered() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.client();
    c.server("250 x");
    assert_eq!(c.event(), "ready");
    assert!(!c.s.tls_active());
}

#[test]
fn required_tls_fails_when_starttls_is_not_offered() {
    let mut c = Script::new(Params {
        tls: TlsPolicy::Required,
        ..params()
    });
    c.server("220 x");
    c.client();
    c.server("250-x\n250 PIPELINING");
    assert_eq!(
        c.event(),
        "fail 530 5.7.10 the server does not offer STARTTLS, which is required"
    );
    assert!(c.s.is_closed());
}

#[test]
fn required_tls_fails_when_starttls_is_refused() {
    let mut c = Script::new(Params {
        tls: TlsPolicy::Required,
        ..params()
    });
    c.server("220 x");
    c.server("250-x\n250 STARTTLS");
    c.server("454 4.7.0 TLS not available");
    assert_eq!(c.event(), "fail STARTTLS: 454 4.7.0 TLS not available");
}

#[test]
fn never_tls_ignores_starttls() {
    let mut c = Script::new(Params {
        tls: TlsPolicy::Never,
        ..params()
    });
    c.server("220 x");
    c.client();
    c.server("250-x\n250 STARTTLS");
    assert_eq!(c.client(), "");
    assert_eq!(c.event(), "ready");
}

fn creds() -> Option<Credentials> {
    Some(Credentials {
        user: "relayuser".into(),
        password: "s3cret".into(),
    })
}

#[test]
fn auth_plain_after_implicit_tls() {
    let mut c = Script::new(Params {
        implicit_tls: true,
        tls: TlsPolicy::Never,
        auth: creds(),
        ..params()
    });
    c.server("220 smarthost");
    c.client();
    c.server("250-smarthost\n250 AUTH LOGIN PLAIN");
    // base64("\0relayuser\0s3cret")
    assert_eq!(c.client(), "AUTH PLAIN AHJlbGF5dXNlcgBzM2NyZXQ=\r\n");
    c.server("235 2.7.0 Authentication successful");
    assert_eq!(c.event(), "ready");
}

#[test]
fn auth_login_when_plain_is_not_offered() {
    let mut c = Script::new(Params {
        implicit_tls: true,
        auth: creds(),
        ..params()
    });
    c.server("220 smarthost");
    c.client();
    c.server("250-smarthost\n250 AUTH LOGIN");
    assert_eq!(c.client(), "AUTH LOGIN\r\n");
    c.server("334 VXNlcm5hbWU6");
    assert_eq!(c.client(), format!("{}\r\n", base64(b"relayuser")));
    c.server("334 UGFzc3dvcmQ6");
    assert_eq!(c.client(), format!("{}\r\n", base64(b"s3cret")));
    c.server("235 2.7.0 ok");
    assert_eq!(c.event(), "ready");
}

#[test]
fn auth_refused_is_a_session_failure_quoting_the_reply() {
    let mut c = Script::new(Params {
        implicit_tls: true,
        auth: creds(),
        ..params()
    });
    c.server("220 smarthost");
    c.server("250-smarthost\n250 AUTH PLAIN");
    c.server("535 5.7.8 Error: authentication failed");
    assert_eq!(
        c.event(),
        "fail AUTH refused: 535 5.7.8 Error: authentication failed"
    );
}

#[test]
fn credentials_are_never_sent_in_clear_text() {
    let mut c = Script::new(Params {
        tls: TlsPolicy::Never,
        auth: creds(),
        ..params()
    });
    c.server("220 smarthost");
    c.client();
    c.server("250-smarthost\n250 AUTH PLAIN");
    assert_eq!(c.client(), "");
    assert_eq!(
        c.event(),
        "fail 530 5.7.10 refusing to send AUTH credentials without TLS"
    );
}

#[test]
fn a_second_message_on_the_same_connection_starts_with_rset() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250 x");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test"]));
    c.server("250 ok");
    c.server("250 ok");
    c.server("354 go");
    c.server("250 queued 1");
    c.event();
    c.client();
    c.submit(tx(&["carol@remote.test"]));
    assert_eq!(c.client(), "RSET\r\n");
    c.server("250 2.0.0 flushed");
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test>\r\n");
    assert_eq!(c.s.messages, 1);
}

/// A session with a PIPELINING server that has delivered one message.
fn pipelining_after_one_message() -> Script {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 PIPELINING");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test"]));
    c.client();
    c.server("250 ok");
    c.server("250 ok");
    c.server("354 go");
    c.client();
    c.server("250 queued 1");
    c.event();
    c
}

#[test]
fn with_pipelining_the_rset_of_a_reused_connection_opens_the_next_group() {
    let mut c = pipelining_after_one_message();
    c.submit(tx(&["carol@remote.test"]));
    assert_eq!(
        c.client(),
        "RSET\r\nMAIL FROM:<alice@fugu.test>\r\nRCPT TO:<carol@remote.test>\r\nDATA\r\n"
    );
    c.server("250 2.0.0 flushed");
    c.server("250 ok");
    c.server("250 ok");
    assert_eq!(c.client(), "");
    c.server("354 go");
    assert_eq!(c.client(), "Subject: hi\r\n\r\n..hello\r\n.\r\n");
    c.server("250 queued 2");
    assert_eq!(
        c.event(),
        format!("done {:?}", vec![Outcome::Delivered("250 queued 2".into())])
    );
    assert_eq!(c.s.messages, 2);
}

#[test]
fn a_refused_pipelined_rset_ends_the_session_before_the_message_is_sent() {
    let mut c = pipelining_after_one_message();
    c.submit(tx(&["carol@remote.test"]));
    c.client();
    c.server("421 4.4.2 idle too long, closing");
    assert_eq!(c.client(), "");
    assert_eq!(c.event(), "fail RSET: 421 4.4.2 idle too long, closing");
}

#[test]
fn quit_closes_the_session() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250 x");
    c.client();
    let a = c.s.quit();
    c.take(a);
    assert_eq!(c.client(), "QUIT\r\n");
    c.server("221 2.0.0 bye");
    c.event();
    assert_eq!(c.event(), "closed");
}

#[test]
fn greeting_refusal_is_permanent_for_this_host() {
    let mut c = Script::new(params());
    let a = {
        let mut r = ReplyReader::default();
        r.feed(b"554 5.7.1 no mail from you\r\n");
        c.s.handle(Event::Reply(r.next_reply().unwrap().unwrap()))
    };
    assert_eq!(
        a,
        vec![Action::Fail(Failure {
            text: "greeting: 554 5.7.1 no mail from you".into(),
            permanent: true
        })]
    );
}

#[test]
fn smtputf8_is_announced_only_when_needed_and_offered() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 SMTPUTF8");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test"]));
    assert_eq!(c.client(), "MAIL FROM:<alice@fugu.test>\r\n");
    c.server("250 ok");
    c.server("250 ok");
    c.server("354 go");
    c.server("250 ok");
    c.event();
    c.client();
    c.submit(tx(&["josé@remote.test"]));
    c.server("250 flushed");
    assert_eq!(
        c.client(),
        "RSET\r\nMAIL FROM:<alice@fugu.test> SMTPUTF8\r\n"
    );
}

#[test]
fn smtputf8_needed_but_not_offered_is_a_clear_permanent_failure() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 8BITMIME");
    c.event();
    c.client();
    c.submit(tx(&["josé@remote.test"]));
    assert_eq!(c.client(), "");
    assert_eq!(
        c.event(),
        format!(
            "done {:?}",
            vec![Outcome::PermFail(
                "553 5.6.7 the remote server does not support SMTPUTF8, which this message needs"
                    .into()
            )]
        )
    );
}

#[test]
fn eight_bit_content_is_declared_when_the_server_offers_8bitmime() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 8BITMIME");
    c.event();
    c.client();
    c.submit(Transaction {
        eight_bit: true,
        mail_from: None,
        ..tx(&["bob@remote.test"])
    });
    assert_eq!(c.client(), "MAIL FROM:<> BODY=8BITMIME\r\n");
}

#[test]
fn a_message_over_the_announced_size_is_refused_before_sending() {
    let mut c = Script::new(params());
    c.server("220 x");
    c.server("250-x\n250 SIZE 10");
    c.event();
    c.client();
    c.submit(tx(&["bob@remote.test"]));
    assert_eq!(c.client(), "");
    assert!(c.event().contains("552 5.3.4 message of 23 bytes exceeds"));
}

#[test]
fn lmtp_gets_one_reply_per_accepted_recipient_after_the_dot() {
    let mut c = Script::new(Params {
        proto: Proto::Lmtp,
        tls: TlsPolicy::Never,
        ..params()
    });
    c.server("220 lmtp");
    assert_eq!(c.client(), "LHLO mx.fugu.test\r\n");
    c.server("250-lmtp\n250 PIPELINING");
    c.event();
    c.submit(tx(&["a@x.test", "b@x.test", "c@x.test"]));
    c.client();
    c.server("250 ok");
    c.server("250 ok");
    c.server("550 5.1.1 no b");
    c.server("250 ok");
    c.server("354 go");
    c.client();
    c.server("250 2.0.0 <a@x.test> saved");
    assert!(c.events.is_empty());
    c.server("452 4.2.2 <c@x.test> over quota");
    assert_eq!(
        c.event(),
        format!(
            "done {:?}",
            vec![
                Outcome::Delivered("250 2.0.0 <a@x.test> saved".into()),
                Outcome::PermFail("550 5.1.1 no b".into()),
                Outcome::TempFail("452 4.2.2 <c@x.test> over quota".into()),
            ]
        )
    );
}

#[test]
fn multi_line_replies_are_joined_for_the_dsn() {
    let mut r = ReplyReader::default();
    r.feed(b"550-5.1.1 The email account that you tried to reach does not exist.\r\n550-5.1.1 Please try\r\n");
    assert_eq!(r.next_reply().unwrap(), None);
    r.feed(b"550 5.1.1 double-checking the address.\r\n");
    assert_eq!(
        r.next_reply().unwrap().unwrap().text(),
        "550 5.1.1 The email account that you tried to reach does not exist. 5.1.1 Please try 5.1.1 double-checking the address."
    );
}

#[test]
fn replies_split_across_reads_and_several_in_one_read() {
    let mut r = ReplyReader::default();
    r.feed(b"25");
    assert_eq!(r.next_reply().unwrap(), None);
    r.feed(b"0 ok\r\n354 go\r\n");
    assert_eq!(r.next_reply().unwrap().unwrap().code, 250);
    assert_eq!(r.next_reply().unwrap().unwrap().code, 354);
    assert_eq!(r.next_reply().unwrap(), None);
}

#[test]
fn garbage_is_not_a_reply() {
    let mut r = ReplyReader::default();
    r.feed(b"HTTP/1.1 400 Bad Request\r\n");
    assert!(r.next_reply().is_err());
    let mut r = ReplyReader::default();
    r.feed(b"250-a\r\n220 b\r\n");
    assert!(r.next_reply().is_err(), "a continuation must keep its code");
}

#[test]
fn bytes_pipelined_before_the_tls_handshake_are_discarded() {
    let mut r = ReplyReader::default();
    r.feed(b"220 ready\r\n250 injected\r\n");
    assert_eq!(r.next_reply().unwrap().unwrap().code, 220);
    assert_eq!(r.discard_buffered(), b"250 injected\r\n".len());
    assert_eq!(r.next_reply().unwrap(), None);
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(i.as_bytes()), o);
    }
}

mod mx_order {
    use super::super::mx::{MxError, address_literal, order};

    fn recs(v: &[(u16, &str)]) -> Vec<(u16, String)> {
        v.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    #[test]
    fn lowest_preference_first() {
        let mut first = |_: usize| 0;
        let o = order(
            "d.test",
            recs(&[(20, "mx2.d.test."), (10, "MX1.d.test.")]),
            None,
            &mut first,
        )
        .unwrap();
        assert_eq!(o, recs(&[(10, "mx1.d.test"), (20, "mx2.d.test")]));
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let input = recs(&[(10, "a."), (10, "b."), (10, "c."), (5, "z.")]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..6 {
            let mut k = seed;
            let mut rand = |n: usize| {
                k = k * 7 + 3;
                k % n
            };
            let o = order("d.test", input.clone(), None, &mut rand).unwrap();
            assert_eq!(o[0].1, "z", "the lowest preference stays first");
            seen.insert(o.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
        }
        assert!(seen.len() > 1, "equal preferences always came in one order");
    }

    #[test]
    fn null_mx_is_refused() {
        let mut first = |_: usize| 0;
        assert_eq!(
            order("nomail.test", recs(&[(0, ".")]), None, &mut first),
            Err(MxError::NullMx("nomail.test".into()))
        );
        assert_eq!(
            MxError::NullMx("nomail.test".into()).to_string(),
            "556 5.1.10 domain nomail.test has a null MX and accepts no mail"
        );
    }

    #[test]
    fn backup_keeps_only_mx_preferred_over_ours() {
        let mut first = |_: usize| 0;
        let r = recs(&[
            (10, "primary.d.test."),
            (20, "us.test."),
            (30, "other.d.test."),
        ]);
        assert_eq!(
            order("d.test", r.clone(), Some("US.test"), &mut first).unwrap(),
            recs(&[(10, "primary.d.test")])
        );
        assert!(matches!(
            order(
                "d.test",
                recs(&[(10, "us.test.")]),
                Some("us.test"),
                &mut first
            ),
            Err(MxError::Temp(_))
        ));
        // Not listed among the MX: every MX is fine.
        assert_eq!(
            order("d.test", r, Some("elsewhere.test"), &mut first)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("example.org"), None);
    }
}

#[test]
fn resolver_addresses_take_an_optional_port() {
    use super::dns::parse_server;
    assert_eq!(
        parse_server("127.0.0.1"),
        Some("127.0.0.1:53".parse().unwrap())
    );
    assert_eq!(
        parse_server("127.0.0.1:5353"),
        Some("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(parse_server("::1"), Some("[::1]:53".parse().unwrap()));
    assert_eq!(
        parse_server("[::1]:5353"),
        Some("[::1]:5353".parse().unwrap())
    );
    assert_eq!(parse_server("[::1]"), Some("[::1]:53".parse().unwrap()));
    assert_eq!(parse_server("dns.example"), None);
}

#[tokio::test]
async fn prepare_builds_what_the_first_delivery_needs() {
    let relayer = super::Relayer::new();
    relayer.prepare(Some("127.0.0.1:5353"));
    let built = relayer.resolver.lock().unwrap();
    assert_eq!(
        built.as_ref().map(|(addr, _)| addr.as_deref()),
        Some(Some("127.0.0.1:5353"))
    );
    let key = (None, super::tls::Verify::Logged);
    assert!(relayer.configs.lock().unwrap().contains_key(&key));
    assert!(relayer.roots.lock().unwrap().contains_key(&None));
}
