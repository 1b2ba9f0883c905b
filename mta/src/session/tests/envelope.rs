//! MAIL and RCPT: syntax, parameters and what ends up in the envelope.
use super::*;

fn mail_ok(t: &mut T) {
    t.send("MAIL FROM:<sender@client.example.net>");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn a_space_after_the_colon_is_refused() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM: <a@b.example>");
    t.expect("501 5.5.4 Syntax: MAIL FROM:<address>");
    mail_ok(&mut t);
    t.send("RCPT TO: <a@b.example>");
    t.expect("501 5.5.4 Syntax: RCPT TO:<address>");
}

#[test]
fn mail_and_rcpt_need_their_keywords() {
    let mut t = T::ehlo(config());
    t.send("MAIL <a@b.example>");
    t.expect("501 5.5.4 Syntax: MAIL FROM:<address>");
    t.send("MAIL FROM:");
    t.expect("501 5.5.4 *");
    t.send("MAIL FROM:a@b.example");
    t.expect("501 5.5.4 *");
    mail_ok(&mut t);
    t.send("RCPT <a@b.example>");
    t.expect("501 5.5.4 Syntax: RCPT TO:<address>");
}

#[test]
fn bad_addresses_are_refused() {
    let mut t = T::ehlo(config());
    for bad in [
        "<a..b@c.example>",
        "<a@b..example>",
        "<a b@c.example>",
        "<a@b.example",
        "<a@b.example>junk",
    ] {
        t.send(&format!("MAIL FROM:{bad}"));
        t.expect("553 5.1.7 Sender address syntax error");
    }
    mail_ok(&mut t);
    t.send("RCPT TO:<>");
    t.expect("501 5.1.3 Recipient address syntax error");
    t.send("RCPT TO:<@x.example>");
    t.expect("501 5.1.3 Recipient address syntax error");
}

#[test]
fn null_sender_quoted_local_parts_and_source_routes_are_accepted() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM:<>");
    t.expect("250 2.0.0 Ok");
    t.send("RCPT TO:<\"john doe\"@Example.ORG>");
    t.expect("250 2.1.5 Destination address valid: Recipient ok");
    t.send("RCPT TO:<@relay.example,@hop.example:bob@example.org>");
    t.expect("250 2.1.5 *");
    t.send("RCPT TO:<postmaster>");
    t.expect("250 2.1.5 *");
    t.send("DATA");
    t.expect("354 *");
    t.send_raw(b"hi\r\n.\r\n");
    t.expect("250 2.0.0 00000001 Message accepted for delivery");
    let env = &t.stored[0].envelope;
    assert_eq!(env.mail_from, None);
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "\"john doe\"@example.org",
            "bob@example.org",
            "postmaster@mx.example.org"
        ]
    );
    assert!(env.recipients.iter().all(|r| r.action == "deliver"));
}

#[test]
fn only_one_mail_per_transaction() {
    let mut t = T::ehlo(config());
    mail_ok(&mut t);
    t.send("MAIL FROM:<other@x.example>");
    t.expect("503 5.5.1 Invalid command: Only one MAIL FROM allowed");
}

#[test]
fn size_is_checked_when_declared() {
    let mut cfg = config();
    cfg.max_message_size = 1000;
    let mut t = T::ehlo(cfg);
    t.send("MAIL FROM:<a@b.example> SIZE=1001");
    t.expect("552 5.3.4 Message size exceeds fixed maximum message size");
    t.send("MAIL FROM:<a@b.example> SIZE=ten");
    t.expect("501 5.5.4 Invalid option value SIZE=ten");
    t.send("MAIL FROM:<a@b.example> SIZE=1000");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn body_smtputf8_and_dsn_parameters_reach_the_envelope() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM:<jörg@bücher.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>");
    t.expect("250 2.0.0 Ok");
    t.send("RCPT TO:<zoë@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;zo+C3+ABe@example.org");
    t.expect("250 2.1.5 *");
    t.send("RCPT TO:<b@example.org> NOTIFY=NEVER");
    t.expect("250 2.1.5 *");
    t.send("DATA");
    t.expect("354 *");
    t.send_raw(b".\r\n");
    t.expect("250 *");
    let env = &t.stored[0].envelope;
    assert_eq!(env.mail_from.as_deref(), Some("jörg@bücher.example"));
    assert_eq!(env.body_type, BodyType::EightBitMime);
    assert!(env.smtputf8);
    assert_eq!(env.dsn_ret, Some(DsnRet::Headers));
    assert_eq!(env.dsn_envid.as_deref(), Some("QQ+2B1"));
    let r0 = &env.recipients[0];
    assert_eq!(r0.orcpt.as_deref(), Some("rfc822;zo+C3+ABe@example.org"));
    assert_eq!(
        r0.notify,
        Some(crate::envelope::DsnNotify {
            never: false,
            success: true,
            failure: true,
            delay: false
        })
    );
    assert!(env.recipients[1].notify.unwrap().never);
}

#[test]
fn utf8_addresses_need_smtputf8() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM:<jörg@example.org>");
    t.expect("553 5.6.7 *");
    mail_ok(&mut t);
    t.send("RCPT TO:<u@bücher.example>");
    t.expect("553 5.6.7 *");
    t.send("RCPT TO:<u@xn--bcher-kva.example>");
    t.expect("250 2.1.5 *");
}

#[test]
fn bad_parameters_are_refused() {
    let mut t = T::ehlo(config());
    t.send("MAIL FROM:<a@b.example> BODY=BINARYMIME");
    t.expect("555 5.5.4 Unsupported option BODY=BINARYMIME");
    t.send("MAIL FROM:<a@b.example> FOO=BAR");
    t.expect("555 5.5.4 Unsupported option FOO=BAR");
    t.send("MAIL FROM:<a@b.example> RET=SOME");
    t.expect("501 5.5.4 Invalid option value RET=SOME");
    t.send("MAIL FROM:<a@b.example> ENVID=a=b");
    t.expect("501 5.5.4 *");
    mail_ok(&mut t);
    t.send("RCPT TO:<a@example.org> NOTIFY=NEVER,DELAY");
    t.expect("501 5.5.4 NOTIFY option NEVER cannot be combined with other options");
    t.send("RCPT TO:<a@example.org> NOTIFY=SOMETIMES");
    t.expect("501 5.5.4 *");
    t.send("RCPT TO:<a@example.org> ORCPT=nosemicolon");
    t.expect("501 5.5.4 ORCPT address syntax error");
    t.send("RCPT TO:<a@example.org> XFOO");
    t.expect("555 5.5.4 Unsupported option XFOO");
}

#[test]
fn dsn_parameters_are_refused_with_no_dsn() {
    let mut cfg = config();
    cfg.dsn = false;
    let mut t = T::ehlo(cfg);
    t.send("MAIL FROM:<a@b.example> RET=FULL");
    t.expect("555 5.5.4 Unsupported option RET=FULL");
    mail_ok(&mut t);
    t.send("RCPT TO:<a@example.org> NOTIFY=NEVER");
    t.expect("555 5.5.4 *");
}

#[test]
fn rule_verdicts_are_given_at_rcpt_time() {
    let mut t = T::ehlo(config());
    mail_ok(&mut t);
    t.send("RCPT TO:<unknown@example.org>");
    t.expect("550 5.1.1 Invalid recipient: <unknown@example.org>");
    t.send("RCPT TO:<reject@example.org>");
    t.expect("550 5.7.1 Delivery not authorized: <reject@example.org>");
    t.send("RCPT TO:<tempfail@example.org>");
    t.expect("451 4.3.0 Temporary failure: <tempfail@example.org>");
    t.send("DATA");
    t.expect("503 5.5.1 Invalid command: No recipient specified");
}

#[test]
fn sender_verdicts_are_awaited_and_obeyed() {
    let mut t = T::ehlo(config());
    t.auto = false;
    t.send_raw(b"MAIL FROM:<spammer@bad.example>\r\nNOOP\r\n");
    t.expect_silence();
    assert!(!t.s.wants_input());
    let Some(Action::CheckSender { address, context }) = t.pending.pop_front() else {
        panic!("expected CheckSender");
    };
    assert_eq!(address.as_deref(), Some("spammer@bad.example"));
    assert_eq!(context.helo, "client.example.net");
    t.event(Event::SenderVerdict(SenderVerdict::Reject(
        reply::sender_rejected(),
    )));
    t.expect("550 5.7.1 Sender rejected");
    // The pipelined NOOP is answered only after the verdict.
    t.expect("250 2.0.0 Ok");
    t.send("RCPT TO:<a@example.org>");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
}

#[test]
fn recipient_checks_carry_the_transaction_context() {
    let mut cfg = config();
    cfg.tag = Some("MX".into());
    let mut t = T::ehlo(cfg);
    mail_ok(&mut t);
    t.auto = false;
    t.send("RCPT TO:<Bob@Example.ORG>");
    let Some(Action::CheckRecipient { address, context }) = t.pending.pop_front() else {
        panic!("expected CheckRecipient");
    };
    assert_eq!(address, "Bob@example.org");
    assert_eq!(
        context.mail_from.as_deref(),
        Some("sender@client.example.net")
    );
    assert_eq!(context.tag.as_deref(), Some("MX"));
    assert_eq!(context.rdns.as_deref(), Some("client.example.net"));
    assert!(!context.tls);
    assert_eq!(context.auth_user, None);
}

#[test]
fn rset_forgets_the_transaction() {
    let mut t = T::ehlo(config());
    mail_ok(&mut t);
    t.send("RSET");
    t.expect("250 2.0.0 Reset state");
    t.send("RCPT TO:<a@example.org>");
    t.expect("503 5.5.1 *");
    t.send("RSET now");
    t.expect("500 5.5.4 *");
}
