//! `fugu up`: the whole appliance in a local state folder, on unprivileged ports, for
//! trying fugu out and for development. Each component runs as a child process of this
//! one (the same binary with its own subcommand), logging into `<dir>/logs/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;

pub const DEFAULT_STATE_DIR: &str = "fugu-data";

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The state folder: database, spool, mailboxes, generated configs and logs.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    dir: PathBuf,
    /// SMTP port on 127.0.0.1.
    #[arg(long, default_value_t = 2525)]
    smtp_port: u16,
    /// Port of the loopback listener content filters re-inject into [default: SMTP port + 1].
    #[arg(long)]
    loopback_port: Option<u16>,
    /// HTTPS address of the console.
    #[arg(long, default_value = "127.0.0.1:8443")]
    console: std::net::SocketAddr,
}

struct Component {
    name: &'static str,
    child: Child,
}

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    for sub in ["logs", "vmail", "spool"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let db = dir.join("fugu.db");
    prepare_database(&db, &dir)?;
    let settings = dir.join("fugu.toml");
    if !settings.exists() {
        std::fs::write(
            &settings,
            format!(
                "# Written by `fugu up`: the local, unprivileged setup.\nhostname = \"localhost\"\nlisten = [\"127.0.0.1\"]\n\n\
                 [ports]\nsmtp = {}\nloopback = {}\n\n[provision]\noutputs = [\"smtpd\", \"dkim\"]\nlocal_delivery = \"maildir\"\n",
                args.smtp_port,
                args.loopback_port
                    .unwrap_or_else(|| args.smtp_port.saturating_add(1))
            ),
        )
        .with_context(|| format!("cannot write {}", settings.display()))?;
    }
    let me = std::env::current_exe().context("cannot find the fugu binary")?;
    let root = dir.to_string_lossy().into_owned();
    let conf = settings.to_string_lossy().into_owned();
    // The first render must exist before the mta reads it.
    let status = Command::new(&me)
        .args([
            "provision",
            "--once",
            "--root",
            &root,
            "--config",
            &conf,
            "--db",
        ])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(log_file(&dir, "provision-first")?)
        .status()
        .context("cannot run fugu provision")?;
    anyhow::ensure!(
        status.success(),
        "the first `fugu provision` failed: see {}",
        dir.join("logs/provision-first.log").display()
    );

    let mut parts = Vec::new();
    let smtpd_conf = dir.join("generated/smtpd.conf");
    parts.push(spawn(&me, &dir, "smtpd", |c| {
        c.args(["smtpd", "-d", "-f"])
            .arg(&smtpd_conf)
            .arg("--spool")
            .arg(dir.join("spool"));
    })?);
    parts.push(spawn(&me, &dir, "provision", |c| {
        c.args([
            "provision",
            "--watch",
            "--root",
            &root,
            "--config",
            &conf,
            "--db",
        ])
        .arg(&db);
    })?);
    parts.push(spawn(&me, &dir, "admin", |c| {
        c.args([
            "admin",
            "--listen",
            &args.console.to_string(),
            "--config",
            &conf,
            "--control-socket",
        ])
        .arg(dir.join("spool").join("control.sock"))
        .arg("--db")
        .arg(&db);
    })?);

    println!("fugu up: state in {}", dir.display());
    println!("  database    {}", db.display());
    println!(
        "  smtpd       smtp://127.0.0.1:{} (mail for your domains lands in {}/<domain>/<user>/Maildir)",
        args.smtp_port,
        dir.join("vmail").display()
    );
    println!(
        "  console     https://{} (self-signed certificate; the first visit creates the admin)",
        args.console
    );
    println!(
        "  provision   re-renders {} on every database change",
        dir.join("generated").display()
    );
    println!("  logs        {}/", dir.join("logs").display());
    println!("Add a domain and a user from another terminal in this directory:");
    println!("  fugu domain add example.org && fugu user add alice@example.org");
    println!("Ctrl-C stops everything.");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    watch_signals(stop.clone());
    let code = loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break ExitCode::SUCCESS;
        }
        if let Some((name, status)) = parts
            .iter_mut()
            .find_map(|p| p.child.try_wait().ok().flatten().map(|s| (p.name, s)))
        {
            eprintln!(
                "fugu up: {name} exited ({status}); see {}",
                dir.join(format!("logs/{name}.log")).display()
            );
            break ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for p in &mut parts {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for p in &mut parts {
        let _ = p.child.wait();
    }
    println!("fugu up: stopped");
    Ok(code)
}

/// Mailboxes under the state folder, owned by whoever runs `fugu up`.
fn prepare_database(db: &Path, dir: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = store::Store::open(db).await?;
        store
            .set_setting("vmail_home", &dir.join("vmail").to_string_lossy())
            .await?;
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        // uid 0 is never a mailbox owner (Dovecot refuses it); keep the default then.
        if uid > 0 && gid > 0 {
            store.set_setting("vmail_uid", &uid.to_string()).await?;
            store.set_setting("vmail_gid", &gid.to_string()).await?;
        }
        store.close().await;
        anyhow::Ok(())
    })
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = dir.join("logs").join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn spawn(
    me: &Path,
    dir: &Path,
    name: &'static str,
    args: impl FnOnce(&mut Command),
) -> anyhow::Result<Component> {
    let mut cmd = Command::new(me);
    args(&mut cmd);
    let log = log_file(dir, name)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Component { name, child })
}

/// Sets `flag` on SIGINT or SIGTERM, from a small runtime on its own thread.
fn watch_signals(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
}
