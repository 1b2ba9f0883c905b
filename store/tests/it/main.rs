//! The store against a real SQLite file: schema rules, triggers and the lookup views.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dkim;

use store::{AliasSource, DomainName, EmailAddress, Error, NewUser, Store, UserQuery};

fn domain(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}
fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}
fn new_user(a: &str) -> NewUser {
    NewUser {
        address: addr(a),
        // A fixed bcrypt hash of "secret": hashing is tested in the password crate.
        password_hash: "$2b$10$AyZjTpqBmUlXeWuCcuA4o.WLEpNrb1S88ouQOY2BBeJvUb1LDFkL.".into(),
        display_name: String::new(),
        quota_bytes: 0,
    }
}

async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn opens_in_wal_mode_with_foreign_keys() {
    let (_dir, store) = fresh().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(timeout >= 5000, "busy_timeout {timeout}");
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fugu.db");
    let store = Store::open(&path).await.unwrap();
    store.add_domain(&domain("example.org"), "").await.unwrap();
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.list_domains().await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_write_to_a_provisioned_table_bumps_the_change_counter() {
    let (_dir, store) = fresh().await;
    let c0 = store.change_counter().await.unwrap();
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let c1 = store.change_counter().await.unwrap();
    store
        .add_user(&new_user("alice@example.org"))
        .await
        .unwrap();
    let c2 = store.change_counter().await.unwrap();
    store
        .add_alias(
            &AliasSource::parse("postmaster@example.org").unwrap(),
            &addr("alice@example.org"),
        )
        .await
        .unwrap();
    let c3 = store.change_counter().await.unwrap();
    // A raw write that bypasses the store is counted too.
    sqlx::query(
        "INSERT INTO access_rules (kind, value, action) VALUES ('ip', '192.0.2.1', 'block')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let c4 = store.change_counter().await.unwrap();
    assert!(
        c0 < c1 && c1 < c2 && c2 < c3 && c3 < c4,
        "{c0} {c1} {c2} {c3} {c4}"
    );
}

#[tokio::test]
async fn schema_refuses_upper_case_keys_from_any_writer() {
    let (_dir, store) = fresh().await;
    let err = sqlx::query("INSERT INTO domains (name) VALUES ('Example.org')")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let err = sqlx::query(
        "INSERT INTO users (domain, local_part, address, password_hash, uid, gid, home)
         VALUES ('example.org', 'Bob', 'Bob@example.org', 'x', 5000, 5000, '/var/vmail/example.org/bob')",
    )
    .execute(store.pool())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
}

#[tokio::test]
async fn users_need_their_domain_and_are_unique() {
    let (_dir, store) = fresh().await;
    assert!(
        matches!(store.add_user(&new_user("alice@example.org")).await, Err(Error::DomainNotFound(d)) if d == "example.org")
    );
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let alice = store
        .add_user(&new_user("Alice@Example.org"))
        .await
        .unwrap();
    assert_eq!(alice.address, "alice@example.org");
    assert_eq!(alice.home, "/var/vmail/example.org/alice");
    assert_eq!((alice.uid, alice.gid), (5000, 5000));
    assert!(matches!(
        store.add_user(&new_user("alice@example.org")).await,
        Err(Error::UserExists(_))
    ));
}

#[tokio::test]
async fn unknown_hash_formats_are_refused() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let mut u = new_user("alice@example.org");
    u.password_hash = "plaintext".into();
    assert!(matches!(store.add_user(&u).await, Err(Error::Password(_))));
    assert!(
        store
            .list_users(&UserQuery::default())
            .await
            .unwrap()
            .users
            .is_empty()
    );
}

#[tokio::test]
async fn virtual_lookup_maps_mailboxes_to_vmail_and_aliases_to_destinations() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    store.add_domain(&domain("example.net"), "").await.unwrap();
    store
        .add_user(&new_user("alice@example.org"))
        .await
        .unwrap();
    store.add_user(&new_user("bob@example.org")).await.unwrap();
    let postmaster = AliasSource::parse("postmaster@example.org").unwrap();
    store
        .add_alias(&postmaster, &addr("alice@example.org"))
        .await
        .unwrap();
    let abuse = AliasSource::parse("abuse@example.org").unwrap();
    store
        .add_alias(&abuse, &addr("alice@example.org"))
        .await
        .unwrap();
    store
        .add_alias(&abuse, &addr("bob@example.org"))
        .await
        .unwrap();
    store
        .add_alias(
            &AliasSource::parse("@example.net").unwrap(),
            &addr("alice@example.org"),
        )
        .await
        .unwrap();

    assert_eq!(
        store.virtual_lookup("alice@example.org").await.unwrap(),
        ["vmail"]
    );
    assert_eq!(
        store
            .virtual_lookup("postmaster@example.org")
            .await
            .unwrap(),
        ["alice@example.org"]
    );
    let mut abuse_dest = store.virtual_lookup("abuse@example.org").await.unwrap();
    abuse_dest.sort();
    assert_eq!(abuse_dest, ["alice@example.org", "bob@example.org"]);
    assert_eq!(
        store.virtual_lookup("@example.net").await.unwrap(),
        ["alice@example.org"]
    );
    // OpenSMTPD also asks for bare local parts and '@': the view must not answer them.
    for key in ["alice", "alice+tag", "@", "nobody@example.org"] {
        assert!(store.virtual_lookup(key).await.unwrap().is_empty(), "{key}");
    }
    // Disabled users and domains drop out of the lookup.
    store
        .set_user_active(&addr("bob@example.org"), false)
        .await
        .unwrap();
    assert!(
        store
            .virtual_lookup("bob@example.org")
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_domain_active(&domain("example.net"), false)
        .await
        .unwrap();
    assert!(
        store
            .virtual_lookup("@example.net")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_alias_to_itself_is_refused() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let src = AliasSource::parse("alice@example.org").unwrap();
    assert!(matches!(
        store.add_alias(&src, &addr("alice@example.org")).await,
        Err(Error::AliasLoop(_))
    ));
    // The schema refuses it too, whoever writes.
    let err = sqlx::query("INSERT INTO aliases (domain, source, destination) VALUES ('example.org', 'a@example.org', 'a@example.org')")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
}

#[tokio::test]
async fn removing_a_domain_takes_its_users_and_aliases() {
    let (_dir, store) = fresh().await;
    let d = domain("example.org");
    store.add_domain(&d, "").await.unwrap();
    store
        .add_user(&new_user("alice@example.org"))
        .await
        .unwrap();
    store
        .add_alias(
            &AliasSource::parse("postmaster@example.org").unwrap(),
            &addr("alice@example.org"),
        )
        .await
        .unwrap();
    assert_eq!(store.domain_contents(&d).await.unwrap(), (1, 1));
    store.remove_domain(&d).await.unwrap();
    assert!(
        store
            .list_users(&UserQuery::default())
            .await
            .unwrap()
            .users
            .is_empty()
    );
    assert!(store.list_aliases(None).await.unwrap().is_empty());
    assert!(matches!(
        store.remove_domain(&d).await,
        Err(Error::DomainNotFound(_))
    ));
}

#[tokio::test]
async fn user_listing_searches_pages_and_counts() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    for i in 0..25 {
        store
            .add_user(&new_user(&format!("user{i:02}@example.org")))
            .await
            .unwrap();
    }
    let page = store
        .list_users(&UserQuery {
            search: Some("USER1".into()),
            limit: 5,
            offset: 0,
            domain: None,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 10);
    assert_eq!(page.users.len(), 5);
    assert_eq!(page.users[0].address, "user10@example.org");
    // LIKE wildcards in the search are literal.
    let none = store
        .list_users(&UserQuery {
            search: Some("%".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none.total, 0);
}

#[tokio::test]
async fn sender_and_credentials_views_follow_users_and_aliases() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    store
        .add_user(&new_user("alice@example.org"))
        .await
        .unwrap();
    store
        .add_alias(
            &AliasSource::parse("sales@example.org").unwrap(),
            &addr("alice@example.org"),
        )
        .await
        .unwrap();
    let mut senders: Vec<String> =
        sqlx::query_scalar("SELECT address FROM sender_lookup WHERE login = ?")
            .bind("alice@example.org")
            .fetch_all(store.pool())
            .await
            .unwrap();
    senders.sort();
    assert_eq!(senders, ["alice@example.org", "sales@example.org"]);
    let (login, hash): (String, String) =
        sqlx::query_as("SELECT login, password_hash FROM credentials_lookup WHERE login = ?")
            .bind("alice@example.org")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(login, "alice@example.org");
    assert!(hash.starts_with("$2b$"));
    let userbase: (String, i64, i64, String) =
        sqlx::query_as("SELECT name, uid, gid, home FROM userbase_lookup")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(userbase, ("vmail".into(), 5000, 5000, "/var/vmail".into()));
}
