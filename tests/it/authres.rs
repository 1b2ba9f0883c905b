//! Inbound authentication results through the real `fugu smtpd`: each test runs in its
//! own network namespace, where clients connect from 192.0.2.2 (the address example.org's
//! SPF record allows) or 192.0.2.3 (one it does not) — not from loopback addresses, whose
//! mail fugu does not check — the records are served by a loopback unbound that fugu's `resolver` points at,
//! DKIM signatures are made by an independent signer (Python dkimpy), and the stored
//! message's `Authentication-Results` is read from the maildir it was delivered to.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone, dkim_test_key, dkim_test_public_key, txt};
use fugu_tests::fugu::{Root, smtpd_command, whoami};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::netns;
use fugu_tests::process::Child;
use fugu_tests::smtp::Client;

const ALLOWED: &str = "192.0.2.2";
const OTHER: &str = "192.0.2.3";

/// example.org: SPF `-all` for 192.0.2.2, DMARC `p=reject`, the s2026 DKIM key;
/// soft.example.org: SPF `~all`; nospf.example.org: no SPF record at all.
fn zones() -> Vec<Zone> {
    let key = dkim_test_public_key("rsa2048.pub.b64");
    vec![Zone::new(
        "example.org",
        &format!(
            "@ IN TXT \"v=spf1 ip4:{ALLOWED} -all\"\n\
             _dmarc IN TXT \"v=DMARC1; p=reject\"\n\
             s2026._domainkey IN TXT {}\n\
             soft IN TXT \"v=spf1 ip4:{ALLOWED} ~all\"\n\
             nospf IN A 192.0.2.1\n",
            txt(&format!("v=DKIM1; k=rsa; p={key}"))
        ),
    )]
}

struct Mx {
    root: Root,
    port: u16,
    _dns: Unbound,
    smtpd: Child,
}

/// `fugu smtpd` named mx.test.example, delivering every recipient into
/// `mail/<user>/`; `extra` adds configuration lines.
fn start(extra: &str) -> Mx {
    for ip in [ALLOWED, OTHER] {
        netns::add_loopback(ip.parse().unwrap());
    }
    let root = Root::new();
    let dns = Unbound::start(&root.join("dns"), free_port(), &zones());
    let port = free_port();
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "resolver {}\n{extra}\
             listen on 127.0.0.1 port {port} hostname mx.test.example\n\
             action \"inbox\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"@example.net\" = \"{}\" }}\n\
             match from any for domain \"example.net\" action \"inbox\"\n",
            dns.addr(),
            root.join("mail").display(),
            whoami(),
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let smtpd = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    wait_for_port(
        SocketAddr::new("127.0.0.1".parse().unwrap(), port),
        Duration::from_secs(20),
    );
    Mx {
        root,
        port,
        _dns: dns,
        smtpd,
    }
}

/// Connects from `src` (an address of the namespace's `lo`, bound before connecting).
fn connect_from(src: &str, port: u16) -> Client {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))?;
            s.connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port))
                .await
        })
        .unwrap()
        .into_std()
        .unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    Client::over(Box::new(stream))
}

/// One SMTP transaction from `src`; returns the reply to the end of DATA.
fn send(mx: &Mx, src: &str, mail_from: &str, rcpt: &str, message: &str) -> String {
    let mut c = connect_from(src, mx.port);
    c.expect("220 *");
    c.send("EHLO client.example.org");
    c.expect("250*");
    c.send(&format!("MAIL FROM:<{mail_from}>"));
    c.expect("250 *");
    c.send(&format!("RCPT TO:<{rcpt}>"));
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    let body = message.replace("\r\n", "\n").replace('\n', "\r\n");
    c.send_raw(body.as_bytes());
    c.send_raw(b".\r\n");
    let end = c.reply().join("\n");
    c.send("QUIT");
    end
}

fn message(from: &str, subject: &str, extra_headers: &str) -> String {
    format!(
        "{extra_headers}From: {from}\nTo: bob@example.net\nSubject: {subject}\n\
         Date: Sat, 21 Nov 2026 03:00:00 +0000\nMessage-ID: <{subject}@example.org>\n\n\
         Hello Bob.\n"
    )
}

/// The message delivered to `user`, waiting for it.
fn delivered(mx: &Mx, user: &str) -> String {
    let dir = mx.root.join("mail").join(user).join("new");
    let start = Instant::now();
    loop {
        if let Some(e) = std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
        {
            // Maildir stores LF line ends; compare in that form whatever the store does.
            return std::fs::read_to_string(e.path())
                .unwrap()
                .replace("\r\n", "\n");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing delivered to {user}; smtpd log:\n{}",
            mx.smtpd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Authentication-Results field(s) of a stored message, unfolded, one per line.
fn results(stored: &str) -> Vec<String> {
    let head = stored.split("\n\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter(|f| {
            f.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .collect()
}

/// dkimpy signs `message` for example.org with the s2026 RSA key.
fn dkim_sign(message: &str) -> String {
    const SIGN: &str = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
key = open(sys.argv[1], 'rb').read()
sig = dkim.sign(msg, b's2026', b'example.org', key,
                include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
sys.stdout.buffer.write(sig + msg)
"#;
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SIGN])
        .arg(dkim_test_key("rsa2048.key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let crlf = message.replace("\r\n", "\n").replace('\n', "\r\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(crlf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy failed (apt-get install python3-dkim):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn spf_pass_fail_softfail_and_none_are_recorded_for_messages_from_test_hosts() {
    netns::run(|| {
        let mx = start("");
        let m = message("Alice <alice@example.org>", "pass", "");
        assert!(
            send(&mx, ALLOWED, "alice@example.org", "pass@example.net", &m).starts_with("250 ")
        );
        assert_eq!(
            results(&delivered(&mx, "pass")),
            [
                "Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=alice@example.org; \
              dkim=none; dmarc=pass (p=reject dis=none) header.from=example.org"
            ]
        );

        // DMARC fails (p=reject) but `authres dmarc reject` is not set: the default only
        // marks the message as junk, it is accepted.
        let m = message("Alice <alice@example.org>", "fail", "");
        assert!(send(&mx, OTHER, "alice@example.org", "fail@example.net", &m).starts_with("250 "));
        let stored = delivered(&mx, "fail");
        assert_eq!(
            results(&stored),
            [
                "Authentication-Results: mx.test.example; spf=fail smtp.mailfrom=alice@example.org; \
              dkim=none; dmarc=fail (p=reject dis=quarantine) header.from=example.org"
            ]
        );
        assert!(stored.contains("\nX-Spam-Flag: YES\n"), "{stored}");

        let m = message("Carol <carol@soft.example.org>", "softfail", "");
        assert!(
            send(&mx, OTHER, "carol@soft.example.org", "soft@example.net", &m).starts_with("250 ")
        );
        let stored = delivered(&mx, "soft");
        assert_eq!(
            results(&stored),
            // soft.example.org has no DMARC record: its organisational domain's applies,
            // `sp` defaulting to `p`.
            [
                "Authentication-Results: mx.test.example; spf=softfail smtp.mailfrom=carol@soft.example.org; \
              dkim=none; dmarc=fail (p=reject dis=quarantine) header.from=soft.example.org"
            ]
        );

        let m = message("Dan <dan@nospf.example.org>", "none", "");
        assert!(
            send(&mx, OTHER, "dan@nospf.example.org", "none@example.net", &m).starts_with("250 ")
        );
        assert_eq!(
            results(&delivered(&mx, "none")),
            [
                "Authentication-Results: mx.test.example; spf=none smtp.mailfrom=dan@nospf.example.org; \
              dkim=none; dmarc=fail (p=reject dis=quarantine) header.from=nospf.example.org"
            ]
        );
    })
}

#[test]
fn dkim_pass_and_fail_are_recorded_and_a_passing_signature_satisfies_dmarc() {
    netns::run(|| {
        let mx = start("authres dmarc reject\n");
        // From a host SPF does not allow: DMARC can only pass through the signature.
        let signed = dkim_sign(&message("Alice <alice@example.org>", "signed", ""));
        let end = send(
            &mx,
            OTHER,
            "alice@example.org",
            "signed@example.net",
            &signed,
        );
        assert!(end.starts_with("250 "), "{end}");
        assert_eq!(
            results(&delivered(&mx, "signed")),
            [
                "Authentication-Results: mx.test.example; spf=fail smtp.mailfrom=alice@example.org; \
              dkim=pass header.d=example.org header.s=s2026 header.a=rsa-sha256; \
              dmarc=pass (p=reject dis=none) header.from=example.org"
            ]
        );

        // The body changed after signing; SPF passes, so DMARC still does.
        let tampered = signed.replace("Hello Bob.", "Hello Bob, send money.");
        let end = send(
            &mx,
            ALLOWED,
            "alice@example.org",
            "tampered@example.net",
            &tampered,
        );
        assert!(end.starts_with("250 "), "{end}");
        let ar = results(&delivered(&mx, "tampered"));
        assert_eq!(ar.len(), 1);
        assert!(ar[0].contains("; dkim=fail ("), "{ar:?}");
        assert!(
            ar[0].ends_with(
                ") header.d=example.org header.s=s2026 header.a=rsa-sha256; \
                 dmarc=pass (p=reject dis=none) header.from=example.org"
            ),
            "{ar:?}"
        );
    })
}

#[test]
fn dmarc_reject_refuses_at_end_of_data_only_when_enabled() {
    netns::run(|| {
        let mx = start("authres dmarc reject\n");
        let m = message("Alice <alice@example.org>", "forged", "");
        let end = send(&mx, OTHER, "alice@example.org", "forged@example.net", &m);
        assert_eq!(
            end,
            "550 5.7.1 Message rejected: DMARC policy of example.org says reject"
        );
        // A legitimate message in the same configuration is accepted.
        let m = message("Alice <alice@example.org>", "legit", "");
        assert!(
            send(&mx, ALLOWED, "alice@example.org", "legit@example.net", &m).starts_with("250 ")
        );
        delivered(&mx, "legit");
        assert!(!mx.root.join("mail/forged").exists());

        // The default configuration accepts the same forged message (and marks it).
        let default = start("");
        let m = message("Alice <alice@example.org>", "forged", "");
        assert!(
            send(
                &default,
                OTHER,
                "alice@example.org",
                "forged@example.net",
                &m
            )
            .starts_with("250 ")
        );
        assert!(delivered(&default, "forged").contains("\nX-Spam-Flag: YES\n"));
    })
}

#[test]
fn forged_results_with_our_authserv_id_are_removed_and_others_kept() {
    netns::run(|| {
        let mx = start("");
        let forged = "Authentication-Results: mx.test.example;\n\tdkim=pass header.d=bank.example\n\
                      Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@other.example\n";
        let m = message("Alice <alice@example.org>", "forgery", forged);
        assert!(
            send(&mx, ALLOWED, "alice@example.org", "forgery@example.net", &m).starts_with("250 ")
        );
        let stored = delivered(&mx, "forgery");
        assert_eq!(
            results(&stored),
            [
                "Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=alice@example.org; \
                 dkim=none; dmarc=pass (p=reject dis=none) header.from=example.org",
                "Authentication-Results: relay.other.example; spf=pass smtp.mailfrom=x@other.example",
            ]
        );
        assert!(!stored.contains("bank.example"), "{stored}");
    })
}

#[test]
fn authres_off_adds_and_removes_nothing() {
    netns::run(|| {
        let mx = start("authres off\n");
        let forged = "Authentication-Results: mx.test.example; dkim=pass header.d=bank.example\n";
        let m = message("Alice <alice@example.org>", "off", forged);
        assert!(send(&mx, OTHER, "alice@example.org", "off@example.net", &m).starts_with("250 "));
        // With the checks off nothing is added and nothing removed.
        assert_eq!(
            results(&delivered(&mx, "off")),
            ["Authentication-Results: mx.test.example; dkim=pass header.d=bank.example"]
        );
    })
}

#[test]
fn a_signed_message_over_the_buffer_limit_is_stored_whole_with_dkim_unverified() {
    netns::run(|| {
        let mx = start("authres dmarc reject\n");
        // 5 MiB of body: over the 4 MiB the checks hold in memory.
        let line = "x".repeat(76);
        let body: String = std::iter::repeat_n(format!("{line}\n"), 5 * 1024 * 1024 / 77).collect();
        let m = format!(
            "{}{body}",
            message("Alice <alice@example.org>", "large", "")
        );
        let signed = dkim_sign(&m);
        // SPF fails and the signature is not checked: DMARC fails but is not acted on.
        let end = send(
            &mx,
            OTHER,
            "alice@example.org",
            "large@example.net",
            &signed,
        );
        assert!(end.starts_with("250 "), "{end}");
        let stored = delivered(&mx, "large");
        assert_eq!(
            results(&stored),
            [
                "Authentication-Results: mx.test.example; spf=fail smtp.mailfrom=alice@example.org; \
              dkim=neutral (message too large to verify); \
              dmarc=fail (p=reject dis=none) header.from=example.org"
            ]
        );
        assert!(
            stored.ends_with(&format!("{line}\n")),
            "the body arrived whole"
        );
        assert_eq!(stored.matches(&line).count(), 5 * 1024 * 1024 / 77);
    })
}
