//! `fugu domain|user|alias|encrypt`: scriptable administration over the store.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use store::{AliasSource, DomainName, EmailAddress, NewUser, Store, UserQuery};

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    /// Add a domain (internationalised names are stored in their xn-- form).
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List domains.
    List,
    /// Stop accepting mail for a domain without removing anything.
    Disable { name: String },
    /// Accept mail for a disabled domain again.
    Enable { name: String },
    /// Remove a domain with all its users and aliases.
    Remove {
        name: String,
        /// Remove even when the domain still has users or aliases.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a mailbox user. The password is prompted for, or read from the first line of
    /// --password-file (never taken as an argument: argv is visible to every local user).
    Add {
        address: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Mailbox quota, e.g. 500M or 2G (0: none).
        #[arg(long, default_value = "0")]
        quota: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "argon2id")]
        scheme: password::Scheme,
    },
    /// List users, optionally of one domain or matching a substring.
    List {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        search: Option<String>,
    },
    /// Set a user's password.
    Passwd {
        address: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[arg(long, default_value = "argon2id")]
        scheme: password::Scheme,
    },
    /// Set a user's quota, e.g. 500M or 2G (0: none).
    Quota {
        address: String,
        quota: String,
    },
    /// Refuse mail and logins for a user without removing the mailbox.
    Disable {
        address: String,
    },
    Enable {
        address: String,
    },
    /// Remove a user (the mailbox on disk is left for the operator to archive).
    Remove {
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingCmd {
    /// Show every setting.
    List,
    /// Change one: vmail_user, vmail_uid, vmail_gid or vmail_home (where new mailboxes go).
    Set { key: String, value: String },
}

/// A setting's name and the check its value must pass.
type SettingRule = (&'static str, fn(&str) -> bool);

/// The settings an operator may change from the command line, with their checks.
const SETTINGS: &[SettingRule] = &[
    ("vmail_user", |v| {
        !v.is_empty() && !v.contains(['@', ':', ' '])
    }),
    ("vmail_uid", |v| v.parse::<u32>().is_ok_and(|n| n > 0)),
    ("vmail_gid", |v| v.parse::<u32>().is_ok_and(|n| n > 0)),
    ("vmail_home", |v| v.starts_with('/') && !v.contains(':')),
];

pub fn setting(cmd: SettingCmd, db: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(db).await?;
        match cmd {
            SettingCmd::List => {
                for (key, _) in SETTINGS {
                    println!("{key}\t{}", store.setting(key).await?.unwrap_or_default());
                }
            }
            SettingCmd::Set { key, value } => {
                let Some((_, valid)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
                    let known: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
                    bail!("unknown setting {key:?} (known: {})", known.join(", "));
                };
                if !valid(&value) {
                    bail!("invalid value {value:?} for {key}");
                }
                store.set_setting(&key, &value).await?;
                println!("{key} = {value}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Add an alias: SOURCE is an address of a hosted domain or @domain (catch-all);
    /// each DESTINATION is any address, local or external.
    Add {
        source: String,
        #[arg(required = true)]
        destinations: Vec<String>,
    },
    /// List aliases.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Remove an alias, or only one of its destinations.
    Remove {
        source: String,
        destination: Option<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn open(db: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(db).await?)
}

pub fn domain(cmd: DomainCmd, db: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(db).await?;
        match cmd {
            DomainCmd::Add { name, description } => {
                let d = store.add_domain(&DomainName::parse(&name)?, &description).await?;
                println!("added domain {}", d.name);
            }
            DomainCmd::List => {
                for d in store.list_domains().await? {
                    let name = DomainName::parse(&d.name).map(|n| n.to_unicode()).unwrap_or(d.name.clone());
                    let state = if d.active { "active" } else { "disabled" };
                    let shown = if name == d.name { d.name.clone() } else { format!("{} ({name})", d.name) };
                    println!("{shown}\t{state}\t{}", d.description);
                }
            }
            DomainCmd::Disable { name } => {
                store.set_domain_active(&DomainName::parse(&name)?, false).await?;
                println!("disabled domain {name}");
            }
            DomainCmd::Enable { name } => {
                store.set_domain_active(&DomainName::parse(&name)?, true).await?;
                println!("enabled domain {name}");
            }
            DomainCmd::Remove { name, force } => {
                let d = DomainName::parse(&name)?;
                let (users, aliases) = store.domain_contents(&d).await?;
                if (users > 0 || aliases > 0) && !force {
                    bail!("domain {d} still has {users} user(s) and {aliases} alias(es); add --force to remove them too");
                }
                store.remove_domain(&d).await?;
                println!("removed domain {d} ({users} user(s), {aliases} alias(es))");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn user(cmd: UserCmd, db: &Path) -> anyhow::Result<ExitCode> {
    // Read and hash the password before opening the database, so a refused password
    // leaves nothing behind, and so a prompt is not held open with the database.
    runtime()?.block_on(async {
        match cmd {
            UserCmd::Add {
                address,
                password_file,
                quota,
                name,
                scheme,
            } => {
                let address = EmailAddress::parse(&address)?;
                let quota_bytes = parse_size(&quota)?;
                let secret = read_password(password_file.as_deref())?;
                let hash = password::hash(&secret, scheme)?;
                let store = open(db).await?;
                let u = store
                    .add_user(&NewUser {
                        address,
                        password_hash: hash,
                        display_name: name,
                        quota_bytes,
                    })
                    .await?;
                println!("added user {} (home {})", u.address, u.home);
            }
            UserCmd::List { domain, search } => {
                let store = open(db).await?;
                let domain = domain.map(|d| DomainName::parse(&d)).transpose()?;
                let page = store
                    .list_users(&UserQuery {
                        domain,
                        search,
                        offset: 0,
                        limit: 0,
                    })
                    .await?;
                for u in page.users {
                    let state = if u.active { "active" } else { "disabled" };
                    let quota = if u.quota_bytes == 0 {
                        "-".to_string()
                    } else {
                        format_size(u.quota_bytes)
                    };
                    println!("{}\t{state}\tquota={quota}\t{}", u.address, u.display_name);
                }
            }
            UserCmd::Passwd {
                address,
                password_file,
                scheme,
            } => {
                let address = EmailAddress::parse(&address)?;
                let store = open(db).await?;
                if store.user(&address).await?.is_none() {
                    bail!("user {address} does not exist");
                }
                let secret = read_password(password_file.as_deref())?;
                store
                    .set_password_hash(&address, &password::hash(&secret, scheme)?)
                    .await?;
                println!("password changed for {address}");
            }
            UserCmd::Quota { address, quota } => {
                let address = EmailAddress::parse(&address)?;
                let bytes = parse_size(&quota)?;
                open(db).await?.set_user_quota(&address, bytes).await?;
                println!(
                    "quota of {address} set to {}",
                    if bytes == 0 {
                        "none".into()
                    } else {
                        format_size(bytes as i64)
                    }
                );
            }
            UserCmd::Disable { address } => {
                let address = EmailAddress::parse(&address)?;
                open(db).await?.set_user_active(&address, false).await?;
                println!("disabled user {address}");
            }
            UserCmd::Enable { address } => {
                let address = EmailAddress::parse(&address)?;
                open(db).await?.set_user_active(&address, true).await?;
                println!("enabled user {address}");
            }
            UserCmd::Remove { address } => {
                let address = EmailAddress::parse(&address)?;
                open(db).await?.remove_user(&address).await?;
                println!("removed user {address}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn alias(cmd: AliasCmd, db: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            AliasCmd::Add {
                source,
                destinations,
            } => {
                let source = AliasSource::parse(&source)?;
                // Validate every destination before writing any, so a typo adds nothing.
                let dests = destinations
                    .iter()
                    .map(|d| EmailAddress::parse(d))
                    .collect::<Result<Vec<_>, _>>()?;
                let added = open(db).await?.add_aliases(&source, &dests).await?;
                let shown: Vec<&str> = added.iter().map(|a| a.destination.as_str()).collect();
                println!("added alias {source} -> {}", shown.join(", "));
            }
            AliasCmd::List { domain } => {
                let store = open(db).await?;
                let domain = domain.map(|d| DomainName::parse(&d)).transpose()?;
                for a in store.list_aliases(domain.as_ref()).await? {
                    println!("{}\t{}", a.source, a.destination);
                }
            }
            AliasCmd::Remove {
                source,
                destination,
            } => {
                let source = AliasSource::parse(&source)?;
                let dest = destination.map(|d| EmailAddress::parse(&d)).transpose()?;
                let n = open(db).await?.remove_alias(&source, dest.as_ref()).await?;
                println!("removed {n} alias row(s) for {source}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn encrypt(scheme: password::Scheme) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let secret =
            rpassword::prompt_password("Password: ").context("cannot read the password")?;
        println!("{}", password::hash(&secret, scheme)?);
        return Ok(ExitCode::SUCCESS);
    }
    // Like smtpctl encrypt: one hash per input line.
    let mut any = false;
    for line in stdin.lock().lines() {
        let line = line.context("cannot read standard input")?;
        println!("{}", password::hash(&line, scheme)?);
        any = true;
    }
    if !any {
        bail!("no password on standard input");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            bail!("{}: the first line (the password) is empty", path.display());
        }
        return Ok(first.to_string());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password on; use --password-file FILE");
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    if first.is_empty() {
        bail!("the password is empty");
    }
    let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

/// `0`, `1048576`, `500K`, `500M`, `2G`, `1T` (binary multiples, as Dovecot's quota rules).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("invalid size {s:?}: unknown unit {c:?} (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().with_context(|| {
        format!("invalid size {s:?}: expected a number with an optional K, M, G or T")
    })?;
    n.checked_mul(mult)
        .with_context(|| format!("invalid size {s:?}: too large"))
}

fn format_size(bytes: i64) -> String {
    const UNITS: [(&str, i64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, m) in UNITS {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{u}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("2X").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(format_size(2 << 30), "2G");
        assert_eq!(format_size(1000), "1000");
    }
}
