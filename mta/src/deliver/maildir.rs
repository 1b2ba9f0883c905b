//! Maildir delivery: write into `tmp/`, fsync, rename into `new/`, fsync `new/` (the
//! rename is the delivery: a crash leaves at most a stray file in `tmp/`, never a partial
//! message in `new/`). With `junk`, a message marked as spam (`X-Spam: yes`, as OpenSMTPD's
//! `mail.maildir -j` reads it, or SpamAssassin's `X-Spam-Flag: YES`) goes into the `.Junk`
//! folder (Maildir++); unmarked mail still goes to the inbox.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Outcome, crlf_to_lf, trace_headers};

/// One maildir delivery request.
#[derive(Debug, Clone)]
pub struct Maildir {
    /// The Maildir root (the directory holding `cur`, `new`, `tmp`).
    pub root: PathBuf,
    /// Deliver mail marked as spam into `<root>/.Junk` instead of the inbox.
    pub junk: bool,
    /// The host name in unique file names.
    pub hostname: String,
}

impl Maildir {
    /// Delivers `message` (as spooled, CRLF) for `rcpt` with `Return-Path`/`Delivered-To`
    /// added. Returns the path of the new file.
    pub async fn deliver(
        &self,
        sender: Option<&str>,
        rcpt: &str,
        message: &[u8],
    ) -> (Outcome, Option<PathBuf>) {
        let mut data = trace_headers(sender, rcpt);
        data.extend_from_slice(&crlf_to_lf(message));
        let folder = self.folder(message);
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.write(&folder, &data)).await {
            Ok(Ok(p)) => (
                Outcome::Delivered(format!("250 2.0.0 delivered to maildir {}", p.display())),
                Some(p),
            ),
            Ok(Err(e)) => (classify(&e), None),
            Err(e) => (Outcome::TempFail(format!("451 4.3.0 maildir: {e}")), None),
        }
    }

    /// The folder `message` is written into.
    pub fn folder(&self, message: &[u8]) -> PathBuf {
        if self.junk && marked_as_spam(message) {
            self.root.join(".Junk")
        } else {
            self.root.clone()
        }
    }

    fn write(&self, folder: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
        for sub in ["tmp", "new", "cur"] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(folder.join(sub))?;
        }
        if folder != self.root {
            // Maildir++: a folder is a maildir with a `maildirfolder` marker.
            let marker = folder.join("maildirfolder");
            if !marker.exists() {
                File::create(marker)?;
            }
        }
        let name = unique_name(&self.hostname);
        let tmp = folder.join("tmp").join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let r = f.write_all(data).and_then(|()| f.sync_all());
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let new = folder.join("new").join(&name);
        if let Err(e) = fs::rename(&tmp, &new) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(folder.join("new"))?.sync_all()?;
        Ok(new)
    }
}

/// Whether the header block carries a spam mark: `X-Spam: yes` (what OpenSMTPD's filters
/// write and `mail.maildir -j` looks for) or SpamAssassin's `X-Spam-Flag: YES`.
fn marked_as_spam(message: &[u8]) -> bool {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if (name.eq_ignore_ascii_case(b"X-Spam") || name.eq_ignore_ascii_case(b"X-Spam-Flag"))
            && value
                .trim_ascii()
                .get(..3)
                .is_some_and(|v| v.eq_ignore_ascii_case(b"yes"))
        {
            return true;
        }
    }
    false
}

fn classify(e: &std::io::Error) -> Outcome {
    match e.kind() {
        // RFC 3463 §3.3: mailbox full is a temporary condition.
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            Outcome::TempFail(format!("452 4.2.2 maildir: {e}"))
        }
        ErrorKind::NotADirectory | ErrorKind::InvalidFilename => {
            Outcome::PermFail(format!("550 5.2.0 maildir: {e}"))
        }
        // Permissions and the rest are usually an operator's fix away: keep the mail.
        _ => Outcome::TempFail(format!("451 4.2.0 maildir: {e}")),
    }
}

/// `<secs>.M<usecs>P<pid>Q<n>.<host>`: unique per host without coordination (the
/// Maildir convention; `Q` counts deliveries in this process).
fn unique_name(hostname: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host: String = hostname
        .chars()
        .map(|c| match c {
            '/' => "\\057".to_string(),
            ':' => "\\072".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        host
    )
}

/// Whether `path` is inside a maildir's `new/` (for tests and `fugu ctl`).
pub fn is_new(path: &Path) -> bool {
    path.parent().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new("new"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_escape_the_host() {
        let a = unique_name("mx/one:2");
        let b = unique_name("mx/one:2");
        assert_ne!(a, b);
        assert!(a.ends_with(".mx\\057one\\0722"), "{a}");
    }

    #[test]
    fn junk_files_only_mail_marked_as_spam_into_the_junk_folder() {
        let m = Maildir {
            root: PathBuf::from("/m"),
            junk: true,
            hostname: "mx".into(),
        };
        let junk = PathBuf::from("/m/.Junk");
        assert_eq!(m.folder(b"X-Spam: Yes\r\nSubject: a\r\n\r\nbody\r\n"), junk);
        assert_eq!(
            m.folder(b"Subject: a\r\nx-spam-flag:  YES\r\n\r\nbody\r\n"),
            junk
        );
        assert_eq!(
            m.folder(b"Subject: a\r\nX-Spam-Flag: NO\r\n\r\nbody\r\n"),
            m.root
        );
        // A mark in the body is not a header.
        assert_eq!(m.folder(b"Subject: a\r\n\r\nX-Spam: yes\r\n"), m.root);
        let inbox = Maildir { junk: false, ..m };
        assert_eq!(inbox.folder(b"X-Spam: yes\r\n\r\n"), inbox.root);
    }
}
