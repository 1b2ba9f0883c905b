//! The SMTP server session as a sans-IO state machine: bytes and events in, replies and
//! actions out.
//!
//! A [`Session`] never touches a socket, a table or the queue. The shell (see
//! [`crate::server`]) feeds it [`Event`]s — bytes read, TLS established, the answers to its
//! questions — and carries out the [`Action`]s it returns, in order: write a reply, start
//! TLS, put a command to the listener's filters, check a sender or recipient against the
//! rules, verify credentials, stream a message to the queue, close. Every decision that
//! needs configuration or I/O is an action answered by an event, so the whole protocol
//! is testable without sockets and fuzzable.
//!
//! Pipelining (RFC 2920): the session consumes every complete command it has, and stops
//! at the first one whose answer it must wait for (`wants_input()` is then false). The
//! shell writes replies as they come and flushes when it is about to wait for the client,
//! so the replies to a pipelined group leave together. Nothing is lost: the 250 after the
//! end of data is sent only after [`Event::MessageCommitted`].
//!
//! Logs: the session logs OpenSMTPD 6.6+ lines itself through `tracing` (target `smtp`):
//! `<sid> smtp connected …`, `smtp tls ciphers=…`, `smtp authentication …`,
//! `smtp failed-command command="…" result="…"`, `smtp message …`, `smtp envelope …`,
//! `smtp disconnected reason=…`.
//!
//! One module per phase: [`greeting`], [`ehlo`], [`starttls`], [`auth`], [`mail`], [`rcpt`],
//! [`data`] (DATA and BDAT, with [`framing`]), [`basic`] (RSET, NOOP, HELP, VRFY, EXPN,
//! QUIT); every reply text is in [`reply`].

pub mod address;
mod auth;
mod basic;
pub mod command;
mod data;
mod ehlo;
mod filter;
pub mod framing;
mod greeting;
mod mail;
mod rcpt;
pub mod received;
pub mod reply;
mod starttls;
mod submission;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

pub use reply::Reply;

use crate::clock::Clock;
use crate::envelope::{BodyType, DsnRet, Envelope, Origin, Recipient};
use command::Verb;

/// RFC 4954 §4: an AUTH line may be up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;

/// TLS on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// No certificate: STARTTLS is not offered.
    #[default]
    None,
    /// `tls`: STARTTLS offered.
    StartTls,
    /// `tls-require`: STARTTLS offered, MAIL refused before it (530 5.7.0).
    StartTlsRequired,
    /// `smtps`: the shell completed the TLS handshake before the session started.
    Implicit,
}

/// AUTH on a listener. AUTH is only ever advertised and accepted on a TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    #[default]
    None,
    /// `auth-optional`
    Optional,
    /// `auth`: MAIL refused before AUTH (530 5.7.0).
    Required,
}

/// What to do with a bare CR or bare LF in DATA (the 2023 smuggling advisories). Either
/// way a bare line ending never ends the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Store it as CRLF.
    #[default]
    Normalize,
    /// Refuse the message at the end of data (550 5.5.2).
    Reject,
}

/// The session's parameters, built from one listener's configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Which listener of the configuration this is: the backend looks up the listener's
    /// own tables (`auth <creds>`, `senders <t>`) by it.
    pub listener: usize,
    /// The name in the banner, EHLO reply and Received header (listener `hostname`).
    pub hostname: String,
    /// Text after `220 <hostname> ESMTP `.
    pub banner: String,
    /// `smtp max-message-size`, advertised as SIZE and enforced while streaming.
    pub max_message_size: u64,
    pub tls: TlsPolicy,
    pub auth: AuthPolicy,
    /// DSN advertised and its parameters accepted (false with `no-dsn`).
    pub dsn: bool,
    /// `smtp limit max-rcpt`: recipients per transaction.
    pub max_rcpt: usize,
    /// `smtp limit max-mails`: messages per session.
    pub max_mails: usize,
    /// Failed commands before `421 4.7.0` and disconnect.
    pub max_errors: usize,
    /// Listener `tag`, copied into every envelope.
    pub tag: Option<String>,
    /// `mask-src`: no `from` clause in the Received header.
    pub mask_src: bool,
    /// `received-auth`: `auth=yes user=…` in the Received header.
    pub received_auth: bool,
    pub bare_newline: BareNewline,
    /// RFC 5321 §4.5.3.1.6: the longest text line in message data, CRLF included.
    pub max_data_line: usize,
    /// RFC 5321 §4.5.3.1.4 (512) raised for ESMTP parameters: the longest command line,
    /// CRLF included (AUTH lines may be up to 12288, RFC 4954 §4).
    pub max_command_line: usize,
    /// `smtp limit max-header-size` (fugu extension): the whole header section.
    pub max_header_size: usize,
    /// `smtp limit max-header-field` (fugu extension): one field, folded lines included.
    pub max_header_field: usize,
    /// The listener has OpenSMTPD filters: commands are put to them
    /// ([`Action::FilterPhase`]) before the session acts. Without, nothing is asked.
    pub filtered: bool,
}

impl SessionConfig {
    /// OpenSMTPD's defaults: 35M messages, 1000 recipients, 100 mails per session.
    pub fn new(hostname: impl Into<String>) -> SessionConfig {
        SessionConfig {
            listener: 0,
            hostname: hostname.into(),
            banner: "fugu".into(),
            max_message_size: 35 * 1024 * 1024,
            tls: TlsPolicy::None,
            auth: AuthPolicy::None,
            dsn: true,
            max_rcpt: 1000,
            max_mails: 100,
            max_errors: 20,
            tag: None,
            mask_src: false,
            received_auth: false,
            bare_newline: BareNewline::Normalize,
            max_data_line: 1000,
            max_command_line: 1000,
            max_header_size: 100 * 1024,
            max_header_field: 64 * 1024,
            filtered: false,
        }
    }
}

/// A client certificate presented during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Verified against the listener's `ca`.
    pub verified: bool,
    /// `SHA256:<hex>` as in OpenSMTPD's `cert-check` log line.
    pub fingerprint: String,
}

/// What the TLS layer negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// IANA suite name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Symmetric key strength in bits.
    pub bits: u16,
    pub sni: Option<String>,
    pub client_cert: Option<ClientCert>,
}

/// Who is on the other end, known before the first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Random 64-bit id, shown as 16 hex digits in every log line.
    pub session_id: u64,
    pub origin: Origin,
    /// Reverse DNS of the client, when known.
    pub rdns: Option<String>,
    /// For implicit TLS (`smtps`): the completed handshake.
    /// Boxed, like the session's: most sessions have none.
    pub tls: Option<Box<TlsInfo>>,
}

/// What the rules need to decide about a sender or recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckContext {
    pub session_id: u64,
    /// [`SessionConfig::listener`].
    pub listener: usize,
    pub origin: Origin,
    pub rdns: Option<String>,
    pub helo: String,
    pub tag: Option<String>,
    pub auth_user: Option<String>,
    pub tls: bool,
    /// MAIL FROM of the transaction; `None` is `<>`.
    pub mail_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderVerdict {
    Accept,
    /// Use [`reply::sender_rejected`] or the rule's own text.
    Reject(Reply),
    TempFail(Reply),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientVerdict {
    /// The matching rule accepted it; expansion led to these deliveries (one or more).
    Accept {
        targets: Vec<crate::envelope::Target>,
    },
    /// No match: [`reply::invalid_recipient`]; `match … reject`: [`reply::recipient_rejected`].
    Reject(Reply),
    TempFail(Reply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    Ok,
    Fail,
    TempFail,
}

/// A command the session puts to the listener's filters before acting on it
/// (smtpd-filters(7) phases, as OpenSMTPD's smtp_filter_phase asks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPhase {
    Helo,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Rset,
    Quit,
    Noop,
}

impl FilterPhase {
    /// The phase name in the filter protocol.
    pub fn name(self) -> &'static str {
        match self {
            FilterPhase::Helo => "helo",
            FilterPhase::Ehlo => "ehlo",
            FilterPhase::StartTls => "starttls",
            FilterPhase::Auth => "auth",
            FilterPhase::MailFrom => "mail-from",
            FilterPhase::RcptTo => "rcpt-to",
            FilterPhase::Rset => "rset",
            FilterPhase::Quit => "quit",
            FilterPhase::Noop => "noop",
        }
    }
}

/// The filters' answer to [`Action::FilterPhase`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterVerdict {
    /// Carry the command out.
    Proceed,
    /// Carry the command out with this parameter instead (a new HELO name, AUTH
    /// arguments, sender or recipient address).
    Rewrite(String),
    /// Refuse the command with this reply; the session stays where it was.
    Reject(Reply),
    /// Send this reply and close.
    Disconnect(Reply),
}

/// Inputs to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Bytes from the client, in any split.
    Input(&'a [u8]),
    /// Answer to [`Action::StartTls`].
    TlsEstablished(TlsInfo),
    /// The handshake after STARTTLS failed: the session ends.
    TlsFailed,
    SenderVerdict(SenderVerdict),
    RecipientVerdict(RecipientVerdict),
    AuthVerdict(AuthVerdict),
    /// Answer to [`Action::FilterPhase`].
    FilterVerdict(FilterVerdict),
    /// The queue made the message durable: now, and only now, the client gets 250.
    MessageCommitted {
        queue_id: String,
    },
    /// The queue refused or failed the message (at begin, while streaming, or at commit).
    MessageFailed(Reply),
    /// The idle or total timeout expired.
    Timeout,
    /// The client went away.
    Disconnected,
    /// The server is shutting down.
    Shutdown,
}

/// Outputs of the session, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Reply(Reply),
    /// Flush pending replies (the 220 is among them), then run the TLS handshake and
    /// answer with [`Event::TlsEstablished`] or [`Event::TlsFailed`]. Plaintext read
    /// after the STARTTLS line has already been discarded.
    StartTls,
    /// Answer with [`Event::SenderVerdict`].
    CheckSender {
        address: Option<String>,
        context: Box<CheckContext>,
    },
    /// Answer with [`Event::RecipientVerdict`] (the `match` rules, first match wins).
    CheckRecipient {
        address: String,
        context: Box<CheckContext>,
    },
    /// Only with [`SessionConfig::filtered`]: put the command to the filters and answer
    /// with [`Event::FilterVerdict`]. `param` is the phase's parameter in the filter
    /// protocol (the HELO name, the raw AUTH arguments, the bare address, or empty).
    FilterPhase {
        phase: FilterPhase,
        param: String,
    },
    /// Only with [`SessionConfig::filtered`]: a command line as the client sent it, for
    /// the filters' `protocol-client` report (AUTH secrets masked). No answer expected.
    ClientLine(String),
    /// Answer with [`Event::AuthVerdict`].
    VerifyCredentials {
        user: String,
        password: String,
    },
    /// Open a message in the queue for this envelope.
    MessageBegin(Box<Envelope>),
    /// Message bytes: dot-unstuffed, line endings CRLF; the first chunk starts with our
    /// Received header.
    MessageChunk(Vec<u8>),
    /// All bytes given: commit, then answer with [`Event::MessageCommitted`] or
    /// [`Event::MessageFailed`].
    MessageEnd,
    /// Throw the open message away (error, RSET, disconnect). No answer expected.
    MessageAbort,
    /// Flush, then close the connection.
    Close,
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
}

/// What the session is reading.
#[derive(Debug, Clone)]
enum Mode {
    Command,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass {
        user: String,
    },
    Data,
    /// Inside a BDAT chunk of `size` octets, `remaining` still to come.
    Bdat {
        remaining: u64,
        last: bool,
        size: u64,
    },
    /// Swallowing a refused BDAT chunk; the reply is sent once it is consumed.
    BdatDiscard {
        remaining: u64,
        /// Boxed: it would make every session's mode 56 bytes larger.
        reply: Box<Reply>,
    },
}

/// What the session is waiting for before it reads on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Tls,
    Sender,
    Recipient,
    Auth,
    Commit,
    Filter,
}

#[derive(Debug, Clone)]
struct Message {
    framer: framing::Framer,
    headers: framing::HeaderMeter,
    /// Client octets received (before unstuffing), checked against SIZE.
    size: u64,
    /// Bytes given to the queue.
    written: u64,
    error: Option<Reply>,
    bdat: bool,
    /// RFC 6409 §8: adds a missing Date/Message-ID (authenticated and local mail).
    fixup: Option<submission::HeaderFixup>,
}

#[derive(Debug, Clone, Default)]
struct Transaction {
    mail_from: Option<String>,
    body_type: BodyType,
    smtputf8: bool,
    dsn_ret: Option<DsnRet>,
    dsn_envid: Option<String>,
    recipients: Vec<Recipient>,
    /// Boxed: it lives from DATA to the end of the body only, and inline it would add
    /// 272 bytes to every session, in or out of a transaction.
    message: Option<Box<Message>>,
    /// Bytes given to the queue, for the `smtp message` log line.
    size: u64,
}

pub struct Session {
    cfg: Arc<SessionConfig>,
    clock: Arc<dyn Clock>,
    peer: Peer,
    /// Boxed: 112 bytes that most sessions, plain text, would carry for nothing.
    tls: Option<Box<TlsInfo>>,
    helo: Option<Helo>,
    auth_user: Option<String>,
    tx: Option<Transaction>,
    /// MAIL FROM waiting for its sender verdict. Boxed: it is empty but for that wait,
    /// and inline it would add 336 bytes to every session.
    pending_tx: Option<Box<Transaction>>,
    /// AUTH user waiting for its verdict.
    pending_auth_user: Option<String>,
    /// RCPT waiting for its verdict.
    /// Boxed: between RCPT and its verdict only.
    pending_rcpt: Option<Box<Recipient>>,
    /// The command put to the filters, with its parameter.
    pending_phase: Option<(FilterPhase, String)>,
    mode: Mode,
    waiting: Option<Wait>,
    inbuf: Vec<u8>,
    /// Dropping the rest of an overlong line.
    discarding: bool,
    mails: usize,
    errors: usize,
    /// The command being answered, for `failed-command` logs (credentials never).
    last_command: String,
    /// Empty between events: [`Session::handle_into`] lends it the shell's queue.
    out: VecDeque<Action>,
    closed: bool,
    #[cfg(test)]
    logs: Vec<String>,
}

impl Session {
    /// Whether the shell should read more input now. False while an answer is awaited
    /// (the shell resolves the pending action first) and after the session ended.
    pub fn wants_input(&self) -> bool {
        !self.closed && self.waiting.is_none()
    }

    /// The session has ended (after `Action::Close`, or the client left).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn session_id(&self) -> u64 {
        self.peer.session_id
    }

    /// The HELO/EHLO name given so far, and whether it was EHLO.
    pub fn helo_name(&self) -> Option<(&str, bool)> {
        self.helo.as_ref().map(|h| (h.name.as_str(), h.extended))
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event<'_>) -> Vec<Action> {
        let mut actions = VecDeque::new();
        self.handle_into(event, &mut actions);
        actions.into()
    }

    /// [`handle`](Session::handle), appending the actions to the I/O shell's queue.
    pub fn handle_into(&mut self, event: Event<'_>, actions: &mut VecDeque<Action>) {
        if self.closed {
            return;
        }
        // The actions go straight into the shell's queue, behind what it still holds:
        // no list of the session's own is allocated or kept per event.
        std::mem::swap(&mut self.out, actions);
        self.handle_event(event);
        std::mem::swap(&mut self.out, actions);
    }

    fn handle_event(&mut self, event: Event<'_>) {
        let mut input: &[u8] = &[];
        match event {
            Event::Input(bytes) => {
                // RFC 3207 §4: plaintext after STARTTLS is never a command.
                if self.waiting != Some(Wait::Tls) {
                    input = bytes;
                }
            }
            Event::TlsEstablished(info) => self.tls_established(info),
            Event::TlsFailed => {
                self.log("smtp disconnected reason=tls-accept-failed".into());
                self.abort_message();
                self.closed = true;
                self.out.push_back(Action::Close);
            }
            Event::SenderVerdict(v) => self.sender_verdict(v),
            Event::RecipientVerdict(v) => self.recipient_verdict(v),
            Event::AuthVerdict(v) => self.auth_verdict(v),
            Event::FilterVerdict(v) => self.filter_verdict(v),
            Event::MessageCommitted { queue_id } => self.message_committed(&queue_id),
            Event::MessageFailed(r) => self.message_failed(r),
            Event::Timeout => self.terminate(reply::timeout(&self.cfg.hostname), "timeout"),
            Event::Shutdown => self.terminate(reply::shutting_down(&self.cfg.hostname), "shutdown"),
            Event::Disconnected => {
                self.abort_message();
                self.log("smtp disconnected reason=disconnect".into());
                self.closed = true;
            }
        }
        self.pump(input);
    }

    /// Consumes input until it runs out or an answer must be awaited. Only what is left
    /// over (a partial line, commands pipelined past a pending verdict) is copied into the
    /// session, so an idle session holds no input buffer.
    fn pump(&mut self, input: &[u8]) {
        if self.inbuf.is_empty() {
            let used = self.consume(input);
            if self.keeps_input() {
                self.inbuf
                    .extend_from_slice(&input[used.min(input.len())..]);
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.inbuf);
        buf.extend_from_slice(input);
        let used = self.consume(&buf);
        if self.keeps_input() {
            buf.drain(..used.min(buf.len()));
            if !buf.is_empty() {
                self.inbuf = buf;
            }
        }
    }

    /// Whether input not yet consumed is still wanted: after STARTTLS whatever the client
    /// pipelined is dropped (RFC 3207 §4), and a closed session reads nothing more.
    fn keeps_input(&self) -> bool {
        self.waiting != Some(Wait::Tls) && !self.closed
    }

    /// Consumes `buf` from its start; returns how much was used.
    fn consume(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        while !self.closed && self.waiting.is_none() && pos < buf.len() {
            match self.mode {
                Mode::Data => pos += self.data_input(&buf[pos..]),
                Mode::Bdat { .. } | Mode::BdatDiscard { .. } => pos += self.bdat_input(&buf[pos..]),
                _ => {
                    let avail = &buf[pos..];
                    match avail.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            pos += i + 1;
                            if std::mem::take(&mut self.discarding) {
                                continue;
                            }
                            let mut line = &avail[..i];
                            if let [rest @ .., b'\r'] = line {
                                line = rest;
                            }
                            self.line(line);
                        }
                        None => {
                            if self.discarding {
                                pos = buf.len();
                            } else if avail.len() > MAX_AUTH_LINE {
                                self.discarding = true;
                                pos = buf.len();
                                self.last_command = "(line too long)".into();
                                self.reply(reply::line_too_long());
                            }
                            break;
                        }
                    }
                }
            }
        }
        pos
    }

    /// One command line (or AUTH continuation line), without its line ending.
    fn line(&mut self, line: &[u8]) {
        let auth_mode = matches!(
            self.mode,
            Mode::AuthPlain | Mode::AuthLoginUser | Mode::AuthLoginPass { .. }
        );
        let is_auth_cmd = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
        if line.len() + 2 > self.cfg.max_command_line && !auth_mode && !is_auth_cmd {
            self.last_command = "(line too long)".into();
            self.reply(reply::line_too_long());
            return;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) if !t.contains(['\r', '\0']) => t,
            _ => {
                self.last_command = String::from_utf8_lossy(line).into_owned();
                self.reply(reply::invalid_character());
                return;
            }
        };
        if self.cfg.filtered {
            let shown = self.client_line(text);
            self.out.push_back(Action::ClientLine(shown));
        }
        match self.mode {
            Mode::AuthPlain => return self.auth_plain_response(text),
            Mode::AuthLoginUser | Mode::AuthLoginPass { .. } => {
                return self.auth_login_response(text);
            }
            _ => {}
        }
        let cmd = command::parse(text);
        if cmd.verb == Verb::Auth {
            self.last_command = auth::log_text(cmd.args);
        } else {
            // Refilled in place: a string per command line was a fifth of a message's
            // allocations in the session, for a text only an error's log line shows. It is
            // escaped there, not here, for the same reason.
            self.last_command.clear();
            self.last_command.push_str(text);
        }
        match cmd.verb {
            Verb::Helo => self.helo(cmd.args, false),
            Verb::Ehlo => self.helo(cmd.args, true),
            Verb::StartTls => self.starttls(cmd.args),
            Verb::Auth => self.auth(cmd.args),
            Verb::Mail => self.mail(cmd.args),
            Verb::Rcpt => self.rcpt(cmd.args),
            Verb::Data => self.data(cmd.args),
            Verb::Bdat => self.bdat(cmd.args),
            Verb::Rset => self.rset(cmd.args),
            Verb::Quit => self.quit(cmd.args),
            Verb::Noop => self.filter_phase(FilterPhase::Noop, String::new()),
            Verb::Help => self.help(cmd.args),
            Verb::Vrfy => self.reply(reply::vrfy()),
            Verb::Expn => self.reply(reply::expn_disabled()),
            Verb::Unknown => self.reply(reply::command_unrecognized()),
        }
    }

    /// Sends a reply; a 4xx/5xx answer to a command is logged as `failed-command` and
    /// counts toward `max_errors`.
    fn reply(&mut self, r: Reply) {
        let counts = r.is_error() && r.code != 421;
        if counts {
            self.log(format!(
                "smtp failed-command command=\"{}\" result=\"{}\"",
                self.last_command.escape_default(),
                r.first_line()
            ));
        }
        self.out.push_back(Action::Reply(r));
        if counts {
            self.errors += 1;
            if self.errors >= self.cfg.max_errors {
                self.terminate(
                    reply::too_many_errors(&self.cfg.hostname),
                    "too-many-errors",
                );
            }
        }
    }

    /// Sends a final 421 (or other) reply, drops any message, closes.
    fn terminate(&mut self, r: Reply, reason: &str) {
        self.abort_message();
        self.out.push_back(Action::Reply(r));
        self.out.push_back(Action::Close);
        self.log(format!("smtp disconnected reason={reason}"));
        self.closed = true;
        self.waiting = None;
    }

    /// Drops the message being streamed, if any. Once `MessageEnd` was given the commit
    /// belongs to the queue and is never aborted from here.
    fn abort_message(&mut self) {
        if self.tx.as_ref().is_some_and(|t| t.message.is_some()) {
            self.out.push_back(Action::MessageAbort);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.message = None;
        }
    }

    fn log(&mut self, line: String) {
        tracing::info!(target: "smtp", "{:016x} {line}", self.peer.session_id);
        #[cfg(test)]
        self.logs
            .push(format!("{:016x} {line}", self.peer.session_id));
    }

    /// RFC 3848's protocol name for `Received:` and the envelope: ESMTP or SMTP, S for
    /// TLS, A for an authenticated session.
    fn protocol(&self) -> &'static str {
        let extended = self.helo.as_ref().is_none_or(|h| h.extended);
        match (extended, self.tls.is_some(), self.auth_user.is_some()) {
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
            (false, false, false) => "SMTP",
            (false, true, false) => "SMTPS",
            (false, false, true) => "SMTPA",
            (false, true, true) => "SMTPSA",
        }
    }

    fn context(&self, mail_from: Option<String>) -> Box<CheckContext> {
        Box::new(CheckContext {
            session_id: self.peer.session_id,
            listener: self.cfg.listener,
            origin: self.peer.origin.clone(),
            rdns: self.peer.rdns.clone(),
            helo: self
                .helo
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            tag: self.cfg.tag.clone(),
            auth_user: self.auth_user.clone(),
            tls: self.tls.is_some(),
            mail_from,
        })
    }

    fn envelope(&self, tx: &Transaction) -> Envelope {
        Envelope {
            session_id: self.peer.session_id,
            origin: self.peer.origin.clone(),
            helo: self
                .helo
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            rdns: self.peer.rdns.clone(),
            tag: self.cfg.tag.clone(),
            auth_user: self.auth_user.clone(),
            protocol: self.protocol().to_owned(),
            mail_from: tx.mail_from.clone(),
            body_type: tx.body_type,
            smtputf8: tx.smtputf8,
            dsn_ret: tx.dsn_ret,
            dsn_envid: tx.dsn_envid.clone(),
            recipients: tx.recipients.clone(),
        }
    }

    /// A command that takes no arguments got some.
    fn refuse_args(&mut self, args: Option<&str>) -> bool {
        if args.is_some() {
            self.reply(reply::no_arguments_allowed());
            return true;
        }
        false
    }
}
