//! The snapshot read from a real database renders what the store says is live: active
//! DKIM keys only, the newest valid certificate per name, and access rules that have not
//! expired. The fixture snapshot tests the rendering rules; these test the whole path
//! from rows written through `store` to files.

use provisioner::{Output, Snapshot, render};
use store::{
    AccessAction, AccessKind, CertificateSource, DkimAlgorithm, DomainName, NewAccessRule,
    NewCertificate, NewDkimKey, Store,
};

use crate::golden::{box_config, check};

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn add_key(store: &Store, domain: &DomainName, selector: &str, algorithm: DkimAlgorithm) {
    store
        .add_dkim_key(&NewDkimKey {
            domain: domain.clone(),
            selector: selector.into(),
            algorithm,
            private_key_pem: format!(
                "-----BEGIN PRIVATE KEY-----\nKEY-{selector}\n-----END PRIVATE KEY-----\n"
            ),
            public_key_b64: format!("PUB{selector}"),
        })
        .await
        .unwrap();
}

async fn add_cert(store: &Store, label: &str, not_before: i64, not_after: i64) {
    store
        .add_certificate(&NewCertificate {
            names: vec!["mail.example.org".into(), "mta-sts.example.org".into()],
            chain_pem: format!("-----BEGIN CERTIFICATE-----\n{label}\n-----END CERTIFICATE-----\n"),
            key_pem: format!("-----BEGIN PRIVATE KEY-----\n{label}\n-----END PRIVATE KEY-----\n"),
            not_before,
            not_after,
            source: CertificateSource::Manual,
            acme_account_id: None,
        })
        .await
        .unwrap();
}

async fn add_rule(store: &Store, kind: AccessKind, value: &str, expires_at: Option<i64>) {
    let rule = NewAccessRule::parse(kind, value, AccessAction::Block, "", expires_at).unwrap();
    store.add_access_rule(&rule).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_of_the_database_renders_only_live_keys_certificates_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
    let domain = DomainName::parse("example.org").unwrap();
    store.add_domain(&domain, "").await.unwrap();

    // Rotation: "old" signed until "new" replaced it; "next" is published but not signing.
    add_key(&store, &domain, "old", DkimAlgorithm::RsaSha256).await;
    store.activate_dkim_key(&domain, "old").await.unwrap();
    add_key(&store, &domain, "new", DkimAlgorithm::RsaSha256).await;
    let (_, retired) = store.activate_dkim_key(&domain, "new").await.unwrap();
    assert_eq!(retired.unwrap().selector, "old");
    add_key(&store, &domain, "ed", DkimAlgorithm::Ed25519Sha256).await;
    store.activate_dkim_key(&domain, "ed").await.unwrap();
    add_key(&store, &domain, "next", DkimAlgorithm::RsaSha256).await;

    // The renewed certificate wins over the expired one and over one not valid yet, even
    // though that one expires later and was stored last.
    let now = now();
    add_cert(&store, "EXPIRED", now - 100 * DAY, now - DAY).await;
    add_cert(&store, "RENEWED", now - DAY, now + 89 * DAY).await;
    add_cert(&store, "NOT-YET-VALID", now + DAY, now + 180 * DAY).await;

    add_rule(&store, AccessKind::Ip, "203.0.113.5", Some(now - 60)).await;
    add_rule(&store, AccessKind::Cidr, "198.51.100.0/24", None).await;
    add_rule(&store, AccessKind::Ip, "2001:db8::5", None).await;

    let snapshot = Snapshot::load(&store).await.unwrap();
    assert!(
        (snapshot.taken_at - now).abs() < 60,
        "{}",
        snapshot.taken_at
    );
    assert_eq!(snapshot.dkim_keys.len(), 4);
    assert_eq!(snapshot.certificates.len(), 3);
    assert_eq!(snapshot.access_rules.len(), 3);

    let config = provisioner::Config {
        outputs: [Output::Dkim, Output::Tls, Output::Pf, Output::Nftables]
            .into_iter()
            .collect(),
        ..box_config()
    };
    let files = render(&snapshot, &config);
    let contents = |rel: &str| {
        let path = config.paths.root.join(rel);
        files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.contents.clone())
            .unwrap_or_else(|| panic!("{rel} not rendered"))
    };
    let keys = contents("dkim/keys");
    assert!(keys.contains("ed:") && keys.contains("new:"), "{keys}");
    assert!(!keys.contains("old:") && !keys.contains("next:"), "{keys}");
    let chain = contents("tls/mail.example.org/fullchain.pem");
    assert!(chain.contains("RENEWED"), "{chain}");
    let block = contents("pf/fugu_block");
    assert!(!block.contains("203.0.113.5"), "{block}");
    assert!(block.contains("198.51.100.0/24"), "{block}");
    check("from-store", &config.paths.root, &files);
}

#[tokio::test]
async fn a_logged_snapshot_shows_no_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
    let domain = DomainName::parse("example.org").unwrap();
    store.add_domain(&domain, "").await.unwrap();
    add_key(&store, &domain, "s1", DkimAlgorithm::RsaSha256).await;
    add_cert(&store, "C1", now() - DAY, now() + DAY).await;

    let snapshot = Snapshot::load(&store).await.unwrap();
    assert_eq!(
        snapshot.dkim_keys[0].private_key,
        "-----BEGIN PRIVATE KEY-----\nKEY-s1\n-----END PRIVATE KEY-----\n"
    );
    let logged = format!("{snapshot:?}");
    assert!(!logged.contains("PRIVATE KEY"), "{logged}");
    assert!(logged.contains("mail.example.org"), "{logged}");
}
