//! The OpenSMTPD 6.4+ grammar (parse.y), hand-written over [`Lexer`] statements.
//!
//! A statement with an error is dropped whole, as yacc's `error '\n'` recovery does, and
//! parsing goes on: every error of the file is reported in one run.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::format::parse_format;
use super::lexer::{Lexer, Tok, Token};
use super::model::*;
use super::{Diagnostic, SourceLoader};
use crate::server::ciphers;
use crate::table::StaticTable;

mod access;
mod authres;

/// parse.y's keyword list: these must be quoted to be used as values.
pub const KEYWORDS: &[&str] = &[
    "action",
    "admd",
    "alias",
    "any",
    "auth",
    "auth-optional",
    "backup",
    "bounce",
    "bypass",
    "ca",
    "cert",
    "chain",
    "chroot",
    "ciphers",
    "commit",
    "compression",
    "connect",
    "data",
    "data-line",
    "dhe",
    "disconnect",
    "domain",
    "ehlo",
    "encryption",
    "expand-only",
    "fcrdns",
    "filter",
    "for",
    "forward-only",
    "from",
    "group",
    "helo",
    "helo-src",
    "host",
    "hostname",
    "hostnames",
    "include",
    "inet4",
    "inet6",
    "junk",
    "key",
    "limit",
    "listen",
    "lmtp",
    "local",
    "mail-from",
    "maildir",
    "mask-src",
    "masquerade",
    "match",
    "max-deferred",
    "max-message-size",
    "mbox",
    "mda",
    "mta",
    "mx",
    "no-dsn",
    "no-verify",
    "noop",
    "on",
    "phase",
    "pki",
    "port",
    "proc",
    "proc-exec",
    "protocols",
    "proxy-v2",
    "queue",
    "quit",
    "rcpt-to",
    "rdns",
    "received-auth",
    "recipient",
    "regex",
    "reject",
    "relay",
    "report",
    "rewrite",
    "rset",
    "scheduler",
    "senders",
    "smtp",
    "smtp-in",
    "smtp-out",
    "smtps",
    "socket",
    "src",
    "srs",
    "sub-addr-delim",
    "table",
    "tag",
    "tagged",
    "tls",
    "tls-require",
    "ttl",
    "user",
    "userbase",
    "verify",
    "virtual",
    "warn-interval",
    "wrapper",
    // fugu extensions
    "access",
    "authres",
    "dkim-sign",
    "dnsbl",
    "greylist",
    "no-authres",
    "resolver",
    "spool",
];

/// Keywords OpenSMTPD has and fugu does not implement yet: refused, by name.
const UNIMPLEMENTED: &[&str] = &["proxy-v2", "srs", "chroot", "scheduler", "admd"];

/// `smtp limit` keywords: OpenSMTPD's two, then fugu extensions.
const SMTP_LIMITS: &[&str] = &[
    "max-mails",
    "max-rcpt",
    "max-sessions",
    "max-sessions-per-ip",
    "max-conn-rate",
    "max-header-size",
    "max-header-field",
];

const MTA_LIMITS: &[&str] = &[
    "max-conn-per-host",
    "max-conn-per-route",
    "max-conn-per-source",
    "max-conn-per-connector",
    "max-conn-per-relay",
    "max-conn-per-domain",
    "conn-delay-host",
    "conn-delay-route",
    "conn-delay-source",
    "conn-delay-connector",
    "conn-delay-relay",
    "conn-delay-domain",
    "reconn-delay-route",
    "session-mail-max",
    "session-transaction-delay",
    "session-keepalive",
    "max-failures-per-session",
    "task-hiwat",
    "task-lowat",
    "task-release",
];
const MDA_LIMITS: &[&str] = &[
    "max-session",
    "max-session-per-user",
    "task-lowat",
    "task-hiwat",
    "task-release",
];

const MAX_INCLUDE_DEPTH: usize = 10;

pub fn is_keyword(w: &str) -> bool {
    KEYWORDS.contains(&w)
}

/// An error inside one statement: its position and text.
struct PErr {
    line: usize,
    col: Option<usize>,
    message: String,
}

type P<T> = Result<T, PErr>;

/// A cursor over one statement's tokens.
struct Stmt<'t> {
    toks: &'t [Token],
    pos: usize,
    line: usize,
}

impl<'t> Stmt<'t> {
    fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self) -> Option<(&'t str, bool)> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Word { text, quoted }) => Some((text.as_str(), *quoted)),
            _ => None,
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        self.peek_word() == Some((kw, false))
    }

    fn is_sym(&self, c: char) -> bool {
        matches!(self.peek().map(|t| &t.tok), Some(Tok::Sym(s)) if *s == c)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.is_kw(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat_sym(&mut self, c: char) -> bool {
        let hit = self.is_sym(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn err<T>(&self, message: impl Into<String>) -> P<T> {
        Err(self.err_at(message))
    }

    fn err_at(&self, message: impl Into<String>) -> PErr {
        let (line, col) = match self.peek().or(self.toks.last()) {
            Some(t) => (t.line, Some(t.col)),
            None => (self.line, None),
        };
        PErr {
            line,
            col,
            message: message.into(),
        }
    }

    fn describe(&self) -> String {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Word { text, quoted: true }) => format!("\"{text}\""),
            Some(Tok::Word { text, .. }) => format!("`{text}`"),
            Some(Tok::Sym(c)) => format!("`{c}`"),
            None => "end of line".into(),
        }
    }

    fn expect_kw(&mut self, kw: &str) -> P<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(format!(
                "syntax error: expected `{kw}`, found {}",
                self.describe()
            ))
        }
    }

    fn expect_sym(&mut self, c: char) -> P<()> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            self.err(format!(
                "syntax error: expected `{c}`, found {}",
                self.describe()
            ))
        }
    }

    /// A value: a quoted string, or a bare word that is not a reserved word.
    fn value(&mut self, what: &str) -> P<String> {
        match self.peek_word() {
            Some((w, false)) if is_keyword(w) => self.err(format!(
                "syntax error: reserved word `{w}` used as {what} must be quoted: \"{w}\""
            )),
            Some((w, _)) => {
                self.pos += 1;
                Ok(w.to_owned())
            }
            None => self.err(format!(
                "syntax error: expected {what}, found {}",
                self.describe()
            )),
        }
    }

    /// Is there a value (quoted, or a bare non-keyword) next?
    fn has_value(&self) -> bool {
        matches!(self.peek_word(), Some((w, quoted)) if quoted || !is_keyword(w))
    }

    fn number(&mut self, what: &str) -> P<u64> {
        let v = self.value(what)?;
        v.parse().map_err(|_| {
            self.pos -= 1;
            self.err_at(format!("invalid {what}: {v}"))
        })
    }

    fn end(&self) -> P<()> {
        if self.pos < self.toks.len() {
            self.err(format!("syntax error: unexpected {}", self.describe()))
        } else {
            Ok(())
        }
    }
}

pub struct Parser<'a> {
    fs: &'a dyn SourceLoader,
    pub diags: Vec<Diagnostic>,
    macros: HashMap<String, String>,
    pub cfg: Config,
    depth: usize,
}

impl<'a> Parser<'a> {
    pub fn new(fs: &'a dyn SourceLoader) -> Parser<'a> {
        Parser {
            fs,
            diags: Vec::new(),
            macros: HashMap::new(),
            cfg: Config::default(),
            depth: 0,
        }
    }

    pub fn parse_file(&mut self, text: &str, origin: &Path) {
        let file = Arc::new(origin.to_path_buf());
        let mut lexer = Lexer::new(text);
        loop {
            let macros = &self.macros;
            let Some(st) = lexer.next_statement(macros) else {
                break;
            };
            match st {
                Err(e) => self.diag(&file, e.line, Some(e.col), e.message),
                Ok(toks) => {
                    let line = toks.first().map(|t| t.line).unwrap_or(0);
                    let mut st = Stmt {
                        toks: &toks,
                        pos: 0,
                        line,
                    };
                    let span = Span {
                        file: file.clone(),
                        line,
                    };
                    if let Err(e) = self.statement(&mut st, span) {
                        self.diag(&file, e.line, e.col, e.message);
                    }
                }
            }
        }
    }

    fn diag(&mut self, file: &Arc<PathBuf>, line: usize, col: Option<usize>, message: String) {
        self.diags.push(Diagnostic {
            file: file.as_ref().clone(),
            line,
            col,
            message,
        });
    }

    fn statement(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        // Macro definition: `name = value`.
        if let (Some((name, false)), Some(Tok::Sym('='))) =
            (st.peek_word(), st.toks.get(1).map(|t| &t.tok))
        {
            if is_keyword(name) {
                return st.err(format!(
                    "syntax error: reserved word `{name}` cannot be a macro name"
                ));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return st.err(format!("invalid macro name: {name}"));
            }
            st.pos = 2;
            let value = match st.peek_word() {
                Some((w, _)) => w.to_owned(),
                None => return st.err("syntax error: expected a macro value"),
            };
            st.pos += 1;
            st.end()?;
            self.macros.insert(name.to_owned(), value);
            return Ok(());
        }
        let Some((word, false)) = st.peek_word() else {
            return st.err(format!(
                "syntax error: expected a directive, found {}",
                st.describe()
            ));
        };
        if UNIMPLEMENTED.contains(&word) {
            return st.err(format!("`{word}` is not implemented by fugu yet"));
        }
        st.pos += 1;
        match word {
            "include" => self.include(st),
            "table" => self.table(st, span),
            "pki" => self.pki(st, span),
            "ca" => self.ca(st, span),
            "listen" => self.listen(st, span),
            "action" => self.action(st, span),
            "match" => self.rule(st, span),
            "filter" => self.filter(st, span),
            "proc" => self.proc(st, span),
            "queue" => self.queue(st),
            "smtp" => self.smtp(st),
            "mta" => self.mta(st),
            "mda" => self.mda(st),
            "bounce" => self.bounce(st),
            "access" => self.access(st),
            "authres" => self.authres(st),
            "greylist" => self.greylist(st),
            "dnsbl" => self.dnsbl(st),
            "resolver" => {
                let v = st.value("a resolver address")?;
                if v.parse::<IpAddr>().is_err() && v.parse::<std::net::SocketAddr>().is_err() {
                    st.pos -= 1;
                    return st.err(format!("invalid resolver address: {v}"));
                }
                st.end()?;
                self.cfg.resolver = Some(v);
                Ok(())
            }
            "spool" => {
                let v = st.value("a spool path")?;
                if !v.starts_with('/') {
                    st.pos -= 1;
                    return st.err(format!("spool path must be absolute: {v}"));
                }
                st.end()?;
                self.cfg.spool = Some(PathBuf::from(v));
                Ok(())
            }
            other => {
                st.pos -= 1;
                st.err(format!("syntax error: unknown directive `{other}`"))
            }
        }
    }

    fn include(&mut self, st: &mut Stmt<'_>) -> P<()> {
        let path = st.value("an include path")?;
        st.end()?;
        if self.depth >= MAX_INCLUDE_DEPTH {
            return st.err(format!("includes nested too deep at {path}"));
        }
        match self.fs.read(Path::new(&path)) {
            Ok(text) => {
                self.depth += 1;
                self.parse_file(&text, Path::new(&path));
                self.depth -= 1;
                Ok(())
            }
            Err(e) => st.err(format!("failed to include file {path}: {e}")),
        }
    }

    fn table(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = st.value("a table name")?;
        if self.cfg.table(&name).is_some() {
            st.pos -= 1;
            return st.err(format!("table {name} already defined"));
        }
        let source = if st.is_sym('{') {
            TableSource::Inline(self.inline_table(st)?)
        } else {
            let spec = st.value("a table source")?;
            let (kind, path) = match spec.split_once(':') {
                Some((k, p)) if !k.contains('/') => (k, p),
                _ => ("file", spec.as_str()),
            };
            st.pos -= 1;
            if !path.starts_with('/') {
                return st.err(format!("table {name}: path must be absolute: {path}"));
            }
            let src = match kind {
                "file" | "static" => TableSource::File(PathBuf::from(path)),
                "sqlite" => TableSource::Sqlite(PathBuf::from(path)),
                "db" => {
                    return st.err(format!(
                        "table {name}: db: tables (Berkeley DB) are not supported: use file:{path} with the makemap source, or sqlite:"
                    ));
                }
                other => {
                    return st.err(format!(
                        "table {name}: backend `{other}:` is not supported: use file: or sqlite:"
                    ));
                }
            };
            st.pos += 1;
            src
        };
        st.end()?;
        self.cfg.tables.push(TableDecl { name, source, span });
        Ok(())
    }

    /// `{ a, b }` or `{ k = v, … }`.
    fn inline_table(&mut self, st: &mut Stmt<'_>) -> P<StaticTable> {
        st.expect_sym('{')?;
        let mut list = Vec::new();
        let mut map = Vec::new();
        loop {
            if st.eat_sym('}') {
                break;
            }
            let key = st.value("a table entry")?;
            if st.eat_sym('=') {
                let v = st.value("a table value")?;
                if !list.is_empty() {
                    return st.err("table mixes list entries and key = value entries");
                }
                map.push((key.to_ascii_lowercase(), v));
            } else {
                if !map.is_empty() {
                    return st.err("table mixes list entries and key = value entries");
                }
                list.push(key.to_ascii_lowercase());
            }
            if !st.eat_sym(',') {
                st.expect_sym('}')?;
                break;
            }
        }
        if list.is_empty() && map.is_empty() {
            return st.err("empty table");
        }
        Ok(if map.is_empty() {
            StaticTable::List(list)
        } else {
            StaticTable::Map(map)
        })
    }

    /// `<name>`, `{ … }` or a single string.
    fn tblref(&mut self, st: &mut Stmt<'_>) -> P<TableRef> {
        if st.eat_sym('<') {
            let name = match st.peek_word() {
                Some((w, _)) => w.to_owned(),
                None => return st.err("syntax error: expected a table name"),
            };
            // The builtin tables are not nameable in 6.8 ("no such table: localhost").
            if self.cfg.table(&name).is_none() {
                return st.err(format!("no such table: {name}"));
            }
            st.pos += 1;
            st.expect_sym('>')?;
            return Ok(TableRef::Named(name));
        }
        if st.is_sym('{') {
            return Ok(TableRef::Inline(self.inline_table(st)?));
        }
        let v = st.value("a table")?;
        Ok(TableRef::Inline(StaticTable::List(vec![
            v.to_ascii_lowercase(),
        ])))
    }

    fn has_tblref(st: &Stmt<'_>) -> bool {
        st.is_sym('<') || st.is_sym('{') || st.has_value()
    }

    fn crit(&mut self, st: &mut Stmt<'_>) -> P<TableCrit> {
        let regex = st.eat_kw("regex");
        let table = self.tblref(st)?;
        if regex {
            check_regexes(st, &table)?;
        }
        Ok(TableCrit { regex, table })
    }

    fn opt_crit(&mut self, st: &mut Stmt<'_>) -> P<Option<TableCrit>> {
        if st.is_kw("regex") || Self::has_tblref(st) {
            Ok(Some(self.crit(st)?))
        } else {
            Ok(None)
        }
    }

    fn pki_name(st: &mut Stmt<'_>) -> P<String> {
        let name = st.value("a pki name")?.to_ascii_lowercase();
        let valid = name == "*"
            || name.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            st.pos -= 1;
            return st.err(format!("pki name must be a hostname or *: {name}"));
        }
        Ok(name)
    }

    fn pki(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = Self::pki_name(st)?;
        let entry = self.cfg.pki.get(&name).cloned().unwrap_or(Pki {
            span,
            ..Pki::default()
        });
        let mut entry = entry;
        if st.eat_kw("cert") {
            entry.cert = Some(PathBuf::from(st.value("a certificate path")?));
        } else if st.eat_kw("key") {
            entry.key = Some(PathBuf::from(st.value("a key path")?));
        } else if st.eat_kw("dhe") {
            let v = st.value("none, auto or legacy")?;
            if !matches!(v.as_str(), "none" | "auto" | "legacy") {
                st.pos -= 1;
                return st.err(format!(
                    "invalid dhe parameter: {v}: expected none, auto or legacy"
                ));
            }
            entry.dhe = Some(v);
        } else {
            return st.err(format!(
                "syntax error: expected cert, key or dhe, found {}",
                st.describe()
            ));
        }
        st.end()?;
        self.cfg.pki.insert(name, entry);
        Ok(())
    }

    fn ca(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = Self::pki_name(st)?;
        st.expect_kw("cert")?;
        let cert = PathBuf::from(st.value("a certificate path")?);
        st.end()?;
        self.cfg.ca.insert(name, Ca { cert, span });
        Ok(())
    }

    fn filter_ref(&mut self, st: &mut Stmt<'_>) -> P<FilterRef> {
        if st.eat_sym('{') {
            let mut names = Vec::new();
            loop {
                names.push(self.existing_filter(st)?);
                if !st.eat_sym(',') {
                    break;
                }
            }
            st.expect_sym('}')?;
            Ok(FilterRef::Chain(names))
        } else {
            Ok(FilterRef::Name(self.existing_filter(st)?))
        }
    }

    fn existing_filter(&mut self, st: &mut Stmt<'_>) -> P<String> {
        let name = st.value("a filter name")?;
        if self.cfg.filter(&name).is_none() {
            st.pos -= 1;
            return st.err(format!("no filter exist with that name: {name}"));
        }
        Ok(name)
    }

    fn listen(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        st.expect_kw("on")?;
        let on = if st.eat_kw("socket") {
            ListenOn::Socket
        } else {
            let w = st.value("an address or interface")?;
            match crate::table::parse_ip_text(&w) {
                Some(ip) => ListenOn::Addr(ip),
                None => {
                    if !self.fs.listen_name_exists(&w) {
                        st.pos -= 1;
                        return st.err(format!("invalid virtual ip or interface: {w}"));
                    }
                    ListenOn::Name(w)
                }
            }
        };
        let socket = on == ListenOn::Socket;
        let mut l = Listener::new(on, span);
        let mut tls_set = false;
        while let Some((kw, quoted)) = st.peek_word() {
            if quoted {
                return st.err(format!("syntax error: unexpected \"{kw}\""));
            }
            if UNIMPLEMENTED.contains(&kw) {
                return st.err(format!("`{kw}` is not implemented by fugu yet"));
            }
            if socket && !matches!(kw, "filter" | "mask-src" | "no-dsn" | "tag") {
                return st.err(format!("`{kw}` is not valid for listen on socket"));
            }
            st.pos += 1;
            match kw {
                "inet4" => l.family = Some(Family::Inet4),
                "inet6" => l.family = Some(Family::Inet6),
                "port" => {
                    let p = st.value("a port")?;
                    l.port = Some(match p.parse::<u16>() {
                        Ok(n) if n > 0 => n,
                        _ => match service_port(&p) {
                            Some(n) => n,
                            None => {
                                st.pos -= 1;
                                return st.err(format!("invalid port: {p}"));
                            }
                        },
                    });
                }
                "tls" | "tls-require" | "smtps" => {
                    if tls_set {
                        st.pos -= 1;
                        return st.err(
                            "tls, tls-require and smtps are mutually exclusive and may appear once",
                        );
                    }
                    tls_set = true;
                    l.tls = match kw {
                        "tls" => ListenTls::Starttls,
                        "tls-require" => ListenTls::Require {
                            verify: st.eat_kw("verify"),
                        },
                        _ => ListenTls::Smtps {
                            verify: st.eat_kw("verify"),
                        },
                    };
                }
                "pki" => {
                    // One pki per listener in 6.8; SNI (several) came with 7.x.
                    if !l.pki.is_empty() {
                        st.pos -= 1;
                        return st.err("pki already specified");
                    }
                    let name = Self::pki_name(st)?;
                    if !self.cfg.pki.contains_key(&name) {
                        st.pos -= 1;
                        return st.err(format!("pki name not found: {name}"));
                    }
                    l.pki.push(name);
                }
                "ca" => {
                    let name = Self::pki_name(st)?;
                    if !self.cfg.ca.contains_key(&name) {
                        st.pos -= 1;
                        return st.err(format!("ca name not found: {name}"));
                    }
                    l.ca = Some(name);
                }
                "auth" | "auth-optional" => {
                    if l.auth.is_some() {
                        st.pos -= 1;
                        return st.err("auth already specified for this listener");
                    }
                    let t = if st.is_sym('<') || st.is_sym('{') {
                        Some(self.tblref(st)?)
                    } else {
                        None
                    };
                    l.auth = Some(if kw == "auth" {
                        ListenAuth::Required(t)
                    } else {
                        ListenAuth::Optional(t)
                    });
                }
                "tag" => l.tag = Some(st.value("a tag")?),
                "hostname" => l.hostname = Some(st.value("a hostname")?),
                "hostnames" => l.hostnames = Some(self.tblref(st)?),
                "senders" => {
                    l.senders = Some(self.tblref(st)?);
                    l.masquerade = st.eat_kw("masquerade");
                }
                "mask-src" => l.mask_src = true,
                "received-auth" => l.received_auth = true,
                "no-dsn" => l.no_dsn = true,
                "no-authres" => l.no_authres = true,
                "ciphers" => {
                    l.ciphers = Some(tls_list(st, "a cipher list", ciphers::parse_ciphers)?)
                }
                "protocols" => {
                    l.protocols = Some(tls_list(st, "a protocol list", ciphers::parse_protocols)?);
                }
                "filter" => l.filter = Some(self.filter_ref(st)?),
                other => {
                    st.pos -= 1;
                    return st.err(format!("syntax error: unknown listen option `{other}`"));
                }
            }
        }
        st.end()?;
        let tls = l.tls != ListenTls::Plain;
        if !l.pki.is_empty() && !tls {
            return st.err("invalid listen option: pki requires tls/smtps");
        }
        if tls && l.pki.is_empty() {
            let implicit = l
                .hostname
                .as_deref()
                .is_some_and(|h| self.cfg.pki.contains_key(&h.to_ascii_lowercase()));
            if !implicit {
                return st.err("invalid listen option: tls/smtps requires a pki (add `pki NAME`)");
            }
        }
        if l.ca.is_some()
            && !matches!(
                l.tls,
                ListenTls::Require { verify: true } | ListenTls::Smtps { verify: true }
            )
        {
            return st.err("invalid listen option: ca requires tls-require verify or smtps verify");
        }
        if l.senders.is_some() && l.auth.is_none() {
            return st.err("invalid listen option: senders requires auth or auth-optional");
        }
        self.cfg.listeners.push(l);
        Ok(())
    }

    fn action(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = st.value("an action name")?;
        if self.cfg.action(&name).is_some() {
            st.pos -= 1;
            return st.err(format!(
                "dispatcher already declared with that name: {name}"
            ));
        }
        let Some((method, false)) = st.peek_word() else {
            return st.err(format!(
                "syntax error: expected a delivery method or relay, found {}",
                st.describe()
            ));
        };
        st.pos += 1;
        let dispatch = match method {
            "mbox" => Dispatch::Local(LocalMethod::Mbox),
            "maildir" => {
                let path = if st.has_value() {
                    let p = st.value("a maildir path")?;
                    check_format(st, &p, false)?;
                    Some(p)
                } else {
                    None
                };
                Dispatch::Local(LocalMethod::Maildir {
                    path,
                    junk: st.eat_kw("junk"),
                })
            }
            "lmtp" => {
                let dest = st.value("an lmtp destination")?;
                Dispatch::Local(LocalMethod::Lmtp {
                    dest,
                    rcpt_to: st.eat_kw("rcpt-to"),
                })
            }
            "mda" => {
                let cmd = st.value("an mda command")?;
                check_format(st, &cmd, false)?;
                Dispatch::Local(LocalMethod::Mda(cmd))
            }
            "forward-only" => Dispatch::Local(LocalMethod::ForwardOnly),
            "expand-only" => Dispatch::Local(LocalMethod::ExpandOnly),
            "relay" => Dispatch::Relay(Box::default()),
            other => {
                st.pos -= 1;
                return st.err(format!("syntax error: unknown delivery method `{other}`"));
            }
        };
        let mut a = Action {
            name,
            dispatch,
            alias: None,
            virtual_: None,
            userbase: None,
            user: None,
            wrapper: None,
            ttl: None,
            dkim_sign: None,
            span,
        };
        while let Some((kw, quoted)) = st.peek_word() {
            if quoted {
                return st.err(format!("syntax error: unexpected \"{kw}\""));
            }
            if UNIMPLEMENTED.contains(&kw) {
                return st.err(format!("`{kw}` is not implemented by fugu yet"));
            }
            if matches!(kw, "ciphers" | "protocols") {
                return st.err(format!(
                    "`{kw}` on a relay action is not implemented by fugu yet (listeners have it)"
                ));
            }
            st.pos += 1;
            let is_relay = matches!(a.dispatch, Dispatch::Relay(_));
            match (kw, &mut a.dispatch) {
                ("ttl", _) => a.ttl = Some(delay(st)?),
                ("dkim-sign", _) => a.dkim_sign = Some(self.tblref(st)?),
                ("alias" | "virtual" | "userbase" | "user" | "wrapper", _) if is_relay => {
                    st.pos -= 1;
                    return st.err(format!(
                        "`{kw}` is a local delivery option, not valid with relay"
                    ));
                }
                ("alias", _) => {
                    if a.virtual_.is_some() {
                        st.pos -= 1;
                        return st.err("alias and virtual are mutually exclusive");
                    }
                    a.alias = Some(self.tblref(st)?);
                }
                ("virtual", _) => {
                    if a.alias.is_some() {
                        st.pos -= 1;
                        return st.err("alias and virtual are mutually exclusive");
                    }
                    a.virtual_ = Some(self.tblref(st)?);
                }
                ("userbase", _) => a.userbase = Some(self.tblref(st)?),
                ("user", d) => {
                    if matches!(
                        d,
                        Dispatch::Local(
                            LocalMethod::Mbox | LocalMethod::ForwardOnly | LocalMethod::ExpandOnly
                        )
                    ) {
                        st.pos -= 1;
                        return st.err("user may not be specified for this dispatcher");
                    }
                    a.user = Some(st.value("a user name")?);
                }
                ("wrapper", _) => {
                    let w = st.value("a wrapper name")?;
                    if !self.cfg.mda_wrappers.contains_key(&w) {
                        st.pos -= 1;
                        return st.err(format!("no mda wrapper with that name: {w}"));
                    }
                    a.wrapper = Some(w);
                }
                (_, Dispatch::Relay(r)) => self.relay_option(st, kw, r)?,
                (other, _) => {
                    st.pos -= 1;
                    return st.err(format!("syntax error: unknown action option `{other}`"));
                }
            }
        }
        st.end()?;
        if let Dispatch::Relay(r) = &a.dispatch {
            if r.backup.is_some() && r.host.is_some() {
                return st.err("backup and host are mutually exclusive");
            }
            if r.backup.is_some() && r.domain.is_some() {
                return st.err("backup and domain are mutually exclusive");
            }
            if r.host.is_some() && r.domain.is_some() {
                return st.err("host and domain are mutually exclusive");
            }
            if r.auth.is_some() && r.host.is_none() {
                return st.err("auth may not be specified without host on a dispatcher");
            }
        }
        self.cfg.actions.push(a);
        Ok(())
    }

    fn relay_option(&mut self, st: &mut Stmt<'_>, kw: &str, r: &mut Relay) -> P<()> {
        match kw {
            "host" => {
                r.host = Some(if st.is_sym('<') || st.is_sym('{') {
                    RelayHost::Table(self.tblref(st)?)
                } else {
                    let u = st.value("a relay URL")?;
                    match parse_relay_url(&u) {
                        Ok(url) => RelayHost::Url(url),
                        Err(e) => {
                            st.pos -= 1;
                            return st.err(e);
                        }
                    }
                })
            }
            "domain" => r.domain = Some(self.tblref(st)?),
            "backup" => {
                r.backup = Some(if st.eat_kw("mx") {
                    Some(st.value("an MX name")?)
                } else {
                    None
                })
            }
            "helo" => r.helo = Some(st.value("a helo name")?),
            "helo-src" => r.helo_src = Some(self.tblref(st)?),
            "src" => r.src = Some(self.tblref(st)?),
            "tls" => r.tls = Some(!st.eat_kw("no-verify")),
            "auth" => r.auth = Some(self.tblref(st)?),
            "pki" => {
                let name = Self::pki_name(st)?;
                if !self.cfg.pki.contains_key(&name) {
                    st.pos -= 1;
                    return st.err(format!("pki name not found: {name}"));
                }
                r.pki = Some(name);
            }
            "ca" => {
                let name = Self::pki_name(st)?;
                if !self.cfg.ca.contains_key(&name) {
                    st.pos -= 1;
                    return st.err(format!("ca name not found: {name}"));
                }
                r.ca = Some(name);
            }
            "mail-from" => {
                let v = st.value("a sender address")?;
                if !v.contains('@') {
                    st.pos -= 1;
                    return st.err(format!("invalid mail-from address: {v}"));
                }
                r.mail_from = Some(v);
            }
            "filter" => {
                st.pos -= 1;
                return st.err("`filter` on a relay action is not implemented by fugu yet");
            }
            other => {
                st.pos -= 1;
                return st.err(format!("syntax error: unknown relay option `{other}`"));
            }
        }
        Ok(())
    }

    fn rule(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let mut conditions: Vec<Condition> = Vec::new();
        let decision = loop {
            if st.eat_kw("action") {
                let name = st.value("an action name")?;
                if self.cfg.action(&name).is_none() {
                    st.pos -= 1;
                    return st.err(format!("no such dispatcher: {name}"));
                }
                break RuleDecision::Action(name);
            }
            if st.eat_kw("reject") {
                break RuleDecision::Reject;
            }
            if st.peek().is_none() {
                return st
                    .err("syntax error: a match rule must end with `action NAME` or `reject`");
            }
            let negated = st.eat_sym('!');
            let at = st.pos;
            let criterion = self.criterion(st)?;
            let clash = conditions.iter().any(|c| {
                (c.criterion.is_from() && criterion.is_from())
                    || (c.criterion.is_for() && criterion.is_for())
                    || std::mem::discriminant(&c.criterion) == std::mem::discriminant(&criterion)
            });
            if clash {
                st.pos = at;
                return st.err(format!("{} specified twice in this rule", st.describe()));
            }
            conditions.push(Condition { negated, criterion });
        };
        st.end()?;
        if !conditions.iter().any(|c| c.criterion.is_from()) {
            conditions.insert(
                0,
                Condition {
                    negated: false,
                    criterion: Criterion::FromLocal,
                },
            );
        }
        if !conditions.iter().any(|c| c.criterion.is_for()) {
            let at = conditions
                .iter()
                .position(|c| c.criterion.is_from())
                .map_or(0, |i| i + 1);
            conditions.insert(
                at,
                Condition {
                    negated: false,
                    criterion: Criterion::ForLocal,
                },
            );
        }
        self.cfg.rules.push(Rule {
            conditions,
            decision,
            span,
        });
        Ok(())
    }

    fn criterion(&mut self, st: &mut Stmt<'_>) -> P<Criterion> {
        let Some((kw, false)) = st.peek_word() else {
            return st.err(format!(
                "syntax error: expected a match criterion, found {}",
                st.describe()
            ));
        };
        st.pos += 1;
        Ok(match kw {
            "tag" => Criterion::Tag(self.crit(st)?),
            "from" => {
                let Some((sub, false)) = st.peek_word() else {
                    return st.err(format!("syntax error: expected any, local, socket, src, rdns, auth or mail-from after from, found {}", st.describe()));
                };
                st.pos += 1;
                match sub {
                    "any" => Criterion::FromAny,
                    "local" => Criterion::FromLocal,
                    "socket" => Criterion::FromSocket,
                    "src" => Criterion::FromSrc(self.crit(st)?),
                    "rdns" => Criterion::FromRdns(self.opt_crit(st)?),
                    "auth" => Criterion::FromAuth(self.opt_crit(st)?),
                    "mail-from" => Criterion::FromMailFrom(self.crit(st)?),
                    other => {
                        st.pos -= 1;
                        return st.err(format!("syntax error: unknown from criterion `{other}`"));
                    }
                }
            }
            "for" => {
                let Some((sub, false)) = st.peek_word() else {
                    return st.err(format!(
                        "syntax error: expected any, local, domain or rcpt-to after for, found {}",
                        st.describe()
                    ));
                };
                st.pos += 1;
                match sub {
                    "any" => Criterion::ForAny,
                    "local" => Criterion::ForLocal,
                    "domain" => Criterion::ForDomain(self.crit(st)?),
                    "rcpt-to" => Criterion::ForRcptTo(self.crit(st)?),
                    other => {
                        st.pos -= 1;
                        return st.err(format!("syntax error: unknown for criterion `{other}`"));
                    }
                }
            }
            "helo" => Criterion::Helo(self.crit(st)?),
            "auth" => Criterion::Auth(self.opt_crit(st)?),
            "mail-from" => Criterion::MailFrom(self.crit(st)?),
            "rcpt-to" => Criterion::RcptTo(self.crit(st)?),
            "tls" => Criterion::Tls,
            other => {
                st.pos -= 1;
                return st.err(format!("syntax error: unknown match criterion `{other}`"));
            }
        })
    }

    fn filter(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = st.value("a filter name")?;
        if self.cfg.filter(&name).is_some() {
            st.pos -= 1;
            return st.err(format!("filter already exists with that name: {name}"));
        }
        let kind = if st.eat_kw("phase") {
            self.builtin_filter(st)?
        } else if st.eat_kw("proc") {
            let p = st.value("a proc name")?;
            if !self.cfg.procs.iter().any(|x| x.name == p) {
                st.pos -= 1;
                return st.err(format!("no processor exist with that name: {p}"));
            }
            FilterKind::Proc(p)
        } else if st.eat_kw("proc-exec") {
            let command = st.value("a command")?;
            let (user, group) = proc_opts(st)?;
            FilterKind::ProcExec {
                command,
                user,
                group,
            }
        } else if st.eat_kw("chain") {
            match self.filter_ref(st)? {
                FilterRef::Chain(v) => FilterKind::Chain(v),
                FilterRef::Name(n) => FilterKind::Chain(vec![n]),
            }
        } else {
            return st.err(format!(
                "syntax error: expected phase, proc, proc-exec or chain, found {}",
                st.describe()
            ));
        };
        st.end()?;
        self.cfg.filters.push(Filter { name, kind, span });
        Ok(())
    }

    fn builtin_filter(&mut self, st: &mut Stmt<'_>) -> P<FilterKind> {
        // Phase names are keywords (helo, mail-from, …): read the word as is.
        let p = match st.peek_word() {
            Some((w, _)) => w.to_owned(),
            None => return st.err("syntax error: expected a phase"),
        };
        st.pos += 1;
        let phase = match p.as_str() {
            "connect" => Phase::Connect,
            "helo" => Phase::Helo,
            "ehlo" => Phase::Ehlo,
            "mail-from" => Phase::MailFrom,
            "rcpt-to" => Phase::RcptTo,
            "data" => Phase::Data,
            "commit" => Phase::Commit,
            other => {
                st.pos -= 1;
                return st.err(format!("invalid filter phase: {other}"));
            }
        };
        st.expect_kw("match")?;
        let mut conditions = Vec::new();
        let decision = loop {
            let kw = match st.peek_word() {
                Some((w, false)) => w,
                // `!cond`: the condition parser takes the `!`.
                _ => "",
            };
            let decision = match kw {
                "bypass" => Some(FilterDecision::Bypass),
                "junk" => Some(FilterDecision::Junk),
                _ => None,
            };
            if let Some(d) = decision {
                st.pos += 1;
                break d;
            }
            if matches!(kw, "reject" | "disconnect" | "rewrite" | "report") {
                st.pos += 1;
                let v = st.value("a response")?;
                if matches!(kw, "reject" | "disconnect")
                    && !(v.starts_with('4') || v.starts_with('5'))
                {
                    st.pos -= 1;
                    return st.err(format!(
                        "{kw} response must start with a 4xx or 5xx code: {v}"
                    ));
                }
                break match kw {
                    "reject" => FilterDecision::Reject(v),
                    "disconnect" => FilterDecision::Disconnect(v),
                    "rewrite" => FilterDecision::Rewrite(v),
                    _ => FilterDecision::Report(v),
                };
            }
            conditions.push(self.filter_condition(st, phase)?);
        };
        if conditions.is_empty() {
            return st.err("a phase filter needs at least one match condition");
        }
        if phase == Phase::Commit && decision == FilterDecision::Junk {
            return st.err("junk is not allowed at the commit phase");
        }
        Ok(FilterKind::Builtin {
            phase,
            conditions,
            decision,
        })
    }

    fn filter_condition(&mut self, st: &mut Stmt<'_>, phase: Phase) -> P<FilterCondition> {
        let negated = st.eat_sym('!');
        let Some((kw, false)) = st.peek_word() else {
            return st.err(format!(
                "syntax error: expected a filter condition, found {}",
                st.describe()
            ));
        };
        let allowed: &[&str] = match phase {
            Phase::Connect => &["fcrdns", "rdns", "src"],
            Phase::Helo | Phase::Ehlo => &["fcrdns", "rdns", "src", "helo"],
            Phase::MailFrom | Phase::Data | Phase::Commit => {
                &["fcrdns", "rdns", "src", "helo", "auth", "mail-from"]
            }
            Phase::RcptTo => &[
                "fcrdns",
                "rdns",
                "src",
                "helo",
                "auth",
                "mail-from",
                "rcpt-to",
            ],
        };
        if !allowed.contains(&kw) {
            return st.err(format!(
                "filter condition `{kw}` is not valid at phase {}",
                phase.name()
            ));
        }
        st.pos += 1;
        let criterion = match kw {
            "fcrdns" => FilterCriterion::Fcrdns,
            "rdns" => FilterCriterion::Rdns(self.opt_crit_filter(st)?),
            "src" => FilterCriterion::Src(self.crit(st)?),
            "helo" => FilterCriterion::Helo(self.crit(st)?),
            "auth" => FilterCriterion::Auth(self.opt_crit_filter(st)?),
            "mail-from" => FilterCriterion::MailFrom(self.crit(st)?),
            _ => FilterCriterion::RcptTo(self.crit(st)?),
        };
        Ok(FilterCondition { negated, criterion })
    }

    /// Like `opt_crit`, but a following decision keyword is not a table.
    fn opt_crit_filter(&mut self, st: &mut Stmt<'_>) -> P<Option<TableCrit>> {
        self.opt_crit(st)
    }

    fn proc(&mut self, st: &mut Stmt<'_>, span: Span) -> P<()> {
        let name = st.value("a proc name")?;
        if self.cfg.procs.iter().any(|p| p.name == name) {
            st.pos -= 1;
            return st.err(format!("processor already exists with that name: {name}"));
        }
        let command = st.value("a command")?;
        let (user, group) = proc_opts(st)?;
        st.end()?;
        self.cfg.procs.push(Proc {
            name,
            command,
            user,
            group,
            span,
        });
        Ok(())
    }

    fn queue(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("compression") {
            self.cfg.queue.compression = true;
        } else if st.eat_kw("encryption") {
            let key = if st.has_value() {
                Some(st.value("a key")?)
            } else {
                None
            };
            let key = key.filter(|k| k != "stdin" && k != "-");
            // crypto_setup takes the key as 32 raw characters.
            if let Some(k) = &key
                && k.len() != 32
            {
                st.pos -= 1;
                return st.err("invalid key for queue encryption: it must be 32 characters");
            }
            self.cfg.queue.encryption = Some(key);
        } else if st.eat_kw("ttl") {
            self.cfg.queue.ttl = Some(delay(st)?);
        } else {
            return st.err(format!(
                "syntax error: expected compression, encryption or ttl, found {}",
                st.describe()
            ));
        }
        st.end()
    }

    fn smtp(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("max-message-size") {
            let v = st.value("a size")?;
            match parse_size(&v) {
                Some(n) => self.cfg.smtp.max_message_size = Some(n),
                None => {
                    st.pos -= 1;
                    return st.err(format!("invalid size: {v}"));
                }
            }
        } else if st.eat_kw("sub-addr-delim") {
            let v = st.value("a delimiter character")?;
            let mut cs = v.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if c.is_ascii_graphic() && c != '@' => {
                    self.cfg.smtp.sub_addr_delim = Some(c)
                }
                _ => {
                    st.pos -= 1;
                    return st.err(format!("sub-addr-delim must be one character: {v}"));
                }
            }
        } else if st.eat_kw("ciphers") {
            self.cfg.smtp.ciphers = Some(tls_list(st, "a cipher list", ciphers::parse_ciphers)?);
        } else if st.eat_kw("limit") {
            let mut any = false;
            while let Some((k, false)) = st.peek_word() {
                st.pos += 1;
                match k {
                    "max-mails" => self.cfg.smtp.max_mails = Some(st.number("a number")?),
                    "max-rcpt" => self.cfg.smtp.max_rcpt = Some(st.number("a number")?),
                    // fugu extensions (OpenSMTPD has no such limits).
                    "max-sessions" => {
                        self.cfg.smtp.max_sessions = Some(positive(st)?);
                    }
                    "max-sessions-per-ip" => {
                        self.cfg.smtp.max_sessions_per_ip = Some(positive(st)?);
                    }
                    "max-conn-rate" => {
                        self.cfg.smtp.max_conn_rate = Some(st.number("a number")?);
                    }
                    "max-header-size" => {
                        self.cfg.smtp.max_header_size = Some(size(st)?);
                    }
                    "max-header-field" => {
                        self.cfg.smtp.max_header_field = Some(size(st)?);
                    }
                    other => {
                        st.pos -= 1;
                        return st.err(format!("invalid smtp limit keyword: {other}"));
                    }
                }
                any = true;
            }
            if !any {
                return st.err(format!(
                    "syntax error: expected one of {}",
                    SMTP_LIMITS.join(", ")
                ));
            }
        } else {
            return st.err(format!(
                "syntax error: expected max-message-size, sub-addr-delim, ciphers or limit, found {}",
                st.describe()
            ));
        }
        st.end()
    }

    fn mta(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("max-deferred") {
            self.cfg.mta.max_deferred = Some(st.number("a number")?);
        } else if st.eat_kw("limit") {
            let domain = if st.eat_kw("for") {
                st.expect_kw("domain")?;
                Some(st.value("a domain")?.to_ascii_lowercase())
            } else {
                None
            };
            let mut any = false;
            while let Some((k, _)) = st.peek_word() {
                let k = k.to_owned();
                st.pos += 1;
                if k == "inet4" || k == "inet6" {
                    self.cfg.mta.limits.push((domain.clone(), k, 1));
                    any = true;
                    continue;
                }
                if !MTA_LIMITS.contains(&k.as_str()) {
                    st.pos -= 1;
                    return st.err(format!("invalid mta limit keyword: {k}"));
                }
                let n = st.number("a number")?;
                self.cfg.mta.limits.push((domain.clone(), k, n));
                any = true;
            }
            if !any {
                return st.err("syntax error: expected a limit keyword");
            }
        } else {
            return st.err(format!(
                "syntax error: expected max-deferred or limit, found {}",
                st.describe()
            ));
        }
        st.end()
    }

    fn mda(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("wrapper") {
            let name = st.value("a wrapper name")?;
            let cmd = st.value("a wrapper command")?;
            check_format(st, &cmd, true)?;
            st.end()?;
            if self.cfg.mda_wrappers.insert(name.clone(), cmd).is_some() {
                return st.err(format!(
                    "mda wrapper already declared with that name: {name}"
                ));
            }
            return Ok(());
        }
        st.expect_kw("limit")?;
        let mut any = false;
        while let Some((k, _)) = st.peek_word() {
            let k = k.to_owned();
            if !MDA_LIMITS.contains(&k.as_str()) {
                return st.err(format!("invalid mda limit keyword: {k}"));
            }
            st.pos += 1;
            let n = st.number("a number")?;
            self.cfg.mda_limits.push((k, n));
            any = true;
        }
        if !any {
            return st.err("syntax error: expected a limit keyword");
        }
        st.end()
    }

    fn bounce(&mut self, st: &mut Stmt<'_>) -> P<()> {
        st.expect_kw("warn-interval")?;
        let mut v = vec![delay(st)?];
        while st.eat_sym(',') {
            v.push(delay(st)?);
        }
        st.end()?;
        if v.len() > 4 {
            return st.err("at most 4 bounce warn-interval delays");
        }
        self.cfg.bounce_warn_interval = v;
        Ok(())
    }
}

fn proc_opts(st: &mut Stmt<'_>) -> P<(Option<String>, Option<String>)> {
    let (mut user, mut group) = (None, None);
    loop {
        if st.eat_kw("user") {
            user = Some(st.value("a user")?);
        } else if st.eat_kw("group") {
            group = Some(st.value("a group")?);
        } else if st.is_kw("chroot") {
            return st.err("`chroot` is not implemented by fugu yet");
        } else {
            return Ok((user, group));
        }
    }
}

fn check_format(st: &mut Stmt<'_>, s: &str, allow_mda: bool) -> P<()> {
    parse_format(s, allow_mda).map(|_| ()).map_err(|e| {
        st.pos -= 1;
        let err = st.err_at(e);
        st.pos += 1;
        err
    })
}

fn check_regexes(st: &Stmt<'_>, t: &TableRef) -> P<()> {
    let TableRef::Inline(tab) = t else {
        return Ok(());
    };
    let entries: Vec<&str> = match tab {
        StaticTable::List(v) => v.iter().map(String::as_str).collect(),
        StaticTable::Map(v) => v.iter().map(|(k, _)| k.as_str()).collect(),
    };
    for e in entries {
        if let Err(err) = regex::Regex::new(e) {
            return st.err(format!("invalid regex {e}: {err}"));
        }
    }
    Ok(())
}

/// A `ciphers` or `protocols` value, checked by `parse` (see [`ciphers`]).
fn tls_list<T>(
    st: &mut Stmt<'_>,
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> P<String> {
    let v = st.value(what)?;
    match parse(&v) {
        Ok(_) => Ok(v),
        Err(e) => {
            st.pos -= 1;
            st.err(e)
        }
    }
}

/// A count that must be at least 1 (a limit of 0 sessions would refuse everyone).
fn positive(st: &mut Stmt<'_>) -> P<u64> {
    match st.number("a number")? {
        0 => {
            st.pos -= 1;
            st.err("invalid number: 0: expected at least 1")
        }
        n => Ok(n),
    }
}

/// A size such as `100K` or `1M` (see [`parse_size`]).
fn size(st: &mut Stmt<'_>) -> P<u64> {
    let v = st.value("a size")?;
    match parse_size(&v) {
        Some(n) if n > 0 => Ok(n),
        _ => {
            st.pos -= 1;
            st.err(format!("invalid size: {v}"))
        }
    }
}

/// `NUM[s|m|h|d]` (parse.y `delaytonum`); a bare number is seconds.
fn delay(st: &mut Stmt<'_>) -> P<Duration> {
    let v = st.value("a delay")?;
    let (num, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v.as_str(), 's'),
    };
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => 0,
    };
    // parse.y keeps delays within an int: `queue ttl 999999999999999999d` is an error, not
    // an overflow here or a time beyond what SystemTime can add later.
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(secs) if mult > 0 && secs <= i32::MAX as u64 => Ok(Duration::from_secs(secs)),
        _ => {
            st.pos -= 1;
            st.err(format!(
                "invalid delay: {v}: expected a number with s, m, h or d"
            ))
        }
    }
}

/// Bytes or `scan_scaled` sizes: `35M`, `512K`, `1G`.
pub fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()?.to_ascii_uppercase() {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'B' => (&v[..v.len() - 1], 1),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "smtp" => 25,
        "smtps" | "submissions" => 465,
        "submission" => 587,
        "lmtp" => 24,
        _ => return None,
    })
}

/// `[proto://[label@]]host[:port]` (to.c `text_to_relayhost`).
pub fn parse_relay_url(s: &str) -> Result<RelayUrl, String> {
    let (proto, rest) = match s.split_once("://") {
        Some((p, r)) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "smtp" => RelayProto::Smtp,
                "smtp+tls" => RelayProto::SmtpTls,
                "smtp+notls" => RelayProto::SmtpNotls,
                "smtps" => RelayProto::Smtps,
                "lmtp" => RelayProto::Lmtp,
                other => return Err(format!("invalid relay URL scheme {other}:// in {s}")),
            };
            (proto, r)
        }
        None => (RelayProto::Smtp, s),
    };
    let (label, hostport) = match rest.split_once('@') {
        Some((l, h)) if !l.is_empty() => (Some(l.to_owned()), h),
        Some(_) => return Err(format!("empty label in relay URL {s}")),
        None => (None, rest),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid relay URL {s}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port in relay URL {s}"))?,
            ),
            None if after.is_empty() => None,
            None => return Err(format!("invalid relay URL {s}")),
        };
        (format!("[{h}]"), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("invalid port in relay URL {s}"))?,
                ),
            ),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("invalid relay host in {s}"));
    }
    if proto == RelayProto::Lmtp && port.is_none() {
        return Err(format!("lmtp:// relay needs a port: {s}"));
    }
    Ok(RelayUrl {
        proto,
        label,
        host: host.to_ascii_lowercase(),
        port,
    })
}
