//! Rendering (golden files under `mta/tests/golden/authres/`, re-blessed with `BLESS=1`)
//! and the disposition table.

use std::path::Path;

use super::*;

#[track_caller]
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/authres")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create)", path.display()));
    assert_eq!(expected, actual, "golden file {} differs", path.display());
}

fn spf(result: Verdict) -> SpfCheck {
    SpfCheck {
        result,
        identity: SpfIdentity::MailFrom("alice@example.org".into()),
    }
}

fn dkim_pass() -> DkimCheck {
    DkimCheck {
        result: Verdict::Pass,
        domain: "example.org".into(),
        selector: "s2026".into(),
        algorithm: "rsa-sha256",
        reason: None,
    }
}

fn dmarc(result: Verdict, policy: Option<Policy>) -> DmarcCheck {
    DmarcCheck {
        result,
        from_domain: Some("example.org".into()),
        policy,
    }
}

#[test]
fn all_passing_results_render_one_field_per_method() {
    let r = Results {
        spf: spf(Verdict::Pass),
        dkim: DkimChecks::Verified(vec![dkim_pass()]),
        dmarc: dmarc(Verdict::Pass, Some(Policy::Reject)),
        disposition: Disposition::Deliver,
    };
    golden("pass.txt", &render("mx.example.net", &r));
}

#[test]
fn a_quarantined_failure_carries_the_junk_marks() {
    let r = Results {
        spf: spf(Verdict::Fail),
        dkim: DkimChecks::Verified(vec![DkimCheck {
            result: Verdict::Fail,
            reason: Some("Signature verification failed (body hash)".into()),
            ..dkim_pass()
        }]),
        dmarc: dmarc(Verdict::Fail, Some(Policy::Quarantine)),
        disposition: Disposition::Junk,
    };
    golden("quarantine.txt", &render("mx.example.net", &r));
}

#[test]
fn null_sender_too_large_and_unusual_values_render_safely() {
    let r = Results {
        spf: SpfCheck {
            result: Verdict::None,
            identity: SpfIdentity::Helo("client.example".into()),
        },
        dkim: DkimChecks::TooLarge,
        dmarc: DmarcCheck {
            result: Verdict::None,
            from_domain: None,
            policy: None,
        },
        disposition: Disposition::Deliver,
    };
    golden("null-sender-too-large.txt", &render("mx.example.net", &r));
    let r = Results {
        spf: SpfCheck {
            result: Verdict::SoftFail,
            identity: SpfIdentity::MailFrom("\"odd; name\"@example.org".into()),
        },
        dkim: DkimChecks::Verified(vec![]),
        dmarc: dmarc(Verdict::None, None),
        disposition: Disposition::Deliver,
    };
    golden("quoted-unsigned.txt", &render("mx.example.net", &r));
}

#[test]
fn only_an_enabled_reject_mode_rejects_and_only_verified_failures_count() {
    use Disposition::*;
    let verified = DkimChecks::Verified(vec![]);
    let cases = [
        (
            Verdict::Fail,
            Some(Policy::Reject),
            DmarcMode::Reject,
            Reject,
        ),
        (
            Verdict::Fail,
            Some(Policy::Reject),
            DmarcMode::Quarantine,
            Junk,
        ),
        (
            Verdict::Fail,
            Some(Policy::Reject),
            DmarcMode::None,
            Deliver,
        ),
        (
            Verdict::Fail,
            Some(Policy::Quarantine),
            DmarcMode::Reject,
            Junk,
        ),
        (
            Verdict::Fail,
            Some(Policy::None),
            DmarcMode::Reject,
            Deliver,
        ),
        (
            Verdict::Pass,
            Some(Policy::Reject),
            DmarcMode::Reject,
            Deliver,
        ),
        (
            Verdict::TempError,
            Some(Policy::Reject),
            DmarcMode::Reject,
            Deliver,
        ),
        (Verdict::None, None, DmarcMode::Reject, Deliver),
    ];
    for (result, policy, mode, want) in cases {
        assert_eq!(
            disposition(&dmarc(result, policy), &verified, mode),
            want,
            "{result:?} {policy:?} {mode:?}"
        );
    }
    assert_eq!(
        disposition(
            &dmarc(Verdict::Fail, Some(Policy::Reject)),
            &DkimChecks::TooLarge,
            DmarcMode::Reject
        ),
        Deliver
    );
}

#[test]
fn relaxed_alignment_compares_organizational_domains() {
    assert!(aligned(
        "mail.example.org",
        "example.org",
        Alignment::Relaxed
    ));
    assert!(aligned(
        "bounce.example.co.uk",
        "news.example.co.uk",
        Alignment::Relaxed
    ));
    assert!(!aligned(
        "mail.example.org",
        "example.org",
        Alignment::Strict
    ));
    assert!(!aligned("other.co.uk", "example.co.uk", Alignment::Relaxed));
    assert!(!aligned(
        "alice.github.io",
        "bob.github.io",
        Alignment::Relaxed
    ));
}
