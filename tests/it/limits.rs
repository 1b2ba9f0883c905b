//! Session limits and who the client is, through the real `fugu smtpd`: header size
//! limits, the per-address connection rate, rDNS answered by a real unbound serving a
//! PTR zone, and client certificates on a `verify` listener (openssl-made CAs, Python's
//! ssl as the client).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::net::free_port;
use fugu_tests::netns;
use fugu_tests::process::{Child, require_program, wait_for_text};
use fugu_tests::smtp::Client;

/// `fugu smtpd` with `conf` before a listener on a free port and a maildir action for
/// whatever rules `rules` gives (default: root's mail to `ROOT/mail`).
fn smtpd(root: &Root, conf: &str, rules: Option<&str>) -> (Child, SocketAddr, PathBuf) {
    let port = free_port();
    let maildir = root.join("mail");
    let rules = rules.unwrap_or("match from any for any action \"m\"\n");
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "{conf}listen on 127.0.0.1 port {port}\n\
             action \"m\" maildir \"{}\" user root\n{rules}",
            maildir.display()
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Not by probing the port: a probe would be a connection, counted by the rate limit.
    wait_for_text(|| child.log(), &format!("listening on {addr}"));
    (child, addr, maildir)
}

/// A client connecting from `src`.
fn connect_from(src: IpAddr, addr: SocketAddr) -> Client {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(src, 0))?;
            sock.connect(addr).await
        })
        .unwrap_or_else(|e| panic!("connect {addr} from {src}: {e}"));
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    Client::over(Box::new(stream))
}

fn greeted(c: Client) -> Client {
    let mut c = c;
    c.expect("220 *");
    c.send("EHLO client.example");
    c.expect("250*");
    c
}

/// The one delivered message's text, waiting for it.
fn delivered(maildir: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Some(f) = std::fs::read_dir(maildir.join("new"))
            .ok()
            .and_then(|mut d| d.next())
        {
            return std::fs::read_to_string(f.unwrap().path()).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_header_over_max_header_size_is_refused_with_552_and_the_session_goes_on() {
    let root = Root::new();
    let (_fugu, addr, _) = smtpd(&root, "smtp limit max-header-size 1K\n", None);
    let mut c = greeted(Client::connect(addr));
    c.send("MAIL FROM:<a@client.example>");
    c.expect("250 *");
    c.send("RCPT TO:<root@example.org>");
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    for i in 0..30 {
        c.send(&format!(
            "X-Filler-{i:02}: 0123456789 0123456789 0123456789"
        ));
    }
    c.send("");
    c.send("body");
    c.send(".");
    c.expect("552 5.3.4 Message header too large");
    // Refused at the end of data, so the client is in step for the next transaction.
    c.send("MAIL FROM:<a@client.example>");
    c.expect("250 *");
    c.send("RCPT TO:<root@example.org>");
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    c.send("Subject: small");
    c.send("");
    c.send(&"a long body line ".repeat(50));
    c.send(".");
    c.expect("250 *");
}

#[test]
fn connections_over_max_conn_rate_get_421_and_are_logged() {
    let root = Root::new();
    let (fugu, addr, _) = smtpd(&root, "smtp limit max-conn-rate 2\n", None);
    for _ in 0..2 {
        let mut c = Client::connect(addr);
        c.expect("220 *");
        c.send("QUIT");
        c.expect("221 *");
    }
    // A third new connection within the minute, though the first two are gone.
    let mut c = Client::connect(addr);
    c.expect("421 4.7.0 * Too many connections, try again later");
    assert!(c.closed());
    wait_for_text(
        || fugu.log(),
        "smtp refused address=127.0.0.1 reason=too-many-connections limit=max-conn-rate",
    );
}

/// The client's address in the rDNS tests: hickory answers `localhost` for all of
/// 127.0.0.0/8 itself (RFC 6761 §6.3), so the client needs an address the PTR zone can
/// name. It is put on `lo` inside a private network namespace.
const CLIENT: &str = "192.0.2.77";

#[test]
fn the_clients_reverse_name_is_logged_put_in_received_and_matched_by_rdns_rules() {
    netns::run(|| {
        let root = Root::new();
        let client: IpAddr = CLIENT.parse().unwrap();
        netns::add_loopback(client);
        let dns = Unbound::start(
            &root.join("dns"),
            free_port(),
            &[
                Zone::new("2.0.192.in-addr.arpa", "77 IN PTR Client.Test.\n"),
                Zone::new("client.test", "@ IN A 192.0.2.77\n"),
            ],
        );
        assert_eq!(dns.dig("77.2.0.192.in-addr.arpa", "PTR"), ["Client.Test."]);
        let (fugu, addr, maildir) = smtpd(
            &root,
            &format!("resolver {}\n", dns.addr()),
            // Only a client whose reverse name is client.test may send here.
            Some("match from rdns { \"client.test\" } for any action \"m\"\n"),
        );
        let mut c = greeted(connect_from(client, addr));
        c.send("MAIL FROM:<a@client.example>");
        c.expect("250 *");
        c.send("RCPT TO:<root@example.org>");
        c.expect("250 *");
        c.send("DATA");
        c.expect("354 *");
        c.send("Subject: rdns");
        c.send("");
        c.send("hello");
        c.send(".");
        c.expect("250 *");
        c.send("QUIT");
        c.expect("221 *");
        wait_for_text(
            || fugu.log(),
            "smtp connected address=192.0.2.77 host=client.test",
        );
        let msg = delivered(&maildir);
        assert!(
            msg.lines()
                .any(|l| l.trim_end() == "Received: from client.example (client.test [192.0.2.77])"),
            "{msg}"
        );
    });
}

#[test]
fn without_a_reverse_name_the_host_is_unknown_and_rdns_rules_do_not_match() {
    netns::run(|| {
        let root = Root::new();
        let client: IpAddr = CLIENT.parse().unwrap();
        netns::add_loopback(client);
        // A resolver that knows no PTR for the client.
        let dns = Unbound::start(
            &root.join("dns"),
            free_port(),
            &[Zone::new("2.0.192.in-addr.arpa", "78 IN PTR other.test.\n")],
        );
        let (fugu, addr, _) = smtpd(
            &root,
            &format!("resolver {}\n", dns.addr()),
            Some("match from rdns for any action \"m\"\n"),
        );
        let mut c = greeted(connect_from(client, addr));
        c.send("MAIL FROM:<a@client.example>");
        c.expect("250 *");
        c.send("RCPT TO:<root@example.org>");
        c.expect("550 *");
        wait_for_text(
            || fugu.log(),
            "smtp connected address=192.0.2.77 host=<unknown>",
        );
    });
}

/// Runs openssl(1) in `dir`, failing the test on error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_program("openssl", "openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `NAME.pem`/`NAME.key` and a client certificate `NAME-client.pem`/`.key` it
/// issued.
fn ca_and_client(dir: &Path, name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_subj = format!("/CN={name} test CA");
    let (ca_key, ca_pem) = (format!("{name}.key"), format!("{name}.pem"));
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &ca_subj];
    args.extend(ec);
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    let (key, csr, pem) = (
        format!("{name}-client.key"),
        format!("{name}-client.csr"),
        format!("{name}-client.pem"),
    );
    let mut args = vec![
        "req",
        "-subj",
        "/CN=client.example",
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    args.extend(ec);
    openssl(dir, &args);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-extfile",
            "client.ext",
            "-out",
            &pem,
        ],
    );
}

/// An implicit-TLS client (Python's ssl and smtplib) presenting `cert`, if any: the
/// banner and EHLO on success, `refused: …` when the handshake or first read fails.
fn smtps_client(addr: SocketAddr, cert: Option<(&Path, &Path)>) -> String {
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if len(sys.argv) > 3:
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
try:
    s = smtplib.SMTP_SSL(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=10)
    code, _ = s.ehlo("client.example")
    s.quit()
    print("ehlo", code)
except (ssl.SSLError, smtplib.SMTPException, OSError) as e:
    print("refused:", e)
"#;
    let mut cmd = Command::new(require_program("python3", "python3"));
    cmd.arg("-c")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    if let Some((pem, key)) = cert {
        cmd.arg(pem).arg(key);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A self-signed ECDSA P-256 `server.pem`/`server.key` for localhost in `dir`.
fn server_cert(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
    );
}

/// A root with `pki/server.pem` and its key.
fn tls_root() -> (Root, PathBuf) {
    let root = Root::new();
    let dir = root.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    server_cert(&dir);
    (root, dir)
}

/// `fugu smtpd` with the listener `listen on 127.0.0.1 port PORT {listen}` on a free
/// port, after the global lines `head` (the `localhost` pki is `dir`'s server cert).
fn smtps_server(root: &Root, dir: &Path, head: &str, listen: &str) -> (Child, SocketAddr) {
    let port = free_port();
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "pki localhost cert \"{d}/server.pem\"\npki localhost key \"{d}/server.key\"\n{head}\
             listen on 127.0.0.1 port {port} {listen}\n\
             action \"l\" mbox\nmatch for local action \"l\"\n",
            d = dir.display()
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let fugu = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_text(|| fugu.log(), &format!("listening on {addr}"));
    (fugu, addr)
}

#[test]
fn listener_protocols_and_ciphers_limit_what_the_handshake_agrees() {
    let (root, dir) = tls_root();
    // The client offers everything; the listener allows only TLS 1.2 with one suite.
    let (fugu, addr) = smtps_server(
        &root,
        &dir,
        "",
        "smtps pki localhost protocols \"tlsv1.2\" ciphers \"ECDHE-ECDSA-CHACHA20-POLY1305\"",
    );
    assert_eq!(smtps_client(addr, None), "ehlo 250");
    wait_for_text(
        || fugu.log(),
        "smtp tls ciphers=TLSv1.2:TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:256",
    );
    drop(fugu);

    // `smtp ciphers` applies to a listener without its own; TLS 1.3 suites stay.
    let (root, dir) = tls_root();
    let (fugu, addr) = smtps_server(
        &root,
        &dir,
        "smtp ciphers \"HIGH:!aNULL:!MD5\"\n",
        "smtps pki localhost protocols \"tlsv1.3\"",
    );
    assert_eq!(smtps_client(addr, None), "ehlo 250");
    wait_for_text(|| fugu.log(), "smtp tls ciphers=TLSv1.3:TLS_");
}

#[test]
fn smtps_verify_admits_only_clients_with_a_certificate_from_its_ca() {
    let (root, dir) = tls_root();
    ca_and_client(&dir, "trusted");
    ca_and_client(&dir, "stranger");
    let (fugu, addr) = smtps_server(
        &root,
        &dir,
        &format!("ca clients cert \"{}/trusted.pem\"\n", dir.display()),
        "smtps verify pki localhost ca clients",
    );

    let trusted = (
        dir.join("trusted-client.pem"),
        dir.join("trusted-client.key"),
    );
    assert_eq!(
        smtps_client(addr, Some((&trusted.0, &trusted.1))),
        "ehlo 250"
    );
    wait_for_text(|| fugu.log(), "smtp tls ciphers=TLSv1.3:");
    let log = wait_for_text(|| fugu.log(), " verify=ok");
    assert!(
        log.contains("smtp cert-check result=\"verified\" fingerprint=\"SHA256:"),
        "{log}"
    );

    let stranger = (
        dir.join("stranger-client.pem"),
        dir.join("stranger-client.key"),
    );
    let out = smtps_client(addr, Some((&stranger.0, &stranger.1)));
    assert!(out.starts_with("refused:"), "{out}");
    let out = smtps_client(addr, None);
    assert!(out.starts_with("refused:"), "{out}");
    // Both failed at the handshake: no session started for them.
    let log = fugu.log();
    assert_eq!(log.matches("smtp connected").count(), 1, "{log}");
    assert_eq!(
        log.matches("smtp disconnected reason=tls-accept-failed")
            .count(),
        2,
        "{log}"
    );
}
