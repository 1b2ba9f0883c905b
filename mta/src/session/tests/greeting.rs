use super::*;

#[test]
fn banner_names_the_host() {
    let mut t = T::new(config());
    t.expect("220 mx.example.org ESMTP fugu");
    assert_eq!(
        t.logs()[0],
        "123456789abcdef0 smtp connected address=192.0.2.7 host=client.example.net"
    );
}

#[test]
fn ehlo_advertises_extensions() {
    let mut cfg = config();
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Optional;
    let mut t = T::new(cfg);
    t.expect("220 *");
    t.send("EHLO client.example.net");
    golden("ehlo-plaintext.txt", &t.next_reply());
}

#[test]
fn ehlo_over_tls_offers_auth_and_no_starttls() {
    let mut cfg = config();
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Optional;
    cfg.dsn = false;
    let mut t = T::ehlo(cfg);
    t.send("STARTTLS");
    t.expect("220 2.0.0 Ready to start TLS");
    t.send("EHLO client.example.net");
    golden("ehlo-tls-auth-no-dsn.txt", &t.next_reply());
}

#[test]
fn helo_gets_one_line_with_the_peer_address() {
    let mut t = T::new(config());
    t.expect("220 *");
    t.send("HELO client.example.net");
    t.expect("250 mx.example.org Hello client.example.net [192.0.2.7], pleased to meet you");
}

#[test]
fn ipv6_peer_is_shown_as_an_address_literal() {
    let mut t = T::with_peer(config(), "[2001:db8::7]:4000".parse().unwrap(), None);
    t.expect("220 *");
    t.send("HELO [IPv6:2001:db8::7]");
    t.expect("250 mx.example.org Hello [IPv6:2001:db8::7] [IPv6:2001:db8::7], pleased to meet you");
}

#[test]
fn second_ehlo_is_refused_as_opensmtpd_does() {
    let mut t = T::ehlo(config());
    t.send("EHLO again.example");
    t.expect("503 5.5.1 Invalid command: Already identified");
}

#[test]
fn ehlo_needs_a_valid_domain() {
    let mut t = T::new(config());
    t.expect("220 *");
    t.send("EHLO");
    t.expect("501 5.5.1 Invalid command: EHLO requires domain name");
    t.send("HELO");
    t.expect("501 5.5.1 Invalid command: HELO requires domain name");
    t.send("EHLO bad..name");
    t.expect("501 5.5.4 Invalid command arguments: Invalid domain name");
    t.send("EHLO two words");
    t.expect("501 5.5.4 *");
    t.send("EHLO [192.0.2.7]");
    t.expect("250-*");
}

#[test]
fn commands_before_helo_are_out_of_sequence() {
    let mut t = T::new(config());
    t.expect("220 *");
    for cmd in ["MAIL FROM:<a@b.example>", "RSET", "STARTTLS", "AUTH PLAIN"] {
        t.send(cmd);
        t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
    }
    t.send("RCPT TO:<a@b.example>");
    t.expect("503 5.5.1 Invalid command: No MAIL FROM given");
}

#[test]
fn unknown_and_empty_commands_get_500() {
    let mut t = T::ehlo(config());
    t.send("WIZ");
    t.expect("500 5.5.1 Invalid command: Command unrecognized");
    t.send("");
    t.expect("500 5.5.1 Invalid command: Command unrecognized");
    assert!(t.logs().iter().any(|l| l.ends_with(
        "smtp failed-command command=\"WIZ\" result=\"500 5.5.1 Invalid command: Command unrecognized\""
    )));
}

#[test]
fn noop_help_vrfy_expn() {
    let mut t = T::ehlo(config());
    t.send("NOOP anything");
    t.expect("250 2.0.0 Ok");
    t.send("HELP");
    golden("help.txt", &t.next_reply());
    t.send("HELP me");
    t.expect("500 5.5.4 Invalid command arguments: command does not accept arguments.");
    t.send("VRFY root");
    t.expect("252 2.5.2 Cannot VRFY user*");
    t.send("EXPN staff");
    t.expect("502 5.5.1 Invalid command: EXPN not supported");
}

#[test]
fn quit_says_bye_and_closes() {
    let mut t = T::ehlo(config());
    t.send("QUIT now");
    t.expect("500 5.5.4 *");
    t.send("quit");
    t.expect("221 2.0.0 Bye");
    assert!(t.closed);
    assert!(t.s.is_closed());
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=quit")
    );
    t.send("NOOP");
    t.expect_silence();
}

#[test]
fn verbs_are_case_insensitive_and_lf_alone_ends_a_command() {
    let mut t = T::new(config());
    t.expect("220 *");
    t.send_raw(b"ehlo client.example.net\nnOoP\n");
    t.expect("250-*");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn an_overlong_command_line_is_refused_and_the_session_goes_on() {
    let mut t = T::ehlo(config());
    t.send(&format!("NOOP {}", "x".repeat(1000)));
    t.expect("500 5.5.2 Line too long");
    t.send("NOOP");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn an_endless_line_is_dropped_up_to_its_end_without_buffering_it() {
    let mut t = T::ehlo(config());
    let chunk = vec![b'x'; 8192];
    for _ in 0..10 {
        t.send_raw(&chunk);
    }
    t.expect("500 5.5.2 Line too long");
    assert!(t.s.inbuf.len() <= MAX_AUTH_LINE);
    t.send_raw(b"MAIL FROM:<tail@x.example>\r\nNOOP\r\n");
    t.expect("250 2.0.0 Ok");
    t.expect_silence();
}

#[test]
fn control_characters_and_invalid_utf8_in_commands_are_refused() {
    let mut t = T::ehlo(config());
    t.send_raw(b"NOOP \x00\r\n");
    t.expect("500 5.5.2 Syntax error: invalid character in command");
    t.send_raw(b"NO\rOP\r\n");
    t.expect("500 5.5.2 *");
    t.send_raw(b"MAIL FROM:<\xff@x.example>\r\n");
    t.expect("500 5.5.2 *");
}
