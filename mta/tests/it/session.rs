//! The SMTP server shell with real clients on loopback: Python smtplib, swaks and raw
//! sockets, over plaintext, STARTTLS and implicit TLS. The backend writes each committed
//! message to a file in a temp dir (the real queue is tested in `queue`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mta::clock::SystemClock;
use mta::envelope::Envelope;
use mta::server::{Backend, BoxFuture, Limits, ListenAddr, Listener, MessageWriter, Server, tls};
use mta::session::{
    AuthPolicy, AuthVerdict, CheckContext, RecipientVerdict, Reply, SenderVerdict, SessionConfig,
    TlsPolicy, reply,
};

/// Accepts every sender; `unknown…` recipients get 550 5.1.1; alice/secret logs in;
/// messages land in `dir/<n>.eml` with the envelope in `dir/<n>.env`.
struct FileBackend {
    dir: PathBuf,
    next: Arc<AtomicUsize>,
}

struct FileWriter {
    dir: PathBuf,
    id: usize,
    envelope: Envelope,
    data: Vec<u8>,
}

impl Backend for FileBackend {
    fn check_sender<'a>(
        &'a self,
        _: Option<&'a str>,
        _: &'a CheckContext,
    ) -> BoxFuture<'a, SenderVerdict> {
        Box::pin(async { SenderVerdict::Accept })
    }
    fn check_recipient<'a>(
        &'a self,
        address: &'a str,
        _: &'a CheckContext,
    ) -> BoxFuture<'a, RecipientVerdict> {
        Box::pin(async move {
            if address.starts_with("unknown") {
                RecipientVerdict::Reject(reply::invalid_recipient(address))
            } else {
                RecipientVerdict::Accept {
                    targets: vec![mta::envelope::Target {
                        action: "deliver".into(),
                        dest: address.to_string(),
                        user: None,
                    }],
                }
            }
        })
    }
    fn verify_credentials<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        _listener: usize,
    ) -> BoxFuture<'a, AuthVerdict> {
        Box::pin(async move {
            if user == "alice" && password == "secret" {
                AuthVerdict::Ok
            } else {
                AuthVerdict::Fail
            }
        })
    }
    fn begin_message(
        &self,
        envelope: Envelope,
    ) -> BoxFuture<'_, Result<Box<dyn MessageWriter>, Reply>> {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = self.dir.clone();
        Box::pin(async move {
            Ok(Box::new(FileWriter {
                dir,
                id,
                envelope,
                data: Vec::new(),
            }) as Box<dyn MessageWriter>)
        })
    }
}

impl MessageWriter for FileWriter {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Reply>> {
        self.data.extend_from_slice(chunk);
        Box::pin(async { Ok(()) })
    }
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String, Reply>> {
        Box::pin(async move {
            std::fs::write(self.dir.join(format!("{}.eml", self.id)), &self.data).unwrap();
            std::fs::write(
                self.dir.join(format!("{}.env", self.id)),
                format!("{:#?}", self.envelope),
            )
            .unwrap();
            Ok(format!("{:08x}", self.id))
        })
    }
    fn abort(self: Box<Self>) {}
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    plain: u16,
    submission: u16,
    smtps: u16,
    sessions: mta::server::SessionGauge,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Harness {
    async fn start() -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        std::fs::create_dir(&dir).unwrap();
        let key = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
        std::fs::write(tmp.path().join("cert.pem"), key.cert.pem()).unwrap();
        std::fs::write(tmp.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        let tls_cfg = tls::server_config(&[tls::Pki {
            name: "mx.test".into(),
            cert: tmp.path().join("cert.pem"),
            key: tmp.path().join("key.pem"),
        }])
        .unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let mut mx = SessionConfig::new("mx.test");
        mx.tls = TlsPolicy::StartTls;
        let mut sub = SessionConfig::new("mx.test");
        sub.tls = TlsPolicy::StartTlsRequired;
        sub.auth = AuthPolicy::Required;
        let mut smtps = SessionConfig::new("mx.test");
        smtps.tls = TlsPolicy::Implicit;
        smtps.auth = AuthPolicy::Required;
        let listeners = [mx, sub, smtps]
            .into_iter()
            .map(|cfg| Listener {
                addr: ListenAddr::Tcp(any),
                session: Arc::new(cfg),
                tls: Some(tls_cfg.clone()),
                filters: None,
            })
            .collect();
        let limits = Limits {
            max_sessions_per_ip: 1000,
            ..Limits::default()
        };
        let server = Server::bind(listeners, limits, Arc::new(SystemClock)).unwrap();
        let ports: Vec<u16> = server.local_addrs().iter().map(|a| a.port()).collect();
        let sessions = server.session_gauge();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let backend = Arc::new(FileBackend {
            dir: dir.clone(),
            next: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(server.run(backend, rx));
        Harness {
            _tmp: tmp,
            dir,
            plain: ports[0],
            submission: ports[1],
            smtps: ports[2],
            sessions,
            _stop: stop,
        }
    }

    fn message(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{n}.eml"))).unwrap()
    }

    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "eml")
            })
            .count()
    }
}

/// Runs a Python script (with `PORT`, `SUB`, `SMTPS` set) off the runtime's threads.
async fn python(h: &Harness, script: &str) -> String {
    let script = format!(
        "import smtplib, ssl, socket, sys, threading\nPORT={}\nSUB={}\nSMTPS={}\n\
         CTX=ssl.create_default_context()\nCTX.check_hostname=False\nCTX.verify_mode=ssl.CERT_NONE\n{script}",
        h.plain, h.submission, h.smtps
    );
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg("-c").arg(script).output())
            .await
            .unwrap()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn swaks(args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || Command::new("swaks").args(args).output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn has(p: &Path) -> bool {
    p.exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_submits_over_starttls_with_auth() {
    let h = Harness::start().await;
    let out = python(
        &h,
        r#"
s = smtplib.SMTP("127.0.0.1", SUB)
s.ehlo("laptop.example")
code, text = s.mail("alice@example.org")
print("before-tls", code, text.decode())
s.rset()
s.starttls(context=CTX)
s.ehlo("laptop.example")
print("auth-offered", s.has_extn("auth"))
s.login("alice", "secret")
s.sendmail("alice@example.org", ["bob@example.net"], "Subject: hi\r\n\r\nhello\r\n.leading dot\r\n")
s.quit()
"#,
    )
    .await;
    assert!(
        out.contains("before-tls 530 5.7.0 Must issue a STARTTLS command first"),
        "{out}"
    );
    assert!(out.contains("auth-offered True"), "{out}");
    let msg = h.message(1);
    assert!(msg.starts_with("Received: from laptop.example (unknown [127.0.0.1])\r\n\tby mx.test (fugu) with ESMTPSA\r\n\t(TLSv1.3:TLS_"), "{msg}");
    // RFC 6409 §8.2/§8.3: the submission gets the Date and Message-ID it lacked.
    let (head, body) = msg.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "hello\r\n.leading dot\r\n", "{msg}");
    assert!(head.contains("\r\nSubject: hi\r\nDate: "), "{msg}");
    assert!(head.contains("\r\nMessage-ID: <"), "{msg}");
    assert!(head.ends_with("@mx.test>"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_submits_over_implicit_tls() {
    let h = Harness::start().await;
    python(
        &h,
        r#"
s = smtplib.SMTP_SSL("127.0.0.1", SMTPS, context=CTX)
s.login("alice", "secret")
s.sendmail("alice@example.org", ["bob@example.net"], "Subject: implicit\r\n\r\nx\r\n")
s.quit()
"#,
    )
    .await;
    assert!(h.message(1).contains("with ESMTPSA"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_recipients_are_refused_at_rcpt_time() {
    let h = Harness::start().await;
    let out = python(
        &h,
        r#"
s = smtplib.SMTP("127.0.0.1", PORT)
try:
    s.sendmail("a@c.example", ["unknown@example.org"], "x")
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients["unknown@example.org"]
    print(code, text.decode())
"#,
    )
    .await;
    assert_eq!(
        out.trim(),
        "550 5.1.1 Invalid recipient: <unknown@example.org>"
    );
    assert_eq!(h.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_plain_pipelining_and_starttls() {
    let h = Harness::start().await;
    let base = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "--server",
            "127.0.0.1",
            "--port",
            &h.plain.to_string(),
            "--from",
            "a@c.example",
            "--to",
            "x@example.org",
            "--helo",
            "c.example",
            "--timeout",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, out) = swaks(base(&["--pipeline"])).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("250 2.0.0 00000001 Message accepted for delivery"),
        "{out}"
    );
    let (ok, out) = swaks(base(&["--tls"])).await;
    assert!(ok, "{out}");
    assert!(
        h.message(2).contains("with ESMTPS\r\n\t(TLSv1.3:"),
        "{}",
        h.message(2)
    );
    assert!(has(&h.dir.join("2.env")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_injection_over_a_real_socket_is_discarded() {
    let h = Harness::start().await;
    let out = python(
        &h,
        r#"
c = socket.create_connection(("127.0.0.1", PORT))
f = c.makefile("rb")
f.readline()
c.sendall(b"EHLO c.example\r\n")
while not f.readline().startswith(b"250 "): pass
c.sendall(b"STARTTLS\r\nRSET\r\n")
print(f.readline().decode().strip())
t = CTX.wrap_socket(c, server_hostname="mx.test")
t.sendall(b"NOOP\r\n")
print(t.recv(1000).decode().strip())
"#,
    )
    .await;
    assert_eq!(out, "220 2.0.0 Ready to start TLS\n250 2.0.0 Ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_and_smuggling_over_a_real_socket() {
    let h = Harness::start().await;
    let out = python(&h, r#"
c = socket.create_connection(("127.0.0.1", PORT))
f = c.makefile("rb")
f.readline()
c.sendall(b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\nBDAT 6\r\nab\r\ncdBDAT 0 LAST\r\n")
for _ in range(5):
    while True:
        l = f.readline()
        if l[3:4] == b" ": break
print(l.decode().strip())
c.sendall(b"MAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n")
for _ in range(3): f.readline()
c.sendall(b"Subject: s\r\n\r\nbody\n.\nMAIL FROM:<admin@example.org>\r\n.\r\nQUIT\r\n")
print(f.readline().decode().strip())
print(f.readline().decode().strip())
"#).await;
    assert_eq!(
        out,
        "250 2.0.0 00000001 Message accepted for delivery\n250 2.0.0 00000002 Message accepted for delivery\n221 2.0.0 Bye\n"
    );
    assert!(
        h.message(1).ends_with("\r\n\r\nab\r\ncd\r\n") || h.message(1).ends_with("ab\r\ncd\r\n")
    );
    assert!(
        h.message(2)
            .ends_with("body\r\n.\r\nMAIL FROM:<admin@example.org>\r\n"),
        "{}",
        h.message(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sessions_all_succeed() {
    let h = Harness::start().await;
    let out = python(
        &h,
        r#"
ok = []
def one(i):
    s = smtplib.SMTP("127.0.0.1", PORT, timeout=30)
    s.sendmail("a@c.example", ["x@example.org"], "Subject: %d\r\n\r\nx\r\n" % i)
    s.quit()
    ok.append(i)
ts = [threading.Thread(target=one, args=(i,)) for i in range(200)]
for t in ts: t.start()
for t in ts: t.join()
print(len(ok))
"#,
    )
    .await;
    assert_eq!(out.trim(), "200");
    assert_eq!(h.count(), 200);
}

#[tokio::test]
async fn the_session_gauge_counts_open_sessions_for_show_stats() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let h = Harness::start().await;
    assert_eq!(h.sessions.current(), 0);
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", h.plain))
        .await
        .unwrap();
    let mut client = BufReader::new(stream);
    let mut line = String::new();
    client.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    assert_eq!(h.sessions.current(), 1);
    client.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    line.clear();
    client.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("221 "), "{line}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.sessions.current() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The default `listen = ["0.0.0.0", "::"]` pair binds one port twice: the IPv6 socket
/// must be IPv6-only, or Linux refuses the second bind with "address in use".
#[tokio::test]
async fn ipv4_and_ipv6_wildcards_share_a_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listeners = ["0.0.0.0", "::"]
        .into_iter()
        .map(|ip| Listener {
            addr: ListenAddr::Tcp(std::net::SocketAddr::new(ip.parse().unwrap(), port)),
            session: Arc::new(SessionConfig::new("mx.test")),
            tls: None,
            filters: None,
        })
        .collect();
    let server = Server::bind(listeners, Limits::default(), Arc::new(SystemClock)).unwrap();
    assert_eq!(server.local_addrs().len(), 2);
}
