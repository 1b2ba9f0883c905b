//! `fugu`: one multi-call binary for the whole appliance. Thin: it parses the command
//! line, builds each component's typed configuration and calls into the crates.

mod access_cli;
mod admin;
mod admin_cli;
mod ctl;
mod logline;
mod provision;
mod quickstart;
mod sendmail;
mod settings;
mod smtpd;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fugu",
    version,
    about = "A mail-server appliance: SMTP server, admin console and provisioner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the database is unless `--db` says otherwise.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArg {
    /// The appliance database [default: $FUGU_DB, else ./fugu-data/fugu.db when ./fugu-data
    /// exists (a `fugu up` folder), else /var/lib/fugu/fugu.db]
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl DbArg {
    pub fn path(&self) -> PathBuf {
        if let Some(p) = &self.db {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("FUGU_DB") {
            return PathBuf::from(p);
        }
        let local = PathBuf::from(up::DEFAULT_STATE_DIR);
        if local.is_dir() {
            return local.join("fugu.db");
        }
        PathBuf::from("/var/lib/fugu/fugu.db")
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage mail domains.
    Domain {
        #[command(subcommand)]
        action: admin_cli::DomainCmd,
        #[command(flatten)]
        db: DbArg,
    },
    /// Manage mailbox users.
    User {
        #[command(subcommand)]
        action: admin_cli::UserCmd,
        #[command(flatten)]
        db: DbArg,
    },
    /// Manage aliases (forwarding addresses and catch-alls).
    Alias {
        #[command(subcommand)]
        action: admin_cli::AliasCmd,
        #[command(flatten)]
        db: DbArg,
    },
    /// Show or change appliance settings kept in the database.
    Setting {
        #[command(subcommand)]
        action: admin_cli::SettingCmd,
        #[command(flatten)]
        db: DbArg,
    },
    /// Hash a password read from standard input and print the bare hash, like `smtpctl encrypt`.
    Encrypt {
        /// argon2id (default) or bcrypt (for tables shared with real OpenSMTPD).
        #[arg(long, default_value = "argon2id")]
        scheme: password::Scheme,
    },
    /// Run the appliance in a local state folder on unprivileged ports.
    Up(up::UpArgs),
    /// The SMTP server; `fugu smtpd -n -f FILE` checks a configuration like `smtpd -n`.
    Smtpd(smtpd::SmtpdArgs),
    /// The browser console and JSON API.
    Admin(Box<admin::AdminArgs>),
    /// Render Dovecot, MTA, DKIM, TLS and packet-filter files from the database.
    Provision(provision::ProvisionArgs),
    /// First setup of a real box: users, directories, database, superadmin, certificate,
    /// fugu.toml, provisioned files and the DNS records to publish. Safe to re-run.
    Quickstart(quickstart::QuickstartArgs),
    /// Talk to the running SMTP server (queue, pause/resume, reload), like smtpctl.
    Ctl(ctl::CtlArgs),
    /// Submit a message read from standard input, like sendmail(8) (also run as
    /// `sendmail`, `mailq` and `newaliases` through symlinks).
    Sendmail {
        /// sendmail options (-t, -f ADDR, -F NAME, -i/-oi, -bm, -bp, -bi, --) and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the queue in sendmail's layout, like `mailq`.
    Mailq,
    /// Check or convert smtpd.conf files.
    Config {
        #[command(subcommand)]
        action: smtpd::ConfigCmd,
    },
}

fn main() -> ExitCode {
    // sendmail(8) options are not clap's: `-oi`, `-Fname`, recipients after `--`.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let name = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("fugu");
    match name {
        "sendmail" => return sendmail::sendmail(&argv[1..]),
        "mailq" => return sendmail::mailq(),
        "newaliases" => return sendmail::newaliases(),
        _ => {}
    }
    if argv.get(1).map(String::as_str) == Some("sendmail") {
        return sendmail::sendmail(&argv[2..]);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the cause chain joined, as operators read it in a terminal or a log.
            eprintln!("fugu: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Domain { action, db } => admin_cli::domain(action, &db.path()),
        Command::User { action, db } => admin_cli::user(action, &db.path()),
        Command::Alias { action, db } => admin_cli::alias(action, &db.path()),
        Command::Setting { action, db } => admin_cli::setting(action, &db.path()),
        Command::Encrypt { scheme } => admin_cli::encrypt(scheme),
        Command::Up(args) => up::run(args),
        Command::Smtpd(args) => smtpd::smtpd(args),
        Command::Config { action } => smtpd::config(action),
        Command::Provision(args) => provision::run(args),
        Command::Admin(args) => admin::run(*args),
        Command::Ctl(args) => ctl::run(args),
        Command::Sendmail { args } => Ok(sendmail::sendmail(&args)),
        Command::Mailq => Ok(sendmail::mailq()),
        Command::Quickstart(args) => quickstart::run(args),
    }
}
