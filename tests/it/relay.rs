//! Outbound relay end to end: users submit on 587 (STARTTLS) and 465 (implicit TLS) with
//! swaks, the real `fugu smtpd` finds the recipient domain's MX through unbound and hands
//! the mail to a real Postfix over TLS; deferrals are retried, refusals bounce with the
//! remote text, null MX bounces at once; unauthenticated relaying is refused in every
//! classic disguise; smarthosts over `smtp+tls://` with AUTH and `smtps://`.
//!
//! Relay by MX always dials port 25 and resolvers ask port 53, so every test runs in its
//! own network namespace (`fugu_tests::netns`), with the remote MXs on 127.0.0.N.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::net::wait_for_port;
use fugu_tests::netns;
use fugu_tests::peer::Peer;
use fugu_tests::postfix::{Options, Postfix, ca_signed, self_signed};
use fugu_tests::process::{Child, require_program};
use fugu_tests::smtp::Client;

const PASSWORD: &str = "correct horse";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The zones every test serves: `remote.test` (Postfix on 127.0.0.5), `retry.test`
/// (a scripted peer on 127.0.0.6), `nullmx.test` (RFC 7505), `brokentls.test` (a peer
/// whose STARTTLS fails, 127.0.0.8), `smarthost.test` (127.0.0.7).
fn zones() -> Vec<Zone> {
    vec![
        Zone::new(
            "remote.test",
            "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.5\n",
        ),
        Zone::new(
            "retry.test",
            "@ IN MX 10 mx.retry.test.\nmx IN A 127.0.0.6\n",
        ),
        Zone::new("nullmx.test", "@ IN MX 0 .\n"),
        Zone::new(
            "brokentls.test",
            "@ IN MX 10 mx.brokentls.test.\nmx IN A 127.0.0.8\n",
        ),
        Zone::new("smarthost.test", "@ IN A 127.0.0.7\n"),
    ]
}

/// A `fugu smtpd` for `fugu.test`: plain 25, submission 587 (tls-require + auth),
/// 465 (smtps + auth); local users alice and postmaster in maildirs; everything from
/// authenticated users goes out through `out_action`.
struct Fugu {
    root: Root,
    child: Child,
}

impl Fugu {
    fn start(
        root: Root,
        listen: &str,
        out_action: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Fugu {
        let r = root.path().display().to_string();
        self_signed(
            "mx.fugu.test",
            &root.join("cert.pem"),
            &root.join("key.pem"),
        );
        let hash = root
            .fugu_stdin(&["encrypt", "--scheme", "bcrypt"], &format!("{PASSWORD}\n"))
            .success()
            .trim()
            .to_string();
        root.write("creds", &format!("alice@fugu.test {hash}\n"));
        let conf = root.write(
            "smtpd.conf",
            &format!(
                "pki mx.fugu.test cert \"{r}/cert.pem\"\n\
                 pki mx.fugu.test key \"{r}/key.pem\"\n\
                 table creds file:{r}/creds\n\
                 table locals {{ alice@fugu.test, postmaster@fugu.test }}\n\
                 table users {{ alice = \"0:0:{r}/mail/alice\", postmaster = \"0:0:{r}/mail/postmaster\" }}\n\
                 {extra}\
                 resolver 127.0.0.1\n\
                 {listen}\
                 action \"local\" maildir \"{r}/mail/%{{rcpt.user}}\" userbase <users>\n\
                 action \"out\" {out_action}\n\
                 match from any for domain \"fugu.test\" rcpt-to <locals> action \"local\"\n\
                 match from local for domain \"fugu.test\" action \"local\"\n\
                 match from auth for any action \"out\"\n"
            ),
        );
        let mut cmd = smtpd_command(&conf, &root.join("spool"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
        Fugu { root, child }
    }

    /// The usual listeners on 127.0.0.1.
    fn submission(out_action: &str, extra: &str, env: &[(&str, &str)]) -> Fugu {
        let root = Root::new();
        // Postfix's unprivileged processes walk into the test root.
        chmod_755(root.path());
        let f = Fugu::start(
            root,
            "listen on 127.0.0.1 port 25\n\
             listen on 127.0.0.1 port 587 tls-require pki mx.fugu.test auth <creds>\n\
             listen on 127.0.0.1 port 465 smtps pki mx.fugu.test auth <creds>\n",
            out_action,
            extra,
            env,
        );
        for port in [25, 587, 465] {
            wait_for_port(
                SocketAddr::new(ip("127.0.0.1"), port),
                Duration::from_secs(20),
            );
        }
        f
    }

    fn log(&self) -> String {
        self.child.log()
    }

    /// Messages in a local user's maildir.
    fn mailbox(&self, user: &str) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.root.join(format!("mail/{user}/{sub}"))) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    fn wait_mailbox(&self, user: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let m = self.mailbox(user);
            if !m.is_empty() {
                return m;
            }
            assert!(
                start.elapsed() < timeout,
                "nothing arrived for {user}; smtpd log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn chmod_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn dns(root: &Path) -> Unbound {
    Unbound::start_on(&root.join("unbound"), ip("127.0.0.1"), 53, &zones())
}

fn remote_postfix(dir: PathBuf) -> Postfix {
    Postfix::start(
        &dir,
        ip("127.0.0.5"),
        &Options {
            hostname: "mx.remote.test".into(),
            domains: vec!["remote.test".into()],
            refuse: vec![(
                "nobody@remote.test".into(),
                "550 5.1.1 <nobody@remote.test>: no such mailbox here".into(),
            )],
        },
    )
}

/// Submits with swaks; `tls` is `--tls` (STARTTLS) or `--tlsc` (TLS on connect).
fn swaks(port: u16, tls: &str, auth: &str, to: &str, subject: &str) -> std::process::Output {
    Command::new(require_program("swaks", "swaks"))
        .args(["--server", &format!("127.0.0.1:{port}"), tls])
        .args([
            "--auth",
            auth,
            "--auth-user",
            "alice@fugu.test",
            "--auth-password",
            PASSWORD,
        ])
        .args([
            "--helo",
            "client.test",
            "--from",
            "alice@fugu.test",
            "--to",
            to,
        ])
        .args([
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "Hello from fugu.",
        ])
        .output()
        .unwrap()
}

#[track_caller]
fn assert_swaks_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "swaks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(msgs: &'a [String], needle: &str) -> &'a str {
    msgs.iter()
        .find(|m| m.contains(needle))
        .unwrap_or_else(|| panic!("no message contains {needle:?}: {msgs:#?}"))
}

#[test]
fn submission_on_587_and_465_reaches_a_real_postfix_mx_over_tls() {
    netns::run(|| {
        let fugu = Fugu::submission("relay helo mx.fugu.test", "", &[]);
        let _dns = dns(fugu.root.path());
        let postfix = remote_postfix(fugu.root.join("postfix"));

        assert_swaks_ok(&swaks(587, "--tls", "PLAIN", "bob@remote.test", "via 587"));
        assert_swaks_ok(&swaks(465, "--tlsc", "LOGIN", "bob@remote.test", "via 465"));

        let msgs = postfix.wait_for(2, Duration::from_secs(30));
        for subject in ["via 587", "via 465"] {
            let m = find(&msgs, &format!("Subject: {subject}"));
            assert!(m.contains("Delivered-To: bob@remote.test"), "{m}");
            // Postfix's own Received line for the hop from fugu says TLS was used.
            assert!(
                m.contains("by mx.remote.test (Postfix)") && m.contains("(using TLSv1."),
                "Postfix did not receive over TLS:\n{m}"
            );
            assert!(m.contains("Return-Path: <alice@fugu.test>"), "{m}");
        }
        let log = postfix.log();
        assert!(
            log.contains("Anonymous TLS connection established from"),
            "{log}"
        );
        let log = fugu.log();
        assert!(
            log.contains("mta delivery") && log.contains("result=\"Ok\""),
            "{log}"
        );
        assert!(
            log.contains("relay=\"127.0.0.5 (mx.remote.test)\""),
            "{log}"
        );
    });
}

#[test]
fn plain_relay_delivers_over_tls_to_an_mx_with_a_self_signed_certificate() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let _dns = dns(fugu.root.path());
        let postfix = remote_postfix(fugu.root.join("postfix"));
        assert_swaks_ok(&swaks(
            587,
            "--tls",
            "PLAIN",
            "carol@remote.test",
            "self-signed",
        ));
        let msgs = postfix.wait_for(1, Duration::from_secs(30));
        assert!(find(&msgs, "Subject: self-signed").contains("(using TLSv1."));
        // The unverifiable certificate is logged, not fatal.
        let log = fugu.log();
        assert!(
            log.contains("certificate of mx.remote.test not verified"),
            "no verification warning in:\n{log}"
        );
    });
}

#[test]
fn relay_with_tls_verification_defers_an_mx_with_a_self_signed_certificate() {
    netns::run(|| {
        let fugu = Fugu::submission("relay tls", "", &[]);
        let _dns = dns(fugu.root.path());
        let postfix = remote_postfix(fugu.root.join("postfix"));
        assert_swaks_ok(&swaks(
            587,
            "--tls",
            "PLAIN",
            "carol@remote.test",
            "must verify",
        ));
        wait_log(&fugu, "result=\"TempFail\"");
        let log = fugu.log();
        assert!(log.contains("TLS handshake failed"), "{log}");
        assert!(postfix.messages().is_empty());
    });
}

fn wait_log(fugu: &Fugu, needle: &str) {
    fugu_tests::wait_for_text(|| fugu.log(), needle);
}

#[test]
fn a_451_is_retried_and_the_message_arrives() {
    netns::run(|| {
        // The first retry comes after ~1 s instead of 5 minutes.
        let fugu = Fugu::submission("relay", "", &[("FUGU_RETRY_BASE_SECS", "1")]);
        let _dns = dns(fugu.root.path());
        let peer = Peer::start(
            SocketAddr::new(ip("127.0.0.6"), 25),
            Box::new(|n, _| {
                if n == 0 {
                    "451 4.7.1 greylisted, come back later".into()
                } else {
                    "250 2.1.5 Ok".into()
                }
            }),
        );
        assert_swaks_ok(&swaks(587, "--tls", "PLAIN", "dave@retry.test", "retry me"));
        let start = Instant::now();
        while peer.received().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "never delivered; peer:\n{}\nsmtpd:\n{}",
                peer.transcript(),
                fugu.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let got = peer.received();
        assert_eq!(got[0].rcpts, vec!["dave@retry.test".to_string()]);
        assert!(got[0].data.contains("Subject: retry me"));
        let log = fugu.log();
        assert!(
            log.contains("result=\"TempFail\" stat=\"451 4.7.1 greylisted, come back later\""),
            "{log}"
        );
        assert!(
            fugu.mailbox("alice").is_empty(),
            "a deferral must not bounce"
        );
        // The retry came within the keepalive: the same connection carried it, after RSET.
        let t = peer.transcript();
        assert_eq!(t.matches("C: EHLO").count(), 1, "{t}");
        assert!(t.contains("C: RSET"), "{t}");
    });
}

#[test]
fn a_550_from_the_remote_bounces_to_the_sender_quoting_it() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let _dns = dns(fugu.root.path());
        let postfix = remote_postfix(fugu.root.join("postfix"));
        assert_swaks_ok(&swaks(
            587,
            "--tls",
            "PLAIN",
            "nobody@remote.test",
            "to nobody",
        ));
        let dsn = fugu.wait_mailbox("alice", Duration::from_secs(30));
        let dsn = &dsn[0];
        assert!(
            dsn.contains(
                "550 5.1.1 <nobody@remote.test>: Recipient address rejected: \
                 <nobody@remote.test>: no such mailbox here"
            ),
            "{dsn}"
        );
        assert!(
            dsn.contains("Final-Recipient: rfc822; nobody@remote.test"),
            "{dsn}"
        );
        assert!(dsn.contains("Action: failed"), "{dsn}");
        assert!(postfix.messages().is_empty());
    });
}

#[test]
fn a_null_mx_domain_bounces_at_once_with_556() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let _dns = dns(fugu.root.path());
        assert_swaks_ok(&swaks(587, "--tls", "PLAIN", "x@nullmx.test", "nowhere"));
        let dsn = fugu.wait_mailbox("alice", Duration::from_secs(20));
        assert!(
            dsn[0].contains("556 5.1.10 domain nullmx.test has a null MX"),
            "{}",
            dsn[0]
        );
    });
}

#[test]
fn opportunistic_tls_that_cannot_be_negotiated_falls_back_to_clear_text() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let _dns = dns(fugu.root.path());
        let peer = Peer::start_with(
            SocketAddr::new(ip("127.0.0.8"), 25),
            Box::new(|_, _| "250 2.1.5 Ok".into()),
            true,
        );
        assert!(peer.offers_broken_starttls());
        assert_swaks_ok(&swaks(
            587,
            "--tls",
            "PLAIN",
            "frank@brokentls.test",
            "clear",
        ));
        let start = Instant::now();
        while peer.received().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never delivered; peer:\n{}\nsmtpd:\n{}",
                peer.transcript(),
                fugu.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let t = peer.transcript();
        // First connection: STARTTLS, handshake garbage; second: no STARTTLS at all.
        assert_eq!(t.matches("C: STARTTLS").count(), 1, "{t}");
        assert_eq!(t.matches("C: EHLO").count(), 2, "{t}");
        assert!(
            fugu.log().contains("retrying without TLS"),
            "{}",
            fugu.log()
        );
    });
}

/// RCPT TO values that try to get an unauthenticated client's mail relayed.
const RELAY_TRICKS: &[&str] = &[
    "<user@remote.test>",
    "<user%remote.test@fugu.test>",
    "<user%remote.test>",
    "<@fugu.test:user@remote.test>",
    "<@fugu.test,@mx.fugu.test:user@remote.test>",
    "<remote.test!user>",
    "<remote.test!user@fugu.test>",
    "<\"user@remote.test\">",
    "<\"user@remote.test\"@fugu.test>",
    "<\"user%remote.test\"@fugu.test>",
    "<user@[127.0.0.5]>",
    "<user@[IPv6:::1]>",
    "<user@[127.0.0.1]>",
    "<user@127.0.0.5>",
    "<user@remote.test.>",
    "<USER@REMOTE.TEST>",
    "<user@Remote.Test>",
    "<postmaster@remote.test>",
    "<user@remote.test@fugu.test>",
    "<user@fugu.test@remote.test>",
    "<user@@remote.test>",
    "<user%fugu.test@remote.test>",
    "<\"user\"@remote.test>",
    "<user\\@remote.test@fugu.test>",
    "<user@localhost>",
    "<user@sub.fugu.test>",
    "<user@fugu.test.remote.test>",
    "<@remote.test:user@fugu.test>",
    "user@remote.test",
    " <user@remote.test>",
];

#[test]
fn unauthenticated_clients_cannot_relay_in_any_disguise() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let _dns = dns(fugu.root.path());
        let postfix = remote_postfix(fugu.root.join("postfix"));
        let mut accepted = Vec::new();
        for from in ["<someone@outside.test>", "<alice@fugu.test>", "<>"] {
            for trick in RELAY_TRICKS {
                let mut c = Client::connect(SocketAddr::new(ip("127.0.0.1"), 25));
                c.expect("220 *");
                c.send("EHLO client.test");
                c.expect("250 *");
                c.send(&format!("MAIL FROM:{from}"));
                c.expect("250 *");
                c.send(&format!("RCPT TO:{trick}"));
                let reply = c.reply();
                let last = reply.last().cloned().unwrap_or_default();
                if !last.starts_with('5') {
                    accepted.push(format!("{from} {trick}: {last}"));
                    // Push it all the way, so a leak would show at Postfix too.
                    c.send("DATA");
                    c.reply();
                    c.send_raw(b"Subject: relay trick\r\n\r\nx\r\n.\r\n");
                    c.reply();
                }
                c.send("QUIT");
            }
        }
        assert!(
            accepted.is_empty(),
            "{} relay attempts were not refused:\n{}",
            accepted.len(),
            accepted.join("\n")
        );
        // Whatever was queued has had time to leave: Postfix got nothing.
        std::thread::sleep(Duration::from_secs(2));
        assert!(postfix.messages().is_empty(), "{:#?}", postfix.messages());
    });
}

#[test]
fn submission_port_hides_auth_before_starttls_and_refuses_clear_text_auth() {
    netns::run(|| {
        let fugu = Fugu::submission("relay", "", &[]);
        let mut c = Client::connect(SocketAddr::new(ip("127.0.0.1"), 587));
        c.expect("220 *");
        c.send("EHLO client.test");
        let ehlo = c.expect("250 *");
        assert!(ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
        assert!(
            !ehlo.iter().any(|l| l.contains("AUTH")),
            "AUTH offered in clear text: {ehlo:?}"
        );
        // base64("\0alice@fugu.test\0correct horse")
        c.send("AUTH PLAIN AGFsaWNlQGZ1Z3UudGVzdABjb3JyZWN0IGhvcnNl");
        c.expect("5*");
        c.send("MAIL FROM:<alice@fugu.test>");
        c.expect("5*");
        drop(fugu);
    });
}

/// A second `fugu smtpd` as the smarthost on 127.0.0.7 (587 STARTTLS + auth, 465
/// smtps + auth), delivering everything it accepts to its maildir.
fn smarthost() -> Fugu {
    let root = Root::new();
    let r = root.path().display().to_string();
    std::fs::create_dir_all(root.join("tls")).unwrap();
    ca_signed("smarthost.test", &root.join("tls"));
    let hash = root
        .fugu_stdin(&["encrypt", "--scheme", "bcrypt"], "relaypw\n")
        .success()
        .trim()
        .to_string();
    root.write("sh-creds", &format!("relayuser {hash}\n"));
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "pki smarthost.test cert \"{r}/tls/cert.pem\"\n\
             pki smarthost.test key \"{r}/tls/key.pem\"\n\
             table creds file:{r}/sh-creds\n\
             listen on 127.0.0.7 port 587 tls-require pki smarthost.test auth <creds>\n\
             listen on 127.0.0.7 port 465 smtps pki smarthost.test auth <creds>\n\
             table users {{ erin = \"0:0:{r}/mail/erin\" }}\n\
             action \"keep\" maildir \"{r}/mail/%{{rcpt.user}}\" userbase <users>\n\
             match from auth for any action \"keep\"\n"
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let child = Child::spawn("smarthost smtpd", cmd, &root.join("smtpd.log"));
    for port in [587, 465] {
        wait_for_port(
            SocketAddr::new(ip("127.0.0.7"), port),
            Duration::from_secs(20),
        );
    }
    Fugu { root, child }
}

fn smarthost_case(url: &str, subject: &str) {
    let sh = smarthost();
    let ca = sh.root.join("tls/ca.pem");
    let fugu = Fugu::submission(
        &format!("relay host {url} auth <secrets> ca smarthost.test"),
        &format!(
            "table secrets {{ isp = \"relayuser:relaypw\" }}\n\
             ca smarthost.test cert \"{}\"\n",
            ca.display()
        ),
        &[],
    );
    let _dns = dns(fugu.root.path());
    assert_swaks_ok(&swaks(587, "--tls", "PLAIN", "erin@faraway.test", subject));
    let start = Instant::now();
    while sh.mailbox("erin").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing reached the smarthost; sender log:\n{}\nsmarthost log:\n{}",
            fugu.log(),
            sh.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = sh.mailbox("erin");
    assert!(
        got[0].contains(&format!("Subject: {subject}")),
        "{}",
        got[0]
    );
    // The smarthost's Received line: fugu authenticated over TLS.
    assert!(got[0].contains("ESMTPSA"), "{}", got[0]);
}

#[test]
fn smarthost_over_smtp_tls_with_auth_and_a_configured_ca() {
    netns::run(|| smarthost_case("smtp+tls://isp@smarthost.test:587", "via smarthost 587"));
}

#[test]
fn smarthost_over_smtps_with_auth() {
    netns::run(|| smarthost_case("smtps://isp@smarthost.test", "via smarthost 465"));
}
