//! `fugu ctl`: smtpctl for fugu. Sends one command to the daemon's control socket
//! (`<spool>/control.sock`) and prints the answer; `show queue` reads the spool directly
//! when the daemon is not running, as smtpctl does.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mta::control::{Request, Response};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Daemon commands (smtpctl's; words may be abbreviated, `fugu ctl sh q`):
  show queue [MSGID]     one line per envelope; read from the spool when the daemon is down
  show stats             counters, key=value
  show status            MDA/MTA/SMTP running or paused
  show envelope ID       the envelope file of a message
  show message ID        the message as received
  schedule ID|all        retry now
  remove ID|all          delete waiting envelopes
  pause|resume mda|mta|smtp
  reload                 re-read smtpd.conf, tables and pki files (as SIGHUP)
  log verbose|brief"
)]
pub struct CtlArgs {
    /// The queue directory [default: $FUGU_SPOOL, else ./fugu-data/spool when it exists
    /// (a `fugu up` folder), else /var/spool/fugu]
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The appliance database, for the access-list commands.
    #[command(flatten)]
    db: crate::DbArg,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Access lists: `spf walk`, `allowlist import`, `blocklist import`, `ingest-log`
    /// (these work on the database and DNS, not through the daemon).
    #[command(flatten)]
    Access(crate::access_cli::AccessCommand),
    /// A daemon command, smtpctl's words (which may be abbreviated, `sh q`):
    /// show queue [MSGID] | show stats | show status | show envelope ID | show message ID |
    /// schedule ID|all | remove ID|all | pause|resume mda|mta|smtp | reload |
    /// log verbose|brief
    #[command(external_subcommand)]
    Daemon(Vec<String>),
}

/// The spool `fugu ctl`, `sendmail` and `mailq` use without `--spool`.
pub fn default_spool(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("FUGU_SPOOL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(crate::up::DEFAULT_STATE_DIR).join("spool");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(mta::daemon::DEFAULT_SPOOL)
}

pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let spool = default_spool(args.spool.as_deref());
    match args.command {
        CtlCommand::Access(cmd) => Ok(crate::access_cli::run(cmd, &args.db.path(), &spool)),
        CtlCommand::Daemon(words) => {
            let req = Request::from_words(&words)?;
            daemon_command(&spool, &req)
        }
    }
}

fn daemon_command(spool: &Path, req: &Request) -> anyhow::Result<ExitCode> {
    match send(spool, req) {
        Ok(Response::Ok(body)) => {
            std::io::stdout().write_all(&body)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(Response::Err(e)) => Err(anyhow::anyhow!("{e}")),
        Err(Unreachable::NotRunning(why)) => match req {
            Request::ShowQueue(filter) => {
                print!("{}", offline_queue(spool, filter.as_deref())?);
                Ok(ExitCode::SUCCESS)
            }
            _ => Err(anyhow::anyhow!(
                "the daemon is not running ({}: {why})",
                spool.join(mta::daemon::CONTROL_SOCKET).display()
            )),
        },
        Err(Unreachable::Other(e)) => Err(e),
    }
}

/// Why the daemon did not answer.
pub enum Unreachable {
    /// No socket, or nobody listening on it: the daemon is down.
    NotRunning(std::io::Error),
    Other(anyhow::Error),
}

/// Sends `req` and reads the whole response.
pub fn send(spool: &Path, req: &Request) -> Result<Response, Unreachable> {
    let path = spool.join(mta::daemon::CONTROL_SOCKET);
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Unreachable::NotRunning(e));
        }
        Err(e) => {
            return Err(Unreachable::Other(
                anyhow::Error::new(e).context(format!("connect to {}", path.display())),
            ));
        }
    };
    let mut exchange = || -> anyhow::Result<Response> {
        // A reload reads every table and key: give it time, but never hang forever.
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.write_all(format!("{req}\n").as_bytes())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Response::decode(&buf).map_err(|e| anyhow::anyhow!(e))
    };
    exchange()
        .with_context(|| format!("talking to {}", path.display()))
        .map_err(Unreachable::Other)
}

/// `show queue` straight from the spool files, every line `offline|` like smtpctl.
pub fn offline_queue(spool: &Path, filter: Option<&str>) -> anyhow::Result<String> {
    let now = mta::clock::unix_seconds(std::time::SystemTime::now());
    // The daemon is down: its error already names the path.
    let entries = mta::queue::Queue::list_offline(spool).map_err(|e| {
        anyhow::anyhow!("the daemon is not running, and reading the queue failed: {e}")
    })?;
    let mut out = String::new();
    for e in entries {
        if filter.is_some_and(|f| !e.evpid.to_string().starts_with(f)) {
            continue;
        }
        out.push_str(&e.line(now, false));
        out.push('\n');
    }
    Ok(out)
}

/// The `show queue` text, from the daemon or (when it is down) the spool.
pub fn queue_text(spool: &Path) -> anyhow::Result<String> {
    match send(spool, &Request::ShowQueue(None)) {
        Ok(Response::Ok(body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
        Ok(Response::Err(e)) => Err(anyhow::anyhow!("{e}")),
        Err(Unreachable::NotRunning(_)) => offline_queue(spool, None),
        Err(Unreachable::Other(e)) => Err(e),
    }
}
