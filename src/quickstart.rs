//! `fugu quickstart`: the first setup of a real box. It creates the service users, the
//! directories with their owners and modes, the database, the first domain and superadmin,
//! a self-signed certificate for the mail host name (until ACME replaces it), `fugu.toml`
//! and Dovecot's include, runs the provisioner once, and prints the DNS records to publish.
//!
//! Every step looks before it acts, so a second run changes nothing and says so. With
//! `--root DIR` every path is prefixed by DIR (tests, image staging): no user is created
//! there and owners are set only when running as root and the user exists.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::settings::Settings;

/// The ports the appliance serves: SMTP, HTTP (ACME), HTTPS (console), SMTPS,
/// submission, IMAPS.
pub const PORTS: [u16; 6] = [25, 80, 443, 465, 587, 993];

/// The mta's and the console's user: `_fugu` on OpenBSD (its convention for daemons).
pub const SERVICE_USER: &str = if cfg!(target_os = "openbsd") {
    "_fugu"
} else {
    "fugu"
};
/// The owner of every mailbox (Dovecot writes them as this user).
pub const VMAIL_USER: &str = "vmail";

/// Days the self-signed certificate is valid: short, so that any certificate ACME issues
/// later is preferred (the provisioner serves the valid one that expires last).
const SELF_SIGNED_DAYS: i64 = 30;

#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// The mail host name (MX target, SMTP banner, certificate), e.g. mail.example.org.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// The first mail domain, e.g. example.org.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// The first superadmin's login (an e-mail address); its password is printed once.
    #[arg(long, value_name = "EMAIL")]
    admin: Option<String>,
    /// Prefix every path with DIR (tests and image staging).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Skip the checks for free ports and an installed Dovecot.
    #[arg(long)]
    skip_checks: bool,
}

/// Where everything goes, each path already under the root prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub etc: PathBuf,
    pub settings: PathBuf,
    pub local_include: PathBuf,
    pub generated: PathBuf,
    pub lib: PathBuf,
    pub db: PathBuf,
    pub spool: PathBuf,
    pub vmail: PathBuf,
    pub dovecot_local: PathBuf,
}

impl Layout {
    pub fn under(root: &Path) -> Layout {
        let p = |rel: &str| root.join(rel);
        let etc = p("etc/fugu");
        Layout {
            root: root.to_path_buf(),
            settings: etc.join("fugu.toml"),
            local_include: etc.join("smtpd.conf.local"),
            generated: etc.join("generated"),
            etc,
            lib: p("var/lib/fugu"),
            db: p("var/lib/fugu/fugu.db"),
            spool: p("var/spool/fugu"),
            vmail: p("var/vmail"),
            dovecot_local: p("etc/dovecot/local.conf"),
        }
    }

    fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// What quickstart did, line by line; empty when the box was already set up.
#[derive(Debug, Default)]
struct Changes(Vec<String>);

impl Changes {
    fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("  {line}");
        self.0.push(line);
    }
}

/// The answers: from flags, from an existing `fugu.toml`, or asked for.
#[derive(Debug, Clone)]
struct Answers {
    hostname: String,
    domain: Option<String>,
    admin: Option<String>,
}

pub fn run(args: QuickstartArgs) -> anyhow::Result<ExitCode> {
    // Modes are set explicitly where they matter; everything else (the provisioner's
    // directories) must not inherit a caller's private umask, or readers are locked out.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let layout = Layout::under(&root);
    let existing = if layout.settings.exists() {
        Some(Settings::load(Some(&layout.settings))?)
    } else {
        None
    };
    let answers = answers(&args, existing.as_ref())?;
    let host = store::DomainName::parse(&answers.hostname)
        .map_err(|e| anyhow::anyhow!("--hostname {:?}: {e}", answers.hostname))?;
    let domain = answers
        .domain
        .as_deref()
        .map(|d| store::DomainName::parse(d).map_err(|e| anyhow::anyhow!("--domain {d:?}: {e}")))
        .transpose()?;
    if let Some(a) = &answers.admin {
        store::Username::parse(a).map_err(|e| anyhow::anyhow!("--admin {a:?}: {e}"))?;
    }

    // A box that already runs fugu holds its own ports: check only a fresh one.
    if !args.skip_checks && existing.is_none() {
        preflight()?;
    }
    if existing.is_none() && !args.yes && std::io::stdin().is_terminal() {
        print!(
            "Set up fugu for {} under {}? [y/N] ",
            host.as_str(),
            layout.root.display()
        );
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            println!("nothing done");
            return Ok(ExitCode::FAILURE);
        }
    }

    println!(
        "fugu quickstart: {} under {}",
        host.as_str(),
        layout.root.display()
    );
    let mut changes = Changes::default();
    let owners = Owners::resolve(&layout, &mut changes)?;
    make_directories(&layout, &owners, &mut changes)?;
    write_if_missing(
        &layout.settings,
        &render_settings(host.as_str()),
        0o644,
        &mut changes,
    )?;
    write_if_missing(
        &layout.local_include,
        "# Your additions to the generated smtpd.conf (fugu includes this file).\n",
        0o644,
        &mut changes,
    )?;
    write_if_missing(
        &layout.dovecot_local,
        &render_dovecot_local(&layout, owners.vmail.uid),
        0o644,
        &mut changes,
    )?;
    let settings = Settings::load(Some(&layout.settings))?;
    let config = provisioner_config(&settings, &layout, &owners)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (password, snapshot) = rt.block_on(async {
        let fresh = !layout.db.exists();
        let store = store::Store::open(&layout.db).await?;
        if fresh {
            changes.note(format!("created the database {}", layout.db.display()));
        }
        let password = seed_database(
            &store,
            &layout,
            &owners,
            &host,
            domain.as_ref(),
            &answers,
            &mut changes,
        )
        .await?;
        let report = provisioner::run_once(&store, &config, false).await?;
        let snapshot = store::Snapshot::load(&store).await?;
        // One open and one close: the last connection's close checkpoints and removes
        // the WAL, so a run that changes nothing leaves no trace.
        store.close().await;
        for path in report.written.iter().chain(&report.removed) {
            changes.note(format!("provisioned {}", path.display()));
        }
        for failed in report.failed_reloads() {
            println!("  warning: {failed} (the provisioner service retries it)");
        }
        anyhow::Ok((password, snapshot))
    })?;
    drop(rt);
    // The database file is created by the store as whoever runs quickstart.
    owners.apply(&layout.db, Some(&owners.service), 0o660, &mut changes)?;

    if changes.0.is_empty() {
        println!(
            "nothing to do: fugu is already set up for {}",
            host.as_str()
        );
    } else if layout.is_real() {
        start_services(&mut changes);
    }
    if let Some(password) = password {
        println!();
        println!(
            "Superadmin {}: password {password}",
            answers.admin.as_deref().unwrap_or_default()
        );
        println!("  (shown once: store it now; change it in the console)");
    }
    println!();
    print!("{}", dns_records(&snapshot, host.as_str()));
    println!();
    println!(
        "Console: https://{}/ (self-signed until ACME; reachable from loopback and private networks)",
        host.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

fn answers(args: &QuickstartArgs, existing: Option<&Settings>) -> anyhow::Result<Answers> {
    let interactive = !args.yes && std::io::stdin().is_terminal();
    let ask = |what: &str| -> anyhow::Result<Option<String>> {
        if !interactive {
            return Ok(None);
        }
        print!("{what}: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let line = line.trim().to_string();
        Ok((!line.is_empty()).then_some(line))
    };
    let hostname = match (&args.hostname, existing.and_then(|s| s.hostname.clone())) {
        (Some(h), Some(old)) if !h.eq_ignore_ascii_case(&old) => bail!(
            "this box is already set up as {old}: change `hostname` in fugu.toml instead of re-running quickstart with another name"
        ),
        (Some(h), _) => h.clone(),
        (None, Some(old)) => old,
        (None, None) => ask("Mail host name (e.g. mail.example.org)")?
            .context("--hostname is required (the mail host name, e.g. mail.example.org)")?,
    };
    let domain = match &args.domain {
        Some(d) => Some(d.clone()),
        None if existing.is_none() => ask("First mail domain (e.g. example.org)")?,
        None => None,
    };
    let admin = match &args.admin {
        Some(a) => Some(a.clone()),
        None if existing.is_none() => ask("Superadmin login (your e-mail address)")?,
        None => None,
    };
    Ok(Answers {
        hostname: hostname.to_lowercase(),
        domain,
        admin,
    })
}

/// Ports 25/80/443/465/587/993 must be free (Dovecot may already hold 993, as Debian's
/// dovecot-imapd starts it), and Dovecot with LMTP and IMAP must be installed.
fn preflight() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for port in PORTS {
        if let Some(owner) = port_in_use(port) {
            if port == 993 && owner.starts_with("dovecot") {
                continue;
            }
            problems.push(format!(
                "port {port} is in use by {owner}: stop or remove that service (fugu serves this port)"
            ));
        }
    }
    let dovecot = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"];
    let lmtp = ["/usr/lib/dovecot/lmtp", "/usr/local/libexec/dovecot/lmtp"];
    let imap = ["/usr/lib/dovecot/imap", "/usr/local/libexec/dovecot/imap"];
    for (files, package) in [
        (&dovecot, "dovecot-core"),
        (&lmtp, "dovecot-lmtpd"),
        (&imap, "dovecot-imapd"),
    ] {
        if !files.iter().any(|f| Path::new(f).exists()) {
            problems.push(format!(
                "Dovecot is missing ({} not found): install it with `apt install dovecot-core dovecot-imapd dovecot-lmtpd` (OpenBSD: `pkg_add dovecot`); package {package}",
                files[0]
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the box is not ready (use --skip-checks to go on anyway):\n  {}",
        problems.join("\n  ")
    )
}

/// `Some(owner)` when something listens on `port` (TCP, any address).
fn port_in_use(port: u16) -> Option<String> {
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    // One at a time: a dual-stack IPv6 bind would collide with our own IPv4 probe.
    let busy = |r: std::io::Result<TcpListener>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
    if !busy(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        && !busy(TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)))
    {
        return None;
    }
    Some(listener_owner(port).unwrap_or_else(|| "another program".to_string()))
}

/// The command name of the process listening on `port`, from /proc (Linux only).
fn listener_owner(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            let Some(local_port) = f.get(1).and_then(|a| a.rsplit(':').next()) else {
                continue;
            };
            if u16::from_str_radix(local_port, 16).ok() == Some(port)
                && f.get(3) == Some(&"0A")
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let pids = std::fs::read_dir("/proc").ok()?.flatten().filter(|e| {
        // Numbered entries only: /proc/self would name quickstart itself.
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
    });
    for proc in pids {
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| Path::new(i) == target)
            {
                let comm = std::fs::read_to_string(proc.path().join("comm")).ok()?;
                return Some(format!(
                    "{} (pid {})",
                    comm.trim(),
                    proc.file_name().to_string_lossy()
                ));
            }
        }
    }
    None
}

/// The accounts files are owned by; `None` when owners are not set (not root, or a
/// `--root` tree whose users do not exist).
#[derive(Debug, Clone)]
struct Owners {
    enabled: bool,
    service: Account,
    vmail: Account,
}

#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Account {
    fn lookup(name: &str) -> anyhow::Result<Account> {
        let user = nix::unistd::User::from_name(name)
            .with_context(|| format!("cannot look up user {name}"))?;
        Ok(Account {
            name: name.to_string(),
            uid: user.as_ref().map(|u| u.uid.as_raw()),
            gid: user.as_ref().map(|u| u.gid.as_raw()),
        })
    }
}

impl Owners {
    fn resolve(layout: &Layout, changes: &mut Changes) -> anyhow::Result<Owners> {
        let root = nix::unistd::geteuid().is_root();
        if layout.is_real() {
            if !root {
                bail!(
                    "quickstart sets up system users and /etc: run it as root (or use --root DIR to stage a tree)"
                );
            }
            create_user(SERVICE_USER, "/var/lib/fugu", "fugu mail server", changes)?;
            create_user(VMAIL_USER, "/var/vmail", "fugu mailboxes", changes)?;
        }
        let service = Account::lookup(SERVICE_USER)?;
        let vmail = Account::lookup(VMAIL_USER)?;
        Ok(Owners {
            enabled: root && service.uid.is_some() && vmail.uid.is_some(),
            service,
            vmail,
        })
    }

    /// Sets `path`'s mode, and its owner when owners are enabled (root stays the owner
    /// when `account` is `None`). Notes a change only when something differed.
    fn apply(
        &self,
        path: &Path,
        account: Option<&Account>,
        mode: u32,
        changes: &mut Changes,
    ) -> anyhow::Result<()> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
            changes.note(format!("set mode {mode:04o} on {}", path.display()));
        }
        if !self.enabled {
            return Ok(());
        }
        let (uid, gid) = match account {
            Some(a) => (a.uid.unwrap_or(0), a.gid.unwrap_or(0)),
            None => (0, 0),
        };
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
            changes.note(format!(
                "set owner {} on {}",
                account.map_or("root", |a| a.name.as_str()),
                path.display()
            ));
        }
        Ok(())
    }
}

/// `useradd --system` (Linux) / `useradd -L daemon` (OpenBSD), each with its own group.
fn create_user(name: &str, home: &str, comment: &str, changes: &mut Changes) -> anyhow::Result<()> {
    if nix::unistd::User::from_name(name)?.is_some() {
        return Ok(());
    }
    let mut cmd = if cfg!(target_os = "openbsd") {
        let mut c = Command::new("useradd");
        c.args([
            "-L",
            "daemon",
            "-g",
            "=uid",
            "-d",
            "/var/empty",
            "-s",
            "/sbin/nologin",
            "-c",
            comment,
            name,
        ]);
        c
    } else {
        let mut c = Command::new("useradd");
        c.args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            home,
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            comment,
            name,
        ]);
        c
    };
    let status = cmd.status().context("cannot run useradd")?;
    if !status.success() {
        bail!("useradd {name} failed ({status})");
    }
    changes.note(format!("created system user {name}"));
    Ok(())
}

fn make_directories(layout: &Layout, owners: &Owners, changes: &mut Changes) -> anyhow::Result<()> {
    // The database directory is setgid fugu so that every reader shares the -shm file.
    let dirs: [(&Path, Option<&Account>, u32); 6] = [
        (&layout.etc, None, 0o755),
        (&layout.generated, None, 0o755),
        (&layout.lib, Some(&owners.service), 0o2770),
        (&layout.spool, Some(&owners.service), 0o700),
        (&layout.vmail, Some(&owners.vmail), 0o750),
        (
            layout.dovecot_local.parent().unwrap_or(&layout.etc),
            None,
            0o755,
        ),
    ];
    for (dir, account, mode) in dirs {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            changes.note(format!("created {}", dir.display()));
        }
        owners.apply(dir, account, mode, changes)?;
    }
    Ok(())
}

fn write_if_missing(
    path: &Path,
    contents: &str,
    mode: u32,
    changes: &mut Changes,
) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("quickstart-tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    changes.note(format!("wrote {}", path.display()));
    Ok(())
}

/// `fugu.toml` as quickstart writes it: only the host name is set; the rest documents
/// the defaults an operator may change.
pub fn render_settings(hostname: &str) -> String {
    format!(
        "# fugu.toml: the install-time facts of this box (written by `fugu quickstart`).\n\
         # Domains, users, aliases, keys and certificates live in the database\n\
         # (/var/lib/fugu/fugu.db): edit them in the console or with `fugu domain|user|alias`.\n\
         \n\
         # The mail host name: SMTP banner and HELO, the certificate's name, the MX target.\n\
         hostname = \"{hostname}\"\n\
         \n\
         # Addresses the public SMTP and IMAP listeners bind. IPv4 only for now: the mta\n\
         # binds [::] without IPV6_V6ONLY, which collides with 0.0.0.0 on Linux. Add \"::\"\n\
         # once it does (the default is [\"0.0.0.0\", \"::\"]).\n\
         listen = [\"0.0.0.0\"]\n\
         \n\
         [ports]\n\
         # The defaults; uncomment to change.\n\
         # smtp = 25\n\
         # submission = 587\n\
         # smtps = 465\n\
         # imaps = 993\n\
         \n\
         [provision]\n\
         # `lmtp` hands local mail to Dovecot (the appliance); `maildir` writes it directly.\n\
         local_delivery = \"lmtp\"\n\
         # Commands run after an output changed (the defaults are shown):\n\
         # [provision.reload]\n\
         # dovecot = [[\"sievec\", \"/etc/fugu/generated/dovecot/sieve/spam-to-junk.sieve\"], [\"doveadm\", \"reload\"]]\n\
         # smtpd = [[\"fugu\", \"ctl\", \"reload\"]]\n"
    )
}

/// Debian's dovecot.conf ends with `!include_try local.conf`: the hook for this box's own
/// settings, read after conf.d/ so fugu's values win.
fn render_dovecot_local(layout: &Layout, vmail_uid: Option<u32>) -> String {
    let snippet = Path::new("/").join(
        provisioner::Paths::under(&layout.generated)
            .dovecot_snippet
            .strip_prefix(&layout.root)
            .unwrap_or(Path::new("etc/fugu/generated/dovecot/conf.d/99-fugu.conf")),
    );
    let mut out = format!(
        "# Written by `fugu quickstart`: Dovecot serves fugu's users from the generated files.\n\
         !include {}\n",
        snippet.display()
    );
    // A system user's uid (adduser --system) is below Dovecot's default floor of 500,
    // which would refuse every mailbox.
    if let Some(uid) = vmail_uid.filter(|u| *u < 500) {
        let _ = writeln!(out, "first_valid_uid = {uid}");
    }
    out
}

/// The provisioner's configuration for this layout: the real box's, every path prefixed.
fn provisioner_config(
    settings: &Settings,
    layout: &Layout,
    owners: &Owners,
) -> anyhow::Result<provisioner::Config> {
    let mut c = settings.provisioner(None)?;
    if layout.is_real() {
        // The mta is started after quickstart: nothing to tell it yet.
        for o in [
            provisioner::Output::Smtpd,
            provisioner::Output::Dkim,
            provisioner::Output::Tls,
        ] {
            c.reload.remove(&o);
        }
        return Ok(c);
    }
    let prefix = |p: &Path| layout.root.join(p.strip_prefix("/").unwrap_or(p));
    c.paths = provisioner::Paths::under(&layout.generated);
    c.mta.database = layout.db.clone();
    c.mta.local_include = layout.local_include.clone();
    c.lmtp_socket = prefix(&c.lmtp_socket);
    c.dovecot.base_dir = prefix(&c.dovecot.base_dir);
    c.dovecot.state_dir = prefix(&c.dovecot.state_dir);
    // A staged tree is not this host's configuration: reload nothing here.
    c.reload.clear();
    c.set_owners = owners.enabled;
    if !owners.enabled {
        c.mta.user = None;
        c.mta.tls_group = None;
        c.dovecot.passwd_group = None;
        c.dovecot.lmtp_socket_user = None;
        c.dovecot.lmtp_socket_group = None;
    }
    Ok(c)
}

async fn seed_database(
    store: &store::Store,
    layout: &Layout,
    owners: &Owners,
    host: &store::DomainName,
    domain: Option<&store::DomainName>,
    answers: &Answers,
    changes: &mut Changes,
) -> anyhow::Result<Option<String>> {
    let mut settings = vec![("vmail_user", owners.vmail.name.clone())];
    let home = Path::new("/").join(
        layout
            .vmail
            .strip_prefix(&layout.root)
            .unwrap_or(&layout.vmail),
    );
    settings.push((
        "vmail_home",
        if layout.is_real() {
            home
        } else {
            layout.vmail.clone()
        }
        .display()
        .to_string(),
    ));
    if let (Some(uid), Some(gid)) = (owners.vmail.uid, owners.vmail.gid) {
        settings.push(("vmail_uid", uid.to_string()));
        settings.push(("vmail_gid", gid.to_string()));
    }
    for (key, value) in settings {
        if store.setting(key).await?.as_deref() != Some(value.as_str()) {
            store.set_setting(key, &value).await?;
            changes.note(format!("set {key} = {value}"));
        }
    }
    if let Some(domain) = domain
        && store.domain(domain).await?.is_none()
    {
        store.add_domain(domain, "added by quickstart").await?;
        changes.note(format!("added the domain {}", domain.as_str()));
    }
    let snapshot = store::Snapshot::load(store).await?;
    if !snapshot
        .certificates
        .iter()
        .any(|c| c.covers(host.as_str()))
    {
        let cert = self_signed(host.as_str(), snapshot.taken_at)?;
        store
            .add_certificate(&store::NewCertificate {
                names: vec![host.as_str().to_string()],
                chain_pem: cert.chain_pem,
                key_pem: cert.key_pem,
                not_before: cert.not_before,
                not_after: cert.not_after,
                source: store::CertificateSource::SelfSigned,
                acme_account_id: None,
            })
            .await?;
        changes.note(format!(
            "made a self-signed certificate for {} (valid {SELF_SIGNED_DAYS} days; ACME replaces it)",
            host.as_str()
        ));
    }
    let mut password = None;
    if store.admin_count().await? == 0 {
        match &answers.admin {
            Some(admin) => {
                let secret = generate_password()?;
                admin_web::create_superadmin(store, admin, &secret).await?;
                changes.note(format!("created the superadmin {admin}"));
                password = Some(secret);
            }
            None => println!(
                "  no --admin given: the first visit to the console creates the superadmin"
            ),
        }
    }
    Ok(password)
}

/// A certificate for `host`: an ECDSA P-256 key (what rcgen with ring can generate).
pub struct SelfSigned {
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

fn self_signed(host: &str, now: i64) -> anyhow::Result<SelfSigned> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    let day = now.div_euclid(86_400);
    let ymd = |days: i64| {
        let (y, m, d) = mta::clock::civil_from_days(days);
        // Years fit i32 and months/days u8 for any date a certificate can carry.
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = ymd(day);
    params.not_after = ymd(day + SELF_SIGNED_DAYS);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let cert = params.self_signed(&key)?;
    Ok(SelfSigned {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before: params.not_before.unix_timestamp(),
        not_after: params.not_after.unix_timestamp(),
    })
}

/// 20 characters from an alphabet without look-alikes (about 100 bits).
fn generate_password() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut b = [0u8; 1];
        rng.fill(&mut b)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        if usize::from(b[0]) < limit {
            out.push(char::from(ALPHABET[usize::from(b[0]) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// The records to publish: what can be computed from the database now.
pub fn dns_records(snapshot: &store::Snapshot, host: &str) -> String {
    let mut out = String::from("Publish these DNS records (then check them in the console):\n");
    for d in &snapshot.domains {
        let name = &d.name;
        let _ = writeln!(out, "  {name}.\tMX\t10 {host}.");
        // RFC 7208: only the MX hosts send for the domain.
        let _ = writeln!(out, "  {name}.\tTXT\t\"v=spf1 mx -all\"");
        for k in snapshot
            .dkim_keys
            .iter()
            .filter(|k| &k.domain == name && k.state == "active")
        {
            let k_tag = if k.algorithm.starts_with("ed25519") {
                "ed25519"
            } else {
                "rsa"
            };
            // RFC 6376 §3.6.2.1: the key record lives at <selector>._domainkey.<domain>.
            let _ = writeln!(
                out,
                "  {}._domainkey.{name}.\tTXT\t\"v=DKIM1; k={k_tag}; p={}\"",
                k.selector, k.public_key
            );
        }
        // RFC 7489 §6.3: start with p=none and reports, tighten once mail passes.
        let _ = writeln!(
            out,
            "  _dmarc.{name}.\tTXT\t\"v=DMARC1; p=none; rua=mailto:postmaster@{name}\""
        );
    }
    if snapshot.domains.is_empty() {
        out.push_str("  (no domain yet: add one with `fugu domain add` or in the console)\n");
    }
    let _ = writeln!(out, "  {host}.\tA/AAAA\t<this box's public addresses>");
    out.push_str("  and a PTR record for each address naming the host (ask your provider).\n");
    out
}

/// On a systemd box with the package's units: (re)start what quickstart configured.
fn start_services(changes: &mut Changes) {
    if !Path::new("/run/systemd/system").is_dir()
        || !Path::new("/lib/systemd/system/fugu-smtpd.service").exists()
    {
        println!(
            "  start the mta, console and provisioner with your service manager (see the install guide)"
        );
        return;
    }
    for args in [
        &["reload-or-restart", "dovecot"][..],
        &[
            "start",
            "fugu-provision.service",
            "fugu-smtpd.service",
            "fugu-admin.service",
        ][..],
    ] {
        match Command::new("systemctl").args(args).status() {
            Ok(s) if s.success() => changes.note(format!("systemctl {}", args.join(" "))),
            Ok(s) => println!("  warning: systemctl {} failed ({s})", args.join(" ")),
            Err(e) => println!("  warning: cannot run systemctl: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_reported_with_the_program_holding_it() {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let owner = port_in_use(port).unwrap();
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(owner, format!("{} (pid {})", me.trim(), std::process::id()));
        drop(listener);
        assert_eq!(port_in_use(port), None);
    }

    #[test]
    fn civil_dates_match_known_days() {
        use mta::clock::civil_from_days;
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
    }

    #[test]
    fn generated_passwords_are_twenty_unambiguous_characters() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(!a.contains(['0', 'O', '1', 'l', 'I']));
    }

    #[test]
    fn rendered_settings_match_the_golden_file_and_parse() {
        let text = render_settings("mail.example.org");
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quickstart/fugu.toml");
        if std::env::var_os("BLESS").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &text).unwrap();
        }
        assert_eq!(
            text,
            std::fs::read_to_string(&golden).unwrap(),
            "re-bless with BLESS=1"
        );
        let parsed: Settings = toml::from_str(&text).unwrap();
        assert_eq!(parsed.hostname.as_deref(), Some("mail.example.org"));
        assert_eq!(parsed.provision.local_delivery.as_deref(), Some("lmtp"));
    }

    #[test]
    fn dns_records_match_the_golden_file() {
        let domain = |name: &str| store::Domain {
            name: name.to_string(),
            active: true,
            description: String::new(),
            created_at: 0,
        };
        let key = |domain: &str, selector: &str, algorithm: &str, state: &str| store::DkimKey {
            id: 0,
            domain: domain.to_string(),
            selector: selector.to_string(),
            algorithm: algorithm.to_string(),
            private_key: String::new(),
            public_key: format!("PUBLIC-{selector}"),
            state: state.to_string(),
            created_at: 0,
            activated_at: None,
            retired_at: None,
        };
        let snapshot = store::Snapshot {
            domains: vec![domain("example.net"), domain("example.org")],
            dkim_keys: vec![
                key("example.org", "20261121e", "ed25519-sha256", "active"),
                key("example.org", "20261121r", "rsa-sha256", "active"),
                key("example.org", "20250101r", "rsa-sha256", "retired"),
            ],
            ..store::Snapshot::default()
        };
        let text = dns_records(&snapshot, "mail.example.org");
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/quickstart/dns-records.txt");
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        assert_eq!(
            text,
            std::fs::read_to_string(&golden).unwrap(),
            "re-bless with BLESS=1"
        );
    }

    #[test]
    fn a_self_signed_certificate_covers_the_host_for_thirty_days() {
        let cert = self_signed("mail.example.org", 1_763_683_200).unwrap();
        assert!(cert.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(cert.not_before, 1_763_683_200);
        assert_eq!(cert.not_after - cert.not_before, 30 * 86_400);
    }
}
