//! `fugu smtpd` (the mta) and `fugu config` (checking and converting smtpd.conf).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

pub const DEFAULT_CONFIG: &str = "/etc/fugu/generated/smtpd.conf";

#[derive(Debug, clap::Args)]
pub struct SmtpdArgs {
    /// The configuration file.
    #[arg(short = 'f', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Check the configuration (and its files and tables) and exit, like `smtpd -n`.
    #[arg(short = 'n')]
    check: bool,
    /// With -n: print the configuration in normalised form.
    #[arg(long, requires = "check")]
    dump: bool,
    /// Stay in the foreground and log to standard error.
    #[arg(short = 'd')]
    debug: bool,
    /// Verbose logging.
    #[arg(short = 'v')]
    verbose: bool,
    /// The queue directory (overrides the config's `spool`).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Convert an OpenSMTPD ≤6.0 configuration (accept/reject rules) into the 6.4+ grammar.
    Convert {
        old: PathBuf,
        /// Write here instead of standard output.
        #[arg(short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a configuration, like `fugu smtpd -n -f FILE`.
    Check { file: PathBuf },
}

pub fn smtpd(args: SmtpdArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return check(&args.config, args.dump);
    }
    share_one_malloc_arena();
    // fugu never forks into the background: a service manager (systemd, rc.d) or the
    // operator's terminal owns the process. `-d` is accepted for smtpd compatibility.
    let _ = args.debug;
    init_logging(args.verbose);
    mta::daemon::run(mta::daemon::Options {
        config: args.config,
        spool: args.spool,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the daemon again, same process and arguments, with `MALLOC_ARENA_MAX=1`, unless
/// the operator set glibc's arena limit already.
///
/// glibc gives each thread that allocates an arena of its own, and each arena keeps its
/// own high-water mark: after a burst of 1000 sessions the runtime's worker threads held
/// about 1 MiB more than one shared arena does, at no measurable cost in speed (see the
/// benchmarks page). glibc takes the limit from the environment only as the process
/// starts, and `mallopt` would need `unsafe`, which the workspace forbids.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn share_one_malloc_arena() {
    use std::os::unix::process::CommandExt as _;
    let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"));
    if chosen {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut argv = std::env::args_os();
    let Some(arg0) = argv.next() else {
        return;
    };
    // `exec` returns only if it failed: the daemon then runs with glibc's default.
    let _ = std::process::Command::new(exe)
        .arg0(arg0)
        .args(argv)
        .env("MALLOC_ARENA_MAX", "1")
        .exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn share_one_malloc_arena() {}

/// Log lines on standard error in OpenSMTPD's shape: the message only, no target.
pub fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FUGU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // `fugu ctl log verbose|brief` swaps the filter of the running daemon.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .event_format(crate::logline::LogLine)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        mta::daemon::set_log_switch(move |verbose| {
            let level = if verbose { "debug" } else { "info" };
            handle
                .reload(tracing_subscriber::EnvFilter::new(level))
                .map_err(|e| e.to_string())
        });
    }
}

pub fn config(cmd: ConfigCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCmd::Check { file } => check(&file, false),
        ConfigCmd::Convert { old, output } => convert(&old, output.as_deref()),
    }
}

fn check(path: &Path, dump: bool) -> anyhow::Result<ExitCode> {
    match mta::config::load(path) {
        Ok(cfg) => {
            if dump {
                print!("{}", cfg.dump());
            }
            println!("configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprintln!("{diags}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn convert(old: &Path, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(old).with_context(|| format!("cannot read {}", old.display()))?;
    let converted = match mta::config::convert::convert(&text) {
        Ok(c) => c,
        Err(diags) => {
            eprintln!(
                "{}",
                diags
                    .to_string()
                    .replace("<old config>", &old.display().to_string())
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    // The result must parse in the new grammar; files and tables are checked by `-n` on
    // the box that has them.
    if let Err(diags) =
        mta::config::parse(&converted, Path::new("<converted>"), &mta::config::FsLoader)
    {
        eprintln!("the converted configuration does not parse (please report this):\n{diags}");
        return Ok(ExitCode::FAILURE);
    }
    match output {
        None => print!("{converted}"),
        Some(out) => {
            let tmp = out.with_extension("conf.tmp");
            std::fs::write(&tmp, &converted)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, out)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
            eprintln!(
                "wrote {}; check it with `fugu smtpd -n -f {}`",
                out.display(),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
