//! Keeping abusers out, through the real `fugu smtpd`: DNS block lists answered by a
//! real unbound, and auto-bans that refuse the next connection at once and land in the
//! appliance database through the provisioner's `query_ban`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::fugu::{Root, bin, smtpd_command, whoami};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::process::{Child, require_program};
use fugu_tests::smtp::Client;

fn smtpd(root: &Root, name: &str, conf: &str) -> (Child, SocketAddr) {
    let port = free_port();
    let conf = root.write(
        &format!("{name}.conf"),
        &format!(
            "{conf}listen on 127.0.0.1 port {port}\naction \"l\" mbox\nmatch for local action \"l\"\n"
        ),
    );
    let cmd = smtpd_command(&conf, &root.join(format!("{name}-spool")));
    let child = Child::spawn("fugu smtpd", cmd, &root.join(format!("{name}.log")));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, Duration::from_secs(10));
    (child, addr)
}

fn sqlite(db: &Path, sql: &str) -> String {
    use std::io::Write;
    // SQL on stdin: a script starting with a `--` comment would read as an option.
    let mut child = Command::new(require_program("sqlite3", "sqlite3"))
        .args(["-cmd", ".timeout 5000"])
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_listed_client_is_refused_and_a_127_255_255_answer_is_not_a_listing() {
    let root = Root::new();
    let dns = Unbound::start(
        &root.join("dns"),
        free_port(),
        &[
            Zone::new("listed.example", "1.0.0.127 IN A 127.0.0.2\n"),
            Zone::new("refusing.example", "1.0.0.127 IN A 127.255.255.254\n"),
        ],
    );
    let resolver = format!("resolver {}\n", dns.addr());

    let (_a, listed) = smtpd(
        &root,
        "listed",
        &format!("{resolver}dnsbl zone listed.example\n"),
    );
    let mut c = Client::connect(listed);
    c.expect("554 5.7.1 Client address [127.0.0.1] listed by listed.example");
    assert!(c.closed());

    let (b, unknown) = smtpd(
        &root,
        "unknown",
        &format!("{resolver}dnsbl zone refusing.example\n"),
    );
    let mut c = Client::connect(unknown);
    c.expect("220 *");
    c.send("QUIT");
    c.expect("221 *");
    assert!(
        b.log()
            .contains("dnsbl zone=refusing.example answered 127.255.255.x"),
        "{}",
        b.log()
    );
}

#[test]
fn protocol_abuse_bans_the_client_at_once_and_in_the_database() {
    let root = Root::new();
    let db = root.db();
    // WAL, as every appliance connection uses: readers never block the ban write.
    sqlite(&db, "PRAGMA journal_mode=WAL;");
    for m in ["0001_initial.sql", "0002_console.sql"] {
        let sql = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(m),
        )
        .unwrap();
        sqlite(&db, &sql);
    }
    // The provisioner's generated ban table, pointed at this database.
    let block = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../provisioner/tests/golden/default/access-block.conf"),
    )
    .unwrap()
    .replace("/var/lib/fugu/fugu.db", &db.display().to_string());
    let block = root.write("access-block.conf", &block);
    let (_smtpd, addr) = smtpd(
        &root,
        "ban",
        &format!(
            "table access_block \"sqlite:{}\"\naccess block connect <access_block>\n\
             access ban <access_block> errors 3 within 10m for 24h\n",
            block.display()
        ),
    );
    let mut c = Client::connect(addr);
    c.expect("220 *");
    for _ in 0..3 {
        c.send("FROBNICATE");
        c.expect("500 *");
    }
    let mut next = Client::connect(addr);
    next.expect("554 5.7.1 Client address [127.0.0.1] temporarily banned*");
    let mut row = String::new();
    for _ in 0..50 {
        row = sqlite(
            &db,
            "SELECT kind, value, action, source, expires_at - unixepoch() > 86000 \
             FROM access_rules",
        );
        if !row.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(row, "ip|127.0.0.1|block|auto|1");
}

/// Ten wrong IMAP passwords from `source`, over ten parallel connections (Dovecot delays
/// each failure by two seconds), with a raw client so the source address can be chosen.
fn fail_imap_logins(imap: SocketAddr, source: &str, user: &str) {
    let script = r#"
import socket, sys, threading
host, port, src, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def attempt(i):
    s = socket.create_connection((host, port), timeout=30, source_address=(src, 0))
    f = s.makefile('rb')
    f.readline()
    s.sendall(b'a LOGIN ' + user.encode() + b' wrong-password-%d\r\n' % i)
    line = f.readline()
    assert line.startswith(b'a NO'), line
    s.sendall(b'b LOGOUT\r\n')
    f.read()
    s.close()
ts = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
[t.start() for t in ts]
[t.join() for t in ts]
"#;
    let out = Command::new(require_program("python3", "python3"))
        .arg("-c")
        .arg(script)
        .arg(imap.ip().to_string())
        .arg(imap.port().to_string())
        .arg(source)
        .arg(user)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root with the appliance database (made by `fugu domain add`) and the provisioner's
/// generated ban table pointed at it.
fn appliance_db(root: &Root) -> std::path::PathBuf {
    root.fugu(&["domain", "add", "example.org"]).success();
    let block = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../provisioner/tests/golden/default/access-block.conf"),
    )
    .unwrap()
    .replace("/var/lib/fugu/fugu.db", &root.db().display().to_string());
    root.write("access-block.conf", &block)
}

/// `fugu provision --once` of the packet-filter outputs into the root; returns the pf
/// brute-force table and the nftables ruleset.
fn render_filters(root: &Root) -> (String, String) {
    root.provision_once(
        "hostname = \"mail.example.org\"\n[provision]\noutputs = [\"pf\", \"nftables\"]\n",
    );
    let read = |p: &str| std::fs::read_to_string(root.join("generated").join(p)).unwrap();
    (read("pf/fugu_bruteforce"), read("nft/fugu.nft"))
}

/// One swaks session over implicit TLS from `source`: AUTH PLAIN with a wrong password.
fn swaks_wrong_auth(server: SocketAddr, source: &str) -> String {
    let out = Command::new(require_program("swaks", "swaks"))
        .args(["--server", &server.ip().to_string(), "--port"])
        .arg(server.port().to_string())
        .args([
            "--local-interface",
            source,
            "--tlsc",
            "--quit-after",
            "AUTH",
        ])
        .args(["--auth", "PLAIN", "--auth-user", "alice@example.org"])
        .args(["--auth-password", "not-her-password"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ten_wrong_auth_attempts_ban_the_address_in_the_database_and_the_packet_filter() {
    let root = Root::new();
    let block = appliance_db(&root);
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=mx.example.org", "-keyout"])
        .arg(root.join("key.pem"))
        .arg("-out")
        .arg(root.join("cert.pem"))
        .output()
        .unwrap();
    assert!(st.status.success());
    std::fs::set_permissions(
        root.join("key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let hash = root.fugu_stdin(&["encrypt"], "her-password\n");
    let creds = root.write(
        "credentials",
        &format!("alice@example.org {}", hash.success().trim()),
    );
    let port = free_port();
    let conf = root.write(
        "smtpd.conf",
        &format!(
            "pki mx.example.org cert \"{c}\"\npki mx.example.org key \"{k}\"\ntable creds file:{creds}\n\
             table access_block \"sqlite:{block}\"\naccess block connect <access_block>\n\
             access ban <access_block> auth-failures 10 within 10m for 24h\n\
             listen on 127.0.0.1 port {port} smtps pki mx.example.org auth <creds>\n\
             action \"l\" mbox\nmatch for local action \"l\"\n",
            c = root.join("cert.pem").display(),
            k = root.join("key.pem").display(),
            creds = creds.display(),
            block = block.display(),
        ),
    );
    root.fugu(&["smtpd", "-n", "-f", conf.to_str().unwrap()])
        .success();
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let _smtpd = Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(server, Duration::from_secs(10));

    // Ten sessions at once: each failure is held for a second, as OpenSMTPD does.
    let attempts: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || swaks_wrong_auth(server, "127.0.0.2")))
        .collect();
    for a in attempts {
        let out = a.join().unwrap();
        assert!(out.contains("535 5.7.8"), "{out}");
    }
    // Refused at once, before anything is exported to the packet filter.
    let out = swaks_wrong_auth(server, "127.0.0.2");
    assert!(
        out.contains("554 5.7.1 Client address [127.0.0.2]"),
        "{out}"
    );
    // Other clients are still served.
    let out = swaks_wrong_auth(server, "127.0.0.1");
    assert!(out.contains("535 5.7.8"), "{out}");

    let mut row = String::new();
    for _ in 0..50 {
        row = sqlite(
            &root.db(),
            "SELECT kind, value, action, source FROM access_rules",
        );
        if !row.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(row, "ip|127.0.0.2|block|auto");
    let (pf, nft) = render_filters(&root);
    assert!(pf.lines().any(|l| l == "127.0.0.2"), "{pf}");
    assert!(nft.contains("127.0.0.2 timeout"), "{nft}");

    // After the ban's end, the next render drops it.
    sqlite(
        &root.db(),
        "UPDATE access_rules SET expires_at = unixepoch() - 1;",
    );
    let (pf, nft) = render_filters(&root);
    assert!(!pf.contains("127.0.0.2"), "{pf}");
    assert!(!nft.contains("127.0.0.2"), "{nft}");
}

#[test]
fn ten_failed_imap_logins_in_dovecots_log_ban_the_address_until_it_expires() {
    use fugu_tests::dovecot::{Dovecot, User};
    let root = Root::new();
    appliance_db(&root);
    let dovecot = Dovecot::start(&[User::new("alice@example.org", "her-password")]);
    fail_imap_logins(
        dovecot.endpoints.imap.unwrap(),
        "127.0.0.3",
        "alice@example.org",
    );
    let log = dovecot.config().with_file_name("dovecot.log");
    // Dovecot writes the log line as the connection closes.
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("auth failed").count() >= 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = root.fugu(&["ctl", "ingest-log", log.to_str().unwrap()]);
    assert!(
        out.success().contains("banned 127.0.0.3 until"),
        "{}",
        out.stdout
    );
    let row = sqlite(
        &root.db(),
        "SELECT kind, value, action, source, expires_at - unixepoch() > 86000 FROM access_rules",
    );
    assert_eq!(row, "ip|127.0.0.3|block|auto|1");
    let (pf, nft) = render_filters(&root);
    assert!(pf.lines().any(|l| l == "127.0.0.3"), "{pf}");
    assert!(nft.contains("127.0.0.3 timeout"), "{nft}");

    sqlite(
        &root.db(),
        "UPDATE access_rules SET expires_at = unixepoch() - 1;",
    );
    let (pf, nft) = render_filters(&root);
    assert!(!pf.contains("127.0.0.3"), "{pf}");
    assert!(!nft.contains("127.0.0.3"), "{nft}");
}

fn greylist_smtpd(root: &Root, port: u16) -> Child {
    let conf = root.write(
        "greylist.conf",
        &format!(
            "greylist\nlisten on 127.0.0.1 port {port}\n\
             action \"l\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"bob@example.org\" = \"{}\" }}\n\
             match from any for domain \"example.org\" action \"l\"\n",
            root.join("mail").display(),
            whoami(),
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let child = Child::spawn("fugu smtpd", cmd, &root.join("greylist.log"));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    );
    child
}

/// One transaction up to RCPT; returns the RCPT reply's last line.
fn rcpt(port: u16) -> String {
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    c.expect("220 *");
    c.send("EHLO client.remote.example");
    c.expect("250 *");
    c.send("MAIL FROM:<sender@remote.example>");
    c.expect("250 *");
    c.send("RCPT TO:<bob@example.org>");
    let reply = c.reply().last().cloned().unwrap_or_default();
    c.send("QUIT");
    reply
}

#[test]
fn greylisting_defers_a_new_triplet_until_the_pass_time_even_across_a_restart() {
    let root = Root::new();
    let port = free_port();
    let smtpd = greylist_smtpd(&root, port);
    assert_eq!(rcpt(port), "451 4.7.1 Greylisted, please try again later");
    assert_eq!(rcpt(port), "451 4.7.1 Greylisted, please try again later");
    drop(smtpd);

    // The state outlives the daemon; age the triplet past the 25 minute pass time as
    // 26 minutes of waiting would.
    let state = root.join("spool/state.db");
    assert_eq!(
        sqlite(
            &state,
            "SELECT network, sender, recipient, attempts FROM grey;"
        ),
        "127.0.0.0/24|sender@remote.example|bob@example.org|2"
    );
    sqlite(&state, "UPDATE grey SET first_seen = first_seen - 26 * 60;");
    let _smtpd = greylist_smtpd(&root, port);
    assert_eq!(
        rcpt(port),
        "250 2.1.5 Destination address valid: Recipient ok"
    );
    // The network is now white: a new triplet from it passes at once.
    assert!(sqlite(&state, "SELECT network FROM white;").contains("127.0.0.0/24"));
}

#[test]
fn spf_walk_output_imports_as_allow_rules_and_block_lists_as_feeds() {
    let root = Root::new();
    appliance_db(&root);
    let dns = Unbound::start(
        &root.join("dns"),
        free_port(),
        &[Zone::new(
            "senders.example",
            "@ IN TXT \"v=spf1 ip4:192.0.2.0/24 a:out.senders.example -all\"\n\
             out IN A 198.51.100.25\n",
        )],
    );
    let resolver = dns.addr().to_string();
    let walk = root.fugu_stdin(
        &["ctl", "spf", "walk", "--resolver", &resolver],
        "senders.example\n",
    );
    assert_eq!(walk.success(), "192.0.2.0/24\n198.51.100.25\n");
    let out = root.fugu_stdin(
        &["ctl", "allowlist", "import", "--expires", "30d", "-"],
        &walk.stdout,
    );
    assert_eq!(
        out.success(),
        "2 allow rule(s) imported from standard input\n"
    );
    let list = root.write(
        "spamd-list.txt",
        "# a spamd.conf method=file list\n203.0.113.0 - 203.0.113.127\n2001:db8:bad::/48\n",
    );
    let out = root.fugu(&["ctl", "blocklist", "import", list.to_str().unwrap()]);
    assert!(
        out.success().starts_with("2 block rule(s)"),
        "{}",
        out.stdout
    );
    assert_eq!(
        sqlite(
            &root.db(),
            "SELECT kind, value, action, source, expires_at IS NOT NULL FROM access_rules \
             ORDER BY action, value;",
        ),
        "cidr|192.0.2.0/24|allow|manual|1\n\
         ip|198.51.100.25|allow|manual|1\n\
         cidr|2001:db8:bad::/48|block|feed|0\n\
         cidr|203.0.113.0/25|block|feed|0"
    );
}

#[test]
fn a_host_we_delivered_to_is_not_greylisted() {
    let root = Root::new();
    // The remote server: accepts mail for remote.example.
    let remote_port = free_port();
    let remote = root.write(
        "remote.conf",
        &format!(
            "listen on 127.0.0.1 port {remote_port}\n\
             action \"l\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"carol@remote.example\" = \"{}\" }}\n\
             match from any for domain \"remote.example\" action \"l\"\n",
            root.join("remote-mail").display(),
            whoami(),
        ),
    );
    let cmd = smtpd_command(&remote, &root.join("remote-spool"));
    let _remote = Child::spawn("remote smtpd", cmd, &root.join("remote.log"));
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], remote_port)),
        Duration::from_secs(10),
    );

    // Ours greylists, and relays mail from local clients to the remote server.
    let port = free_port();
    let conf = root.write(
        "ours.conf",
        &format!(
            "greylist\nlisten on 127.0.0.1 port {port}\n\
             action \"l\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"bob@example.org\" = \"{}\" }}\n\
             action \"out\" relay host smtp://127.0.0.1:{remote_port}\n\
             match from any for domain \"example.org\" action \"l\"\n\
             match from local for any action \"out\"\n",
            root.join("mail").display(),
            whoami(),
        ),
    );
    let cmd = smtpd_command(&conf, &root.join("spool"));
    let ours = Child::spawn("fugu smtpd", cmd, &root.join("ours.log"));
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(server, Duration::from_secs(10));

    let mut c = Client::connect(server);
    c.expect("220 *");
    c.send("EHLO client.example.org");
    c.expect("250 *");
    c.send("MAIL FROM:<bob@example.org>");
    c.expect("250 *");
    c.send("RCPT TO:<carol@remote.example>");
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    c.send("Subject: hello\r\n\r\nhi carol\r\n.");
    c.expect("250 *");
    c.send("QUIT");

    let state = root.join("spool/state.db");
    let mut white = String::new();
    for _ in 0..100 {
        white = sqlite(&state, "SELECT network, outbound FROM white;");
        if !white.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(white, "127.0.0.0/24|1", "{}", ours.log());
    // The remote host's answer to bob is not delayed.
    assert_eq!(
        rcpt(port),
        "250 2.1.5 Destination address valid: Recipient ok"
    );
}

/// The first `nameserver` of /etc/resolv.conf: where a daemon without a `resolver` line
/// sends its questions, like the libc resolver.
fn system_nameserver() -> std::net::IpAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nameserver"))
        .and_then(|s| s.trim().parse().ok())
        .expect("a nameserver line in /etc/resolv.conf")
}

#[test]
fn without_a_resolver_line_block_lists_are_asked_through_the_system_resolver() {
    fugu_tests::netns::run(|| {
        let root = Root::new();
        // In this namespace the system's name server address is ours: unbound on port 53.
        let ns = system_nameserver();
        if !ns.is_loopback() {
            let st = Command::new(require_program("ip", "iproute2"))
                .args(["addr", "add", &ns.to_string(), "dev", "lo"])
                .status()
                .unwrap();
            assert!(st.success());
        }
        let _dns = Unbound::start_on(
            &root.join("dns"),
            ns,
            53,
            &[Zone::new("listed.example", "1.0.0.127 IN A 127.0.0.2\n")],
        );
        let (_smtpd, addr) = smtpd(&root, "system", "dnsbl zone listed.example\n");
        let mut c = Client::connect(addr);
        c.expect("554 5.7.1 Client address [127.0.0.1] listed by listed.example");
    });
}

#[test]
fn database_rules_refuse_clients_senders_and_recipients_and_allow_wins() {
    let root = Root::new();
    appliance_db(&root);
    let generated =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../provisioner/tests/golden/default");
    let mut tables = String::new();
    for name in ["block", "allow", "recipient"] {
        let text = std::fs::read_to_string(generated.join(format!("access-{name}.conf")))
            .unwrap()
            .replace("/var/lib/fugu/fugu.db", &root.db().display().to_string());
        let file = root.write(&format!("access-{name}.conf"), &text);
        tables.push_str(&format!(
            "table access_{name} \"sqlite:{}\"\n",
            file.display()
        ));
    }
    sqlite(
        &root.db(),
        "INSERT INTO access_rules (kind, value, action) VALUES
             ('cidr', '127.0.0.0/30', 'block'),
             ('ip', '127.0.0.1', 'allow'),
             ('domain', 'spam.example', 'block'),
             ('sender', 'friend@spam.example', 'allow'),
             ('recipient', 'abuse-me@example.org', 'block');",
    );
    let (_smtpd, addr) = smtpd(
        &root,
        "rules",
        &format!(
            "{tables}access allow connect <access_allow>\naccess allow sender <access_allow>\n\
             access block connect <access_block>\naccess block sender <access_block>\n\
             access block recipient <access_recipient>\n\
             action \"d\" maildir \"{}/%{{rcpt.user}}\" virtual {{ \"@example.org\" = \"{}\" }}\n\
             match from any for domain \"example.org\" action \"d\"\n",
            root.join("mail").display(),
            whoami(),
        ),
    );
    // 127.0.0.2 is inside the blocked /30; 127.0.0.1 too, but it is allow-listed.
    let out = Command::new(require_program("swaks", "swaks"))
        .args(["--server", &addr.ip().to_string(), "--port"])
        .arg(addr.port().to_string())
        .args(["--local-interface", "127.0.0.2", "--quit-after", "CONNECT"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("554 5.7.1 Client address [127.0.0.2] blocked by policy"),
        "{out}"
    );

    let mut c = Client::connect(addr);
    c.expect("220 *");
    c.send("EHLO client.example.net");
    c.expect("250 *");
    c.send("MAIL FROM:<bulk@spam.example>");
    c.expect("550 5.7.1 Sender address blocked by policy");
    c.send("MAIL FROM:<friend@spam.example>");
    c.expect("250 *");
    c.send("RCPT TO:<abuse-me@example.org>");
    c.expect("550 5.7.1 Recipient address blocked by policy");
    c.send("QUIT");
    c.expect("221 *");
}

#[test]
fn the_follow_watcher_bans_from_new_log_lines_and_console_sign_in_failures() {
    let root = Root::new();
    appliance_db(&root);
    let log = root.write("dovecot.log", "");
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "ingest-log", "--follow"])
        .arg(&log)
        .env("FUGU_DB", root.db());
    let _watcher = Child::spawn("ingest-log", cmd, &root.join("ingest.log"));

    // Real Dovecot lines (the fixture), stamped with the current time.
    let out = Command::new("date")
        .args(["-u", "+%b %d %H:%M:%S"])
        .output()
        .unwrap();
    let now = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../mta/tests/fixtures/access/dovecot-2.3.19.log"),
    )
    .unwrap();
    let lines: String = fixture
        .lines()
        .map(|l| format!("{now}{}\n", &l[15..]))
        .collect();
    // The console (admin-web) records failed sign-ins per address.
    sqlite(
        &root.db(),
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
         INSERT INTO login_failures (key, at) SELECT 'ip:192.0.2.66', unixepoch() FROM n;",
    );
    // The watcher's pass over the database bans that address: it is running.
    assert_eq!(wait_for_blocks(&root, 1), "192.0.2.66|auto");
    // Lines Dovecot writes later are read as they come.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()))
        .unwrap();
    assert_eq!(wait_for_blocks(&root, 2), "127.0.0.3|auto\n192.0.2.66|auto");
}

/// The block rules once there are `n` of them (or what there is after ten seconds).
fn wait_for_blocks(root: &Root, n: usize) -> String {
    let mut rows = String::new();
    for _ in 0..100 {
        rows = sqlite(
            &root.db(),
            "SELECT value, source FROM access_rules WHERE action = 'block' ORDER BY value;",
        );
        if rows.lines().count() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rows
}
