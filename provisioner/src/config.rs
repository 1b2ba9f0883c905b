//! What the provisioner needs to know that the database does not hold: where files go,
//! who owns them, the host name, ports and sockets, and how each program is reloaded.
//! The binary maps `fugu.toml` onto this value; tests build it with [`Config::under_root`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A group of generated files that share a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Output {
    /// passwd-file, `dovecot.conf`, `conf.d/99-fugu.conf`, the spam sieve script.
    Dovecot,
    /// `smtpd.conf` and the table-sqlite `sqlite.conf`.
    Smtpd,
    /// DKIM key files, the `dkim/keys` table, `dkimproxy_out.conf`, OpenDKIM tables.
    Dkim,
    /// Certificate chains and keys per name.
    Tls,
    /// OpenBSD pf anchor and table files.
    Pf,
    /// Linux nftables ruleset.
    Nftables,
}

impl Output {
    pub const ALL: [Output; 6] = [
        Output::Dovecot,
        Output::Smtpd,
        Output::Dkim,
        Output::Tls,
        Output::Pf,
        Output::Nftables,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Output::Dovecot => "dovecot",
            Output::Smtpd => "smtpd",
            Output::Dkim => "dkim",
            Output::Tls => "tls",
            Output::Pf => "pf",
            Output::Nftables => "nftables",
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Output {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Output::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| crate::Error::UnknownOutput(s.to_string()))
    }
}

/// Where each generated file lives. All derived from one root by [`Paths::under`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
    pub dovecot_dir: PathBuf,
    pub dovecot_passwd: PathBuf,
    /// A complete configuration (`dovecot -c`), which includes the snippet.
    pub dovecot_conf: PathBuf,
    /// The snippet a system Dovecot includes from its `conf.d/`.
    pub dovecot_snippet: PathBuf,
    pub sieve_before: PathBuf,
    pub smtpd_conf: PathBuf,
    pub sqlite_conf: PathBuf,
    pub dkim_dir: PathBuf,
    pub dkim_table: PathBuf,
    pub dkimproxy_conf: PathBuf,
    pub dkimproxy_sender_map: PathBuf,
    pub opendkim_key_table: PathBuf,
    pub opendkim_signing_table: PathBuf,
    pub tls_dir: PathBuf,
    pub pf_dir: PathBuf,
    pub pf_anchor: PathBuf,
    pub nft_ruleset: PathBuf,
    /// Markers of reloads that failed, so a restart retries them.
    pub pending_dir: PathBuf,
}

impl Paths {
    pub fn under(root: &Path) -> Paths {
        let dovecot_dir = root.join("dovecot");
        let dkim_dir = root.join("dkim");
        let pf_dir = root.join("pf");
        Paths {
            root: root.to_path_buf(),
            dovecot_passwd: dovecot_dir.join("passwd"),
            dovecot_conf: dovecot_dir.join("dovecot.conf"),
            dovecot_snippet: dovecot_dir.join("conf.d").join("99-fugu.conf"),
            sieve_before: dovecot_dir.join("sieve").join("spam-to-junk.sieve"),
            dovecot_dir,
            smtpd_conf: root.join("smtpd.conf"),
            sqlite_conf: root.join("sqlite.conf"),
            dkim_table: dkim_dir.join("keys"),
            dkimproxy_conf: dkim_dir.join("dkimproxy_out.conf"),
            dkimproxy_sender_map: dkim_dir.join("dkimproxy_sender_map"),
            opendkim_key_table: dkim_dir.join("KeyTable"),
            opendkim_signing_table: dkim_dir.join("SigningTable"),
            dkim_dir,
            tls_dir: root.join("tls"),
            pf_anchor: pf_dir.join("fugu.anchor"),
            pf_dir,
            nft_ruleset: root.join("nft").join("fugu.nft"),
            pending_dir: root.join(".reload-pending"),
        }
    }

    /// The chain and key files of the certificate whose primary name is `name`.
    pub fn tls_chain(&self, name: &str) -> PathBuf {
        self.tls_dir.join(name).join("fullchain.pem")
    }

    pub fn tls_key(&self, name: &str) -> PathBuf {
        self.tls_dir.join(name).join("privkey.pem")
    }

    pub fn dkim_key(&self, domain: &str, selector: &str) -> PathBuf {
        self.dkim_dir.join(domain).join(format!("{selector}.key"))
    }

    pub fn pf_table(&self, table: &str) -> PathBuf {
        self.pf_dir.join(table)
    }
}

/// Dovecot settings that are install-time facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DovecotConfig {
    /// Group that may read the passwd-file (Dovecot's auth process runs as
    /// `default_internal_user`). `None`: the provisioner's own group.
    pub passwd_group: Option<String>,
    /// `base_dir` in the complete `dovecot.conf`.
    pub base_dir: PathBuf,
    /// `state_dir` in the complete `dovecot.conf`.
    pub state_dir: PathBuf,
    /// `log_path` in the complete `dovecot.conf` (`None`: syslog).
    pub log_path: Option<PathBuf>,
    /// `protocols` in the complete `dovecot.conf`.
    pub protocols: Vec<String>,
    /// `listen` in the complete `dovecot.conf`.
    pub listen: Vec<String>,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    /// `default_internal_user` / `default_login_user` in the complete `dovecot.conf`.
    pub internal_user: String,
    pub login_user: String,
    /// `first_valid_uid` in the complete `dovecot.conf`: the lowest uid a mailbox may have.
    pub first_valid_uid: u32,
    /// Owner and group of the LMTP socket: the MTA's user delivers through it.
    pub lmtp_socket_user: Option<String>,
    pub lmtp_socket_group: Option<String>,
    /// Maildir location. `~` is the user's home from the passwd-file
    /// (`<vmail_home>/<domain>/<local part>`).
    pub mail_location: String,
}

/// MTA (`smtpd.conf`) settings that are install-time facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaConfig {
    /// The user the mta runs as: owner of DKIM keys.
    pub user: Option<String>,
    /// Group that may read TLS keys (mta, Dovecot's config process and the console).
    pub tls_group: Option<String>,
    /// Addresses (or interface names) the public listeners bind.
    pub listen: Vec<String>,
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub submission_port: u16,
    /// A plain loopback listener (content filters and local scripts re-inject here).
    pub loopback_port: Option<u16>,
    /// The operator's additions, included before the generated match rules.
    pub local_include: PathBuf,
    /// The SQLite database that `sqlite.conf` points table-sqlite at.
    pub database: PathBuf,
    /// How the mta delivers to local mailboxes.
    pub local_delivery: LocalDelivery,
}

/// Local delivery: to Dovecot over LMTP (the appliance), or straight into Maildirs as the
/// mta's own user (`fugu up`, where no system Dovecot runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalDelivery {
    #[default]
    Lmtp,
    Maildir,
}

/// Packet-filter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Ports the allow-list opens and the block-list closes.
    pub mail_ports: Vec<u16>,
    /// Ports where a source opening connections too fast lands in `fugu_bruteforce`
    /// (submission, IMAP, POP3).
    pub login_ports: Vec<u16>,
    /// New connections per source allowed in `rate_window_secs` before the overload.
    pub rate_connections: u32,
    pub rate_window_secs: u32,
    /// Concurrent connections per source before the overload (pf `max-src-conn`).
    pub max_src_conn: u32,
    /// How long nftables keeps a source in the brute-force set.
    pub bruteforce_timeout_secs: u32,
}

/// A command run after an output changed: argv, no shell.
pub type Command = Vec<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub paths: Paths,
    /// The mail host name: `pki` name, HELO name, the certificate Dovecot serves.
    pub hostname: String,
    pub outputs: BTreeSet<Output>,
    /// Leave out fugu's smtpd.conf extensions so real OpenSMTPD accepts the file.
    pub opensmtpd: bool,
    /// LMTP socket Dovecot listens on and the mta delivers to.
    pub lmtp_socket: PathBuf,
    pub dovecot: DovecotConfig,
    pub mta: MtaConfig,
    pub filter: FilterConfig,
    /// Commands run, in order, when an output's files changed.
    pub reload: BTreeMap<Output, Vec<Command>>,
    /// Whether to set owners (needs root). Off under a test root.
    pub set_owners: bool,
}

fn argv(words: &[&str]) -> Command {
    words.iter().map(|w| (*w).to_string()).collect()
}

impl Default for Config {
    /// The layout of a real box: `/etc/fugu/generated`, Dovecot's LMTP socket in
    /// `/run/dovecot`, the database in `/var/lib/fugu`.
    fn default() -> Config {
        let paths = Paths::under(Path::new("/etc/fugu/generated"));
        let openbsd = cfg!(target_os = "openbsd");
        let mut outputs: BTreeSet<Output> = [Output::Dovecot, Output::Smtpd, Output::Dkim]
            .into_iter()
            .chain([Output::Tls])
            .collect();
        outputs.insert(if openbsd {
            Output::Pf
        } else {
            Output::Nftables
        });
        let mta_user = if openbsd { "_fugu" } else { "fugu" };
        let mut reload = BTreeMap::new();
        reload.insert(
            Output::Dovecot,
            vec![
                // Compiled once here: the vmail user cannot write beside the script.
                vec![
                    "sievec".to_string(),
                    paths.sieve_before.display().to_string(),
                ],
                argv(&["doveadm", "reload"]),
            ],
        );
        for o in [Output::Smtpd, Output::Dkim, Output::Tls] {
            reload.insert(o, vec![argv(&["fugu", "ctl", "reload"])]);
        }
        if openbsd {
            let mut pf = vec![vec![
                "pfctl".to_string(),
                "-a".to_string(),
                "fugu".to_string(),
                "-f".to_string(),
                paths.pf_anchor.display().to_string(),
            ]];
            for table in crate::render::filter::PF_TABLES {
                pf.push(vec![
                    "pfctl".to_string(),
                    "-a".to_string(),
                    "fugu".to_string(),
                    "-t".to_string(),
                    table.to_string(),
                    "-T".to_string(),
                    "replace".to_string(),
                    "-f".to_string(),
                    paths.pf_table(table).display().to_string(),
                ]);
            }
            reload.insert(Output::Pf, pf);
        }
        reload.insert(
            Output::Nftables,
            vec![vec![
                "nft".to_string(),
                "-f".to_string(),
                paths.nft_ruleset.display().to_string(),
            ]],
        );
        Config {
            hostname: "mail.example.org".to_string(),
            outputs,
            opensmtpd: false,
            lmtp_socket: PathBuf::from("/run/dovecot/lmtp"),
            dovecot: DovecotConfig {
                passwd_group: Some("dovecot".to_string()),
                base_dir: PathBuf::from("/run/dovecot"),
                state_dir: PathBuf::from("/var/lib/dovecot"),
                log_path: None,
                protocols: argv(&["imap", "pop3", "lmtp"]),
                listen: argv(&["*", "::"]),
                imap_port: 143,
                imaps_port: 993,
                pop3_port: 110,
                pop3s_port: 995,
                internal_user: "dovecot".to_string(),
                login_user: "dovenull".to_string(),
                first_valid_uid: 500,
                lmtp_socket_user: Some(mta_user.to_string()),
                lmtp_socket_group: Some(mta_user.to_string()),
                mail_location: "maildir:~/Maildir".to_string(),
            },
            mta: MtaConfig {
                user: Some(mta_user.to_string()),
                tls_group: Some("fugu".to_string()),
                listen: argv(&["0.0.0.0", "::"]),
                smtp_port: 25,
                smtps_port: 465,
                submission_port: 587,
                loopback_port: Some(10025),
                local_include: PathBuf::from("/etc/fugu/smtpd.conf.local"),
                database: PathBuf::from("/var/lib/fugu/fugu.db"),
                local_delivery: LocalDelivery::Lmtp,
            },
            filter: FilterConfig {
                mail_ports: vec![25, 465, 587, 143, 993, 110, 995],
                login_ports: vec![465, 587, 143, 993, 110, 995],
                rate_connections: 15,
                rate_window_secs: 5,
                max_src_conn: 20,
                bruteforce_timeout_secs: 86400,
            },
            paths,
            reload,
            set_owners: true,
        }
    }
}

impl Config {
    /// Everything under `dir` (generated files in `dir/generated`, Dovecot's runtime in
    /// `dir/run/dovecot`, its state in `dir/lib/dovecot`, its log in `dir/dovecot.log`,
    /// the database `dir/fugu.db`, the operator include `dir/smtpd.conf.local`), every
    /// output, no owners and no reload commands: for tests, image builds and `fugu up`.
    pub fn under_root(dir: &Path) -> Config {
        let defaults = Config::default();
        let run = dir.join("run").join("dovecot");
        Config {
            paths: Paths::under(&dir.join("generated")),
            outputs: Output::ALL.into_iter().collect(),
            lmtp_socket: run.join("lmtp"),
            dovecot: DovecotConfig {
                passwd_group: None,
                base_dir: run,
                state_dir: dir.join("lib").join("dovecot"),
                log_path: Some(dir.join("dovecot.log")),
                lmtp_socket_user: None,
                lmtp_socket_group: None,
                ..defaults.dovecot
            },
            mta: MtaConfig {
                user: None,
                tls_group: None,
                local_include: dir.join("smtpd.conf.local"),
                database: dir.join("fugu.db"),
                ..defaults.mta
            },
            reload: BTreeMap::new(),
            set_owners: false,
            ..defaults
        }
    }

    pub fn renders(&self, output: Output) -> bool {
        self.outputs.contains(&output)
    }
}
