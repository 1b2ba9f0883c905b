//! Transcript tests for the session core: `t.send("RCPT TO:<x@y>"); t.expect("550 5.1.1 *")`.
//!
//! The harness plays the shell and a simple backend unless told otherwise: every sender
//! is accepted; a recipient whose local part starts with `unknown` gets
//! `550 5.1.1 Invalid recipient`, `reject…` gets `550 5.7.1`, `tempfail…` a 451, anyone
//! else is accepted for action `deliver`; `alice`/`secret` authenticates; STARTTLS
//! succeeds with TLSv1.3; each message is committed as `0000000N`.

mod auth;
mod data;
mod envelope;
mod filters;
mod fuzz;
mod greeting;
mod limits;
mod smuggling;
mod starttls;
mod submission;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::ManualClock;

pub(super) fn tls13() -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        bits: 256,
        sni: Some("mx.example.org".into()),
        client_cert: None,
    }
}

pub(super) fn config() -> SessionConfig {
    SessionConfig::new("mx.example.org")
}

/// One finished message as the queue saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    pub envelope: Envelope,
    pub body: Vec<u8>,
}

pub(super) struct T {
    pub s: Session,
    /// Replies not yet expected, as wire text without the final CRLF.
    replies: VecDeque<String>,
    /// Non-reply actions in order (for tests that look at the action stream).
    pub actions: Vec<Action>,
    /// Answer requests automatically.
    pub auto: bool,
    /// Requests waiting for a manual answer.
    pub pending: VecDeque<Action>,
    current: Option<Stored>,
    pub stored: Vec<Stored>,
    pub aborted: usize,
    pub closed: bool,
    pub starttls_count: usize,
    commits: usize,
}

impl T {
    pub fn new(cfg: SessionConfig) -> T {
        T::with_peer(cfg, "192.0.2.7:40000".parse().unwrap(), None)
    }

    pub fn with_peer(cfg: SessionConfig, addr: SocketAddr, tls: Option<TlsInfo>) -> T {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_255_200),
        ));
        let peer = Peer {
            session_id: 0x1234_5678_9abc_def0,
            origin: Origin::Inet(addr),
            rdns: Some("client.example.net".into()),
            tls: tls.map(Box::new),
        };
        let (s, actions) = Session::new(Arc::new(cfg), peer, clock);
        let mut t = T {
            s,
            replies: VecDeque::new(),
            actions: Vec::new(),
            auto: true,
            pending: VecDeque::new(),
            current: None,
            stored: Vec::new(),
            aborted: 0,
            closed: false,
            starttls_count: 0,
            commits: 0,
        };
        t.run(actions);
        t
    }

    /// A session past the banner and EHLO.
    pub fn ehlo(cfg: SessionConfig) -> T {
        let mut t = T::new(cfg);
        t.expect("220 mx.example.org ESMTP fugu");
        t.send("EHLO client.example.net");
        t.expect("250-mx.example.org Hello*");
        t
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let actions = self.s.handle(Event::Input(bytes));
        self.run(actions);
    }

    pub fn event(&mut self, ev: Event<'_>) {
        let actions = self.s.handle(ev);
        self.run(actions);
    }

    fn run(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if let Action::Reply(r) = &a {
                let wire = r.to_wire();
                self.replies
                    .push_back(wire.trim_end_matches("\r\n").replace("\r\n", "\n"));
                continue;
            }
            self.actions.push(a.clone());
            match &a {
                Action::MessageBegin(env) => {
                    self.current = Some(Stored {
                        envelope: (**env).clone(),
                        body: Vec::new(),
                    })
                }
                Action::MessageChunk(c) => {
                    if let Some(cur) = self.current.as_mut() {
                        cur.body.extend_from_slice(c)
                    }
                }
                Action::MessageAbort => {
                    self.aborted += 1;
                    self.current = None;
                }
                Action::Close => self.closed = true,
                Action::StartTls => self.starttls_count += 1,
                // Filter verdicts are always given by the test (see `filters.rs`).
                Action::FilterPhase { .. } => {
                    self.pending.push_back(a);
                    continue;
                }
                _ => {}
            }
            let request = matches!(
                a,
                Action::StartTls
                    | Action::CheckSender { .. }
                    | Action::CheckRecipient { .. }
                    | Action::VerifyCredentials { .. }
                    | Action::MessageEnd
            );
            if !request {
                continue;
            }
            if !self.auto {
                self.pending.push_back(a);
                continue;
            }
            let more = self.answer(&a);
            queue.extend(more);
        }
    }

    fn answer(&mut self, a: &Action) -> Vec<Action> {
        match a {
            Action::StartTls => self.s.handle(Event::TlsEstablished(tls13())),
            Action::CheckSender { .. } => {
                self.s.handle(Event::SenderVerdict(SenderVerdict::Accept))
            }
            Action::CheckRecipient { address, .. } => {
                let v = if address.starts_with("unknown") {
                    RecipientVerdict::Reject(reply::invalid_recipient(address))
                } else if address.starts_with("reject") {
                    RecipientVerdict::Reject(reply::recipient_rejected(address))
                } else if address.starts_with("tempfail") {
                    RecipientVerdict::TempFail(reply::recipient_tempfail(address))
                } else {
                    RecipientVerdict::Accept {
                        targets: vec![crate::envelope::Target {
                            action: "deliver".into(),
                            dest: address.clone(),
                            user: None,
                        }],
                    }
                };
                self.s.handle(Event::RecipientVerdict(v))
            }
            Action::VerifyCredentials { user, password } => {
                let v = if user == "alice" && password == "secret" {
                    AuthVerdict::Ok
                } else {
                    AuthVerdict::Fail
                };
                self.s.handle(Event::AuthVerdict(v))
            }
            Action::MessageEnd => {
                self.commit_current();
                self.commits += 1;
                let id = format!("{:08x}", self.commits);
                self.s.handle(Event::MessageCommitted { queue_id: id })
            }
            _ => Vec::new(),
        }
    }

    pub fn commit_current(&mut self) {
        if let Some(cur) = self.current.take() {
            self.stored.push(cur);
        }
    }

    /// Answers the oldest manual request the way auto mode would.
    pub fn answer_pending(&mut self) {
        let a = self.pending.pop_front().expect("a pending request");
        let more = self.answer(&a);
        self.run(more);
    }

    /// Takes the next reply and matches it against `pattern` (`*` matches anything;
    /// multi-line replies are joined with `\n`).
    #[track_caller]
    pub fn expect(&mut self, pattern: &str) {
        let got = self
            .replies
            .pop_front()
            .unwrap_or_else(|| panic!("expected a reply matching {pattern:?}, got none"));
        assert!(
            glob(pattern, &got),
            "reply {got:?} does not match {pattern:?}"
        );
    }

    /// The next reply, whole.
    pub fn next_reply(&mut self) -> String {
        self.replies.pop_front().expect("a reply")
    }

    #[track_caller]
    pub fn expect_silence(&mut self) {
        assert!(
            self.replies.is_empty(),
            "unexpected replies: {:?}",
            self.replies
        );
    }

    pub fn logs(&self) -> &[String] {
        &self.s.logs
    }

    /// Standard transaction up to DATA's 354.
    pub fn start_data(&mut self, rcpt: &str) {
        self.send("MAIL FROM:<sender@client.example.net>");
        self.expect("250 2.0.0 Ok");
        self.send(&format!("RCPT TO:<{rcpt}>"));
        self.expect("250 2.1.5 *");
        self.send("DATA");
        self.expect("354 *");
    }

    /// The body of the last stored message without our Received header.
    pub fn last_body(&self) -> Vec<u8> {
        let body = &self.stored.last().expect("a stored message").body;
        strip_received(body).to_vec()
    }
}

pub(super) fn strip_received(body: &[u8]) -> &[u8] {
    // The Received header ends at the first CRLF not followed by a tab.
    let mut i = 0;
    while i + 2 < body.len() {
        if &body[i..i + 2] == b"\r\n" && body[i + 2] != b'\t' {
            return &body[i + 2..];
        }
        i += 1;
    }
    &body[body.len()..]
}

pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Golden files under `mta/tests/golden/session/`, re-blessed with `BLESS=1`.
#[track_caller]
pub(super) fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/session")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create)", path.display()));
    assert_eq!(expected, actual, "golden file {} differs", path.display());
}
