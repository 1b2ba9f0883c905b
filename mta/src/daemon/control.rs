//! `<spool>/control.sock`: serves [`crate::control`] requests from `fugu ctl` against the
//! running queue, scheduler and listeners.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Reloader, StartError};
use crate::clock::unix_seconds;
use crate::control::{
    Access, Peer, Request, Response, Subsystem, access, authorize, render_stats, render_status,
};
use crate::queue::Queue;

/// The control socket's name in the spool.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The group whose members may read the queue through the socket.
const CONTROL_GROUP: &str = "fugu";

/// A request line longer than this is not a command.
const MAX_REQUEST: u64 = 4096;

type LogSwitch = Box<dyn Fn(bool) -> Result<(), String> + Send + Sync>;

static LOG_SWITCH: OnceLock<LogSwitch> = OnceLock::new();

/// Registers how `log verbose|brief` changes the log level: the binary owns the tracing
/// subscriber, the daemon only asks for it to change.
pub fn set_log_switch(f: impl Fn(bool) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LOG_SWITCH.set(Box::new(f));
}

pub(super) struct Control {
    pub queue: Queue,
    pub reloader: Arc<Reloader>,
    pub smtp_paused: crate::server::PauseSwitch,
    pub sessions: crate::server::SessionGauge,
    pub started: Instant,
    pub daemon_uid: u32,
    pub fugu_gid: Option<u32>,
}

pub(super) fn fugu_gid() -> Option<u32> {
    nix::unistd::Group::from_name(CONTROL_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Binds the socket: mode 0660, group `fugu` when that group exists (root only can
/// change the group; otherwise the daemon user's own group stays).
pub(super) fn bind(spool: &Path) -> Result<UnixListener, StartError> {
    let path = spool.join(CONTROL_SOCKET);
    let io = |source| crate::Error::Io {
        path: path.clone(),
        source,
    };
    // A stale socket of a daemon killed with -9; the spool lock already proved no other
    // daemon runs here.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(gid) = fugu_gid()
        && let Err(e) = nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
    {
        tracing::warn!(
            "control: cannot give {} to group {CONTROL_GROUP}: {e}",
            path.display()
        );
    }
    Ok(listener)
}

pub(super) async fn serve(listener: UnixListener, ctl: Arc<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ctl = ctl.clone();
        tokio::spawn(async move { connection(&ctl, stream).await });
    }
}

/// Whether the process `pid` (or else user `uid`) is in group `gid`: supplementary groups
/// from `/proc` first, as the kernel sees that very process.
fn in_group(pid: Option<i32>, uid: u32, primary: u32, gid: u32) -> bool {
    if primary == gid {
        return true;
    }
    if let Some(pid) = pid
        && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(line) = status.lines().find(|l| l.starts_with("Groups:"))
    {
        return line
            .split_whitespace()
            .skip(1)
            .any(|g| g.parse::<u32>() == Ok(gid));
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .is_some_and(|g| g.mem.contains(&user.name))
}

async fn connection(ctl: &Control, stream: UnixStream) {
    let who = match stream.peer_cred() {
        Ok(c) => {
            let in_fugu_group = ctl
                .fugu_gid
                .is_some_and(|g| in_group(c.pid(), c.uid(), c.gid(), g));
            access(
                Peer {
                    uid: c.uid(),
                    gid: c.gid(),
                    in_fugu_group,
                },
                ctl.daemon_uid,
            )
        }
        Err(_) => Access::None,
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    let got = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    let response = match got {
        Ok(Ok(_)) => match Request::parse(&line) {
            Ok(req) => match authorize(who, &req) {
                Ok(()) => execute(ctl, req).await,
                Err(e) => Response::Err(e.into()),
            },
            Err(e) => Response::Err(e.to_string()),
        },
        _ => return,
    };
    let _ = write.write_all(&response.render()).await;
    let _ = write.shutdown().await;
}

async fn execute(ctl: &Control, req: Request) -> Response {
    let q = &ctl.queue;
    match req {
        Request::ShowQueue(filter) => {
            let now = unix_seconds(std::time::SystemTime::now());
            let mut out = String::new();
            for e in q.list() {
                if filter
                    .as_deref()
                    .is_some_and(|f| !e.evpid.to_string().starts_with(f))
                {
                    continue;
                }
                out.push_str(&e.line(now, true));
                out.push('\n');
            }
            Response::ok(out)
        }
        Request::ShowStats => {
            let s = q.stats();
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let z = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            Response::ok(render_stats(
                &[
                    ("queue.commit.messages", n(s.committed)),
                    ("queue.commit.rounds", n(s.commit_rounds)),
                    ("scheduler.delivery.ok", n(s.delivered)),
                    ("scheduler.delivery.permfail", n(s.permfail)),
                    ("scheduler.delivery.tempfail", n(s.tempfail)),
                    ("scheduler.envelope", z(s.envelopes)),
                    ("scheduler.envelope.expired", n(s.expired)),
                    ("scheduler.envelope.inflight", z(s.inflight)),
                    ("scheduler.envelope.removed", n(s.removed)),
                    ("scheduler.ramqueue.message", z(s.messages)),
                    ("smtp.session", z(ctl.sessions.current())),
                ],
                ctl.started.elapsed().as_secs(),
            ))
        }
        Request::ShowStatus => Response::ok(render_status(
            q.is_paused(false),
            q.is_paused(true),
            ctl.smtp_paused.is_paused(),
        )),
        Request::ShowEnvelope(id) => match q.show_envelope(&id) {
            Ok(text) => Response::ok(text),
            Err(e) => Response::Err(e.to_string()),
        },
        Request::ShowMessage(id) => match q.show_message(&id).await {
            Ok(bytes) => Response::Ok(bytes),
            Err(e) => Response::Err(e.to_string()),
        },
        Request::Schedule(id) => match q.schedule(&id) {
            Ok(n) => Response::ok(format!("{n} envelope(s) scheduled\n")),
            Err(e) => Response::Err(e.to_string()),
        },
        Request::Remove(id) => match q.remove(&id).await {
            Ok(n) => Response::ok(format!("{n} envelope(s) removed\n")),
            Err(e) => Response::Err(e.to_string()),
        },
        Request::Pause(sub) | Request::Resume(sub) => {
            let pause = matches!(req, Request::Pause(_));
            match sub {
                Subsystem::Mda => q.set_paused(false, pause),
                Subsystem::Mta => q.set_paused(true, pause),
                Subsystem::Smtp => ctl.smtp_paused.set(pause),
            }
            let word = if pause { "paused" } else { "resumed" };
            tracing::info!("control: {} {word}", sub.name());
            Response::ok(format!("command succeeded: {} {word}\n", sub.name()))
        }
        Request::Reload => {
            let r = ctl.reloader.clone();
            match tokio::task::spawn_blocking(move || r.reload_logged()).await {
                Ok(Ok(())) => Response::ok("command succeeded: configuration reloaded\n"),
                Ok(Err(e)) => Response::Err(format!("reload refused: {e}")),
                Err(e) => Response::Err(format!("reload failed: {e}")),
            }
        }
        Request::Log(verbose) => match LOG_SWITCH.get() {
            Some(f) => match f(verbose) {
                Ok(()) => {
                    let word = if verbose { "verbose" } else { "brief" };
                    Response::ok(format!("command succeeded: logging {word}\n"))
                }
                Err(e) => Response::Err(e),
            },
            None => Response::Err("this daemon cannot change its log level".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_membership_comes_from_the_peer_process() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let primary = nix::unistd::getgid().as_raw();
        assert!(in_group(Some(pid), uid, primary, primary));
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let groups: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        for g in &groups {
            assert!(in_group(Some(pid), uid, u32::MAX - 1, *g));
        }
        let unused = (60000..65000)
            .find(|g| *g != primary && !groups.contains(g))
            .unwrap();
        assert!(!in_group(Some(pid), uid, primary, unused));
    }
}
