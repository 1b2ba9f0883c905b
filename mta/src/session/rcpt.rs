//! RCPT TO (RFC 5321 §4.1.1.3) with the DSN parameters NOTIFY and ORCPT (RFC 3461 §4).
//! Every recipient is put to the rules before the reply ([`Action::CheckRecipient`]):
//! unknown users get a 550 at RCPT time, never an accept-then-bounce.

use super::{Action, FilterPhase, RecipientVerdict, Session, Wait, address, filter, reply};
use crate::envelope::{DsnNotify, Recipient};

/// RFC 3461 §4.2: ORCPT is at most 500 characters.
const MAX_ORCPT: usize = 500;

impl Session {
    pub(super) fn rcpt(&mut self, args: Option<&str>) {
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(reply::no_mail_from());
        };
        if tx.message.is_some() {
            return self.reply(reply::bad_sequence());
        }
        let smtputf8 = tx.smtputf8;
        let count = tx.recipients.len();
        let Some(args) = args.filter(|a| a.starts_with('<')) else {
            return self.reply(reply::rcpt_syntax());
        };
        if count >= self.cfg.max_rcpt {
            return self.reply(reply::too_many_recipients());
        }
        let Some(mailbox) = address::parse_path(args, &self.cfg.hostname)
            .and_then(|p| p.mailbox.map(|m| (m, p.rest)))
        else {
            return self.reply(reply::recipient_syntax());
        };
        let (mailbox, rest) = mailbox;
        if !mailbox.is_ascii() && !smtputf8 {
            return self.reply(reply::utf8_needs_smtputf8());
        }
        let mut rcpt = Recipient {
            address: mailbox.to_address(),
            action: String::new(),
            dest: None,
            user: None,
            orcpt: None,
            notify: None,
        };
        for param in rest.split(' ').filter(|p| !p.is_empty()) {
            if let Err(r) = self.rcpt_param(&mut rcpt, param) {
                return self.reply(r);
            }
        }
        let param = rcpt.address.clone();
        self.pending_rcpt = Some(Box::new(rcpt));
        self.filter_phase(FilterPhase::RcptTo, param);
    }

    /// RCPT once the filters let it through: `address` may be a filter's rewrite, which
    /// must pass the same syntax checks as the client's.
    pub(super) fn rcpt_proceed(&mut self, address: String) {
        let Some(mut rcpt) = self.pending_rcpt.take() else {
            return;
        };
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        let (smtputf8, mail_from) = (tx.smtputf8, tx.mail_from.clone());
        if rcpt.address != address {
            match filter::rewritten_address(&address, &self.cfg.hostname) {
                Some(Some(m)) if m.is_ascii() || smtputf8 => rcpt.address = m.to_address(),
                _ => return self.reply(reply::recipient_syntax()),
            }
        }
        let address = rcpt.address.clone();
        self.pending_rcpt = Some(rcpt);
        self.out.push_back(Action::CheckRecipient {
            address,
            context: self.context(mail_from),
        });
        self.waiting = Some(Wait::Recipient);
    }

    fn rcpt_param(&self, rcpt: &mut Recipient, param: &str) -> Result<(), reply::Reply> {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v),
            None => return Err(reply::unsupported_option(param)),
        };
        match key.as_str() {
            "NOTIFY" if self.cfg.dsn => {
                let mut n = DsnNotify::default();
                for word in value.split(',') {
                    match word.to_ascii_uppercase().as_str() {
                        "NEVER" => n.never = true,
                        "SUCCESS" => n.success = true,
                        "FAILURE" => n.failure = true,
                        "DELAY" => n.delay = true,
                        _ => return Err(reply::bad_option_value(param)),
                    }
                }
                if n.never && (n.success || n.failure || n.delay) {
                    return Err(reply::notify_never_combined());
                }
                rcpt.notify = Some(n);
            }
            "ORCPT" if self.cfg.dsn => {
                let ok = value.len() <= MAX_ORCPT
                    && value.split_once(';').is_some_and(|(kind, addr)| {
                        !kind.is_empty()
                            && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            && !addr.is_empty()
                            && address::valid_xtext(addr)
                    });
                if !ok {
                    return Err(reply::orcpt_syntax());
                }
                rcpt.orcpt = Some(value.to_string());
            }
            _ => return Err(reply::unsupported_option(param)),
        }
        Ok(())
    }

    pub(super) fn recipient_verdict(&mut self, verdict: RecipientVerdict) {
        if self.waiting != Some(Wait::Recipient) {
            return;
        }
        self.waiting = None;
        let rcpt = self.pending_rcpt.take();
        match verdict {
            RecipientVerdict::Accept { targets } => {
                if let (Some(tx), Some(rcpt)) = (self.tx.as_mut(), rcpt) {
                    // Most mail has one recipient: room for exactly the first, not the
                    // four a first push would make (a quarter of a KiB per session).
                    if tx.recipients.is_empty() {
                        tx.recipients.reserve_exact(targets.len());
                    }
                    for t in targets {
                        let dest = (t.dest != rcpt.address).then_some(t.dest);
                        tx.recipients.push(Recipient {
                            action: t.action,
                            dest,
                            user: t.user,
                            ..(*rcpt).clone()
                        });
                    }
                }
                self.reply(reply::recipient_ok());
            }
            RecipientVerdict::Reject(r) | RecipientVerdict::TempFail(r) => self.reply(r),
        }
    }
}
