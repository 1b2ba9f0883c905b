//! fugu's anti-abuse directives (extensions, not in OpenSMTPD):
//!
//! ```text
//! access (block|allow) (connect|sender|recipient) <table>
//! access ban [<table>] [auth-failures N] [errors N] [within DELAY] [for DELAY]
//! greylist [pass DELAY] [grey-expiry DELAY] [white-expiry DELAY]
//! dnsbl zone NAME [weight N]
//! dnsbl threshold N
//! ```

use super::{P, Parser, Stmt, delay};
use crate::access::{AccessList, BanSettings, DnsblZone, GreylistSettings, ListAction, Phase};
use crate::config::{TableRef, TableSource};

impl Parser<'_> {
    pub(super) fn access(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("ban") {
            return self.access_ban(st);
        }
        let action = if st.eat_kw("block") {
            ListAction::Block
        } else if st.eat_kw("allow") {
            ListAction::Allow
        } else {
            return st.err(format!(
                "syntax error: expected `block`, `allow` or `ban`, found {}",
                st.describe()
            ));
        };
        let phase = if st.eat_kw("connect") {
            Phase::Connect
        } else if st.eat_kw("sender") {
            Phase::Sender
        } else if st.eat_kw("recipient") {
            Phase::Recipient
        } else {
            return st.err(format!(
                "syntax error: expected `connect`, `sender` or `recipient`, found {}",
                st.describe()
            ));
        };
        let table = self.tblref(st)?;
        st.end()?;
        self.cfg.access.lists.push(AccessList {
            action,
            phase,
            table,
        });
        Ok(())
    }

    fn access_ban(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if self.cfg.access.ban.is_some() {
            return st.err("`access ban` given twice");
        }
        let mut ban = BanSettings::default();
        if st.is_sym('<') {
            let at = st.pos;
            let TableRef::Named(name) = self.tblref(st)? else {
                return st.err("access ban needs a named table");
            };
            let sqlite = self
                .cfg
                .table(&name)
                .is_some_and(|t| matches!(t.source, TableSource::Sqlite(_)));
            if !sqlite {
                st.pos = at + 1;
                return st.err(format!(
                    "access ban: table {name} must be an sqlite: table whose file has query_ban"
                ));
            }
            ban.table = Some(name);
        }
        while st.pos < st.toks.len() {
            if st.eat_kw("auth-failures") {
                ban.auth_failures = count(st, "a number of AUTH failures")?;
            } else if st.eat_kw("errors") {
                ban.errors = count(st, "a number of errors")?;
            } else if st.eat_kw("within") {
                ban.within = delay(st)?;
            } else if st.eat_kw("for") {
                ban.duration = delay(st)?;
            } else {
                return st.err(format!(
                    "syntax error: expected `auth-failures`, `errors`, `within` or `for`, found {}",
                    st.describe()
                ));
            }
        }
        self.cfg.access.ban = Some(ban);
        Ok(())
    }

    pub(super) fn greylist(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if self.cfg.access.greylist.is_some() {
            return st.err("`greylist` given twice");
        }
        let mut g = GreylistSettings::default();
        while st.pos < st.toks.len() {
            if st.eat_kw("pass") {
                g.pass = delay(st)?;
            } else if st.eat_kw("grey-expiry") {
                g.grey_expiry = delay(st)?;
            } else if st.eat_kw("white-expiry") {
                g.white_expiry = delay(st)?;
            } else {
                return st.err(format!(
                    "syntax error: expected `pass`, `grey-expiry` or `white-expiry`, found {}",
                    st.describe()
                ));
            }
        }
        if g.pass >= g.grey_expiry {
            return st.err("greylist: the pass time must be shorter than the grey expiry");
        }
        self.cfg.access.greylist = Some(g);
        Ok(())
    }

    pub(super) fn dnsbl(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("threshold") {
            let n = count(st, "a threshold")?;
            st.end()?;
            self.cfg.access.dnsbl_threshold = Some(n);
            return Ok(());
        }
        st.expect_kw("zone")?;
        let zone = st.value("a DNS zone")?.to_ascii_lowercase();
        let zone = zone.trim_end_matches('.').to_string();
        if zone.is_empty() || !zone.contains('.') {
            st.pos -= 1;
            return st.err(format!("invalid DNS zone: {zone}"));
        }
        let weight = if st.eat_kw("weight") {
            count(st, "a weight")?
        } else {
            1
        };
        st.end()?;
        self.cfg.access.dnsbl_zones.push(DnsblZone { zone, weight });
        Ok(())
    }
}

fn count(st: &mut Stmt<'_>, what: &str) -> P<u32> {
    let n = st.number(what)?;
    u32::try_from(n).map_err(|_| {
        st.pos -= 1;
        st.err_at(format!("invalid {what}: {n}"))
    })
}
