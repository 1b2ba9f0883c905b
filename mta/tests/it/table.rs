//! Table lookups: seed 001's table-sqlite queries, verbatim, against a hand-made schema,
//! with the answers table-sqlite gives (first row only, alias rows joined with ", ",
//! lower-cased keys, the virtual lookup order).

use std::path::Path;

use mta::table::{Service, SqliteConfig, SqliteTable, Table, virtual_keys};

use super::config::{Env, sqlite_conf};

fn open(env: &Env) -> SqliteTable {
    let conf = SqliteConfig::parse(&sqlite_conf(&env.path().join("mail.sqlite"))).unwrap();
    SqliteTable::open("vusers", conf).unwrap()
}

/// The first key of the virtual lookup order that the table knows, and its value.
fn resolve_virtual(t: &SqliteTable, rcpt: &str) -> Option<(String, String)> {
    virtual_keys(rcpt, '+')
        .into_iter()
        .find_map(|k| t.lookup(Service::Alias, &k).unwrap().map(|v| (k, v)))
}

#[test]
fn seed_queries_answer_like_table_sqlite() {
    let env = Env::new();
    let t = open(&env);
    assert!(t.check(Service::Domain, "EXAMPLE.org").unwrap());
    assert!(!t.check(Service::Domain, "example.com").unwrap());
    assert_eq!(
        t.lookup(Service::Domain, "example.net").unwrap().as_deref(),
        Some("example.net")
    );
    assert_eq!(
        t.lookup(Service::Credentials, "Alice@Example.org")
            .unwrap()
            .as_deref(),
        Some("alice@example.org:$2b$10$abcdefghijklmnopqrstuv")
    );
    assert_eq!(
        t.lookup(Service::Userinfo, "bob@example.org")
            .unwrap()
            .as_deref(),
        Some("5001:5000:/var/vmail/example.org/bob")
    );
    assert_eq!(
        t.lookup(Service::Userinfo, "nobody@example.org").unwrap(),
        None
    );
    // Every row of query_alias counts, joined with ", ".
    assert_eq!(
        t.lookup(Service::Alias, "abuse@example.org")
            .unwrap()
            .as_deref(),
        Some("alice@example.org, bob@example.org")
    );
    assert!(!t.serves(Service::Mailaddrmap));
}

#[test]
fn virtual_lookup_order_with_tags_catch_all_and_unknown_keys() {
    let env = Env::new();
    let t = open(&env);
    assert_eq!(
        resolve_virtual(&t, "alice+lists@example.org"),
        Some(("alice@example.org".into(), "vmail".into()))
    );
    assert_eq!(
        resolve_virtual(&t, "list+announce@example.org"),
        Some(("list+announce@example.org".into(), "bob@example.org".into()))
    );
    assert_eq!(
        resolve_virtual(&t, "anyone@example.net"),
        Some(("@example.net".into(), "catchall@example.org".into()))
    );
    assert_eq!(resolve_virtual(&t, "nobody@example.com"), None);
}

#[test]
fn wrong_column_counts_are_all_reported_at_open() {
    let env = Env::new();
    let conf = SqliteConfig::parse(&format!(
        "dbpath {}\nquery_userinfo select uid,gid from mail_user where login=?\nquery_credentials select login from mail_user where login=?\n",
        env.path().join("mail.sqlite").display()
    ))
    .unwrap();
    let errs = SqliteTable::open("t", conf).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs.iter().any(|e| {
        e.starts_with("query_userinfo: the query returns 2 column(s), table-sqlite wants 3")
    }));
}

#[test]
fn database_is_read_only_and_changes_are_seen_on_reopen() {
    let env = Env::new();
    let db = env.path().join("mail.sqlite");
    let t = open(&env);
    assert!(!t.check(Service::Domain, "new.example").unwrap());
    let w = rusqlite::Connection::open(&db).unwrap();
    w.execute("INSERT INTO mail_domain VALUES ('new.example')", [])
        .unwrap();
    // A reload opens the tables again: the new row is there.
    let reopened = open(&env);
    assert!(reopened.check(Service::Domain, "new.example").unwrap());
    let missing =
        SqliteConfig::parse("dbpath /nonexistent/db.sqlite\nquery_domain select 1\n").unwrap();
    assert!(
        SqliteTable::open("t", missing).is_err(),
        "a read-only open must not create the file"
    );
    assert!(!Path::new("/nonexistent/db.sqlite").exists());
}
