//! STARTTLS (RFC 3207) and implicit TLS.
use super::*;

fn starttls_cfg(policy: TlsPolicy) -> SessionConfig {
    let mut cfg = config();
    cfg.tls = policy;
    cfg
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let mut t = T::ehlo(starttls_cfg(TlsPolicy::StartTls));
    t.auto = false;
    t.send_raw(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.example>\r\n");
    t.expect("220 2.0.0 Ready to start TLS");
    t.expect_silence();
    // Even if the shell hands over more plaintext before the handshake, it is dropped.
    t.send_raw(b"NOOP\r\n");
    t.expect_silence();
    t.answer_pending();
    t.expect_silence();
    // The HELO was forgotten: the injected commands never ran, MAIL needs EHLO first.
    t.send("MAIL FROM:<a@b.example>");
    t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
    t.send("EHLO client.example.net");
    let ehlo = t.next_reply();
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        t.logs()
            .iter()
            .any(|l| l == "123456789abcdef0 smtp tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256")
    );
}

#[test]
fn starttls_refusals() {
    let mut t = T::ehlo(config());
    t.send("STARTTLS");
    t.expect("503 5.5.1 Invalid command: Command not supported");
    let mut t = T::ehlo(starttls_cfg(TlsPolicy::StartTls));
    t.send("STARTTLS now");
    t.expect("501 5.5.4 Invalid command arguments: No parameters allowed");
    t.send("MAIL FROM:<a@b.example>");
    t.expect("250 *");
    t.send("STARTTLS");
    t.expect("503 5.5.1 Invalid command: Command not allowed at this point.");
    t.send("RSET");
    t.expect("250 *");
    t.send("STARTTLS");
    t.expect("220 *");
    t.send("EHLO again.example");
    t.expect("250-*");
    t.send("STARTTLS");
    t.expect("503 5.5.1 Invalid command: Channel already secured");
    assert_eq!(t.starttls_count, 1);
}

#[test]
fn tls_require_refuses_mail_before_starttls() {
    let mut t = T::ehlo(starttls_cfg(TlsPolicy::StartTlsRequired));
    t.send("MAIL FROM:<a@b.example>");
    t.expect("530 5.7.0 Must issue a STARTTLS command first");
    t.send("STARTTLS");
    t.expect("220 *");
    t.send("EHLO client.example.net");
    t.expect("250-*");
    t.send("MAIL FROM:<a@b.example>");
    t.expect("250 2.0.0 Ok");
}

#[test]
fn a_failed_handshake_ends_the_session() {
    let mut t = T::ehlo(starttls_cfg(TlsPolicy::StartTls));
    t.auto = false;
    t.send("STARTTLS");
    t.expect("220 *");
    t.pending.clear();
    t.event(Event::TlsFailed);
    assert!(t.closed);
    assert!(
        t.logs()
            .last()
            .unwrap()
            .ends_with("smtp disconnected reason=tls-accept-failed")
    );
}

#[test]
fn implicit_tls_logs_first_and_offers_no_starttls() {
    let mut cfg = starttls_cfg(TlsPolicy::Implicit);
    cfg.auth = AuthPolicy::Required;
    let mut info = tls13();
    info.client_cert = Some(ClientCert {
        verified: true,
        fingerprint: "SHA256:00ff".into(),
    });
    let mut t = T::with_peer(cfg, "192.0.2.7:1".parse().unwrap(), Some(info));
    t.expect("220 *");
    assert!(t.logs()[1].ends_with("smtp tls ciphers=TLSv1.3:TLS_AES_256_GCM_SHA384:256 verify=ok"));
    assert!(
        t.logs()[2].ends_with("smtp cert-check result=\"verified\" fingerprint=\"SHA256:00ff\"")
    );
    t.send("EHLO c.example");
    let ehlo = t.next_reply();
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    t.send("STARTTLS");
    t.expect("503 5.5.1 Invalid command: Channel already secured");
}
