//! The MTA: `smtpd.conf` (OpenSMTPD 6.4+ grammar) and table-sqlite's `sqlite.conf`, whose
//! queries read the schema's lookup views. With `Config::opensmtpd` the fugu extensions
//! (`dkim-sign`) are left out, so real OpenSMTPD with `opensmtpd-extras` reads the pair.

use std::fmt::Write as _;

use super::{GENERATED, RenderedFile, tls};
use crate::{Config, Output, Snapshot};

pub fn render(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let mut files = vec![
        RenderedFile::new(
            Output::Smtpd,
            config.paths.smtpd_conf.clone(),
            smtpd_conf(snapshot, config),
            0o644,
        ),
        RenderedFile::new(
            Output::Smtpd,
            config.paths.sqlite_conf.clone(),
            sqlite_conf(config),
            0o644,
        ),
    ];
    if !config.opensmtpd {
        for (file, text) in access_confs(config) {
            let path = config.paths.sqlite_conf.with_file_name(file);
            files.push(RenderedFile::new(Output::Smtpd, path, text, 0o644));
        }
    }
    files
}

/// An access rule is live until its `expires_at`.
const LIVE: &str = "(expires_at IS NULL OR expires_at > unixepoch())";

/// fugu extension: the table-sqlite files behind `access block|allow …` and `access ban`.
/// The mta asks `netaddr` with the client address and then every enclosing network in
/// canonical text (`192.0.2.0/24`), so `ip` and `cidr` rows match by equality;
/// `mailaddr` gets the whole address, matched against `sender` rows and the domain
/// part against `domain` rows. `query_ban` is the mta's one write (auto-bans).
pub fn access_confs(config: &Config) -> Vec<(&'static str, String)> {
    let db = config.mta.database.display();
    let net = |action: &str| {
        format!(
            "query_netaddr SELECT value FROM access_rules WHERE action = '{action}' \
             AND kind IN ('ip', 'cidr') AND value = ? AND {LIVE}\n"
        )
    };
    let senders = |action: &str| {
        format!(
            "query_mailaddr SELECT value FROM access_rules WHERE action = '{action}' \
             AND ((kind = 'sender' AND value = ?1) \
             OR (kind = 'domain' AND value = substr(?1, instr(?1, '@') + 1))) AND {LIVE}\n"
        )
    };
    let ban = "query_ban INSERT INTO access_rules (kind, value, action, source, reason, expires_at) \
               VALUES ('ip', ?1, 'block', 'auto', ?2, ?3) ON CONFLICT (kind, value, action) \
               DO UPDATE SET reason = excluded.reason, expires_at = excluded.expires_at \
               WHERE access_rules.source = 'auto'\n";
    vec![
        (
            "access-block.conf",
            format!(
                "{GENERATED}dbpath {db}\n{}{}{ban}",
                net("block"),
                senders("block")
            ),
        ),
        (
            "access-allow.conf",
            format!(
                "{GENERATED}dbpath {db}\n{}{}",
                net("allow"),
                senders("allow")
            ),
        ),
        (
            "access-recipient.conf",
            format!(
                "{GENERATED}dbpath {db}\n\
                 query_mailaddr SELECT value FROM access_rules WHERE action = 'block' \
                 AND kind = 'recipient' AND value = ? AND {LIVE}\n"
            ),
        ),
    ]
}

/// table-sqlite's configuration: one prepared statement per lookup service, each bound to
/// the (lower-cased) key. Column counts are checked by table-sqlite when it loads.
/// Real OpenSMTPD expands an unknown address of a local domain into an empty list and
/// answers `524 5.2.4 Mailing list expansion problem`; matching on `rcpt-to <recipients>`
/// first makes it refuse the address as unknown. A catch-all alias (`@domain`) counts.
const RECIPIENTS_QUERY: &str = "query_mailaddr SELECT key FROM virtual_lookup \
     WHERE key = ?1 OR key = '@' || substr(?1, instr(?1, '@') + 1)\n";

pub fn sqlite_conf(config: &Config) -> String {
    format!(
        "{GENERATED}dbpath {}\n\
         query_domain SELECT name FROM domains WHERE name = ? AND active = 1\n\
         query_alias SELECT destination FROM virtual_lookup WHERE key = ?\n\
         query_credentials SELECT login, password_hash FROM credentials_lookup WHERE login = ?\n\
         query_mailaddrmap SELECT address FROM sender_lookup WHERE login = ?\n\
         query_userinfo SELECT uid, gid, home FROM userbase_lookup WHERE name = ?\n{}",
        config.mta.database.display(),
        if config.opensmtpd {
            RECIPIENTS_QUERY
        } else {
            ""
        }
    )
}

fn quoted(s: impl std::fmt::Display) -> String {
    format!("\"{s}\"")
}

pub fn smtpd_conf(snapshot: &Snapshot, config: &Config) -> String {
    let paths = &config.paths;
    let mta = &config.mta;
    let host = &config.hostname;
    let host_quoted = quoted(host);
    let mut out = String::from(GENERATED);
    let _ = writeln!(
        out,
        "# Local additions go in {} (included below, before the generated match rules).\n",
        mta.local_include.display()
    );

    let cert = tls::current_for(snapshot, host);
    if let Some(cert) = cert {
        let name = cert.primary_name();
        let _ = writeln!(
            out,
            "pki {host} cert {}\npki {host} key {}\n",
            quoted(paths.tls_chain(name).display()),
            quoted(paths.tls_key(name).display())
        );
    } else {
        let _ = writeln!(
            out,
            "# No certificate for {host} in the database yet: no TLS, no smtps, no submission.\n"
        );
    }

    let sqlite = quoted(format!("sqlite:{}", paths.sqlite_conf.display()));
    for table in [
        "domains",
        "virtuals",
        "credentials",
        "sendermap",
        "vmailusers",
    ] {
        let _ = writeln!(out, "table {table} {sqlite}");
    }
    if config.opensmtpd {
        let _ = writeln!(out, "table recipients {sqlite}");
    }
    if !config.opensmtpd {
        let _ = writeln!(
            out,
            "# fugu extension: DKIM keys for dkim-sign\ntable dkimkeys {}",
            quoted(format!("file:{}", paths.dkim_table.display()))
        );
    }
    if !config.opensmtpd {
        let file = |f: &str| {
            quoted(format!(
                "sqlite:{}",
                paths.sqlite_conf.with_file_name(f).display()
            ))
        };
        let _ = writeln!(
            out,
            "# fugu extension: access lists and auto-bans from access_rules\n\
             table access_block {}\ntable access_allow {}\ntable access_recipient {}\n\
             access allow connect <access_allow>\naccess allow sender <access_allow>\n\
             access block connect <access_block>\naccess block sender <access_block>\n\
             access block recipient <access_recipient>\n\
             access ban <access_block> auth-failures 10 errors 50 within 10m for 24h",
            file("access-block.conf"),
            file("access-allow.conf"),
            file("access-recipient.conf"),
        );
    }
    out.push('\n');

    if let Some(port) = mta.loopback_port {
        let _ = writeln!(
            out,
            "# Content filters and local scripts re-inject here.\n\
             listen on 127.0.0.1 port {port} tag LOOPBACK"
        );
    }
    for addr in &mta.listen {
        let on = listen_address(addr);
        match cert {
            Some(_) => {
                let _ = writeln!(
                    out,
                    "listen on {on} port {} tls pki {host} hostname {host_quoted}\n\
                     listen on {on} port {} smtps pki {host} hostname {host_quoted} \
                     auth <credentials> senders <sendermap> masquerade tag SUBMISSION\n\
                     listen on {on} port {} tls-require pki {host} hostname {host_quoted} \
                     auth <credentials> senders <sendermap> masquerade tag SUBMISSION",
                    mta.smtp_port, mta.smtps_port, mta.submission_port
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "listen on {on} port {} hostname {host_quoted}",
                    mta.smtp_port
                );
            }
        }
    }
    out.push('\n');

    match config.mta.local_delivery {
        crate::config::LocalDelivery::Lmtp => {
            let _ = writeln!(
                out,
                "action \"local_mail\" lmtp {} rcpt-to virtual <virtuals> userbase <vmailusers>",
                quoted(config.lmtp_socket.display())
            );
        }
        // The same layout Dovecot's mail_location uses: <vmail>/<domain>/<user>/Maildir.
        crate::config::LocalDelivery::Maildir => {
            let _ = writeln!(
                out,
                "action \"local_mail\" maildir \"%{{user.directory}}/%{{dest.domain}}/%{{dest.user:strip}}/Maildir\" \
                 virtual <virtuals> userbase <vmailusers>"
            );
        }
    }
    let dkim = if config.opensmtpd {
        ""
    } else {
        " dkim-sign <dkimkeys>"
    };
    let _ = writeln!(out, "action \"outbound\" relay helo {host}{dkim}\n");

    let _ = writeln!(out, "include {}\n", quoted(mta.local_include.display()));

    if config.opensmtpd {
        // RFC 5321 §4.2.2: an unknown mailbox is a 550. Relaying it outbound for an
        // authenticated sender would only loop back here.
        out.push_str(
            "match from any for domain <domains> rcpt-to <recipients> action \"local_mail\"\n\
             match from any for domain <domains> reject\n",
        );
    } else {
        out.push_str("match from any for domain <domains> action \"local_mail\"\n");
    }
    out.push_str(
        "match from auth for any action \"outbound\"\n\
         match from local for any action \"outbound\"\n",
    );
    out
}

/// OpenSMTPD takes an interface, address or host name; an IPv6 address as is.
fn listen_address(addr: &str) -> String {
    if addr.contains(':') {
        quoted(addr)
    } else {
        addr.to_string()
    }
}
