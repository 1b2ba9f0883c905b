//! `ciphers` and `protocols` (on `listen`, and `smtp ciphers` for every listener) in the
//! syntax OpenSMTPD hands to libtls, mapped onto what rustls offers.
//!
//! rustls speaks TLS 1.2 and 1.3 only, and only AEAD suites with ECDHE key exchange, so
//! the mapping is a subset: names and classes that would add something rustls lacks
//! (TLS 1.0/1.1, CBC or RSA key exchange suites) are refused with an error naming what is
//! available, while exclusions of such things (`!aNULL`, `!MD5`, `!RC4`, …) are accepted
//! and change nothing. As with OpenSSL, a cipher string selects TLS 1.2 suites; the
//! TLS 1.3 suites stay unless the string names some by their IANA names
//! (`TLS_AES_256_GCM_SHA384`). The server's preference order is rustls's, not the
//! string's (OpenSSL's `+X` and `@STRENGTH` reorder and are accepted as no-ops).

use rustls::crypto::ring::cipher_suite as cs;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// A rustls suite with its OpenSSL name and the OpenSSL class names that include it.
struct Suite {
    suite: SupportedCipherSuite,
    name: &'static str,
    classes: &'static [&'static str],
}

const TLS12_CLASSES: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "SECURE", "COMPAT", "LEGACY", "INSECURE", "ECDHE", "EECDH", "KECDHE",
    "KEECDH", "TLSV1.2", "AEAD",
];

static TLS12: &[Suite] = &[
    Suite {
        suite: cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        name: "ECDHE-ECDSA-AES256-GCM-SHA384",
        classes: &["AESGCM", "AES", "AES256", "ECDSA", "AECDSA", "SHA384"],
    },
    Suite {
        suite: cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        name: "ECDHE-ECDSA-AES128-GCM-SHA256",
        classes: &["AESGCM", "AES", "AES128", "ECDSA", "AECDSA", "SHA256"],
    },
    Suite {
        suite: cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        name: "ECDHE-ECDSA-CHACHA20-POLY1305",
        classes: &["CHACHA20", "ECDSA", "AECDSA", "SHA256"],
    },
    Suite {
        suite: cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        name: "ECDHE-RSA-AES256-GCM-SHA384",
        classes: &["AESGCM", "AES", "AES256", "RSA", "ARSA", "SHA384"],
    },
    Suite {
        suite: cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        name: "ECDHE-RSA-AES128-GCM-SHA256",
        classes: &["AESGCM", "AES", "AES128", "RSA", "ARSA", "SHA256"],
    },
    Suite {
        suite: cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        name: "ECDHE-RSA-CHACHA20-POLY1305",
        classes: &["CHACHA20", "RSA", "ARSA", "SHA256"],
    },
];

static TLS13: &[Suite] = &[
    Suite {
        suite: cs::TLS13_AES_256_GCM_SHA384,
        name: "TLS_AES_256_GCM_SHA384",
        classes: &[],
    },
    Suite {
        suite: cs::TLS13_AES_128_GCM_SHA256,
        name: "TLS_AES_128_GCM_SHA256",
        classes: &[],
    },
    Suite {
        suite: cs::TLS13_CHACHA20_POLY1305_SHA256,
        name: "TLS_CHACHA20_POLY1305_SHA256",
        classes: &[],
    },
];

/// OpenSSL classes with no suite in rustls: excluding them is a no-op.
const ABSENT: &[&str] = &[
    "ANULL", "ENULL", "NULL", "MD5", "RC4", "3DES", "DES", "EXP", "EXPORT", "LOW", "MEDIUM", "PSK",
    "SRP", "DSS", "ADSS", "SHA1", "SHA", "CAMELLIA", "SEED", "IDEA", "KRSA", "DH", "DHE", "EDH",
    "KDHE", "KEDH", "ADH", "AECDH", "CBC", "AESCCM", "ARIA", "GOST", "SSLV3", "TLSV1", "KPSK",
    "APSK",
];

fn is_class(suite: &Suite, class: &str) -> bool {
    suite.name.eq_ignore_ascii_case(class)
        || suite.classes.contains(&class)
        || (!TLS13.iter().any(|s| s.name == suite.name) && TLS12_CLASSES.contains(&class))
}

/// One token (`A+B` is the suites in both A and B). `Ok(None)`: a known name with no
/// suite here.
fn select(token: &str) -> Result<Option<Vec<&'static Suite>>, String> {
    let mut chosen: Option<Vec<&'static Suite>> = None;
    for part in token.split('+') {
        let class = part.to_ascii_uppercase();
        let all = TLS12.iter().chain(TLS13);
        let matched: Vec<&'static Suite> = all.filter(|s| is_class(s, &class)).collect();
        if matched.is_empty() {
            if ABSENT.contains(&class.as_str()) {
                return Ok(None);
            }
            return Err(format!(
                "unknown or unavailable cipher {part:?}: fugu (rustls) has {}",
                TLS12
                    .iter()
                    .chain(TLS13)
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        chosen = Some(match chosen {
            None => matched,
            Some(c) => c
                .into_iter()
                .filter(|s| matched.iter().any(|m| m.name == s.name))
                .collect(),
        });
    }
    Ok(chosen)
}

/// An OpenSSL/libtls cipher string (`HIGH:!aNULL:!MD5`, `ECDHE-RSA-AES256-GCM-SHA384`,
/// `secure`) as the rustls suites to offer, in rustls's order.
pub fn parse_ciphers(list: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut on: Vec<&'static str> = Vec::new();
    let mut off: Vec<&'static str> = Vec::new();
    for token in list.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if token.starts_with('@') || token.starts_with('+') {
            continue;
        }
        let (negate, name) = match token.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        match select(name)? {
            Some(suites) if negate => off.extend(suites.iter().map(|s| s.name)),
            Some(suites) => on.extend(suites.iter().map(|s| s.name)),
            None if negate => {}
            None => return Err(format!("cipher {name:?} is not available in fugu (rustls)")),
        }
    }
    let named_tls13 = on.iter().any(|n| TLS13.iter().any(|s| s.name == *n));
    let keep = |s: &&Suite| on.contains(&s.name) && !off.contains(&s.name);
    let mut out: Vec<SupportedCipherSuite> = Vec::new();
    // rustls lists TLS 1.3 suites first; its order is the server's preference.
    if named_tls13 {
        out.extend(TLS13.iter().filter(keep).map(|s| s.suite));
    } else {
        out.extend(
            TLS13
                .iter()
                .filter(|s| !off.contains(&s.name))
                .map(|s| s.suite),
        );
    }
    out.extend(TLS12.iter().filter(keep).map(|s| s.suite));
    if out.is_empty() {
        return Err(format!("cipher list {list:?} leaves no cipher"));
    }
    Ok(out)
}

/// A libtls protocol list (`secure`, `tlsv1.2,tlsv1.3`, `all:!tlsv1.2`) as rustls
/// versions. TLS 1.0 and 1.1 do not exist here: naming one alone is an error, and the
/// groups that include them (`all`, `legacy`, `tlsv1`) mean 1.2 and 1.3.
pub fn parse_protocols(list: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let (mut v12, mut v13) = (false, false);
    for token in list
        .split([',', ':'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (negate, name) = match token.strip_prefix(['!', '-']) {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        let (a, b) = match name.to_ascii_lowercase().as_str() {
            "all" | "legacy" | "secure" | "default" | "tlsv1" => (true, true),
            "tlsv1.2" => (true, false),
            "tlsv1.3" => (false, true),
            "tlsv1.0" | "tlsv1.1" if negate => (false, false),
            "tlsv1.0" | "tlsv1.1" => {
                return Err(format!(
                    "protocol {name} is not available in fugu (rustls has tlsv1.2 and tlsv1.3)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown protocol {name:?}: expected all, secure, default, legacy, \
                     tlsv1, tlsv1.2 or tlsv1.3"
                ));
            }
        };
        if negate {
            v12 &= !a;
            v13 &= !b;
        } else {
            v12 |= a;
            v13 |= b;
        }
    }
    let mut out = Vec::new();
    if v13 {
        out.push(&rustls::version::TLS13);
    }
    if v12 {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(format!("protocol list {list:?} leaves no protocol"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        parse_ciphers(list)
            .unwrap()
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn opensmtpds_default_string_keeps_every_suite() {
        assert_eq!(parse_ciphers("HIGH:!aNULL:!MD5").unwrap().len(), 9);
        assert_eq!(parse_ciphers("secure").unwrap().len(), 9);
    }

    #[test]
    fn a_named_tls12_suite_narrows_tls12_and_keeps_tls13() {
        assert_eq!(
            names("ECDHE-RSA-AES256-GCM-SHA384"),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ]
        );
    }

    #[test]
    fn classes_intersect_and_exclude() {
        assert_eq!(
            names("ECDHE+AESGCM:!AES128:!TLS_AES_128_GCM_SHA256"),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ]
        );
        assert_eq!(
            names("TLS_CHACHA20_POLY1305_SHA256:CHACHA20"),
            [
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
    }

    #[test]
    fn unknown_or_unavailable_ciphers_are_refused_by_name() {
        let e = parse_ciphers("HIGH:AES256-SHA").unwrap_err();
        assert!(e.contains("\"AES256-SHA\""), "{e}");
        assert!(e.contains("ECDHE-RSA-AES256-GCM-SHA384"), "{e}");
        assert!(parse_ciphers("HIGH:!NOSUCH").is_err());
        assert!(parse_ciphers("RC4").unwrap_err().contains("not available"));
        assert!(
            parse_ciphers(
                "!ALL:!TLS_AES_256_GCM_SHA384:!TLS_AES_128_GCM_SHA256:!TLS_CHACHA20_POLY1305_SHA256"
            )
            .is_err()
        );
    }

    #[test]
    fn protocols_select_tls12_and_tls13() {
        let v = |l: &str| -> Vec<String> {
            parse_protocols(l)
                .unwrap()
                .iter()
                .map(|p| format!("{:?}", p.version))
                .collect()
        };
        assert_eq!(v("secure"), ["TLSv1_3", "TLSv1_2"]);
        assert_eq!(v("tlsv1.3"), ["TLSv1_3"]);
        assert_eq!(v("all:!tlsv1.2"), ["TLSv1_3"]);
        assert_eq!(v("TLSv1.2, tlsv1.3"), ["TLSv1_3", "TLSv1_2"]);
        assert_eq!(v("all,!tlsv1.0,!tlsv1.1"), ["TLSv1_3", "TLSv1_2"]);
        assert!(
            parse_protocols("tlsv1.1")
                .unwrap_err()
                .contains("not available")
        );
        assert!(
            parse_protocols("sslv3")
                .unwrap_err()
                .contains("unknown protocol")
        );
        assert!(parse_protocols("tlsv1.3:!tlsv1.3").is_err());
    }
}
