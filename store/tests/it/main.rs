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

#[tokio::test]
async fn bulk_users_and_aliases_go_in_whole_or_not_at_all() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let users: Vec<NewUser> = (0..300)
        .map(|i| new_user(&format!("user{i:03}@example.org")))
        .collect();
    assert_eq!(store.add_users(&users).await.unwrap(), 300);
    let u = store
        .user(&addr("user042@example.org"))
        .await
        .unwrap()
        .unwrap();
    // uid, gid and home come from the vmail settings, as for a single add.
    assert_eq!(
        (u.uid, u.home.as_str()),
        (5000, "/var/vmail/example.org/user042")
    );

    // A duplicate, or a domain that does not exist, rolls the whole batch back.
    let again = [
        new_user("fresh@example.org"),
        new_user("user001@example.org"),
    ];
    assert!(matches!(
        store.add_users(&again).await,
        Err(Error::UserExists(a)) if a == "user001@example.org"
    ));
    let elsewhere = [new_user("fresh@example.org"), new_user("x@nowhere.test")];
    assert!(matches!(
        store.add_users(&elsewhere).await,
        Err(Error::DomainNotFound(d)) if d == "nowhere.test"
    ));
    assert_eq!(store.user(&addr("fresh@example.org")).await.unwrap(), None);
    assert_eq!(
        store.list_users(&UserQuery::default()).await.unwrap().total,
        300
    );

    let pairs: Vec<(AliasSource, EmailAddress)> = (0..50)
        .map(|i| {
            (
                AliasSource::parse(&format!("alias{i}@example.org")).unwrap(),
                addr(&format!("user{i:03}@example.org")),
            )
        })
        .collect();
    assert_eq!(store.add_alias_pairs(&pairs).await.unwrap(), 50);
    assert_eq!(
        store.virtual_lookup("alias7@example.org").await.unwrap(),
        ["user007@example.org"]
    );
    let looped = [(
        AliasSource::parse("user001@example.org").unwrap(),
        addr("user001@example.org"),
    )];
    assert!(matches!(
        store.add_alias_pairs(&looped).await,
        Err(Error::AliasLoop(_))
    ));
    assert_eq!(store.list_aliases(None).await.unwrap().len(), 50);
}

#[tokio::test]
async fn domain_counts_cover_every_domain_even_empty_ones() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    store.add_domain(&domain("empty.test"), "").await.unwrap();
    store
        .add_users(&[new_user("a@example.org"), new_user("b@example.org")])
        .await
        .unwrap();
    store
        .add_aliases(
            &AliasSource::parse("team@example.org").unwrap(),
            &[addr("a@example.org"), addr("b@example.org")],
        )
        .await
        .unwrap();
    let counts: Vec<(String, i64, i64)> = store
        .domain_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.domain, c.users, c.aliases))
        .collect();
    assert_eq!(
        counts,
        [
            ("empty.test".to_string(), 0, 0),
            ("example.org".to_string(), 2, 2)
        ]
    );
}

#[tokio::test]
async fn every_user_sort_order_walks_an_index() {
    let (_dir, store) = fresh().await;
    // The orders store::UserSort produces; a temp B-tree would mean sorting the table.
    for order in [
        "domain, local_part",
        "domain DESC, local_part DESC",
        "quota_bytes DESC, address DESC",
        "created_at, address",
        "address DESC",
    ] {
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN SELECT id FROM users ORDER BY {order} LIMIT 50"
        ))
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
        .collect();
        assert!(
            plan.iter().any(|d| d.contains("INDEX"))
                && !plan.iter().any(|d| d.contains("TEMP B-TREE")),
            "ORDER BY {order}: {plan:?}"
        );
    }
}

#[tokio::test]
async fn a_search_counts_its_matches_on_every_page_and_past_the_last() {
    let (_dir, store) = fresh().await;
    store.add_domain(&domain("example.org"), "").await.unwrap();
    let users: Vec<NewUser> = (0..120)
        .map(|i| NewUser {
            display_name: format!("Member {i:03}"),
            quota_bytes: (i % 7) as u64,
            ..new_user(&format!("u{i:03}@example.org"))
        })
        .collect();
    store.add_users(&users).await.unwrap();
    let page = |search: &str, offset| UserQuery {
        search: Some(search.into()),
        offset,
        limit: 50,
        domain: Some(domain("example.org")),
    };
    // "MEMBER 1" matches display names 100..119, in any case.
    let p = store
        .list_users_sorted(&page("MEMBER 1", 0), store::UserSort::Quota, true)
        .await
        .unwrap();
    assert_eq!(p.total, 20);
    assert_eq!(p.users.len(), 20);
    // Quota descending, then address descending: 6 (i = 104, 111, 118), then 5 …
    assert_eq!(
        p.users[..3]
            .iter()
            .map(|u| u.address.as_str())
            .collect::<Vec<_>>(),
        ["u118@example.org", "u111@example.org", "u104@example.org"]
    );
    let p = store
        .list_users_sorted(&page("member", 100), store::UserSort::Address, false)
        .await
        .unwrap();
    assert_eq!((p.total, p.users.len()), (120, 20));
    assert_eq!(p.users[0].address, "u100@example.org");
    // Past the last page: no rows, and still the count.
    let p = store
        .list_users_sorted(&page("member", 500), store::UserSort::Domain, false)
        .await
        .unwrap();
    assert_eq!((p.total, p.users.len()), (120, 0));
}
