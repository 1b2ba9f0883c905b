//! DKIM keys and domain policies: naming, the state rules, and the change counter.

use store::{
    DkimAlgorithm, DmarcPolicy, DomainName, DomainPolicy, Error, MtaStsMode, NewDkimKey, Store,
};

async fn fresh() -> (tempfile::TempDir, Store, DomainName) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("fugu.db")).await.unwrap();
    let d = DomainName::parse("example.org").unwrap();
    store.add_domain(&d, "").await.unwrap();
    (dir, store, d)
}

fn key(d: &DomainName, selector: &str, algorithm: DkimAlgorithm) -> NewDkimKey {
    NewDkimKey {
        domain: d.clone(),
        selector: selector.into(),
        algorithm,
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n".into(),
        public_key_b64: "AA==".into(),
    }
}

#[tokio::test]
async fn selectors_are_lower_cased_unique_per_domain_and_validated() {
    let (_dir, store, d) = fresh().await;
    let k = store
        .add_dkim_key(&key(&d, "2026R", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    assert_eq!(
        (k.selector.as_str(), k.state.as_str()),
        ("2026r", "pending")
    );
    let again = store
        .add_dkim_key(&key(&d, "2026r", DkimAlgorithm::Ed25519Sha256))
        .await;
    assert!(
        matches!(
            again,
            Err(Error::Invalid {
                field: "selector",
                ..
            })
        ),
        "{again:?}"
    );
    for bad in ["", "a b", "-x", "x..y", "ä"] {
        assert!(
            store
                .add_dkim_key(&key(&d, bad, DkimAlgorithm::RsaSha256))
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    let other = DomainName::parse("example.net").unwrap();
    assert!(matches!(
        store
            .add_dkim_key(&key(&other, "s", DkimAlgorithm::RsaSha256))
            .await,
        Err(Error::DomainNotFound(_))
    ));
    // Debug output never carries the private key.
    assert!(!format!("{k:?}").contains("BEGIN PRIVATE KEY"));
}

#[tokio::test]
async fn activation_retires_only_the_active_key_of_the_same_algorithm() {
    let (_dir, store, d) = fresh().await;
    for (s, a) in [
        ("r1", DkimAlgorithm::RsaSha256),
        ("e1", DkimAlgorithm::Ed25519Sha256),
        ("r2", DkimAlgorithm::RsaSha256),
    ] {
        store.add_dkim_key(&key(&d, s, a)).await.unwrap();
    }
    let (r1, none) = store.activate_dkim_key(&d, "r1").await.unwrap();
    assert_eq!(r1.state, "active");
    assert!(none.is_none() && r1.activated_at.is_some());
    store.activate_dkim_key(&d, "e1").await.unwrap();
    let (r2, retired) = store.activate_dkim_key(&d, "r2").await.unwrap();
    assert_eq!(r2.state, "active");
    assert_eq!(retired.unwrap().selector, "r1");
    let state = |s: &'static str| {
        let store = store.clone();
        let d = d.clone();
        async move { store.dkim_key(&d, s).await.unwrap().unwrap().state }
    };
    assert_eq!(state("r1").await, "retired");
    assert_eq!(state("e1").await, "active");
    // Only pending keys activate; active keys must be retired before deletion.
    assert!(store.activate_dkim_key(&d, "r1").await.is_err());
    assert!(store.delete_dkim_key(&d, "r2").await.is_err());
    store.retire_dkim_key(&d, "r2").await.unwrap();
    store.delete_dkim_key(&d, "r2").await.unwrap();
    assert!(store.dkim_key(&d, "r2").await.unwrap().is_none());
}

#[tokio::test]
async fn retired_keys_are_purged_after_the_grace_period_only() {
    let (_dir, store, d) = fresh().await;
    store
        .add_dkim_key(&key(&d, "old", DkimAlgorithm::RsaSha256))
        .await
        .unwrap();
    store.retire_dkim_key(&d, "old").await.unwrap();
    let now: i64 = sqlx::query_scalar("SELECT unixepoch()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        store
            .purge_retired_dkim_keys(now - 3600)
            .await
            .unwrap()
            .is_empty()
    );
    let purged = store.purge_retired_dkim_keys(now + 1).await.unwrap();
    assert_eq!(purged.len(), 1);
    assert!(store.dkim_keys(&d).await.unwrap().is_empty());
}

#[tokio::test]
async fn domain_policy_defaults_validates_and_bumps_the_change_counter() {
    let (_dir, store, d) = fresh().await;
    let p = store.domain_policy(&d).await.unwrap();
    assert_eq!(p, DomainPolicy::defaults(&d));
    let c0 = store.change_counter().await.unwrap();
    let mut wanted = p.clone();
    wanted.mta_sts_mode = MtaStsMode::Enforce;
    wanted.dmarc_policy = DmarcPolicy::Quarantine;
    wanted.report_address = "Reports@Example.org".into();
    let saved = store.set_domain_policy(&wanted).await.unwrap();
    assert_eq!(saved.mta_sts_mode, MtaStsMode::Enforce);
    assert_eq!(saved.report_address, "reports@example.org");
    assert!(store.change_counter().await.unwrap() > c0);
    wanted.mta_sts_max_age = 60;
    assert!(matches!(
        store.set_domain_policy(&wanted).await,
        Err(Error::Invalid {
            field: "mta_sts_max_age",
            ..
        })
    ));
    wanted.mta_sts_max_age = 86_400;
    wanted.report_address = "not an address".into();
    assert!(store.set_domain_policy(&wanted).await.is_err());
}
