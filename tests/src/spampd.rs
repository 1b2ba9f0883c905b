//! Real SpamAssassin behind spampd (Debian `spampd`, `spamassassin`): an SMTP proxy that
//! scores each message and hands it on to a relay host, as content-filter chains use it.
//!
//! Offline by construction: `dns_available no`, `skip_rbl_checks 1`, `--local-only`, the
//! rules Debian ships (no `sa-update`). `report_safe 0` keeps a spam message as it was
//! with headers added, rather than wrapped in a report, so a test can read what it sent.
//!
//! spampd logs only to syslog (there is none here): its log file holds Net::Server's
//! complaints about that, and the evidence a test uses is what arrives downstream.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{Child, require_program};
use crate::{free_port, wait_for_port};

pub struct Spampd {
    child: Option<Child>,
    /// Where spampd listens (the relay target of the MTA in front of it).
    pub listen: SocketAddr,
    /// Where spampd hands mail on (a tagged listener of the MTA behind it).
    pub relay: SocketAddr,
    dir: tempfile::TempDir,
}

impl Spampd {
    /// Starts spampd on a free loopback port, relaying to `relay`, and waits until it
    /// accepts connections (SpamAssassin compiles its rules first: a few seconds).
    pub fn start(relay: SocketAddr) -> Spampd {
        let dir = tempfile::Builder::new().prefix("spampd").tempdir().unwrap();
        // spampd drops to user `mail` and must still read its config and write its pid.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(
            dir.path().join("local.cf"),
            "# written by fugu-tests::spampd: no network tests, no learning\n\
             dns_available no\n\
             skip_rbl_checks 1\n\
             use_bayes 0\n\
             bayes_auto_learn 0\n\
             report_safe 0\n",
        )
        .unwrap();
        let mut s = Spampd {
            child: None,
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            relay,
            dir,
        };
        s.resume();
        s
    }

    /// (Re)starts spampd on the same ports after [`Spampd::stop`].
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "spampd is already running");
        let bin = require_program("spampd", "spampd");
        let mut cmd = Command::new(bin);
        cmd.arg("--nodetach")
            .arg(format!("--host={}", self.listen))
            .arg(format!("--relayhost={}", self.relay))
            .arg(format!(
                "--pid={}",
                self.dir.path().join("spampd.pid").display()
            ))
            .arg(format!(
                "--saconfig={}",
                self.dir.path().join("local.cf").display()
            ))
            .args(["--children=2", "--tagall", "--local-only", "--logsock=inet"])
            // spampd's --homedir is tainted under perl -T and SpamAssassin dies unlinking
            // in it; the default (/var/cache/spampd) is a literal and works.
            //
            // Its own group, so stop() reaches the pre-forked children too.
            .process_group(0);
        let mut child = Child::spawn("spampd", cmd, &self.log_path());
        let up = std::thread::spawn({
            let addr = self.listen;
            move || wait_for_port(addr, Duration::from_secs(60))
        })
        .join();
        if up.is_err() {
            child.assert_running();
            panic!("spampd did not listen on {}:\n{}", self.listen, child.log());
        }
        self.child = Some(child);
    }

    /// Stops spampd and its children; connections to [`Spampd::listen`] are then refused.
    pub fn stop(&mut self) {
        self.kill();
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(self.listen).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "spampd still listens on {} after stop",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The parent and its pre-forked children share the group the spawn created.
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait_timeout(Duration::from_secs(10));
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("spampd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Spampd {
    fn drop(&mut self) {
        self.kill();
    }
}
