//! Policy parsing (RFC 8461 §3.2), MX matching (§4.1), the response reader, and real
//! fetches: a loopback unbound publishes the TXT and A records, a rustls HTTPS server
//! in the test serves the policy with a certificate from a test CA.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use fugu_tests::dns::{Unbound, Zone};
use fugu_tests::net::free_port;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;

const RFC_EXAMPLE: &str = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";

#[test]
fn the_rfc_8461_example_policy_parses() {
    let p = Policy::parse(RFC_EXAMPLE, "20160831085700Z").unwrap();
    assert_eq!(
        p,
        Policy {
            mode: Mode::Enforce,
            mx: vec![
                "mail.example.com".into(),
                "*.example.net".into(),
                "backupmx.example.com".into()
            ],
            max_age: 604800,
            id: "20160831085700Z".into(),
        }
    );
}

#[test]
fn crlf_lines_unknown_fields_and_mode_none_are_accepted() {
    let p = Policy::parse(
        "version: STSv1\r\nmode: testing\r\nmx: MX1.Example.ORG.\r\nmax_age: 86400\r\nextension: yes\r\n",
        "a1",
    )
    .unwrap();
    assert_eq!(
        (p.mode, p.mx, p.max_age),
        (Mode::Testing, vec!["mx1.example.org".to_owned()], 86400)
    );
    let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 0\n", "a2").unwrap();
    assert_eq!(none.mode, Mode::None);
}

#[test]
fn bad_policies_are_rejected() {
    for (text, why) in [
        (
            "mode: enforce\nmx: a.example\nmax_age: 1\n",
            "version is not STSv1",
        ),
        (
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
            "version is not STSv1",
        ),
        (
            "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
            "unknown mode \"strict\"",
        ),
        ("version: STSv1\nmx: a.example\nmax_age: 1\n", "no mode"),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\n",
            "no max_age",
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            "max_age \"-1\" is not a number",
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
            "max_age 31557601 exceeds 31557600",
        ),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
        (
            "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n",
            "mx \"*.*.example\" is not a host name or *.domain",
        ),
        (
            "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1\n",
            "policy line \"mode enforce\" is not `key: value`",
        ),
    ] {
        assert_eq!(Policy::parse(text, "x").unwrap_err(), why, "{text}");
    }
}

#[test]
fn mx_patterns_match_exactly_or_one_wildcard_label() {
    let p = Policy::parse(RFC_EXAMPLE, "1").unwrap();
    for host in [
        "mail.example.com",
        "MAIL.Example.COM.",
        "mx1.example.net",
        "backupmx.example.com",
    ] {
        assert!(p.allows_mx(host), "{host}");
    }
    for host in [
        "example.net",
        "a.b.example.net",
        "mail.example.com.evil",
        "xmail.example.com",
        ".example.net",
    ] {
        assert!(!p.allows_mx(host), "{host}");
    }
}

#[test]
fn txt_records_give_their_id() {
    assert_eq!(
        parse_txt("v=STSv1; id=20160831085700Z;").as_deref(),
        Ok("20160831085700Z")
    );
    assert_eq!(parse_txt("v=STSv1;id=abc").as_deref(), Ok("abc"));
    assert!(parse_txt("v=STSv2; id=1").is_err());
    assert!(parse_txt("v=STSv1").is_err());
    assert!(parse_txt("v=STSv1; id=has-dash").is_err());
    assert!(parse_txt(&format!("v=STSv1; id={}", "a".repeat(33))).is_err());
}

#[test]
fn responses_are_read_by_length_chunks_or_close() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n";
    let by_length = format!("{head}Content-Length: 5\r\n\r\nhello");
    assert_eq!(
        http::complete_body(by_length.as_bytes()),
        Ok(Some(b"hello".to_vec()))
    );
    assert_eq!(
        http::complete_body(&by_length.as_bytes()[..by_length.len() - 1]),
        Ok(None)
    );
    let chunked =
        format!("{head}Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n");
    assert_eq!(
        http::complete_body(chunked.as_bytes()),
        Ok(Some(b"hello".to_vec()))
    );
    let close = format!("{head}\r\nhello");
    assert_eq!(http::complete_body(close.as_bytes()), Ok(None));
    assert_eq!(http::body_at_eof(close.as_bytes()), Ok(b"hello".to_vec()));
    assert_eq!(
        http::body_at_eof(format!("{head}Content-Length: 9\r\n\r\nhello").as_bytes()),
        Err("body cut short".into())
    );
}

#[test]
fn redirects_other_types_and_large_bodies_are_refused() {
    let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://x/\r\nContent-Type: text/plain\r\n\r\n";
    assert_eq!(
        http::body_at_eof(moved.as_bytes()),
        Err("HTTP status 301 Moved Permanently".into())
    );
    let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nx";
    assert_eq!(
        http::body_at_eof(html.as_bytes()),
        Err("Content-Type is text/html, not text/plain".into())
    );
    let big = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 65537\r\n\r\n";
    assert_eq!(
        http::complete_body(big.as_bytes()),
        Err("policy larger than 65536 bytes".into())
    );
}

/// A test CA and a server certificate for `names`, both as rustls wants them.
fn pki(
    names: &[&str],
) -> (
    RootCertStore,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fugu test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (roots, vec![cert.der().clone()], key)
}

/// An HTTPS server on loopback answering every request with `response` (the whole raw
/// HTTP response, changeable while it runs), counting requests.
struct PolicyServer {
    port: u16,
    response: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl PolicyServer {
    async fn start(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> PolicyServer {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let response = Arc::new(Mutex::new(String::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (response.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, h) = (acceptor.clone(), r.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(request.starts_with(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n"));
                    h.fetch_add(1, Ordering::SeqCst);
                    let text = r.lock().unwrap().clone();
                    let _ = tls.write_all(text.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        PolicyServer {
            port,
            response,
            hits,
        }
    }

    fn serve(&self, status: &str, content_type: &str, body: &str) {
        *self.response.lock().unwrap() = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn zones(id: &str) -> Vec<Zone> {
    // TTL 0, so that a restarted server's new records are seen at once.
    vec![
        Zone::new(
            "example.org",
            &format!("_mta-sts 0 IN TXT \"v=STSv1; id={id}\"\nmta-sts 0 IN A 127.0.0.1\n"),
        ),
        Zone::new("example.net", "@ 0 IN A 127.0.0.1\n"),
        // RFC 8461 §3.1: two valid records are as good as none.
        Zone::new(
            "example.edu",
            "_mta-sts IN TXT \"v=STSv1; id=1\"\n_mta-sts IN TXT \"v=STSv1; id=2\"\nmta-sts IN A 127.0.0.1\n",
        ),
        Zone::new(
            "example.com",
            "_mta-sts 0 IN TXT \"v=STSv1; id=1\"\nmta-sts 0 IN A 127.0.0.1\n",
        ),
    ]
}

fn resolver(port: u16) -> TokioResolver {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = port;
        c
    };
    let ns = NameServerConfig::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        true,
        vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
    );
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap()
}

const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmax_age: 86400\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: *.example.org\nmax_age: 86400\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_fetched_cached_refetched_on_a_new_id_and_kept_when_refetch_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let mut dns = Unbound::start(&dir.path().join("dns1"), dns_port, &zones("1"));
    let (roots, certs, key) = pki(&["mta-sts.example.org"]);
    let server = PolicyServer::start(certs, key).await;
    server.serve("200 OK", "text/plain", ENFORCE);
    let sts = MtaSts::new(resolver(dns_port), Arc::new(roots)).with_https_port(server.port);

    let p = sts.policy("Example.ORG.").await.unwrap().unwrap();
    assert_eq!((p.mode, p.id.as_str()), (Mode::Enforce, "1"));
    assert!(p.allows_mx("mx1.example.org"));
    assert!(!p.allows_mx("mx2.example.org"));

    // Same id: the cached policy, no new fetch.
    let again = sts.policy("example.org").await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&p, &again));
    assert_eq!(server.hits(), 1);

    // A new id while the policy host is broken: the cached policy stays (RFC 8461 §5.1).
    drop(dns);
    dns = Unbound::start(&dir.path().join("dns2"), dns_port, &zones("2"));
    server.serve("404 Not Found", "text/plain", "");
    let kept = sts.policy("example.org").await.unwrap().unwrap();
    assert_eq!((kept.mode, kept.id.as_str()), (Mode::Enforce, "1"));
    assert_eq!(server.hits(), 2);

    // The host is back: the new policy replaces the old one.
    server.serve("200 OK", "text/plain; charset=utf-8", TESTING);
    let new = sts.policy("example.org").await.unwrap().unwrap();
    assert_eq!((new.mode, new.id.as_str()), (Mode::Testing, "2"));
    assert_eq!(server.hits(), 3);
    drop(dns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_no_policy_and_an_unfetchable_policy_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let _dns = Unbound::start(dir.path(), dns_port, &zones("1"));
    let (roots, certs, key) = pki(&["mta-sts.example.org"]);
    let server = PolicyServer::start(certs, key).await;
    let sts = MtaSts::new(resolver(dns_port), Arc::new(roots)).with_https_port(server.port);

    assert_eq!(sts.policy("example.net").await, Ok(None));
    server.serve("200 OK", "text/plain", ENFORCE);
    assert_eq!(sts.policy("example.edu").await, Ok(None));
    assert_eq!(server.hits(), 0);

    // The certificate does not name mta-sts.example.com.
    let err = sts.policy("example.com").await.unwrap_err();
    assert!(
        err.starts_with("https://mta-sts.example.com/.well-known/mta-sts.txt (127.0.0.1): TLS: "),
        "{err}"
    );
    assert_eq!(server.hits(), 0);

    // A policy served as HTML is no policy.
    server.serve("200 OK", "text/html", ENFORCE);
    let err = sts.policy("example.org").await.unwrap_err();
    assert!(
        err.ends_with("Content-Type is text/html, not text/plain"),
        "{err}"
    );
}
