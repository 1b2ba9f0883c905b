//! Tables: the lookup services of table(5) over `file:`, inline and `sqlite:` backends,
//! plus OpenSMTPD's builtin tables (`<localhost>`, `<anyhost>`, `<localnames>`,
//! `<anydestination>`, `<getpwnam>`).
//!
//! Lookups are synchronous (SQLite may block): the async SMTP shell calls them from
//! `spawn_blocking`. Keys are lower-cased before every lookup, as `table_lookup` does.
//! Pattern matching (globs, CIDR, mail address patterns, regex) happens only in static
//! tables; `sqlite:` tables get the raw key and match in SQL, as table-sqlite does.

mod alias;
mod builtin;
mod sqlite;
mod static_table;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use alias::{ExpandNode, parse_alias_value, virtual_keys};
pub use builtin::{Builtin, BuiltinTable, LocalIdentity};
pub use sqlite::{SqliteConfig, SqliteTable};
pub use static_table::{StaticTable, parse_file_table, parse_ip as parse_ip_text};

/// The lookup services of table(5) (`enum table_service` in smtpd.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Alias,
    Domain,
    Credentials,
    Netaddr,
    Userinfo,
    Source,
    Mailaddr,
    Addrname,
    Mailaddrmap,
    Relayhost,
    String,
    Regex,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Alias => "alias",
            Service::Domain => "domain",
            Service::Credentials => "credentials",
            Service::Netaddr => "netaddr",
            Service::Userinfo => "userinfo",
            Service::Source => "source",
            Service::Mailaddr => "mailaddr",
            Service::Addrname => "addrname",
            Service::Mailaddrmap => "mailaddrmap",
            Service::Relayhost => "relayhost",
            Service::String => "string",
            Service::Regex => "regex",
        }
    }
}

/// A lookup failure that is neither "found" nor "not found": the caller tempfails.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("table {table}: {message}")]
    Backend { table: String, message: String },
}

/// One table, whatever its backend. `check` answers membership (match rules), `lookup`
/// returns the value for a key (maps), `fetch` iterates (relay `src`).
pub trait Table: Send + Sync + std::fmt::Debug {
    fn check(&self, service: Service, key: &str) -> Result<bool, LookupError>;
    fn lookup(&self, service: Service, key: &str) -> Result<Option<String>, LookupError>;
    fn fetch(&self, service: Service) -> Result<Option<String>, LookupError> {
        let _ = service;
        Ok(None)
    }
    /// Whether this table can serve `service` at all; OpenSMTPD refuses a list table
    /// where a map is needed ("table X may not be used for alias lookups").
    fn serves(&self, service: Service) -> bool;
}

/// The opened tables of one configuration, by name. Re-open (call `open` again) on reload:
/// nothing is cached across generations.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    by_name: BTreeMap<String, Arc<dyn Table>>,
}

impl Tables {
    pub fn new() -> Tables {
        Tables::default()
    }

    pub fn insert(&mut self, name: &str, table: Arc<dyn Table>) {
        self.by_name.insert(name.to_owned(), table);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Table>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Lower-case a lookup key the way smtpd's `lowercase()` does (ASCII only).
pub fn lookup_key(key: &str) -> String {
    key.to_ascii_lowercase()
}
