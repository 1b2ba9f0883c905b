//! DKIM keys, DNS hints with live checks against a real unbound, and the public MTA-STS
//! and autoconfig documents, through the real console on loopback.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use fugu_tests::dns::{Unbound, Zone};
use serde_json::{Value, json};

use crate::api::shown_token;
use crate::harness::{Client, Console, golden, stable};

const DOMAIN: &str = "example.org";
const HOST: &str = "mail.example.org";
const PASSWORD: &str = "correct horse battery";

async fn console(resolver: SocketAddr, allow: Option<&str>) -> Console {
    Console::start_with(|c| {
        c.mail_hostname = HOST.to_string();
        // Not a documentation range: unbound answers NXDOMAIN for their reverse zones itself.
        c.public_addrs = vec!["198.18.0.25".parse().unwrap()];
        c.resolver = Some(resolver);
        c.dnsbls = vec!["bl.example.net".to_string()];
        if let Some(a) = allow {
            c.allow = vec![a.parse().unwrap()];
        }
    })
    .await
}

/// A signed-in superadmin with the test domain, and a read-write API client.
async fn setup(console: &Console) -> (Client, Client) {
    let mut c = console.superadmin().await;
    let csrf = c.get("/domains").await.csrf();
    let r = c
        .post_form(
            "/domains",
            &[("csrf", &csrf), ("name", DOMAIN), ("description", "")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut t = console.login("root", PASSWORD).await;
    let csrf = t.get("/tokens").await.csrf();
    let page = t
        .post_form(
            "/tokens",
            &[("csrf", &csrf), ("name", "dns"), ("scope", "read-write")],
        )
        .await;
    let mut api = console.client();
    api.bearer = Some(shown_token(&page.body));
    (c, api)
}

async fn generate(c: &mut Client, algorithm: &str) -> String {
    let path = format!("/domains/{DOMAIN}/dkim");
    let csrf = c.get(&path).await.csrf();
    let r = c
        .post_form(
            &format!("{path}/generate"),
            &[("csrf", &csrf), ("algorithm", algorithm)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let flash = c.get(&path).await.body;
    let marker = format!("New {algorithm} key ");
    let at = flash.find(&marker).unwrap() + marker.len();
    flash[at..at + flash[at..].find(':').unwrap()].to_string()
}

async fn activate(c: &mut Client, selector: &str, force: bool) -> crate::harness::Resp {
    let path = format!("/domains/{DOMAIN}/dkim");
    let csrf = c.get(&path).await.csrf();
    let mut fields = vec![("csrf", csrf.as_str())];
    if force {
        fields.push(("force", "1"));
    }
    c.post_form(&format!("{path}/{selector}/activate"), &fields)
        .await
}

/// Replaces what differs between runs (selectors, key material, the certificate's hash)
/// so that a page can be compared with its golden file.
fn per_run(page: &str, values: &[&str]) -> String {
    let mut s = page.to_string();
    for (i, v) in values.iter().enumerate() {
        s = s.replace(v, &format!("VALUE{i}"));
    }
    // p= values, whole or split into quoted strings (escaped in HTML).
    let re = regex::Regex::new(
        r#"p=[A-Za-z0-9+/=]{20,}((&quot;|&#34;|")\s*(&quot;|&#34;|")[A-Za-z0-9+/=]+)*"#,
    )
    .unwrap();
    re.replace_all(&s, "p=KEY").into_owned()
}

/// The snippet wrapped into a zone named-checkzone accepts on its own.
fn with_soa(snippet: &str) -> String {
    format!(
        "$ORIGIN {DOMAIN}.\n$TTL 300\n@ IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 300\n\
         @ IN NS ns.{DOMAIN}.\nns IN A 192.0.2.53\n{snippet}"
    )
}

fn named_checkzone(dir: &Path, zone: &str) -> (bool, String) {
    let file = dir.join("checkzone.zone");
    std::fs::write(&file, zone).unwrap();
    let out = Command::new("named-checkzone")
        .arg(DOMAIN)
        .arg(&file)
        .output()
        .expect("named-checkzone (Debian bind9-utils; scripts/install-test-deps)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn start_unbound(dir: &Path, port: u16, snippet: &str) -> Unbound {
    Unbound::start(
        dir,
        port,
        &[
            Zone::new(DOMAIN, snippet),
            Zone::new("0.18.198.in-addr.arpa", &format!("25 IN PTR {HOST}.")),
            // The block list knows the zone but not our address: "not listed".
            Zone::new("bl.example.net", ""),
        ],
    )
}

fn failing(report: &Value) -> Vec<Value> {
    ["records", "reverse", "blocklists"]
        .iter()
        .flat_map(|k| report[k].as_array().unwrap().clone())
        .filter(|c| c["ok"] != json!(true))
        .collect()
}

/// SHA-256 of the certificate's SPKI computed by openssl, not by the code under test.
fn openssl_spki_sha256(cert_pem: &str) -> String {
    let mut x509 = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(cert_pem.as_bytes())
        .unwrap();
    let pubkey = x509.wait_with_output().unwrap().stdout;
    let mut der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    der.stdin.take().unwrap().write_all(&pubkey).unwrap();
    let der = der.wait_with_output().unwrap().stdout;
    ring::digest::digest(&ring::digest::SHA256, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn zone_snippet_in_a_real_dns_server_turns_every_check_green_and_a_removed_record_red() {
    let port = fugu_tests::net::free_port();
    let resolver: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let console = console(resolver, None).await;
    let (mut c, mut api) = setup(&console).await;

    // A certificate for the mail host (TLSA) and an ACME account (CAA accounturi).
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let pool = console.store.pool();
    sqlx::query("INSERT INTO acme_accounts (directory_url, credentials) VALUES (?, ?)")
        .bind("https://acme-v02.api.letsencrypt.org/directory")
        .bind(r#"{"id":"https://acme-v02.api.letsencrypt.org/acme/acct/4242","key_pkcs8":"x"}"#)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO certificates (names, chain_pem, key_pem, not_before, not_after, source)
         VALUES (?, ?, ?, 0, 4102444800, 'manual')",
    )
    .bind(HOST)
    .bind(cert.cert.pem())
    .bind(cert.signing_key.serialize_pem())
    .execute(pool)
    .await
    .unwrap();

    let rsa = generate(&mut c, "rsa-sha256").await;
    let ed = generate(&mut c, "ed25519-sha256").await;
    assert!(rsa.ends_with('r') && ed.ends_with('e'), "{rsa} {ed}");

    // Nothing answers DNS yet: activation is refused with the record to publish.
    let r = activate(&mut c, &rsa, false).await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("DNS does not publish the record"),
        "{}",
        r.body
    );
    assert!(r.body.contains(&format!("{rsa}._domainkey.{DOMAIN}")));

    let z = c.get(&format!("/domains/{DOMAIN}/dns.zone")).await;
    assert_eq!(z.status, 200);
    assert!(z.header("content-type").unwrap().starts_with("text/plain"));
    let snippet = z.body;
    assert!(snippet.contains(&format!(
        "_25._tcp.{HOST}.\t3600\tIN\tTLSA\t3 1 1 {}",
        openssl_spki_sha256(&cert.cert.pem())
    )));
    assert!(snippet.contains(
        "CAA\t0 issue \"letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/4242\""
    ));
    let (ok, out) = named_checkzone(console.dir.path(), &with_soa(&snippet));
    assert!(ok, "named-checkzone refused the snippet:\n{out}\n{snippet}");

    let dns_dir = console.dir.path().join("dns1");
    let unbound = start_unbound(&dns_dir, port, &snippet);

    assert_eq!(activate(&mut c, &rsa, false).await.status, 303);
    assert_eq!(activate(&mut c, &ed, false).await.status, 303);
    let keys = api
        .get(&format!("/api/v1/domains/{DOMAIN}/dkim-keys"))
        .await
        .json();
    let states: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "active"]);

    let report = api
        .get(&format!("/api/v1/domains/{DOMAIN}/dns"))
        .await
        .json();
    assert_eq!(failing(&report), Vec::<Value>::new(), "{report:#}");
    assert_eq!(report["ok"], json!(true));
    // MX, A, SPF, two DKIM, DMARC, two MTA-STS, TLS-RPT, six SRV, autoconfig, CAA, TLSA.
    assert_eq!(report["records"].as_array().unwrap().len(), 18);
    assert_eq!(report["reverse"][0]["status"], "found");
    assert_eq!(report["blocklists"][0]["status"], "not listed");
    let page = c.get(&format!("/domains/{DOMAIN}/dns")).await;
    assert!(page.body.contains("all checks pass"));
    let tlsa = openssl_spki_sha256(&cert.cert.pem());
    golden(
        "dns.html",
        &per_run(&stable(&page.body, &page.csrf()), &[&rsa, &ed, &tlsa]),
    );
    let page = c.get(&format!("/domains/{DOMAIN}/dkim")).await;
    golden(
        "dkim.html",
        &per_run(&stable(&page.body, &page.csrf()), &[&rsa, &ed, &tlsa]),
    );

    // Take the DMARC record away: exactly that check turns red, showing what to publish.
    drop(unbound);
    let without: String = snippet
        .lines()
        .filter(|l| !l.starts_with("_dmarc."))
        .map(|l| format!("{l}\n"))
        .collect();
    let _unbound = start_unbound(&console.dir.path().join("dns2"), port, &without);
    let csrf = c.get(&format!("/domains/{DOMAIN}/dns")).await.csrf();
    let r = c
        .post_form(&format!("/domains/{DOMAIN}/dns/check"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let report = api
        .get(&format!("/api/v1/domains/{DOMAIN}/dns"))
        .await
        .json();
    let red = failing(&report);
    assert_eq!(red.len(), 1, "{red:#?}");
    assert_eq!(red[0]["name"], format!("_dmarc.{DOMAIN}"));
    assert_eq!(red[0]["status"], "missing");
    assert_eq!(
        red[0]["expected"],
        format!("v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}")
    );
    let page = c.get(&format!("/domains/{DOMAIN}/dns")).await;
    assert!(page.body.contains("some checks fail"));
    console.stop().await;
}

#[tokio::test]
async fn rotation_retires_the_previous_key_of_the_same_algorithm() {
    let console = console("127.0.0.1:9".parse().unwrap(), None).await;
    let (mut c, mut api) = setup(&console).await;
    let first = generate(&mut c, "rsa-sha256").await;
    let ed = generate(&mut c, "ed25519-sha256").await;
    let second = generate(&mut c, "rsa-sha256").await;
    assert_eq!(second, format!("{first}2"));
    assert_eq!(activate(&mut c, &first, true).await.status, 303);
    assert_eq!(activate(&mut c, &ed, true).await.status, 303);
    let r = api
        .json(
            "POST",
            &format!("/api/v1/domains/{DOMAIN}/dkim-keys/{second}/activate"),
            &json!({"force": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["retired"]["selector"], first);
    let d = store::DomainName::parse(DOMAIN).unwrap();
    let state = |s: &str| {
        let s = s.to_string();
        let store = console.store.clone();
        let d = d.clone();
        async move { store.dkim_key(&d, &s).await.unwrap().unwrap().state }
    };
    assert_eq!(state(&first).await, "retired");
    assert_eq!(state(&ed).await, "active");
    assert_eq!(state(&second).await, "active");
    // An active key cannot be deleted; a retired one can, by the operator.
    let r = api
        .request(
            "DELETE",
            &format!("/api/v1/domains/{DOMAIN}/dkim-keys/{second}"),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = api
        .request(
            "DELETE",
            &format!("/api/v1/domains/{DOMAIN}/dkim-keys/{first}"),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'dkim.%' ORDER BY id")
            .fetch_all(console.store.pool())
            .await
            .unwrap();
    assert_eq!(
        audit,
        [
            "dkim.generate",
            "dkim.generate",
            "dkim.generate",
            "dkim.activate",
            "dkim.activate",
            "dkim.activate",
            "dkim.delete"
        ]
    );
    console.stop().await;
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn imports_openssl_keys_refuses_short_rsa_and_never_shows_a_private_key() {
    let console = console("127.0.0.1:9".parse().unwrap(), None).await;
    let (mut c, mut api) = setup(&console).await;
    let pkcs1 = openssl(&["genrsa", "-traditional", "2048"]);
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ed_v1 = openssl(&["genpkey", "-algorithm", "ed25519"]);
    let short = openssl(&["genrsa", "1024"]);

    let import = |selector: &str, key: &str| json!({"selector": selector, "private_key": key});
    let path = format!("/api/v1/domains/{DOMAIN}/dkim-keys/import");
    let r = api.json("POST", &path, &import("legacy", &pkcs1)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["algorithm"], "rsa-sha256");
    let r = api.json("POST", &path, &import("edv1", &ed_v1)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["algorithm"], "ed25519-sha256");
    let r = api.json("POST", &path, &import("short", &short)).await;
    assert_eq!(r.status, 422);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("1024 bits") && msg.contains("at least 2048"),
        "{msg}"
    );

    // Stored as PKCS#8, with the public key openssl derives from the same key.
    let d = store::DomainName::parse(DOMAIN).unwrap();
    let legacy = console.store.dkim_key(&d, "legacy").await.unwrap().unwrap();
    assert!(
        legacy
            .private_key
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let mut pubout = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pubout
        .stdin
        .take()
        .unwrap()
        .write_all(pkcs1.as_bytes())
        .unwrap();
    let spki = pubout.wait_with_output().unwrap().stdout;
    use base64::Engine;
    assert_eq!(
        legacy.public_key,
        base64::engine::general_purpose::STANDARD.encode(spki)
    );

    generate(&mut c, "rsa-sha256").await;
    generate(&mut c, "ed25519-sha256").await;
    // Every page and API answer that shows keys: none carries any private key material.
    let mut bodies = Vec::new();
    for p in [
        format!("/domains/{DOMAIN}/dkim"),
        format!("/domains/{DOMAIN}/dns"),
        format!("/domains/{DOMAIN}/dns.zone"),
        "/audit".to_string(),
    ] {
        bodies.push(c.get(&p).await.body);
    }
    for p in [
        format!("/api/v1/domains/{DOMAIN}/dkim-keys"),
        format!("/api/v1/domains/{DOMAIN}/dns"),
    ] {
        bodies.push(api.get(&p).await.body);
    }
    let keys = console.store.dkim_keys(&d).await.unwrap();
    assert_eq!(keys.len(), 4);
    for k in &keys {
        let body: String = k
            .private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for b in &bodies {
            assert!(!b.contains("-----BEGIN"));
            for line in k.private_key.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!b.contains(line), "{} leaked", k.selector);
            }
            assert!(!b.replace(['\n', '"', ' '], "").contains(&body[..40]));
        }
    }
    console.stop().await;
}

/// RFC 8461 §3.2's grammar, implemented separately from the server, in Python.
const MTA_STS_PARSER: &str = r#"
import json, re, sys
text = sys.stdin.buffer.read().decode("ascii")
lines = re.split(r"\r?\n", text)
assert lines[-1] == "", "policy must end with a line break"
fields = {}
mx = []
for i, line in enumerate(lines[:-1]):
    m = re.fullmatch(r"([A-Za-z0-9_]{1,32}):[ \t]*([\x21-\x3a\x3c\x3e-\x7e]{1,})[ \t]*", line)
    assert m, "bad line %r" % line
    key, value = m.groups()
    if i == 0:
        assert key == "version" and value == "STSv1", "version must come first"
    if key == "mode":
        assert value in ("testing", "enforce", "none"), value
    if key == "max_age":
        assert re.fullmatch(r"[0-9]{1,10}", value) and int(value) <= 31557600, value
    if key == "mx":
        assert re.fullmatch(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+", value), value
        mx.append(value)
    else:
        fields[key] = value
fields["mx"] = mx
print(json.dumps(fields, sort_keys=True))
"#;

fn parse_policy(policy: &str) -> Value {
    let mut p = Command::new("/usr/bin/python3")
        .args(["-c", MTA_STS_PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin
        .take()
        .unwrap()
        .write_all(policy.as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the policy does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn txt_id(snippet: &str) -> String {
    let line = snippet
        .lines()
        .find(|l| l.starts_with(&format!("_mta-sts.{DOMAIN}.")))
        .unwrap();
    let at = line.find("id=").unwrap() + 3;
    line[at..].trim_end_matches('"').to_string()
}

fn policy_digest_id(policy: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, policy.as_bytes()).as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn mta_sts_policy_parses_and_its_id_follows_every_policy_change() {
    let console = console("127.0.0.1:9".parse().unwrap(), None).await;
    let (mut c, mut api) = setup(&console).await;
    let mut public = console.client();
    public.host = Some(format!("mta-sts.{DOMAIN}"));
    let r = public.get("/.well-known/mta-sts.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        parse_policy(&r.body),
        json!({"version": "STSv1", "mode": "testing", "mx": [HOST], "max_age": "604800"})
    );
    let snippet = c.get(&format!("/domains/{DOMAIN}/dns.zone")).await.body;
    let first_id = txt_id(&snippet);
    assert_eq!(first_id, policy_digest_id(&r.body));

    let r = api
        .json(
            "PUT",
            &format!("/api/v1/domains/{DOMAIN}/policy"),
            &json!({"mta_sts_mode": "enforce", "mta_sts_max_age": 1209600, "dmarc_policy": "reject"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = public.get("/.well-known/mta-sts.txt").await;
    assert_eq!(parse_policy(&r.body)["mode"], "enforce");
    let snippet = c.get(&format!("/domains/{DOMAIN}/dns.zone")).await.body;
    assert_ne!(txt_id(&snippet), first_id);
    assert_eq!(txt_id(&snippet), policy_digest_id(&r.body));
    assert!(snippet.contains("\"v=DMARC1; p=reject;"));

    // A domain the box does not serve has no policy.
    public.host = Some("mta-sts.other.example".to_string());
    assert_eq!(public.get("/.well-known/mta-sts.txt").await.status, 404);
    console.stop().await;
}

#[tokio::test]
async fn mta_sts_and_autoconfig_are_public_while_the_console_is_not() {
    // The allow-list admits nobody on loopback.
    let console = console("127.0.0.1:9".parse().unwrap(), Some("203.0.113.0/24")).await;
    console
        .store
        .add_domain(&store::DomainName::parse(DOMAIN).unwrap(), "")
        .await
        .unwrap();
    let mut c = console.client();
    assert_eq!(c.get("/login").await.status, 403);
    c.host = Some(format!("mta-sts.{DOMAIN}"));
    assert_eq!(c.get("/login").await.status, 403);
    let r = c.get("/.well-known/mta-sts.txt").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("version: STSv1\r\n"));
    c.host = Some(format!("autoconfig.{DOMAIN}:443"));
    let r = c.get("/mail/config-v1.1.xml").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/xml"));
    crate::harness::golden("autoconfig.xml", &r.body);
    assert!(r.body.contains("<username>%EMAILADDRESS%</username>"));
    console.stop().await;
}

/// An independent DKIM implementation (dkimpy) signs with the key stored here and
/// verifies against the TXT record the console publishes, for RSA and Ed25519.
const DKIMPY: &str = r#"
import base64, sys, dkim
selector, algorithm, keyfile, txt = sys.argv[1:5]
key = open(keyfile, "rb").read()
msg = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
if algorithm == "ed25519-sha256":
    der = base64.b64decode(b"".join(l for l in key.splitlines() if not l.startswith(b"-----")))
    key = base64.b64encode(der[16:48])
sig = dkim.sign(msg, selector.encode(), b"example.org", key,
                signature_algorithm=algorithm.encode(), include_headers=[b"from", b"to", b"subject"])
def dns(name, timeout=5):
    assert name == (selector + "._domainkey.example.org.").encode(), name
    return txt.encode()
ok = dkim.verify(sig + msg, dnsfunc=dns)
print("pass" if ok else "fail")
"#;

#[tokio::test]
async fn keys_generated_here_sign_mail_that_dkimpy_verifies_against_the_published_record() {
    let console = console("127.0.0.1:9".parse().unwrap(), None).await;
    let (mut c, _) = setup(&console).await;
    let rsa = generate(&mut c, "rsa-sha256").await;
    let ed = generate(&mut c, "ed25519-sha256").await;
    let snippet = c.get(&format!("/domains/{DOMAIN}/dns.zone")).await.body;
    let d = store::DomainName::parse(DOMAIN).unwrap();
    for (selector, algorithm) in [(rsa, "rsa-sha256"), (ed, "ed25519-sha256")] {
        let key = console
            .store
            .dkim_key(&d, &selector)
            .await
            .unwrap()
            .unwrap();
        let keyfile = console.dir.path().join(format!("{selector}.pem"));
        // dkimpy reads PKCS#1 RSA keys only; openssl converts, the key stays the same.
        let pem = if algorithm == "rsa-sha256" {
            std::fs::write(&keyfile, &key.private_key).unwrap();
            openssl(&["rsa", "-traditional", "-in", keyfile.to_str().unwrap()])
        } else {
            key.private_key.clone()
        };
        std::fs::write(&keyfile, pem).unwrap();
        let line = snippet
            .lines()
            .find(|l| l.starts_with(&format!("{selector}._domainkey.")))
            .unwrap();
        // The published strings, concatenated as a receiver does (RFC 6376 §3.6.2.2).
        let txt: String = line
            .split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let out = Command::new("/usr/bin/python3")
            .args([
                "-c",
                DKIMPY,
                &selector,
                algorithm,
                keyfile.to_str().unwrap(),
                &txt,
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "pass",
            "{algorithm}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    console.stop().await;
}

#[tokio::test]
async fn block_lists_count_listing_codes_and_call_refusals_unknown() {
    let port = fugu_tests::net::free_port();
    let console = Console::start_with(|c| {
        c.mail_hostname = HOST.to_string();
        c.public_addrs = vec!["198.18.0.25".parse().unwrap()];
        c.resolver = Some(format!("127.0.0.1:{port}").parse().unwrap());
        c.dnsbls = vec![
            "listing.example.net".to_string(),
            "refusing.example.net".to_string(),
        ];
    })
    .await;
    let (_c, mut api) = setup(&console).await;
    let _unbound = Unbound::start(
        &console.dir.path().join("dns"),
        port,
        &[
            Zone::new("listing.example.net", "25.0.18.198 IN A 127.0.0.2"),
            // What Spamhaus answers a query from a public resolver.
            Zone::new("refusing.example.net", "* IN A 127.255.255.254"),
        ],
    );
    let report = api
        .get(&format!("/api/v1/domains/{DOMAIN}/dns"))
        .await
        .json();
    let lists = report["blocklists"].as_array().unwrap();
    assert_eq!(lists[0]["name"], "25.0.18.198.listing.example.net");
    assert_eq!(lists[0]["status"], "listed (127.0.0.2)");
    assert_eq!(lists[1]["name"], "25.0.18.198.refusing.example.net");
    assert_eq!(lists[1]["status"], "unknown (the list refused the query)");
    assert_eq!(lists[1]["ok"], json!(false));
    console.stop().await;
}
