//! `fugu up`: the whole appliance in a local state folder, on unprivileged ports, for
//! trying fugu out and for development. Each component runs as a child process of this
//! one (the same binary with its own subcommand), logging into `<dir>/logs/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

pub const DEFAULT_STATE_DIR: &str = "fugu-data";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The state folder: database, spool, mailboxes, generated configs and logs.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    dir: PathBuf,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    for sub in ["", "logs"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let db = dir.join("fugu.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        store::Store::open(&db).await?.close().await;
        anyhow::Ok(())
    })?;
    println!("fugu up: state in {}", dir.display());
    println!(
        "  database   {} (manage it with `fugu domain|user|alias … --db {}`)",
        db.display(),
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}
