//! HELO and EHLO (RFC 5321 §4.1.1.1), with OpenSMTPD's checks: one greeting per session
//! (again only after STARTTLS), a valid domain or address literal as argument.

use super::{AuthPolicy, FilterPhase, Helo, Session, TlsPolicy, address, received, reply};

impl Session {
    pub(super) fn helo(&mut self, args: Option<&str>, extended: bool) {
        let verb = if extended { "EHLO" } else { "HELO" };
        if self.helo.is_some() {
            return self.reply(reply::already_identified());
        }
        let Some(name) = args else {
            return self.reply(reply::helo_requires_domain(verb));
        };
        if !address::valid_domain(name) {
            return self.reply(reply::invalid_domain_name());
        }
        let phase = if extended {
            FilterPhase::Ehlo
        } else {
            FilterPhase::Helo
        };
        self.filter_phase(phase, name.to_string());
    }

    /// HELO/EHLO once the filters let it through: `name` may be a filter's rewrite.
    pub(super) fn helo_proceed(&mut self, name: String, extended: bool) {
        if !address::valid_domain(&name) {
            return self.reply(reply::invalid_domain_name());
        }
        let peer = received::PeerLiteral(&self.peer.origin);
        let answer = if extended {
            let greeting = reply::hello(&self.cfg.hostname, &name, &peer);
            reply::ehlo(greeting, self.capabilities())
        } else {
            reply::helo(&self.cfg.hostname, &name, &peer)
        };
        self.helo = Some(Helo { name, extended });
        self.reply(answer);
    }

    /// The EHLO keywords, in OpenSMTPD's order with ours added before HELP.
    pub(super) fn capabilities(&self) -> Vec<String> {
        let mut caps = vec![
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            format!("SIZE {}", self.cfg.max_message_size),
        ];
        if self.cfg.dsn {
            caps.push("DSN".into());
        }
        caps.push("PIPELINING".into());
        caps.push("CHUNKING".into());
        caps.push("SMTPUTF8".into());
        if self.starttls_offered() {
            caps.push("STARTTLS".into());
        }
        if self.auth_offered() {
            caps.push("AUTH PLAIN LOGIN".into());
        }
        caps.push("HELP".into());
        caps
    }

    pub(super) fn starttls_offered(&self) -> bool {
        matches!(
            self.cfg.tls,
            TlsPolicy::StartTls | TlsPolicy::StartTlsRequired
        ) && self.tls.is_none()
    }

    /// OpenSMTPD's ADVERTISE_AUTH: a listener with auth, a TLS session, not yet
    /// authenticated.
    pub(super) fn auth_offered(&self) -> bool {
        self.cfg.auth != AuthPolicy::None && self.tls.is_some() && self.auth_user.is_none()
    }
}
