//! The rule evaluator run at RCPT time (ruleset.c): first match wins; within a rule the
//! criteria are evaluated in OpenSMTPD's order (tag, from, for, helo, auth, tls,
//! mail-from, rcpt-to); `!` negates one criterion; no match rejects the recipient.
//!
//! Lookups may hit SQLite: call [`Config::match_rcpt`] from `spawn_blocking`.

use std::net::IpAddr;

use super::model::*;
use crate::table::{Builtin, Service, Table, Tables};

/// What the session knows when a RCPT arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchContext<'a> {
    /// The listener's `tag`.
    pub tag: Option<&'a str>,
    /// The message came through the local enqueuer (`listen on socket`).
    pub local_enqueue: bool,
    /// The client's address (None for the enqueuer).
    pub src: Option<IpAddr>,
    /// The client's reverse DNS name, when it resolved.
    pub rdns: Option<&'a str>,
    pub helo: Option<&'a str>,
    /// The authenticated user name, after a successful AUTH.
    pub auth_user: Option<&'a str>,
    pub tls: bool,
    /// MAIL FROM address without `<>` (empty for the null sender).
    pub mail_from: &'a str,
    /// RCPT TO address without `<>`.
    pub rcpt_to: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'c> {
    /// Rule `rule` (0-based) matched and names this action.
    Action { rule: usize, action: &'c Action },
    /// A `match … reject` rule matched.
    Reject { rule: usize },
    /// No rule matched: `550 Invalid recipient`.
    NoMatch,
    /// A lookup failed: answer with a temporary failure.
    TempFail(String),
}

fn order(c: &Criterion) -> u8 {
    match c {
        Criterion::Tag(_) => 0,
        c if c.is_from() => 1,
        c if c.is_for() => 2,
        Criterion::Helo(_) => 3,
        Criterion::Auth(_) => 4,
        Criterion::Tls => 5,
        Criterion::MailFrom(_) => 6,
        _ => 7,
    }
}

fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

impl Config {
    pub fn match_rcpt<'c>(&'c self, ctx: &MatchContext<'_>, tables: &Tables) -> Decision<'c> {
        for (i, rule) in self.rules.iter().enumerate() {
            let mut conds: Vec<&Condition> = rule.conditions.iter().collect();
            conds.sort_by_key(|c| order(&c.criterion));
            let mut matched = true;
            for c in conds {
                match eval(&c.criterion, ctx, tables) {
                    Ok(v) if v != c.negated => {}
                    Ok(_) => {
                        matched = false;
                        break;
                    }
                    Err(e) => return Decision::TempFail(e),
                }
            }
            if matched {
                return match &rule.decision {
                    RuleDecision::Reject => Decision::Reject { rule: i },
                    RuleDecision::Action(name) => match self.action(name) {
                        Some(action) => Decision::Action { rule: i, action },
                        None => Decision::TempFail(format!("action {name} vanished")),
                    },
                };
            }
        }
        Decision::NoMatch
    }
}

fn check(crit: &TableCrit, service: Service, key: &str, tables: &Tables) -> Result<bool, String> {
    let service = if crit.regex { Service::Regex } else { service };
    match &crit.table {
        TableRef::Inline(t) => t.check(service, key).map_err(|e| e.to_string()),
        TableRef::Named(n) => match tables.get(n) {
            Some(t) => t.check(service, key).map_err(|e| e.to_string()),
            None => Err(format!("table {n} is not open")),
        },
    }
}

fn named(name: &str, service: Service, key: &str, tables: &Tables) -> Result<bool, String> {
    check(
        &TableCrit {
            regex: false,
            table: TableRef::Named(name.to_owned()),
        },
        service,
        key,
        tables,
    )
}

/// Calls `f` with the client's address as a table key (`local` for the local enqueuer),
/// written on the stack: `from local` is looked at for every recipient.
fn with_src_key<R>(ctx: &MatchContext<'_>, f: impl FnOnce(&str) -> R) -> R {
    let ip = match (ctx.local_enqueue, ctx.src) {
        (false, Some(ip)) => ip,
        _ => return f("local"),
    };
    // An address prints in at most 39 bytes (eight groups of four hex digits); even
    // RFC 4291's longest text form, with a dotted IPv4 tail, is 45.
    let mut buf = [0u8; 64];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let _ = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
    let n = usize::try_from(w.position()).unwrap_or(0);
    f(std::str::from_utf8(&buf[..n]).unwrap_or_default())
}

fn auth(t: &Option<TableCrit>, ctx: &MatchContext<'_>, tables: &Tables) -> Result<bool, String> {
    let Some(user) = ctx.auth_user else {
        return Ok(false);
    };
    match t {
        None => Ok(true),
        Some(t) => {
            // ruleset.c: a user name with '@' is looked up as a mail address.
            let service = if user.contains('@') {
                Service::Mailaddr
            } else {
                Service::String
            };
            check(t, service, user, tables)
        }
    }
}

fn eval(c: &Criterion, ctx: &MatchContext<'_>, tables: &Tables) -> Result<bool, String> {
    match c {
        Criterion::Tag(t) => match ctx.tag {
            Some(tag) => check(t, Service::String, tag, tables),
            None => Ok(false),
        },
        Criterion::FromAny => Ok(true),
        Criterion::FromLocal => Ok(ctx.local_enqueue
            || with_src_key(ctx, |key| {
                named(
                    Builtin::Localhost.table_name(),
                    Service::Netaddr,
                    key,
                    tables,
                )
            })?),
        Criterion::FromSocket => Ok(ctx.local_enqueue),
        Criterion::FromSrc(t) => with_src_key(ctx, |key| check(t, Service::Netaddr, key, tables)),
        Criterion::FromRdns(t) => match (ctx.rdns, t) {
            (None, _) => Ok(false),
            (Some(_), None) => Ok(true),
            (Some(name), Some(t)) => check(t, Service::Domain, name, tables),
        },
        Criterion::FromAuth(t) | Criterion::Auth(t) => auth(t, ctx, tables),
        Criterion::FromMailFrom(t) | Criterion::MailFrom(t) => {
            check(t, Service::Mailaddr, ctx.mail_from, tables)
        }
        Criterion::ForAny => Ok(true),
        Criterion::ForLocal => named(
            Builtin::Localnames.table_name(),
            Service::Domain,
            domain_of(ctx.rcpt_to),
            tables,
        ),
        Criterion::ForDomain(t) => check(t, Service::Domain, domain_of(ctx.rcpt_to), tables),
        Criterion::ForRcptTo(t) | Criterion::RcptTo(t) => {
            check(t, Service::Mailaddr, ctx.rcpt_to, tables)
        }
        Criterion::Helo(t) => match ctx.helo {
            Some(h) => check(t, Service::Domain, h, tables),
            None => Ok(false),
        },
        Criterion::Tls => Ok(ctx.tls),
    }
}
