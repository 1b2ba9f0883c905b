//! Recipient expansion at RCPT time (OpenSMTPD's lka_expand): a recipient accepted by a
//! rule is run through its action's `virtual` or `alias` table, recursively, until every
//! branch ends at a local user (resolved through `userbase`) or at an address another rule
//! delivers. The result is one delivery target per final destination, so each retries
//! and bounces on its own. An unknown user is refused at RCPT (550 5.1.1), never accepted
//! and bounced later.

use std::collections::HashSet;

use crate::config::{Action, Config, Decision, Dispatch, LocalMethod, MatchContext, TableRef};
pub use crate::envelope::Target;
use crate::table::{ExpandNode, Service, Table, Tables, parse_alias_value, virtual_keys};

/// How deep aliases may nest before the expansion is called a loop (smtpd.h EXPAND_DEPTH).
pub const MAX_DEPTH: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    Targets(Vec<Target>),
    /// No table knows the recipient: 550 5.1.1.
    Unknown,
    /// Refused with a reply (`error:5xx` aliases, loops, unsupported targets).
    Reject {
        code: u16,
        enhanced: &'static str,
        text: String,
    },
    /// A lookup failed or an `error:4xx` alias: try again later.
    TempFail(String),
}

/// Expands `ctx.rcpt_to`, which `action` (chosen by a rule) accepted.
pub fn expand(cfg: &Config, tables: &Tables, ctx: &MatchContext<'_>, action: &Action) -> Expansion {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    match expand_address(
        cfg,
        tables,
        ctx,
        action,
        ctx.rcpt_to,
        0,
        &mut seen,
        &mut out,
    ) {
        Ok(()) if out.is_empty() => Expansion::Reject {
            code: 524,
            enhanced: "5.2.4",
            text: "Mailing list expansion problem".into(),
        },
        Ok(()) => {
            out.dedup();
            Expansion::Targets(out)
        }
        Err(e) => e,
    }
}

#[allow(clippy::too_many_arguments)]
fn expand_address(
    cfg: &Config,
    tables: &Tables,
    ctx: &MatchContext<'_>,
    action: &Action,
    address: &str,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<Target>,
) -> Result<(), Expansion> {
    if depth > MAX_DEPTH {
        return Err(Expansion::Reject {
            code: 550,
            enhanced: "5.4.6",
            text: "Alias loop detected".into(),
        });
    }
    // Expanding the same address twice within one recipient is a loop back to it:
    // OpenSMTPD drops the repeated node (which is how a self-map ends in 524).
    if !seen.insert(format!("addr:{}", address.to_ascii_lowercase())) {
        return Ok(());
    }
    if matches!(action.dispatch, Dispatch::Relay(_)) {
        out.push(Target {
            action: action.name.clone(),
            dest: address.to_string(),
            user: None,
        });
        return Ok(());
    }
    let delim = cfg.sub_addr_delim();
    if let Some(vt) = &action.virtual_ {
        let table = resolve(vt, tables).ok_or_else(|| not_open(vt))?;
        for key in virtual_keys(address, delim) {
            match table.lookup(Service::Alias, &key) {
                Ok(Some(value)) => {
                    return expand_nodes(
                        cfg, tables, ctx, action, address, &value, depth, seen, out,
                    );
                }
                Ok(None) => {}
                Err(e) => return Err(Expansion::TempFail(e.to_string())),
            }
        }
        return Err(Expansion::Unknown);
    }
    // No virtual table: the local part names a user, possibly through `alias`.
    let local = address
        .rsplit_once('@')
        .map_or(address, |(l, _)| l)
        .to_ascii_lowercase();
    let user = local
        .split_once(delim)
        .map_or(local.as_str(), |(u, _)| u)
        .to_string();
    if let Some(at) = &action.alias {
        let table = resolve(at, tables).ok_or_else(|| not_open(at))?;
        let mut keys = vec![local.clone()];
        if user != local {
            keys.push(user.clone());
        }
        for key in keys {
            match table.lookup(Service::Alias, &key) {
                Ok(Some(value)) => {
                    return expand_nodes(
                        cfg, tables, ctx, action, address, &value, depth, seen, out,
                    );
                }
                Ok(None) => {}
                Err(e) => return Err(Expansion::TempFail(e.to_string())),
            }
        }
    }
    local_user(tables, action, address, &user, out)
}

#[allow(clippy::too_many_arguments)]
fn expand_nodes(
    cfg: &Config,
    tables: &Tables,
    ctx: &MatchContext<'_>,
    action: &Action,
    address: &str,
    value: &str,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<Target>,
) -> Result<(), Expansion> {
    let nodes = parse_alias_value(value)
        .map_err(|e| Expansion::TempFail(format!("bad alias value for {address}: {e}")))?;
    for node in nodes {
        match node {
            ExpandNode::User(u) => {
                let u = u.to_ascii_lowercase();
                // In an alias table a user may be an alias again; in a virtual table a
                // user is final (it names the userbase entry that owns the mail).
                if action.virtual_.is_none()
                    && action.alias.is_some()
                    && !seen.contains(&format!("user:{u}"))
                {
                    seen.insert(format!("user:{u}"));
                    let as_addr = match address.rsplit_once('@') {
                        Some((_, d)) => format!("{u}@{d}"),
                        None => u.clone(),
                    };
                    expand_address(cfg, tables, ctx, action, &as_addr, depth + 1, seen, out)?;
                } else {
                    local_user(tables, action, address, &u, out)?;
                }
            }
            ExpandNode::Address(a) => {
                if a.eq_ignore_ascii_case(address) {
                    continue;
                }
                // The expanded address is matched again, as mail from this server
                // (OpenSMTPD marks it internal, so `from local` rules see it).
                let sub = MatchContext {
                    rcpt_to: &a,
                    local_enqueue: true,
                    src: None,
                    ..*ctx
                };
                match cfg.match_rcpt(&sub, tables) {
                    Decision::Action { action: next, .. } => {
                        expand_address(cfg, tables, &sub, next, &a, depth + 1, seen, out)?;
                    }
                    Decision::Reject { .. } | Decision::NoMatch => {
                        return Err(Expansion::Reject {
                            code: 550,
                            enhanced: "5.1.1",
                            text: format!(
                                "Invalid recipient: alias target <{a}> is not deliverable"
                            ),
                        });
                    }
                    Decision::TempFail(e) => return Err(Expansion::TempFail(e)),
                }
            }
            ExpandNode::Include(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Expansion::TempFail(format!(":include:{path}: {e}")))?;
                let joined: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                expand_nodes(
                    cfg,
                    tables,
                    ctx,
                    action,
                    address,
                    &joined.join(", "),
                    depth + 1,
                    seen,
                    out,
                )?;
            }
            ExpandNode::Error { code, text } if (400..500).contains(&code) => {
                return Err(Expansion::TempFail(format!("{code} {text}")));
            }
            ExpandNode::Error { code, text } => {
                return Err(Expansion::Reject {
                    code,
                    enhanced: "5.0.0",
                    text,
                });
            }
            ExpandNode::File(_) | ExpandNode::Command(_) => {
                return Err(Expansion::Reject {
                    code: 550,
                    enhanced: "5.7.1",
                    text: "Delivery to files and commands from aliases is not supported".into(),
                });
            }
        }
    }
    Ok(())
}

/// A final local user: it must exist in the action's userbase (default `<getpwnam>`),
/// except for methods that deliver to an address rather than a user.
fn local_user(
    tables: &Tables,
    action: &Action,
    address: &str,
    user: &str,
    out: &mut Vec<Target>,
) -> Result<(), Expansion> {
    let needs_user = !matches!(
        &action.dispatch,
        Dispatch::Local(LocalMethod::Lmtp { rcpt_to: true, .. })
            | Dispatch::Local(LocalMethod::ForwardOnly)
    ) || action.virtual_.is_some();
    if needs_user {
        let userbase: Option<&dyn Table> = match &action.userbase {
            Some(r) => Some(resolve(r, tables).ok_or_else(|| not_open(r))?),
            None => tables.get("<getpwnam>").map(|t| t.as_ref() as &dyn Table),
        };
        if let Some(ub) = userbase {
            match ub.lookup(Service::Userinfo, user) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(Expansion::Unknown),
                Err(e) => return Err(Expansion::TempFail(e.to_string())),
            }
        }
    }
    out.push(Target {
        action: action.name.clone(),
        dest: address.to_string(),
        user: Some(user.to_string()),
    });
    Ok(())
}

/// The table a reference names (inline tables are their own table).
pub fn resolve<'a>(r: &'a TableRef, tables: &'a Tables) -> Option<&'a dyn Table> {
    match r {
        TableRef::Inline(t) => Some(t as &dyn Table),
        TableRef::Named(n) => tables.get(n).map(|t| t.as_ref() as &dyn Table),
    }
}

fn not_open(r: &TableRef) -> Expansion {
    Expansion::TempFail(match r {
        TableRef::Named(n) => format!("table {n} is not open"),
        TableRef::Inline(_) => "inline table is not open".into(),
    })
}
