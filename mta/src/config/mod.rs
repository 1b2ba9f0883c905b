//! smtpd.conf: the OpenSMTPD 6.4+ grammar parsed into a typed, validated [`Config`].
//!
//! [`parse`] is sans-IO (includes come through a [`SourceLoader`]); [`load`] reads the file,
//! then checks what only the filesystem can answer: pki and ca files, table files, and the
//! `sqlite:` table configs, opening each database read-only to check every `query_*`
//! column count. All errors come back at once as [`Diagnostics`], one
//! `FILE:LINE[:COL]: message` per line. [`Config::match_rcpt`] is the rule evaluator,
//! [`Config::dump`] the normalised text, [`convert`] the ≤6.0 grammar converter.
//!
//! Not here: running filters, binding listeners, delivery. Those consume the `Config`.

pub mod convert;
mod dump;
pub mod format;
mod lexer;
mod model;
mod parser;
mod rules;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use model::*;
pub use parser::{KEYWORDS, parse_relay_url, parse_size};
pub use rules::{Decision, MatchContext};

use crate::table::{
    Builtin, BuiltinTable, LocalIdentity, Service, SqliteConfig, SqliteTable, StaticTable, Table,
    Tables, parse_file_table,
};

/// One error, with the line (and column where useful) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.col {
            Some(c) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                c,
                self.message
            ),
            None => write!(f, "{}:{}: {}", self.file.display(), self.line, self.message),
        }
    }
}

/// Every error of one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// What the parser needs from the outside world: included files, and whether a
/// `listen on NAME` names an interface or a resolvable host.
pub trait SourceLoader {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn listen_name_exists(&self, name: &str) -> bool {
        let _ = name;
        true
    }
}

/// The real filesystem and network interfaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsLoader;

impl SourceLoader for FsLoader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn listen_name_exists(&self, name: &str) -> bool {
        use std::net::ToSocketAddrs;
        Path::new("/sys/class/net").join(name).exists()
            || (name, 25)
                .to_socket_addrs()
                .is_ok_and(|mut a| a.next().is_some())
    }
}

/// Parse configuration text (sans-IO). `origin` names the file in diagnostics.
pub fn parse(text: &str, origin: &Path, fs: &dyn SourceLoader) -> Result<Config, Diagnostics> {
    let mut p = parser::Parser::new(fs);
    p.parse_file(text, origin);
    if p.diags.is_empty() {
        Ok(p.cfg)
    } else {
        Err(Diagnostics(p.diags))
    }
}

/// Read and check a configuration the way `smtpd -n` does, with its files and tables.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_with_tables(path, &LocalIdentity::system()).map(|(c, _)| c)
}

/// [`load`], also returning the opened tables (what the daemon and a reload need).
pub fn load_with_tables(
    path: &Path,
    local: &LocalIdentity,
) -> Result<(Config, Tables), Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            col: None,
            message: format!("cannot read configuration: {e}"),
        }])
    })?;
    let cfg = parse(&text, path, &FsLoader)?;
    let mut diags = check_pki_files(&cfg);
    let tables = match open_tables(&cfg, local) {
        Ok(t) => Some(t),
        Err(d) => {
            diags.extend(d.0);
            None
        }
    };
    match tables {
        Some(t) if diags.is_empty() => Ok((cfg, t)),
        _ => {
            diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(Diagnostics(diags))
        }
    }
}

fn diag_at(span: &Span, message: String) -> Diagnostic {
    Diagnostic {
        file: span.file.as_ref().clone(),
        line: span.line,
        col: None,
        message,
    }
}

/// smtpd loads every pki at start: certificate and key must be readable PEM, and the key
/// no more open than `rwxr-----` (ssl.c `ssl_load_file`).
fn check_pki_files(cfg: &Config) -> Vec<Diagnostic> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let pem = |span: &Span,
               what: &str,
               p: &Path,
               out: &mut Vec<Diagnostic>|
     -> Option<std::fs::Metadata> {
        match std::fs::read_to_string(p) {
            Ok(t) if t.contains("-----BEGIN ") => std::fs::metadata(p).ok(),
            Ok(_) => {
                out.push(diag_at(
                    span,
                    format!("{what} {}: not a PEM file", p.display()),
                ));
                None
            }
            Err(e) => {
                out.push(diag_at(
                    span,
                    format!("cannot read {what} {}: {e}", p.display()),
                ));
                None
            }
        }
    };
    for (name, pki) in &cfg.pki {
        match &pki.cert {
            Some(c) => {
                pem(&pki.span, "certificate file", c, &mut out);
            }
            None => out.push(diag_at(
                &pki.span,
                format!("pki {name}: missing certificate file"),
            )),
        }
        match &pki.key {
            Some(k) => {
                if let Some(md) = pem(&pki.span, "key file", k, &mut out)
                    && md.permissions().mode() & 0o037 != 0
                {
                    out.push(diag_at(
                        &pki.span,
                        format!(
                            "key file {}: insecure permissions: must be at most rwxr-----",
                            k.display()
                        ),
                    ));
                }
            }
            None => out.push(diag_at(&pki.span, format!("pki {name}: missing key file"))),
        }
    }
    for ca in cfg.ca.values() {
        pem(&ca.span, "ca file", &ca.cert, &mut out);
    }
    out
}

/// Open every declared table (file tables read, sqlite databases opened read-only with
/// their queries checked) and check that each use of a table is a service it can serve.
/// Call again to reload: nothing is cached between calls.
pub fn open_tables(cfg: &Config, local: &LocalIdentity) -> Result<Tables, Diagnostics> {
    let mut tables = Tables::new();
    let mut diags = Vec::new();
    for b in [
        Builtin::Localhost,
        Builtin::Anyhost,
        Builtin::Localnames,
        Builtin::Anydestination,
        Builtin::Getpwnam,
    ] {
        tables.insert(
            b.table_name(),
            Arc::new(BuiltinTable {
                kind: b,
                local: local.clone(),
            }),
        );
    }
    for decl in &cfg.tables {
        let opened: Result<Arc<dyn Table>, String> = match &decl.source {
            TableSource::Inline(t) => Ok(Arc::new(t.clone())),
            TableSource::File(p) => match std::fs::read_to_string(p) {
                Ok(text) => parse_file_table(&text)
                    .map(|t| Arc::new(t) as Arc<dyn Table>)
                    .map_err(|(line, e)| {
                        format!("table {}: {}:{line}: {e}", decl.name, p.display())
                    }),
                Err(e) => Err(format!(
                    "invalid configuration file {} for table {}: {e}",
                    p.display(),
                    decl.name
                )),
            },
            TableSource::Sqlite(p) => match std::fs::read_to_string(p) {
                Ok(text) => SqliteConfig::parse(&text)
                    .map_err(|e| vec![e])
                    .and_then(|c| SqliteTable::open(&decl.name, c))
                    .map(|t| Arc::new(t) as Arc<dyn Table>)
                    .map_err(|errs| {
                        errs.iter()
                            .map(|e| format!("table {} ({}): {e}", decl.name, p.display()))
                            .collect::<Vec<_>>()
                            .join("; ")
                    }),
                Err(e) => Err(format!(
                    "invalid configuration file {} for table {}: {e}",
                    p.display(),
                    decl.name
                )),
            },
        };
        match opened {
            Ok(t) => tables.insert(&decl.name, t),
            Err(e) => diags.push(diag_at(&decl.span, e)),
        }
    }
    for (name, service, span) in named_table_uses(cfg) {
        if let Some(t) = tables.get(&name)
            && !t.serves(service)
        {
            diags.push(diag_at(
                &span,
                format!(
                    "table \"{name}\" may not be used for {} lookups",
                    service.name()
                ),
            ));
        }
    }
    for (t, service, span) in inline_table_uses(cfg) {
        if !t.serves(service) {
            diags.push(diag_at(
                &span,
                format!(
                    "inline table may not be used for {} lookups",
                    service.name()
                ),
            ));
        }
    }
    if diags.is_empty() {
        Ok(tables)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Every table reference in the config with the service it is used for.
fn table_uses(cfg: &Config) -> Vec<(&TableRef, Service, Span)> {
    let mut out = Vec::new();
    for l in &cfg.listeners {
        if let Some(ListenAuth::Required(Some(t)) | ListenAuth::Optional(Some(t))) = &l.auth {
            out.push((t, Service::Credentials, l.span.clone()));
        }
        if let Some(t) = &l.hostnames {
            out.push((t, Service::Addrname, l.span.clone()));
        }
        if let Some(t) = &l.senders {
            out.push((t, Service::Mailaddrmap, l.span.clone()));
        }
    }
    for a in &cfg.actions {
        let s = || a.span.clone();
        if let Some(t) = &a.alias {
            out.push((t, Service::Alias, s()));
        }
        if let Some(t) = &a.virtual_ {
            out.push((t, Service::Alias, s()));
        }
        if let Some(t) = &a.userbase {
            out.push((t, Service::Userinfo, s()));
        }
        if let Dispatch::Relay(r) = &a.dispatch {
            if let Some(RelayHost::Table(t)) = &r.host {
                out.push((t, Service::Relayhost, s()));
            }
            if let Some(t) = &r.domain {
                out.push((t, Service::Relayhost, s()));
            }
            if let Some(t) = &r.helo_src {
                out.push((t, Service::Addrname, s()));
            }
            if let Some(t) = &r.src {
                out.push((t, Service::Source, s()));
            }
            if let Some(t) = &r.auth {
                out.push((t, Service::Credentials, s()));
            }
        }
    }
    for r in &cfg.rules {
        for c in &r.conditions {
            let (crit, service) = match &c.criterion {
                Criterion::FromSrc(t) => (t, Service::Netaddr),
                Criterion::ForDomain(t) => (t, Service::Domain),
                Criterion::Helo(t) => (t, Service::Domain),
                Criterion::FromRdns(Some(t)) => (t, Service::Domain),
                Criterion::Tag(t) => (t, Service::String),
                Criterion::FromAuth(Some(t)) | Criterion::Auth(Some(t)) => (t, Service::String),
                Criterion::FromMailFrom(t)
                | Criterion::MailFrom(t)
                | Criterion::ForRcptTo(t)
                | Criterion::RcptTo(t) => (t, Service::Mailaddr),
                _ => continue,
            };
            let service = if crit.regex { Service::Regex } else { service };
            out.push((&crit.table, service, r.span.clone()));
        }
    }
    out
}

fn named_table_uses(cfg: &Config) -> Vec<(String, Service, Span)> {
    table_uses(cfg)
        .into_iter()
        .filter_map(|(t, s, span)| match t {
            TableRef::Named(n) => Some((n.clone(), s, span)),
            TableRef::Inline(_) => None,
        })
        .collect()
}

fn inline_table_uses(cfg: &Config) -> Vec<(StaticTable, Service, Span)> {
    table_uses(cfg)
        .into_iter()
        .filter_map(|(t, s, span)| match t {
            TableRef::Inline(st) => Some((st.clone(), s, span)),
            TableRef::Named(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
