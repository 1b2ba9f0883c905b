//! mbox delivery: append to a mailbox file (`/var/mail/<user>`) under an exclusive
//! `flock`, with a `From ` separator line and mboxrd quoting (`>From `). A failed write is
//! cut back to the old length, so a mailbox never keeps half a message.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use super::{Outcome, crlf_to_lf, trace_headers};
use crate::clock::asctime;

#[derive(Debug, Clone)]
pub struct Mbox {
    pub path: PathBuf,
    /// Owner of a newly created mailbox file.
    pub owner: Option<(u32, u32)>,
}

impl Mbox {
    pub async fn deliver(
        &self,
        sender: Option<&str>,
        rcpt: &str,
        message: &[u8],
        now: SystemTime,
    ) -> Outcome {
        let data = render(sender, rcpt, message, now);
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.append(&data)).await {
            Ok(Ok(())) => Outcome::Delivered(format!(
                "250 2.0.0 delivered to mbox {}",
                self.path.display()
            )),
            Ok(Err(e)) => match e.kind() {
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
                    Outcome::TempFail(format!("452 4.2.2 mbox {}: {e}", self.path.display()))
                }
                _ => Outcome::TempFail(format!("451 4.2.0 mbox {}: {e}", self.path.display())),
            },
            Err(e) => Outcome::TempFail(format!("451 4.3.0 mbox: {e}")),
        }
    }

    fn append(&self, data: &[u8]) -> std::io::Result<()> {
        let existed = self.path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        if !existed && let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&self.path, Some(uid), Some(gid))?;
        }
        let mut locked =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let before = locked.metadata()?.len();
        let r = locked.write_all(data).and_then(|()| locked.sync_data());
        if let Err(e) = r {
            let _ = locked.set_len(before);
            let _ = locked.sync_data();
            return Err(e);
        }
        Ok(())
    }
}

/// The bytes appended for one message.
pub fn render(sender: Option<&str>, rcpt: &str, message: &[u8], now: SystemTime) -> Vec<u8> {
    let from = sender.filter(|s| !s.is_empty()).unwrap_or("MAILER-DAEMON");
    let mut out = format!("From {from} {}\n", asctime(now)).into_bytes();
    out.extend_from_slice(&trace_headers(sender, rcpt));
    let body = crlf_to_lf(message);
    for line in body.split_inclusive(|&b| b == b'\n') {
        // mboxrd: any run of `>` followed by `From ` gains one more `>`.
        let stripped = line
            .iter()
            .position(|&b| b != b'>')
            .map(|i| &line[i..])
            .unwrap_or(&[]);
        if stripped.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_a_from_line_and_quotes_from_lines_mboxrd_style() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let got = render(
            Some("alice@example.org"),
            "bob@example.org",
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nok",
            t,
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "From alice@example.org Tue Nov 14 22:13:20 2023\nReturn-Path: <alice@example.org>\nDelivered-To: bob@example.org\nSubject: x\n\n>From here\n>>From there\nok\n\n"
        );
        let bounce = render(None, "bob@example.org", b"x\r\n", t);
        assert!(bounce.starts_with(b"From MAILER-DAEMON Tue Nov 14"));
    }
}
