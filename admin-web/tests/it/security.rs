//! What the security checks ask for, over real HTTPS.

use crate::harness::{Console, form_encode, golden, stable};

const SCRIPT: &str = "<script>alert(1)</script>";
const ATTR: &str = "\"'><img src=x onerror=alert(1)>";

#[tokio::test]
async fn first_run_setup_signs_in_with_a_rotated_hardened_cookie() {
    let console = Console::start().await;
    let mut c = console.client();
    let r = c.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    let r = c.get("/login").await;
    assert_eq!(
        r.header("location"),
        Some("/setup"),
        "no admin yet: login sends to setup"
    );
    let setup = c.get("/setup").await;
    assert_eq!(setup.status, 200);
    let before = c
        .cookie
        .clone()
        .expect("the setup form starts a session for its CSRF token");
    let set_cookie = setup.header("set-cookie").unwrap().to_string();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{flag} missing in {set_cookie}");
    }
    golden("setup.html", &stable(&setup.body, &setup.csrf()));
    let r = c
        .post_form(
            "/setup",
            &[
                ("csrf", &setup.csrf()),
                ("username", "Root"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_ne!(
        c.cookie.clone().unwrap(),
        before,
        "the session id rotates on sign-in"
    );
    let r = c.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Dashboard"));
    assert!(r.body.contains("root"));
    // Setup is closed once an admin exists.
    let mut other = console.client();
    assert_eq!(other.get("/setup").await.header("location"), Some("/login"));
    // Logging out ends the session: the old cookie no longer opens pages.
    let csrf = c.get("/").await.csrf();
    let stolen = c.cookie.clone();
    assert_eq!(c.post_form("/logout", &[("csrf", &csrf)]).await.status, 303);
    other.cookie = stolen;
    assert_eq!(other.get("/").await.header("location"), Some("/login"));
    console.stop().await;
}

#[tokio::test]
async fn every_post_without_a_valid_csrf_token_is_refused() {
    let console = Console::start().await;
    let mut c = console.superadmin().await;
    let csrf = c.get("/domains").await.csrf();
    let r = c
        .post_form("/domains", &[("csrf", &csrf), ("name", "example.org")])
        .await;
    assert_eq!(r.status, 303);
    let posts = [
        "/setup",
        "/login",
        "/login/totp",
        "/logout",
        "/domains",
        "/domains/example.org/active",
        "/domains/example.org/remove",
        "/users",
        "/users/a@example.org/password",
        "/users/a@example.org/quota",
        "/users/a@example.org/active",
        "/users/a@example.org/remove",
        "/aliases",
        "/aliases/remove",
        "/access",
        "/access/1/remove",
        "/admins",
        "/admins/1/domains",
        "/admins/1/remove",
        "/tokens",
        "/tokens/1/remove",
        "/totp/start",
        "/totp/confirm",
        "/totp/disable",
        "/account/login",
        "/account/password",
        "/account/logout",
    ];
    for path in posts {
        let none = c.post_form(path, &[("name", "evil.example")]).await;
        assert_eq!(none.status, 403, "POST {path} without a token");
        assert!(none.body.contains("CSRF"), "POST {path}: {}", none.body);
        let wrong = c
            .post_form(path, &[("csrf", &"0".repeat(64)), ("name", "evil.example")])
            .await;
        assert_eq!(wrong.status, 403, "POST {path} with a wrong token");
    }
    // Nothing happened: example.org still exists and is active, evil.example was never added.
    let domains = console.store.list_domains().await.unwrap();
    assert_eq!(domains.len(), 1);
    assert!(domains[0].active);
    // Another session's token does not work either.
    let mut other = console.login("root", "correct horse battery").await;
    let r = other
        .post_form("/domains", &[("csrf", &csrf), ("name", "evil.example")])
        .await;
    assert_eq!(r.status, 403);
    console.stop().await;
}

#[tokio::test]
async fn domain_admin_gets_403_for_another_domains_users_in_html_and_api() {
    let console = Console::start().await;
    let mut root = console.superadmin().await;
    let csrf = root.get("/domains").await.csrf();
    for d in ["mine.example", "theirs.example"] {
        assert_eq!(
            root.post_form("/domains", &[("csrf", &csrf), ("name", d)])
                .await
                .status,
            303
        );
        let u = format!("bob@{d}");
        let r = root
            .post_form(
                "/users",
                &[
                    ("csrf", &csrf),
                    ("address", &u),
                    ("password", "bob's password"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
    }
    let r = root
        .post_form(
            "/admins",
            &[
                ("csrf", &csrf),
                ("username", "dora"),
                ("password", "dora's password"),
                ("role", "domain_admin"),
                ("domains", "mine.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    let mut dora = console.login("dora", "dora's password").await;
    let r = dora.get("/users/bob@mine.example").await;
    assert_eq!(r.status, 200);
    for path in [
        "/users/bob@theirs.example",
        "/users?domain=theirs.example",
        "/aliases?domain=theirs.example",
        "/access",
        "/admins",
        "/domains/theirs.example/remove",
    ] {
        assert_eq!(dora.get(path).await.status, 403, "GET {path}");
    }
    let csrf = dora.get("/users").await.csrf();
    let r = dora
        .post_form(
            "/users/bob@theirs.example/password",
            &[("csrf", &csrf), ("password", "hijacked!!")],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = dora
        .post_form(
            "/users",
            &[
                ("csrf", &csrf),
                ("address", "eve@theirs.example"),
                ("password", "eve's password"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    let domains = dora.get("/domains").await.body;
    assert!(domains.contains("mine.example") && !domains.contains("theirs.example"));

    // The same through the API with dora's own read-write token.
    let page = dora
        .post_form(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", "dora's script"),
                ("scope", "read-write"),
            ],
        )
        .await;
    let token = crate::api::shown_token(&page.body);
    let mut api = console.client();
    api.bearer = Some(token);
    assert_eq!(api.get("/api/v1/users/bob@mine.example").await.status, 200);
    let r = api.get("/api/v1/users/bob@theirs.example").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["status"], 403);
    assert_eq!(
        api.get("/api/v1/users?domain=theirs.example").await.status,
        403
    );
    let r = api
        .json(
            "PATCH",
            "/api/v1/users/bob@theirs.example",
            &serde_json::json!({"password": "hijacked!!"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = api.get("/api/v1/users").await.json();
    assert_eq!(
        r["total"], 1,
        "a domain admin's listing holds only their domain: {r}"
    );
    console.stop().await;
}

#[tokio::test]
async fn script_and_attribute_payloads_in_free_text_fields_come_back_escaped() {
    let console = Console::start().await;
    let mut c = console.superadmin().await;
    let csrf = c.get("/domains").await.csrf();
    assert_eq!(
        c.post_form(
            "/domains",
            &[
                ("csrf", &csrf),
                ("name", "example.org"),
                ("description", &format!("{SCRIPT}{ATTR}"))
            ]
        )
        .await
        .status,
        303
    );
    let r = c
        .post_form(
            "/users",
            &[
                ("csrf", &csrf),
                ("address", "a@example.org"),
                ("display_name", &format!("{SCRIPT}{ATTR}")),
                ("password", "long enough"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = c
        .post_form(
            "/access",
            &[
                ("csrf", &csrf),
                ("kind", "ip"),
                ("value", "192.0.2.1"),
                ("action", "block"),
                ("reason", &format!("{SCRIPT}{ATTR}")),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = c
        .post_form(
            "/tokens",
            &[
                ("csrf", &csrf),
                ("name", &format!("{SCRIPT}{ATTR}")),
                ("scope", "read"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    // Forms that fail validation echo the input back: that must be escaped too.
    let mut pages = vec![];
    for (path, fields) in [
        ("/domains", vec![("name", SCRIPT), ("description", ATTR)]),
        (
            "/users",
            vec![
                ("address", ATTR),
                ("display_name", SCRIPT),
                ("password", "x"),
            ],
        ),
        ("/aliases", vec![("source", ATTR), ("destinations", SCRIPT)]),
        (
            "/access",
            vec![
                ("kind", "ip"),
                ("value", ATTR),
                ("action", "block"),
                ("reason", SCRIPT),
            ],
        ),
        (
            "/admins",
            vec![
                ("username", ATTR),
                ("password", "x"),
                ("role", "domain_admin"),
                ("domains", SCRIPT),
            ],
        ),
    ] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        let r = c.post_form(path, &all).await;
        assert_eq!(r.status, 422, "POST {path} re-renders the form: {}", r.body);
        pages.push((path.to_string(), r.body));
    }
    for path in [
        "/domains",
        "/users?domain=example.org",
        "/users/a@example.org",
        "/access",
        "/tokens",
        "/audit",
        "/",
    ] {
        pages.push((path.to_string(), c.get(path).await.body));
    }
    let mut seen_escaped = 0;
    for (path, body) in &pages {
        assert!(
            !body.contains("<script>alert"),
            "{path} contains a raw <script>"
        );
        assert!(!body.contains("<img src=x"), "{path} contains a raw <img>");
        assert!(
            !body.contains("\"'>"),
            "{path} lets a quote break out of an attribute"
        );
        if body.contains("&lt;script&gt;") || body.contains("&#60;script&#62;") {
            seen_escaped += 1;
        }
    }
    assert!(
        seen_escaped >= 8,
        "payloads should be visible, escaped, on most pages ({seen_escaped})"
    );
    console.stop().await;
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_per_account_with_a_clear_message() {
    let console = Console::start().await;
    console.superadmin().await;
    let mut c = console.client();
    for attempt in 1..=5 {
        let csrf = c.get("/login").await.csrf();
        let r = c
            .post_form(
                "/login",
                &[("csrf", &csrf), ("username", "root"), ("password", "guess")],
            )
            .await;
        assert_eq!(r.status, 401, "attempt {attempt}");
        assert!(r.body.contains("Wrong username or password."));
    }
    let csrf = c.get("/login").await.csrf();
    // Even the right password is refused while the account is locked.
    let r = c
        .post_form(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "ROOT"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(
        r.body
            .contains("Too many failed sign-ins for this account. Try again in 15 minutes."),
        "{}",
        r.body
    );
    let failures = console
        .store
        .login_failures_since("account:root", 0)
        .await
        .unwrap()
        .0;
    assert_eq!(failures, 5);
    console.stop().await;
}

#[tokio::test]
async fn many_accounts_from_one_address_trip_the_per_ip_limit() {
    let console = Console::start_with(|c| c.login_max_failures_ip = 3).await;
    console.superadmin().await;
    let mut c = console.client();
    for name in ["a", "b", "c"] {
        let csrf = c.get("/login").await.csrf();
        let r = c
            .post_form(
                "/login",
                &[("csrf", &csrf), ("username", name), ("password", "guess")],
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let csrf = c.get("/login").await.csrf();
    let r = c
        .post_form(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "root"),
                ("password", "correct horse battery"),
            ],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(
        r.body
            .contains("Too many failed sign-ins for your address.")
    );
    console.stop().await;
}

#[tokio::test]
async fn clients_outside_the_allow_list_get_403_and_http_redirects_to_https() {
    let console = Console::start_with(|c| c.allow = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let mut c = console.client();
    let r = c.get("/login").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("allow-list"));
    assert_eq!(c.get("/api/v1/domains").await.status, 403);

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(console.http_addr)
        .await
        .unwrap();
    tcp.write_all(
        b"GET /users?q=x HTTP/1.1\r\nHost: mail.example.org\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 308"), "{raw}");
    let want = format!(
        "location: https://mail.example.org:{}/users?q=x",
        console.addr.port()
    );
    assert!(raw.to_lowercase().contains(&want), "{raw}");
    console.stop().await;
}

#[tokio::test]
async fn static_assets_are_cached_and_pages_are_not() {
    let console = Console::start().await;
    let mut c = console.client();
    let login = c.get("/setup").await;
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let css = login
        .body
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = c.get(&css).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.header("content-type").unwrap().starts_with("text/css"));
    let _ = form_encode(&[]);
    console.stop().await;
}
