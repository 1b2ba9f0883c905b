//! `fugu.toml`: the install-time facts of one box (hostname, addresses, ports, paths,
//! reload commands), mapped onto each component's typed configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/fugu/fugu.toml";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The mail host name (banner, HELO, certificates, DNS hints).
    pub hostname: Option<String>,
    /// Addresses (or interface names) the public SMTP and IMAP listeners bind.
    pub listen: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Ports,
    #[serde(default)]
    pub provision: Provision,
    #[serde(default)]
    pub console: Console,
}

/// `[console]`: what `fugu admin` needs to know about the box it describes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Networks allowed to use the console (CIDR) [default: loopback and private ranges].
    pub allow: Option<Vec<String>>,
    /// The box's public addresses (A/AAAA hints, reverse-DNS and block-list checks).
    #[serde(default)]
    pub public_addresses: Vec<std::net::IpAddr>,
    /// DNS server for the live checks, `IP:PORT` [default: /etc/resolv.conf].
    pub resolver: Option<std::net::SocketAddr>,
    /// Block lists to check the public addresses against.
    pub dnsbl: Option<Vec<String>>,
    /// A private CA (PEM) trusted for the ACME directory, e.g. a local pebble.
    pub acme_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub smtp: Option<u16>,
    pub submission: Option<u16>,
    pub smtps: Option<u16>,
    /// A plain loopback listener for content filters re-injecting mail.
    pub loopback: Option<u16>,
    pub imap: Option<u16>,
    pub imaps: Option<u16>,
    pub pop3: Option<u16>,
    pub pop3s: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// Which outputs to render: dovecot, smtpd, dkim, tls, pf, nftables (default: all).
    pub outputs: Option<Vec<String>>,
    /// Leave fugu's smtpd.conf extensions out, for a real OpenSMTPD.
    #[serde(default)]
    pub opensmtpd: bool,
    /// `lmtp` (to Dovecot, the default) or `maildir` (the mta writes Maildirs itself).
    pub local_delivery: Option<String>,
    /// Commands (argv lists) run after an output changed, e.g. `dovecot = [["doveadm", "reload"]]`.
    #[serde(default)]
    pub reload: BTreeMap<String, Vec<Vec<String>>>,
}

impl Settings {
    /// Reads `path`; a missing file at the default path means "all defaults".
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Settings::default());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
    }

    /// The provisioner's configuration: the real-box layout, or everything under `root`.
    pub fn provisioner(&self, root: Option<&Path>) -> anyhow::Result<provisioner::Config> {
        let mut c = match root {
            Some(r) => {
                let mut c = provisioner::Config::under_root(r);
                // Run by root (tests, image builds), the files are read by a real Dovecot
                // whose auth process is not root: give it the passwd-file's group.
                if nix::unistd::geteuid().is_root() {
                    c.dovecot.passwd_group = Some("dovecot".into());
                    c.set_owners = true;
                }
                c
            }
            None => provisioner::Config::default(),
        };
        if let Some(h) = &self.hostname {
            c.hostname = h.clone();
        }
        if let Some(l) = &self.listen {
            c.mta.listen = l.clone();
            c.dovecot.listen = l.clone();
        }
        let p = &self.ports;
        if let Some(v) = p.smtp {
            c.mta.smtp_port = v;
        }
        if let Some(v) = p.submission {
            c.mta.submission_port = v;
        }
        if let Some(v) = p.smtps {
            c.mta.smtps_port = v;
        }
        if p.loopback.is_some() {
            c.mta.loopback_port = p.loopback;
        }
        if let Some(v) = p.imap {
            c.dovecot.imap_port = v;
        }
        if let Some(v) = p.imaps {
            c.dovecot.imaps_port = v;
        }
        if let Some(v) = p.pop3 {
            c.dovecot.pop3_port = v;
        }
        if let Some(v) = p.pop3s {
            c.dovecot.pop3s_port = v;
        }
        c.opensmtpd = self.provision.opensmtpd;
        match self.provision.local_delivery.as_deref() {
            None | Some("lmtp") => {}
            Some("maildir") => c.mta.local_delivery = provisioner::LocalDelivery::Maildir,
            Some(other) => {
                anyhow::bail!("provision.local_delivery: {other:?} is neither lmtp nor maildir")
            }
        }
        if let Some(outputs) = &self.provision.outputs {
            c.outputs = outputs
                .iter()
                .map(|o| {
                    o.parse()
                        .map_err(|e| anyhow::anyhow!("provision.outputs: {e}"))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        for (name, cmds) in &self.provision.reload {
            let output: provisioner::Output = name
                .parse()
                .map_err(|e| anyhow::anyhow!("provision.reload: {e}"))?;
            c.reload.insert(output, cmds.clone());
        }
        Ok(c)
    }
}
