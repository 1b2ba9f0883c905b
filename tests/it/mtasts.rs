//! MTA-STS end to end (RFC 8461): the real `fugu smtpd` relays to `example.net`, whose
//! `_mta-sts` TXT record (in unbound) announces a policy served over HTTPS by a policy
//! host on 127.0.0.6:443 with a certificate from a test CA (trusted through
//! `SSL_CERT_FILE`). The MX is a second `fugu smtpd` on 127.0.0.5:25 with STARTTLS.
//!
//! Relay by MX dials port 25, the policy host listens on 443 and the resolver asks port
//! 53, so every test runs in its own network namespace (`fugu_tests::netns`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::net::wait_for_port;
use fugu_tests::netns;
use fugu_tests::postfix::self_signed;
use fugu_tests::process::{Child, require_program};
use fugu_tests::smtp::send_message;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 127.0.0.5 (the MX) and .6 (the policy host) become addresses of lo.
fn add_addresses() {
    for a in ["127.0.0.5", "127.0.0.6"] {
        netns::add_loopback(ip(a));
    }
}

/// A test CA (`ca.pem`, `ca.key`) in `dir`.
fn ca(dir: &Path) -> PathBuf {
    let openssl = require_program("openssl", "openssl");
    run(Command::new(&openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=fugu test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem")));
    dir.join("ca.pem")
}

/// A certificate for `name` signed by the CA in `dir`: (`<name>.pem`, `<name>.key`).
fn issue(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let openssl = require_program("openssl", "openssl");
    let (cert, key, csr) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
    );
    run(Command::new(&openssl)
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{name}\n")).unwrap();
    run(Command::new(&openssl)
        .args(["x509", "-req", "-days", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// An HTTPS server on 127.0.0.6:443 serving `policy` as the MTA-STS policy.
fn policy_host(dir: &Path, cert: &Path, key: &Path, policy: &str) -> Child {
    let script = format!(
        r#"
import http.server, ssl
POLICY = {policy:?}.encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != '/.well-known/mta-sts.txt':
            self.send_error(404); return
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(POLICY)))
        self.end_headers()
        self.wfile.write(POLICY)
s = http.server.HTTPServer(('127.0.0.6', 443), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain({cert:?}, {key:?})
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#,
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", &script]);
    let child = Child::spawn("policy host", cmd, &dir.join("policy-host.log"));
    wait_for_port(
        SocketAddr::new(ip("127.0.0.6"), 443),
        Duration::from_secs(20),
    );
    child
}

/// `example.net`: MX on 127.0.0.5, an `_mta-sts` record, the policy host on 127.0.0.6.
fn zones() -> Vec<Zone> {
    vec![Zone::new(
        "example.net",
        "@ IN MX 10 mx.example.net.\nmx IN A 127.0.0.5\n\
         _mta-sts IN TXT \"v=STSv1; id=20261121\"\nmta-sts IN A 127.0.0.6\n",
    )]
}

/// A `fugu smtpd` from `conf` (under `root`), with `env`.
fn smtpd(root: &Root, conf: &str, env: &[(&str, &str)], port: SocketAddr) -> Child {
    let conf = root.write("smtpd.conf", conf);
    let mut cmd = smtpd_command(&conf, &root.join("spool"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    wait_for_port(port, Duration::from_secs(20));
    child
}

/// The remote MX: a fugu for example.net on 127.0.0.5:25 with STARTTLS; local users
/// need a userbase entry, as with OpenSMTPD.
fn mx(root: &Root, cert: &Path, key: &Path) -> Child {
    let r = root.path().display();
    smtpd(
        root,
        &format!(
            "pki mx.example.net cert \"{}\"\npki mx.example.net key \"{}\"\n\
             listen on 127.0.0.5 port 25 tls pki mx.example.net hostname mx.example.net\n\
             table users {{ bob = 0:0:{r} }}\n\
             action \"local\" maildir \"{r}/mail/%{{rcpt.user}}\" userbase <users>\n\
             match from any for domain \"example.net\" action \"local\"\n",
            cert.display(),
            key.display()
        ),
        &[],
        SocketAddr::new(ip("127.0.0.5"), 25),
    )
}

/// The sender: a fugu that relays everything for example.net by MX, trusting `ca`.
fn sender(root: &Root, ca: &Path) -> Child {
    smtpd(
        root,
        "resolver 127.0.0.1\n\
         listen on 127.0.0.1 port 25\n\
         action \"out\" relay helo mx.example.org\n\
         match from any for domain \"example.net\" action \"out\"\n",
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        SocketAddr::new(ip("127.0.0.1"), 25),
    )
}

fn send(subject: &str) {
    send_message(
        SocketAddr::new(ip("127.0.0.1"), 25),
        "alice@example.org",
        "bob@example.net",
        subject,
    );
}

fn maildir(root: &Root, user: &str) -> Vec<String> {
    std::fs::read_dir(root.join(format!("mail/{user}/new")))
        .map(|rd| {
            rd.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for<T>(what: &str, log: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} never happened; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n";

#[test]
fn an_enforce_domain_whose_mx_certificate_verifies_receives_the_mail() {
    netns::run(|| {
        add_addresses();
        let (out, remote, pki) = (Root::new(), Root::new(), Root::new());
        let ca = ca(pki.path());
        let (sts_cert, sts_key) = issue(pki.path(), "mta-sts.example.net");
        let _policy = policy_host(pki.path(), &sts_cert, &sts_key, ENFORCE);
        let _dns = Unbound::start_on(&out.join("unbound"), ip("127.0.0.1"), 53, &zones());
        let (mx_cert, mx_key) = issue(pki.path(), "mx.example.net");
        let _mx = mx(&remote, &mx_cert, &mx_key);
        let sender = sender(&out, &ca);

        send("verified");
        let got = wait_for(
            "delivery",
            || sender.log(),
            || {
                let m = maildir(&remote, "bob");
                (!m.is_empty()).then_some(m)
            },
        );
        assert!(got[0].contains("Subject: verified"), "{}", got[0]);
    });
}

#[test]
fn a_testing_domain_whose_mx_certificate_does_not_verify_still_receives_the_mail() {
    netns::run(|| {
        add_addresses();
        let (out, remote, pki) = (Root::new(), Root::new(), Root::new());
        let ca = ca(pki.path());
        let (sts_cert, sts_key) = issue(pki.path(), "mta-sts.example.net");
        let testing = ENFORCE.replace("mode: enforce", "mode: testing");
        let _policy = policy_host(pki.path(), &sts_cert, &sts_key, &testing);
        let _dns = Unbound::start_on(&out.join("unbound"), ip("127.0.0.1"), 53, &zones());
        // RFC 8461 §5: in testing mode a failed check is reported, never enforced.
        self_signed(
            "mx.example.net",
            &remote.join("cert.pem"),
            &remote.join("key.pem"),
        );
        let _mx = mx(&remote, &remote.join("cert.pem"), &remote.join("key.pem"));
        let sender = sender(&out, &ca);

        send("testing only");
        let got = wait_for(
            "delivery",
            || sender.log(),
            || {
                let m = maildir(&remote, "bob");
                (!m.is_empty()).then_some(m)
            },
        );
        assert!(got[0].contains("Subject: testing only"), "{}", got[0]);
    });
}

#[test]
fn an_enforce_domain_whose_mx_certificate_does_not_verify_is_deferred_with_the_reason() {
    netns::run(|| {
        add_addresses();
        let (out, remote, pki) = (Root::new(), Root::new(), Root::new());
        let ca = ca(pki.path());
        let (sts_cert, sts_key) = issue(pki.path(), "mta-sts.example.net");
        let _policy = policy_host(pki.path(), &sts_cert, &sts_key, ENFORCE);
        let _dns = Unbound::start_on(&out.join("unbound"), ip("127.0.0.1"), 53, &zones());
        // The MX's certificate is self-signed: fine for opportunistic TLS, not for MTA-STS.
        self_signed(
            "mx.example.net",
            &remote.join("cert.pem"),
            &remote.join("key.pem"),
        );
        let _mx = mx(&remote, &remote.join("cert.pem"), &remote.join("key.pem"));
        let sender = sender(&out, &ca);

        send("must verify");
        let spool = out.join("spool");
        let queue = wait_for(
            "a deferral",
            || sender.log(),
            || {
                let run = out.fugu(&["ctl", "--spool", spool.to_str().unwrap(), "show", "queue"]);
                run.stdout.contains("MTA-STS").then(|| run.stdout.clone())
            },
        );
        assert!(queue.contains("bob@example.net"), "{queue}");
        assert!(queue.contains("TLS"), "{queue}");
        assert!(maildir(&remote, "bob").is_empty());
    });
}

#[test]
fn an_enforce_domain_whose_policy_lists_none_of_its_mx_hosts_is_deferred() {
    netns::run(|| {
        add_addresses();
        let (out, remote, pki) = (Root::new(), Root::new(), Root::new());
        let ca = ca(pki.path());
        let (sts_cert, sts_key) = issue(pki.path(), "mta-sts.example.net");
        let elsewhere = ENFORCE.replace("mx: mx.example.net", "mx: *.elsewhere.example");
        let _policy = policy_host(pki.path(), &sts_cert, &sts_key, &elsewhere);
        let _dns = Unbound::start_on(&out.join("unbound"), ip("127.0.0.1"), 53, &zones());
        // A certificate that verifies: only the MX name is wrong.
        let (mx_cert, mx_key) = issue(pki.path(), "mx.example.net");
        let _mx = mx(&remote, &mx_cert, &mx_key);
        let sender = sender(&out, &ca);

        send("not listed");
        let spool = out.join("spool");
        let queue = wait_for(
            "a deferral",
            || sender.log(),
            || {
                let run = out.fugu(&["ctl", "--spool", spool.to_str().unwrap(), "show", "queue"]);
                run.stdout.contains("MTA-STS").then(|| run.stdout.clone())
            },
        );
        assert!(queue.contains("mx.example.net"), "{queue}");
        assert!(maildir(&remote, "bob").is_empty());
    });
}
