//! Dovecot: the passwd-file (passdb and userdb in one), the `conf.d/99-fugu.conf` snippet
//! for a system Dovecot, a complete `dovecot.conf` that includes it, and the `sieve_before`
//! script that files spam into Junk.

use std::fmt::Write as _;
use std::path::Path;

use super::{GENERATED, RenderedFile, active_domains, tls};
use crate::{Config, Output, Snapshot};

pub fn render(snapshot: &Snapshot, config: &Config) -> Vec<RenderedFile> {
    let paths = &config.paths;
    vec![
        RenderedFile::new(
            Output::Dovecot,
            paths.dovecot_passwd.clone(),
            passwd_file(snapshot),
            0o640,
        )
        .owned(None, config.dovecot.passwd_group.as_deref()),
        RenderedFile::new(
            Output::Dovecot,
            paths.dovecot_snippet.clone(),
            snippet(snapshot, config),
            0o644,
        ),
        RenderedFile::new(
            Output::Dovecot,
            paths.dovecot_conf.clone(),
            complete_conf(snapshot, config),
            0o644,
        ),
        RenderedFile::new(
            Output::Dovecot,
            paths.sieve_before.clone(),
            spam_sieve(),
            0o644,
        ),
    ]
}

/// `user@domain:{SCHEME}hash:uid:gid::home::userdb_quota_rule=*:storage=NB`, one line per
/// active user of an active domain. Users without quota get no quota rule (unlimited).
pub fn passwd_file(snapshot: &Snapshot) -> String {
    let active = active_domains(snapshot);
    let mut out = String::new();
    for user in &snapshot.users {
        if !user.active || !active.contains(user.domain.as_str()) {
            continue;
        }
        let field = match password::dovecot_field(&user.password_hash) {
            Ok(field) => field,
            Err(e) => {
                tracing::warn!(user = %user.address, "left out of the passwd-file: {e}");
                continue;
            }
        };
        // ':' separates passwd-file fields and a newline ends the entry: a value holding
        // either would let one user's data forge another entry.
        let unsafe_value = |s: &str| s.contains([':', '\n', '\r']);
        if [user.address.as_str(), &field, &user.home]
            .iter()
            .any(|s| unsafe_value(s))
        {
            tracing::warn!(user = %user.address, "left out of the passwd-file: ':' or newline in a field");
            continue;
        }
        let _ = write!(
            out,
            "{}:{}:{}:{}::{}::",
            user.address, field, user.uid, user.gid, user.home
        );
        if user.quota_bytes > 0 {
            let _ = write!(out, "userdb_quota_rule=*:storage={}B", user.quota_bytes);
        }
        out.push('\n');
    }
    out
}

/// The settings fugu needs from any Dovecot, system or standalone.
pub fn snippet(snapshot: &Snapshot, config: &Config) -> String {
    let paths = &config.paths;
    let dovecot = &config.dovecot;
    let mut out = String::from(GENERATED);
    out.push_str(
        "# fugu's settings for Dovecot. Put local changes in a later conf.d file \
         (e.g. conf.d/99-zz-local.conf).\n\n",
    );
    let _ = writeln!(
        out,
        "# The passwd-file changes under Dovecot's feet: a cache would keep old passwords valid.\n\
         auth_cache_size = 0\n\
         auth_mechanisms = plain login\n\n\
         passdb {{\n  driver = passwd-file\n  args = username_format=%Lu {passwd}\n}}\n\
         userdb {{\n  driver = passwd-file\n  args = username_format=%Lu {passwd}\n}}\n",
        passwd = paths.dovecot_passwd.display(),
    );
    let _ = writeln!(
        out,
        "mail_location = {}\n\
         namespace inbox {{\n  inbox = yes\n  mailbox Junk {{\n    special_use = \\Junk\n    auto = subscribe\n  }}\n}}\n",
        dovecot.mail_location
    );
    let _ = writeln!(
        out,
        "# The mta delivers here (action \"local_mail\" lmtp ... in smtpd.conf).\n\
         service lmtp {{\n  unix_listener {} {{\n    mode = 0660",
        lmtp_listener_name(&config.lmtp_socket, &dovecot.base_dir)
    );
    if let Some(user) = &dovecot.lmtp_socket_user {
        let _ = writeln!(out, "    user = {user}");
    }
    if let Some(group) = &dovecot.lmtp_socket_group {
        let _ = writeln!(out, "    group = {group}");
    }
    out.push_str("  }\n}\n\n");
    match tls::current_for(snapshot, &config.hostname) {
        Some(cert) => {
            let name = cert.primary_name();
            let _ = writeln!(
                out,
                "ssl = required\nssl_cert = <{}\nssl_key = <{}\n",
                paths.tls_chain(name).display(),
                paths.tls_key(name).display()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# No certificate for {} in the database yet: TLS stays off until one is issued.\n\
                 ssl = no\n",
                config.hostname
            );
        }
    }
    let _ = writeln!(
        out,
        "mail_plugins = $mail_plugins quota\n\
         protocol imap {{\n  mail_plugins = $mail_plugins imap_quota\n}}\n\
         protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\n\
         # Over-quota mail is refused at RCPT, so the sender's server keeps the bounce.\n\
         lmtp_rcpt_check_quota = yes\n\n\
         plugin {{\n  quota = maildir:User quota\n  sieve_before = {}\n}}",
        paths.sieve_before.display()
    );
    out
}

/// Dovecot names a listener in `base_dir` by its file name; an absolute name elsewhere.
/// Using the short name lets the snippet merge with a system `10-master.conf`'s listener.
fn lmtp_listener_name(socket: &Path, base_dir: &Path) -> String {
    match socket.strip_prefix(base_dir) {
        Ok(rel) if rel.components().count() == 1 => rel.display().to_string(),
        _ => socket.display().to_string(),
    }
}

/// A complete configuration: `dovecot -c dovecot.conf` serves fugu's users with nothing
/// else installed.
pub fn complete_conf(snapshot: &Snapshot, config: &Config) -> String {
    let dovecot = &config.dovecot;
    let tls = tls::current_for(snapshot, &config.hostname).is_some();
    let mut out = String::from(GENERATED);
    out.push_str("# A complete Dovecot configuration for fugu (dovecot -c this file).\n\n");
    let _ = writeln!(
        out,
        "protocols = {}\nlisten = {}\nbase_dir = {}\nstate_dir = {}\n\
         default_internal_user = {}\ndefault_login_user = {}\nfirst_valid_uid = {}",
        dovecot.protocols.join(" "),
        dovecot.listen.join(", "),
        dovecot.base_dir.display(),
        dovecot.state_dir.display(),
        dovecot.internal_user,
        dovecot.login_user,
        dovecot.first_valid_uid,
    );
    match &dovecot.log_path {
        Some(path) => {
            let _ = writeln!(out, "log_path = {}", path.display());
        }
        None => out.push_str("log_path = syslog\n"),
    }
    // Port 0 disables a listener: the TLS ports open only once a certificate exists.
    let tls_port = |port: u16| if tls { port } else { 0 };
    let _ = writeln!(
        out,
        "\nservice imap-login {{\n  inet_listener imap {{\n    port = {}\n  }}\n  \
         inet_listener imaps {{\n    port = {}\n    ssl = yes\n  }}\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {}\n  }}\n  \
         inet_listener pop3s {{\n    port = {}\n    ssl = yes\n  }}\n}}\n",
        dovecot.imap_port,
        tls_port(dovecot.imaps_port),
        dovecot.pop3_port,
        tls_port(dovecot.pop3s_port),
    );
    out.push_str("!include conf.d/99-fugu.conf\n");
    out
}

/// Pigeonhole `sieve_before`: runs before the user's own script, which still runs.
pub fn spam_sieve() -> String {
    format!(
        "{GENERATED}# Files mail the spam filter marked (X-Spam-Flag: YES) into Junk.\n\
         require [\"fileinto\", \"mailbox\"];\n\
         if header :is \"X-Spam-Flag\" \"YES\" {{\n  fileinto :create \"Junk\";\n}}\n"
    )
}
