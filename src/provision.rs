//! `fugu provision`: render every generated file from the database and apply it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::DbArg;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Render and apply once, then exit.
    #[arg(long, conflicts_with = "watch")]
    once: bool,
    /// Keep running: apply within 2 seconds of every database change.
    #[arg(long)]
    watch: bool,
    /// Print a unified diff of what would change, write nothing.
    #[arg(long, conflicts_with = "watch")]
    dry_run: bool,
    /// Write everything under this directory instead of /etc/fugu/generated (tests,
    /// image builds, `fugu up`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The appliance settings [default: /etc/fugu/fugu.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    db: DbArg,
}

pub fn run(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    crate::smtpd::init_logging(false);
    let settings = Settings::load(args.config.as_deref())?;
    let config = settings.provisioner(args.root.as_deref())?;
    let db = args.db.path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = store::Store::open(&db).await?;
        if args.watch {
            provisioner::watch(&store, &config).await?;
            return Ok(ExitCode::SUCCESS);
        }
        let report = provisioner::run_once(&store, &config, args.dry_run).await?;
        // Each written file is logged by the provisioner; say so when there was none.
        if !args.dry_run && report.written.is_empty() && report.removed.is_empty() {
            println!("nothing changed ({} files up to date)", report.unchanged);
        }
        let mut ok = report.is_success();
        for failed in report.failed_reloads() {
            eprintln!("fugu: {failed}");
            ok = false;
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
