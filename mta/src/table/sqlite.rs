//! `sqlite:` tables through table-sqlite's config file, read exactly as table_sqlite.c
//! reads it: `key value` lines (separator whitespace or `: `), `#` comments, the first of
//! duplicate keys kept, each `query_*` prepared at load with its column count checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::{LookupError, Service, Table};

/// The parsed table-sqlite config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    pub dbpath: PathBuf,
    pub queries: BTreeMap<Service, String>,
    pub fetch_source: Option<String>,
    /// fugu extension: `query_ban`, the mta's one write (see `crate::access::bans`).
    pub ban_query: Option<String>,
    /// Lines table-sqlite would warn about (unknown or duplicate keys, missing values).
    pub warnings: Vec<String>,
}

/// How long a lookup waits on a database another process is writing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn query_service(key: &str) -> Option<Service> {
    Some(match key {
        "query_alias" => Service::Alias,
        "query_domain" => Service::Domain,
        "query_credentials" => Service::Credentials,
        "query_netaddr" => Service::Netaddr,
        "query_userinfo" => Service::Userinfo,
        "query_source" => Service::Source,
        "query_mailaddr" => Service::Mailaddr,
        "query_addrname" => Service::Addrname,
        "query_mailaddrmap" => Service::Mailaddrmap,
        _ => return None,
    })
}

fn columns_for(service: Service) -> usize {
    match service {
        Service::Credentials => 2,
        Service::Userinfo => 3,
        _ => 1,
    }
}

impl SqliteConfig {
    pub fn parse(text: &str) -> Result<SqliteConfig, String> {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut warnings = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, rest) = match line.find([' ', '\t', ':']) {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, ""),
            };
            // table_sqlite.c skips whitespace and a ':' followed by whitespace.
            let bytes = rest.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                let c = bytes[i];
                let colon_ws =
                    c == b':' && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace());
                if !c.is_ascii_whitespace() && !colon_ws {
                    break;
                }
                i += 1;
            }
            let value = &rest[i..];
            if value.is_empty() {
                warnings.push(format!("missing value for key {key}"));
                continue;
            }
            if seen.contains_key(key) {
                warnings.push(format!("duplicate key {key}"));
                continue;
            }
            seen.insert(key.to_owned(), value.to_owned());
        }
        let mut queries = BTreeMap::new();
        let mut fetch_source = None;
        let mut ban_query = None;
        let mut dbpath = None;
        for (k, v) in seen {
            if let Some(s) = query_service(&k) {
                queries.insert(s, v);
            } else if k == "dbpath" {
                dbpath = Some(PathBuf::from(v));
            } else if k == "fetch_source" {
                fetch_source = Some(v);
            } else if k == "query_ban" {
                ban_query = Some(v);
            } else if k != "fetch_source_expire" && k != "fetch_source_refresh" {
                warnings.push(format!("bogus key {k}"));
            }
        }
        let dbpath = dbpath.ok_or_else(|| "table-sqlite: missing key dbpath".to_owned())?;
        Ok(SqliteConfig {
            dbpath,
            queries,
            fetch_source,
            ban_query,
            warnings,
        })
    }
}

/// An open, read-only `sqlite:` table.
#[derive(Debug)]
pub struct SqliteTable {
    name: String,
    config: SqliteConfig,
    conn: Mutex<Connection>,
}

impl SqliteTable {
    /// Open the database read-only and prepare every query, checking its column count the
    /// way table-sqlite does at startup. Every problem is returned, not just the first.
    pub fn open(name: &str, config: SqliteConfig) -> Result<SqliteTable, Vec<String>> {
        let conn = open_read_only(&config.dbpath)
            .map_err(|e| vec![format!("cannot open {}: {e}", config.dbpath.display())])?;
        let mut errors = Vec::new();
        for (service, sql) in &config.queries {
            let want = columns_for(*service);
            match conn.prepare(sql) {
                Ok(stmt) if stmt.column_count() != want => errors.push(format!(
                    "query_{}: the query returns {} column(s), table-sqlite wants {want}",
                    service.name(),
                    stmt.column_count()
                )),
                Ok(_) => {}
                Err(e) => errors.push(format!("query_{}: {e}", service.name())),
            }
        }
        if let Some(sql) = &config.fetch_source {
            match conn.prepare(sql) {
                Ok(stmt) if stmt.column_count() != 1 => errors.push(format!(
                    "fetch_source: the query returns {} column(s), table-sqlite wants 1",
                    stmt.column_count()
                )),
                Ok(_) => {}
                Err(e) => errors.push(format!("fetch_source: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SqliteTable {
            name: name.to_owned(),
            config,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, message: impl std::fmt::Display) -> LookupError {
        LookupError::Backend {
            table: self.name.clone(),
            message: message.to_string(),
        }
    }

    /// Run the service's query for `key`; `None` when the config has no such query.
    fn rows(
        &self,
        service: Service,
        key: &str,
        first_only: bool,
    ) -> Result<Option<Vec<Vec<String>>>, LookupError> {
        let Some(sql) = self.config.queries.get(&service) else {
            return Ok(None);
        };
        let key = key.to_ascii_lowercase();
        let conn = self
            .conn
            .lock()
            .map_err(|_| self.err("connection poisoned"))?;
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let ncols = stmt.column_count();
        let mut rows = stmt.query([&key]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let mut cols = Vec::with_capacity(ncols);
            for i in 0..ncols {
                cols.push(text_of(row.get_ref(i).map_err(|e| self.err(e))?));
            }
            out.push(cols);
            if first_only {
                break;
            }
        }
        Ok(Some(out))
    }
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// `sqlite3_column_text` of any column type (integers print in decimal, NULL is empty).
fn text_of(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}

impl Table for SqliteTable {
    fn check(&self, service: Service, key: &str) -> Result<bool, LookupError> {
        Ok(self
            .rows(service, key, true)?
            .is_some_and(|r| !r.is_empty()))
    }

    fn lookup(&self, service: Service, key: &str) -> Result<Option<String>, LookupError> {
        let joins = matches!(service, Service::Alias | Service::Mailaddrmap);
        let Some(rows) = self.rows(service, key, !joins)? else {
            return Ok(None);
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let col = |i: usize| first.get(i).cloned().unwrap_or_default();
        Ok(Some(match service {
            Service::Alias | Service::Mailaddrmap => rows
                .iter()
                .map(|r| r.first().map(String::as_str).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", "),
            Service::Credentials => format!("{}:{}", col(0), col(1)),
            Service::Userinfo => {
                // table_sqlite.c reads uid and gid with sqlite3_column_int.
                let int = |s: String| s.parse::<f64>().map(|f| f as i64).unwrap_or(0);
                format!("{}:{}:{}", int(col(0)), int(col(1)), col(2))
            }
            _ => col(0),
        }))
    }

    fn fetch(&self, service: Service) -> Result<Option<String>, LookupError> {
        let (Service::Source, Some(sql)) = (service, &self.config.fetch_source) else {
            return Ok(None);
        };
        let conn = self
            .conn
            .lock()
            .map_err(|_| self.err("connection poisoned"))?;
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        match rows.next().map_err(|e| self.err(e))? {
            Some(row) => Ok(Some(text_of(row.get_ref(0).map_err(|e| self.err(e))?))),
            None => Ok(None),
        }
    }

    fn serves(&self, service: Service) -> bool {
        self.config.queries.contains_key(&service)
            || (service == Service::Source && self.config.fetch_source.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_separators_comments_and_duplicates() {
        let c = SqliteConfig::parse(
            "# seed\ndbpath: /var/db/mail.sqlite\nquery_domain select domain from d where domain=?;\nquery_domain select 2\nfrobnicate 1\nquery_alias\n",
        )
        .unwrap();
        assert_eq!(c.dbpath, PathBuf::from("/var/db/mail.sqlite"));
        assert_eq!(
            c.queries[&Service::Domain],
            "select domain from d where domain=?;"
        );
        assert_eq!(
            c.warnings,
            [
                "duplicate key query_domain",
                "missing value for key query_alias",
                "bogus key frobnicate"
            ]
        );
        assert!(SqliteConfig::parse("query_domain x").is_err());
    }
}
