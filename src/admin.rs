//! `fugu admin`: the browser console and JSON API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::DbArg;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: Option<AdminCmd>,
    /// HTTPS address of the console [default: 0.0.0.0:443; `fugu up` uses 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    listen: SocketAddr,
    /// Plain-HTTP address that redirects to HTTPS (port 80 on a real box); repeatable.
    #[arg(long, value_name = "ADDR")]
    http: Vec<SocketAddr>,
    /// Console sessions [default: sessions.db beside the database].
    #[arg(long, value_name = "PATH")]
    sessions: Option<PathBuf>,
    /// Networks allowed to use the console (CIDR, repeatable) [default: loopback and private ranges].
    #[arg(long, value_name = "CIDR")]
    allow: Vec<admin_web::Cidr>,
    /// Certificate chain and key for HTTPS [default: a self-signed certificate made on first start].
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Root CA (PEM) trusted for the ACME directory's HTTPS, for a private CA such as pebble
    /// [default: the system's trust store].
    #[arg(long, value_name = "FILE")]
    acme_ca_file: Option<PathBuf>,
    /// The mail host name for DNS hints, MTA-STS `mx:` and autoconfig [default: localhost].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// A public address of the mail host (A/AAAA hints, reverse-DNS and block-list checks); repeatable.
    #[arg(long, value_name = "IP")]
    public_address: Vec<std::net::IpAddr>,
    /// DNS server for the live checks, e.g. 127.0.0.1:53 [default: /etc/resolv.conf].
    #[arg(long, value_name = "ADDR")]
    resolver: Option<SocketAddr>,
    /// DNS block list to check the public addresses against; repeatable
    /// [default: zen.spamhaus.org, bl.spamcop.net].
    #[arg(long, value_name = "ZONE")]
    dnsbl: Vec<String>,
    /// The mta's control socket, for the queue page (`<spool>/control.sock`)
    /// [default: none; the page says the mta is not running on this box].
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// After binding the ports, run as this user (when started as root).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// fugu.toml: `hostname` and the `[console]` section give defaults for the flags above
    /// [default: /etc/fugu/fugu.toml when it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCmd {
    /// Create a superadmin account (the first one can also be made in the browser).
    CreateSuperadmin {
        username: String,
        /// Read the password from the first line of FILE instead of prompting.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Fill the database with demo domains, users and aliases (for trying the console and
    /// for its benchmark, scripts/bench-console). Every user gets the same password.
    SeedDemo {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 20_000)]
        aliases: usize,
        /// Users and aliases are spread over this many domains, demo1.test, demo2.test, …
        #[arg(long, default_value_t = 10)]
        domains: usize,
        /// The one password every demo user gets (hashed once, the hash reused).
        #[arg(long, default_value = "demo password")]
        password: String,
    },
}

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    crate::smtpd::init_logging(false);
    let db = args.db.path();
    if let Some(AdminCmd::CreateSuperadmin {
        username,
        password_file,
    }) = args.command
    {
        let secret = crate::admin_cli::read_password(password_file.as_deref())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let store = store::Store::open(&db).await?;
            let admin = admin_web::create_superadmin(&store, &username, &secret).await?;
            println!("created superadmin {}", admin.username);
            Ok(ExitCode::SUCCESS)
        });
    }
    if let Some(AdminCmd::SeedDemo {
        users,
        aliases,
        domains,
        password,
    }) = args.command
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(seed_demo(&db, users, aliases, domains, &password));
    }
    let settings = crate::settings::Settings::load(args.config.as_deref())?;
    let console = &settings.console;
    let mut config = admin_web::Config::new(args.listen, db);
    config.http_listen = args.http;
    if let Some(s) = args.sessions {
        config.sessions_path = s;
    }
    // Flags win over fugu.toml, which wins over the built-in defaults.
    if !args.allow.is_empty() {
        config.allow = args.allow;
    } else if let Some(allow) = &console.allow {
        config.allow = allow
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("console.allow: {c:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(h) = args.hostname.or_else(|| settings.hostname.clone()) {
        config.mail_hostname = h.trim_end_matches('.').to_ascii_lowercase();
    }
    config.public_addrs = if args.public_address.is_empty() {
        console.public_addresses.clone()
    } else {
        args.public_address
    };
    config.resolver = args.resolver.or(console.resolver);
    config.control_socket = args.control_socket;
    if !args.dnsbl.is_empty() {
        config.dnsbls = args.dnsbl;
    } else if let Some(zones) = &console.dnsbl {
        config.dnsbls = zones.clone();
    }
    config.acme.ca_file = args.acme_ca_file.or_else(|| console.acme_ca_file.clone());
    if let (Some(cert), Some(key)) = (args.cert, args.key) {
        config.tls = admin_web::TlsSource::Files { cert, key };
    }
    // Bind while still privileged, drop, and only then start the runtime: setuid on a
    // multi-threaded process must reach every thread.
    let listeners = admin_web::bind(&config)?;
    if let Some(user) = &args.user {
        drop_privileges(user)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        admin_web::serve(config, listeners, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `fugu admin seed-demo`: `user00001@demoN.test` … with display names and quotas that
/// differ (so sorting by quota means something), and aliases
/// `aliasNNNNN@demoN.test` pointing at users of the same domain.
async fn seed_demo(
    db: &std::path::Path,
    users: usize,
    aliases: usize,
    domains: usize,
    password: &str,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(domains > 0, "--domains must be at least 1");
    anyhow::ensure!(aliases == 0 || users > 0, "aliases need users to point at");
    let store = store::Store::open(db).await?;
    // One argon2id hash for everyone: hashing 10,000 passwords would take minutes.
    let hash = password::hash(password, password::Scheme::Argon2id)?;
    let names: Vec<store::DomainName> = (1..=domains)
        .map(|d| store::DomainName::parse(&format!("demo{d}.test")))
        .collect::<Result<_, _>>()?;
    for name in &names {
        if store.domain(name).await?.is_none() {
            store.add_domain(name, "demo data").await?;
        }
    }
    let user_address = |i: usize| format!("user{:05}@{}", i + 1, names[i % domains]);
    let new_users = (0..users)
        .map(|i| {
            Ok(store::NewUser {
                address: store::EmailAddress::parse(&user_address(i))?,
                password_hash: hash.clone(),
                display_name: format!("Demo User {:05}", i + 1),
                quota_bytes: ((i * 7919) % 100) as u64 * (1 << 24),
            })
        })
        .collect::<Result<Vec<_>, store::Error>>()?;
    store.add_users(&new_users).await?;
    let pairs = (0..aliases)
        .map(|i| {
            let user = i % users;
            let d = &names[user % domains];
            Ok((
                store::AliasSource::parse(&format!("alias{:05}@{d}", i + 1))?,
                store::EmailAddress::parse(&user_address(user))?,
            ))
        })
        .collect::<Result<Vec<_>, store::Error>>()?;
    store.add_alias_pairs(&pairs).await?;
    store.close().await;
    println!(
        "seeded {domains} domains, {users} users and {aliases} aliases into {} (password {password:?})",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// setgroups, setgid, setuid to `name`, process-wide (before any thread exists).
pub fn drop_privileges(name: &str) -> anyhow::Result<()> {
    use nix::unistd::{User, setgid, setgroups, setuid};
    let user = User::from_name(name)
        .with_context(|| format!("cannot look up user {name}"))?
        .with_context(|| format!("no such user {name}"))?;
    setgroups(&[user.gid]).context("setgroups")?;
    setgid(user.gid).context("setgid")?;
    setuid(user.uid).context("setuid")?;
    Ok(())
}
