//! Keeping abusers out: access lists at connect, MAIL and RCPT, auto-bans, spamd-style
//! greylisting and DNS block lists.
//!
//! The decisions are plain functions over the configuration's tables (an `sqlite:` table
//! or a file, looked up through the `netaddr` and `mailaddr` services), so the same rules
//! work from the appliance database or from hand-written files. Allow always wins: a
//! source or address on an allow list is never blocked, banned or greylisted.
//!
//! Networks are asked for by equality: the lookup key is the client address and then
//! every enclosing network in canonical text ([`net::lookup_keys`]), which lets a SQL
//! query match CIDR rows without range arithmetic. File tables match CIDR entries
//! themselves, as OpenSMTPD's static tables do.
//!
//! What it does not do: it never writes the appliance database except through the one
//! documented statement, `query_ban` in the ban table's table-sqlite file ([`bans`]).

pub mod bans;
pub mod dnsbl;
pub mod greylist;
mod guard;
pub mod logscan;
pub mod net;

pub use bans::Failure;
pub use guard::Guard;

use std::net::IpAddr;
use std::time::Duration;

use crate::config::TableRef;
use crate::expand::resolve;
use crate::session::Reply;
use crate::table::{Service, Tables};

/// `access block|allow …`: what a list does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListAction {
    Block,
    Allow,
}

/// Where a list is consulted: the client address at connect (`netaddr`), the MAIL FROM
/// address or the RCPT TO address (`mailaddr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Sender,
    Recipient,
}

impl Phase {
    pub fn keyword(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Sender => "sender",
            Phase::Recipient => "recipient",
        }
    }
}

impl ListAction {
    pub fn keyword(self) -> &'static str {
        match self {
            ListAction::Block => "block",
            ListAction::Allow => "allow",
        }
    }
}

/// `access block|allow connect|sender|recipient <table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessList {
    pub action: ListAction,
    pub phase: Phase,
    pub table: TableRef,
}

/// `access ban [<table>] [auth-failures N] [errors N] [within D] [for D]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanSettings {
    /// The `sqlite:` table whose config file holds `query_ban`; without it bans stay in
    /// memory (and end with the process).
    pub table: Option<String>,
    pub auth_failures: u32,
    pub errors: u32,
    pub within: Duration,
    pub duration: Duration,
}

impl Default for BanSettings {
    fn default() -> Self {
        BanSettings {
            table: None,
            auth_failures: 10,
            errors: 50,
            within: Duration::from_secs(600),
            // The seeds' advice: a day is long enough to stop a run and short enough
            // that a mistyped password does not lock a user out for good.
            duration: Duration::from_secs(86400),
        }
    }
}

/// `greylist [pass D] [grey-expiry D] [white-expiry D]`, spamd's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreylistSettings {
    pub pass: Duration,
    pub grey_expiry: Duration,
    pub white_expiry: Duration,
}

impl Default for GreylistSettings {
    fn default() -> Self {
        GreylistSettings {
            pass: Duration::from_secs(25 * 60),
            grey_expiry: Duration::from_secs(4 * 3600),
            white_expiry: Duration::from_secs(36 * 86400),
        }
    }
}

/// `dnsbl zone NAME [weight N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblZone {
    pub zone: String,
    pub weight: u32,
}

/// All of fugu's `access`, `greylist` and `dnsbl` directives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessSettings {
    pub lists: Vec<AccessList>,
    pub ban: Option<BanSettings>,
    pub greylist: Option<GreylistSettings>,
    pub dnsbl_zones: Vec<DnsblZone>,
    /// `dnsbl threshold N`: the summed weights that refuse a client (default 1).
    pub dnsbl_threshold: Option<u32>,
}

impl AccessSettings {
    pub fn dnsbl_threshold(&self) -> u32 {
        self.dnsbl_threshold.unwrap_or(1).max(1)
    }

    fn tables(&self, action: ListAction, phase: Phase) -> impl Iterator<Item = &TableRef> {
        self.lists
            .iter()
            .filter(move |l| l.action == action && l.phase == phase)
            .map(|l| &l.table)
    }

    pub fn has_lists(&self, phase: Phase) -> bool {
        self.lists.iter().any(|l| l.phase == phase)
    }
}

/// What the lists say about one client or address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// On an allow list: nothing else is checked.
    Allowed,
    /// On a block list (the table's name, for the log).
    Blocked(String),
    /// On no list.
    Unlisted,
}

fn table_name(t: &TableRef) -> String {
    match t {
        TableRef::Named(n) => n.clone(),
        TableRef::Inline(_) => "inline".into(),
    }
}

fn any_match(
    tables: &Tables,
    table: &TableRef,
    service: Service,
    keys: &[String],
) -> Result<bool, String> {
    let t = resolve(table, tables)
        .ok_or_else(|| format!("access table {} is not open", table_name(table)))?;
    for k in keys {
        if t.check(service, k).map_err(|e| e.to_string())? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn decide(
    settings: &AccessSettings,
    tables: &Tables,
    phase: Phase,
    service: Service,
    keys: &[String],
) -> Result<Verdict, String> {
    // Allow always wins, whatever the order of the directives.
    for t in settings.tables(ListAction::Allow, phase) {
        if any_match(tables, t, service, keys)? {
            return Ok(Verdict::Allowed);
        }
    }
    for t in settings.tables(ListAction::Block, phase) {
        if any_match(tables, t, service, keys)? {
            return Ok(Verdict::Blocked(table_name(t)));
        }
    }
    Ok(Verdict::Unlisted)
}

/// The connect lists for a client address (blocking: tables may be SQLite).
pub fn check_client(
    settings: &AccessSettings,
    tables: &Tables,
    ip: IpAddr,
) -> Result<Verdict, String> {
    if !settings.has_lists(Phase::Connect) {
        return Ok(Verdict::Unlisted);
    }
    decide(
        settings,
        tables,
        Phase::Connect,
        Service::Netaddr,
        &net::lookup_keys(ip),
    )
}

/// The sender or recipient lists for a mail address; `<>` is never listed.
pub fn check_address(
    settings: &AccessSettings,
    tables: &Tables,
    phase: Phase,
    address: &str,
) -> Result<Verdict, String> {
    if address.is_empty() || !settings.has_lists(phase) {
        return Ok(Verdict::Unlisted);
    }
    decide(
        settings,
        tables,
        phase,
        Service::Mailaddr,
        &[address.to_ascii_lowercase()],
    )
}

/// The replies of this module, named like those of [`crate::session::reply`].
pub mod reply {
    use super::Reply;

    /// RFC 5321 §3.1: a 554 greeting refuses the whole session.
    pub fn client_blocked(ip: &str) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!("Client address [{ip}] blocked by policy"),
        )
    }

    pub fn client_banned(ip: &str) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!("Client address [{ip}] temporarily banned after repeated failures"),
        )
    }

    pub fn client_dnsbl(ip: &str, zones: &str) -> Reply {
        Reply::new(
            554,
            "5.7.1",
            format!("Client address [{ip}] listed by {zones}"),
        )
    }

    pub fn sender_blocked() -> Reply {
        Reply::new(550, "5.7.1", "Sender address blocked by policy")
    }

    pub fn recipient_blocked() -> Reply {
        Reply::new(550, "5.7.1", "Recipient address blocked by policy")
    }

    /// spamd's answer to a greylisted triplet.
    pub fn greylisted() -> Reply {
        Reply::new(451, "4.7.1", "Greylisted, please try again later")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::table::StaticTable;

    fn list(entries: &[&str]) -> Arc<dyn crate::table::Table> {
        Arc::new(StaticTable::List(
            entries.iter().map(|s| s.to_string()).collect(),
        ))
    }

    fn settings() -> (AccessSettings, Tables) {
        let mut tables = Tables::new();
        tables.insert("bad_nets", list(&["192.0.2.0/24", "2001:db8::/32"]));
        tables.insert("good_nets", list(&["192.0.2.10"]));
        tables.insert("bad_senders", list(&["@spam.example", "eve@example.org"]));
        tables.insert("good_senders", list(&["friend@spam.example"]));
        tables.insert("bad_rcpts", list(&["abuse-me@example.org"]));
        let l = |action, phase, t: &str| AccessList {
            action,
            phase,
            table: TableRef::Named(t.into()),
        };
        let s = AccessSettings {
            lists: vec![
                l(ListAction::Block, Phase::Connect, "bad_nets"),
                l(ListAction::Allow, Phase::Connect, "good_nets"),
                l(ListAction::Block, Phase::Sender, "bad_senders"),
                l(ListAction::Allow, Phase::Sender, "good_senders"),
                l(ListAction::Block, Phase::Recipient, "bad_rcpts"),
            ],
            ..AccessSettings::default()
        };
        (s, tables)
    }

    #[test]
    fn blocks_clients_inside_a_listed_network() {
        let (s, t) = settings();
        let v = check_client(&s, &t, "192.0.2.77".parse().unwrap()).unwrap();
        assert_eq!(v, Verdict::Blocked("bad_nets".into()));
        let v = check_client(&s, &t, "2001:db8:5::1".parse().unwrap()).unwrap();
        assert_eq!(v, Verdict::Blocked("bad_nets".into()));
        let v = check_client(&s, &t, "198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(v, Verdict::Unlisted);
    }

    #[test]
    fn allow_wins_over_block() {
        let (s, t) = settings();
        let v = check_client(&s, &t, "192.0.2.10".parse().unwrap()).unwrap();
        assert_eq!(v, Verdict::Allowed);
        let v = check_address(&s, &t, Phase::Sender, "Friend@Spam.Example").unwrap();
        assert_eq!(v, Verdict::Allowed);
    }

    #[test]
    fn blocks_senders_by_address_and_domain_and_recipients_apart() {
        let (s, t) = settings();
        for a in ["x@spam.example", "eve@example.org"] {
            let v = check_address(&s, &t, Phase::Sender, a).unwrap();
            assert_eq!(v, Verdict::Blocked("bad_senders".into()), "{a}");
        }
        let v = check_address(&s, &t, Phase::Sender, "abuse-me@example.org").unwrap();
        assert_eq!(v, Verdict::Unlisted);
        let v = check_address(&s, &t, Phase::Recipient, "abuse-me@example.org").unwrap();
        assert_eq!(v, Verdict::Blocked("bad_rcpts".into()));
        let v = check_address(&s, &t, Phase::Sender, "").unwrap();
        assert_eq!(v, Verdict::Unlisted);
    }

    #[test]
    fn a_missing_table_is_a_lookup_failure_not_a_pass() {
        let (mut s, t) = settings();
        s.lists.push(AccessList {
            action: ListAction::Block,
            phase: Phase::Connect,
            table: TableRef::Named("nowhere".into()),
        });
        assert!(check_client(&s, &t, "198.51.100.1".parse().unwrap()).is_err());
    }
}
