//! Filter phases (smtpd-filters(7)). On a listener with filters the session puts HELO,
//! EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET, QUIT and NOOP to them once the command passed
//! its own checks, as OpenSMTPD's `smtp_filter_phase` does, and reads no further input
//! until the verdict: a reject answers the command itself and leaves the session where
//! it was (a refused EHLO leaves it before HELO). HELP and WIZ are registrable phases
//! that OpenSMTPD never asks, and neither does fugu. Without filters nothing is asked.

use super::{Action, FilterPhase, FilterVerdict, Mode, Session, Wait, address, reply};

/// A filter's rewritten address, bare or in angle brackets: `Some(None)` is `<>`, `None`
/// a rewrite that is not an address (or carries parameters).
pub(super) fn rewritten_address(param: &str, hostname: &str) -> Option<Option<address::Mailbox>> {
    let path = if param.starts_with('<') {
        param.to_string()
    } else {
        format!("<{param}>")
    };
    let parsed = address::parse_path(&path, hostname)?;
    if !parsed.rest.trim().is_empty() {
        return None;
    }
    Some(parsed.mailbox)
}

impl Session {
    /// Puts a command to the filters, or carries it out at once on a listener without.
    pub(super) fn filter_phase(&mut self, phase: FilterPhase, param: String) {
        if !self.cfg.filtered {
            return self.proceed(phase, param);
        }
        self.out.push_back(Action::FilterPhase {
            phase,
            param: param.clone(),
        });
        self.pending_phase = Some((phase, param));
        self.waiting = Some(Wait::Filter);
    }

    pub(super) fn filter_verdict(&mut self, verdict: FilterVerdict) {
        if self.waiting != Some(Wait::Filter) {
            return;
        }
        self.waiting = None;
        let Some((phase, param)) = self.pending_phase.take() else {
            return;
        };
        match verdict {
            FilterVerdict::Proceed => self.proceed(phase, param),
            FilterVerdict::Rewrite(p) => self.proceed(phase, p),
            // smtpd-filters(7): any 421 closes the session.
            FilterVerdict::Reject(r) if r.code == 421 => self.filter_disconnect(r),
            FilterVerdict::Reject(r) => {
                self.pending_tx = None;
                self.pending_rcpt = None;
                self.reply(r)
            }
            FilterVerdict::Disconnect(r) => self.filter_disconnect(r),
        }
    }

    fn filter_disconnect(&mut self, r: reply::Reply) {
        self.terminate(r, "filter");
    }

    /// A client line as the `protocol-client` report shows it: OpenSMTPD masks AUTH
    /// continuation lines and the initial response of AUTH PLAIN; fugu masks any AUTH
    /// initial response (AUTH LOGIN's carries the user name).
    pub(super) fn client_line(&self, text: &str) -> String {
        const MASK: &str = "********";
        if matches!(
            self.mode,
            Mode::AuthPlain | Mode::AuthLoginUser | Mode::AuthLoginPass { .. }
        ) {
            return MASK.to_string();
        }
        let mut words = text.splitn(3, [' ', '\t']);
        match (words.next(), words.next(), words.next()) {
            (Some(verb), Some(mech), Some(_)) if verb.eq_ignore_ascii_case("AUTH") => {
                format!("{verb} {mech} {MASK}")
            }
            _ => text.to_string(),
        }
    }

    /// The command itself, once the filters let it through.
    fn proceed(&mut self, phase: FilterPhase, param: String) {
        match phase {
            FilterPhase::Helo => self.helo_proceed(param, false),
            FilterPhase::Ehlo => self.helo_proceed(param, true),
            FilterPhase::StartTls => self.starttls_proceed(),
            FilterPhase::Auth => self.auth_proceed(&param),
            FilterPhase::MailFrom => self.mail_proceed(param),
            FilterPhase::RcptTo => self.rcpt_proceed(param),
            FilterPhase::Rset => self.rset_proceed(),
            FilterPhase::Quit => self.quit_proceed(),
            FilterPhase::Noop => self.reply(reply::ok()),
        }
    }
}
