//! A real Dovecot (Debian's 2.3, `dovecot-core`, `dovecot-lmtpd`, `dovecot-imapd`) run as
//! a child of the test: passwd-file users, LMTP on a unix socket and a loopback TCP port,
//! IMAP on a loopback port, Maildirs under the test's temp directory.
//!
//! Dovecot refuses to deliver mail as uid 0, and tests run as root: mail is owned by a
//! system user `vmail`, created with `useradd -r` on first use when missing (the
//! appliance's own mail user, see `docs/src/operating/queue.md`).
//!
//! [`Dovecot::start_with_config`] runs a config someone else wrote (the provisioner's),
//! waiting for the endpoints the caller names.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::wait_for_unix_socket;
use crate::process::{Child, require_program};
use crate::{free_port, wait_for_port};

/// A mailbox user in the passwd-file.
#[derive(Debug, Clone)]
pub struct User {
    /// The login, a full address (`alice@example.org`).
    pub name: String,
    pub password: String,
    /// A Dovecot quota rule value, e.g. `*:storage=1K`; an over-quota delivery then gets
    /// `452 4.2.2` (the config sets `quota_full_tempfail = yes`).
    pub quota: Option<String>,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.into(),
            password: password.into(),
            quota: None,
        }
    }

    pub fn with_quota(mut self, rule: &str) -> User {
        self.quota = Some(rule.into());
        self
    }
}

/// Where a Dovecot instance listens; each is waited for at start when present.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub imap: Option<SocketAddr>,
    pub lmtp_tcp: Option<SocketAddr>,
    pub lmtp_socket: Option<PathBuf>,
}

pub struct Dovecot {
    child: Child,
    config: PathBuf,
    pub endpoints: Endpoints,
    /// The directory holding one home (with `Maildir/`) per user, when the harness wrote
    /// the config.
    pub mail_root: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// uid and gid of the `vmail` user, creating it (system user, no home, no login) if
/// missing.
pub fn ensure_vmail() -> (u32, u32) {
    let lookup = || -> Option<(u32, u32)> {
        let id = |flag: &str| -> Option<u32> {
            let o = Command::new("id").args([flag, "vmail"]).output().ok()?;
            if !o.status.success() {
                return None;
            }
            String::from_utf8_lossy(&o.stdout).trim().parse().ok()
        };
        Some((id("-u")?, id("-g")?))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    let useradd = require_program("useradd", "passwd");
    // Another test may be creating it at the same moment: look again whatever the status.
    let _ = Command::new(useradd)
        .args([
            "-r",
            "-U",
            "-M",
            "-d",
            "/nonexistent",
            "-s",
            "/usr/sbin/nologin",
            "vmail",
        ])
        .status();
    lookup().expect("could not create the vmail user with useradd -r")
}

fn config_text(dir: &Path, e: &Endpoints, vmail: (u32, u32), instance: &str) -> String {
    let imap = e.imap.expect("imap endpoint");
    let lmtp = e.lmtp_tcp.expect("lmtp endpoint");
    let sock = e.lmtp_socket.as_ref().expect("lmtp socket");
    let d = dir.display();
    format!(
        r#"# written by fugu-tests::dovecot
instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_cache_size = 0
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_plugins = quota
passdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
namespace inbox {{
  inbox = yes
  separator = .
  mailbox Junk {{
    special_use = \Junk
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {imap_ip}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener {sock} {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = {lmtp_ip}
    port = {lmtp_port}
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins
  postmaster_address = postmaster@localhost
}}
# An LDA/LMTP setting, not a plugin one: over-quota answers 452 4.2.2, not 552.
quota_full_tempfail = yes
plugin {{
  quota = maildir:User quota
}}
"#,
        uid = vmail.0,
        gid = vmail.1,
        imap_ip = imap.ip(),
        imap_port = imap.port(),
        lmtp_ip = lmtp.ip(),
        lmtp_port = lmtp.port(),
        sock = sock.display(),
    )
}

impl Dovecot {
    /// Starts Dovecot with a config the harness writes for `users`.
    pub fn start(users: &[User]) -> Dovecot {
        let (uid, gid) = ensure_vmail();
        let dir = tempfile::Builder::new()
            .prefix("dovecot")
            .tempdir()
            .unwrap();
        // Dovecot's unprivileged login and auth processes must reach base_dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mail_root = dir.path().join("mail");
        std::fs::create_dir(&mail_root).unwrap();
        std::os::unix::fs::chown(&mail_root, Some(uid), Some(gid)).unwrap();
        let mut passwd = String::new();
        for u in users {
            let home = mail_root.join(&u.name);
            let extra = u
                .quota
                .as_ref()
                .map(|q| format!("userdb_quota_rule={q}"))
                .unwrap_or_default();
            passwd.push_str(&format!(
                "{}:{{PLAIN}}{}:{uid}:{gid}::{}::{extra}\n",
                u.name,
                u.password,
                home.display()
            ));
        }
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        let endpoints = Endpoints {
            imap: Some(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            lmtp_tcp: Some(SocketAddr::from(([127, 0, 0, 1], free_port()))),
            lmtp_socket: Some(dir.path().join("lmtp")),
        };
        let instance = format!(
            "fugu-test-{}",
            endpoints.imap.map(|a| a.port()).unwrap_or(0)
        );
        let config = dir.path().join("dovecot.conf");
        std::fs::write(
            &config,
            config_text(dir.path(), &endpoints, (uid, gid), &instance),
        )
        .unwrap();
        let mut d = Dovecot::spawn(&config, endpoints, &dir.path().join("dovecot.stdout"));
        d.mail_root = Some(mail_root);
        d._dir = Some(dir);
        d
    }

    /// Starts Dovecot from an existing config file (as the provisioner renders it),
    /// waiting for `endpoints`. Its log goes beside the config as `dovecot-test.log`.
    pub fn start_with_config(config: &Path, endpoints: Endpoints) -> Dovecot {
        let log = config.with_file_name("dovecot-test.log");
        Dovecot::spawn(config, endpoints, &log)
    }

    fn spawn(config: &Path, endpoints: Endpoints, log: &Path) -> Dovecot {
        let bin = require_program("dovecot", "dovecot-core");
        require_program("doveadm", "dovecot-core");
        assert!(
            Path::new("/usr/lib/dovecot/lmtp").exists(),
            "Dovecot's LMTP server is missing: install dovecot-lmtpd (scripts/install-test-deps)"
        );
        let mut cmd = Command::new(bin);
        cmd.arg("-F").arg("-c").arg(config);
        let mut child = Child::spawn("dovecot", cmd, log);
        let wait = Duration::from_secs(15);
        let d = std::thread::spawn({
            let e = endpoints.clone();
            move || {
                if let Some(a) = e.imap {
                    wait_for_port(a, wait);
                }
                if let Some(a) = e.lmtp_tcp {
                    wait_for_port(a, wait);
                }
                if let Some(p) = &e.lmtp_socket {
                    wait_for_unix_socket(p, wait);
                }
            }
        })
        .join();
        if d.is_err() {
            child.assert_running();
            let file_log =
                std::fs::read_to_string(config.with_file_name("dovecot.log")).unwrap_or_default();
            panic!(
                "dovecot did not come up; its logs:\n{}\n{file_log}",
                child.log()
            );
        }
        Dovecot {
            child,
            config: config.to_path_buf(),
            endpoints,
            mail_root: None,
            _dir: None,
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Runs `doveadm -c CONFIG args…` and returns its stdout; panics with stderr on failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let o = Command::new(require_program("doveadm", "dovecot-core"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "doveadm {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The Maildir of a user the harness created.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.mail_root
            .as_ref()
            .expect("maildir() needs a config written by Dovecot::start")
            .join(user)
            .join("Maildir")
    }

    /// Logs in over IMAP (Python's imaplib, a real client) and returns every message of
    /// `mailbox` (`INBOX`, `Junk`, …) as raw bytes.
    pub fn imap_fetch(&self, user: &str, password: &str, mailbox: &str) -> Vec<Vec<u8>> {
        let addr = self.endpoints.imap.expect("an IMAP endpoint");
        let script = r#"
import base64, imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], sys.argv[4])
typ, _ = m.select(sys.argv[5], readonly=True)
if typ != 'OK':
    sys.exit('select failed')
typ, data = m.search(None, 'ALL')
for n in data[0].split():
    typ, d = m.fetch(n, '(BODY.PEEK[])')
    print(base64.b64encode(d[0][1]).decode())
m.logout()
"#;
        let o = Command::new(require_program("python3", "python3"))
            .arg("-c")
            .arg(script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(user)
            .arg(password)
            .arg(mailbox)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "IMAP fetch as {user} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| base64_decode(l.trim()))
            .collect()
    }

    /// Dovecot's own log (the harness-written config logs to a file).
    pub fn log(&self) -> String {
        let file =
            std::fs::read_to_string(self.config.with_file_name("dovecot.log")).unwrap_or_default();
        format!("{}{file}", self.child.log())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children; Child's own drop then SIGKILLs.
        self.child.signal(15);
        let _ = self.child.wait_timeout(Duration::from_secs(5));
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let take = chunk.len().saturating_sub(1);
        for i in 0..take {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
        assert_eq!(super::base64_decode("YWJj"), b"abc");
    }
}
