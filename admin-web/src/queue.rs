//! The queue page: the mta's queue read through its control socket, with retry and delete.
//!
//! The client speaks the documented wire format (docs/src/reference/protocol.md, "Control
//! socket") itself rather than linking the mta crate: one request line, then `ok LEN\n`
//! and LEN bytes, or `error TEXT\n`, then the daemon closes.

use std::path::Path as FsPath;
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::Response;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::AppState;
use crate::auth::{self, Console};
use crate::error::AppError;
use crate::ops;
use crate::ops::Actor;
use crate::pages::{Nav, done, nav};

/// The daemon answers at once; a hung daemon must not hang the page.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are refused rather than buffered without bound.
const MAX_BODY: usize = 64 << 20;

/// Why a control request did not produce an answer body.
#[derive(Debug)]
pub(crate) enum ControlError {
    /// No socket, or nobody listening on it: the mta does not run on this box.
    NotRunning,
    /// The daemon answered `error TEXT`.
    Refused(String),
    /// The connection broke or the answer did not follow the protocol.
    Protocol(String),
}

/// Sends one request line and returns the body of an `ok` answer.
pub(crate) async fn request(socket: &FsPath, line: &str) -> Result<String, ControlError> {
    match tokio::time::timeout(TIMEOUT, exchange(socket, line)).await {
        Ok(r) => r,
        Err(_) => Err(ControlError::Protocol(
            "the mta did not answer within 10 seconds".to_string(),
        )),
    }
}

async fn exchange(socket: &FsPath, line: &str) -> Result<String, ControlError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ControlError::NotRunning
            }
            _ => ControlError::Protocol(format!("{}: {e}", socket.display())),
        })?;
    let broken = |e: std::io::Error| ControlError::Protocol(format!("control socket: {e}"));
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(broken)?;
    let mut status = String::new();
    stream.read_line(&mut status).await.map_err(broken)?;
    let status = status.trim_end_matches('\n');
    if let Some(text) = status.strip_prefix("error ") {
        return Err(ControlError::Refused(text.to_string()));
    }
    let len = status
        .strip_prefix("ok ")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n <= MAX_BODY)
        .ok_or_else(|| ControlError::Protocol(format!("unexpected answer {status:?}")))?;
    let mut body = vec![0; len];
    // A body shorter than its LEN is an error, not a shorter body.
    stream
        .read_exact(&mut body)
        .await
        .map_err(|_| ControlError::Protocol(format!("answer shorter than its {len} bytes")))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One recipient waiting in the queue, from a `show queue` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRow {
    pub evpid: String,
    pub sender: String,
    pub rcpt: String,
    pub retries: String,
    /// "now", "in 5m", "in flight" or "daemon offline".
    pub next: String,
    pub age: String,
    pub error: String,
    /// `pending`, `inflight` or `offline`, as the daemon said.
    pub state: &'static str,
    /// Seconds until the next attempt, for pending recipients.
    pub next_secs: Option<i64>,
    pub age_secs: i64,
}

/// Parses OpenSMTPD's `show queue` line:
/// `evpid|src|action|flags|sender|rcpt|rcpt|ctime|expire|lasttry|retries|runstate|delay|error`
/// where runstate is `pending|SECS`, `inflight|0` or `offline|`, and the error escapes `|`
/// and `\` with a backslash and control characters as `\NNN`.
pub(crate) fn parse_line(line: &str) -> Option<QueueRow> {
    let f: Vec<&str> = line.splitn(15, '|').collect();
    if f.len() != 15 || f[0].len() != 16 || !f[0].bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (state, next_secs, next) = match (f[11], f[12].parse::<i64>()) {
        ("pending", Ok(0)) => ("pending", Some(0), "now".to_string()),
        ("pending", Ok(s)) => ("pending", Some(s), format!("in {}", span(s))),
        ("inflight", _) => ("inflight", None, "in flight".to_string()),
        ("offline", _) => ("offline", None, "daemon offline".to_string()),
        _ => return None,
    };
    let age_secs = f[13].parse().ok()?;
    Some(QueueRow {
        evpid: f[0].to_string(),
        sender: if f[4].is_empty() {
            "<>".to_string()
        } else {
            f[4].to_string()
        },
        rcpt: f[5].to_string(),
        retries: f[10].to_string(),
        next,
        age: span(age_secs),
        error: unescape(f[14]),
        state,
        next_secs,
        age_secs,
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(d) if d.is_ascii_digit() => {
                // `\NNN` is a control character: shown as a space, never interpreted.
                chars.nth(1);
                out.push(' ');
            }
            Some(d) => out.push(d),
            None => out.push('\\'),
        }
    }
    out
}

/// A duration the way an operator reads it: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub(crate) fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/queue.html")]
struct QueuePage {
    title: &'static str,
    nav: Option<Nav>,
    flash: Option<String>,
    csrf: String,
    /// `None` when the mta is not running on this box.
    rows: Option<Vec<QueueRow>>,
    problem: Option<String>,
}

/// The queue as both the page and the API see it: `None` when the mta does not run here,
/// otherwise its rows and the daemon's complaint if it answered with an error.
pub(crate) async fn list(
    state: &AppState,
    actor: &Actor,
) -> Result<Option<(Vec<QueueRow>, Option<String>)>, AppError> {
    actor.require_superadmin()?;
    let answer = match &state.config.control_socket {
        Some(path) => request(path, "show queue").await,
        None => Err(ControlError::NotRunning),
    };
    Ok(match answer {
        Ok(body) => Some((body.lines().filter_map(parse_line).collect(), None)),
        Err(ControlError::NotRunning) => None,
        Err(ControlError::Refused(t) | ControlError::Protocol(t)) => Some((Vec::new(), Some(t))),
    })
}

/// What became of a retry or delete the daemon was asked for.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    NotRunning,
    /// The daemon's own words, e.g. `no such message or envelope: …`.
    Refused(String),
}

/// The queue actions: `schedule` (retry now) or `remove`, the only verbs that reach the
/// daemon from here, audited as `queue.<verb>` when the daemon carried them out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    Retry,
    Remove,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Retry => "schedule",
            Action::Remove => "remove",
        }
    }
}

pub(crate) async fn act(
    state: &AppState,
    actor: &Actor,
    action: Action,
    id: &str,
) -> Result<Outcome, AppError> {
    actor.require_superadmin()?;
    // Only ids reach the daemon: nothing else can be smuggled into the request line.
    if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::NotFound(format!("no such envelope: {id}")));
    }
    let Some(path) = &state.config.control_socket else {
        return Ok(Outcome::NotRunning);
    };
    let verb = action.verb();
    Ok(match request(path, &format!("{verb} {id}")).await {
        Ok(_) => {
            ops::audit_event(state, actor, &format!("queue.{verb}"), id, None).await?;
            Outcome::Done
        }
        Err(ControlError::NotRunning) => Outcome::NotRunning,
        Err(ControlError::Refused(t) | ControlError::Protocol(t)) => Outcome::Refused(t),
    })
}

pub(crate) async fn page(State(state): State<AppState>, c: Console) -> Result<Response, AppError> {
    let (rows, problem) = match list(&state, &c.actor).await? {
        Some((rows, problem)) => (Some(rows), problem),
        None => (None, None),
    };
    let view = QueuePage {
        title: "Mail queue",
        nav: nav(&c),
        flash: auth::take_flash(&c.session).await?,
        csrf: c.csrf.clone(),
        rows,
        problem,
    };
    Ok(axum::response::IntoResponse::into_response(view))
}

async fn act_page(
    state: &AppState,
    c: &Console,
    action: Action,
    id: &str,
) -> Result<Response, AppError> {
    let message = match act(state, &c.actor, action, id).await? {
        Outcome::Done => match action {
            Action::Retry => format!("Scheduled {id}."),
            Action::Remove => format!("Removed {id}."),
        },
        Outcome::NotRunning => NOT_RUNNING.to_string(),
        Outcome::Refused(t) => format!("The mta refused: {t}"),
    };
    done(&c.session, message, "/queue").await
}

pub(crate) const NOT_RUNNING: &str = "The mta is not running on this box.";

pub(crate) async fn retry(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    act_page(&state, &c, Action::Retry, &id).await
}

pub(crate) async fn remove(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    act_page(&state, &c, Action::Remove, &id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_line_with_an_escaped_error_parses() {
        let row = parse_line(
            "1a2b3c4d9e8f7a6b|inet|relay||alice@example.org|bob@example.net|bob@example.net|1000|2000|1300|2|pending|420|3700|421 busy \\| try later\\012",
        )
        .unwrap();
        assert_eq!(row.evpid, "1a2b3c4d9e8f7a6b");
        assert_eq!(row.sender, "alice@example.org");
        assert_eq!(row.rcpt, "bob@example.net");
        assert_eq!(row.next, "in 7m");
        assert_eq!(row.age, "1h 1m");
        assert_eq!(row.error, "421 busy | try later ");
    }

    #[test]
    fn bounces_inflight_and_garbage() {
        let row = parse_line(
            "00000001000000aa|local|deliver|bounce||x@example.org|x@example.org|0|0|0|0|inflight|0|90000|",
        )
        .unwrap();
        assert_eq!(
            (row.sender.as_str(), row.next.as_str()),
            ("<>", "in flight")
        );
        assert_eq!(row.age, "1d 1h");
        assert_eq!(parse_line("not a queue line"), None);
        assert_eq!(parse_line("zz|a|b|c|d|e|f|g|h|i|j|pending|0|0|"), None);
    }
}
