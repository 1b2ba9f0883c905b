//! mda delivery: run a command through `/bin/sh -c` with the message on stdin, as
//! OpenSMTPD's `mail.mda` does. Exit 0 is delivered, 71 (EX_OSERR) and 75 (EX_TEMPFAIL)
//! are temporary, anything else permanent.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Outcome, crlf_to_lf};

const EX_OSERR: i32 = 71;
const EX_TEMPFAIL: i32 = 75;
/// OpenSMTPD's `_PATH_DEFPATH`.
const DEFAULT_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin";

#[derive(Debug, Clone)]
pub struct Mda {
    /// The command line, already expanded (`%{…}` formats are the caller's business).
    pub command: String,
    /// The environment OpenSMTPD sets, see [`MdaEnv`].
    pub env: MdaEnv,
    /// Run as this uid/gid (the daemon's own user when `None`).
    pub user: Option<(u32, u32)>,
    pub timeout: Duration,
}

/// What the command learns from its environment.
#[derive(Debug, Clone, Default)]
pub struct MdaEnv {
    pub sender: Option<String>,
    /// The address delivered to, after expansion.
    pub recipient: String,
    /// The address as given at RCPT.
    pub original_recipient: String,
    pub user: String,
    pub home: String,
    pub shell: Option<String>,
}

impl MdaEnv {
    /// `DOMAIN EXTENSION HOME LOCAL LOGNAME ORIGINAL_RECIPIENT PATH RECIPIENT SENDER SHELL
    /// USER`, as OpenSMTPD's mda sets them; `LOCAL` is the local part without `+ext`.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let (local, domain) = self
            .recipient
            .rsplit_once('@')
            .unwrap_or((self.recipient.as_str(), ""));
        let (base, ext) = local.split_once('+').unwrap_or((local, ""));
        vec![
            ("DOMAIN", domain.to_string()),
            ("EXTENSION", ext.to_string()),
            ("HOME", self.home.clone()),
            ("LOCAL", base.to_string()),
            ("LOGNAME", self.user.clone()),
            ("ORIGINAL_RECIPIENT", self.original_recipient.clone()),
            ("PATH", DEFAULT_PATH.to_string()),
            ("RECIPIENT", self.recipient.clone()),
            ("SENDER", self.sender.clone().unwrap_or_default()),
            (
                "SHELL",
                self.shell.clone().unwrap_or_else(|| "/bin/sh".into()),
            ),
            ("USER", self.user.clone()),
        ]
    }
}

impl Mda {
    /// Runs the command with `message` (as spooled, CRLF; given to the command with LF).
    pub async fn deliver(&self, message: &[u8]) -> Outcome {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&self.command)
            .env_clear()
            .envs(self.env.vars())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !self.env.home.is_empty() && std::path::Path::new(&self.env.home).is_dir() {
            cmd.current_dir(&self.env.home);
        }
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::TempFail(format!("451 4.3.0 mda: cannot run /bin/sh: {e}")),
        };
        let data = crlf_to_lf(message);
        let stdin = child.stdin.take();
        let writer = tokio::spawn(async move {
            if let Some(mut w) = stdin {
                // A command that does not read its input is not an error in itself.
                let _ = w.write_all(&data).await;
            }
        });
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Outcome::TempFail(format!("451 4.3.0 mda: {e}")),
            Err(_) => return Outcome::TempFail("451 4.4.7 mda: command timed out".into()),
        };
        let _ = writer.await;
        let err = String::from_utf8_lossy(&out.stderr);
        let why = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        match out.status.code() {
            Some(0) => Outcome::Delivered("250 2.0.0 delivered by mda".into()),
            Some(c @ (EX_OSERR | EX_TEMPFAIL)) => {
                Outcome::TempFail(format!("451 4.3.0 mda exited with status {c}: {why}"))
            }
            Some(c) => Outcome::PermFail(format!("550 5.3.0 mda exited with status {c}: {why}")),
            None => Outcome::TempFail(format!("451 4.3.0 mda killed by a signal: {why}")),
        }
    }
}
