//! A real Postfix as a remote MX or smarthost: an instance run from a config directory
//! the test writes (`postfix -c DIR start`), with its own queue and data directories,
//! a self-signed certificate for STARTTLS, and every accepted message delivered by
//! virtual(8) into one Maildir the test reads. The system-wide Postfix is never started.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Child, require_program};

/// A self-signed certificate for `cn` (also a DNS or IP SAN) written with openssl(1).
pub fn self_signed(cn: &str, cert: &Path, key: &Path) {
    let san = if cn.parse::<IpAddr>().is_ok() {
        format!("subjectAltName=IP:{cn}")
    } else {
        format!("subjectAltName=DNS:{cn}")
    };
    let ok = Command::new(require_program("openssl", "openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &san,
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl req failed");
}

pub struct Options {
    /// The name in the banner and in Received headers.
    pub hostname: String,
    /// Domains whose mail is accepted and stored.
    pub domains: Vec<String>,
    /// `check_recipient_access` entries: `address` → reply (e.g. `550 5.1.1 no such user`).
    pub refuse: Vec<(String, String)>,
}

pub struct Postfix {
    dir: PathBuf,
    pub addr: SocketAddr,
    maildir: PathBuf,
    postfix: PathBuf,
    child: Option<Child>,
}

fn chown_postfix(p: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg("postfix:postfix")
        .arg(p)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown postfix {}", p.display());
}

impl Postfix {
    /// Starts Postfix listening on `ip`:25 under `dir` (whose parents must be
    /// traversable by the `postfix` user). Call inside [`crate::netns::run`]: `ip` is
    /// added to `lo`.
    pub fn start(dir: &Path, ip: IpAddr, opts: &Options) -> Postfix {
        Postfix::start_with(dir, ip, opts, "")
    }

    /// [`Postfix::start`] with `extra` appended to `main.cf` (Postfix takes the last
    /// setting of a parameter, so this can also override the defaults above), e.g. a
    /// `relayhost` to make the instance a sending peer.
    pub fn start_with(dir: &Path, ip: IpAddr, opts: &Options, extra: &str) -> Postfix {
        crate::netns::add_loopback(ip);
        let postfix = require_program("postfix", "postfix");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("etc");
        let maildir = dir.join("vmail");
        // Postfix creates the queue's subdirectories, not the queue directory itself.
        for d in [&conf, &maildir, &dir.join("data"), &dir.join("queue")] {
            std::fs::create_dir_all(d).unwrap();
        }
        chown_postfix(&maildir);
        chown_postfix(&dir.join("data"));
        let (cert, key) = (conf.join("cert.pem"), conf.join("key.pem"));
        self_signed(&opts.hostname, &cert, &key);
        let uid = String::from_utf8(
            Command::new("id")
                .args(["-u", "postfix"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let gid = String::from_utf8(
            Command::new("id")
                .args(["-g", "postfix"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let access: String = opts
            .refuse
            .iter()
            .map(|(a, r)| format!("{{ {a} = {r} }} "))
            .collect();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             maillog_file = /dev/stdout\n\
             myhostname = {host}\n\
             mydomain = {host}\n\
             myorigin = {host}\n\
             mydestination =\n\
             inet_interfaces = {ip}\n\
             inet_protocols = {proto}\n\
             mynetworks =\n\
             smtpd_banner = $myhostname ESMTP Postfix (test)\n\
             biff = no\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             relay_domains =\n\
             smtputf8_enable = yes\n\
             smtpd_tls_cert_file = {cert}\n\
             smtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_received_header = yes\n\
             smtpd_tls_loglevel = 1\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{{ {access}}} reject_unauth_destination\n\
             virtual_mailbox_domains = {domains}\n\
             virtual_mailbox_base = {d}\n\
             virtual_mailbox_maps = static:vmail/\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = 1\n\
             {extra}",
            d = dir.display(),
            host = opts.hostname,
            proto = if ip.is_ipv6() { "ipv6" } else { "ipv4" },
            cert = cert.display(),
            key = key.display(),
            domains = opts.domains.join(", "),
            uid = uid.trim(),
            gid = gid.trim(),
        );
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        // Debian's master.cf, with every service out of the chroot (the instance's
        // queue is not where the chroot setup script expects it).
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .expect("/etc/postfix/master.cf: install the Debian postfix package");
        let master: String = master
            .lines()
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                if l.starts_with(|c: char| c.is_ascii_alphanumeric()) && cols.len() >= 8 {
                    let mut c = cols.clone();
                    c[4] = "n";
                    c.join(" ") + "\n"
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(conf.join("master.cf"), master).unwrap();
        let mut pf = Postfix {
            dir: dir.to_path_buf(),
            addr: SocketAddr::new(ip, 25),
            maildir,
            postfix,
            child: None,
        };
        // In the foreground, so it logs to stdout (our log file) and dies with the test;
        // `postfix start` insists on syslog and an authorized config directory.
        let mut cmd = Command::new(&pf.postfix);
        cmd.arg("-c").arg(&conf).arg("start-fg");
        pf.child = Some(Child::spawn("postfix", cmd, &dir.join("maillog")));
        crate::net::wait_for_port(pf.addr, Duration::from_secs(20));
        pf
    }

    /// Queues a message with Postfix's sendmail(1) for this instance (`-C` its config
    /// directory); the pickup service hands it to the queue manager.
    pub fn sendmail(&self, from: &str, to: &str, message: &str) {
        use std::io::Write;
        let mut child = Command::new(require_program("sendmail", "postfix"))
            .arg("-C")
            .arg(self.dir.join("etc"))
            .args(["-f", from, "--", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "postfix sendmail failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Postfix's own log (`maillog_file`, its standard output).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The messages delivered so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    files.push((t, e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }

    /// Waits until `n` messages arrived and returns them; panics with the log after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            if start.elapsed() > timeout {
                panic!(
                    "Postfix on {} got {} message(s), expected {n}; its log:\n{}",
                    self.addr,
                    m.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.dir.join("etc"))
            .arg("abort")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Then the foreground master itself, if it is still there.
        self.child.take();
    }
}

/// A private CA (`ca.pem`) and a server certificate it signed for `cn` (`cert.pem`,
/// `key.pem`, with the SAN webpki wants), all in `dir`; returns the CA certificate's path.
pub fn ca_signed(cn: &str, dir: &Path) -> PathBuf {
    let openssl = require_program("openssl", "openssl");
    let run = |args: &[&str]| {
        let ok = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=fugu test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    run(&ca);
    let mut csr = vec!["req", "-new", "-subj"];
    let subj = format!("/CN={cn}");
    csr.push(&subj);
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "req.pem"]);
    run(&csr);
    let san = if cn.parse::<IpAddr>().is_ok() {
        format!("subjectAltName=IP:{cn}\nbasicConstraints=CA:FALSE\n")
    } else {
        format!("subjectAltName=DNS:{cn}\nbasicConstraints=CA:FALSE\n")
    };
    std::fs::write(dir.join("ext.cnf"), san).unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    dir.join("ca.pem")
}
