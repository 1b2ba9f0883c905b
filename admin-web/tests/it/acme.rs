//! Certificates: ACME end to end against a real pebble on loopback (HTTP-01 validated for
//! real on the console's port-80 listener, names resolved by a real unbound), renewal
//! driven by the injected clock, and manual upload with its validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::net::{free_port, wait_for_port};
use fugu_tests::process::{Child, require_program};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls_pki_types::pem::PemObject;

use admin_web::Clock;

use crate::harness::{Console, Resp};

const HOST: &str = "mail.example.org";

/// A certificate authority made for one test, and certificates it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), &self.issuer)
                .unwrap(),
        }
    }

    /// A leaf for `names`; returns (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// pebble, the ACME test CA, on free loopback ports, validating HTTP-01 on `http_port`
/// and resolving names through `dns`.
struct Pebble {
    directory: String,
    ca_file: PathBuf,
    management: SocketAddr,
    child: Child,
}

impl Pebble {
    fn start(dir: &Path, tls: &Ca, http_port: u16, dns: SocketAddr) -> Pebble {
        let pebble = require_program("pebble", "pebble");
        std::fs::create_dir_all(dir).unwrap();
        // pebble's own HTTPS certificate, from a CA only this test (and the console) trusts.
        let (cert, key) = tls.leaf(&["localhost", "127.0.0.1"], false);
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, tls.pem()).unwrap();
        let port = free_port();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let mut cmd = Command::new(pebble);
        cmd.arg("-config")
            .arg(dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.to_string())
            // Real validation: no PEBBLE_VA_ALWAYS_VALID. No sleeping before validating, and a
            // fresh authorization for every order so that renewals answer a new challenge.
            // No nonces refused on purpose: pebble's default refuses 5%, instant-acme gives
            // up on the third in a row, and the console then retries ten minutes later,
            // which no test waits for (CI saw it once: three refused polls of one order).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID");
        let child = Child::spawn("pebble", cmd, &dir.join("pebble.log"));
        wait_for_port(
            format!("127.0.0.1:{port}").parse().unwrap(),
            Duration::from_secs(20),
        );
        Pebble {
            directory: format!("https://localhost:{port}/dir"),
            ca_file,
            management,
            child,
        }
    }

    /// The root pebble issues under (made at each start), from its management API.
    async fn issuing_root(&self) -> rustls::RootCertStore {
        let ca = std::fs::read(&self.ca_file).unwrap();
        let (_, body) = tls_exchange(self.management, "localhost", &ca, Some("/roots/0")).await;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(&body) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

/// Connects with TLS to `addr` asking for `sni`, trusting only `roots_pem` (or a root
/// store), optionally sends a GET for `path`; returns the server's chain and the body.
async fn tls_exchange(
    addr: SocketAddr,
    sni: &str,
    roots_pem: &[u8],
    path: Option<&str>,
) -> (Vec<rustls_pki_types::CertificateDer<'static>>, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(roots_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    tls_exchange_roots(addr, sni, roots, path).await
}

async fn tls_exchange_roots(
    addr: SocketAddr,
    sni: &str,
    roots: rustls::RootCertStore,
    path: Option<&str>,
) -> (Vec<rustls_pki_types::CertificateDer<'static>>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr} as {sni}: {e}"));
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let mut body = Vec::new();
    if let Some(path) = path {
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        body = raw[at + 4..].to_vec();
    }
    (chain, body)
}

fn pem_leaf(chain: &str) -> rustls_pki_types::CertificateDer<'static> {
    rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

/// Everything an ACME test talks to: unbound serving example.org, pebble, the console
/// on a manual clock.
struct World {
    console: Console,
    pebble: Pebble,
    clock: admin_web::ManualClock,
    challenges: admin_web::Challenges,
    _unbound: Unbound,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let tls_ca = Ca::new("fugu test ACME server CA");
        let ca_file = dir.path().join("pebble/ca.pem");
        let clock = admin_web::ManualClock::starting_now();
        let challenges = admin_web::Challenges::default();
        let console = Console::start_with(|c| {
            c.mail_hostname = HOST.to_string();
            c.clock = std::sync::Arc::new(clock.clone());
            c.acme.ca_file = Some(ca_file.clone());
            c.acme.check_interval = Duration::from_millis(200);
            c.acme.challenges = challenges.clone();
        })
        .await;
        console
            .store
            .add_domain(&store::DomainName::parse("example.org").unwrap(), "")
            .await
            .unwrap();
        // The host and mta-sts name point at the console; autoconfig at an address where
        // nothing listens, so its challenge must fail.
        let unbound = Unbound::start(
            &dir.path().join("unbound"),
            free_port(),
            &[Zone::new(
                "example.org",
                "mail IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\nautoconfig IN A 127.0.0.2\n",
            )],
        );
        let pebble = Pebble::start(
            &dir.path().join("pebble"),
            &tls_ca,
            console.http_addr.port(),
            unbound.addr(),
        );
        assert_eq!(pebble.ca_file, ca_file);
        World {
            console,
            pebble,
            clock,
            challenges,
            _unbound: unbound,
            _dir: dir,
        }
    }

    async fn request(&self, client: &mut crate::harness::Client, names: &[&str]) -> Resp {
        let csrf = client.get("/certificates").await.csrf();
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("directory", "custom"),
            ("custom_url", self.pebble.directory.as_str()),
            ("contact", "postmaster@example.org"),
            ("agree_tos", "1"),
        ];
        for n in names {
            form.push(("names", n));
        }
        client.post_form("/certificates/request", &form).await
    }

    async fn acme_certificates(&self) -> Vec<store::Certificate> {
        let mut v: Vec<_> = self
            .console
            .store
            .certificates()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.source == "acme")
            .collect();
        v.reverse();
        v
    }
}

fn leaf_spki(chain: &str) -> Vec<u8> {
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.public_key().raw.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_through_pebble_then_renews_with_the_same_key_when_the_clock_moves() {
    let w = World::start().await;
    let mut root = w.console.superadmin().await;

    // The operator asks for the host name plus mta-sts: an account is created, pebble
    // fetches both challenges from the console's port-80 listener, the certificate is stored.
    let r = w.request(&mut root, &["mta-sts.example.org"]).await;
    assert_eq!(
        r.status,
        303,
        "request failed: {}\npebble log:\n{}",
        r.body,
        w.pebble.child.log()
    );
    let accounts = w.console.store.acme_accounts().await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].directory_url, w.pebble.directory);
    assert_eq!(accounts[0].contact, "mailto:postmaster@example.org");
    assert!(
        w.challenges.served() >= 2,
        "pebble validated {} challenges at the console",
        w.challenges.served()
    );
    let first = w.acme_certificates().await;
    assert_eq!(first.len(), 1);
    let first = &first[0];
    assert_eq!(first.names, "mail.example.org mta-sts.example.org");
    assert!(first.chain_pem.contains("BEGIN CERTIFICATE"));
    assert!(first.not_after > first.not_before);

    // The page lists it with pebble as issuer and never shows the key.
    let page = root.get("/certificates").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("mail.example.org mta-sts.example.org"));
    assert!(page.body.contains("Pebble"), "{}", page.body);
    assert!(!page.body.contains("PRIVATE KEY"));

    // The console itself serves that certificate to clients asking for the host name (once
    // the manual clock, started before pebble signed, reaches the certificate's notBefore),
    // a chain that verifies up to pebble's root; other names still get the old one.
    w.clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs(first.not_before as u64 + 1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pebble_root = w.pebble.issuing_root().await;
    let (served, _) = tls_exchange_roots(w.console.addr, HOST, pebble_root.clone(), None).await;
    assert_eq!(served[0], pem_leaf(&first.chain_pem));
    let console_cert = std::fs::read(w.console.cert_path()).unwrap();
    tls_exchange(w.console.addr, "localhost", &console_cert, None).await;

    // Nothing is due yet: the renewal task leaves it alone. (The wait also puts a couple of
    // seconds between this certificate and its renewal, which the clock step below needs.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(w.acme_certificates().await.len(), 1);

    // Move the clock one second into the renewal window: the task orders again, answering a
    // fresh challenge (PEBBLE_AUTHZREUSE=0), and stores a new certificate with the same key.
    // The renewed certificate, issued later by pebble's real clock, is not yet due itself.
    let served_before = w.challenges.served();
    let lifetime = first.not_after - first.not_before;
    let renew_at = first.not_after - (lifetime / 3).max(30 * 86_400).min(lifetime / 2);
    w.clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs((renew_at + 1) as u64));
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let certs = w.acme_certificates().await;
        if certs.len() >= 2 {
            break certs[1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no renewal; requests: {:?}\npebble log:\n{}",
            w.console.store.acme_requests().await.unwrap(),
            w.pebble.child.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(second.id, first.id);
    assert_ne!(second.chain_pem, first.chain_pem);
    assert_eq!(second.names, first.names);
    assert_eq!(
        second.key_pem, first.key_pem,
        "the key must survive renewal"
    );
    assert_eq!(leaf_spki(&second.chain_pem), leaf_spki(&first.chain_pem));
    assert!(w.challenges.served() >= served_before + 2);
    let (served, _) = tls_exchange_roots(w.console.addr, HOST, pebble_root, None).await;
    assert_eq!(
        served[0],
        pem_leaf(&second.chain_pem),
        "the console serves the renewal"
    );
    // Renewed once, not again on every tick.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.acme_certificates().await.len(), 2);
    let req = &w.console.store.acme_requests().await.unwrap()[0];
    assert_eq!(req.certificate_id, Some(second.id));
    assert_eq!(req.failures, 0);
    // The audit log tells who asked and what the CA did.
    let audit = w
        .console
        .store
        .list_audit(&store::AuditQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .rev()
        .filter(|e| e.action.starts_with("certificate."))
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("root", "certificate.request"),
            ("acme", "certificate.issue"),
            ("acme", "certificate.issue")
        ]
    );
    w.console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_challenge_is_shown_on_the_certificates_page_and_retried_with_backoff() {
    let w = World::start().await;
    let mut root = w.console.superadmin().await;

    // autoconfig.example.org resolves to 127.0.0.2, where nothing listens on the port.
    let r = w.request(&mut root, &["autoconfig.example.org"]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("autoconfig.example.org: HTTP-01 challenge failed"),
        "{}",
        r.body
    );
    // pebble's own words: where it connected and what happened.
    assert!(
        r.body.contains("dial tcp 127.0.0.2:") && r.body.contains("connection refused"),
        "{}",
        r.body
    );
    assert!(w.acme_certificates().await.is_empty());

    // The failure stays on the page, with the retry time.
    let page = root.get("/certificates").await;
    assert!(page.body.contains("failed 1 time(s)"), "{}", page.body);
    assert!(
        page.body
            .contains("autoconfig.example.org: HTTP-01 challenge failed")
    );
    let req = w.console.store.acme_requests().await.unwrap().remove(0);
    assert_eq!(req.failures, 1);
    let wait = req.next_attempt_at - w.clock.unix();
    assert!((590..=600).contains(&wait), "first retry in {wait} s");

    // Before the retry time, the renewal task does not try again; after it, it does
    // (and fails again, doubling the delay).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        w.console.store.acme_requests().await.unwrap()[0].failures,
        1
    );
    w.clock.advance(Duration::from_secs(601));
    let deadline = Instant::now() + Duration::from_secs(60);
    let req = loop {
        let r = w.console.store.acme_requests().await.unwrap().remove(0);
        if r.failures >= 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "no retry: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wait = req.next_attempt_at - w.clock.unix();
    assert!((1190..=1200).contains(&wait), "second retry in {wait} s");
    w.console.stop().await;
}

// ---- manual upload ------------------------------------------------------------------------

async fn upload(client: &mut crate::harness::Client, chain: &str, key: &str) -> Resp {
    let csrf = client.get("/certificates").await.csrf();
    client
        .post_form(
            "/certificates/upload",
            &[("csrf", &csrf), ("chain", chain), ("key", key)],
        )
        .await
}

async fn upload_console() -> Console {
    Console::start_with(|c| c.mail_hostname = HOST.to_string()).await
}

#[tokio::test]
async fn upload_accepts_a_leaf_first_chain_with_its_key() {
    let console = upload_console().await;
    let mut root = console.superadmin().await;
    let ca = Ca::new("Upload Root");
    let inter = ca.intermediate("Upload Intermediate");
    let (leaf, key) = inter.leaf(&[HOST, "mta-sts.example.org"], false);
    let r = upload(&mut root, &format!("{leaf}{}", inter.pem()), &key).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = root.get("/certificates").await;
    assert!(
        page.body
            .contains("Certificate for mail.example.org mta-sts.example.org uploaded")
    );
    assert!(page.body.contains("CN=Upload Intermediate"));
    let certs = console.store.certificates().await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].source, "manual");
    assert!(certs[0].chain_pem.contains(inter.pem().trim()));
    console.stop().await;
}

#[tokio::test]
async fn upload_refuses_a_wrong_key_an_expired_leaf_a_reversed_chain_and_foreign_names() {
    let console = upload_console().await;
    let mut root = console.superadmin().await;
    let ca = Ca::new("Upload Root");
    let inter = ca.intermediate("Upload Intermediate");
    let (leaf, key) = inter.leaf(&[HOST], false);
    let (_, other_key) = inter.leaf(&[HOST], false);
    let (old_leaf, old_key) = inter.leaf(&[HOST], true);
    let (foreign, foreign_key) = inter.leaf(&["www.elsewhere.test"], false);
    let cases = [
        (
            format!("{leaf}{}", inter.pem()),
            other_key.clone(),
            "the key does not match the certificate",
        ),
        (
            format!("{old_leaf}{}", inter.pem()),
            old_key,
            "the certificate expired on 2021-01-01",
        ),
        (
            format!("{}{leaf}", inter.pem()),
            key.clone(),
            "wrong order: the first certificate is a CA certificate",
        ),
        (
            format!("{leaf}{}{}", ca.pem(), inter.pem()),
            key.clone(),
            "wrong order: certificate 1 was not issued by certificate 2",
        ),
        (
            foreign.clone(),
            foreign_key,
            "do not cover the host name mail.example.org",
        ),
        (
            "not a certificate".to_string(),
            key.clone(),
            "no certificate found",
        ),
    ];
    for (chain, key, reason) in cases {
        let r = upload(&mut root, &chain, &key).await;
        assert_eq!(r.status, 422, "expected refusal '{reason}': {}", r.body);
        assert!(
            r.body.contains(reason),
            "expected '{reason}' in: {}",
            r.body
        );
    }
    assert!(console.store.certificates().await.unwrap().is_empty());
    console.stop().await;
}

#[tokio::test]
async fn certificates_page_renders_the_list_and_both_forms() {
    let console = upload_console().await;
    console
        .store
        .add_domain(&store::DomainName::parse("example.org").unwrap(), "")
        .await
        .unwrap();
    let mut root = console.superadmin().await;
    let inter = Ca::new("Golden Root").intermediate("Golden Intermediate");
    let (leaf, key) = inter.leaf(&[HOST, "autoconfig.example.org"], false);
    let r = upload(&mut root, &format!("{leaf}{}", inter.pem()), &key).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = root.get("/certificates").await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    crate::harness::golden(
        "certificates.html",
        &crate::harness::stable(&page.body, &csrf),
    );
    console.stop().await;
}

#[tokio::test]
async fn api_lists_and_uploads_certificates_without_ever_returning_a_key() {
    let console = upload_console().await;
    let mut root = console.superadmin().await;
    let mut api = console.client();
    for (scope, slot) in [("read", 0), ("read-write", 1)] {
        let csrf = root.get("/tokens").await.csrf();
        let page = root
            .post_form(
                "/tokens",
                &[("csrf", &csrf), ("name", scope), ("scope", scope)],
            )
            .await;
        let token = crate::api::shown_token(&page.body);
        if slot == 0 {
            api.bearer = Some(token);
            let r = api
                .json(
                    "POST",
                    "/api/v1/certificates/upload",
                    &serde_json::json!({"chain": "", "key": ""}),
                )
                .await;
            assert_eq!(r.status, 403, "{}", r.body);
        } else {
            api.bearer = Some(token);
        }
    }
    let inter = Ca::new("API Root").intermediate("API Intermediate");
    let (leaf, key) = inter.leaf(&[HOST], false);
    let chain = format!("{leaf}{}", inter.pem());
    let (_, wrong) = inter.leaf(&[HOST], false);
    let r = api
        .json(
            "POST",
            "/api/v1/certificates/upload",
            &serde_json::json!({"chain": chain, "key": wrong}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "key");
    let r = api
        .json(
            "POST",
            "/api/v1/certificates/upload",
            &serde_json::json!({"chain": chain, "key": key}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["names"], serde_json::json!([HOST]));
    assert_eq!(r.json()["source"], "manual");
    let list = api.get("/api/v1/certificates").await;
    assert_eq!(list.status, 200);
    let certs = &list.json()["certificates"];
    assert_eq!(certs.as_array().unwrap().len(), 1);
    assert_eq!(certs[0]["issuer"], "CN=API Intermediate");
    assert!(certs[0]["renew_at"].is_null(), "uploads are not renewed");
    assert!(!list.body.contains("PRIVATE KEY") && !list.body.contains(key.lines().nth(1).unwrap()));
    // A request needs the terms of service agreed, before anything goes out.
    let r = api
        .json(
            "POST",
            "/api/v1/certificates/request",
            &serde_json::json!({"directory": "letsencrypt-staging"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "agree_tos");
    // Only names a domain publishes can be added: autoconfig switched off here.
    let example = store::DomainName::parse("example.org").unwrap();
    console.store.add_domain(&example, "").await.unwrap();
    let mut policy = console.store.domain_policy(&example).await.unwrap();
    policy.autoconfig_enabled = false;
    console.store.set_domain_policy(&policy).await.unwrap();
    let r = api
        .json(
            "POST",
            "/api/v1/certificates/request",
            &serde_json::json!({"directory": "letsencrypt-staging", "agree_tos": true,
                "names": ["autoconfig.example.org"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "names");
    assert_eq!(
        r.json()["error"]["message"],
        "autoconfig.example.org is not an mta-sts or autoconfig name of a domain here"
    );
    assert!(console.store.acme_accounts().await.unwrap().is_empty());
    console.stop().await;
}
