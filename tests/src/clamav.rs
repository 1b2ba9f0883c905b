//! Real ClamAV: clamd (Debian `clamav-daemon`) with a one-signature database, and
//! clamsmtp (Debian `clamsmtp`), the SMTP proxy that hands each message to clamd.
//!
//! No freshclam: the database is one `.hdb` line, the MD5 and size of the EICAR test
//! file, so clamd starts in about a second and knows exactly one "virus". clamd's
//! mail parser decodes attachments before hashing, so EICAR is found as a MIME
//! attachment (as mail carries it), not as a bare line of body text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::wait_for_unix_socket;
use crate::process::{Child, require_program};
use crate::{free_port, wait_for_port};

/// The EICAR anti-virus test file (68 bytes), which every scanner reports as a virus.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// [`EICAR`] in base64, as a MIME attachment carries it.
pub const EICAR_BASE64: &str =
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=";

/// The name clamd reports for [`EICAR`]: the `.hdb` line's name, marked unofficial.
pub const EICAR_SIGNATURE: &str = "Fugu-Test-EICAR.UNOFFICIAL";

pub struct Clamd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Clamd {
    pub fn start() -> Clamd {
        let bin = require_program("clamd", "clamav-daemon");
        let dir = tempfile::Builder::new().prefix("clamd").tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        // An MD5 signature: `md5:size:name` over the whole decoded file.
        let md5 = Command::new(require_program("md5sum", "coreutils"))
            .arg(write(dir.path(), "eicar.com", EICAR))
            .output()
            .unwrap();
        let md5 = String::from_utf8_lossy(&md5.stdout);
        let md5 = md5.split_whitespace().next().expect("md5sum output");
        write(
            &db,
            "eicar.hdb",
            &format!("{md5}:{}:Fugu-Test-EICAR\n", EICAR.len()),
        );
        let d = dir.path().display();
        let conf = write(
            dir.path(),
            "clamd.conf",
            &format!(
                "# written by fugu-tests::clamav\n\
                 Foreground yes\n\
                 LocalSocket {d}/clamd.sock\n\
                 DatabaseDirectory {d}/db\n\
                 TemporaryDirectory {d}\n\
                 LogFile {d}/clamd.log\n\
                 LogVerbose yes\n\
                 User root\n"
            ),
        );
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config-file={}", conf.display()));
        let mut child = Child::spawn("clamd", cmd, &dir.path().join("clamd.stdout"));
        let sock = dir.path().join("clamd.sock");
        let up = std::thread::spawn({
            let sock = sock.clone();
            move || wait_for_unix_socket(&sock, Duration::from_secs(60))
        })
        .join();
        if up.is_err() {
            child.assert_running();
            panic!("clamd did not open {}:\n{}", sock.display(), child.log());
        }
        Clamd { child, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    pub fn log(&self) -> String {
        let file = std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default();
        format!("{}{file}", self.child.log())
    }
}

/// clamsmtpd in the foreground, scanning through a [`Clamd`].
pub struct Clamsmtp {
    child: Child,
    /// Where clamsmtpd listens (the relay target of the MTA in front of it).
    pub listen: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Clamsmtp {
    /// Starts clamsmtpd on a free loopback port, handing clean mail to `out`. With
    /// `Action: bounce` an infected message gets `550 Virus Detected; Content Rejected`
    /// at the end of DATA (the default, `drop`, answers 250 and discards it).
    pub fn start(clamd: &Clamd, out: SocketAddr) -> Clamsmtp {
        let bin = require_program("clamsmtpd", "clamsmtp");
        let dir = tempfile::Builder::new()
            .prefix("clamsmtp")
            .tempdir()
            .unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = write(
            dir.path(),
            "clamsmtpd.conf",
            &format!(
                "# written by fugu-tests::clamav\n\
                 Listen: {listen}\n\
                 OutAddress: {out}\n\
                 ClamAddress: {}\n\
                 TempDirectory: {}\n\
                 Action: bounce\n",
                clamd.socket().display(),
                dir.path().display()
            ),
        );
        let mut cmd = Command::new(bin);
        // -d: debug level, which also keeps it in the foreground, logging to stderr.
        cmd.arg("-d").arg("3").arg("-f").arg(&conf);
        let mut child = Child::spawn("clamsmtpd", cmd, &dir.path().join("clamsmtpd.log"));
        let up = std::thread::spawn(move || wait_for_port(listen, Duration::from_secs(20))).join();
        if up.is_err() {
            child.assert_running();
            panic!("clamsmtpd did not listen on {listen}:\n{}", child.log());
        }
        Clamsmtp {
            child,
            listen,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.child.log()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[cfg(test)]
mod tests {
    #[test]
    fn eicar_base64_is_eicar() {
        let out = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(super::EICAR_BASE64.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), super::EICAR);
    }
}
