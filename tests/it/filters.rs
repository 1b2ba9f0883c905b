//! OpenSMTPD filters (smtpd-filters(7), protocol 0.6) run by the real `fugu smtpd`:
//! Debian's filter-dkimsign signs (dkimpy verifies against a loopback unbound),
//! filter-rspamd with a real rspamd acts on GTUBE, a filter process that dies tempfails
//! the sessions that depend on it without losing accepted mail, a filter's EHLO reject
//! answers the EHLO and its RCPT rewrite redirects the mail, and a builtin
//! `phase mail-from` filter refuses a sender.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone, dkim_test_key, dkim_test_public_key, txt};
use fugu_tests::fugu::{Root, smtpd_command, whoami};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::process::{Child, require_program, wait_for_text};
use fugu_tests::smtp::Client;

const LIBEXEC: &str = "/usr/libexec/opensmtpd";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn require_filter(name: &str, package: &str) -> PathBuf {
    let p = Path::new(LIBEXEC).join(name);
    assert!(
        p.exists(),
        "{} missing: apt-get install {package}",
        p.display()
    );
    p
}

/// `fugu smtpd` on `port` delivering example.org to maildirs under `mail/`, with
/// `filters` (the `filter` lines) and `listen_filter` (what follows `listen … filter`).
fn start_fugu(root: &Root, port: u16, filters: &str, listen_filter: &str) -> Child {
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "{filters}\
             listen on 127.0.0.1 port {port} hostname mx.example.org filter {listen_filter}\n\
             action \"l\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"@example.org\" = \"{}\" }}\n\
             match from any for domain \"example.org\" action \"l\"\n",
            root.join("mail").display(),
            whoami(),
        ),
    );
    let mut cmd = smtpd_command(&conf, &root.join("spool"));
    cmd.env("FUGU_RETRY_BASE_SECS", "1");
    let child = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    wait_for_port(local(port), Duration::from_secs(30));
    child
}

/// A whole transaction; returns the reply to the end of data, or the first reply that
/// refused a step.
fn send_message(port: u16, from: &str, to: &str, body: &str) -> String {
    let mut c = Client::connect(local(port));
    let step = |c: &mut Client, line: Option<&str>, want: &str| {
        if let Some(l) = line {
            c.send(l);
        }
        let last = c.reply().last().cloned().unwrap_or_default();
        (!last.starts_with(want)).then_some(last)
    };
    let mail = format!("MAIL FROM:<{from}>");
    let rcpt = format!("RCPT TO:<{to}>");
    for (line, want) in [
        (None, "220"),
        (Some("EHLO client.example.net"), "250"),
        (Some(mail.as_str()), "250"),
        (Some(rcpt.as_str()), "250"),
        (Some("DATA"), "354"),
    ] {
        if let Some(refused) = step(&mut c, line, want) {
            return refused;
        }
    }
    c.send_raw(body.replace('\n', "\r\n").as_bytes());
    c.send(".");
    let last = c.reply().last().cloned().unwrap_or_default();
    c.send("QUIT");
    last
}

/// The messages delivered to `user`'s maildir, waiting up to 30 s for `count` of them.
fn delivered(root: &Root, user: &str, count: usize) -> Vec<String> {
    let dir = root.join("mail").join(user).join("new");
    let start = Instant::now();
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if files.len() >= count {
            files.sort();
            return files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{count} message(s) never reached {}: {files:?}\n{}",
            dir.display(),
            std::fs::read_to_string(root.join("smtpd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dkimpy's verdict (`pass`/`fail`) on each DKIM-Signature of the message, keys looked
/// up with dig(1) in the test's unbound (port in argv[2]).
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
    print('pass' if dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) else 'fail')
"#;

#[test]
fn filter_dkimsign_signs_mail_and_dkimpy_verifies_it() {
    let filter = require_filter("filter-dkimsign", "opensmtpd-filter-dkimsign");
    let root = Root::new();
    let public = dkim_test_public_key("rsa2048.pub.b64");
    let dns = Unbound::start(
        root.path(),
        free_port(),
        &[Zone::new(
            "example.org",
            &format!(
                "s2026._domainkey IN TXT {}\n",
                txt(&format!("v=DKIM1; k=rsa; p={public}"))
            ),
        )],
    );
    let port = free_port();
    let _fugu = start_fugu(
        &root,
        port,
        &format!(
            "filter dkim proc-exec \"{} -d example.org -s s2026 -k {}\"\n",
            filter.display(),
            dkim_test_key("rsa2048.key").display()
        ),
        "dkim",
    );
    let reply = send_message(
        port,
        "alice@example.org",
        "bob@example.org",
        "From: Alice <alice@example.org>\nTo: bob@example.org\nSubject: signed by a filter\n\n\
         Hello Bob.\n..a line that starts with a dot\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let msg = delivered(&root, "bob", 1).remove(0);
    // The filter saw the message after our Received header and signed it in front.
    let signature = msg.find("\nDKIM-Signature: ").expect(&msg);
    assert!(signature < msg.find("\nReceived: ").unwrap(), "{msg}");
    assert!(
        msg.contains("d=example.org") && msg.contains("s=s2026"),
        "{msg}"
    );
    assert!(msg.contains("\n.a line that starts with a dot"), "{msg}");
    let path = root.join("signed.eml");
    std::fs::write(&path, msg.replace("\r\n", "\n").replace('\n', "\r\n")).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", VERIFY])
        .arg(&path)
        .arg(dns.addr().port().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pass\n");
}

/// A filter that proceeds on everything, and exits when a sender starts with `die`.
const FRAGILE: &str = r#"
import sys
def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    f = line.rstrip("\n").split("|")
    if f[0] == "config" and f[1] == "ready":
        out("register|filter|smtp-in|mail-from")
        out("register|report|smtp-in|link-connect")
        out("register|ready")
    elif f[0] == "filter":
        sid, token, param = f[5], f[6], "|".join(f[7:])
        if param.startswith("die"):
            sys.stderr.write("told to die\n")
            sys.exit(3)
        out("filter-result|%s|%s|proceed" % (sid, token))
"#;

#[test]
fn a_filter_that_dies_tempfails_its_sessions_and_loses_no_accepted_mail() {
    let root = Root::new();
    let script = root.write("fragile.py", FRAGILE);
    let port = free_port();
    let fugu = start_fugu(
        &root,
        port,
        &format!(
            "filter fragile proc-exec \"/usr/bin/python3 {}\"\n",
            script.display()
        ),
        "fragile",
    );
    let reply = send_message(
        port,
        "alice@example.org",
        "bob@example.org",
        "Subject: before\n\naccepted before the crash\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");

    // A session already attached to the filter when it dies.
    let mut waiting = Client::connect(local(port));
    waiting.expect("220 *");
    waiting.send("EHLO waiting.example.net");
    waiting.expect("250 *");

    let mut killer = Client::connect(local(port));
    killer.expect("220 *");
    killer.send("EHLO killer.example.net");
    killer.expect("250 *");
    killer.send("MAIL FROM:<die@example.net>");
    killer.expect("421 4.3.0 *");
    assert!(killer.closed());

    waiting.send("MAIL FROM:<carol@example.net>");
    waiting.expect("421 4.3.0 *");
    assert!(waiting.closed());

    let log = wait_for_text(|| fugu.log(), "lost processor: fragile");
    assert!(log.contains("fragile: told to die"), "{log}");
    assert!(log.contains("filter-failed filter=fragile"), "{log}");
    let msg = delivered(&root, "bob", 1).remove(0);
    assert!(msg.contains("accepted before the crash"), "{msg}");

    // The filter is started again, and new sessions go through.
    let start = Instant::now();
    loop {
        let reply = send_message(
            port,
            "alice@example.org",
            "bob@example.org",
            "Subject: after\n\naccepted after the restart\n",
        );
        if reply.starts_with("250 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = delivered(&root, "bob", 2).join("\n");
    assert!(all.contains("accepted after the restart"), "{all}");
}

/// Refuses EHLO names under `spam.example`; rewrites the recipient `carol@example.org`
/// to `bob@example.org`.
const GATEKEEPER: &str = r#"
import sys
def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    f = line.rstrip("\n").split("|")
    if f[0] == "config" and f[1] == "ready":
        out("register|filter|smtp-in|ehlo")
        out("register|filter|smtp-in|rcpt-to")
        out("register|ready")
    elif f[0] == "filter":
        phase, sid, token, param = f[4], f[5], f[6], "|".join(f[7:])
        if phase == "ehlo" and param.endswith(".spam.example"):
            out("filter-result|%s|%s|reject|550 5.7.1 go away, %s" % (sid, token, param))
        elif phase == "rcpt-to" and param == "carol@example.org":
            out("filter-result|%s|%s|rewrite|bob@example.org" % (sid, token))
        else:
            out("filter-result|%s|%s|proceed" % (sid, token))
"#;

#[test]
fn an_ehlo_reject_answers_the_ehlo_and_a_rcpt_rewrite_redirects_the_mail() {
    let root = Root::new();
    let script = root.write("gatekeeper.py", GATEKEEPER);
    let port = free_port();
    let _fugu = start_fugu(
        &root,
        port,
        &format!(
            "filter gatekeeper proc-exec \"/usr/bin/python3 {}\"\n",
            script.display()
        ),
        "gatekeeper",
    );
    let mut c = Client::connect(local(port));
    c.expect("220 *");
    c.send("EHLO bot.spam.example");
    c.expect("550 5.7.1 go away, bot.spam.example");
    // The refused EHLO left the session before HELO.
    c.send("MAIL FROM:<a@bot.spam.example>");
    c.expect("503 5.5.1 *");
    c.send("EHLO client.example.net");
    c.expect("250 *");
    c.send("QUIT");
    c.expect("221 *");

    let reply = send_message(
        port,
        "alice@example.net",
        "carol@example.org",
        "Subject: for carol\n\nredirected by the filter\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let msg = delivered(&root, "bob", 1).remove(0);
    assert!(msg.contains("redirected by the filter"), "{msg}");
}

#[test]
fn a_builtin_mail_from_filter_rejects_a_listed_sender() {
    let root = Root::new();
    root.write("spammers", "spammer@evil.example\n");
    let port = free_port();
    let _fugu = start_fugu(
        &root,
        port,
        &format!(
            "table spammers file:{}\n\
             filter nospam phase mail-from match mail-from <spammers> reject \"550 5.7.1 sender refused by policy\"\n",
            root.join("spammers").display()
        ),
        "nospam",
    );
    let mut c = Client::connect(local(port));
    c.expect("220 *");
    c.send("EHLO client.example.net");
    c.expect("250 *");
    c.send("MAIL FROM:<spammer@evil.example>");
    c.expect("550 5.7.1 sender refused by policy");
    c.send("MAIL FROM:<friend@good.example>");
    c.expect("250 *");
    c.send("QUIT");
    let reply = send_message(
        port,
        "friend@good.example",
        "bob@example.org",
        "Subject: hi\n\nfrom a friend\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(delivered(&root, "bob", 1)[0].contains("from a friend"));
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// rspamd with one normal worker on `port`, everything else off: no redis, no network.
fn start_rspamd(root: &Root, port: u16) -> Rspamd {
    let rspamd = require_program("rspamd", "rspamd");
    let dir = root.join("rspamd");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let d = dir.display();
    let conf = root.write(
        "rspamd/rspamd.conf",
        &format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"{d}/rspamd.pid\";\n  dbdir = \"{d}/db\";\n  \
             dns {{ nameserver = [\"127.0.0.1:1\"]; timeout = 0.1s; retransmits = 0; }}\n}}\n\
             logging {{ type = \"file\"; filename = \"{d}/rspamd.log\"; level = \"info\"; }}\n\
             worker \"normal\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  count = 1;\n  \
             .include \"$CONFDIR/worker-normal.inc\"\n}}\n"
        ),
    );
    let mut cmd = Command::new(rspamd);
    cmd.args(["-f", "-i", "-c"]).arg(&conf);
    if nix_is_root() {
        // rspamd's workers drop to _rspamd: they must reach their directory.
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.args(["-u", "_rspamd", "-g", "_rspamd"]);
        Command::new("chown")
            .args(["-R", "_rspamd:_rspamd"])
            .arg(&dir)
            .status()
            .unwrap();
    }
    let child = Child::spawn("rspamd", cmd, &root.join("rspamd.out"));
    wait_for_port(local(port), Duration::from_secs(60));
    let rspamd = Rspamd(child);
    // A fresh worker answers before its pattern matchers are built, and then misses
    // GTUBE: ask it directly until it sees GTUBE, so the test starts with a ready peer.
    let start = Instant::now();
    while !rspamd_rejects_gtube(port) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rspamd never recognised GTUBE"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    rspamd
}

/// rspamd's own verdict on a GTUBE message, over its HTTP API.
fn rspamd_rejects_gtube(port: u16) -> bool {
    use std::io::{Read, Write};
    let body = format!("Subject: probe\r\n\r\n{GTUBE}\r\n");
    let Ok(mut s) = std::net::TcpStream::connect(local(port)) else {
        return false;
    };
    let _ = write!(
        s,
        "POST /checkv2 HTTP/1.0\r\nIP: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("\"GTUBE\"")
}

/// rspamd's main process stops its workers on SIGTERM (a SIGKILL would orphan them).
struct Rspamd(Child);

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.0.signal(15);
        let _ = self.0.wait_timeout(Duration::from_secs(10));
    }
}

fn nix_is_root() -> bool {
    whoami() == "root"
}

#[test]
fn filter_rspamd_with_a_real_rspamd_rejects_gtube_and_passes_clean_mail() {
    let filter = require_filter("filter-rspamd", "opensmtpd-filter-rspamd");
    let root = Root::new();
    let rport = free_port();
    let _rspamd = start_rspamd(&root, rport);
    let port = free_port();
    let fugu = start_fugu(
        &root,
        port,
        &format!(
            "filter rspamd proc-exec \"{} -url http://127.0.0.1:{rport}\"\n",
            filter.display()
        ),
        "rspamd",
    );
    let reply = send_message(
        port,
        "alice@example.net",
        "bob@example.org",
        // rspamd only looks for GTUBE in a text part longer than the pattern itself.
        &format!(
            "From: alice@example.net\nTo: bob@example.org\nSubject: spam\n\n{GTUBE}\n-- \nalice\n"
        ),
    );
    assert_eq!(
        reply,
        "550 Gtube pattern",
        "rspamd:\n{}\nfugu:\n{}",
        std::fs::read_to_string(root.join("rspamd/rspamd.log")).unwrap_or_default(),
        fugu.log()
    );
    let reply = send_message(
        port,
        "alice@example.net",
        "bob@example.org",
        "From: alice@example.net\nTo: bob@example.org\nSubject: lunch\n\nSee you at noon.\n",
    );
    assert!(reply.starts_with("250 "), "{reply}");
    let msg = delivered(&root, "bob", 1).remove(0);
    assert!(msg.contains("See you at noon."), "{msg}");
    assert!(!msg.contains("GTUBE"), "{msg}");
}
