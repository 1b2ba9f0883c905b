//! A console on a free loopback port in a temp dir, and a small HTTPS client that keeps
//! the session cookie like a browser and trusts only the console's own certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Console {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub store: store::Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), admin_web::Error>>>,
}

impl Console {
    pub async fn start() -> Console {
        Console::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut admin_web::Config)) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fugu.db");
        let mut config = admin_web::Config::new("127.0.0.1:0".parse().unwrap(), db.clone());
        config.http_listen = vec!["127.0.0.1:0".parse().unwrap()];
        tweak(&mut config);
        let listeners = admin_web::bind(&config).unwrap();
        let addr = listeners.https_addrs()[0];
        let http_addr = listeners.http_addrs()[0];
        let store = store::Store::open(&db).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(admin_web::serve(config, listeners, async {
            let _ = rx.await;
        }));
        let console = Console {
            addr,
            http_addr,
            dir,
            store,
            stop: Some(tx),
            task: Some(task),
        };
        // The certificate is written during start-up; wait for the first TLS answer.
        for _ in 0..200 {
            if console.cert_path().exists()
                && TcpStream::connect(addr).await.is_ok()
                && console.client().get("/static/nope").await.status != 0
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        console
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("console-cert.pem")
    }

    pub fn client(&self) -> Client {
        Client {
            addr: self.addr,
            cert: self.cert_path(),
            cookie: None,
            bearer: None,
            host: None,
        }
    }

    /// A client that has gone through first-run setup as superadmin `root`.
    pub async fn superadmin(&self) -> Client {
        let mut c = self.client();
        let page = c.get("/setup").await;
        let csrf = page.csrf();
        let r = c
            .post_form(
                "/setup",
                &[
                    ("csrf", &csrf),
                    ("username", "root"),
                    ("password", "correct horse battery"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "setup failed: {}", r.body);
        c
    }

    /// Signs in a new client with a username and password.
    pub async fn login(&self, username: &str, password: &str) -> Client {
        let mut c = self.client();
        let csrf = c.get("/login").await.csrf();
        let r = c
            .post_form(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "login as {username} failed: {}", r.body);
        c
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    /// 0 when the connection failed.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The CSRF token of the first form on the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in page: {}", self.body));
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub struct Client {
    addr: SocketAddr,
    cert: PathBuf,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
    /// The Host header to send (`localhost` when unset), e.g. `mta-sts.example.org`.
    pub host: Option<String>,
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Client {
    /// As the superadmin: adds `domain` and `username`, a domain admin of it.
    pub async fn add_domain_admin(&mut self, username: &str, password: &str, domain: &str) {
        let csrf = self.get("/admins").await.csrf();
        let r = self
            .post_form("/domains", &[("csrf", &csrf), ("name", domain)])
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let r = self
            .post_form(
                "/admins",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                    ("role", "domain_admin"),
                    ("domains", domain),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None, "").await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.request(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            &form_encode(fields),
        )
        .await
    }

    pub async fn json(&mut self, method: &str, path: &str, body: &serde_json::Value) -> Resp {
        self.request(method, path, Some("application/json"), &body.to_string())
            .await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        ctype: Option<&str>,
        body: &str,
    ) -> Resp {
        let failed = || Resp {
            status: 0,
            headers: Vec::new(),
            body: String::new(),
        };
        let Ok(certs) = CertificateDer::pem_file_iter(&self.cert) else {
            return failed();
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let Ok(tcp) = TcpStream::connect(self.addr).await else {
            return failed();
        };
        let Ok(mut tls) = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        else {
            return failed();
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host.as_deref().unwrap_or("localhost"),
            body.len()
        );
        if let Some(t) = ctype {
            head.push_str(&format!("Content-Type: {t}\r\n"));
        }
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        if let Some(b) = &self.bearer {
            head.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let resp = parse(&raw);
        for (k, v) in &resp.headers {
            if k.eq_ignore_ascii_case("set-cookie") && v.starts_with("fugu_session=") {
                let pair = v.split(';').next().unwrap().to_string();
                // Max-Age=0 / an empty value is the server ending the session.
                if pair == "fugu_session=" || v.contains("Max-Age=0") {
                    self.cookie = None;
                } else {
                    self.cookie = Some(pair);
                }
            }
        }
        resp
    }
}

fn parse(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Compares `actual` with `tests/golden/NAME`, rewriting it when BLESS=1.
pub fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}; run with BLESS=1", path.display()));
    assert!(
        expected == actual,
        "{name} differs from its golden file; re-bless with BLESS=1 after review\n--- actual ---\n{actual}"
    );
}

/// Replaces per-run values (CSRF tokens, times) so a page can be compared with a golden file.
pub fn stable(page: &str, csrf: &str) -> String {
    let mut s = page.replace(csrf, "CSRF");
    // Dates like 2026-11-20 12:34 UTC.
    let re = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC").unwrap();
    s = re.replace_all(&s, "DATE").into_owned();
    s
}
