//! The users page's sorting: whitelisted columns, both directions, kept across search and
//! paging.

use crate::harness::{Client, Console, golden, stable};

/// The addresses on a users page, in the order shown.
async fn listed(c: &mut Client, query: &str) -> Vec<String> {
    let page = c.get(&format!("/users?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let re = regex::Regex::new(r#"<td><a href="/users/[^"]+">([^<]+)</a></td>"#).unwrap();
    re.captures_iter(&page.body)
        .map(|m| m[1].to_string())
        .collect()
}

async fn seed(console: &Console) {
    // One hash for every user: hashing is the slow part and not under test.
    let hash = password::hash("correct horse battery", password::Scheme::Argon2id).unwrap();
    for d in ["a.example", "b.example", "c.example"] {
        console
            .store
            .add_domain(&store::DomainName::parse(d).unwrap(), "")
            .await
            .unwrap();
    }
    let mut users: Vec<(String, u64)> = vec![
        ("zed@a.example".into(), 5),
        ("amy@b.example".into(), 1),
        ("bob@a.example".into(), 9),
    ];
    users.extend((0..55).map(|i| (format!("bulk{i:02}@c.example"), 2)));
    for (address, mib) in &users {
        console
            .store
            .add_user(&store::NewUser {
                address: store::EmailAddress::parse(address).unwrap(),
                password_hash: hash.clone(),
                display_name: String::new(),
                quota_bytes: mib << 20,
            })
            .await
            .unwrap();
    }
    // Creation times a second apart would make the test slow; set them instead.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        console.dir.path().join("fugu.db").display()
    ))
    .await
    .unwrap();
    for (address, at) in [
        ("zed@a.example", 100),
        ("bob@a.example", 200),
        ("amy@b.example", 300),
    ] {
        sqlx::query("UPDATE users SET created_at = ? WHERE address = ?")
            .bind(at)
            .bind(address)
            .execute(&db)
            .await
            .unwrap();
    }
    db.close().await;
}

#[tokio::test]
async fn users_sort_by_each_column_both_ways_and_keep_the_order_across_search_and_pages() {
    let console = Console::start().await;
    let mut root = console.superadmin().await;
    seed(&console).await;

    // The default is domain, then local part.
    let all = listed(&mut root, "").await;
    assert_eq!(
        &all[..3],
        ["bob@a.example", "zed@a.example", "amy@b.example"]
    );

    let three = "q=%40a.example";
    assert_eq!(
        listed(&mut root, &format!("{three}&sort=address")).await,
        ["bob@a.example", "zed@a.example"]
    );
    assert_eq!(
        listed(&mut root, "domain=a.example&sort=quota&dir=desc").await,
        ["bob@a.example", "zed@a.example"]
    );
    assert_eq!(
        listed(&mut root, "q=b.example&sort=quota").await,
        ["amy@b.example"]
    );
    // Created: the three dated users are the oldest (first ascending, last of the last
    // page descending).
    let created = listed(&mut root, "sort=created").await;
    assert_eq!(
        &created[..3],
        ["zed@a.example", "bob@a.example", "amy@b.example"]
    );
    let created_desc = listed(&mut root, "sort=created&dir=desc&page=2").await;
    assert_eq!(
        &created_desc[created_desc.len() - 3..],
        ["amy@b.example", "bob@a.example", "zed@a.example"]
    );

    // Search and paging keep the order: 55 bulk users, 50 per page, address descending.
    let page1 = listed(&mut root, "q=bulk&sort=address&dir=desc").await;
    assert_eq!(page1.len(), 50);
    assert_eq!(
        (page1[0].as_str(), page1[49].as_str()),
        ("bulk54@c.example", "bulk05@c.example")
    );
    let rendered = root.get("/users?q=bulk&sort=address&dir=desc&page=2").await;
    golden("users.html", &stable(&rendered.body, &rendered.csrf()));
    let page2 = listed(&mut root, "q=bulk&sort=address&dir=desc&page=2").await;
    assert_eq!(
        page2,
        [
            "bulk04@c.example",
            "bulk03@c.example",
            "bulk02@c.example",
            "bulk01@c.example",
            "bulk00@c.example"
        ]
    );
    // The page's own links carry sort, direction and search; the current column's header
    // flips the direction.
    let body = root.get("/users?q=bulk&sort=address&dir=desc").await.body;
    assert!(
        body.contains("page=2\">next »</a>")
            && body.contains("/users?domain=&amp;q=bulk&amp;sort=address&amp;dir=desc&amp;page=2"),
        "{body}"
    );
    assert!(
        body.contains(r#"<th aria-sort="descending"><a href="/users?domain=&#38;q=bulk&#38;sort=address&#38;dir=asc">Address</a> ▼</th>"#),
        "{body}"
    );

    // A column outside the whitelist falls back to the default order rather than
    // reaching the SQL.
    assert_eq!(
        listed(&mut root, "sort=password_hash;DROP%20TABLE%20users").await,
        all
    );
    console.stop().await;
}
