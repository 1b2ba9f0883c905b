//! STARTTLS (RFC 3207). After the 220 the session reads nothing until the handshake is
//! done: bytes pipelined after the command are discarded (the 2011 STARTTLS command
//! injection, CVE-2011-0411 and kin), and all knowledge from the plaintext phase (HELO,
//! transaction) is forgotten (RFC 3207 §4.2).

use super::{Action, FilterPhase, Mode, Session, TlsInfo, Wait, reply};

impl Session {
    pub(super) fn starttls(&mut self, args: Option<&str>) {
        if self.helo.is_none() || self.tx.is_some() {
            return self.reply(reply::bad_sequence());
        }
        if self.tls.is_some() {
            return self.reply(reply::already_secured());
        }
        if !self.starttls_offered() {
            return self.reply(reply::command_not_supported());
        }
        if args.is_some() {
            return self.reply(reply::no_parameters_allowed());
        }
        self.filter_phase(FilterPhase::StartTls, String::new());
    }

    /// STARTTLS once the filters let it through: the 220, then the handshake.
    pub(super) fn starttls_proceed(&mut self) {
        self.reply(reply::ready_to_start_tls());
        self.out.push_back(Action::StartTls);
        self.waiting = Some(Wait::Tls);
    }

    pub(super) fn tls_established(&mut self, info: TlsInfo) {
        if self.waiting != Some(Wait::Tls) {
            return;
        }
        self.waiting = None;
        self.log_tls(&info);
        self.tls = Some(Box::new(info));
        self.helo = None;
        self.tx = None;
        self.mode = Mode::Command;
        self.inbuf.clear();
    }

    pub(super) fn log_tls(&mut self, info: &TlsInfo) {
        // `verify=ok`: the client certificate chained to the listener's `ca`.
        let verify = match &info.client_cert {
            Some(c) if c.verified => " verify=ok",
            _ => "",
        };
        self.log(format!(
            "smtp tls ciphers={}:{}:{}{verify}",
            info.version, info.cipher, info.bits
        ));
        if let Some(cert) = &info.client_cert {
            self.log(format!(
                "smtp cert-check result=\"{}\" fingerprint=\"{}\"",
                if cert.verified {
                    "verified"
                } else {
                    "unchecked"
                },
                cert.fingerprint
            ));
        }
    }
}
