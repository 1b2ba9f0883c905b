//! DKIM signing end to end: a user submits on 587 with STARTTLS and AUTH through the
//! real `fugu smtpd`, whose `relay … dkim-sign <dkimkeys>` action signs with the sender
//! domain's RSA and Ed25519 selectors; an independent verifier (Python dkimpy) checks
//! the message as the next hop got it, against the TXT records a loopback unbound
//! publishes. The next hop is a scripted SMTP peer used as smarthost (what went out,
//! byte for byte) and, in its own network namespace, a real Postfix MX found by MX
//! lookup (what a receiver stores).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fugu_tests::dns::{Unbound, Zone, dkim_test_key, dkim_test_public_key, txt};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::netns;
use fugu_tests::peer::Peer;
use fugu_tests::postfix::{Options, Postfix, self_signed};
use fugu_tests::process::{Child, require_program};

const PASSWORD: &str = "correct horse";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `example.org`, the sender's domain, with both DKIM selectors.
fn zones() -> Vec<Zone> {
    let rsa = format!(
        "v=DKIM1; k=rsa; p={}",
        dkim_test_public_key("rsa2048.pub.b64")
    );
    let ed = format!(
        "v=DKIM1; k=ed25519; p={}",
        dkim_test_public_key("ed25519.pub.b64")
    );
    vec![Zone::new(
        "example.org",
        &format!(
            "s2026._domainkey IN TXT {}\ne2026._domainkey IN TXT {}\n",
            txt(&rsa),
            txt(&ed)
        ),
    )]
}

/// `fugu smtpd` for example.org with submission on 587 and a signing relay action, its
/// key table written the way the provisioner writes `dkim/keys`.
/// `relay` is the action's relay clause, `extra` more configuration lines.
fn start_fugu(root: &Root, submission: u16, relay: &str, extra: &str) -> Child {
    let r = root.path().display().to_string();
    self_signed(
        "mx.example.org",
        &root.join("cert.pem"),
        &root.join("key.pem"),
    );
    let hash = root
        .fugu_stdin(&["encrypt", "--scheme", "bcrypt"], &format!("{PASSWORD}\n"))
        .success()
        .trim()
        .to_string();
    root.write("creds", &format!("alice@example.org {hash}\n"));
    std::fs::create_dir_all(root.join("dkim/example.org")).unwrap();
    for (from, to) in [("rsa2048.key", "s2026.key"), ("ed25519.key", "e2026.key")] {
        std::fs::copy(dkim_test_key(from), root.join("dkim/example.org").join(to)).unwrap();
    }
    root.write(
        "dkim/keys",
        &format!(
            "example.org e2026:ed25519-sha256:{r}/dkim/example.org/e2026.key,s2026:rsa-sha256:{r}/dkim/example.org/s2026.key\n"
        ),
    );
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "pki mx.example.org cert \"{r}/cert.pem\"\n\
             pki mx.example.org key \"{r}/key.pem\"\n\
             table creds file:{r}/creds\n\
             table dkimkeys file:{r}/dkim/keys\n\
             listen on 127.0.0.1 port {submission} tls-require pki mx.example.org auth <creds>\n\
             {extra}\
             action \"out\" {relay} helo mx.example.org dkim-sign <dkimkeys>\n\
             match from auth for any action \"out\"\n"
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    wait_for_port(
        SocketAddr::new(ip("127.0.0.1"), submission),
        Duration::from_secs(20),
    );
    child
}

/// Submits on 587 with STARTTLS and AUTH PLAIN; `data` replaces swaks' own message.
fn submit(port: u16, extra: &[&str]) {
    let out = Command::new(require_program("swaks", "swaks"))
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--tls",
            "--auth",
            "PLAIN",
        ])
        .args([
            "--auth-user",
            "alice@example.org",
            "--auth-password",
            PASSWORD,
        ])
        .args([
            "--helo",
            "client.example.org",
            "--from",
            "alice@example.org",
        ])
        .args(["--to", "bob@example.net"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swaks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dkimpy's verdict on every DKIM-Signature of the message in `path`, one
/// `<algorithm> <selector> <pass|fail>` line each, keys looked up with dig(1) in the
/// test's unbound (its port is the second argument).
const VERIFY: &str = r#"
import re, subprocess, sys, dkim
msg = open(sys.argv[1], 'rb').read()
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    out = subprocess.run(['dig', '+short', '@127.0.0.1', '-p', sys.argv[2], name.rstrip('.'), 'TXT'],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        return ''.join(re.findall(r'"((?:[^"\\]|\\.)*)"', line)).encode()
    return None
d = dkim.DKIM(msg)
sigs = [v for (k, v) in d.headers if k.lower() == b'dkim-signature']
for i, sig in enumerate(sigs):
    tags = dict((t.split(b'=', 1)[0].strip(), t.split(b'=', 1)[1].strip())
                for t in re.sub(rb'\s+', b'', sig).split(b';') if b'=' in t)
    ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
    print(tags[b'a'].decode(), tags[b's'].decode(), 'pass' if ok else 'fail')
"#;

fn dkimpy(message: &str, dir: &Path, dns: &Unbound) -> Vec<String> {
    let path = dir.join(format!("verify-{}.eml", message.len()));
    std::fs::write(&path, message.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    // The system Python, where Debian's python3-dkim lives.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", VERIFY])
        .arg(&path)
        .arg(dns.addr().port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dkimpy failed (apt-get install python3-dkim python3-nacl):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn submitted_mail_is_signed_with_rsa_and_ed25519_and_dkimpy_verifies_both() {
    let root = Root::new();
    let dns = Unbound::start(&root.join("unbound"), free_port(), &zones());
    let peer = Peer::start(
        SocketAddr::new(ip("127.0.0.1"), free_port()),
        Box::new(|_, _| "250 2.1.5 Ok".to_string()),
    );
    let submission = free_port();
    let fugu = start_fugu(
        &root,
        submission,
        &format!("relay host smtp+notls://{}", peer.addr),
        "",
    );

    // A message as a mail client writes it.
    submit(
        submission,
        &[
            "--header",
            "Subject: signed twice",
            "--body",
            "Hello from fugu.",
        ],
    );
    // One without Date and Message-ID: fugu adds them before signing.
    let bare = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: bare\r\n\r\nNo Date here.\r\n";
    submit(submission, &["--data", bare]);

    let start = std::time::Instant::now();
    while peer.received().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the smarthost got {} message(s); smtpd log:\n{}",
            peer.received().len(),
            fugu.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let msgs: Vec<String> = peer.received().into_iter().map(|r| r.data).collect();
    let find = |subject: &str| {
        msgs.iter()
            .find(|m| m.contains(subject))
            .unwrap_or_else(|| panic!("no {subject:?} in {msgs:#?}"))
            .clone()
    };
    let expected = ["ed25519-sha256 e2026 pass", "rsa-sha256 s2026 pass"];
    let twice = find("Subject: signed twice");
    assert_eq!(dkimpy(&twice, root.path(), &dns), expected, "{twice}");
    let bare = find("Subject: bare");
    assert_eq!(dkimpy(&bare, root.path(), &dns), expected, "{bare}");
    assert!(bare.contains("\r\nDate: "), "{bare}");
    assert!(bare.contains("\r\nMessage-ID: <"), "{bare}");
    // The signatures come first, above our Received line.
    assert!(bare.starts_with("DKIM-Signature: "), "{bare}");

    // A Subject changed on the way breaks both signatures.
    let tampered = twice.replace("Subject: signed twice", "Subject: signed thrice");
    assert_eq!(
        dkimpy(&tampered, root.path(), &dns),
        ["ed25519-sha256 e2026 fail", "rsa-sha256 s2026 fail"]
    );
}

#[test]
fn mail_relayed_by_mx_to_a_real_postfix_verifies_there() {
    netns::run(|| {
        let root = Root::new();
        // Postfix's unprivileged processes walk into the test root.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut zones = zones();
        zones.push(Zone::new(
            "example.net",
            "@ IN MX 10 mx.example.net.\nmx IN A 127.0.0.5\n",
        ));
        let dns = Unbound::start_on(&root.join("unbound"), ip("127.0.0.1"), 53, &zones);
        netns::add_loopback(ip("127.0.0.5"));
        let postfix = Postfix::start(
            &root.join("postfix"),
            ip("127.0.0.5"),
            &Options {
                hostname: "mx.example.net".into(),
                domains: vec!["example.net".into()],
                // Postfix refuses an empty inline: table, so refuse someone.
                refuse: vec![(
                    "nobody@example.net".into(),
                    "550 5.1.1 no such mailbox".into(),
                )],
            },
        );
        let submission = free_port();
        let _fugu = start_fugu(&root, submission, "relay", "resolver 127.0.0.1\n");

        submit(
            submission,
            &[
                "--header",
                "Subject: to postfix",
                "--body",
                "Hello, Postfix.",
            ],
        );
        let msgs = postfix.wait_for(1, Duration::from_secs(30));
        let m = &msgs[0];
        // Postfix's Received line for the hop from fugu: it came over TLS.
        assert!(m.contains("(using TLSv1."), "{m}");
        assert_eq!(
            dkimpy(m, root.path(), &dns),
            ["ed25519-sha256 e2026 pass", "rsa-sha256 s2026 pass"],
            "{m}"
        );
    });
}
