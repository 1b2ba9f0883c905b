//! The console in real headless Chromium over WebDriver (chromedriver on loopback, plain
//! HTTP), walking the operator's first day: setup, sign-in, domain, user, alias, password
//! reset, a block added and lifted, sign-out. Screenshots land in
//! `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::Console;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    port: u16,
    child: Child,
    session: String,
    /// Chromium's own pid: it can outlive chromedriver, so it is stopped by pid too.
    browser_pid: Option<u64>,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.browser_pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // chromedriver keeps the connection open despite `Connection: close`: read by length.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = tcp.read(&mut chunk).await.unwrap();
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end].lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if n == 0 || len.is_some_and(|len| raw.len() >= end + 4 + len) {
                let body = &raw[end + 4..];
                return serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {text}"));
            }
        }
        assert!(n > 0, "chromedriver closed the connection early");
    }
}

impl Driver {
    async fn start() -> Driver {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "chromium-driver is not installed: run scripts/install-test-deps"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let r = http(port, "POST", "/session", Some(&caps)).await;
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let browser_pid = r["value"]["capabilities"]["goog:processID"].as_u64();
        Driver {
            port,
            child,
            session,
            browser_pid,
            _profile: profile,
            shots,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .await;
        assert!(r["value"].get("error").is_none(), "{method} {path}: {r}");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn path(&self) -> String {
        let url = self
            .cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string();
        let after_host = url.splitn(4, '/').nth(3).unwrap_or("");
        format!("/{after_host}")
    }

    /// Clicks return before the next page loads: poll until it has.
    async fn wait_path(&self, want: &str) {
        for _ in 0..100 {
            if self.path().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "still on {} instead of {want}:\n{}",
            self.path().await,
            self.source().await
        );
    }

    async fn wait_text(&self, want: &str) -> String {
        for _ in 0..100 {
            let page = self.source().await;
            if page.contains(want) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("page never showed {want:?}:\n{}", self.source().await);
    }

    async fn shot(&self, name: &str) {
        let b64 = self
            .cmd("GET", "/screenshot", None)
            .await
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(self.shots.join(format!("{name}.png")), base64_decode(&b64)).unwrap();
    }

    async fn quit(&self) {
        http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        buf = (buf << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[test]
fn operator_walks_through_the_console_in_headless_chromium() {
    // The walk's future is large in debug builds: give it a thread with room for it.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(walk())
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn walk() {
    // A scripted mta behind the control socket, so the dashboard and queue have content.
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    crate::queue::spawn_daemon(&socket, &[crate::queue::DEFERRED, crate::queue::BOUNCE]);
    let console = Console::start_with(|c| c.control_socket = Some(socket.clone())).await;
    let base = format!("https://localhost:{}", console.addr.port());
    let b = Driver::start().await;

    b.goto(&format!("{base}/")).await;
    b.wait_path("/setup").await;
    b.fill("#username", "root").await;
    b.fill("#password", "correct horse battery").await;
    b.shot("01-setup").await;
    b.click("button[type=submit]").await;
    b.wait_path("/domains").await;

    b.click("header form button").await;
    b.wait_path("/login").await;
    b.wait_text("You have been logged out.").await;
    b.fill("#username", "root").await;
    b.fill("#password", "not it").await;
    b.click("main button[type=submit]").await;
    b.wait_text("Wrong username or password.").await;
    b.fill("#username", "root").await;
    b.fill("#password", "correct horse battery").await;
    b.shot("02-login").await;
    b.click("main button[type=submit]").await;
    b.wait_path("/").await;

    b.goto(&format!("{base}/domains")).await;
    b.fill("#name", "example.org").await;
    b.fill("#description", "Our main domain").await;
    b.click("form.card button").await;
    b.wait_text("Domain example.org added.").await;
    b.shot("03-domains").await;

    b.goto(&format!("{base}/users?domain=example.org")).await;
    b.fill("#address", "alice@example.org").await;
    b.fill("#display_name", "Alice Liddell").await;
    b.fill("#password", "rabbit hole 1865").await;
    b.fill("#quota_mb", "2048").await;
    b.click("form.card button").await;
    b.wait_text("User alice@example.org added.").await;
    b.wait_text("2 GiB").await;
    b.shot("04-users").await;

    b.goto(&format!("{base}/aliases")).await;
    b.fill("#source", "info@example.org").await;
    b.fill("#destinations", "alice@example.org\nalice@elsewhere.net")
        .await;
    b.click("form.card button").await;
    b.wait_text("Alias info@example.org → alice@example.org, alice@elsewhere.net added.")
        .await;
    b.shot("05-aliases").await;

    b.goto(&format!("{base}/users/alice@example.org")).await;
    b.fill("#password", "through the looking glass").await;
    b.click("form.card button").await;
    b.wait_text("Password of alice@example.org changed.").await;
    b.shot("06-user").await;
    assert!(
        console
            .store
            .verify_user_password(
                &store::EmailAddress::parse("alice@example.org").unwrap(),
                "through the looking glass"
            )
            .await
            .unwrap()
    );

    b.goto(&format!("{base}/access")).await;
    b.fill("#value", "203.0.113.0/24").await;
    let kind = b.find("#kind option[value=cidr]").await;
    b.cmd("POST", &format!("/element/{kind}/click"), Some(json!({})))
        .await;
    b.fill("#reason", "dictionary attack").await;
    b.click("form.card button").await;
    b.wait_text("Rule added: block cidr 203.0.113.0/24.").await;
    b.shot("07-access").await;
    b.click("table form button").await;
    b.wait_text("Lifted: block cidr 203.0.113.0/24.").await;
    assert!(
        console
            .store
            .list_access_rules(&store::AccessQuery {
                include_expired: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    b.goto(&format!("{base}/audit")).await;
    let page = b.source().await;
    for action in [
        "domain.add",
        "user.add",
        "alias.add",
        "user.passwd",
        "access.add",
        "access.remove",
    ] {
        assert!(page.contains(action), "audit log lacks {action}");
    }
    b.shot("08-audit").await;

    b.goto(&format!("{base}/")).await;
    b.wait_text("delivered").await;
    b.shot("10-dashboard").await;
    b.goto(&format!("{base}/queue")).await;
    b.wait_text("greylisted").await;
    b.shot("11-queue").await;

    b.click("header form button").await;
    b.wait_path("/login").await;
    b.goto(&format!("{base}/users")).await;
    b.wait_path("/login").await;
    b.shot("09-logged-out").await;
    b.quit().await;
    console.stop().await;
}
