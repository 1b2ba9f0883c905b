//! The rendered files read by the real programs: Dovecot started from the generated
//! `dovecot.conf`, OpenSMTPD's `smtpd -n`, and `nft -c -f`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dovecot::{Dovecot, Endpoints, ensure_vmail};
use fugu_tests::smtp::Client;
use fugu_tests::{free_port, require_program};
use password::Scheme;
use provisioner::{Config, Output, render, run_once};
use store::{DomainName, EmailAddress, NewUser, Store};

use crate::fixture;

/// A test root Dovecot's unprivileged processes can reach, with a store whose vmail
/// settings point at the real `vmail` user.
struct Appliance {
    dir: tempfile::TempDir,
    store: Store,
    config: Config,
    imap: std::net::SocketAddr,
}

impl Appliance {
    async fn new() -> Appliance {
        let (uid, gid) = ensure_vmail();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let vmail = dir.path().join("vmail");
        std::fs::create_dir(&vmail).unwrap();
        std::os::unix::fs::chown(&vmail, Some(uid), Some(gid)).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/dovecot")).unwrap();

        let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
        store
            .set_setting("vmail_uid", &uid.to_string())
            .await
            .unwrap();
        store
            .set_setting("vmail_gid", &gid.to_string())
            .await
            .unwrap();
        store
            .set_setting("vmail_home", &vmail.display().to_string())
            .await
            .unwrap();

        let imap = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = Config::under_root(dir.path());
        config.dovecot.protocols = vec!["imap".into(), "lmtp".into()];
        config.dovecot.listen = vec!["127.0.0.1".into()];
        config.dovecot.imap_port = imap.port();
        config.dovecot.first_valid_uid = uid;
        // Dovecot's auth process runs as `dovecot`: it reads the passwd-file by group.
        config.dovecot.passwd_group = Some("dovecot".into());
        config.set_owners = true;
        Appliance {
            dir,
            store,
            config,
            imap,
        }
    }

    async fn add_user(&self, address: &str, hash: &str, quota_bytes: u64) {
        let address = EmailAddress::parse(address).unwrap();
        if self.store.domain(address.domain()).await.unwrap().is_none() {
            self.store.add_domain(address.domain(), "").await.unwrap();
        }
        self.store
            .add_user(&NewUser {
                address,
                password_hash: hash.into(),
                display_name: String::new(),
                quota_bytes,
            })
            .await
            .unwrap();
    }

    fn start_dovecot(&self) -> Dovecot {
        Dovecot::start_with_config(
            &self.config.paths.dovecot_conf,
            Endpoints {
                imap: Some(self.imap),
                lmtp_socket: Some(self.config.lmtp_socket.clone()),
                ..Endpoints::default()
            },
        )
    }

    fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

static NEXT_CLIENT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

/// `doveadm auth test`: whether Dovecot accepts the login, with its output. Each call
/// comes from its own client address: Dovecot's penalty for repeated failures from one
/// address grows to 15 s.
fn auth_test(config: &Path, user: &str, password: &str) -> (bool, String) {
    let n = NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let o = Command::new(require_program("doveadm", "dovecot-core"))
        .arg("-c")
        .arg(config)
        .args([
            "auth",
            "test",
            "-x",
            &format!("rip=127.0.3.{n}"),
            user,
            password,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn assert_auth(b: &Appliance, user: &str, password: &str, expect: bool) {
    let (ok, out) = auth_test(&b.config.paths.dovecot_conf, user, password);
    assert_eq!(
        ok,
        expect,
        "doveadm auth test {user} {password}: {out}\ndovecot log:\n{}",
        b.dovecot_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dovecot_accepts_each_hash_scheme_and_refuses_disabled_users_and_wrong_passwords() {
    let b = Appliance::new().await;
    let argon = password::hash("alice-pw", Scheme::Argon2id).unwrap();
    let bcrypt = password::hash("bob-pw", Scheme::Bcrypt).unwrap();
    b.add_user("alice@example.org", &argon, 0).await;
    b.add_user("bob@example.org", &bcrypt, 0).await;
    b.add_user("carol@example.org", fixture::SHA512_CRYPT, 0)
        .await;
    b.add_user("dave@example.org", &argon, 0).await;
    b.add_user("eve@disabled.example", &argon, 0).await;
    let dave = EmailAddress::parse("dave@example.org").unwrap();
    b.store.set_user_active(&dave, false).await.unwrap();
    let disabled = DomainName::parse("disabled.example").unwrap();
    b.store.set_domain_active(&disabled, false).await.unwrap();

    run_once(&b.store, &b.config, false).await.unwrap();
    let _dovecot = b.start_dovecot();

    assert_auth(&b, "alice@example.org", "alice-pw", true);
    assert_auth(&b, "bob@example.org", "bob-pw", true);
    assert_auth(&b, "carol@example.org", "secret", true);
    // Logins are case-insensitive, as the stored addresses are lower-case.
    assert_auth(&b, "Alice@Example.ORG", "alice-pw", true);

    // Each refusal costs Dovecot's 2 s failure delay: ask in parallel.
    std::thread::scope(|s| {
        for (user, password) in [
            ("alice@example.org", "bob-pw"),
            ("bob@example.org", "wrong"),
            ("dave@example.org", "alice-pw"),
            ("eve@disabled.example", "alice-pw"),
            ("nobody@example.org", "alice-pw"),
        ] {
            let b = &b;
            s.spawn(move || assert_auth(b, user, password, false));
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_applies_a_password_change_within_two_seconds_and_dovecot_follows() {
    let b = Appliance::new().await;
    // bcrypt keeps the test quick; the scheme does not matter to watch.
    let old = password::hash("old-pw", Scheme::Bcrypt).unwrap();
    b.add_user("alice@example.org", &old, 0).await;
    run_once(&b.store, &b.config, false).await.unwrap();
    let _dovecot = b.start_dovecot();
    assert_auth(&b, "alice@example.org", "old-pw", true);

    // As on a real box: Dovecot reloads after the passwd-file changes (it would otherwise
    // notice within a second, as it stats the file at most once a second).
    let mut config = b.config.clone();
    config.reload.insert(
        Output::Dovecot,
        vec![vec![
            "doveadm".into(),
            "-c".into(),
            config.paths.dovecot_conf.display().to_string(),
            "reload".into(),
        ]],
    );
    let watcher = tokio::spawn({
        let store = b.store.clone();
        async move { provisioner::watch(&store, &config).await }
    });
    // Let watch's first (no-op) apply pass.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let new = password::hash("new-pw", Scheme::Bcrypt).unwrap();
    let alice = EmailAddress::parse("alice@example.org").unwrap();
    let changed_at = Instant::now();
    b.store.set_password_hash(&alice, &new).await.unwrap();
    let passwd = &b.config.paths.dovecot_passwd;
    while !std::fs::read_to_string(passwd).unwrap().contains(&new) {
        assert!(
            changed_at.elapsed() < Duration::from_secs(2),
            "the passwd-file did not follow the database within 2 s"
        );
        assert!(!watcher.is_finished(), "watch stopped: {:?}", watcher.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // `doveadm reload` restarts the auth service: its socket is briefly away, and until
    // the new auth process answers, the old one may still answer from the passwd-file
    // it read (it stats the file at most once a second). Either way, within 5 s.
    let reloaded_by = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, out) = auth_test(&b.config.paths.dovecot_conf, "alice@example.org", "new-pw");
        if ok {
            break;
        }
        assert!(
            Instant::now() < reloaded_by,
            "the new password is still refused after 5 s: {out}\n{}",
            b.dovecot_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_auth(&b, "alice@example.org", "old-pw", false);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn lmtp_files_spam_into_junk_and_refuses_an_over_quota_recipient_at_rcpt() {
    let b = Appliance::new().await;
    let hash = password::hash("pw", Scheme::Bcrypt).unwrap();
    b.add_user("alice@example.org", &hash, 0).await;
    b.add_user("tiny@example.org", &hash, 0).await;
    run_once(&b.store, &b.config, false).await.unwrap();
    let dovecot = b.start_dovecot();

    let mut lmtp = Client::connect_unix(&b.config.lmtp_socket);
    lmtp.expect("220 *");
    lmtp.send("LHLO test.example");
    lmtp.expect("250*");
    lmtp.send("MAIL FROM:<sender@example.net>");
    lmtp.expect("250*");
    lmtp.send("RCPT TO:<alice@example.org>");
    lmtp.expect("250*");
    lmtp.send("DATA");
    lmtp.expect("354*");
    lmtp.send_raw(b"Subject: cheap pills\r\nX-Spam-Flag: YES\r\n\r\nbuy now\r\n.\r\n");
    lmtp.expect("250*");
    lmtp.send("MAIL FROM:<sender@example.net>");
    lmtp.expect("250*");
    lmtp.send("RCPT TO:<alice@example.org>");
    lmtp.expect("250*");
    lmtp.send("DATA");
    lmtp.expect("354*");
    lmtp.send_raw(b"Subject: hello\r\n\r\nlunch?\r\n.\r\n");
    lmtp.expect("250*");

    // tiny stores one message while unlimited; then the console sets a one-byte quota.
    lmtp.send("MAIL FROM:<sender@example.net>");
    lmtp.expect("250*");
    lmtp.send("RCPT TO:<tiny@example.org>");
    lmtp.expect("250*");
    lmtp.send("DATA");
    lmtp.expect("354*");
    lmtp.send_raw(b"Subject: fills the quota\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxx\r\n.\r\n");
    lmtp.expect("250*");
    let tiny = EmailAddress::parse("tiny@example.org").unwrap();
    b.store.set_user_quota(&tiny, 1).await.unwrap();
    run_once(&b.store, &b.config, false).await.unwrap();
    // Dovecot stats the passwd-file at most once a second (`doveadm reload`, the
    // default reload command, makes it immediate).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    lmtp.send("QUIT");
    let mut lmtp = Client::connect_unix(&b.config.lmtp_socket);
    lmtp.expect("220 *");
    lmtp.send("LHLO test.example");
    lmtp.expect("250*");
    lmtp.send("MAIL FROM:<sender@example.net>");
    lmtp.expect("250*");
    lmtp.send("RCPT TO:<tiny@example.org>");
    lmtp.expect("552 5.2.2 *");
    lmtp.send("QUIT");

    let junk = dovecot.imap_fetch("alice@example.org", "pw", "Junk");
    let inbox = dovecot.imap_fetch("alice@example.org", "pw", "INBOX");
    let subjects = |msgs: &[Vec<u8>]| -> Vec<bool> {
        msgs.iter()
            .map(|m| String::from_utf8_lossy(m).contains("cheap pills"))
            .collect()
    };
    assert_eq!(
        subjects(&junk),
        vec![true],
        "Junk; dovecot log:\n{}",
        b.dovecot_log()
    );
    assert_eq!(subjects(&inbox), vec![false], "INBOX");
}

fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let o = Command::new(require_program("openssl", "openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "30", "-subj"])
        .arg(format!("/CN={name}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

const OPENSMTPD: &str = "/opt/fugu-test/opensmtpd/usr/sbin/smtpd";

fn smtpd_check(conf: &Path) -> (bool, String) {
    assert!(
        Path::new(OPENSMTPD).exists(),
        "real OpenSMTPD is missing: run scripts/install-test-deps"
    );
    let o = Command::new(OPENSMTPD)
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test]
async fn real_opensmtpd_accepts_the_opensmtpd_rendering_and_not_fugus_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let mut snapshot = fixture::snapshot();
    let (chain, key) = self_signed(dir.path(), "mail.example.org");
    let mut cert = snapshot.certificates[2].clone();
    cert.chain_pem = chain;
    cert.key_pem = key;
    snapshot.certificates = vec![cert];
    let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
    drop(store);

    let mut config = Config::under_root(dir.path());
    config.hostname = "mail.example.org".into();
    config.mta.listen = vec!["127.0.0.1".into()];
    config.opensmtpd = true;
    provisioner::apply(&render(&snapshot, &config), &config).unwrap();
    std::fs::write(&config.mta.local_include, "# nothing local\n").unwrap();
    let (ok, out) = smtpd_check(&config.paths.smtpd_conf);
    assert!(ok, "smtpd -n refused the --opensmtpd rendering:\n{out}");
    assert!(out.contains("configuration OK"), "{out}");

    config.opensmtpd = false;
    provisioner::apply(&render(&snapshot, &config), &config).unwrap();
    let (ok, out) = smtpd_check(&config.paths.smtpd_conf);
    assert!(!ok, "real OpenSMTPD should not know dkim-sign:\n{out}");
}

#[test]
fn nft_accepts_the_rendered_ruleset() {
    let nft = require_program("nft", "nftables");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::under_root(dir.path());
    config.outputs = [Output::Nftables].into_iter().collect();
    let files = render(&fixture::snapshot(), &config);
    provisioner::apply(&files, &config).unwrap();
    let ruleset: &PathBuf = &config.paths.nft_ruleset;
    // -c checks against the kernel without changing the live ruleset.
    let o = Command::new(nft)
        .arg("-c")
        .arg("-f")
        .arg(ruleset)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nft -c -f refused the ruleset: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(ruleset).unwrap()
    );
}

/// Real OpenSMTPD, started from the `--opensmtpd` rendering. 6.8 keeps its queue in the
/// compiled-in `/var/spool/smtpd` and its control socket in `/var/run/smtpd.sock`, so only
/// one can run on the machine; 7.4 runs in a private mount namespace with its own. Either is
/// stopped (by its pid) when the test ends.
struct OpenSmtpd {
    child: std::process::Child,
    log: PathBuf,
}

/// Where scripts/install-test-deps unpacks bookworm-backports' OpenSMTPD 7.4, with
/// `-extras`' table backends copied into its libexec dir.
const OPENSMTPD_74: &str = "/opt/fugu-test/opensmtpd74";

/// Runs as `sh -c SCRIPT sh ROOT CONF` under `unshare --mount`: 7.4 execs its helpers and
/// table backends from the same compiled-in `/usr/libexec/opensmtpd` as the 6.8 unpack, and
/// shares its spool and socket paths, so it gets its own of each and cannot meet a 6.8 run.
const ISOLATE_74: &str = r#"set -e
mount -t tmpfs -o mode=0755 tmpfs /var/spool
mkdir -m 0711 /var/spool/smtpd
mount -t tmpfs -o mode=0755 tmpfs /run
mount --bind "$1/usr/libexec/opensmtpd" /usr/libexec/opensmtpd
exec "$1/usr/sbin/smtpd" -d -f "$2"
"#;

impl OpenSmtpd {
    /// Debian 6.8.0p2, in the machine's own namespace.
    fn start(conf: &Path, log: PathBuf, port: u16) -> OpenSmtpd {
        let mut command = Command::new(OPENSMTPD);
        command.arg("-d").arg("-f").arg(conf);
        OpenSmtpd::spawn(command, log, port)
    }

    /// bookworm-backports' 7.4, which completes TLS handshakes with OpenSSL 3.
    fn start_74(conf: &Path, log: PathBuf, port: u16) -> OpenSmtpd {
        assert!(
            Path::new(OPENSMTPD_74)
                .join("usr/libexec/opensmtpd/table-sqlite")
                .exists(),
            "OpenSMTPD 7.4 is missing: run scripts/install-test-deps"
        );
        // Without --fork, unshare execs sh, which execs smtpd: the child's pid is smtpd's.
        let mut command = Command::new(require_program("unshare", "util-linux"));
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                ISOLATE_74,
            ])
            .args(["sh", OPENSMTPD_74])
            .arg(conf);
        OpenSmtpd::spawn(command, log, port)
    }

    fn spawn(mut command: Command, log: PathBuf, port: u16) -> OpenSmtpd {
        // The Debian build's privilege-separation users (scripts/install-test-deps makes
        // them too) and its chroot.
        for user in ["opensmtpd", "opensmtpq"] {
            let known = Command::new("id")
                .arg(user)
                .output()
                .unwrap()
                .status
                .success();
            if !known {
                let o = Command::new("useradd")
                    .args([
                        "-r",
                        "-d",
                        "/var/lib/opensmtpd/empty",
                        "-s",
                        "/usr/sbin/nologin",
                    ])
                    .arg(user)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            }
        }
        std::fs::create_dir_all("/var/lib/opensmtpd/empty").unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut smtpd = OpenSmtpd { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                smtpd.child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "OpenSMTPD did not start:\n{}",
                smtpd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        smtpd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OpenSmtpd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Renders the `--opensmtpd` pair for `b`'s database, with a certificate (so the pki,
/// smtps and submission listeners load) and every listener on a free loopback port.
async fn render_for_opensmtpd(b: &mut Appliance) {
    let (chain, key) = self_signed(b.dir.path(), "mail.example.org");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.store
        .add_certificate(&store::NewCertificate {
            names: vec!["mail.example.org".into()],
            chain_pem: chain,
            key_pem: key,
            not_before: now - 60,
            not_after: now + 30 * 86_400,
            source: store::CertificateSource::Manual,
            acme_account_id: None,
        })
        .await
        .unwrap();

    b.config.hostname = "mail.example.org".into();
    b.config.opensmtpd = true;
    b.config.mta.listen = vec!["127.0.0.1".into()];
    b.config.mta.smtp_port = free_port();
    b.config.mta.smtps_port = free_port();
    b.config.mta.submission_port = free_port();
    b.config.mta.loopback_port = Some(free_port());
    // mail.lmtp runs as the recipient's userbase uid: vmail.
    b.config.dovecot.lmtp_socket_user = Some("vmail".into());
    run_once(&b.store, &b.config, false).await.unwrap();
    std::fs::write(&b.config.mta.local_include, "# nothing local\n").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_opensmtpd_reads_the_database_checks_recipients_and_delivers_over_lmtp() {
    let mut b = Appliance::new().await;
    let alice_hash = password::hash("alice-pw", Scheme::Bcrypt).unwrap();
    b.add_user("alice@example.org", &alice_hash, 0).await;
    // With a certificate the whole rendering loads: pki, smtps and submission listeners.
    // No TLS session is tried: Debian 12's OpenSMTPD 6.8.0p2 cannot complete a handshake
    // with OpenSSL 3 (OpenSMTPD issue #1171), and it offers AUTH only after TLS, so the
    // `$2b$` login on submission is shown with 7.4 below. Every key path of 6.8's privsep
    // engine fails in the pony process, tried by hand with `smtpd -d -v`:
    //   P-256 key:  ecdsae_do_sign: "elliptic curve routines::missing private key"
    //   RSA, ECDHE: rsae_priv_enc:  "rsa routines::missing private key"
    //   RSA, kRSA (TLS 1.2 AES128-SHA256): rsae_priv_dec, rsae_bn_mod_exp:
    //               "rsa routines::missing private key", "Provider routines::failed to decrypt"
    render_for_opensmtpd(&mut b).await;
    let dovecot = b.start_dovecot();
    let smtpd = OpenSmtpd::start(
        &b.config.paths.smtpd_conf,
        b.dir.path().join("smtpd.log"),
        b.config.mta.smtp_port,
    );

    let mut smtp = Client::connect(([127, 0, 0, 1], b.config.mta.smtp_port).into());
    smtp.expect("220 *");
    smtp.send("EHLO client.example.net");
    smtp.expect("250*");
    smtp.send("MAIL FROM:<carol@example.net>");
    smtp.expect("250*");
    smtp.send("RCPT TO:<nobody@example.org>");
    smtp.expect("550*");
    smtp.send("RCPT TO:<alice@example.org>");
    smtp.expect("250*");
    smtp.send("DATA");
    smtp.expect("354*");
    smtp.send_raw(b"Subject: through real OpenSMTPD\r\n\r\nhello alice\r\n.\r\n");
    smtp.expect("250*");
    smtp.send("QUIT");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inbox = dovecot.imap_fetch("alice@example.org", "alice-pw", "INBOX");
        if inbox
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains("through real OpenSMTPD"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered over LMTP\nsmtpd log:\n{}\ndovecot log:\n{}",
            smtpd.log(),
            b.dovecot_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// swaks: EHLO, TLS (`--tls` is STARTTLS, `--tlsc` TLS on connect), AUTH PLAIN, QUIT.
/// Whether the login was accepted, with the transcript.
fn swaks_auth(port: u16, tls: &str, user: &str, password: &str) -> (bool, String) {
    let o = Command::new(require_program("swaks", "swaks"))
        .arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args([tls, "--helo", "client.example.net", "--auth", "PLAIN"])
        .args(["--auth-user", user, "--auth-password", password])
        .args(["--quit-after", "AUTH"])
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn real_opensmtpd_7_4_authenticates_a_bcrypt_user_from_the_database_after_tls() {
    let mut b = Appliance::new().await;
    // OpenSMTPD checks credentials with crypt_checkpass, which knows `$2a$`/`$2b$` bcrypt
    // only: what `password_scheme = "bcrypt"` stores.
    let alice_hash = password::hash("alice-pw", Scheme::Bcrypt).unwrap();
    assert!(alice_hash.starts_with("$2b$"), "{alice_hash}");
    b.add_user("alice@example.org", &alice_hash, 0).await;
    render_for_opensmtpd(&mut b).await;
    let smtpd = OpenSmtpd::start_74(
        &b.config.paths.smtpd_conf,
        b.dir.path().join("smtpd.log"),
        b.config.mta.submission_port,
    );
    let submission = b.config.mta.submission_port;

    let (ok, out) = swaks_auth(submission, "--tls", "alice@example.org", "alice-pw");
    assert!(
        ok && out.contains("<~  250-AUTH PLAIN") && out.contains("<~  235 "),
        "AUTH PLAIN after STARTTLS on submission:\n{out}\nsmtpd log:\n{}",
        smtpd.log()
    );
    // tls-require: the plaintext EHLO reply does not offer AUTH.
    assert!(!out.contains("<-  250-AUTH"), "{out}");

    let (ok, out) = swaks_auth(submission, "--tls", "alice@example.org", "wrong-pw");
    assert!(
        !ok && out.contains("<~* 535 "),
        "a wrong password on submission:\n{out}\nsmtpd log:\n{}",
        smtpd.log()
    );

    let (ok, out) = swaks_auth(submission, "--tls", "nobody@example.org", "alice-pw");
    assert!(
        !ok && out.contains("<~* 535 "),
        "an unknown user on submission:\n{out}\nsmtpd log:\n{}",
        smtpd.log()
    );

    let (ok, out) = swaks_auth(
        b.config.mta.smtps_port,
        "--tlsc",
        "alice@example.org",
        "alice-pw",
    );
    assert!(
        ok && out.contains("<~  235 "),
        "AUTH PLAIN on smtps:\n{out}\nsmtpd log:\n{}",
        smtpd.log()
    );
}
