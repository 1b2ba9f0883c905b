//! OpenSMTPD filters (smtpd-filters(7), protocol 0.6): `filter NAME proc-exec "CMD"`,
//! `filter NAME proc P`, `filter NAME chain {…}` and builtin
//! `filter NAME phase P match … DECISION`, run for every listener that names them.
//!
//! - [`protocol`] encodes and decodes the line protocol (pure);
//! - [`proc`] runs one filter process: handshake, routing by session id, restarts;
//! - [`Filters`] starts the processes a configuration uses and gives each listener its
//!   [`Chain`]; [`SessionFilters`] is one session's view of its chain, called by the
//!   SMTP shell ([`crate::server`]) at each phase and report event.
//!
//! Failure is safe: a filter process that is missing, exits or sends garbage makes the
//! sessions waiting on it tempfail (`421 4.3.0` for commands, `451 4.3.0` for a message),
//! and a message is only committed to the queue after every filter has passed it, so
//! nothing a client was told is accepted depends on a filter afterwards.
//!
//! The command phases (`helo` … `noop`) are asked by the session core itself
//! ([`crate::session::Action::FilterPhase`]) and answered through
//! [`SessionFilters::command`], so a verdict answers the command it is about; `rewrite`
//! changes the HELO name, AUTH arguments or address. Not emitted: the `tx-envelope` and
//! `protocol-client` reports, and the `help`/`wiz` phases (OpenSMTPD never asks them).

pub mod proc;
pub mod protocol;
pub mod shell;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::Error;
use crate::config::{
    Config, FilterCondition, FilterCriterion, FilterDecision, FilterKind, FilterRef, Phase,
    TableCrit, TableRef,
};
use crate::server::BoxFuture;
use crate::session::{FilterPhase, FilterVerdict, Reply};
use crate::table::{Service, Table};
use proc::{Live, ProcSpec, Process};
use protocol::{Decision, Response, Timestamp};

/// How long a filter may take to answer one request (OpenSMTPD's session timeout).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Table lookups for builtin filters (the daemon's current tables).
pub trait TableLookup: Send + Sync {
    fn check(&self, table: &TableRef, service: Service, key: &str) -> Result<bool, String>;
}

impl TableLookup for crate::table::Tables {
    fn check(&self, table: &TableRef, service: Service, key: &str) -> Result<bool, String> {
        match table {
            TableRef::Inline(t) => t.check(service, key).map_err(|e| e.to_string()),
            TableRef::Named(n) => match self.get(n) {
                Some(t) => t.check(service, key).map_err(|e| e.to_string()),
                None => Err(format!("table {n} is not open")),
            },
        }
    }
}

impl TableLookup for crate::daemon::Shared {
    fn check(&self, table: &TableRef, service: Service, key: &str) -> Result<bool, String> {
        self.current().tables.check(table, service, key)
    }
}

/// Tables given once the daemon has loaded them (the filter processes start first).
#[derive(Default)]
pub struct LateTables(std::sync::OnceLock<Arc<dyn TableLookup>>);

impl LateTables {
    pub fn set(&self, tables: Arc<dyn TableLookup>) {
        let _ = self.0.set(tables);
    }
}

impl TableLookup for LateTables {
    fn check(&self, table: &TableRef, service: Service, key: &str) -> Result<bool, String> {
        match self.0.get() {
            Some(t) => t.check(table, service, key),
            None => Err("tables are not loaded yet".to_owned()),
        }
    }
}

/// A `filter NAME phase P match … DECISION` line.
#[derive(Debug, Clone)]
pub struct Builtin {
    pub name: String,
    pub phase: Phase,
    pub conditions: Vec<FilterCondition>,
    pub decision: FilterDecision,
}

pub enum Step {
    Builtin(Builtin),
    Proc(Arc<Process>),
}

/// A listener's filters, flattened in chain order.
pub struct Chain {
    pub steps: Vec<Step>,
    tables: Arc<dyn TableLookup>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Builtin(b) => b.name.as_str(),
                Step::Proc(p) => p.name(),
            })
            .collect();
        f.debug_struct("Chain").field("steps", &names).finish()
    }
}

impl Chain {
    pub fn new(steps: Vec<Step>, tables: Arc<dyn TableLookup>) -> Chain {
        Chain { steps, tables }
    }
}

/// The filter processes of a configuration and each listener's chain.
#[derive(Default)]
pub struct Filters {
    /// By listener index in the configuration.
    chains: HashMap<usize, Arc<Chain>>,
}

impl Filters {
    /// Starts every process a listener uses and waits until each has registered: no SMTP
    /// is accepted before that (as in OpenSMTPD).
    pub async fn start(
        config: &Config,
        admd: &str,
        tables: Arc<dyn TableLookup>,
    ) -> Result<Filters, Error> {
        let mut procs: HashMap<String, Arc<Process>> = HashMap::new();
        let mut chains = HashMap::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let Some(r) = &l.filter else { continue };
            let names = match r {
                FilterRef::Name(n) => vec![n.clone()],
                FilterRef::Chain(v) => v.clone(),
            };
            let mut steps = Vec::new();
            for n in &names {
                flatten(config, n, admd, &mut procs, &mut steps, 0).await?;
            }
            chains.insert(i, Arc::new(Chain::new(steps, tables.clone())));
        }
        Ok(Filters { chains })
    }

    /// The chain of listener `index` of the configuration, if it names filters.
    pub fn chain(&self, index: usize) -> Option<Arc<Chain>> {
        self.chains.get(&index).cloned()
    }
}

fn unknown(name: &str, reason: &str) -> Error {
    Error::Filter {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

fn flatten<'a>(
    config: &'a Config,
    name: &'a str,
    admd: &'a str,
    procs: &'a mut HashMap<String, Arc<Process>>,
    steps: &'a mut Vec<Step>,
    depth: usize,
) -> crate::server::BoxFuture<'a, Result<(), Error>> {
    Box::pin(async move {
        if depth > 16 {
            return Err(unknown(name, "filter chains nest too deep"));
        }
        let f = config
            .filter(name)
            .ok_or_else(|| unknown(name, "no such filter"))?;
        let (key, spec) = match &f.kind {
            FilterKind::Builtin {
                phase,
                conditions,
                decision,
            } => {
                steps.push(Step::Builtin(Builtin {
                    name: f.name.clone(),
                    phase: *phase,
                    conditions: conditions.clone(),
                    decision: decision.clone(),
                }));
                return Ok(());
            }
            FilterKind::Chain(v) => {
                for n in v {
                    flatten(config, n, admd, procs, steps, depth + 1).await?;
                }
                return Ok(());
            }
            FilterKind::ProcExec {
                command,
                user,
                group,
            } => (
                format!("exec:{}", f.name),
                ProcSpec {
                    name: f.name.clone(),
                    command: command.clone(),
                    user: user.clone(),
                    group: group.clone(),
                    admd: admd.to_owned(),
                    session_timeout: ANSWER_TIMEOUT.as_secs(),
                },
            ),
            FilterKind::Proc(p) => {
                let pr = config
                    .procs
                    .iter()
                    .find(|x| &x.name == p)
                    .ok_or_else(|| unknown(p, "no such proc"))?;
                (
                    format!("proc:{p}"),
                    ProcSpec {
                        name: pr.name.clone(),
                        command: pr.command.clone(),
                        user: pr.user.clone(),
                        group: pr.group.clone(),
                        admd: admd.to_owned(),
                        session_timeout: ANSWER_TIMEOUT.as_secs(),
                    },
                )
            }
        };
        let p = match procs.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = Process::start(spec).await?;
                procs.insert(key, p.clone());
                p
            }
        };
        steps.push(Step::Proc(p));
        Ok(())
    })
}

/// A filter's verdict on one phase, as the shell applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// Refuse the command with this reply.
    Reject(Reply),
    /// Send this reply and close the connection.
    Disconnect(Reply),
    /// Carry the command out with this parameter (only for the phases that have one to
    /// rewrite: helo, ehlo, auth, mail-from, rcpt-to).
    Rewrite(String),
}

impl From<Verdict> for FilterVerdict {
    fn from(v: Verdict) -> FilterVerdict {
        match v {
            Verdict::Proceed => FilterVerdict::Proceed,
            Verdict::Reject(r) => FilterVerdict::Reject(r),
            Verdict::Disconnect(r) => FilterVerdict::Disconnect(r),
            Verdict::Rewrite(p) => FilterVerdict::Rewrite(p),
        }
    }
}

/// The reply when a filter process is missing, lost or silent.
pub fn filter_tempfail() -> Reply {
    Reply::new(
        421,
        "4.3.0",
        "Temporary failure: content filter unavailable",
    )
}

/// The reply at the end of data when a filter process failed with the message.
pub fn message_tempfail() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Temporary failure: content filter unavailable",
    )
}

/// What the builtin criteria look at.
#[derive(Debug, Clone, Default)]
struct FilterContext {
    src: Option<IpAddr>,
    rdns: Option<String>,
    fcrdns: bool,
    helo: String,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Option<String>,
}

struct Attached {
    process: Arc<Process>,
    live: Option<Arc<Live>>,
    rx: Option<mpsc::UnboundedReceiver<Response>>,
}

struct Inner {
    chain: Arc<Chain>,
    sid: u64,
    /// One per distinct process of the chain.
    attached: Vec<Attached>,
    token: u64,
    ctx: FilterContext,
    broken: bool,
    session_junk: bool,
    tx_junk: bool,
    msgid: u32,
    /// A transaction was begun (`tx-begin`) and not yet ended by a commit or rollback.
    in_tx: bool,
    /// The message, buffered for data-line filters.
    buffer: Option<Vec<u8>>,
    /// Whether the next chunk is the first of a message.
    first_chunk: bool,
    /// Bytes of the message written to the queue, for `tx-commit`.
    size: u64,
}

/// One session's filters. Every method is a no-op without a chain.
#[derive(Default)]
pub struct SessionFilters {
    /// Boxed: sessions without filters, the common case, carry a pointer, not 240 bytes.
    inner: Option<Box<Inner>>,
}

impl SessionFilters {
    /// Attaches to the chain's processes and reports `link-connect`.
    pub async fn connect(
        chain: Option<Arc<Chain>>,
        sid: u64,
        src: Option<SocketAddr>,
        dest: Option<SocketAddr>,
        rdns: crate::rdns::ReverseName,
    ) -> SessionFilters {
        let Some(chain) = chain else {
            return SessionFilters::default();
        };
        let mut attached: Vec<Attached> = Vec::new();
        for s in &chain.steps {
            if let Step::Proc(p) = s
                && !attached.iter().any(|a| Arc::ptr_eq(&a.process, p))
            {
                let live = p.live();
                let rx = live.as_ref().map(|l| l.attach(sid));
                attached.push(Attached {
                    process: p.clone(),
                    live,
                    rx,
                });
            }
        }
        let msgid = (sid as u32) ^ ((sid >> 32) as u32);
        let mut inner = Inner {
            chain,
            sid,
            attached,
            token: sid.rotate_left(17),
            ctx: FilterContext {
                src: src.map(|s| s.ip()),
                rdns: rdns.name.clone(),
                fcrdns: rdns.confirmed,
                ..FilterContext::default()
            },
            broken: false,
            session_junk: false,
            tx_junk: false,
            msgid,
            in_tx: false,
            buffer: None,
            first_chunk: false,
            size: 0,
        };
        if let Some(a) = inner.attached.iter().find(|a| a.live.is_none()) {
            let name = a.process.name().to_owned();
            inner.fail(&name, "not running");
        }
        let rdns_text = rdns.name.unwrap_or_else(|| "<unknown>".to_owned());
        let fcrdns = if inner.ctx.fcrdns { "pass" } else { "fail" };
        inner.report(
            "link-connect",
            &[
                &rdns_text,
                fcrdns,
                &protocol::link_address(src),
                &protocol::link_address(dest.or(src.map(|_| unspecified()))),
            ],
        );
        SessionFilters {
            inner: Some(Box::new(inner)),
        }
    }

    /// Whether this session has filters at all.
    pub fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// The `connect` phase, before the banner.
    pub async fn connect_phase(&mut self) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        let rdns = i.ctx.rdns.clone().unwrap_or_else(|| "<unknown>".to_owned());
        let src = match i.ctx.src {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None => "local".to_owned(),
        };
        i.phase(Some(Phase::Connect), "connect", &format!("{rdns}|{src}"))
            .await
    }

    pub fn greeting(&mut self, hostname: &str) {
        if let Some(i) = self.inner.as_mut() {
            i.report("link-greeting", &[hostname]);
        }
    }

    pub fn tls(&mut self, version: &str, cipher: &str, bits: u16) {
        if let Some(i) = self.inner.as_mut() {
            i.report("link-tls", &[&format!("{version}:{cipher}:{bits}")]);
        }
    }

    /// `link-auth`, in 0.6 order (`username|result`).
    pub fn auth(&mut self, user: &str, result: &str) {
        if let Some(i) = self.inner.as_mut() {
            if result == "pass" {
                i.ctx.auth_user = Some(user.to_owned());
            }
            i.report("link-auth", &[user, result]);
        }
    }

    /// A command the session put to the filters ([`crate::session::Action::FilterPhase`]).
    /// HELO/EHLO are reported (`link-identify`) once let through, under the name the
    /// chain settled on; a refused MAIL or RCPT is reported as `tx-mail`/`tx-rcpt`.
    pub async fn command(&mut self, phase: FilterPhase, param: &str) -> FilterVerdict {
        if self.inner.is_none() {
            return FilterVerdict::Proceed;
        }
        let v = match phase {
            FilterPhase::Helo | FilterPhase::Ehlo => self.identify(phase, param).await,
            FilterPhase::MailFrom => {
                let address = (!param.is_empty()).then_some(param);
                let v = self.mail(address).await;
                if let Verdict::Reject(r) | Verdict::Disconnect(r) = &v {
                    self.mail_result(address, result_of(r.code));
                }
                v
            }
            FilterPhase::RcptTo => {
                let v = self.rcpt(param).await;
                if let Verdict::Reject(r) | Verdict::Disconnect(r) = &v {
                    self.rcpt_result(param, result_of(r.code));
                }
                v
            }
            FilterPhase::Rset => {
                let v = self.plain(phase, param).await;
                if v == Verdict::Proceed {
                    self.rollback();
                }
                v
            }
            FilterPhase::StartTls | FilterPhase::Auth | FilterPhase::Quit | FilterPhase::Noop => {
                self.plain(phase, param).await
            }
        };
        v.into()
    }

    async fn identify(&mut self, phase: FilterPhase, name: &str) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        let (builtin, verb) = if phase == FilterPhase::Ehlo {
            (Phase::Ehlo, "EHLO")
        } else {
            (Phase::Helo, "HELO")
        };
        i.ctx.helo = name.to_owned();
        let v = i.phase(Some(builtin), phase.name(), name).await;
        let settled = match &v {
            Verdict::Proceed => Some(name.to_owned()),
            Verdict::Rewrite(n) => Some(n.clone()),
            _ => None,
        };
        if let Some(name) = settled {
            i.report("link-identify", &[verb, &name]);
            i.ctx.helo = name;
        }
        v
    }

    /// A phase only filter processes can register for.
    async fn plain(&mut self, phase: FilterPhase, param: &str) -> Verdict {
        match self.inner.as_mut() {
            Some(i) => i.phase(None, phase.name(), param).await,
            None => Verdict::Proceed,
        }
    }

    /// `protocol-client` for one command line (already masked by the session).
    pub fn client_line(&mut self, line: &str) {
        if let Some(i) = self.inner.as_mut() {
            i.report("protocol-client", &[line]);
        }
    }

    /// `timeout`, before the session is closed for idling.
    pub fn timeout(&mut self) {
        if let Some(i) = self.inner.as_mut() {
            i.report("timeout", &[]);
        }
    }

    /// MAIL FROM: begins the transaction and runs the `mail-from` phase.
    pub async fn mail(&mut self, address: Option<&str>) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        i.in_tx = true;
        i.msgid = i.msgid.wrapping_add(1);
        i.tx_junk = false;
        i.ctx.mail_from = address.map(str::to_owned);
        let msgid = format!("{:08x}", i.msgid);
        i.report("tx-begin", &[&msgid]);
        i.phase(Some(Phase::MailFrom), "mail-from", address.unwrap_or(""))
            .await
    }

    /// `tx-mail` with the result (`ok`, `permfail`, `tempfail`).
    pub fn mail_result(&mut self, address: Option<&str>, result: &str) {
        if let Some(i) = self.inner.as_mut() {
            let msgid = format!("{:08x}", i.msgid);
            i.report("tx-mail", &[&msgid, result, address.unwrap_or("")]);
            if result != "ok" {
                i.end_tx("tx-rollback", &[&msgid]);
            }
        }
    }

    pub async fn rcpt(&mut self, address: &str) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        i.ctx.rcpt_to = Some(address.to_owned());
        i.phase(Some(Phase::RcptTo), "rcpt-to", address).await
    }

    pub fn rcpt_result(&mut self, address: &str, result: &str) {
        if let Some(i) = self.inner.as_mut() {
            let msgid = format!("{:08x}", i.msgid);
            i.report("tx-rcpt", &[&msgid, result, address]);
        }
    }

    /// DATA: the `data` phase, then `tx-data`.
    pub async fn data(&mut self) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        let v = i.phase(Some(Phase::Data), "data", "").await;
        let msgid = format!("{:08x}", i.msgid);
        let result = match &v {
            Verdict::Proceed => "ok",
            Verdict::Reject(r) | Verdict::Disconnect(r) if r.code >= 500 => "permfail",
            _ => "tempfail",
        };
        i.report("tx-data", &[&msgid, result]);
        if v == Verdict::Proceed {
            i.first_chunk = true;
            i.size = 0;
            i.buffer = i.wants_data_lines().then(Vec::new);
        }
        v
    }

    /// A message chunk on its way to the queue: returned to be written now, or kept
    /// (`None`) for the data-line filters until [`SessionFilters::message_end`].
    pub fn chunk(&mut self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        let Some(i) = self.inner.as_mut() else {
            return Some(chunk);
        };
        let mut chunk = chunk;
        if std::mem::take(&mut i.first_chunk) && (i.session_junk || i.tx_junk) {
            // smtpd-filters(7): a junked message gets X-Spam first, before Received.
            let mut v = b"X-Spam: Yes\r\n".to_vec();
            v.append(&mut chunk);
            chunk = v;
        }
        match i.buffer.as_mut() {
            Some(b) => {
                b.extend_from_slice(&chunk);
                None
            }
            None => {
                i.size += chunk.len() as u64;
                Some(chunk)
            }
        }
    }

    /// The end of data: runs the data-line filters over the buffered message, in chain
    /// order, and returns what they produced (to write before committing).
    pub async fn message_end(&mut self) -> Result<Option<Vec<u8>>, Reply> {
        let Some(i) = self.inner.as_mut() else {
            return Ok(None);
        };
        let Some(message) = i.buffer.take() else {
            return Ok(None);
        };
        let out = i.data_lines(message).await?;
        i.size = out.len() as u64;
        Ok(Some(out))
    }

    /// The `commit` phase, after the whole message was written and before the queue
    /// commits it.
    pub async fn commit(&mut self) -> Verdict {
        let Some(i) = self.inner.as_mut() else {
            return Verdict::Proceed;
        };
        i.phase(Some(Phase::Commit), "commit", "").await
    }

    /// `tx-commit` after the queue made the message durable.
    pub fn committed(&mut self) {
        if let Some(i) = self.inner.as_mut() {
            let msgid = format!("{:08x}", i.msgid);
            let size = i.size.to_string();
            i.end_tx("tx-commit", &[&msgid, &size]);
        }
    }

    /// `tx-rollback` for a transaction that was reset, or a message refused or dropped.
    pub fn rollback(&mut self) {
        if let Some(i) = self.inner.as_mut() {
            i.buffer = None;
            let msgid = format!("{:08x}", i.msgid);
            i.end_tx("tx-rollback", &[&msgid]);
        }
    }

    /// `protocol-server` for one reply.
    pub fn server_reply(&mut self, reply: &Reply) {
        if let Some(i) = self.inner.as_mut() {
            i.report("protocol-server", &[&reply.first_line()]);
        }
    }

    /// `link-disconnect`, and the session's routes are dropped.
    pub fn disconnect(&mut self) {
        if let Some(mut i) = self.inner.take() {
            i.report("link-disconnect", &[]);
            for a in &i.attached {
                if let Some(l) = &a.live {
                    l.detach(i.sid);
                }
            }
        }
    }
}

impl Drop for SessionFilters {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// `link-auth`'s result for a credentials verdict.
pub fn auth_result(v: crate::session::AuthVerdict) -> &'static str {
    match v {
        crate::session::AuthVerdict::Ok => "pass",
        crate::session::AuthVerdict::Fail => "fail",
        crate::session::AuthVerdict::TempFail => "error",
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn src_key(src: Option<IpAddr>) -> String {
    match src {
        Some(a) => a.to_string(),
        None => "local".to_owned(),
    }
}

/// `tx-mail`/`tx-rcpt`'s result for a reply code.
pub fn result_of(code: u16) -> &'static str {
    match code {
        200..=399 => "ok",
        500.. => "permfail",
        _ => "tempfail",
    }
}

impl Inner {
    /// Ends the open transaction with `event` (commit or rollback), then `tx-reset`, as
    /// OpenSMTPD reports both when it frees a transaction.
    fn end_tx(&mut self, event: &str, params: &[&str]) {
        if !std::mem::take(&mut self.in_tx) {
            return;
        }
        self.report(event, params);
        let msgid = format!("{:08x}", self.msgid);
        self.report("tx-reset", &[&msgid]);
    }

    fn fail(&mut self, name: &str, why: &str) {
        if !self.broken {
            tracing::warn!(
                target: "smtp",
                "{:016x} smtp filter-failed filter={name} reason=\"{why}\"",
                self.sid
            );
        }
        self.broken = true;
    }

    fn report(&mut self, event: &str, params: &[&str]) {
        let wanted = self
            .attached
            .iter()
            .any(|a| a.live.as_ref().is_some_and(|l| l.wants_report(event)));
        if self.broken || !wanted {
            return;
        }
        let line = protocol::report(Timestamp::now(), event, self.sid, params);
        for a in &self.attached {
            if let Some(l) = &a.live
                && l.wants_report(event)
            {
                l.send(line.clone().into_bytes());
            }
        }
    }

    fn next_token(&mut self) -> u64 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    fn attached_index(&self, p: &Arc<Process>) -> Option<usize> {
        self.attached
            .iter()
            .position(|a| Arc::ptr_eq(&a.process, p))
    }

    fn wants_data_lines(&self) -> bool {
        self.attached
            .iter()
            .any(|a| a.live.as_ref().is_some_and(|l| l.wants_phase("data-line")))
    }

    /// Runs one phase through the chain. `builtin` is the phase builtin filters can name
    /// (none for the command phases OpenSMTPD only offers to processes).
    ///
    /// Boxed, like [`Inner::data_lines`]: the walk's state is hundreds of bytes, and
    /// awaited inline it would be part of every session's future, filters or not.
    fn phase<'a>(
        &'a mut self,
        builtin: Option<Phase>,
        name: &'a str,
        param: &'a str,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(self.walk(builtin, name, param))
    }

    async fn walk(&mut self, builtin: Option<Phase>, name: &str, param: &str) -> Verdict {
        let chain = self.chain.clone();
        for step in &chain.steps {
            if self.broken {
                return Verdict::Disconnect(filter_tempfail());
            }
            let decision = match step {
                Step::Builtin(b) => {
                    if Some(b.phase) != builtin {
                        continue;
                    }
                    match self.builtin(b, &*chain.tables) {
                        Ok(None) => continue,
                        Ok(Some(FilterDecision::Bypass)) => return Verdict::Proceed,
                        Ok(Some(d)) => builtin_decision(d),
                        Err(e) => {
                            tracing::warn!(
                                target: "smtp",
                                "{:016x} smtp filter-failed filter={} reason=\"{e}\"",
                                self.sid,
                                b.name
                            );
                            return Verdict::Reject(crate::session::reply::lookup_tempfail());
                        }
                    }
                }
                Step::Proc(p) => {
                    let Some(idx) = self.attached_index(p) else {
                        continue;
                    };
                    let wants = self.attached[idx]
                        .live
                        .as_ref()
                        .is_some_and(|l| l.wants_phase(name));
                    if !wants {
                        continue;
                    }
                    match self.ask(idx, name, param).await {
                        Some(d) => d,
                        None => return Verdict::Disconnect(filter_tempfail()),
                    }
                }
            };
            let step_name = match step {
                Step::Builtin(b) => b.name.clone(),
                Step::Proc(p) => p.name().to_owned(),
            };
            match decision {
                Decision::Proceed => {}
                Decision::Report(text) => {
                    let kind = if matches!(step, Step::Builtin(_)) {
                        "builtin"
                    } else {
                        "proc"
                    };
                    self.report("filter-report", &[kind, &step_name, &text]);
                }
                Decision::Junk => {
                    if matches!(name, "mail-from" | "rcpt-to" | "data" | "commit") {
                        self.tx_junk = true;
                    } else {
                        self.session_junk = true;
                    }
                    return Verdict::Proceed;
                }
                Decision::Reject(r) if r.code == 421 => return Verdict::Disconnect(r),
                Decision::Reject(r) => return Verdict::Reject(r),
                Decision::Disconnect(r) => return Verdict::Disconnect(r),
                // smtpd-filters(7): the command goes on with the new parameter.
                Decision::Rewrite(p)
                    if matches!(name, "helo" | "ehlo" | "auth" | "mail-from" | "rcpt-to") =>
                {
                    return Verdict::Rewrite(p);
                }
                Decision::Rewrite(_) => {
                    tracing::warn!(
                        target: "smtp",
                        "{:016x} smtp filter-failed filter={step_name} reason=\"rewrite at {name} is not supported\"",
                        self.sid
                    );
                    return Verdict::Reject(crate::session::reply::lookup_tempfail());
                }
            }
        }
        Verdict::Proceed
    }

    /// Sends one request and waits for its answer; `None` when the process is lost.
    async fn ask(&mut self, idx: usize, phase: &str, param: &str) -> Option<Decision> {
        let token = self.next_token();
        let line = protocol::request(Timestamp::now(), phase, self.sid, token, param);
        let name = self.attached[idx].process.name().to_owned();
        let sent = self.attached[idx]
            .live
            .as_ref()
            .is_some_and(|l| l.send(line.into_bytes()));
        if !sent {
            self.fail(&name, "lost");
            return None;
        }
        loop {
            match self.recv(idx).await {
                Ok(Response::Result {
                    token: t, decision, ..
                }) if t == token => return Some(decision),
                Ok(_) => continue,
                Err(why) => {
                    self.fail(&name, why);
                    return None;
                }
            }
        }
    }

    async fn recv(&mut self, idx: usize) -> Result<Response, &'static str> {
        let Some(rx) = self.attached[idx].rx.as_mut() else {
            return Err("lost");
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, rx.recv()).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("lost"),
            Err(_) => Err("no answer"),
        }
    }

    /// Runs the message through every data-line filter, each one's output feeding the
    /// next; lines stay dot-stuffed between filters.
    fn data_lines(&mut self, message: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Reply>> {
        Box::pin(self.pipe_lines(message))
    }

    async fn pipe_lines(&mut self, message: Vec<u8>) -> Result<Vec<u8>, Reply> {
        let mut body = message.as_slice();
        if let Some(b) = body.strip_suffix(b"\r\n") {
            body = b;
        }
        let mut lines: Vec<Vec<u8>> = if message.is_empty() {
            Vec::new()
        } else {
            body.split(|&b| b == b'\n')
                .map(|l| protocol::stuff(l.strip_suffix(b"\r").unwrap_or(l)))
                .collect()
        };
        let chain = self.chain.clone();
        let mut done: Vec<usize> = Vec::new();
        for step in &chain.steps {
            let Step::Proc(p) = step else { continue };
            let Some(idx) = self.attached_index(p) else {
                continue;
            };
            let wants = self.attached[idx]
                .live
                .as_ref()
                .is_some_and(|l| l.wants_phase("data-line"));
            if !wants || done.contains(&idx) {
                continue;
            }
            done.push(idx);
            lines = self
                .through(idx, lines)
                .await
                .ok_or_else(message_tempfail)?;
        }
        let mut out = Vec::with_capacity(message.len() + 1024);
        for l in &lines {
            out.extend_from_slice(protocol::unstuff(l));
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }

    async fn through(&mut self, idx: usize, lines: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
        if self.broken {
            return None;
        }
        let token = self.next_token();
        let name = self.attached[idx].process.name().to_owned();
        let Some(live) = self.attached[idx].live.clone() else {
            self.fail(&name, "lost");
            return None;
        };
        let ts = Timestamp::now();
        for l in lines.iter().map(Vec::as_slice).chain([&b"."[..]]) {
            if !live.send(protocol::data_line(ts, self.sid, token, l)) {
                self.fail(&name, "lost");
                return None;
            }
        }
        let mut out = Vec::with_capacity(lines.len() + 8);
        loop {
            match self.recv(idx).await {
                Ok(Response::DataLine { token: t, line, .. }) if t == token => {
                    if line == b"." {
                        return Some(out);
                    }
                    out.push(line);
                }
                Ok(_) => continue,
                Err(why) => {
                    self.fail(&name, why);
                    return None;
                }
            }
        }
    }

    /// Whether a builtin filter's conditions all hold: `Some(decision)` if so.
    fn builtin(
        &self,
        b: &Builtin,
        tables: &dyn TableLookup,
    ) -> Result<Option<FilterDecision>, String> {
        for c in &b.conditions {
            if self.criterion(&c.criterion, tables)? == c.negated {
                return Ok(None);
            }
        }
        Ok(Some(b.decision.clone()))
    }

    fn criterion(&self, c: &FilterCriterion, tables: &dyn TableLookup) -> Result<bool, String> {
        let check = |t: &TableCrit, service: Service, key: &str| {
            let service = if t.regex { Service::Regex } else { service };
            tables.check(&t.table, service, key)
        };
        let ctx = &self.ctx;
        match c {
            FilterCriterion::Fcrdns => Ok(ctx.fcrdns),
            FilterCriterion::Rdns(t) => match (&ctx.rdns, t) {
                (None, _) => Ok(false),
                (Some(_), None) => Ok(true),
                (Some(r), Some(t)) => check(t, Service::Domain, r),
            },
            FilterCriterion::Src(t) => check(t, Service::Netaddr, &src_key(ctx.src)),
            FilterCriterion::Helo(t) => check(t, Service::Domain, &ctx.helo),
            FilterCriterion::Auth(t) => match (&ctx.auth_user, t) {
                (None, _) => Ok(false),
                (Some(_), None) => Ok(true),
                (Some(u), Some(t)) => {
                    let service = if u.contains('@') {
                        Service::Mailaddr
                    } else {
                        Service::String
                    };
                    check(t, service, u)
                }
            },
            FilterCriterion::MailFrom(t) => {
                check(t, Service::Mailaddr, ctx.mail_from.as_deref().unwrap_or(""))
            }
            FilterCriterion::RcptTo(t) => {
                check(t, Service::Mailaddr, ctx.rcpt_to.as_deref().unwrap_or(""))
            }
        }
    }
}

fn builtin_decision(d: FilterDecision) -> Decision {
    let reply =
        |t: &str| Reply::parse(t).unwrap_or_else(|| Reply::new(421, "", "Internal server error"));
    match d {
        FilterDecision::Bypass => Decision::Proceed,
        FilterDecision::Junk => Decision::Junk,
        FilterDecision::Reject(t) => Decision::Reject(reply(&t)),
        FilterDecision::Disconnect(t) => Decision::Disconnect(reply(&t)),
        FilterDecision::Rewrite(t) => Decision::Rewrite(t),
        FilterDecision::Report(t) => Decision::Report(t),
    }
}

#[cfg(test)]
mod tests;
