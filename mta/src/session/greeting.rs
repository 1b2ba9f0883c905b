//! The start of a session: the `connected` log line and the 220 banner (RFC 5321 §4.3.1).
//! With implicit TLS (`smtps`) the handshake is already done and logged first.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Action, Mode, Peer, Session, SessionConfig, reply};
use crate::clock::Clock;
use crate::envelope::Origin;

impl Session {
    /// Starts a session; the returned actions hold the banner.
    pub fn new(
        cfg: Arc<SessionConfig>,
        mut peer: Peer,
        clock: Arc<dyn Clock>,
    ) -> (Session, Vec<Action>) {
        let tls = peer.tls.take();
        let mut s = Session {
            cfg,
            clock,
            peer,
            tls: None,
            helo: None,
            auth_user: None,
            tx: None,
            pending_tx: None,
            pending_auth_user: None,
            pending_rcpt: None,
            pending_phase: None,
            mode: Mode::Command,
            waiting: None,
            inbuf: Vec::new(),
            discarding: false,
            mails: 0,
            errors: 0,
            last_command: String::new(),
            out: VecDeque::new(),
            closed: false,
            #[cfg(test)]
            logs: Vec::new(),
        };
        let host = s.peer.rdns.as_deref().unwrap_or("<unknown>");
        let line = match &s.peer.origin {
            Origin::Inet(sa) => format!("smtp connected address={} host={host}", sa.ip()),
            Origin::Local => format!("smtp connected address=local host={host}"),
        };
        s.log(line);
        if let Some(info) = tls {
            s.log_tls(&info);
            s.tls = Some(info);
        }
        let banner = reply::banner(&s.cfg.hostname, &s.cfg.banner);
        s.out.push_back(Action::Reply(banner));
        let out = std::mem::take(&mut s.out);
        (s, out.into())
    }
}
