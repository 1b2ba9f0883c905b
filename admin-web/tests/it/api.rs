//! The JSON API: tokens shown once and stored hashed, scopes, and the operations.

use serde_json::json;

use crate::harness::{Console, golden};

/// The token the tokens page shows once.
pub fn shown_token(page: &str) -> String {
    let at = page
        .find("<p id=\"new-token\">")
        .expect("token shown on the page")
        + 18;
    page[at..at + page[at..].find('<').unwrap()].to_string()
}

#[tokio::test]
async fn api_token_is_shown_once_and_stored_only_as_a_digest() {
    let console = Console::start().await;
    let mut c = console.superadmin().await;
    let csrf = c.get("/tokens").await.csrf();
    let page = c
        .post_form(
            "/tokens",
            &[("csrf", &csrf), ("name", "deploy"), ("scope", "read-write")],
        )
        .await;
    let token = shown_token(&page.body);
    assert!(token.starts_with("fugu_") && token.len() == 69, "{token}");
    // Not on the next view of the page.
    assert!(!c.get("/tokens").await.body.contains(&token));
    // Not anywhere in the database files, in any form other than its SHA-256.
    let digest: String = ring_sha256(&token);
    let rows = console.store.list_api_tokens(None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token_sha256, digest);
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(console.store.pool())
        .await
        .unwrap();
    for f in std::fs::read_dir(console.dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token in clear on disk"
        );
        let secret = &token.as_bytes()[5..];
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
    }
    let mut api = console.client();
    api.bearer = Some(token);
    assert_eq!(api.get("/api/v1/domains").await.status, 200);
    api.bearer = Some("fugu_0000".to_string());
    let r = api.get("/api/v1/domains").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"fugu\""));
    console.stop().await;
}

fn ring_sha256(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for b in ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref() {
        write!(out, "{b:02x}").unwrap();
    }
    out
}

async fn token(console: &Console, scope: &str) -> crate::harness::Client {
    token_as(console, "root", scope).await
}

/// An API client with a new token of `scope` made by `username` (password
/// "correct horse battery") on the console's tokens page.
pub(crate) async fn token_as(
    console: &Console,
    username: &str,
    scope: &str,
) -> crate::harness::Client {
    let mut c = console.login(username, "correct horse battery").await;
    let csrf = c.get("/tokens").await.csrf();
    let page = c
        .post_form(
            "/tokens",
            &[("csrf", &csrf), ("name", scope), ("scope", scope)],
        )
        .await;
    let mut api = console.client();
    api.bearer = Some(shown_token(&page.body));
    api
}

#[tokio::test]
async fn api_manages_domains_users_aliases_and_rules_with_store_validation() {
    let console = Console::start().await;
    console.superadmin().await;
    let mut api = token(&console, "read-write").await;
    let r = api
        .json(
            "POST",
            "/api/v1/domains",
            &json!({"name": "Example.ORG", "description": "main"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["name"], "example.org");
    let r = api
        .json("POST", "/api/v1/domains", &json!({"name": "no_dots"}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["field"], "domain");
    let r = api.json("POST", "/api/v1/users", &json!({"address": "alice@example.org", "password": "alice's secret", "quota_bytes": 1048576})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api
        .json(
            "POST",
            "/api/v1/users",
            &json!({"address": "alice@example.org", "password": "alice's secret"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["error"]["message"],
        "user alice@example.org already exists"
    );
    let r = api
        .json(
            "POST",
            "/api/v1/users",
            &json!({"address": "bob@example.org", "password": "short"}),
        )
        .await;
    assert_eq!(r.json()["error"]["field"], "password");
    let r = api
        .json(
            "PATCH",
            "/api/v1/users/alice@example.org",
            &json!({"active": false}),
        )
        .await;
    assert_eq!(r.json()["active"], false);
    let r = api.json("POST", "/api/v1/aliases", &json!({"source": "@example.org", "destinations": ["alice@example.org", "ext@elsewhere.net"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["aliases"].as_array().unwrap().len(), 2);
    let r = api.get("/api/v1/aliases?domain=example.org").await.json();
    assert_eq!(r["aliases"].as_array().unwrap().len(), 2);
    let r = api.json("POST", "/api/v1/access-rules", &json!({"kind": "cidr", "value": "198.51.100.9/24", "action": "block", "reason": "spam run"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["value"], "198.51.100.0/24");
    let id = r.json()["id"].as_i64().unwrap();
    let r = api
        .json("DELETE", &format!("/api/v1/access-rules/{id}"), &json!({}))
        .await;
    assert_eq!(r.status, 200);
    let r = api.get("/api/v1/users?q=ALI").await.json();
    assert_eq!(r["total"], 1);
    let r = api
        .json("DELETE", "/api/v1/domains/example.org", &json!({}))
        .await;
    assert_eq!(r.status, 204);
    // Each change left an audit entry marked as coming through the API.
    let audit = console
        .store
        .list_audit(&store::AuditQuery {
            actor: Some("root (api)".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .entries
        .iter()
        .rev()
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "domain.add",
            "user.add",
            "user.update",
            "alias.add",
            "alias.add",
            "access.add",
            "access.remove",
            "domain.remove"
        ]
    );
    console.stop().await;
}

#[tokio::test]
async fn read_only_tokens_cannot_change_anything() {
    let console = Console::start().await;
    console.superadmin().await;
    let mut api = token(&console, "read").await;
    assert_eq!(api.get("/api/v1/domains").await.status, 200);
    let r = api
        .json("POST", "/api/v1/domains", &json!({"name": "example.org"}))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["message"], "this token is read-only");
    assert!(console.store.list_domains().await.unwrap().is_empty());
    console.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_served_routes() {
    let console = Console::start().await;
    let mut c = console.client();
    let r = c.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    golden("openapi.json", &serde_json::to_string_pretty(&doc).unwrap());
    // Every documented operation answers (401 without a token), not 404/405.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            let concrete = path
                .replace("{name}", "example.org")
                .replace("{address}", "a@example.org")
                .replace("{id}", "1")
                .replace("{selector}", "20260101r");
            let r = c
                .request(
                    &method.to_uppercase(),
                    &format!("/api/v1{concrete}"),
                    None,
                    "",
                )
                .await;
            assert_eq!(r.status, 401, "{method} {path}");
        }
    }
    console.stop().await;
}
