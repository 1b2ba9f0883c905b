//! LMTP client (RFC 2033) over a unix socket or TCP, for delivery to Dovecot.
//!
//! After DATA the server answers once per accepted recipient, so a temporary failure for
//! one recipient (over quota, say) retries only that one. No MAIL or RCPT parameters are
//! ever sent: Dovecot 2.3 advertises no SMTPUTF8, DSN or SIZE.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpStream, UnixStream};

use super::{Outcome, outcome_of_reply};

/// Where the LMTP server listens: a path (unix socket) or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl Target {
    /// `/run/dovecot/lmtp` → unix socket; `127.0.0.1:24`, `[::1]:24`, `host:24` → TCP.
    pub fn parse(s: &str) -> Target {
        if s.starts_with('/') {
            Target::Unix(PathBuf::from(s))
        } else {
            Target::Tcp(s.to_string())
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lmtp {
    pub target: Target,
    /// The name in LHLO.
    pub lhlo: String,
    /// Per-reply timeout.
    pub timeout: Duration,
}

struct Reply {
    code: u16,
    /// The last line, code included.
    text: String,
}

impl Lmtp {
    pub fn new(target: Target, lhlo: impl Into<String>) -> Lmtp {
        Lmtp {
            target,
            lhlo: lhlo.into(),
            // RFC 5321 §4.5.3.2.6: 10 minutes for the reply to the final dot.
            timeout: Duration::from_secs(600),
        }
    }

    /// Delivers `message` (CRLF, not dot-stuffed) from `sender` to `rcpts`; one outcome
    /// per recipient, in order.
    pub async fn deliver(
        &self,
        sender: Option<&str>,
        rcpts: &[&str],
        message: &[u8],
    ) -> Vec<Outcome> {
        let r = match &self.target {
            Target::Unix(p) => match UnixStream::connect(p).await {
                Ok(s) => self.session(s, sender, rcpts, message).await,
                Err(e) => Err(Outcome::TempFail(format!(
                    "421 4.4.1 lmtp {}: {e}",
                    self.target
                ))),
            },
            Target::Tcp(a) => match TcpStream::connect(a).await {
                Ok(s) => self.session(s, sender, rcpts, message).await,
                Err(e) => Err(Outcome::TempFail(format!(
                    "421 4.4.1 lmtp {}: {e}",
                    self.target
                ))),
            },
        };
        r.unwrap_or_else(|o| vec![o; rcpts.len()])
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        sender: Option<&str>,
        rcpts: &[&str],
        message: &[u8],
    ) -> Result<Vec<Outcome>, Outcome> {
        let mut s = BufStream::new(stream);
        let greeting = self.reply(&mut s).await?;
        if greeting.code != 220 {
            return Err(whole(greeting));
        }
        self.command(&mut s, &format!("LHLO {}", self.lhlo)).await?;
        let r = self.reply(&mut s).await?;
        if r.code != 250 {
            return Err(whole(r));
        }
        self.command(&mut s, &format!("MAIL FROM:<{}>", sender.unwrap_or("")))
            .await?;
        let r = self.reply(&mut s).await?;
        if r.code != 250 {
            return Err(whole(r));
        }
        let mut out: Vec<Option<Outcome>> = vec![None; rcpts.len()];
        let mut accepted = Vec::new();
        for (i, rcpt) in rcpts.iter().enumerate() {
            self.command(&mut s, &format!("RCPT TO:<{rcpt}>")).await?;
            let r = self.reply(&mut s).await?;
            if (200..300).contains(&r.code) {
                accepted.push(i);
            } else {
                out[i] = Some(outcome_of_reply(r.code, r.text));
            }
        }
        if !accepted.is_empty() {
            self.command(&mut s, "DATA").await?;
            let r = self.reply(&mut s).await?;
            if r.code != 354 {
                return Err(whole(r));
            }
            s.write_all(&dot_stuff(message)).await.map_err(io_fail)?;
            s.write_all(b".\r\n").await.map_err(io_fail)?;
            s.flush().await.map_err(io_fail)?;
            // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            for i in accepted {
                let r = self.reply(&mut s).await?;
                out[i] = Some(outcome_of_reply(r.code, r.text));
            }
        }
        let _ = self.command(&mut s, "QUIT").await;
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::TempFail("451 4.3.0 lmtp: no reply".into())))
            .collect())
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufStream<S>,
        line: &str,
    ) -> Result<(), Outcome> {
        s.write_all(line.as_bytes()).await.map_err(io_fail)?;
        s.write_all(b"\r\n").await.map_err(io_fail)?;
        s.flush().await.map_err(io_fail)
    }

    async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut BufStream<S>,
    ) -> Result<Reply, Outcome> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(self.timeout, s.read_line(&mut line))
                .await
                .map_err(|_| Outcome::TempFail(format!("421 4.4.2 lmtp {}: timeout", self.target)))?
                .map_err(io_fail)?;
            if n == 0 {
                return Err(Outcome::TempFail(format!(
                    "421 4.4.2 lmtp {}: connection closed",
                    self.target
                )));
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| {
                    Outcome::TempFail(format!(
                        "421 4.5.0 lmtp {}: bad reply {line:?}",
                        self.target
                    ))
                })?;
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return Ok(Reply { code, text: line });
        }
    }
}

fn whole(r: Reply) -> Outcome {
    outcome_of_reply(r.code, r.text)
}

fn io_fail(e: std::io::Error) -> Outcome {
    Outcome::TempFail(format!("421 4.4.2 lmtp: {e}"))
}

/// RFC 5321 §4.5.2: a leading dot is doubled; line ends are made CRLF; a final line end
/// is added if missing.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64 + 4);
    // Almost every message has CRLF line ends and no line that starts with a dot: it goes
    // out as it is, in one copy instead of one per line.
    let as_is = msg.first() != Some(&b'.')
        && memchr::memchr_iter(b'\n', msg)
            .all(|i| i > 0 && msg[i - 1] == b'\r' && msg.get(i + 1) != Some(&b'.'));
    if as_is {
        out.extend_from_slice(msg);
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        return out;
    }
    let mut rest = msg;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        if line.len() < rest.len() {
            if line.last() != Some(&b'\r') {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        rest = next;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_stuffed_and_line_ends_made_crlf() {
        assert_eq!(
            dot_stuff(b".a\r\nb\n.\r\n..c"),
            b"..a\r\nb\r\n..\r\n...c\r\n"
        );
        assert_eq!(dot_stuff(b""), b"\r\n");
        assert_eq!(dot_stuff(b"a\rb\n\n.\n"), b"a\rb\r\n\r\n..\r\n");
        assert_eq!(dot_stuff(b"x\r\n."), b"x\r\n..\r\n");
    }

    #[test]
    fn a_message_with_nothing_to_stuff_goes_out_as_it_is() {
        assert_eq!(dot_stuff(b"a: b\r\n\r\nx.\r\n"), b"a: b\r\n\r\nx.\r\n");
        assert_eq!(dot_stuff(b"a\r\nb"), b"a\r\nb\r\n");
        assert_eq!(dot_stuff(b"a\r"), b"a\r\r\n");
        assert_eq!(dot_stuff(b"a\r\nb\n"), b"a\r\nb\r\n");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("/run/dovecot/lmtp"),
            Target::Unix("/run/dovecot/lmtp".into())
        );
        assert_eq!(
            Target::parse("127.0.0.1:24"),
            Target::Tcp("127.0.0.1:24".into())
        );
    }
}
