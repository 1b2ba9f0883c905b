//! MAIL FROM (RFC 5321 §4.1.1.2) with the parameters of SIZE (RFC 1870), 8BITMIME
//! (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and AUTH= (RFC 4954 §5, ignored).

use super::{
    Action, AuthPolicy, FilterPhase, SenderVerdict, Session, TlsPolicy, Transaction, Wait, address,
    filter, reply,
};
use crate::envelope::{BodyType, DsnRet};

/// RFC 3461 §4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;

impl Session {
    pub(super) fn mail(&mut self, args: Option<&str>) {
        if self.helo.is_none() {
            return self.reply(reply::bad_sequence());
        }
        if self.tx.is_some() {
            return self.reply(reply::nested_mail());
        }
        if self.cfg.tls == TlsPolicy::StartTlsRequired && self.tls.is_none() {
            return self.reply(reply::starttls_required());
        }
        if self.cfg.auth == AuthPolicy::Required && self.auth_user.is_none() {
            return self.reply(reply::auth_required());
        }
        if self.mails >= self.cfg.max_mails {
            return self.reply(reply::too_many_messages());
        }
        // RFC 5321 §4.1.1.2: `MAIL FROM:<path>`, nothing between the colon and the path.
        let Some(args) = args.filter(|a| a.starts_with('<')) else {
            return self.reply(reply::mail_syntax());
        };
        let Some(path) = address::parse_path(args, &self.cfg.hostname) else {
            return self.reply(reply::sender_syntax());
        };
        let mut tx = Transaction {
            mail_from: path.mailbox.as_ref().map(|m| m.to_address()),
            ..Transaction::default()
        };
        for param in path.rest.split(' ').filter(|p| !p.is_empty()) {
            if let Err(r) = self.mail_param(&mut tx, param) {
                return self.reply(r);
            }
        }
        if path.mailbox.as_ref().is_some_and(|m| !m.is_ascii()) && !tx.smtputf8 {
            return self.reply(reply::utf8_needs_smtputf8());
        }
        let param = tx.mail_from.clone().unwrap_or_default();
        self.pending_tx = Some(Box::new(tx));
        self.filter_phase(FilterPhase::MailFrom, param);
    }

    /// MAIL once the filters let it through: `address` may be a filter's rewrite, which
    /// must pass the same syntax checks as the client's.
    pub(super) fn mail_proceed(&mut self, address: String) {
        let Some(mut tx) = self.pending_tx.take() else {
            return;
        };
        if tx.mail_from.as_deref().unwrap_or("") != address {
            match filter::rewritten_address(&address, &self.cfg.hostname) {
                Some(m) if m.as_ref().is_none_or(|m| m.is_ascii() || tx.smtputf8) => {
                    tx.mail_from = m.map(|m| m.to_address());
                }
                _ => return self.reply(reply::sender_syntax()),
            }
        }
        let address = tx.mail_from.clone();
        self.pending_tx = Some(tx);
        self.out.push_back(Action::CheckSender {
            address: address.clone(),
            context: self.context(address),
        });
        self.waiting = Some(Wait::Sender);
    }

    fn mail_param(&self, tx: &mut Transaction, param: &str) -> Result<(), reply::Reply> {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (param.to_ascii_uppercase(), None),
        };
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                let size: u64 = v.parse().map_err(|_| reply::bad_option_value(param))?;
                if size > self.cfg.max_message_size {
                    return Err(reply::size_exceeds_limit());
                }
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {
                tx.body_type = BodyType::SevenBit
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                tx.body_type = BodyType::EightBitMime
            }
            ("SMTPUTF8", None) => tx.smtputf8 = true,
            ("RET", Some(v)) if self.cfg.dsn => {
                tx.dsn_ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => DsnRet::Full,
                    "HDRS" => DsnRet::Headers,
                    _ => return Err(reply::bad_option_value(param)),
                })
            }
            ("ENVID", Some(v)) if self.cfg.dsn => {
                if v.is_empty() || v.len() > MAX_ENVID || !address::valid_xtext(v) {
                    return Err(reply::bad_option_value(param));
                }
                tx.dsn_envid = Some(v.to_string());
            }
            ("AUTH", Some(_)) => {}
            _ => return Err(reply::unsupported_option(param)),
        }
        Ok(())
    }

    pub(super) fn sender_verdict(&mut self, verdict: SenderVerdict) {
        if self.waiting != Some(Wait::Sender) {
            return;
        }
        self.waiting = None;
        let tx = self.pending_tx.take().map(|t| *t);
        match verdict {
            SenderVerdict::Accept => {
                self.tx = tx;
                self.reply(reply::sender_ok());
            }
            SenderVerdict::Reject(r) | SenderVerdict::TempFail(r) => self.reply(r),
        }
    }
}
