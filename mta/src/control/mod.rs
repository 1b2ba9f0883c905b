//! The control socket's protocol, sans IO: what `fugu ctl` (and later the console) sends
//! to `<spool>/control.sock` and what the daemon answers.
//!
//! A request is one line of text, the command as smtpctl spells it (`show queue`,
//! `schedule all`, …); words may be abbreviated as long as they stay unambiguous
//! (`sh q`), as smtpctl allows. A response is one header line followed by a body:
//!
//! ```text
//! ok 42\n<42 bytes of body>
//! error no such message or envelope: 1234\n
//! ```
//!
//! The byte count makes raw messages (`show message`) safe to carry. One request per
//! connection: the daemon closes the socket after the response.

use std::fmt;

/// A subsystem `pause`/`resume` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsystem {
    /// Relaying (remote delivery).
    Mta,
    /// Local delivery agents (LMTP, maildir, mbox, mda).
    Mda,
    /// Accepting new SMTP sessions on the network listeners.
    Smtp,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Mta => "mta",
            Subsystem::Mda => "mda",
            Subsystem::Smtp => "smtp",
        }
    }
}

/// One control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `show queue [msgid]`.
    ShowQueue(Option<String>),
    ShowStats,
    /// `show status`: which subsystems are paused.
    ShowStatus,
    ShowEnvelope(String),
    ShowMessage(String),
    /// `schedule ID|all`.
    Schedule(String),
    /// `remove ID|all`.
    Remove(String),
    Pause(Subsystem),
    Resume(Subsystem),
    Reload,
    /// `log verbose` (true) or `log brief` (false).
    Log(bool),
}

/// Why a request line was refused before reaching the daemon's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty command")]
    Empty,
    #[error("unknown command: {0}")]
    Unknown(String),
    #[error("ambiguous command: {0} (could be {1})")]
    Ambiguous(String, String),
    #[error("{0}: missing argument {1}")]
    Missing(String, &'static str),
    #[error("{0}: unexpected argument {1}")]
    Extra(String, String),
}

/// Resolves `word` (possibly abbreviated) against `choices`: an exact match wins, else a
/// unique prefix.
fn pick<'a>(word: &str, choices: &[&'a str]) -> Result<&'a str, ParseError> {
    if let Some(c) = choices.iter().find(|c| **c == word) {
        return Ok(c);
    }
    let found: Vec<&'a str> = choices
        .iter()
        .copied()
        .filter(|c| c.starts_with(word))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(ParseError::Unknown(word.to_string())),
        many => Err(ParseError::Ambiguous(word.to_string(), many.join(", "))),
    }
}

impl Request {
    /// Parses a command from its words (the `fugu ctl` arguments or a socket line).
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<Request, ParseError> {
        let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        let Some((first, rest)) = words.split_first() else {
            return Err(ParseError::Empty);
        };
        let verb = pick(
            first,
            &[
                "show", "schedule", "remove", "pause", "resume", "reload", "log",
            ],
        )?;
        let arg = |i: usize, what: &'static str| -> Result<&str, ParseError> {
            rest.get(i)
                .copied()
                .ok_or_else(|| ParseError::Missing(verb.to_string(), what))
        };
        let (req, used) = match verb {
            "show" => {
                let what = pick(
                    arg(0, "queue|stats|status|envelope|message")?,
                    &["queue", "stats", "status", "envelope", "message"],
                )?;
                match what {
                    "queue" => (
                        Request::ShowQueue(rest.get(1).map(|s| s.to_string())),
                        1 + usize::from(rest.len() > 1),
                    ),
                    "stats" => (Request::ShowStats, 1),
                    "status" => (Request::ShowStatus, 1),
                    "envelope" => (Request::ShowEnvelope(arg(1, "ID")?.to_string()), 2),
                    _ => (Request::ShowMessage(arg(1, "ID")?.to_string()), 2),
                }
            }
            "schedule" => (Request::Schedule(arg(0, "ID|all")?.to_string()), 1),
            "remove" => (Request::Remove(arg(0, "ID|all")?.to_string()), 1),
            "pause" | "resume" => {
                let sub = match pick(arg(0, "mta|mda|smtp")?, &["mta", "mda", "smtp"])? {
                    "mta" => Subsystem::Mta,
                    "mda" => Subsystem::Mda,
                    _ => Subsystem::Smtp,
                };
                let r = if verb == "pause" {
                    Request::Pause(sub)
                } else {
                    Request::Resume(sub)
                };
                (r, 1)
            }
            "reload" => (Request::Reload, 0),
            _ => {
                let v = pick(arg(0, "verbose|brief")?, &["verbose", "brief"])?;
                (Request::Log(v == "verbose"), 1)
            }
        };
        if let Some(extra) = rest.get(used) {
            return Err(ParseError::Extra(verb.to_string(), extra.to_string()));
        }
        Ok(req)
    }

    /// Parses one request line as read from the socket.
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        Request::from_words(&words)
    }

    /// Only reads queue metadata: members of group `fugu` may send it. Message bodies
    /// (`show message`) are mail content and stay with root and the daemon's user.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Request::ShowQueue(_)
                | Request::ShowStats
                | Request::ShowStatus
                | Request::ShowEnvelope(_)
        )
    }
}

/// The canonical request line (no trailing newline), what `fugu ctl` writes.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::ShowQueue(None) => f.write_str("show queue"),
            Request::ShowQueue(Some(id)) => write!(f, "show queue {id}"),
            Request::ShowStats => f.write_str("show stats"),
            Request::ShowStatus => f.write_str("show status"),
            Request::ShowEnvelope(id) => write!(f, "show envelope {id}"),
            Request::ShowMessage(id) => write!(f, "show message {id}"),
            Request::Schedule(id) => write!(f, "schedule {id}"),
            Request::Remove(id) => write!(f, "remove {id}"),
            Request::Pause(s) => write!(f, "pause {}", s.name()),
            Request::Resume(s) => write!(f, "resume {}", s.name()),
            Request::Reload => f.write_str("reload"),
            Request::Log(true) => f.write_str("log verbose"),
            Request::Log(false) => f.write_str("log brief"),
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok(Vec<u8>),
    Err(String),
}

impl Response {
    pub fn ok(text: impl Into<String>) -> Response {
        Response::Ok(text.into().into_bytes())
    }

    /// The bytes on the wire.
    pub fn render(&self) -> Vec<u8> {
        match self {
            Response::Ok(body) => {
                let mut out = format!("ok {}\n", body.len()).into_bytes();
                out.extend_from_slice(body);
                out
            }
            // One line: an embedded newline would end the header early.
            Response::Err(e) => format!("error {}\n", e.replace(['\r', '\n'], " ")).into_bytes(),
        }
    }

    /// Decodes a complete response (the client reads until the daemon closes).
    pub fn decode(bytes: &[u8]) -> Result<Response, String> {
        let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
            return Err("truncated response from the daemon".into());
        };
        let header = String::from_utf8_lossy(&bytes[..nl]);
        let body = &bytes[nl + 1..];
        if let Some(e) = header.strip_prefix("error ") {
            return Ok(Response::Err(e.to_string()));
        }
        let Some(len) = header
            .strip_prefix("ok ")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return Err(format!("bad response header from the daemon: {header:?}"));
        };
        if body.len() != len {
            return Err(format!(
                "response from the daemon cut short: {} of {len} bytes",
                body.len()
            ));
        }
        Ok(Response::Ok(body.to_vec()))
    }
}

/// Who is on the other end of the socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Whether the peer belongs to group `fugu` (primary or supplementary).
    pub in_fugu_group: bool,
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Full,
    ReadOnly,
    None,
}

/// Root and the daemon's own user may do everything; group `fugu` may read.
pub fn access(peer: Peer, daemon_uid: u32) -> Access {
    if peer.uid == 0 || peer.uid == daemon_uid {
        Access::Full
    } else if peer.in_fugu_group {
        Access::ReadOnly
    } else {
        Access::None
    }
}

/// Whether `access` allows `req`; the error text smtpctl prints otherwise.
pub fn authorize(access: Access, req: &Request) -> Result<(), &'static str> {
    match access {
        Access::Full => Ok(()),
        Access::ReadOnly if req.is_read_only() => Ok(()),
        _ => Err("permission denied"),
    }
}

/// `show stats`: `key=value` lines sorted by key, as smtpctl prints them, with
/// `uptime.human` in OpenSMTPD's `1d2h3m4s` form.
pub fn render_stats(counters: &[(&str, i64)], uptime_secs: u64) -> String {
    let mut all: Vec<(String, String)> = counters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("uptime".into(), uptime_secs.to_string()));
    all.push(("uptime.human".into(), duration_text(uptime_secs)));
    all.sort();
    let mut out = String::new();
    for (k, v) in all {
        out.push_str(&k);
        out.push('=');
        out.push_str(&v);
        out.push('\n');
    }
    out
}

/// OpenSMTPD's `duration_to_text`: `0s`, `1m5s`, `1d2h`.
pub fn duration_text(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = secs;
    for (unit, size) in [('d', 86400), ('h', 3600), ('m', 60), ('s', 1)] {
        let n = left / size;
        left %= size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// `show status`: one line per subsystem, `MDA running|paused` etc.
pub fn render_status(mda_paused: bool, mta_paused: bool, smtp_paused: bool) -> String {
    let word = |p: bool| if p { "paused" } else { "running" };
    format!(
        "MDA {}\nMTA {}\nSMTP {}\n",
        word(mda_paused),
        word(mta_paused),
        word(smtp_paused)
    )
}

#[cfg(test)]
mod tests;
