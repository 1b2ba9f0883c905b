//! The typed, validated configuration that the listener, rule matcher and queue consume.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::table::StaticTable;

/// Where a directive came from. Spans take no part in equality: a configuration means
/// the same wherever its lines are (the dump round-trip relies on this).
#[derive(Debug, Clone, Default)]
pub struct Span {
    pub file: Arc<PathBuf>,
    pub line: usize,
}

impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}
impl Eq for Span {}

/// A table reference: `<name>` (declared or builtin) or an inline `{ … }` / single string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRef {
    Named(String),
    Inline(StaticTable),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSource {
    /// `file:/path` (or a bare path): OpenSMTPD's static file format.
    File(PathBuf),
    /// `sqlite:/path/to/sqlite.conf`: table-sqlite's config file.
    Sqlite(PathBuf),
    /// `table t { … }`.
    Inline(StaticTable),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDecl {
    pub name: String,
    pub source: TableSource,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pki {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub dhe: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert: PathBuf,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOn {
    /// `listen on socket`: options for the local enqueuer.
    Socket,
    Addr(IpAddr),
    /// An interface name or a host name.
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet4,
    Inet6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenTls {
    #[default]
    Plain,
    /// `tls`: STARTTLS offered.
    Starttls,
    /// `tls-require [verify]`.
    Require { verify: bool },
    /// `smtps [verify]`.
    Smtps { verify: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAuth {
    /// `auth [<t>]`: MAIL needs AUTH first; no table means system accounts.
    Required(Option<TableRef>),
    /// `auth-optional [<t>]`.
    Optional(Option<TableRef>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterRef {
    Name(String),
    Chain(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub on: ListenOn,
    pub family: Option<Family>,
    pub port: Option<u16>,
    pub tls: ListenTls,
    pub pki: Vec<String>,
    pub ca: Option<String>,
    pub auth: Option<ListenAuth>,
    pub tag: Option<String>,
    pub hostname: Option<String>,
    pub hostnames: Option<TableRef>,
    pub senders: Option<TableRef>,
    pub masquerade: bool,
    pub mask_src: bool,
    pub received_auth: bool,
    pub no_dsn: bool,
    pub filter: Option<FilterRef>,
    /// fugu extension `no-authres`: no authentication results for this listener's
    /// sessions (a loopback listener content filters hand mail back to).
    pub no_authres: bool,
    /// `ciphers S` (libtls syntax, see [`crate::server::ciphers`]); else `smtp ciphers`.
    pub ciphers: Option<String>,
    /// `protocols S` (libtls syntax).
    pub protocols: Option<String>,
    pub span: Span,
}

impl Listener {
    pub fn new(on: ListenOn, span: Span) -> Listener {
        Listener {
            on,
            family: None,
            port: None,
            tls: ListenTls::Plain,
            pki: Vec::new(),
            ca: None,
            auth: None,
            tag: None,
            hostname: None,
            hostnames: None,
            senders: None,
            masquerade: false,
            mask_src: false,
            received_auth: false,
            no_dsn: false,
            filter: None,
            no_authres: false,
            ciphers: None,
            protocols: None,
            span,
        }
    }

    /// The port to bind: `port`, else 465 for `smtps`, else 25.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            ListenTls::Smtps { .. } => 465,
            _ => 25,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalMethod {
    Mbox,
    Maildir { path: Option<String>, junk: bool },
    Lmtp { dest: String, rcpt_to: bool },
    Mda(String),
    ForwardOnly,
    ExpandOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayProto {
    /// `smtp://`: opportunistic STARTTLS.
    Smtp,
    /// `smtp+tls://`: STARTTLS required.
    SmtpTls,
    /// `smtp+notls://`.
    SmtpNotls,
    /// `smtps://`.
    Smtps,
    /// `lmtp://` (port required).
    Lmtp,
}

impl RelayProto {
    pub fn scheme(self) -> &'static str {
        match self {
            RelayProto::Smtp => "smtp",
            RelayProto::SmtpTls => "smtp+tls",
            RelayProto::SmtpNotls => "smtp+notls",
            RelayProto::Smtps => "smtps",
            RelayProto::Lmtp => "lmtp",
        }
    }
}

/// `[proto://[label@]]host[:port]` (to.c `text_to_relayhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub proto: RelayProto,
    pub label: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayHost {
    Url(RelayUrl),
    Table(TableRef),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relay {
    pub host: Option<RelayHost>,
    pub domain: Option<TableRef>,
    /// `backup [mx NAME]`.
    pub backup: Option<Option<String>>,
    pub helo: Option<String>,
    pub helo_src: Option<TableRef>,
    pub src: Option<TableRef>,
    /// `tls [no-verify]`: Some(verify).
    pub tls: Option<bool>,
    pub auth: Option<TableRef>,
    pub pki: Option<String>,
    pub ca: Option<String>,
    pub mail_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    Local(LocalMethod),
    Relay(Box<Relay>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub name: String,
    pub dispatch: Dispatch,
    pub alias: Option<TableRef>,
    pub virtual_: Option<TableRef>,
    pub userbase: Option<TableRef>,
    pub user: Option<String>,
    pub wrapper: Option<String>,
    pub ttl: Option<Duration>,
    /// fugu extension: `dkim-sign <keys>`, a table `domain` → `selector:algorithm:path[,…]`.
    pub dkim_sign: Option<TableRef>,
    pub span: Span,
}

/// A table criterion with its `regex` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCrit {
    pub regex: bool,
    pub table: TableRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    Tag(TableCrit),
    FromAny,
    FromLocal,
    FromSocket,
    FromSrc(TableCrit),
    FromRdns(Option<TableCrit>),
    FromAuth(Option<TableCrit>),
    FromMailFrom(TableCrit),
    ForAny,
    ForLocal,
    ForDomain(TableCrit),
    ForRcptTo(TableCrit),
    Helo(TableCrit),
    Auth(Option<TableCrit>),
    MailFrom(TableCrit),
    RcptTo(TableCrit),
    Tls,
}

impl Criterion {
    pub fn is_from(&self) -> bool {
        matches!(
            self,
            Criterion::FromAny
                | Criterion::FromLocal
                | Criterion::FromSocket
                | Criterion::FromSrc(_)
                | Criterion::FromRdns(_)
                | Criterion::FromAuth(_)
                | Criterion::FromMailFrom(_)
        )
    }

    pub fn is_for(&self) -> bool {
        matches!(
            self,
            Criterion::ForAny
                | Criterion::ForLocal
                | Criterion::ForDomain(_)
                | Criterion::ForRcptTo(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub negated: bool,
    pub criterion: Criterion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleDecision {
    Action(String),
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Always holds one `from` and one `for` criterion (parse.y's defaults made explicit).
    pub conditions: Vec<Condition>,
    pub decision: RuleDecision,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Helo,
    Ehlo,
    MailFrom,
    RcptTo,
    Data,
    Commit,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Helo => "helo",
            Phase::Ehlo => "ehlo",
            Phase::MailFrom => "mail-from",
            Phase::RcptTo => "rcpt-to",
            Phase::Data => "data",
            Phase::Commit => "commit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterCriterion {
    Fcrdns,
    Rdns(Option<TableCrit>),
    Src(TableCrit),
    Helo(TableCrit),
    Auth(Option<TableCrit>),
    MailFrom(TableCrit),
    RcptTo(TableCrit),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterCondition {
    pub negated: bool,
    pub criterion: FilterCriterion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    Bypass,
    Junk,
    Reject(String),
    Disconnect(String),
    Rewrite(String),
    Report(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterKind {
    Builtin {
        phase: Phase,
        conditions: Vec<FilterCondition>,
        decision: FilterDecision,
    },
    Proc(String),
    ProcExec {
        command: String,
        user: Option<String>,
        group: Option<String>,
    },
    Chain(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub kind: FilterKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub name: String,
    pub command: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueSettings {
    pub compression: bool,
    /// `queue encryption [KEY]`: Some(None) reads the key from stdin at start.
    pub encryption: Option<Option<String>>,
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmtpSettings {
    pub max_message_size: Option<u64>,
    pub sub_addr_delim: Option<char>,
    pub max_mails: Option<u64>,
    pub max_rcpt: Option<u64>,
    /// fugu extension: `smtp limit max-sessions N`, sessions at once over all listeners.
    pub max_sessions: Option<u64>,
    /// fugu extension: `smtp limit max-sessions-per-ip N`, sessions at once from one address.
    pub max_sessions_per_ip: Option<u64>,
    /// fugu extension: `smtp limit max-conn-rate N`, new connections per minute from one
    /// address (0, the default, is no limit).
    pub max_conn_rate: Option<u64>,
    /// fugu extension: `smtp limit max-header-size SIZE`, the whole header section.
    pub max_header_size: Option<u64>,
    /// fugu extension: `smtp limit max-header-field SIZE`, one header field with its
    /// folded continuation lines.
    pub max_header_field: Option<u64>,
    /// `smtp ciphers S`: the cipher list of listeners without their own.
    pub ciphers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MtaSettings {
    pub max_deferred: Option<u64>,
    /// `mta limit [for domain D] KEY NUM`: (domain, key, value).
    pub limits: Vec<(Option<String>, String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub tables: Vec<TableDecl>,
    pub pki: BTreeMap<String, Pki>,
    pub ca: BTreeMap<String, Ca>,
    pub listeners: Vec<Listener>,
    pub actions: Vec<Action>,
    pub rules: Vec<Rule>,
    pub filters: Vec<Filter>,
    pub procs: Vec<Proc>,
    pub queue: QueueSettings,
    pub smtp: SmtpSettings,
    pub mta: MtaSettings,
    pub bounce_warn_interval: Vec<Duration>,
    pub mda_wrappers: BTreeMap<String, String>,
    pub mda_limits: Vec<(String, u64)>,
    /// fugu extension: `resolver ADDR`, the DNS server for MX/DANE/MTA-STS lookups.
    pub resolver: Option<String>,
    /// fugu extension: `spool PATH`, the queue directory.
    pub spool: Option<PathBuf>,
    /// fugu extensions: `access`, `greylist` and `dnsbl` (see [`crate::access`]).
    pub access: crate::access::AccessSettings,
    /// fugu extension: `authres on|off` and `authres dmarc …` (see [`crate::authres`]).
    pub authres: crate::authres::Settings,
}

impl Config {
    /// `smtp max-message-size`, default 35M.
    pub fn max_message_size(&self) -> u64 {
        self.smtp.max_message_size.unwrap_or(35 * 1024 * 1024)
    }
    /// `smtp sub-addr-delim`, default `+`.
    pub fn sub_addr_delim(&self) -> char {
        self.smtp.sub_addr_delim.unwrap_or('+')
    }
    pub fn max_mails(&self) -> u64 {
        self.smtp.max_mails.unwrap_or(100)
    }
    pub fn max_rcpt(&self) -> u64 {
        self.smtp.max_rcpt.unwrap_or(1000)
    }
    /// `smtp limit max-sessions`, default 4096.
    pub fn max_sessions(&self) -> u64 {
        self.smtp.max_sessions.unwrap_or(4096)
    }
    /// `smtp limit max-sessions-per-ip`, default 64.
    pub fn max_sessions_per_ip(&self) -> u64 {
        self.smtp.max_sessions_per_ip.unwrap_or(64)
    }
    /// `smtp limit max-conn-rate`, default 0 (no limit).
    pub fn max_conn_rate(&self) -> u64 {
        self.smtp.max_conn_rate.unwrap_or(0)
    }
    /// `smtp limit max-header-size`, default 100K (Postfix's `header_size_limit`).
    pub fn max_header_size(&self) -> u64 {
        self.smtp.max_header_size.unwrap_or(100 * 1024)
    }
    /// `smtp limit max-header-field`, default 64K.
    pub fn max_header_field(&self) -> u64 {
        self.smtp.max_header_field.unwrap_or(64 * 1024)
    }
    /// `queue ttl`, default 4 days.
    pub fn queue_ttl(&self) -> Duration {
        self.queue.ttl.unwrap_or(Duration::from_secs(4 * 86400))
    }
    /// `bounce warn-interval`, default 4h.
    pub fn bounce_warn_interval(&self) -> Vec<Duration> {
        if self.bounce_warn_interval.is_empty() {
            vec![Duration::from_secs(4 * 3600)]
        } else {
            self.bounce_warn_interval.clone()
        }
    }
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }
    pub fn filter(&self, name: &str) -> Option<&Filter> {
        self.filters.iter().find(|f| f.name == name)
    }
    pub fn table(&self, name: &str) -> Option<&TableDecl> {
        self.tables.iter().find(|t| t.name == name)
    }
}
