//! The organisational domain (RFC 7489 §3.2) from the Public Suffix List shipped in
//! `mta/data/public_suffix_list.dat` (MPL 2.0, see `mta/data/README.md`). The list is
//! compiled in: no network at build or run time.

use std::collections::HashSet;
use std::sync::OnceLock;

const LIST: &str = include_str!("../../data/public_suffix_list.dat");

struct Rules {
    /// Plain rules (`com`, `co.uk`), as A-labels.
    exact: HashSet<String>,
    /// `*.ck` is stored as `ck`: any one label below it is a public suffix.
    wildcard: HashSet<String>,
    /// `!www.ck`: not a public suffix although a wildcard covers it.
    exception: HashSet<String>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut r = Rules {
            exact: HashSet::new(),
            wildcard: HashSet::new(),
            exception: HashSet::new(),
        };
        for line in LIST.lines() {
            // The list's format: a rule is the first whitespace-separated word of a line.
            let Some(rule) = line.split_whitespace().next() else {
                continue;
            };
            if rule.starts_with("//") {
                continue;
            }
            let (set, name) = if let Some(n) = rule.strip_prefix('!') {
                (&mut r.exception, n)
            } else if let Some(n) = rule.strip_prefix("*.") {
                (&mut r.wildcard, n)
            } else {
                (&mut r.exact, rule)
            };
            // Mail carries A-labels; the list has U-labels for IDN suffixes.
            if let Ok(ascii) = idna::domain_to_ascii(name) {
                set.insert(ascii);
            }
        }
        r
    })
}

/// The public suffix of `domain` (lower case, no trailing dot), by the list's algorithm:
/// exception rules win, then the longest matching rule, else the last label.
fn public_suffix_labels(labels: &[&str]) -> usize {
    let r = rules();
    let n = labels.len();
    for i in 0..n {
        let suffix = labels[i..].join(".");
        if r.exception.contains(&suffix) {
            return n - i - 1;
        }
        if r.exact.contains(&suffix) {
            return n - i;
        }
        if i + 1 < n && r.wildcard.contains(&labels[i + 1..].join(".")) {
            return n - i;
        }
    }
    1
}

/// RFC 7489 §3.2: the public suffix plus one label. A domain that is itself a public
/// suffix (or has a single label) is its own organisational domain.
pub fn organizational_domain(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return domain;
    }
    let ps = public_suffix_labels(&labels);
    if ps >= labels.len() {
        return domain;
    }
    labels[labels.len() - ps - 1..].join(".")
}

#[cfg(test)]
mod tests {
    use super::organizational_domain as org;

    #[test]
    fn the_organizational_domain_is_one_label_below_the_public_suffix() {
        assert_eq!(org("mail.example.org"), "example.org");
        assert_eq!(org("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(org("Example.COM."), "example.com");
        assert_eq!(org("example.org"), "example.org");
    }

    #[test]
    fn wildcard_and_exception_rules_follow_the_list() {
        // `*.ck` and `!www.ck` are in the list.
        assert_eq!(org("shop.foo.ck"), "shop.foo.ck");
        assert_eq!(org("a.www.ck"), "www.ck");
    }

    #[test]
    fn private_section_suffixes_count() {
        // github.io is in the list's private section: each user site is its own org.
        assert_eq!(org("alice.github.io"), "alice.github.io");
        assert_eq!(org("www.alice.github.io"), "alice.github.io");
    }

    #[test]
    fn idn_suffixes_match_in_a_label_form() {
        // 公司.cn is in the list; mail carries its A-label.
        assert_eq!(org("mx.shop.xn--55qx5d.cn"), "shop.xn--55qx5d.cn");
    }

    #[test]
    fn unlisted_tlds_use_the_default_rule() {
        assert_eq!(org("host.example.invalidtld"), "example.invalidtld");
        assert_eq!(org("localhost"), "localhost");
        assert_eq!(org("com"), "com");
    }
}
