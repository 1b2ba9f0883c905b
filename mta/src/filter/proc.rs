//! The process shell of one `proc-exec` filter: spawns `/bin/sh -c "exec CMD"`, runs the
//! handshake, writes requests through one writer task and routes the answers of one
//! reader task to sessions by session id.
//!
//! A process that exits or writes a line that does not parse is lost: it is logged as
//! `warn: lost processor: NAME`, every session attached to it sees its channel close (and
//! tempfails), and the process is started again after a pause. Sessions attached to the
//! lost instance never talk to the new one: filters keep per-session state from
//! `link-connect` on and would refuse strangers.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use super::protocol::{self, Registration, Response};
use crate::Error;

/// Where a relative command is looked up, as Debian's OpenSMTPD does.
pub const LIBEXEC: &str = "/usr/libexec/opensmtpd";

/// How long a filter may take to send `register|ready`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause before a lost filter is started again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// How a filter process is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    /// The filter (or `proc`) name, used in logs.
    pub name: String,
    pub command: String,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `config|admd|…`.
    pub admd: String,
    /// `config|smtp-session-timeout|…`.
    pub session_timeout: u64,
}

/// One running instance of a filter process.
pub struct Live {
    reports: HashSet<String>,
    phases: HashSet<String>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    routes: Mutex<HashMap<u64, mpsc::UnboundedSender<Response>>>,
    dead: AtomicBool,
}

impl Live {
    /// Whether the process asked for this report event.
    pub fn wants_report(&self, event: &str) -> bool {
        self.reports.contains("*") || self.reports.contains(event)
    }

    /// Whether the process filters this phase.
    pub fn wants_phase(&self, phase: &str) -> bool {
        self.phases.contains(phase)
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Sends one line (without LF). False once the process is lost.
    pub fn send(&self, line: Vec<u8>) -> bool {
        !self.is_dead() && self.tx.send(line).is_ok()
    }

    /// The channel this session's answers arrive on; it closes when the process is lost.
    pub fn attach(&self, sid: u64) -> mpsc::UnboundedReceiver<Response> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_dead() {
            routes.insert(sid, tx);
        }
        rx
    }

    pub fn detach(&self, sid: u64) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.remove(&sid);
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.clear();
    }
}

/// A filter process and its restarts.
pub struct Process {
    spec: ProcSpec,
    live: Mutex<Option<Arc<Live>>>,
}

impl Process {
    /// Starts the process and waits for its `register|ready`; a later loss restarts it.
    pub async fn start(spec: ProcSpec) -> Result<Arc<Process>, Error> {
        let (live, child, stdout) = spawn(&spec).await?;
        let p = Arc::new(Process {
            spec,
            live: Mutex::new(Some(live.clone())),
        });
        tokio::spawn(supervise(p.clone(), live, child, stdout));
        Ok(p)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The running instance, `None` while it is being restarted.
    pub fn live(&self) -> Option<Arc<Live>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|l| !l.is_dead())
    }

    fn set_live(&self, l: Option<Arc<Live>>) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }
}

fn failed(spec: &ProcSpec, reason: impl Into<String>) -> Error {
    Error::Filter {
        name: spec.name.clone(),
        reason: reason.into(),
    }
}

/// The command as smtpd runs it: relative names live in [`LIBEXEC`].
fn command_line(command: &str) -> String {
    if command.starts_with('/') {
        format!("exec {command}")
    } else {
        format!("exec {LIBEXEC}/{command}")
    }
}

async fn spawn(spec: &ProcSpec) -> Result<(Arc<Live>, Child, ChildStdout), Error> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command_line(&spec.command))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if nix::unistd::geteuid().is_root() {
        if let Some(g) = &spec.group {
            let group = nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| failed(spec, format!("unknown group {g}")))?;
            cmd.gid(group.gid.as_raw());
        }
        if let Some(u) = &spec.user {
            let user = nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| failed(spec, format!("unknown user {u}")))?;
            if spec.group.is_none() {
                cmd.gid(user.gid.as_raw());
            }
            cmd.uid(user.uid.as_raw());
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(spec, format!("cannot start {}: {e}", spec.command)))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failed(spec, "no pipes to the process"));
    };
    let name = spec.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(target: "smtp", "{name}: {line}");
        }
    });
    let mut config = String::new();
    for l in protocol::config_lines(spec.session_timeout, &spec.admd) {
        config.push_str(&l);
        config.push('\n');
    }
    stdin
        .write_all(config.as_bytes())
        .await
        .map_err(|e| failed(spec, format!("handshake: {e}")))?;
    let mut reader = BufReader::new(stdout);
    let mut reports = HashSet::new();
    let mut phases = HashSet::new();
    let handshake = async {
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("exited during the handshake".to_owned());
            }
            match protocol::parse_registration(line.trim_end_matches(['\n', '\r'])) {
                Ok(Registration::Report(e)) => {
                    reports.insert(e);
                }
                Ok(Registration::Filter(p)) => {
                    phases.insert(p);
                }
                Ok(Registration::Ready) => return Ok(()),
                Err(e) => return Err(format!("handshake: {e}")),
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(spec, e)),
        Err(_) => return Err(failed(spec, "no register|ready within 30 s")),
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() {
                break;
            }
        }
    });
    tracing::info!(
        target: "smtp",
        "filter {}: registered, phases {:?}, reports {:?}",
        spec.name,
        sorted(&phases),
        sorted(&reports)
    );
    let live = Arc::new(Live {
        reports,
        phases,
        tx,
        routes: Mutex::new(HashMap::new()),
        dead: AtomicBool::new(false),
    });
    Ok((live, child, reader.into_inner()))
}

fn sorted(s: &HashSet<String>) -> Vec<&str> {
    let mut v: Vec<&str> = s.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// Reads answers until the process is lost; then restarts it, forever.
async fn supervise(
    p: Arc<Process>,
    mut live: Arc<Live>,
    mut child: Child,
    mut stdout: ChildStdout,
) {
    loop {
        let why = route(&live, &mut stdout).await;
        live.kill();
        p.set_live(None);
        let _ = child.start_kill();
        let status = child.wait().await;
        tracing::warn!(
            target: "smtp",
            "warn: lost processor: {} {why} ({})",
            p.spec.name,
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        );
        loop {
            tokio::time::sleep(RESTART_DELAY).await;
            match spawn(&p.spec).await {
                Ok((l, c, o)) => {
                    (live, child, stdout) = (l, c, o);
                    p.set_live(Some(live.clone()));
                    break;
                }
                Err(e) => tracing::warn!(target: "smtp", "filter restart failed: {e}"),
            }
        }
    }
}

/// Routes answers to sessions; returns why it stopped.
async fn route(live: &Live, stdout: &mut ChildStdout) -> String {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return "exited".to_owned(),
            Err(e) => return format!("read error: {e}"),
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let resp = match protocol::parse_response(&line) {
            Ok(r) => r,
            Err(e) => return format!("sent garbage: {e}"),
        };
        let sid = match &resp {
            Response::Result { sid, .. } | Response::DataLine { sid, .. } => *sid,
        };
        let routes = live.routes.lock().unwrap_or_else(|p| p.into_inner());
        // A session that already left: its answers have nowhere to go.
        if let Some(tx) = routes.get(&sid) {
            let _ = tx.send(resp);
        }
    }
}
