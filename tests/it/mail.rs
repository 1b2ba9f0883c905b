//! Mail end to end on the appliance path: users in SQLite, files rendered by
//! `fugu provision`, real Dovecot started from them, `fugu smtpd` from the generated
//! smtpd.conf, real SMTP clients sending, and an IMAP login finding the mail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fugu_tests::dovecot::{Dovecot, Endpoints};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::smtp::Client;
use fugu_tests::{Child, require_program, wait_for_port};

struct Appliance {
    root: Root,
    smtp: SocketAddr,
    dovecot: Dovecot,
    _smtpd: Child,
}

/// A domain with alice, an alias and a catch-all, provisioned and running.
fn appliance() -> Appliance {
    let root = Root::new();
    root.set_up_vmail();
    let pw = root.write("pw", "correct horse battery\n");
    root.fugu(&["domain", "add", "example.org"]).success();
    root.fugu(&["domain", "add", "example.net"]).success();
    root.fugu(&[
        "user",
        "add",
        "alice@example.org",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .success();
    root.fugu(&[
        "alias",
        "add",
        "postmaster@example.org",
        "alice@example.org",
    ])
    .success();
    root.fugu(&["alias", "add", "@example.net", "alice@example.org"])
        .success();

    let (smtp, imap) = root.provision_on_loopback();

    let dovecot = Dovecot::start_with_config(
        &root.join("generated/dovecot/dovecot.conf"),
        Endpoints {
            imap: Some(SocketAddr::from(([127, 0, 0, 1], imap))),
            lmtp_tcp: None,
            lmtp_socket: Some(root.join("run/dovecot/lmtp")),
        },
    );
    let cmd = smtpd_command(&root.join("generated/smtpd.conf"), &root.join("spool"));
    let smtpd = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    let smtp = SocketAddr::from(([127, 0, 0, 1], smtp));
    wait_for_port(smtp, Duration::from_secs(10));
    Appliance {
        root,
        smtp,
        dovecot,
        _smtpd: smtpd,
    }
}

fn swaks(to: &str, server: SocketAddr, body: &str) {
    let out = std::process::Command::new(require_program("swaks", "swaks"))
        .args([
            "--server",
            &server.to_string(),
            "--from",
            "sender@remote.example",
            "--to",
            to,
            "--body",
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swaks to {to} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn smtplib(to: &str, server: SocketAddr, body: &str) {
    let script = "import smtplib, sys\n\
        s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))\n\
        s.ehlo('client.remote.example')\n\
        s.sendmail('sender@remote.example', [sys.argv[3]], 'Subject: from smtplib\\r\\n\\r\\n' + sys.argv[4] + '\\r\\n')\n\
        s.quit()\n";
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &server.ip().to_string(),
            &server.port().to_string(),
            to,
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `n` messages are in alice's INBOX, fetched over IMAP with her password.
fn inbox(a: &Appliance, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let msgs = a
            .dovecot
            .imap_fetch("alice@example.org", "correct horse battery", "INBOX");
        if msgs.len() >= n || start.elapsed() > Duration::from_secs(20) {
            let smtpd_log = std::fs::read_to_string(a.root.join("smtpd.log")).unwrap_or_default();
            assert_eq!(
                msgs.len(),
                n,
                "smtpd log:\n{smtpd_log}\ndovecot log:\n{}",
                a.dovecot.log()
            );
            return msgs
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn mail_to_a_user_alias_and_catch_all_reaches_the_imap_inbox() {
    let a = appliance();
    swaks("alice@example.org", a.smtp, "one: direct");
    swaks("postmaster@example.org", a.smtp, "two: alias");
    swaks("whoever@example.net", a.smtp, "three: catch-all");
    smtplib("alice@example.org", a.smtp, "four: smtplib");
    let msgs = inbox(&a, 4);
    for body in [
        "one: direct",
        "two: alias",
        "three: catch-all",
        "four: smtplib",
    ] {
        assert!(
            msgs.iter().any(|m| m.contains(body)),
            "no message with {body:?}"
        );
    }
    // Dovecot adds its own Return-Path and Delivered-To over LMTP; ours is the Received.
    let alias = msgs.iter().find(|m| m.contains("two: alias")).unwrap();
    assert!(alias.contains("Delivered-To: alice@example.org"), "{alias}");
    assert!(alias.contains("by mx.example.org"), "{alias}");
}

#[test]
fn unknown_users_are_refused_at_rcpt_and_nothing_is_queued() {
    let a = appliance();
    let mut c = Client::connect(a.smtp);
    c.expect("220 *");
    c.send("EHLO client.remote.example");
    c.expect("250 *");
    c.send("MAIL FROM:<sender@remote.example>");
    c.expect("250 *");
    c.send("RCPT TO:<nobody@example.org>");
    c.expect("550 5.1.1 *");
    c.send("RCPT TO:<alice@example.org>");
    c.expect("250 *");
    c.send("QUIT");
    c.expect("221 *");
    let queued = std::fs::read_dir(a.root.join("spool/queue"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(queued, 0);
}
