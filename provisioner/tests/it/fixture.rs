//! A fixed snapshot that exercises every rendering rule: schemes, disabled users and
//! domains, quotas, DKIM key states, certificate choice, expired and overlapping rules.

use std::collections::BTreeMap;

use provisioner::Snapshot;
use store::snapshot::AccessRuleRow;
use store::{Alias, Certificate, DkimKey, Domain, User};

pub const NOW: i64 = 1_800_000_000;
pub const ARGON2ID: &str = "$argon2id$v=19$m=19456,t=2,p=1$RLrH7snS7CszjieEn5X1Nw$ehQ4VkYF8vtp/I+2e3DETGULpsMi3yEJh5+Ymv9goPg";
pub const BCRYPT: &str = "$2b$10$AyZjTpqBmUlXeWuCcuA4o.WLEpNrb1S88ouQOY2BBeJvUb1LDFkL.";
/// `secret`, from `doveadm pw -s SHA512-CRYPT`.
pub const SHA512_CRYPT: &str = "$6$AmJZjWuUjST92Vp4$4NMIoUh9TTdu8EAfjbHfGXosbdtMOy3mFTav5LEny0vSXXfgXeEWm.3NxgWunBAIG4QF6hgA.C/83gdKgNS0r0";

fn domain(name: &str, active: bool) -> Domain {
    Domain {
        name: name.into(),
        active,
        description: String::new(),
        created_at: NOW - 1000,
    }
}

fn user(id: i64, address: &str, hash: &str, quota_bytes: i64, active: bool) -> User {
    let (local, dom) = address.split_once('@').unwrap();
    User {
        id,
        address: address.into(),
        domain: dom.into(),
        local_part: local.into(),
        password_hash: hash.into(),
        display_name: String::new(),
        quota_bytes,
        uid: 5000,
        gid: 5000,
        home: format!("/var/vmail/{dom}/{local}"),
        active,
        created_at: NOW - 500,
        updated_at: NOW - 500,
    }
}

fn dkim(id: i64, domain: &str, selector: &str, algorithm: &str, state: &str) -> DkimKey {
    DkimKey {
        id,
        domain: domain.into(),
        selector: selector.into(),
        algorithm: algorithm.into(),
        private_key: format!(
            "-----BEGIN PRIVATE KEY-----\nFAKE-{domain}-{selector}\n-----END PRIVATE KEY-----"
        ),
        public_key: format!("PUB{id}"),
        state: state.into(),
        created_at: NOW - 900,
        activated_at: (state != "pending").then_some(NOW - 800),
        retired_at: (state == "retired").then_some(NOW - 100),
    }
}

fn cert(id: i64, names: &str, not_before: i64, not_after: i64) -> Certificate {
    Certificate {
        id,
        names: names.into(),
        chain_pem: format!(
            "-----BEGIN CERTIFICATE-----\nCERT{id}\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nISSUER\n-----END CERTIFICATE-----\n"
        ),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\nKEY{id}\n-----END PRIVATE KEY-----\n"),
        not_before,
        not_after,
        source: "acme".into(),
        acme_account_id: None,
        last_error: None,
        created_at: not_before,
        updated_at: not_before,
    }
}

fn rule(
    id: i64,
    kind: &str,
    value: &str,
    action: &str,
    source: &str,
    expires_at: Option<i64>,
) -> AccessRuleRow {
    AccessRuleRow {
        id,
        kind: kind.into(),
        value: value.into(),
        action: action.into(),
        source: source.into(),
        reason: String::new(),
        expires_at,
    }
}

pub fn snapshot() -> Snapshot {
    let settings: BTreeMap<String, String> = [
        ("vmail_user", "vmail"),
        ("vmail_uid", "5000"),
        ("vmail_gid", "5000"),
        ("vmail_home", "/var/vmail"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Snapshot {
        change_counter: 42,
        taken_at: NOW,
        settings,
        domains: vec![
            domain("disabled.example", false),
            domain("example.net", true),
            domain("example.org", true),
        ],
        users: vec![
            user(5, "eve@disabled.example", ARGON2ID, 0, true),
            user(4, "carol@example.net", SHA512_CRYPT, 0, true),
            user(1, "alice@example.org", ARGON2ID, 1_073_741_824, true),
            user(2, "bob@example.org", BCRYPT, 0, true),
            user(3, "dave@example.org", ARGON2ID, 0, false),
            user(6, "mallory@example.org", "plaintext-is-refused", 0, true),
        ],
        aliases: vec![Alias {
            id: 1,
            source: "postmaster@example.org".into(),
            destination: "alice@example.org".into(),
            domain: "example.org".into(),
            active: true,
            created_at: NOW,
        }],
        dkim_keys: vec![
            dkim(9, "disabled.example", "s1", "rsa-sha256", "active"),
            dkim(3, "example.net", "next", "rsa-sha256", "pending"),
            dkim(2, "example.org", "e2026", "ed25519-sha256", "active"),
            dkim(4, "example.org", "old", "rsa-sha256", "retired"),
            dkim(1, "example.org", "s2026", "rsa-sha256", "active"),
        ],
        certificates: vec![
            // Expired: replaced by id 3 for the same primary name.
            cert(
                1,
                "mail.example.org mta-sts.example.org",
                NOW - 200 * 86400,
                NOW - 100 * 86400,
            ),
            cert(2, "console.example.net", NOW - 10 * 86400, NOW + 80 * 86400),
            cert(
                3,
                "mail.example.org mta-sts.example.org",
                NOW - 10 * 86400,
                NOW + 80 * 86400,
            ),
        ],
        access_rules: vec![
            rule(1, "cidr", "192.0.2.0/24", "allow", "manual", None),
            rule(2, "ip", "192.0.2.9", "allow", "manual", None),
            rule(3, "cidr", "198.51.100.77/16", "block", "manual", None),
            rule(4, "cidr", "198.51.0.0/16", "block", "feed", None),
            rule(5, "ip", "203.0.113.5", "block", "manual", Some(NOW - 1)),
            rule(6, "ip", "203.0.113.6", "block", "auto", Some(NOW + 3600)),
            rule(7, "ip", "2001:db8::5", "block", "manual", None),
            rule(8, "cidr", "2001:db8::/32", "block", "feed", None),
            rule(9, "ip", "not-an-address", "block", "manual", None),
            rule(10, "sender", "spam@example.com", "block", "manual", None),
            rule(11, "cidr", "2001:db8:ffff::/48", "allow", "manual", None),
        ],
    }
}
