//! The SMTP/LMTP client as a sans-IO state machine: it consumes the server's replies (and
//! the news that a TLS handshake finished) and answers with bytes to send and what
//! happened. Only [`super::conn`] touches sockets.
//!
//! One [`Session`] carries any number of transactions: greeting, EHLO (HELO when EHLO is
//! refused), STARTTLS per the [`TlsPolicy`], AUTH PLAIN or LOGIN, then per message
//! (RSET when the connection was used before) MAIL, RCPT…, DATA, with PIPELINING when
//! the server offers it.

use std::collections::VecDeque;
use std::io::Write as _;

use crate::queue::Outcome;

/// One complete reply: its code and every line's text (code and separator removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The lines' texts joined by `\n`: one string per reply, five replies per message.
    texts: String,
}

impl Reply {
    /// Every line's text, in order.
    pub fn lines(&self) -> std::str::Split<'_, char> {
        self.texts.split('\n')
    }

    /// The reply as one line for logs, queue errors and DSNs: `550 5.1.1 no such user`.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let parts = self.lines().map(|l| l.trim()).filter(|l| !l.is_empty());
        let mut out = String::with_capacity(4 + self.texts.len());
        let _ = write!(out, "{}", self.code);
        for l in parts {
            out.push(' ');
            out.push_str(l);
        }
        out
    }

    fn outcome(&self) -> Outcome {
        match self.code {
            200..=399 => Outcome::Delivered(self.text()),
            400..=499 => Outcome::TempFail(self.text()),
            _ => Outcome::PermFail(self.text()),
        }
    }

    fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// A reply that does not parse: the peer is not speaking SMTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from the server: {0:?}")]
pub struct MalformedReply(pub String);

/// Reassembles replies from bytes as they arrive; a multi-line reply is `250-…` lines
/// ending with one `250 …` line (RFC 5321 §4.2.1).
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    texts: String,
    code: Option<u16>,
}

/// Longest reply line accepted; RFC 5321 §4.5.3.1.5 says 512, servers send more.
const MAX_LINE: usize = 4096;

impl ReplyReader {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read the next bytes into (`read_buf`), with room for at least 1 KiB
    /// past what it holds. The connection reads into it directly: a separate read buffer
    /// was 8 KiB allocated and zeroed for every message.
    pub fn spare(&mut self) -> &mut Vec<u8> {
        self.buf.reserve(1024);
        &mut self.buf
    }

    /// The next complete reply, if the bytes so far hold one.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, MalformedReply> {
        loop {
            let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > MAX_LINE {
                    return Err(MalformedReply("line too long".into()));
                }
                return Ok(None);
            };
            let (code, sep) = {
                let line = String::from_utf8_lossy(&self.buf[..=end]);
                let line = line.trim_end_matches(['\r', '\n']);
                let code = line
                    .get(..3)
                    .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|c| c.parse::<u16>().ok())
                    .filter(|c| (200..600).contains(c))
                    .ok_or_else(|| MalformedReply(line.to_string()))?;
                if self.code.is_some_and(|c| c != code) {
                    return Err(MalformedReply(line.to_string()));
                }
                let sep = line.as_bytes().get(3).copied();
                if !matches!(sep, None | Some(b' ') | Some(b'-')) {
                    return Err(MalformedReply(line.to_string()));
                }
                if self.code.is_some() {
                    self.texts.push('\n');
                }
                self.texts.push_str(line.get(4..).unwrap_or(""));
                (code, sep)
            };
            self.buf.drain(..=end);
            self.code = Some(code);
            if sep != Some(b'-') {
                self.code = None;
                return Ok(Some(Reply {
                    code,
                    texts: std::mem::take(&mut self.texts),
                }));
            }
        }
    }

    /// Drops bytes received but not yet read: after STARTTLS, anything the server sent in
    /// clear text before the handshake is an injection attempt.
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        self.texts.clear();
        self.code = None;
        n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Smtp,
    /// RFC 2033: LHLO, and one reply per accepted recipient after the final dot.
    Lmtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// `smtp+notls://`: never STARTTLS.
    Never,
    /// Plain `relay`: STARTTLS when offered, clear text otherwise.
    Opportunistic,
    /// `tls`, `smtp+tls://`, MTA-STS enforce: no STARTTLS, no mail.
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Params {
    pub proto: Proto,
    /// The name in EHLO/HELO/LHLO.
    pub helo: String,
    pub tls: TlsPolicy,
    /// The connection is TLS from the start (`smtps://`).
    pub implicit_tls: bool,
    pub auth: Option<Credentials>,
}

/// One message for the session: envelope and content (CRLF line ends, not dot-stuffed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// `None` is the null reverse-path.
    pub mail_from: Option<String>,
    pub rcpts: Vec<String>,
    /// Shared: a delivery that finds its pooled connection dead resends it on a new one.
    pub body: std::sync::Arc<[u8]>,
    /// The envelope asked for SMTPUTF8 or an address is not ASCII.
    pub smtputf8: bool,
    /// The content has 8-bit bytes (BODY=8BITMIME when the server offers it).
    pub eight_bit: bool,
}

impl Transaction {
    /// Whether SMTPUTF8 is needed: asked for, or any address is not ASCII (RFC 6531 §3.4).
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || self.mail_from.as_deref().is_some_and(|s| !s.is_ascii())
            || self.rcpts.iter().any(|r| !r.is_ascii())
    }
}

/// What the server said it can do in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub esmtp: bool,
    pub starttls: bool,
    pub pipelining: bool,
    /// `SIZE n`; `Some(0)` is "no fixed limit".
    pub size: Option<u64>,
    pub smtputf8: bool,
    pub eightbitmime: bool,
    pub auth: Vec<String>,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut e = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in reply.lines().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "STARTTLS" => e.starttls = true,
                "PIPELINING" => e.pipelining = true,
                "SIZE" => e.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "SMTPUTF8" => e.smtputf8 = true,
                "8BITMIME" => e.eightbitmime = true,
                "AUTH" => e.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        e
    }
}

/// Input to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Reply(Reply),
    /// The TLS handshake the session asked for with [`Action::StartTls`] finished.
    TlsUp,
}

/// A failure of the whole session (not of one recipient): the caller tries the next host
/// or defers every recipient with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The server refused for good (5xx greeting or AUTH): no point in retrying this host
    /// for this message, but other MX hosts may still be tried.
    pub permanent: bool,
}

/// Output of the session, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>),
    /// Start the TLS handshake now and report [`Event::TlsUp`].
    StartTls,
    /// Hello (and TLS and AUTH) done: [`Session::submit`] may be called.
    Ready,
    /// The transaction ended: one outcome per recipient, in order. The session is idle.
    Done(Vec<Outcome>),
    /// The session cannot go on; close the connection.
    Fail(Failure),
    /// QUIT was answered; close the connection.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// RSET at the head of a pipelined group on a used connection.
    Rset,
    Mail,
    Rcpt(usize),
    Data,
}

#[derive(Debug)]
struct Tx {
    t: Transaction,
    outcomes: Vec<Option<Outcome>>,
    accepted: Vec<usize>,
    /// Replies still owed, in order (several at once when pipelining).
    pending: VecDeque<Expect>,
    next_rcpt: usize,
    pipelined: bool,
    mail_failed: bool,
}

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Handshake,
    /// Waiting for 235 (after AUTH PLAIN or the LOGIN password).
    AuthResult,
    AuthLoginUser,
    AuthLoginPass,
    Idle,
    Rset(Box<Transaction>),
    Envelope(Box<Tx>),
    /// Body sent; replies owed: one (SMTP) or one per accepted recipient (LMTP).
    Body(Box<Tx>, usize),
    /// 354 came although no recipient was accepted (pipelining): a lone dot was sent.
    Discard(Box<Tx>),
    Quit,
    Closed,
}

#[derive(Debug)]
pub struct Session {
    params: Params,
    state: State,
    ext: Extensions,
    tls_active: bool,
    /// A transaction ran on this connection: the next one starts with RSET.
    used: bool,
    /// Messages handed over on this connection.
    pub messages: usize,
}

fn line(s: &str) -> Action {
    let mut v = Vec::with_capacity(s.len() + 2);
    v.extend_from_slice(s.as_bytes());
    v.extend_from_slice(b"\r\n");
    Action::Send(v)
}

fn fail(text: String) -> Vec<Action> {
    vec![Action::Fail(Failure {
        text,
        permanent: false,
    })]
}

impl Session {
    /// A session on a fresh connection: it waits for the greeting.
    pub fn new(params: Params) -> Session {
        let tls_active = params.implicit_tls;
        Session {
            params,
            state: State::Greeting,
            ext: Extensions::default(),
            tls_active,
            used: false,
            messages: 0,
        }
    }

    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn hello(&mut self) -> Vec<Action> {
        let verb = match self.params.proto {
            Proto::Smtp => "EHLO",
            Proto::Lmtp => "LHLO",
        };
        self.state = State::Ehlo;
        vec![line(&format!("{verb} {}", self.params.helo))]
    }

    fn close(&mut self, a: Vec<Action>) -> Vec<Action> {
        self.state = State::Closed;
        a
    }

    /// After the hello: STARTTLS, AUTH or ready, as the policy and the server say.
    fn after_hello(&mut self) -> Vec<Action> {
        if !self.tls_active {
            match self.params.tls {
                TlsPolicy::Never => {}
                TlsPolicy::Opportunistic if !self.ext.starttls => {}
                TlsPolicy::Required if !self.ext.starttls => {
                    return self.close(fail(
                        "530 5.7.10 the server does not offer STARTTLS, which is required".into(),
                    ));
                }
                _ => {
                    self.state = State::StartTls;
                    return vec![line("STARTTLS")];
                }
            }
        }
        let Some(creds) = self.params.auth.clone() else {
            self.state = State::Idle;
            return vec![Action::Ready];
        };
        if !self.tls_active {
            // Credentials never cross the wire in clear text.
            return self.close(fail(
                "530 5.7.10 refusing to send AUTH credentials without TLS".into(),
            ));
        }
        if self.ext.auth.iter().any(|m| m == "PLAIN") {
            self.state = State::AuthResult;
            // RFC 4616: authzid NUL authcid NUL passwd.
            let blob = format!("\0{}\0{}", creds.user, creds.password);
            vec![line(&format!("AUTH PLAIN {}", base64(blob.as_bytes())))]
        } else if self.ext.auth.iter().any(|m| m == "LOGIN") {
            self.state = State::AuthLoginUser;
            vec![line("AUTH LOGIN")]
        } else {
            self.close(fail(
                "530 5.7.0 the server offers no AUTH PLAIN or LOGIN for the configured credentials"
                    .into(),
            ))
        }
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        let reply = match ev {
            Event::TlsUp => {
                if !matches!(self.state, State::Handshake) {
                    return self.close(fail("TLS came up at an unexpected point".into()));
                }
                self.tls_active = true;
                // RFC 3207 §4.2: forget everything learned before TLS.
                self.ext = Extensions::default();
                return self.hello();
            }
            Event::Reply(r) => r,
        };
        let state = std::mem::replace(&mut self.state, State::Closed);
        match state {
            State::Greeting => {
                if reply.code == 220 {
                    self.hello()
                } else {
                    self.close(vec![Action::Fail(Failure {
                        text: format!("greeting: {}", reply.text()),
                        permanent: reply.code >= 500,
                    })])
                }
            }
            State::Ehlo => {
                if reply.is_positive() {
                    self.ext = Extensions::parse(&reply);
                    self.after_hello()
                } else if reply.code >= 500 && self.params.proto == Proto::Smtp {
                    // RFC 5321 §3.2: an old server; HELO it is, with no extensions.
                    self.state = State::Helo;
                    vec![line(&format!("HELO {}", self.params.helo))]
                } else {
                    self.close(fail(format!("EHLO: {}", reply.text())))
                }
            }
            State::Helo => {
                if reply.is_positive() {
                    self.ext = Extensions::default();
                    self.after_hello()
                } else {
                    self.close(fail(format!("HELO: {}", reply.text())))
                }
            }
            State::StartTls => {
                if reply.code == 220 {
                    self.state = State::Handshake;
                    vec![Action::StartTls]
                } else if self.params.tls == TlsPolicy::Required {
                    self.close(fail(format!("STARTTLS: {}", reply.text())))
                } else {
                    // Opportunistic: the server offered but refused; go on in clear text.
                    self.params.tls = TlsPolicy::Never;
                    self.after_hello()
                }
            }
            State::AuthResult => {
                if reply.code == 235 {
                    self.state = State::Idle;
                    vec![Action::Ready]
                } else {
                    self.close(vec![Action::Fail(Failure {
                        text: format!("AUTH refused: {}", reply.text()),
                        permanent: false,
                    })])
                }
            }
            State::AuthLoginUser => {
                if reply.code == 334 {
                    self.state = State::AuthLoginPass;
                    let user = self
                        .params
                        .auth
                        .as_ref()
                        .map(|c| c.user.clone())
                        .unwrap_or_default();
                    vec![line(&base64(user.as_bytes()))]
                } else {
                    self.close(fail(format!("AUTH LOGIN: {}", reply.text())))
                }
            }
            State::AuthLoginPass => {
                if reply.code == 334 {
                    self.state = State::AuthResult;
                    let pass = self
                        .params
                        .auth
                        .as_ref()
                        .map(|c| c.password.clone())
                        .unwrap_or_default();
                    vec![line(&base64(pass.as_bytes()))]
                } else {
                    self.close(fail(format!("AUTH LOGIN: {}", reply.text())))
                }
            }
            State::Rset(t) => {
                if reply.is_positive() {
                    self.start(*t)
                } else {
                    self.close(fail(format!("RSET: {}", reply.text())))
                }
            }
            State::Envelope(tx) => self.envelope_reply(tx, reply),
            State::Body(mut tx, owed) => {
                if self.params.proto == Proto::Lmtp {
                    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
                    let idx = tx.accepted[tx.accepted.len() - owed];
                    tx.outcomes[idx] = Some(reply.outcome());
                    if owed > 1 {
                        self.state = State::Body(tx, owed - 1);
                        return Vec::new();
                    }
                } else {
                    for &i in &tx.accepted {
                        tx.outcomes[i] = Some(reply.outcome());
                    }
                }
                self.finish(*tx)
            }
            State::Discard(tx) => self.finish(*tx),
            State::Quit => self.close(vec![Action::Closed]),
            State::Idle | State::Handshake | State::Closed => {
                self.close(fail(format!("unexpected reply: {}", reply.text())))
            }
        }
    }

    /// Starts a transaction; call only when idle (after [`Action::Ready`] or [`Action::Done`]).
    pub fn submit(&mut self, t: Transaction) -> Vec<Action> {
        if !self.is_idle() {
            let n = t.rcpts.len();
            return vec![Action::Done(vec![
                Outcome::TempFail(
                    "451 4.3.0 the connection is not ready for a message".into()
                );
                n
            ])];
        }
        if self.used && !self.ext.pipelining {
            self.state = State::Rset(Box::new(t));
            return vec![line("RSET")];
        }
        self.start(t)
    }

    /// Sends QUIT; the session ends with [`Action::Closed`].
    pub fn quit(&mut self) -> Vec<Action> {
        self.state = State::Quit;
        vec![line("QUIT")]
    }

    fn start(&mut self, t: Transaction) -> Vec<Action> {
        // RFC 2920 §3.1: RSET may open the group, so a reused connection costs no extra
        // round trip (the RSET still clears what an aborted transaction left, and a dead
        // connection still fails before anything is delivered).
        let rset = self.used && self.ext.pipelining;
        self.used = true;
        let n = t.rcpts.len();
        let refuse = |o: Outcome| vec![Action::Done(vec![o; n])];
        self.state = State::Idle;
        let utf8 = t.needs_smtputf8();
        if utf8 && !self.ext.smtputf8 {
            // RFC 6531 §3.2: without the extension the addresses cannot be transmitted.
            return refuse(Outcome::PermFail(
                "553 5.6.7 the remote server does not support SMTPUTF8, which this message needs"
                    .into(),
            ));
        }
        let size = t.body.len() as u64;
        if let Some(max) = self.ext.size.filter(|&m| m > 0)
            && size > max
        {
            // RFC 1870 §6.2: the server will refuse it; say so without sending it.
            return refuse(Outcome::PermFail(format!(
                "552 5.3.4 message of {size} bytes exceeds the remote server's limit of {max}"
            )));
        }
        let pipelined = self.ext.pipelining;
        let mut tx = Tx {
            outcomes: vec![None; n],
            accepted: Vec::new(),
            pending: VecDeque::with_capacity(n + 3),
            next_rcpt: 0,
            pipelined,
            mail_failed: false,
            t,
        };
        // The whole group goes out in one write, built in one buffer.
        let mut out = Vec::with_capacity(
            64 + tx.t.mail_from.as_ref().map_or(0, String::len)
                + tx.t.rcpts.iter().map(|r| r.len() + 12).sum::<usize>(),
        );
        if rset {
            tx.pending.push_back(Expect::Rset);
            out.extend_from_slice(b"RSET\r\n");
        }
        tx.pending.push_back(Expect::Mail);
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(tx.t.mail_from.as_deref().unwrap_or("").as_bytes());
        out.push(b'>');
        if self.ext.size.is_some() {
            let _ = write!(out, " SIZE={size}");
        }
        if tx.t.eight_bit && self.ext.eightbitmime {
            out.extend_from_slice(b" BODY=8BITMIME");
        }
        if utf8 {
            out.extend_from_slice(b" SMTPUTF8");
        }
        out.extend_from_slice(b"\r\n");
        if pipelined {
            // RFC 2920 §3.1: MAIL, every RCPT and DATA in one group.
            for (i, r) in tx.t.rcpts.iter().enumerate() {
                out.extend_from_slice(b"RCPT TO:<");
                out.extend_from_slice(r.as_bytes());
                out.extend_from_slice(b">\r\n");
                tx.pending.push_back(Expect::Rcpt(i));
            }
            tx.next_rcpt = n;
            out.extend_from_slice(b"DATA\r\n");
            tx.pending.push_back(Expect::Data);
        }
        self.state = State::Envelope(Box::new(tx));
        vec![Action::Send(out)]
    }

    fn envelope_reply(&mut self, mut tx: Box<Tx>, reply: Reply) -> Vec<Action> {
        let Some(expect) = tx.pending.pop_front() else {
            return self.close(fail(format!("unexpected reply: {}", reply.text())));
        };
        match expect {
            Expect::Rset => {
                if !reply.is_positive() {
                    return self.close(fail(format!("RSET: {}", reply.text())));
                }
            }
            Expect::Mail => {
                if !reply.is_positive() {
                    tx.mail_failed = true;
                    let o = reply.outcome();
                    for slot in &mut tx.outcomes {
                        *slot = Some(o.clone());
                    }
                }
            }
            Expect::Rcpt(i) => {
                if tx.mail_failed {
                    // Already answered by the MAIL reply (pipelined RCPTs after it fail too).
                } else if reply.is_positive() {
                    tx.accepted.push(i);
                } else {
                    tx.outcomes[i] = Some(reply.outcome());
                }
            }
            Expect::Data => {
                if reply.code == 354 {
                    if tx.accepted.is_empty() || tx.mail_failed {
                        // RFC 2920 §3.1: the server accepted DATA with no valid recipient;
                        // end it with an empty message and let it fail.
                        self.state = State::Discard(tx);
                        return vec![line(".")];
                    }
                    let mut body = crate::deliver::lmtp::dot_stuff(&tx.t.body);
                    body.extend_from_slice(b".\r\n");
                    let owed = match self.params.proto {
                        Proto::Smtp => 1,
                        Proto::Lmtp => tx.accepted.len(),
                    };
                    self.state = State::Body(tx, owed);
                    return vec![Action::Send(body)];
                }
                if !tx.mail_failed {
                    for &i in &tx.accepted {
                        tx.outcomes[i] = Some(reply.outcome());
                    }
                }
                return self.finish(*tx);
            }
        }
        if !tx.pending.is_empty() {
            self.state = State::Envelope(tx);
            return Vec::new();
        }
        // Not pipelining: one command at a time.
        if tx.mail_failed {
            return self.finish(*tx);
        }
        if tx.next_rcpt < tx.t.rcpts.len() {
            let i = tx.next_rcpt;
            tx.next_rcpt += 1;
            tx.pending.push_back(Expect::Rcpt(i));
            let cmd = format!("RCPT TO:<{}>", tx.t.rcpts[i]);
            self.state = State::Envelope(tx);
            return vec![line(&cmd)];
        }
        if tx.accepted.is_empty() {
            return self.finish(*tx);
        }
        debug_assert!(!tx.pipelined);
        tx.pending.push_back(Expect::Data);
        self.state = State::Envelope(tx);
        vec![line("DATA")]
    }

    fn finish(&mut self, tx: Tx) -> Vec<Action> {
        self.messages += 1;
        self.state = State::Idle;
        let outcomes = tx
            .outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Outcome::TempFail(
                        "451 4.4.0 the server gave no reply for this recipient".into(),
                    )
                })
            })
            .collect();
        vec![Action::Done(outcomes)]
    }
}

/// RFC 4648 base64 with padding, for AUTH.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
