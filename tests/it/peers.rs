//! Real MTAs as sending peers (their queues relay into `fugu smtpd` over STARTTLS, and
//! fugu's Received header records the TLS session), and a burst of 1000 concurrent
//! connections that fugu must greet without refusing or resetting any.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::fugu::{Root, smtpd_command};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::postfix::{Options, Postfix, self_signed};
use fugu_tests::process::{Child, require_program};
use fugu_tests::smtp::Client;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn chmod_755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `fugu smtpd` for `fugu.test` on 127.0.0.1:`port`, offering STARTTLS, delivering
/// alice's mail into a maildir.
struct Fugu {
    root: Root,
    child: Child,
    addr: SocketAddr,
}

impl Fugu {
    fn start(port: u16) -> Fugu {
        let root = Root::new();
        // Peers' unprivileged processes may walk into the test root.
        chmod_755(root.path());
        let r = root.path().display().to_string();
        self_signed(
            "mx.fugu.test",
            &root.join("cert.pem"),
            &root.join("key.pem"),
        );
        let conf = root.write(
            "smtpd.conf",
            &format!(
                "pki mx.fugu.test cert \"{r}/cert.pem\"\n\
                 pki mx.fugu.test key \"{r}/key.pem\"\n\
                 table users {{ alice = \"0:0:{r}/mail/alice\" }}\n\
                 listen on 127.0.0.1 port {port} tls pki mx.fugu.test hostname mx.fugu.test\n\
                 action \"local\" maildir \"{r}/mail/%{{rcpt.user}}\" userbase <users>\n\
                 match from any for domain \"fugu.test\" action \"local\"\n"
            ),
        );
        let cmd = smtpd_command(&conf, &root.join("spool"));
        let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
        let addr = SocketAddr::new(ip("127.0.0.1"), port);
        wait_for_port(addr, Duration::from_secs(20));
        Fugu { root, child, addr }
    }

    fn log(&self) -> String {
        self.child.log()
    }

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

    fn wait_mailbox(&self, user: &str, timeout: Duration, peer_log: impl Fn() -> String) -> String {
        let start = Instant::now();
        loop {
            if let Some(m) = self.mailbox(user).pop() {
                return m;
            }
            assert!(
                start.elapsed() < timeout,
                "nothing arrived for {user}; smtpd log:\n{}\npeer log:\n{}",
                self.log(),
                peer_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The Received header fugu prepended: the topmost one (delivery adds only Return-Path
/// and Delivered-To above it), with its folded continuation lines.
fn first_received(msg: &str) -> String {
    let mut lines = msg.lines().skip_while(|l| !l.starts_with("Received:"));
    let mut out = lines.next().unwrap_or_default().to_string();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        out.push('\n');
        out.push_str(l);
    }
    out
}

#[test]
fn postfix_relays_through_its_queue_into_fugu_over_starttls() {
    fugu_tests::netns::run(|| {
        let fugu = Fugu::start(25);
        let postfix = Postfix::start_with(
            &fugu.root.join("postfix"),
            ip("127.0.0.5"),
            &Options {
                hostname: "mx.remote.test".into(),
                domains: vec!["remote.test".into()],
                refuse: vec![],
            },
            "relayhost = [127.0.0.1]:25\n\
             smtp_tls_security_level = may\n\
             smtp_tls_loglevel = 1\n\
             smtp_bind_address = 127.0.0.5\n",
        );
        postfix.sendmail(
            "bob@remote.test",
            "alice@fugu.test",
            "From: bob@remote.test\nTo: alice@fugu.test\nSubject: via postfix\n\nhello from postfix\n",
        );
        let msg = fugu.wait_mailbox("alice", Duration::from_secs(60), || postfix.log());
        let received = first_received(&msg);
        assert!(
            received.starts_with("Received: from mx.remote.test (")
                && received.contains("[127.0.0.5]")
                && received.contains("by mx.fugu.test (fugu) with ESMTPS")
                && received.contains("(TLSv1.")
                && received.contains("for <alice@fugu.test>;"),
            "fugu's Received header does not show the TLS hop from Postfix:\n{msg}"
        );
        // Postfix's own trace line, below fugu's: the message really went through its queue.
        assert!(msg.contains("by mx.remote.test (Postfix"), "{msg}");
        assert!(msg.contains("Subject: via postfix"), "{msg}");
        assert!(msg.contains("hello from postfix"), "{msg}");
        let log = postfix.log();
        assert!(
            log.contains("Trusted TLS connection established to 127.0.0.1")
                || log.contains("Untrusted TLS connection established to 127.0.0.1")
                || log.contains("Anonymous TLS connection established to 127.0.0.1"),
            "Postfix did not log a TLS connection to fugu:\n{log}"
        );
        assert!(log.contains("status=sent"), "{log}");
    });
}

const OPENSMTPD: &str = "/opt/fugu-test/opensmtpd/usr/sbin/smtpd";

/// A real OpenSMTPD 6.8 in the foreground. Its spool (`/var/spool/smtpd`) and control
/// socket (`/var/run/smtpd.sock`) are compiled in, so it runs in a private mount
/// namespace with fresh tmpfs mounts on both: it neither sees nor disturbs another
/// OpenSMTPD on this machine. Stopped with SIGTERM so its privsep children exit too.
struct OpenSmtpd {
    child: Child,
}

impl OpenSmtpd {
    fn start(dir: &Path, conf: &str, listen: SocketAddr) -> OpenSmtpd {
        assert!(
            Path::new(OPENSMTPD).exists(),
            "real OpenSMTPD is missing: run scripts/install-test-deps"
        );
        std::fs::create_dir_all(dir).unwrap();
        let conf_path = dir.join("smtpd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let script = format!(
            "mount -t tmpfs -o mode=0711 tmpfs /var/spool/smtpd && \
             mount -t tmpfs -o mode=0755 tmpfs /run && \
             exec {OPENSMTPD} -d -v -f {}",
            conf_path.display()
        );
        let mut cmd = Command::new(require_program("unshare", "util-linux"));
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let child = Child::spawn("opensmtpd", cmd, &dir.join("smtpd.log"));
        wait_for_port(listen, Duration::from_secs(20));
        OpenSmtpd { child }
    }

    fn log(&self) -> String {
        self.child.log()
    }
}

impl Drop for OpenSmtpd {
    fn drop(&mut self) {
        self.child.signal(15);
        let _ = self.child.wait_timeout(Duration::from_secs(5));
    }
}

#[test]
fn opensmtpd_relays_through_its_queue_into_fugu_over_starttls() {
    fugu_tests::netns::run(|| {
        let fugu = Fugu::start(25);
        let listen = SocketAddr::new(ip("127.0.0.6"), 25);
        fugu_tests::netns::add_loopback(listen.ip());
        let osmtpd = OpenSmtpd::start(
            &fugu.root.join("opensmtpd"),
            // smtp+tls: STARTTLS is required on the hop to fugu, whose certificate is
            // self-signed.
            "listen on 127.0.0.6 port 25 hostname mx.osmtpd.test\n\
             action \"out\" relay host smtp+tls://127.0.0.1:25 tls no-verify \
             helo mx.osmtpd.test src 127.0.0.6\n\
             match from any for domain \"fugu.test\" action \"out\"\n",
            listen,
        );
        let mut c = Client::connect(listen);
        c.expect("220 *");
        c.send("EHLO client.test");
        c.expect("250*");
        c.send("MAIL FROM:<carol@osmtpd.test>");
        c.expect("250 *");
        c.send("RCPT TO:<alice@fugu.test>");
        c.expect("250 *");
        c.send("DATA");
        c.expect("354 *");
        c.send_raw(
            b"From: carol@osmtpd.test\r\nTo: alice@fugu.test\r\nSubject: via opensmtpd\r\n\r\n\
              hello from opensmtpd\r\n.\r\n",
        );
        c.expect("250 *");
        c.send("QUIT");
        c.expect("221 *");

        let msg = fugu.wait_mailbox("alice", Duration::from_secs(60), || osmtpd.log());
        let received = first_received(&msg);
        assert!(
            received.starts_with("Received: from mx.osmtpd.test (")
                && received.contains("[127.0.0.6]")
                && received.contains("by mx.fugu.test (fugu) with ESMTPS")
                && received.contains("(TLSv1.")
                && received.contains("for <alice@fugu.test>;"),
            "fugu's Received header does not show the TLS hop from OpenSMTPD:\n{msg}"
        );
        // OpenSMTPD's own trace line, below fugu's: the message went through its queue.
        assert!(msg.contains("by mx.osmtpd.test (OpenSMTPD)"), "{msg}");
        assert!(msg.contains("Subject: via opensmtpd"), "{msg}");
        assert!(msg.contains("hello from opensmtpd"), "{msg}");
        let log = osmtpd.log();
        assert!(
            log.contains("mta tls ciphers=TLSv1.")
                && log.lines().any(|l| l.contains("mta delivery")
                    && l.contains("to=<alice@fugu.test>")
                    && l.contains("result=\"Ok\"")),
            "OpenSMTPD did not log a successful delivery to fugu:\n{log}"
        );
    });
}

/// Opens 1000 connections at once, each from one of 20 loopback sources (fugu allows
/// 64 concurrent sessions per IP), waits until every one is greeted, then QUITs them
/// all. Every connection must see `220` and, after QUIT, `221`: no refusal, no reset.
#[test]
fn a_thousand_concurrent_connections_are_all_greeted() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const CONNECTIONS: usize = 1000;
    const SOURCES: usize = 20;

    // Each connection is one descriptor here (fugu raises its own limit at start).
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 {
        setrlimit(Resource::RLIMIT_NOFILE, 4096.min(hard), hard).unwrap();
    }

    let fugu = Fugu::start(free_port());
    let target = fugu.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome: Vec<Result<(), String>> = rt.block_on(async move {
        // Every connection holds until all are greeted, so 1000 are open at one time.
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
        let mut tasks = Vec::new();
        for i in 0..CONNECTIONS {
            let barrier = barrier.clone();
            let src = Ipv4Addr::new(127, 0, 0, 10 + (i % SOURCES) as u8);
            tasks.push(tokio::spawn(async move {
                let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
                sock.bind(SocketAddr::new(src.into(), 0))
                    .map_err(|e| format!("bind {src}: {e}"))?;
                let stream = sock
                    .connect(target)
                    .await
                    .map_err(|e| format!("connect from {src}: {e}"))?;
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let mut line = String::new();
                r.read_line(&mut line)
                    .await
                    .map_err(|e| format!("banner for {src}: {e}"))?;
                if !line.starts_with("220 ") {
                    return Err(format!("banner for {src}: {line:?}"));
                }
                // A connection that failed before the barrier leaves the rest waiting.
                tokio::time::timeout(Duration::from_secs(60), barrier.wait())
                    .await
                    .map_err(|_| format!("{src}: not all connections were greeted in 60 s"))?;
                w.write_all(b"QUIT\r\n")
                    .await
                    .map_err(|e| format!("QUIT from {src}: {e}"))?;
                line.clear();
                r.read_line(&mut line)
                    .await
                    .map_err(|e| format!("QUIT reply for {src}: {e}"))?;
                if !line.starts_with("221 ") {
                    return Err(format!("QUIT reply for {src}: {line:?}"));
                }
                Ok(())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    });
    let mut failures: Vec<&String> = outcome.iter().filter_map(|r| r.as_ref().err()).collect();
    // The first real failure explains the barrier timeouts that follow it.
    failures.sort_by_key(|e| e.contains("not all connections"));
    assert!(
        failures.is_empty(),
        "{} of {CONNECTIONS} connections failed, e.g. {:?}; smtpd log tail:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        fugu.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(outcome.len(), CONNECTIONS);
    // fugu's side of the story: every session ended on QUIT, none on an error or limit.
    let start = Instant::now();
    let quits = loop {
        let n = fugu.log().matches("smtp disconnected reason=quit").count();
        if n >= CONNECTIONS || start.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(quits, CONNECTIONS, "smtpd log:\n{}", fugu.log());
}
